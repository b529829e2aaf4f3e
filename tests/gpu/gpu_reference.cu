// Simple fp32 GPU attention reference and device helpers (see gpu_reference.h).
//
// Kernel layout: a block of 8 warps handles 8 consecutive query rows of one (batch, head); each
// warp owns one row. Keys are visited in tiles of 32 that the whole block stages in shared
// memory as fp32. Within a tile lane j scores key j with a plain dot product, the warp updates
// an online softmax (running max and sum, fp32), and every lane accumulates the head_dim_v / 32
// output columns it owns; the sink logit joins the denominator at the end, and prefix ranges
// widen the visible keys (then every key tile is visited). No tensor cores, no low-precision
// intermediates: the only rounding is fp32 arithmetic, so its error is orders of magnitude below
// the bf16 output rounding of flare.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstring>

#include "common/mask.h"
#include "flare/flare.h"
#include "gpu/gpu_reference.h"

namespace flare_test {
namespace {

constexpr int kRowsPerBlock = 8;   // one warp per query row
constexpr int kKeysPerTile = 32;   // one lane per key while scoring
constexpr int kMaxCols = 16;       // head_dim_v <= 512 = 16 columns per lane

__device__ __forceinline__ float load_elem(const uint16_t* p, int64_t i, int dtype) {
  const uint16_t bits = p[i];
  if (dtype == FLARE_DTYPE_BF16) return __uint_as_float(uint32_t(bits) << 16);
  return __half2float(__ushort_as_half(bits));
}

__global__ void reference_attention_kernel(GpuRefArgs a, float scale) {
  extern __shared__ float smem[];
  const int d = a.head_dim;
  const int dv = a.head_dim_v > 0 ? a.head_dim_v : d;
  const int kpitch = d + 1;  // padded so lane j reading row j column t hits distinct banks
  float* k_tile = smem;                            // [32][d + 1]
  float* v_tile = k_tile + kKeysPerTile * kpitch;  // [32][dv]
  float* q_rows = v_tile + kKeysPerTile * dv;      // [8][d]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = blockIdx.z, h = blockIdx.y;
  const int hk = h / (a.num_heads / a.num_heads_k);
  const int row0 = blockIdx.x * kRowsPerBlock;
  const int row = row0 + warp;
  const bool active = row < a.seqlen_q;

  const uint16_t* q = static_cast<const uint16_t*>(a.q);
  const uint16_t* k = static_cast<const uint16_t*>(a.k);
  const uint16_t* v = static_cast<const uint16_t*>(a.v);
  const flare::MaskSpec mask =
      flare::make_mask(a.seqlen_q, a.seqlen_k, a.causal != 0, a.window_left, a.window_right);

  if (active) {
    const int64_t qb = b * a.q_batch_stride + row * a.q_row_stride + h * a.q_head_stride;
    for (int t = lane; t < d; t += 32) q_rows[warp * d + t] = load_elem(q, qb + t, a.dtype);
  }

  // Keys any row of this block may see (every key when prefix ranges may add some).
  const bool has_ranges = a.mm_prefix_ranges != nullptr && a.max_mm_prefix_ranges > 0;
  const int last_row = min(row0 + kRowsPerBlock, a.seqlen_q) - 1;
  const int key_lo = has_ranges ? 0 : mask.first_key(row0);
  const int key_hi = has_ranges ? a.seqlen_k : mask.end_key(last_row);
  // flare.h: a range [start, end) that holds the row's position row + seqlen_k - seqlen_q
  // opens all its keys to the row.
  auto range_visible = [&](int j) {
    const long long pos = (long long)row + a.seqlen_k - a.seqlen_q;
    const int32_t* r = a.mm_prefix_ranges + int64_t(b) * a.mm_prefix_ranges_batch_stride;
    for (int i = 0; i < a.max_mm_prefix_ranges; ++i)
      if (r[2 * i] <= pos && pos < r[2 * i + 1] && r[2 * i] <= j && j < r[2 * i + 1]) return true;
    return false;
  };

  float m_run = -INFINITY, l_run = 0.f;
  float acc[kMaxCols];
#pragma unroll
  for (int c = 0; c < kMaxCols; ++c) acc[c] = 0.f;

  const int tile_start = (key_lo / kKeysPerTile) * kKeysPerTile;
  for (int j0 = tile_start; j0 < key_hi; j0 += kKeysPerTile) {
    __syncthreads();  // previous tile fully consumed (and q_rows visible on the first pass)
    for (int idx = threadIdx.x; idx < kKeysPerTile * d; idx += blockDim.x) {
      const int jj = idx / d, t = idx % d;
      const int j = j0 + jj;
      float kv = 0.f;
      if (j < a.seqlen_k)
        kv = load_elem(k, b * a.k_batch_stride + j * a.k_row_stride + hk * a.k_head_stride + t,
                       a.dtype);
      k_tile[jj * kpitch + t] = kv;
    }
    for (int idx = threadIdx.x; idx < kKeysPerTile * dv; idx += blockDim.x) {
      const int jj = idx / dv, t = idx % dv;
      const int j = j0 + jj;
      float vv = 0.f;
      if (j < a.seqlen_k)
        vv = load_elem(v, b * a.v_batch_stride + j * a.v_row_stride + hk * a.v_head_stride + t,
                       a.dtype);
      v_tile[jj * dv + t] = vv;
    }
    __syncthreads();
    if (!active) continue;  // whole warp inactive: no shuffles below are affected

    const int j = j0 + lane;
    float s = -INFINITY;
    if (j < a.seqlen_k && (mask.visible(row, j) || (has_ranges && range_visible(j)))) {
      float dot = 0.f;
      for (int t = 0; t < d; ++t) dot += q_rows[warp * d + t] * k_tile[lane * kpitch + t];
      s = dot * scale;
      if (a.softcap > 0.f) s = a.softcap * tanhf(s / a.softcap);
    }
    float tile_max = s;
    for (int off = 16; off > 0; off >>= 1)
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, off));
    const float m_new = fmaxf(m_run, tile_max);
    if (m_new == -INFINITY) continue;  // nothing visible yet (warp-uniform)
    const float p = s == -INFINITY ? 0.f : expf(s - m_new);
    const float correction = m_run == -INFINITY ? 0.f : expf(m_run - m_new);
    float p_sum = p;
    for (int off = 16; off > 0; off >>= 1) p_sum += __shfl_xor_sync(0xffffffffu, p_sum, off);
    l_run = l_run * correction + p_sum;
#pragma unroll
    for (int c = 0; c < kMaxCols; ++c) acc[c] *= correction;
    for (int jj = 0; jj < kKeysPerTile; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      if (pj == 0.f) continue;  // warp-uniform
#pragma unroll
      for (int c = 0; c < kMaxCols; ++c) {
        const int t = lane + 32 * c;
        if (t < dv) acc[c] += pj * v_tile[jj * dv + t];
      }
    }
    m_run = m_new;
  }

  if (!active) return;
  // The sink z joins the denominator only: l = l_run e^(m_run - m) + e^(z - m), m = max(m_run, z).
  float m_fin = m_run, l_fin = l_run, acc_scale = 1.f;
  const float z = a.sink != nullptr ? a.sink[h] : -INFINITY;
  if (z > -INFINITY) {
    m_fin = fmaxf(m_run, z);
    acc_scale = m_run == -INFINITY ? 0.f : expf(m_run - m_fin);
    l_fin = l_run * acc_scale + expf(z - m_fin);
  }
  const float inv = l_fin > 0.f ? acc_scale / l_fin : 0.f;
  float* o = a.out + ((int64_t(b) * a.seqlen_q + row) * a.num_heads + h) * dv;
#pragma unroll
  for (int c = 0; c < kMaxCols; ++c) {
    const int t = lane + 32 * c;
    if (t < dv) o[t] = acc[c] * inv;
  }
  if (a.lse != nullptr && lane == 0)
    a.lse[(int64_t(b) * a.num_heads + h) * a.seqlen_q + row] =
        l_fin > 0.f ? m_fin + logf(l_fin) : -INFINITY;
}

__device__ __forceinline__ uint64_t hash64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xFF51AFD7ED558CCDull;
  x ^= x >> 33;
  x *= 0xC4CEB9FE1A85EC53ull;
  x ^= x >> 33;
  return x;
}

__global__ void fill_normal_kernel(uint16_t* dst, size_t n, int dtype, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    // Box-Muller from two 24-bit uniforms of the hash of (seed, i).
    const uint64_t r = hash64(seed ^ (i * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull));
    const float u1 = (float((r >> 40) & 0xFFFFFF) + 1.f) * (1.f / 16777217.f);
    const float u2 = float((r >> 16) & 0xFFFFFF) * (1.f / 16777216.f);
    const float z = sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
    dst[i] = dtype == FLARE_DTYPE_BF16 ? __bfloat16_as_ushort(__float2bfloat16_rn(z))
                                       : __half_as_ushort(__float2half_rn(z));
  }
}

__global__ void fill_u16_kernel(uint16_t* dst, size_t n, uint16_t value) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    dst[i] = value;
}

__global__ void fill_f32_kernel(float* dst, size_t n, float value) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    dst[i] = value;
}

__global__ void diff_stats_kernel(const uint16_t* out, int dtype, const float* ref, size_t n,
                                  double* sums, unsigned long long* max_bits,
                                  unsigned long long* nonfinite) {
  double dsq = 0, rsq = 0, mx = 0;
  unsigned long long bad = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const float o = load_elem(out, int64_t(i), dtype);
    const double r = ref[i];
    if (!isfinite(o)) {
      ++bad;
      continue;
    }
    const double diff = double(o) - r;
    dsq += diff * diff;
    rsq += r * r;
    mx = fmax(mx, fabs(diff));
  }
  __shared__ double s_d[256], s_r[256], s_m[256];
  __shared__ unsigned long long s_b[256];
  s_d[threadIdx.x] = dsq;
  s_r[threadIdx.x] = rsq;
  s_m[threadIdx.x] = mx;
  s_b[threadIdx.x] = bad;
  __syncthreads();
  for (int step = blockDim.x / 2; step > 0; step >>= 1) {
    if (threadIdx.x < step) {
      s_d[threadIdx.x] += s_d[threadIdx.x + step];
      s_r[threadIdx.x] += s_r[threadIdx.x + step];
      s_m[threadIdx.x] = fmax(s_m[threadIdx.x], s_m[threadIdx.x + step]);
      s_b[threadIdx.x] += s_b[threadIdx.x + step];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    atomicAdd(&sums[0], s_d[0]);
    atomicAdd(&sums[1], s_r[0]);
    // Non-negative doubles order like their bit patterns.
    atomicMax(max_bits, static_cast<unsigned long long>(__double_as_longlong(s_m[0])));
    atomicAdd(nonfinite, s_b[0]);
  }
}

unsigned grid_for(size_t n) {
  const size_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 4096 ? (blocks == 0 ? 1 : blocks) : 4096);
}

}  // namespace

cudaError_t gpu_reference_attention(const GpuRefArgs& a, cudaStream_t stream) {
  const int dv = a.head_dim_v > 0 ? a.head_dim_v : a.head_dim;
  if (a.head_dim <= 0 || a.head_dim > 32 * kMaxCols || dv > 32 * kMaxCols ||
      a.num_heads_k <= 0 || a.num_heads % a.num_heads_k != 0)
    return cudaErrorInvalidValue;
  if (a.batch == 0 || a.seqlen_q == 0 || a.num_heads == 0) return cudaSuccess;
  const float scale = a.softmax_scale != 0.f ? a.softmax_scale : 1.f / sqrtf(float(a.head_dim));
  const size_t smem = sizeof(float) * (size_t(kKeysPerTile) * (a.head_dim + 1) +
                                       size_t(kKeysPerTile) * dv +
                                       size_t(kRowsPerBlock) * a.head_dim);
  cudaError_t e = cudaFuncSetAttribute(reference_attention_kernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  const dim3 grid((a.seqlen_q + kRowsPerBlock - 1) / kRowsPerBlock, a.num_heads, a.batch);
  reference_attention_kernel<<<grid, 32 * kRowsPerBlock, smem, stream>>>(a, scale);
  return cudaGetLastError();
}

cudaError_t gpu_fill_normal(void* dst, size_t n, int dtype, uint64_t seed, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  fill_normal_kernel<<<grid_for(n), 256, 0, stream>>>(static_cast<uint16_t*>(dst), n, dtype, seed);
  return cudaGetLastError();
}

cudaError_t gpu_fill_u16(void* dst, size_t n, uint16_t value, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  fill_u16_kernel<<<grid_for(n), 256, 0, stream>>>(static_cast<uint16_t*>(dst), n, value);
  return cudaGetLastError();
}

cudaError_t gpu_fill_f32(float* dst, size_t n, float value, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  fill_f32_kernel<<<grid_for(n), 256, 0, stream>>>(dst, n, value);
  return cudaGetLastError();
}

cudaError_t gpu_diff_stats(const void* out, int dtype, const float* ref, size_t n,
                           GpuDiffStats* stats, cudaStream_t stream) {
  struct Acc {
    double sums[2];
    unsigned long long max_bits;
    unsigned long long nonfinite;
  };
  Acc* d_acc = nullptr;
  cudaError_t e = cudaMalloc(&d_acc, sizeof(Acc));
  if (e != cudaSuccess) return e;
  e = cudaMemsetAsync(d_acc, 0, sizeof(Acc), stream);
  if (e == cudaSuccess && n > 0) {
    diff_stats_kernel<<<grid_for(n), 256, 0, stream>>>(
        static_cast<const uint16_t*>(out), dtype, ref, n, d_acc->sums, &d_acc->max_bits,
        &d_acc->nonfinite);
    e = cudaGetLastError();
  }
  Acc h{};
  if (e == cudaSuccess) e = cudaMemcpyAsync(&h, d_acc, sizeof(Acc), cudaMemcpyDeviceToHost, stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
  cudaFree(d_acc);
  if (e != cudaSuccess) return e;
  stats->diff_sq = h.sums[0];
  stats->ref_sq = h.sums[1];
  uint64_t bits = h.max_bits;
  double mx;
  static_assert(sizeof(mx) == sizeof(bits), "double is 64-bit");
  memcpy(&mx, &bits, sizeof mx);
  stats->max_abs = mx;
  stats->nonfinite = h.nonfinite;
  return cudaSuccess;
}

}  // namespace flare_test
