// The consumer warpgroups' per-block steps, shared by the Hopper kernels (fwd_kernel_sm90.cuh,
// fwd_kernel_sm90_ws.cuh): the QK^T and P V wgmma issue, the online-softmax update
// (common/online_softmax.cuh) of one key block held in a wgmma accumulator fragment, and the
// rescale of O. A warpgroup owns 64 query
// rows; a thread holds two of them (g and g + 8 of its warp's 16), kBlockN / 4 scores of each.
#pragma once
#include <cstdint>

#include "kernels/common/online_softmax.cuh"
#include "kernels/sm80/mma_sm80.cuh"
#include "kernels/sm90/wgmma_common.cuh"
#include "kernels/sm90/wgmma_ops.cuh"

namespace flare {
namespace sm90 {

// S (this warpgroup's 64 rows x kBlockN keys) = Q K^T. Only issues: the caller fences registers
// once before a group of issues, since any non-wgmma instruction that touches wgmma registers
// between two wgmmas of one pipeline stage serialises them.
template <typename T, int HeadDim, int BlockM, int BlockN>
__device__ __forceinline__ void issue_qk(float (&acc_s)[BlockN / 2], uint32_t sQ, uint32_t sK,
                                         int wg) {
  const uint64_t a0 = desc_k_major(sQ + wg * 64 * 128), b0 = desc_k_major(sK);
#pragma unroll
  for (int ks = 0; ks < HeadDim / 16; ++ks) {
    const uint32_t atom = ks / 4, within = (ks % 4) * 32;
    const uint64_t a = desc_add(a0, atom * (BlockM * 128) + within);
    const uint64_t b = desc_add(b0, atom * (BlockN * 128) + within);
    wgmma_ss<T, BlockN>(acc_s, a, b, ks > 0 ? 1 : 0, TransB::kNo);
  }
  wgmma_commit();
}

// O += P V, P from registers (the A fragments that pack_probabilities packed).
template <typename T, int HeadDim, int BlockN>
__device__ __forceinline__ void issue_pv(float (&acc_o)[HeadDim / 2],
                                         uint32_t (&p_frag)[BlockN / 16][4], uint32_t sV) {
  const uint64_t v0 = desc_mn_major(sV, BlockN * 128);
#pragma unroll
  for (int kk = 0; kk < BlockN / 16; ++kk)
    wgmma_rs<T, HeadDim>(acc_o, p_frag[kk], desc_add(v0, kk * 16 * 128), 1, TransB::kYes);
  wgmma_commit();
}

// A consumer thread's online-softmax state: its two rows (g and g + 8 of its warp's 16).
using Sm90Softmax = OnlineSoftmax<2>;

// One key block's online-softmax update from its (already modified) scores, in place: the
// probabilities in acc_s and the factor `correction` that rescales what was accumulated
// before. Row r's scores are acc_s[4 j + 2 r + e] (n8 tile j, column 2t + e).
template <int BlockN>
__device__ __forceinline__ void softmax_block_update(float (&acc_s)[BlockN / 2],
                                                     Sm90Softmax& softmax, float unit_log2,
                                                     float (&correction)[2]) {
  softmax.update<BlockN / 4>(
      [&](int r, int c) -> float& { return acc_s[4 * (c / 2) + 2 * r + c % 2]; }, unit_log2,
      correction);
}

// Keeps the softmax of a key block ahead of the wait for the P V wgmma issued before it, so
// that the softmax runs while P V is on the tensor cores. ptxas places a wgmma wait as early
// as the registers allow, and the softmax touches none of P V's: left alone, it hoists the
// wait above the whole softmax (docs/decisions.md; scripts/sass_wait_order.py checks).
// A branch on the rows' sums, which every exponential of the block feeds, ends the basic
// block after the softmax; it is taken only where a sum is NaN, and then does nothing.
__device__ __forceinline__ void softmax_before_wait(const Sm90Softmax& softmax) {
  if (!(softmax.row_sum[0] + softmax.row_sum[1] >= 0.f)) __nanosleep(0);
}

// The probabilities of acc_s packed as the 16-bit A fragments of P V (two adjacent n8 tiles of
// S form one k16 step).
template <typename T, int BlockN>
__device__ __forceinline__ void pack_probabilities(const float (&acc_s)[BlockN / 2],
                                                   uint32_t (&p_frag)[BlockN / 16][4]) {
#pragma unroll
  for (int kk = 0; kk < BlockN / 16; ++kk)
#pragma unroll
    for (int r = 0; r < 4; ++r)
      p_frag[kk][r] = sm80::pack2<T>(acc_s[8 * kk + 2 * r], acc_s[8 * kk + 2 * r + 1]);
}

// O *= correction, per row.
template <int HeadDim>
__device__ __forceinline__ void rescale_o(float (&acc_o)[HeadDim / 2],
                                          const float (&correction)[2]) {
#pragma unroll
  for (int j = 0; j < HeadDim / 8; ++j) Sm90Softmax::rescale_tile(&acc_o[4 * j], correction, 0);
}

}  // namespace sm90
}  // namespace flare
