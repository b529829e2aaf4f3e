// What happens to a raw score q.k before the softmax, on one query row's scores of a key block
// in registers: softcap, ALiBi bias, then the mask. Shared by every forward kernel (and the CPU
// tests), in the units of `score_units` (sequence.h).
#pragma once
#include <math.h>

#include "host_device.h"
#include "mask.h"

namespace flare {

// tanh of the softcap (x = score * cap_in). On the device 1 - 2 / (2^(2 x log2 e) + 1), one
// approximate ex2 and one approximate rcp: the result's absolute error stays below 2^-21 over
// the whole range (the relative errors of ex2, rcp and the rounding of 2^y + 1, each about
// 2^-23, enter scaled by at most 2; 2^y saturating to 0 or inf gives -1 or 1), far below the
// 16-bit rounding of the probabilities, softcap 50 included. tanhf's accurate sequence is
// several times longer, on every score of a softcapped block. On the host: tanhf.
FLARE_HD float softcap_tanh(float x) {
#ifdef __CUDA_ARCH__
  float e, r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(x * 2.8853900817779268f));
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(e + 1.f));
  return 1.f - 2.f * r;
#else
  return tanhf(x);
#endif
}

// One query row's scores of a key block: at(j, e) is the score of column 8 j + e (j < NTiles,
// e < 2) relative to the thread's first column (mma fragments hold two adjacent columns per
// n8 tile). The row's visible columns are [first, end) in the same relative numbering;
// alibi_base is the row's key position minus the thread's first column (ALiBi's distance to
// column c is |alibi_base - c|).
//
// Three passes, each under one condition that is uniform for the block: written as one loop
// with the three conditions inside, the compiler kept a branch (softcap) and three predicated
// ALiBi instructions per element even with neither feature on, and on a GPU the masked key
// block then cost about five times an unmasked one (Hopper d64 causal 512: 20% of all
// instructions and 20% of the warp stall samples waiting for instruction fetch).
template <int NTiles, typename At>
FLARE_HD void modify_row_scores(At&& at, bool has_softcap, float softcap, float cap_in,
                                float alibi, int alibi_base, bool needs_mask, int first,
                                int end) {
  if (has_softcap) {
#pragma unroll
    for (int j = 0; j < NTiles; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) at(j, e) = softcap * softcap_tanh(at(j, e) * cap_in);
  }
  if (alibi != 0.f) {
#pragma unroll
    for (int j = 0; j < NTiles; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) at(j, e) -= alibi * fabsf(float(alibi_base - (8 * j + e)));
  }
  if (needs_mask) {
#pragma unroll
    for (int j = 0; j < NTiles; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = 8 * j + e;
        if (c < first || c >= end) at(j, e) = -INFINITY;
      }
  }
}

// The same in one pass, the three conditions inside the element loop. The Hopper kernels use it
// for the key blocks whose softmax runs while a P V wgmma is in flight: there the three-pass
// form makes ptxas serialise the wgmmas (warning C7513; docs/decisions.md has the measurement).
template <int NTiles, typename At>
FLARE_HD void modify_row_scores_one_pass(At&& at, bool has_softcap, float softcap, float cap_in,
                                         float alibi, int alibi_base, bool needs_mask, int first,
                                         int end) {
#pragma unroll
  for (int j = 0; j < NTiles; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int c = 8 * j + e;
      float x = at(j, e);
      if (has_softcap) x = softcap * softcap_tanh(x * cap_in);
      if (alibi != 0.f) x -= alibi * fabsf(float(alibi_base - c));
      if (needs_mask && (c < first || c >= end)) x = -INFINITY;
      at(j, e) = x;
    }
}

// A key block's scores in a wgmma m64 accumulator fragment, both of the thread's rows:
// accumulator 4 j + 2 hr + e holds row row_base + 8 hr, column block_col0 + 8 j + e (block_col0
// = the block's first key + 2 t). Unchanged unless softcap, ALiBi or the mask applies.
// pv_in_flight (a constant at each call): whether a P V wgmma runs meanwhile, which takes the
// one-pass form. widen(row, first, end): called on a masked block with the row's mask interval,
// widens it by the row's prefix ranges where the tile has any (prefix_ranges.h: row_keys).
template <int NTiles, typename Widen>
FLARE_HD void modify_wgmma_block_scores(float (&acc)[4 * NTiles], const MaskSpec& mask,
                                        int diagonal, int row_base, int block_col0,
                                        bool pv_in_flight, bool has_softcap, float softcap,
                                        float cap_in, float alibi, bool needs_mask,
                                        Widen&& widen) {
  if (has_softcap || alibi != 0.f || needs_mask) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int row = row_base + hr * 8;
      auto at = [&](int j, int e) -> float& { return acc[4 * j + 2 * hr + e]; };
      int first = mask.first_key(row), end = mask.end_key(row);
      if (needs_mask) widen(row, first, end);
      first -= block_col0;
      end -= block_col0;
      if (pv_in_flight)
        modify_row_scores_one_pass<NTiles>(at, has_softcap, softcap, cap_in, alibi,
                                           row + diagonal - block_col0, needs_mask, first, end);
      else
        modify_row_scores<NTiles>(at, has_softcap, softcap, cap_in, alibi,
                                  row + diagonal - block_col0, needs_mask, first, end);
    }
  }
}

}  // namespace flare
