// Split-KV combine: merges the per-split normalised partial outputs and their log-sum-exps
// (written by the forward kernel into the workspace) into the final out and lse.
//
// Layout of the accumulators (row r = (b * heads + h) * max_seqlen_q + i):
//   lse_accum[s * rows + r]                 natural-log LSE of split s, -inf when it saw no key
//   o_accum[(s * rows + r) * head_dim + d]  normalised partial output (garbage when lse is -inf)
//
// Mapping: a group of `tpr` lanes (a power of two <= 32) owns one row; each lane owns float4
// chunks c = lane_in_row + k * tpr of the row. With head_dim <= 128 a lane owns one chunk, with
// head_dim <= 256 at most two. Every lane computes the merged LSE of its row on its own (the lse
// loads of a row group hit the same address and are broadcast), so no shuffles are needed and
// the summation order is fixed: splits in increasing order.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

#include "common/lse_merge.h"
#include "common/sequence.h"
#include "kernels/common/merge.cuh"
#include "kernels/fwd_launch.h"

namespace flare {
namespace {

constexpr int kCombineThreads = 128;

// Element conversion and the weighted accumulate are merge.cuh's (the public merge kernel's).
using merge_impl::fma4;
using merge_impl::store4;

// kChunks: float4 chunks per lane (1 when head_dim / 4 <= 32, else 2).
// kUnroll: splits whose loads are issued together (memory-level parallelism).
template <typename T, int kChunks>
__global__ void __launch_bounds__(kCombineThreads)
    split_combine_kernel(const FwdLaunch launch, int tpr_log2) {
  constexpr int kUnroll = 8 / kChunks;
  const flare_mha_fwd_params& p = launch.p;
  const int lane = threadIdx.x & 31;
  const int tpr = 1 << tpr_log2;
  const int lane_in_row = lane & (tpr - 1);
  const int rows_per_block = kCombineThreads >> tpr_log2;
  const int64_t row = (int64_t)blockIdx.x * rows_per_block + (threadIdx.x >> tpr_log2);

  const int max_seqlen_q = launch.max_seqlen_q;
  const int64_t rows = (int64_t)p.batch * p.num_heads * max_seqlen_q;
  if (row >= rows) return;
  const int i = (int)(row % max_seqlen_q);
  const int64_t bh = row / max_seqlen_q;
  const int h = (int)(bh % p.num_heads);
  const int b = (int)(bh / p.num_heads);
  const SequenceInfo seq = sequence_info(p, b);
  if (i >= seq.seqlen_q) return;  // padding row of a shorter varlen sequence

  const int n = launch.num_splits;
  const float* lse_row = launch.lse_accum + row;  // split s at lse_row[s * rows]

  // Merged LSE, the math of merged_lse(): max, then sum of exp(lse_s - max) in split order.
  float mx = -INFINITY;
  {
    int s = 0;
    for (; s + kUnroll <= n; s += kUnroll) {
      float l[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) l[u] = __ldg(lse_row + (int64_t)(s + u) * rows);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) mx = l[u] > mx ? l[u] : mx;
    }
    for (; s < n; ++s) {
      const float l = __ldg(lse_row + (int64_t)s * rows);
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
      for (int u = 0; u < kUnroll; ++u) l[u] = __ldg(lse_row + (int64_t)(s + u) * rows);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) sum += expf(l[u] - mx);  // exp(-inf) = 0
    }
    for (; s < n; ++s) sum += expf(__ldg(lse_row + (int64_t)s * rows) - mx);
    lse = mx + logf(sum);
  }

  const int nchunks = p.head_dim >> 2;
  float4 acc[kChunks];
#pragma unroll
  for (int k = 0; k < kChunks; ++k) acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);

  if (lse != -INFINITY) {
    const int64_t split_stride = rows * nchunks;  // float4s between splits of one row
    const float4* o_row =
        reinterpret_cast<const float4*>(launch.o_accum + row * p.head_dim) + lane_in_row;
    for (int s0 = 0; s0 < n; s0 += kUnroll) {
      float l[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        l[u] = s0 + u < n ? __ldg(lse_row + (int64_t)(s0 + u) * rows) : -INFINITY;
      float4 v[kUnroll][kChunks];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int k = 0; k < kChunks; ++k) {
          // Empty parts are never read: their o rows may hold anything.
          if (l[u] != -INFINITY && lane_in_row + k * tpr < nchunks)
            v[u][k] = __ldg(o_row + (s0 + u) * split_stride + k * tpr);
          else
            v[u][k] = make_float4(0.f, 0.f, 0.f, 0.f);
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

  T* out = static_cast<T*>(p.out) + out_offset(p, seq, i, h);
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int c = lane_in_row + k * tpr;
    if (c < nchunks) store4<T>(out + 4 * c, acc[k]);
  }
  if (p.lse != nullptr && lane_in_row == 0) p.lse[lse_offset(p, seq, i, h)] = lse;
}

template <typename T>
cudaError_t launch_combine(const FwdLaunch& launch, cudaStream_t stream) {
  const flare_mha_fwd_params& p = launch.p;
  const int nchunks = p.head_dim / 4;
  int tpr_log2 = 0;
  while ((1 << tpr_log2) < nchunks && tpr_log2 < 5) ++tpr_log2;
  const int rows_per_block = kCombineThreads >> tpr_log2;
  const int64_t rows = (int64_t)p.batch * p.num_heads * launch.max_seqlen_q;
  if (rows <= 0) return cudaSuccess;
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  if (nchunks <= 32)
    split_combine_kernel<T, 1><<<(unsigned)blocks, kCombineThreads, 0, stream>>>(launch, tpr_log2);
  else
    split_combine_kernel<T, 2><<<(unsigned)blocks, kCombineThreads, 0, stream>>>(launch, tpr_log2);
  return cudaGetLastError();
}

}  // namespace

int run_split_combine(const FwdLaunch& launch, cudaStream_t stream) {
  const flare_mha_fwd_params& p = launch.p;
  if (p.head_dim <= 0 || p.head_dim % 8 != 0 || p.head_dim > 256 || launch.num_splits < 1 ||
      launch.o_accum == nullptr || launch.lse_accum == nullptr || p.out == nullptr)
    return (int)cudaErrorInvalidValue;
  switch (p.dtype) {
    case FLARE_DTYPE_FP16:
      return (int)launch_combine<__half>(launch, stream);
    case FLARE_DTYPE_BF16:
      return (int)launch_combine<__nv_bfloat16>(launch, stream);
    default:
      return (int)cudaErrorInvalidValue;
  }
}

}  // namespace flare
