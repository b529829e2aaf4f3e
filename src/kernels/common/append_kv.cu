// KV cache append (decode / chunked prefill into a cache): copies the new keys and values into
// the cache rows that follow each sequence's cached rows, rotating the keys when rotary is on,
// and writes the rotated queries densely into the workspace.
//
// One launch, one thread per 8-element (16-byte) chunk of a head vector. Work items are numbered
//   [0, kv_items):            (b, t, hk, chunk) of k_new / v_new, chunk fastest
//   [kv_items, + q_items):    (b, i, h, chunk) of q
// so consecutive threads touch consecutive bytes of a row. Elements at or past rotary_dim are
// copied bit for bit; rotated elements are computed in fp32 and rounded to nearest. An FP8 cache
// (kv_dtype) gets quantize_fp8 of the (rotated) fp32 values with the (b, hk) factors instead.
// Narrow calls (common/narrow.h: a head dim that is not a multiple of 8, or a tensor whose rows
// are not 16-byte addressable) keep the same work items and move each chunk's elements one by
// one, the last chunk of a row cut at head_dim.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/fp8_params.h"
#include "common/narrow.h"
#include "common/rotary.h"
#include "common/sequence.h"
#include "common/serving_semantics.h"
#include "kernels/fwd_launch.h"

namespace flare {
namespace {

constexpr int kAppendThreads = 256;

template <typename T>
struct Bits;
template <>
struct Bits<__half> {
  static __device__ __forceinline__ float to_float(uint16_t b) {
    return __half2float(__ushort_as_half(b));
  }
  static __device__ __forceinline__ uint16_t from_float(float x) {
    return __half_as_ushort(__float2half_rn(x));
  }
};
template <>
struct Bits<__nv_bfloat16> {
  static __device__ __forceinline__ float to_float(uint16_t b) {
    return __bfloat162float(__ushort_as_bfloat16(b));
  }
  static __device__ __forceinline__ uint16_t from_float(float x) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
  }
};

union Chunk {
  uint4 v;
  uint16_t e[8];
};

// The n (<= 8) elements of a chunk at src, zeros after: one 16-byte load, or (narrow) one
// 2-byte load each.
__device__ __forceinline__ uint4 load_chunk(const uint16_t* src, int n, bool narrow) {
  if (!narrow) return __ldg(reinterpret_cast<const uint4*>(src));
  Chunk x;
#pragma unroll
  for (int e = 0; e < 8; ++e) x.e[e] = e < n ? __ldg(src + e) : uint16_t(0);
  return x.v;
}

// The first n (<= 8) elements of a chunk to dst: one 16-byte store, or (narrow) one each.
__device__ __forceinline__ void store_chunk(uint16_t* dst, const uint4& v, int n, bool narrow) {
  if (!narrow) {
    *reinterpret_cast<uint4*>(dst) = v;
    return;
  }
  Chunk x;
  x.v = v;
#pragma unroll
  for (int e = 0; e < 8; ++e)
    if (e < n) dst[e] = x.e[e];
}

struct RotaryArgs {
  const uint16_t* cos;  // [positions, rotary_dim / 2]
  const uint16_t* sin;
  int dim;              // 0: no rotary
  int half;             // dim / 2
  bool interleaved;
  bool vec_partner;     // half mode: partner chunks are whole 16-byte chunks (half % 8 == 0,
                        // not narrow)
  bool vec_tables;      // cos/sin rows can be read with 16-byte (half mode) / 8-byte loads
};

// Loads the chunk of n (<= 8) elements at `src + c0` (c0 a multiple of 8) and returns it; `out`
// gets its values in fp32, the first rotary_dim elements rotated at position `pos`.
template <typename T>
__device__ __forceinline__ uint4 load_rotated_floats(const uint16_t* src, int c0, int n,
                                                     bool narrow, int pos, const RotaryArgs& r,
                                                     float (&out)[8]) {
  Chunk x;
  x.v = load_chunk(src + c0, n, narrow);
#pragma unroll
  for (int e = 0; e < 8; ++e) out[e] = Bits<T>::to_float(x.e[e]);
  if (c0 >= r.dim) return x.v;  // past the rotary part (also when rotary is off: dim == 0)

  const bool whole = c0 + 8 <= r.dim;  // the chunk lies entirely in the rotary part
  const uint16_t* cos_row = r.cos + (int64_t)pos * r.half;
  const uint16_t* sin_row = r.sin + (int64_t)pos * r.half;

  float xf[8], pf[8], cf[8], sf[8];  // xf: the unrotated values (out is rewritten below)
#pragma unroll
  for (int e = 0; e < 8; ++e) xf[e] = out[e];

  // Partner values.
  if (r.interleaved) {
#pragma unroll
    for (int e = 0; e < 8; ++e) pf[e] = xf[e ^ 1];
  } else if (whole && r.vec_partner) {
    Chunk y;
    const int pc0 = c0 < r.half ? c0 + r.half : c0 - r.half;
    y.v = __ldg(reinterpret_cast<const uint4*>(src + pc0));
#pragma unroll
    for (int e = 0; e < 8; ++e) pf[e] = Bits<T>::to_float(y.e[e]);
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int j = c0 + e;
      pf[e] = j < r.dim ? Bits<T>::to_float(__ldg(src + rotary_pair(j, r.dim, false).partner))
                        : 0.f;
    }
  }

  // cos / sin of each element's pair.
  if (whole && r.vec_tables) {
    if (r.interleaved) {  // 4 consecutive frequencies, each shared by a pair of elements
      const int f0 = c0 >> 1;
      union {
        uint2 v;
        uint16_t e[4];
      } c, s;
      c.v = __ldg(reinterpret_cast<const uint2*>(cos_row + f0));
      s.v = __ldg(reinterpret_cast<const uint2*>(sin_row + f0));
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        cf[e] = Bits<T>::to_float(c.e[e >> 1]);
        sf[e] = Bits<T>::to_float(s.e[e >> 1]);
      }
    } else {  // 8 consecutive frequencies
      const int f0 = c0 < r.half ? c0 : c0 - r.half;
      Chunk c, s;
      c.v = __ldg(reinterpret_cast<const uint4*>(cos_row + f0));
      s.v = __ldg(reinterpret_cast<const uint4*>(sin_row + f0));
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        cf[e] = Bits<T>::to_float(c.e[e]);
        sf[e] = Bits<T>::to_float(s.e[e]);
      }
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int j = c0 + e;
      if (j < r.dim) {
        const int f = rotary_pair(j, r.dim, r.interleaved).freq;
        cf[e] = Bits<T>::to_float(__ldg(cos_row + f));
        sf[e] = Bits<T>::to_float(__ldg(sin_row + f));
      } else {
        cf[e] = 1.f;
        sf[e] = 0.f;
      }
    }
  }

#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const int j = c0 + e;
    if (j < r.dim) out[e] = rotary_apply(rotary_pair(j, r.dim, r.interleaved), xf[e], pf[e], cf[e], sf[e]);
  }
  return x.v;
}

// The chunk at `src + c0` with its first rotary_dim elements rotated at `pos` and rounded to T
// (nearest); the others copied bit for bit.
template <typename T>
__device__ __forceinline__ uint4 load_rotated(const uint16_t* src, int c0, int n, bool narrow,
                                              int pos, const RotaryArgs& r) {
  float out[8];
  Chunk x;
  x.v = load_rotated_floats<T>(src, c0, n, narrow, pos, r, out);
#pragma unroll
  for (int e = 0; e < 8; ++e)
    if (c0 + e < r.dim) x.e[e] = Bits<T>::from_float(out[e]);
  return x.v;
}

// Eight fp32 values into an FP8 cache of type `dtype` with factor `descale`: quantize_fp8 (the
// reference's rule) of each, one 8-byte store (FP8 rows are whole 16-code chunks, validated).
__device__ __forceinline__ void store_fp8_chunk(uint8_t* dst, const float (&x)[8], float descale,
                                                int dtype) {
  union {
    uint2 v;
    uint8_t b[8];
  } c;
#pragma unroll
  for (int e = 0; e < 8; ++e) c.b[e] = quantize_fp8(x[e], descale, dtype);
  *reinterpret_cast<uint2*>(dst) = c.v;
}

template <typename T>
__global__ void __launch_bounds__(kAppendThreads)
    append_kv_kernel(const flare_mha_fwd_params p, uint16_t* __restrict__ q_rotated,
                     RotaryArgs rot, int64_t kv_items, int64_t q_items, bool narrow) {
  const int chunks = (p.head_dim + 7) >> 3;
  const int64_t total = kv_items + q_items;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    if (idx < kv_items) {
      const int c0 = (int)(idx % chunks) * 8;
      const int n = p.head_dim - c0 < 8 ? p.head_dim - c0 : 8;
      int64_t rest = idx / chunks;
      const int hk = (int)(rest % p.num_heads_k);
      rest /= p.num_heads_k;
      const int t = (int)(rest % p.seqlen_new);
      const int b = (int)(rest / p.seqlen_new);
      const SequenceInfo s = sequence_info(p, b);
      const int row = s.cache_len + t;
      const int pos = (int)s.k_row0 + row;

      const uint16_t* k_src = static_cast<const uint16_t*>(p.k_new) +
                              (int64_t)b * p.k_new_batch_stride +
                              (int64_t)t * p.k_new_row_stride + (int64_t)hk * p.k_new_head_stride;
      const int dv = v_head_dim(p);
      const int kv_dtype = kv_element_dtype(p);
      if (is_fp8_dtype(kv_dtype)) {
        // FP8 cache: the rotated fp32 values quantized with the factors of (b, hk); FP8 calls
        // are never narrow (validation).
        float x[8];
        load_rotated_floats<T>(k_src, c0, 8, false, pos, rot, x);
        store_fp8_chunk(static_cast<uint8_t*>(const_cast<void*>(p.k)) + k_offset(p, s, row, hk) + c0,
                        x, k_descale(p, b, hk), kv_dtype);
        if (p.v_new != nullptr && c0 < dv) {
          const uint16_t* v_src = static_cast<const uint16_t*>(p.v_new) +
                                  (int64_t)b * p.v_new_batch_stride +
                                  (int64_t)t * p.v_new_row_stride +
                                  (int64_t)hk * p.v_new_head_stride;
          load_rotated_floats<T>(v_src, c0, 8, false, pos, RotaryArgs{}, x);
          store_fp8_chunk(static_cast<uint8_t*>(const_cast<void*>(p.v)) + v_offset(p, s, row, hk) + c0,
                          x, v_descale(p, b, hk), kv_dtype);
        }
        continue;
      }
      const uint4 k = load_rotated<T>(k_src, c0, n, narrow, pos, rot);
      uint16_t* k_dst = const_cast<uint16_t*>(static_cast<const uint16_t*>(p.k)) +
                        k_offset(p, s, row, hk) + c0;
      store_chunk(k_dst, k, n, narrow);

      // v_new / V rows have v_head_dim(p) <= head_dim columns: the first chunks of a K row's.
      if (p.v_new != nullptr && c0 < dv) {
        const int nv = dv - c0 < 8 ? dv - c0 : 8;
        const uint16_t* v_src = static_cast<const uint16_t*>(p.v_new) +
                                (int64_t)b * p.v_new_batch_stride +
                                (int64_t)t * p.v_new_row_stride +
                                (int64_t)hk * p.v_new_head_stride + c0;
        const uint4 v = load_chunk(v_src, nv, narrow);
        uint16_t* v_dst = const_cast<uint16_t*>(static_cast<const uint16_t*>(p.v)) +
                          v_offset(p, s, row, hk) + c0;
        store_chunk(v_dst, v, nv, narrow);
      }
    } else {
      const int64_t q_idx = idx - kv_items;
      const int c0 = (int)(q_idx % chunks) * 8;
      const int n = p.head_dim - c0 < 8 ? p.head_dim - c0 : 8;
      int64_t rest = q_idx / chunks;
      const int h = (int)(rest % p.num_heads);
      rest /= p.num_heads;
      const int i = (int)(rest % p.seqlen_q);
      const int b = (int)(rest / p.seqlen_q);
      const SequenceInfo s = sequence_info(p, b);
      if (i >= s.seqlen_q) continue;  // varlen: row past this sequence's queries
      const uint16_t* q_src = static_cast<const uint16_t*>(p.q) + q_offset(p, s, i, h);
      const uint4 q = load_rotated<T>(q_src, c0, n, narrow, rotary_q_position(p, s, i), rot);
      uint16_t* q_dst =
          q_rotated + (((int64_t)b * p.seqlen_q + i) * p.num_heads + h) * p.head_dim + c0;
      store_chunk(q_dst, q, n, narrow);
    }
  }
}

template <typename T>
cudaError_t launch_append(const flare_mha_fwd_params& p, void* q_rotated, cudaStream_t stream) {
  const int64_t chunks = (p.head_dim + 7) / 8;
  // The rotated q is dense with head_dim per row: narrow exactly when the call is.
  const bool narrow = is_narrow(p);
  const int64_t kv_items =
      (p.k_new != nullptr && p.seqlen_new > 0)
          ? (int64_t)p.batch * p.seqlen_new * p.num_heads_k * chunks
          : 0;
  const int64_t q_items =
      (q_rotated != nullptr && p.seqlen_q > 0) ? (int64_t)p.batch * p.seqlen_q * p.num_heads * chunks
                                               : 0;
  const int64_t total = kv_items + q_items;
  if (total <= 0) return cudaSuccess;

  RotaryArgs rot{};
  const bool rotary = p.rotary_dim > 0 && p.rotary_cos != nullptr && p.rotary_sin != nullptr;
  if (rotary) {
    rot.cos = static_cast<const uint16_t*>(p.rotary_cos);
    rot.sin = static_cast<const uint16_t*>(p.rotary_sin);
    rot.dim = p.rotary_dim;
    rot.half = p.rotary_dim / 2;
    rot.interleaved = p.rotary_interleaved != 0;
    rot.vec_partner = rot.half % 8 == 0 && !narrow;
    const uintptr_t align = rot.interleaved ? 8 : 16;
    const int per_load = rot.interleaved ? 4 : 8;  // table elements per vector load
    rot.vec_tables = rot.half % per_load == 0 &&
                     reinterpret_cast<uintptr_t>(p.rotary_cos) % align == 0 &&
                     reinterpret_cast<uintptr_t>(p.rotary_sin) % align == 0;
  }

  const int64_t blocks_needed = (total + kAppendThreads - 1) / kAppendThreads;
  const unsigned blocks = (unsigned)(blocks_needed < (1 << 20) ? blocks_needed : (1 << 20));
  append_kv_kernel<T><<<blocks, kAppendThreads, 0, stream>>>(
      p, static_cast<uint16_t*>(q_rotated), rot, kv_items, q_items, narrow);
  return cudaGetLastError();
}

}  // namespace

int run_append_kv(const flare_mha_fwd_params& p, void* q_rotated, cudaStream_t stream) {
  if (p.head_dim <= 0 || p.batch <= 0) return (int)cudaErrorInvalidValue;
  if (p.k_new != nullptr && (p.k == nullptr || p.cache_seqlens == nullptr))
    return (int)cudaErrorInvalidValue;
  if (p.v_new != nullptr && p.v == nullptr) return (int)cudaErrorInvalidValue;
  if (p.rotary_dim < 0 || p.rotary_dim % 2 != 0 || p.rotary_dim > p.head_dim)
    return (int)cudaErrorInvalidValue;
  switch (p.dtype) {
    case FLARE_DTYPE_FP16:
      return (int)launch_append<__half>(p, q_rotated, stream);
    case FLARE_DTYPE_BF16:
      return (int)launch_append<__nv_bfloat16>(p, q_rotated, stream);
    default:
      return (int)cudaErrorInvalidValue;
  }
}

}  // namespace flare
