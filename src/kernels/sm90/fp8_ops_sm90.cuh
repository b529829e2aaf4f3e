// The e4m3 steps of the Hopper FP8 prefill kernels (fwd_fp8_sm90.cuh's all-threads kernel and
// the warp-specialised kernel's Fp8 instances): the transposed V store, the e4m3 wgmma issue of
// S = Q K^T and O += P V, and P's e4m3 fragments. Layouts: fp8_layout.h.
#pragma once
#include <cuda_fp8.h>

#include <cstdint>

#include "kernels/sm80/mma_sm80.cuh"
#include "kernels/sm90/fp8_layout.h"
#include "kernels/sm90/wgmma_common.cuh"
#include "kernels/sm90/wgmma_desc.h"
#include "kernels/sm90/wgmma_ops.cuh"

namespace flare {
namespace sm90 {

// One V block's transposed store by `Threads` threads of the all-threads kernel, in two halves
// so that the global loads are in flight while the thread computes: fetch() reads this thread's
// items (four keys x 16 columns each) into registers, store() writes them into a V^T stage.
// (The warp-specialised kernel's producer transposes from shared memory: transpose_v_fp8.)
// Item `item` is key group item % groups (the fastest, so that a warp's 4-byte stores of one
// V^T row fall on distinct banks) and column chunk item / groups. Keys past the sequence and
// columns past `cols` are zero.
template <int HeadDim, int BlockN, int Threads>
struct Fp8VtBlock {
  static constexpr int kGroups = BlockN / 4;
  static constexpr int kItems = kGroups * (HeadDim / 16);
  static constexpr int kPerThread = (kItems + Threads - 1) / Threads;
  uint4 rows[kPerThread][4];

  __device__ __forceinline__ void fetch(const uint8_t* v, int64_t v_base, int64_t row_stride,
                                        int n0, int seqlen_k, int cols) {
#pragma unroll
    for (int it = 0; it < kPerThread; ++it) {
      const int item = int(threadIdx.x) + it * Threads;
      const int grp = item % kGroups, chunk = item / kGroups;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int key = n0 + fp8_vt_group_key(grp, k);
        const bool valid = item < kItems && key < seqlen_k && chunk * 16 < cols;
        rows[it][k] = valid ? __ldg(reinterpret_cast<const uint4*>(v + v_base + key * row_stride +
                                                                   chunk * 16))
                            : make_uint4(0, 0, 0, 0);
      }
    }
  }

  // V^T row c (0 .. HeadDim - 1) holds V's column c over the block's keys in slot order;
  // this thread's group is the 4-byte word at column 4 grp of rows 16 chunk .. 16 chunk + 15.
  __device__ __forceinline__ void store(uint32_t smem_vt) const {
#pragma unroll
    for (int it = 0; it < kPerThread; ++it) {
      const int item = int(threadIdx.x) + it * Threads;
      if (item < kItems) store_item(smem_vt, item % kGroups, item / kGroups, rows[it]);
    }
  }

 private:
  // Item (grp, chunk): keys fp8_vt_group_key(grp, k) in rows[k], 16 bytes of V columns each.
  static __device__ __forceinline__ void store_item(uint32_t smem_vt, int grp, int chunk,
                                                    const uint4 (&rows)[4]) {
#pragma unroll
    for (int w = 0; w < 4; ++w) {  // V columns 16 chunk + 4 w .. + 3
      const uint32_t in[4] = {(&rows[0].x)[w], (&rows[1].x)[w], (&rows[2].x)[w],
                              (&rows[3].x)[w]};
      uint32_t out[4];
      fp8_transpose_4x4(in, out);
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const uint32_t addr =
            smem_vt + fp8_vt_word_offset(grp, 16 * chunk + 4 * w + b, HeadDim, BlockN);
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(out[b]) : "memory");
      }
    }
  }
};

// One V block's transposed store by the four warps of the warp-specialised kernel's producer,
// from V's rows in a staging tile (the swizzled K-major [BlockN keys][HeadDim bytes] tile that
// load_swizzled or TMA writes; zero rows past the sequence, zero columns past the head dim)
// into a V^T stage: per op, an ldmatrix.x4.trans, four byte_perms and an stmatrix.x4 move 16
// keys x 32 columns (fp8_layout.h, fp8_vt_ops); warp w runs ops w, w + 4, ...
template <int HeadDim, int BlockN>
__device__ __forceinline__ void transpose_v_fp8(uint32_t staging, uint32_t smem_vt, int warp,
                                                int lane) {
  constexpr int kOps = fp8_vt_ops(HeadDim, BlockN);
  static_assert(kOps % 4 == 0, "whole ops per producer warp");
  const uint32_t sel0 = fp8_vt_select(lane, 0), sel1 = fp8_vt_select(lane, 1);
#pragma unroll
  for (int i = 0; i < kOps / 4; ++i) {
    const int o = warp + 4 * i;
    uint32_t d0, d1, d2, d3;
    sm80::ldmatrix_x4_trans(staging + fp8_vt_load_offset(o, lane, HeadDim, BlockN), d0, d1, d2,
                            d3);
    stmatrix_x4(smem_vt + fp8_vt_store_offset(o, lane, HeadDim, BlockN), __byte_perm(d0, d1, sel0),
                __byte_perm(d0, d1, sel1), __byte_perm(d2, d3, sel0), __byte_perm(d2, d3, sel1));
  }
}

// S (this warpgroup's 64 rows x BlockN keys) = Q K^T, k32 steps over the head dim. Issues only.
template <int HeadDim, int BlockM, int BlockN>
__device__ __forceinline__ void issue_qk_fp8(float (&acc_s)[BlockN / 2], uint32_t sQ, uint32_t sK,
                                             int wg) {
  const uint64_t a0 = fp8_desc_k_major(sQ + wg * 64 * fp8_atom_bytes(HeadDim), HeadDim);
  const uint64_t b0 = fp8_desc_k_major(sK, HeadDim);
#pragma unroll
  for (int ks = 0; ks < HeadDim / 32; ++ks) {
    const uint64_t a = desc_add(a0, fp8_k_step_offset(ks, BlockM, HeadDim));
    const uint64_t b = desc_add(b0, fp8_k_step_offset(ks, BlockN, HeadDim));
    wgmma_ss_e4m3<BlockN>(acc_s, a, b, ks > 0 ? 1 : 0);
  }
  wgmma_commit();
}

// O += P V: P's e4m3 A fragments from registers, V^T (HeadDim rows of BlockN bytes) K-major.
template <int HeadDim, int BlockN>
__device__ __forceinline__ void issue_pv_fp8(float (&acc_o)[HeadDim / 2],
                                             uint32_t (&p_frag)[BlockN / 32][4], uint32_t sVt) {
  const uint64_t b0 = fp8_desc_k_major(sVt, BlockN);
#pragma unroll
  for (int kk = 0; kk < BlockN / 32; ++kk)
    wgmma_rs_e4m3<HeadDim>(acc_o, p_frag[kk], desc_add(b0, fp8_k_step_offset(kk, HeadDim, BlockN)),
                           1);
  wgmma_commit();
}

// Two probabilities as e4m3 codes (round to nearest even, saturating): lo in the low byte.
__device__ __forceinline__ uint32_t e4m3x2(float lo, float hi) {
  return __nv_cvt_float2_to_fp8x2(make_float2(lo, hi), __NV_SATFINITE, __NV_E4M3);
}

// The probabilities of acc_s as P's k32 A fragments: byte `byte` of register `reg` of step kk
// is accumulator fp8_p_acc_index(kk, reg, byte) (the lane's own values; V^T's keys are
// permuted to match).
template <int BlockN>
__device__ __forceinline__ void pack_probabilities_e4m3(const float (&acc_s)[BlockN / 2],
                                                        uint32_t (&p_frag)[BlockN / 32][4]) {
#pragma unroll
  for (int kk = 0; kk < BlockN / 32; ++kk)
#pragma unroll
    for (int reg = 0; reg < 4; ++reg)
      p_frag[kk][reg] = e4m3x2(acc_s[fp8_p_acc_index(kk, reg, 0)], acc_s[fp8_p_acc_index(kk, reg, 1)]) |
                        (e4m3x2(acc_s[fp8_p_acc_index(kk, reg, 2)],
                                acc_s[fp8_p_acc_index(kk, reg, 3)])
                         << 16);
}

}  // namespace sm90
}  // namespace flare
