// Merging partial attention states by their log-sum-exp on the device: the one kernel behind
// the public flare_merge_attention_states (merge.cu: fp16/bf16/fp32 partials with any strides)
// and the split-KV combine (combine.cu: fp32 split accumulators into out / lse). Each supplies
// only a row layout.
//
// Math (that of common/lse_merge.h), per query row over its n parts in increasing order:
//   mx = max_s lse_s;  lse = mx + log(sum_s exp(lse_s - mx))  (-inf when every part is empty)
//   out = sum_{s: lse_s != -inf} exp(lse_s - lse) * o_s        (0 when every part is empty)
// A part with lse_s = -inf is never read: its values may be anything (NaN garbage).
//
// Mapping: a group of `tpr` lanes (a power of two <= 32, all in one warp) owns one row; each
// lane owns the 4-element chunks c = lane_in_row + k * tpr of the row (kChunks of them:
// head_dim <= 128: 1, <= 256: 2, <= 512: 4). Every lane computes the merged LSE of its row on
// its own (the lse loads of a row group hit one address and are broadcast), so no shuffles are
// needed and the summation order is fixed.
//
// In place: a part's row may be the output row (each lane reads its chunks of every part
// before it writes them), and a part's lse the output lse (the row group synchronises before
// lane 0 writes it).
//
// The row layout is a template parameter, a trivially copyable struct passed by value:
//   int64_t num_rows() const;  int num_parts() const;  int head_dim() const;  (__host__
//     __device__: launch_merge calls them on the host.
//   bool out_elementwise() const;  // __host__ __device__: out rows are not 8-byte addressable
//     or head_dim is not a multiple of 4: the output is stored element by element (the parts
//     are still read in 4-float chunks, so their rows must be padded to a multiple of 4). A __device__-only member called there
//     compiles, inside a template, to a host stub that calls exit(1) -- no diagnostic.)
//   bool locate(int64_t row, Row& at) const;   // false: a padding row, nothing to do
//   const TIn* part(int s, const Row& at) const;   // first element of part s's row
//   float lse(int s, const Row& at) const;          // loads lse_s of the row
//   TOut* out(const Row& at) const;  float* out_lse(const Row& at) const;  // null: no lse
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

#include <cstdint>

#include "common/lse_merge.h"

namespace flare {
namespace merge_impl {

constexpr int kMergeThreads = 128;

// Programmatic dependent launch (sm90+): a merge launched with the PDL attribute right after
// the kernel that writes its parts (the split-KV combine after the decode kernel) may start
// before that kernel ends; it waits here until the prior grid has completed and its writes are
// visible. Without the attribute (or below sm90) this is a no-op.
__device__ __forceinline__ void wait_for_prior_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Four consecutive elements as floats (one 8- or 16-byte load through the read-only path).
template <typename T>
__device__ __forceinline__ float4 load4(const T* src);

template <>
__device__ __forceinline__ float4 load4<float>(const float* src) {
  return __ldg(reinterpret_cast<const float4*>(src));
}

template <>
__device__ __forceinline__ float4 load4<__half>(const __half* src) {
  union {
    uint2 u;
    __half2 h[2];
  } pack;
  pack.u = __ldg(reinterpret_cast<const uint2*>(src));
  const float2 a = __half22float2(pack.h[0]), b = __half22float2(pack.h[1]);
  return make_float4(a.x, a.y, b.x, b.y);
}

template <>
__device__ __forceinline__ float4 load4<__nv_bfloat16>(const __nv_bfloat16* src) {
  union {
    uint2 u;
    __nv_bfloat162 h[2];
  } pack;
  pack.u = __ldg(reinterpret_cast<const uint2*>(src));
  const float2 a = __bfloat1622float2(pack.h[0]), b = __bfloat1622float2(pack.h[1]);
  return make_float4(a.x, a.y, b.x, b.y);
}

// Four floats to four elements of T with one 8- or 16-byte store (round to nearest even).
template <typename T>
__device__ __forceinline__ void store4(T* dst, const float4& v);

// The first n (<= 4) of four floats to elements of T, one store each (round to nearest even).
template <typename T>
__device__ __forceinline__ void store_elements(T* dst, const float4& v, int n) {
  const float f[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int e = 0; e < 4; ++e)
    if (e < n) dst[e] = T(f[e]);
}

// Chunk c of an output row: store4, or element by element where the layout says so.
template <typename T, class Layout>
__device__ __forceinline__ void store_chunk(const Layout& L, T* out, int c, const float4& v) {
  if (L.out_elementwise()) {
    const int n = L.head_dim() - 4 * c;
    store_elements<T>(out + 4 * c, v, n < 4 ? n : 4);
  } else {
    store4<T>(out + 4 * c, v);
  }
}

template <>
__device__ __forceinline__ void store4<float>(float* dst, const float4& v) {
  *reinterpret_cast<float4*>(dst) = v;
}

template <>
__device__ __forceinline__ void store4<__half>(__half* dst, const float4& v) {
  union {
    __half2 h[2];
    uint2 u;
  } pack;
  pack.h[0] = __floats2half2_rn(v.x, v.y);
  pack.h[1] = __floats2half2_rn(v.z, v.w);
  *reinterpret_cast<uint2*>(dst) = pack.u;
}

template <>
__device__ __forceinline__ void store4<__nv_bfloat16>(__nv_bfloat16* dst, const float4& v) {
  union {
    __nv_bfloat162 h[2];
    uint2 u;
  } pack;
  pack.h[0] = __floats2bfloat162_rn(v.x, v.y);
  pack.h[1] = __floats2bfloat162_rn(v.z, v.w);
  *reinterpret_cast<uint2*>(dst) = pack.u;
}

__device__ __forceinline__ void fma4(float4& acc, float w, const float4& v) {
  acc.x = fmaf(w, v.x, acc.x);
  acc.y = fmaf(w, v.y, acc.y);
  acc.z = fmaf(w, v.z, acc.z);
  acc.w = fmaf(w, v.w, acc.w);
}

// Merges the row this thread's lane group owns. kUnroll parts' loads are issued together
// (memory-level parallelism) while the register footprint stays at 8 float4 values.
template <typename TIn, typename TOut, int kChunks, class Layout>
__device__ __forceinline__ void merge_row(const Layout& L, int tpr_log2) {
  constexpr int kUnroll = 8 / kChunks;
  const int lane = threadIdx.x & 31;
  const int tpr = 1 << tpr_log2;
  const int lane_in_row = lane & (tpr - 1);
  const int rows_per_block = kMergeThreads >> tpr_log2;
  const int64_t row = (int64_t)blockIdx.x * rows_per_block + (threadIdx.x >> tpr_log2);
  if (row >= L.num_rows()) return;
  typename Layout::Row at;
  if (!L.locate(row, at)) return;  // the whole lane group leaves together

  const int n = L.num_parts();
  // Merged LSE, the math of merged_lse(): max, then sum of exp(lse_s - max) in part order.
  float mx = -INFINITY;
  {
    int s = 0;
    for (; s + kUnroll <= n; s += kUnroll) {
      float l[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) l[u] = L.lse(s + u, at);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) mx = l[u] > mx ? l[u] : mx;
    }
    for (; s < n; ++s) {
      const float l = L.lse(s, at);
      mx = l > mx ? l : mx;
    }
  }
  float lse = mx;
  if (mx != -INFINITY) {
    float sum = 0.f;
    int s = 0;
    for (; s + kUnroll <= n; s += kUnroll) {
      float l[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) l[u] = L.lse(s + u, at);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) sum += expf(l[u] - mx);  // exp(-inf) = 0
    }
    for (; s < n; ++s) sum += expf(L.lse(s, at) - mx);
    lse = mx + logf(sum);
  }

  const int nchunks = (L.head_dim() + 3) >> 2;
  float4 acc[kChunks];
#pragma unroll
  for (int k = 0; k < kChunks; ++k) acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);

  if (lse != -INFINITY) {
    for (int s0 = 0; s0 < n; s0 += kUnroll) {
      float l[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) l[u] = s0 + u < n ? L.lse(s0 + u, at) : -INFINITY;
      float4 v[kUnroll][kChunks];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const TIn* src = l[u] != -INFINITY ? L.part(s0 + u, at) : nullptr;
#pragma unroll
        for (int k = 0; k < kChunks; ++k) {
          const int c = lane_in_row + k * tpr;
          // Empty parts are never read: their rows may hold anything.
          v[u][k] = (src != nullptr && c < nchunks) ? load4<TIn>(src + 4 * c)
                                                    : make_float4(0.f, 0.f, 0.f, 0.f);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (l[u] == -INFINITY) continue;
        const float w = merge_weight(l[u], lse);
#pragma unroll
        for (int k = 0; k < kChunks; ++k) fma4(acc[k], w, v[u][k]);
      }
    }
  }

  TOut* out = L.out(at);
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int c = lane_in_row + k * tpr;
    if (c < nchunks) store_chunk<TOut>(L, out, c, acc[k]);
  }
  float* out_lse = L.out_lse(at);
  if (out_lse != nullptr) {
    // Every lane of the group has read the row's lse values (they fed the weights above)
    // before lane 0 overwrites one of them in place.
    const unsigned group_mask =
        tpr == 32 ? 0xffffffffu : (((1u << tpr) - 1u) << (lane & ~(tpr - 1)));
    __syncwarp(group_mask);
    if (lane_in_row == 0) *out_lse = lse;
  }
}

// Many parts, one row per CTA (the split-KV combine of a decode step: few rows, up to 128
// splits). The narrow mapping above walks a row's parts in three dependent passes of kUnroll
// loads each (max, sum, accumulate), ~3 n / kUnroll memory round trips per row: 11 us for 32
// rows x 32 splits on an H100, more than half the decode kernel's time. Here the 4 warps share
// a row: the part LSEs are read once into shared memory (one round trip), the warps accumulate
// disjoint parts (warp w: parts w, w + 4, ...) with all their loads in flight, and the four
// partial sums are added in warp order. Fixed order everywhere, so the result is deterministic.
// In place is safe: every part and lse is read before the first __syncthreads that precedes
// the writes.
constexpr int kWideMaxParts = 256;  // LSEs cached in shared memory
constexpr int kWideMinParts = 4;    // below this the narrow mapping has few round trips anyway

template <typename TIn, typename TOut, int kChunks, class Layout>
__device__ __forceinline__ void merge_row_wide(const Layout& L) {
  constexpr int kWarps = kMergeThreads / 32;
  constexpr int kUnroll = 16 / kChunks;  // parts whose loads one warp keeps in flight
  __shared__ float s_lse[kWideMaxParts];
  __shared__ float s_red[kWarps];
  __shared__ float4 s_acc[kWarps][kChunks][32];
  const int64_t row = blockIdx.x;
  if (row >= L.num_rows()) return;
  typename Layout::Row at;
  if (!L.locate(row, at)) return;  // the whole CTA leaves together (one row)
  const int n = L.num_parts();
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  float mx = -INFINITY;
  for (int s = tid; s < n; s += kMergeThreads) {
    const float l = L.lse(s, at);
    s_lse[s] = l;
    mx = l > mx ? l : mx;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, mx, o);
    mx = other > mx ? other : mx;
  }
  if (lane == 0) s_red[warp] = mx;
  __syncthreads();  // s_lse and the warp maxima are complete
  mx = s_red[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) mx = s_red[w] > mx ? s_red[w] : mx;
  __syncthreads();  // s_red is reused for the sums
  float lse = -INFINITY;
  if (mx != -INFINITY) {
    float sum = 0.f;
    for (int s = tid; s < n; s += kMergeThreads) sum += expf(s_lse[s] - mx);  // exp(-inf) = 0
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) s_red[warp] = sum;
    __syncthreads();
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += s_red[w];
    lse = mx + logf(total);
  }

  const int nchunks = (L.head_dim() + 3) >> 2;
  float4 acc[kChunks];
#pragma unroll
  for (int k = 0; k < kChunks; ++k) acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
  if (lse != -INFINITY) {
    for (int s0 = warp; s0 < n; s0 += kWarps * kUnroll) {
      float4 v[kUnroll][kChunks];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int s = s0 + u * kWarps;
        // Empty parts (lse -inf) and parts past n are never read.
        const TIn* src = s < n && s_lse[s] != -INFINITY ? L.part(s, at) : nullptr;
#pragma unroll
        for (int k = 0; k < kChunks; ++k) {
          const int c = lane + k * 32;
          v[u][k] = (src != nullptr && c < nchunks) ? load4<TIn>(src + 4 * c)
                                                    : make_float4(0.f, 0.f, 0.f, 0.f);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int s = s0 + u * kWarps;
        if (s >= n || s_lse[s] == -INFINITY) continue;
        const float w = merge_weight(s_lse[s], lse);
#pragma unroll
        for (int k = 0; k < kChunks; ++k) fma4(acc[k], w, v[u][k]);
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kChunks; ++k) s_acc[warp][k][lane] = acc[k];
  __syncthreads();  // every part has been read: the output may alias one

  TOut* out = L.out(at);
  for (int c = tid; c < nchunks; c += kMergeThreads) {
    const int k = c / 32, l = c % 32;
    float4 total = s_acc[0][k][l];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) {
      const float4 x = s_acc[w][k][l];
      total.x += x.x;
      total.y += x.y;
      total.z += x.z;
      total.w += x.w;
    }
    store_chunk<TOut>(L, out, c, total);
  }
  float* out_lse = L.out_lse(at);
  if (out_lse != nullptr && tid == 0) *out_lse = lse;
}

template <typename TIn, typename TOut, int kChunks, class Layout>
__global__ void __launch_bounds__(kMergeThreads) merge_kernel(const Layout L, int tpr_log2) {
  wait_for_prior_grid();
  merge_row<TIn, TOut, kChunks, Layout>(L, tpr_log2);
}

template <typename TIn, typename TOut, int kChunks, class Layout>
__global__ void __launch_bounds__(kMergeThreads) merge_kernel_wide(const Layout L) {
  wait_for_prior_grid();
  merge_row_wide<TIn, TOut, kChunks, Layout>(L);
}

// The wide mapping (one row per CTA) when a row has many parts; the narrow one otherwise.
__host__ __device__ constexpr bool merge_use_wide(int num_parts) {
  return num_parts >= kWideMinParts && num_parts <= kWideMaxParts;
}

// Launches `kernel` on `blocks` CTAs, with programmatic stream serialisation when asked for
// (the caller checks the device supports it: compute capability >= 9).
template <typename Kernel, typename... Args>
cudaError_t launch_rows(Kernel kernel, unsigned blocks, bool programmatic, cudaStream_t stream,
                        Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(blocks);
  cfg.blockDim = dim3(kMergeThreads);
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  if (programmatic) {
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  return cudaLaunchKernelEx(&cfg, kernel, args...);
}

// Launches the merge over every row of L. head_dim must be in [1, 512], a multiple of 4 unless
// the output is stored element by element (out_elementwise).
// programmatic: programmatic dependent launch after the kernel that writes the parts (sm90+).
template <typename TIn, typename TOut, class Layout>
cudaError_t launch_merge(const Layout& L, cudaStream_t stream, bool programmatic = false) {
  const int nchunks = (L.head_dim() + 3) / 4;
  if (nchunks < 1 || nchunks > 128 || (L.head_dim() % 4 != 0 && !L.out_elementwise()))
    return cudaErrorInvalidValue;
  const int64_t rows = L.num_rows();
  if (rows <= 0) return cudaSuccess;
  if (merge_use_wide(L.num_parts())) {
    if (rows > 0x7fffffff) return cudaErrorInvalidConfiguration;
    const unsigned blocks = (unsigned)rows;
    if (nchunks <= 32)
      return launch_rows(merge_kernel_wide<TIn, TOut, 1, Layout>, blocks, programmatic, stream, L);
    if (nchunks <= 64)
      return launch_rows(merge_kernel_wide<TIn, TOut, 2, Layout>, blocks, programmatic, stream, L);
    return launch_rows(merge_kernel_wide<TIn, TOut, 4, Layout>, blocks, programmatic, stream, L);
  }
  int tpr_log2 = 0;
  while ((1 << tpr_log2) < nchunks && tpr_log2 < 5) ++tpr_log2;
  const int rows_per_block = kMergeThreads >> tpr_log2;
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const unsigned b = (unsigned)blocks;
  if (nchunks <= 32)
    return launch_rows(merge_kernel<TIn, TOut, 1, Layout>, b, programmatic, stream, L, tpr_log2);
  if (nchunks <= 64)
    return launch_rows(merge_kernel<TIn, TOut, 2, Layout>, b, programmatic, stream, L, tpr_log2);
  return launch_rows(merge_kernel<TIn, TOut, 4, Layout>, b, programmatic, stream, L, tpr_log2);
}

}  // namespace merge_impl
}  // namespace flare
