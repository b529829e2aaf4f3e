// The FP8 K/V operands of the decode kernel (decode_kernel.cuh, its Fp8 instances): the mma
// steps read the 1-byte codes of a stage straight into fp16 fragments, with no 16-bit copy of
// the block in between.
//
// Both GEMMs run in fp16 whatever the call's 16-bit type: every finite e4m3 / e5m2 code is an
// fp16 value (fp8_convert.cuh), P in [0, 1] keeps more bits in fp16 than in bf16, and bf16 Q
// is brought into fp16's range once per CTA by a power of two (fp8_prepare_q).
//
// Layouts: the sums of both GEMMs may run in any order of their reduction index, so every lane
// reads runs of contiguous codes.
// - S = Q K^T sums over head dims. At k16 step s, lane (g, t) supplies the mma's k indices
//   2t, 2t + 1, 2t + 8, 2t + 9 as head dims t S + 4 s + {0, 1, 2, 3} (S = HeadDim / 4): its K
//   codes of a key row are one run of S bytes, and Q's fragments take the same dims (written
//   once per CTA in fragment order, one 16-byte read per step, no bank conflicts).
// - O = P V sums over keys in their natural order, but O's columns are permuted: n-tile dt's
//   column n is head dim n D + dt (D = HeadDim / 8 tiles), so lane (g, t) reads a run of D codes
//   of each of its four key rows (2t, 2t + 1, 2t + 8, 2t + 9) and pairs two rows' bytes with one
//   byte permute per four dims; the warp puts O's columns back in order when it publishes its
//   partial (fp8_o_column).
// Stage rows (HeadDim codes) have their 16-byte chunks XOR-swizzled by the row
// (fp8_stage_offset): at d128 both the K reads (rows g, g + 8 at chunk 2t + i) and the V reads
// (rows 2t + i of the 4 lanes t at chunk g) fall on distinct banks.
#pragma once
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

#include "common/smem_swizzle.h"
#include "kernels/common/fp8_convert.cuh"
#include "kernels/common/shared_access.cuh"
#include "kernels/sm80/mma_sm80.cuh"

namespace flare {
namespace sm80 {

// The stage layout of common/smem_swizzle.h (fp8_stage_offset) for one head dim.
template <int HeadDim>
struct Fp8StageLayout {
  static_assert(HeadDim % 32 == 0, "rows of whole chunks, an even count");
  // Byte offset of code `col` of row `row`.
  __device__ __forceinline__ static uint32_t offset(int row, int col) {
    return uint32_t(fp8_stage_offset(HeadDim, row, col));
  }
  // Byte offset of 16-byte chunk `chunk` of row `row` (the loader's cp.async destination).
  __device__ __forceinline__ static uint32_t chunk_offset(int row, int chunk) {
    return uint32_t(fp8_stage_offset(HeadDim, row, chunk * 16));
  }
};

// Loads Bytes contiguous bytes at shared address `addr` (aligned to the access width W, the
// largest of 16, 8, 4 dividing Bytes and the run's start) into words.
template <int W>
__device__ __forceinline__ void ld_shared_run(uint32_t addr, uint32_t* w) {
  if constexpr (W == 16) {
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3])
                 : "r"(addr));
  } else if constexpr (W == 8) {
    asm volatile("ld.shared.v2.u32 {%0,%1}, [%2];" : "=r"(w[0]), "=r"(w[1]) : "r"(addr));
  } else {
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(w[0]) : "r"(addr));
  }
}
// The access width for runs of Bytes codes starting at multiples of Bytes.
constexpr int fp8_run_width(int bytes) { return bytes % 16 == 0 ? 16 : bytes % 8 == 0 ? 8 : 4; }

// Two floats as the bits of an fp16 pair (lo in the low half).
__device__ __forceinline__ uint32_t half2_bits(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Q's fp16 fragments, in fragment order: step s's four registers of lane l at byte
// (s * 32 + l) * 16 of sQf. Every warp first finds the largest |q| of the CTA's 16 rows (all
// rows, so each warp computes the same) and, for bf16 Q, scales Q by 2^-e so that it lands
// below 2^15 (fp16's largest finite value is under 2^16; the scores' fp32 sums have room to
// spare), then the CTA's threads write the fragments; the caller's barrier publishes them.
// Returns 2^e, the factor the scores take back. Rows past seqlen_q are zeros in sQ.
template <typename T, int HeadDim, int RowBytes, int Threads>
__device__ __forceinline__ float fp8_prepare_q(uint32_t sQ, uint32_t sQf, int tid) {
  constexpr int kRows = 16, kSteps = HeadDim / 16, kSpan = HeadDim / 4;
  constexpr bool kBf16 = !std::is_same<T, __half>::value;
  const int lane = tid % 32;
  float scale = 1.f, unscale = 1.f;
  if constexpr (kBf16) {
    // Positive bf16 patterns order as integers: the largest |q| is the largest masked half.
    uint32_t m = 0;
    constexpr int kRowChunks = HeadDim / 8;
    for (int i = lane; i < kRows * kRowChunks; i += 32) {
      uint32_t w[4];
      ld_shared_run<16>(sQ + (i / kRowChunks) * RowBytes + (i % kRowChunks) * 16, w);
#pragma unroll
      for (int j = 0; j < 4; ++j) m = __vmaxu2(m, w[j] & 0x7fff7fffu);
    }
    m = __reduce_max_sync(0xffffffffu, max(m & 0xffffu, m >> 16));
    // |q| < 2^(E - 126) for the biased exponent E; 2^-e with e = E - 141 puts it below 2^15.
    // e stays within [-100, 114]: both factors are normal floats (all-zero Q: e = -100).
    const int e = max(int(m >> 7) - 141, -100);
    scale = __int_as_float((127 - e) << 23);
    unscale = __int_as_float((127 + e) << 23);
  }
  for (int i = tid; i < kSteps * 32; i += Threads) {
    const int s = i / 32, l = i % 32, g = l / 4, t = l % 4;
    const uint32_t col_bytes = uint32_t(t * kSpan + 4 * s) * 2;
    uint32_t x[2], y[2];
    ld_shared_run<8>(sQ + g * RowBytes + col_bytes, x);
    ld_shared_run<8>(sQ + (g + 8) * RowBytes + col_bytes, y);
    uint32_t a[4] = {x[0], y[0], x[1], y[1]};
    if constexpr (kBf16) {
#pragma unroll
      for (int j = 0; j < 4; ++j)
        a[j] = half2_bits(__uint_as_float(a[j] << 16) * scale,
                          __uint_as_float(a[j] & 0xffff0000u) * scale);
    }
    st_shared_16(sQf + uint32_t(i) * 16, make_uint4(a[0], a[1], a[2], a[3]));
  }
  return unscale;
}

// S += Q K^T over the warp's 16 keys of a stage: K codes of the warp's rows at sK (the warp's
// first row), Q's fragments from registers (QInRegs) or from sQf.
template <int HeadDim, bool QInRegs, typename Dec>
__device__ __forceinline__ void fp8_qk(float (&acc_s)[2][4], uint32_t sK, uint32_t sQf,
                                       const uint32_t (*q_frag)[4], int lane) {
  using L = Fp8StageLayout<HeadDim>;
  constexpr int kSpan = HeadDim / 4, kW = fp8_run_width(kSpan);
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int piece = 0; piece < kSpan / kW; ++piece) {
    uint32_t kw[2][kW / 4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
      ld_shared_run<kW>(sK + L::offset(8 * nt + g, t * kSpan + piece * kW), kw[nt]);
#pragma unroll
    for (int j = 0; j < kW / 4; ++j) {
      const int s = piece * (kW / 4) + j;
      uint32_t a[4];
      if constexpr (QInRegs) {
#pragma unroll
        for (int r = 0; r < 4; ++r) a[r] = q_frag[s][r];
      } else {
        ld_shared_run<16>(sQf + uint32_t(s * 32 + lane) * 16, a);
      }
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        uint32_t b0, b1;
        Dec::four(kw[nt][j], b0, b1);
        mma_16816<__half>(acc_s[nt], a, b0, b1);
      }
    }
  }
}

// O += P V over the warp's 16 keys of a stage: V codes of the warp's rows at sV; O's n-tiles in
// the permuted column order above.
template <int HeadDim, typename Dec>
__device__ __forceinline__ void fp8_pv(float (&acc_o)[HeadDim / 8][4], const uint32_t (&p)[4],
                                       uint32_t sV, int lane) {
  using L = Fp8StageLayout<HeadDim>;
  constexpr int kSpan = HeadDim / 8, kW = fp8_run_width(kSpan);
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int piece = 0; piece < kSpan / kW; ++piece) {
    // Rows 2t, 2t + 1 (b0 of the mma) and 2t + 8, 2t + 9 (b1).
    uint32_t vw[4][kW / 4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
      ld_shared_run<kW>(sV + L::offset(2 * t + (r & 1) + 8 * (r >> 1), g * kSpan + piece * kW),
                        vw[r]);
#pragma unroll
    for (int j = 0; j < kW / 4; ++j) {
      const int dt = piece * kW + 4 * j;  // first of the word's four n-tiles
      uint32_t b0[4], b1[4];
      Dec::four(interleave_low(vw[0][j], vw[1][j]), b0[0], b0[1]);
      Dec::four(interleave_high(vw[0][j], vw[1][j]), b0[2], b0[3]);
      Dec::four(interleave_low(vw[2][j], vw[3][j]), b1[0], b1[1]);
      Dec::four(interleave_high(vw[2][j], vw[3][j]), b1[2], b1[3]);
#pragma unroll
      for (int q = 0; q < 4; ++q) mma_16816<__half>(acc_o[dt + q], p, b0[q], b1[q]);
    }
  }
}

// The head dim of O's accumulator acc_o[dt][e] (e = 0, 1: columns 2t, 2t + 1 of the n-tile)
// for lane quad index t.
template <int HeadDim>
__device__ __forceinline__ int fp8_o_column(int dt, int t, int e) {
  return (2 * t + e) * (HeadDim / 8) + dt;
}

}  // namespace sm80
}  // namespace flare
