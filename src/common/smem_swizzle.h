// Shared-memory placement of 16-byte chunks of 16-bit rows read by ldmatrix: one definition for
// the kernels and the CPU tests that check its properties (tests/cpu/test_smem_layout.cpp).
//
// Padded rows (row_bytes = 16 or 80 mod 128) keep the 8 row addresses of an ldmatrix phase in 8
// distinct 16-byte bank groups, but a 128-byte run of a row straddles two 128-byte lines, so
// the cp.async that fills it is split into partial-line requests. Swizzled rows (row_bytes a
// multiple of 128, no padding) place chunk c of row r at chunk c ^ (r & 7) of the row: the
// same 8 rows at one logical chunk still hit 8 distinct bank groups, and the 8 chunks of each
// 128-byte run of a row land in one aligned 128-byte line.
#pragma once
#include "host_device.h"

namespace flare {

// Bytes per row of a head_dim-wide tile of 16-bit elements: unpadded when swizzled, else
// padded by 8 elements (16 bytes).
FLARE_HD constexpr int smem_row_bytes(int head_dim, bool swizzled) {
  return (swizzled ? head_dim : head_dim + 8) * 2;
}

FLARE_HD constexpr int smem_chunk_offset(bool swizzled, int row_bytes, int row, int chunk) {
  return row * row_bytes + ((swizzled ? chunk ^ (row & 7) : chunk) << 4);
}

// ldmatrix lanes read chunk 2 s + half of their row at k16 step s. With the row address
// computed once per lane (`ldmatrix_lane_address`), the address of step s is one XOR with an
// immediate and an immediate offset (`ldmatrix_step_address`), so no per-step offset has to
// live in a register: the swizzle only permutes chunk bits 0-2, i.e. address bits 4-6, and the
// row address of a swizzled layout is a multiple of 128 (aligned base, 128-byte rows), so those
// bits of the lane address are exactly (half ^ (row & 7)). Adding multiples of 128 (other m/n
// tiles, stages) to the lane address keeps this true. Padded rows: plain offsets.
FLARE_HD constexpr uint32_t ldmatrix_lane_address(bool swizzled, uint32_t row_address, int row,
                                                  int half) {
  return row_address + uint32_t((swizzled ? half ^ (row & 7) : half) << 4);
}
FLARE_HD constexpr uint32_t ldmatrix_step_address(bool swizzled, uint32_t lane_address, int s) {
  return swizzled ? (lane_address ^ uint32_t((2 * (s & 3)) << 4)) + uint32_t((s >> 2) << 7)
                  : lane_address + uint32_t(s * 32);
}

// Rows of FP8 codes in the FP8 decode kernel's stages (kernels/sm80/decode_fp8.cuh): row r of
// head_dim codes, its 16-byte chunk c at chunk c ^ (r & m), m + 1 the largest power of two up to
// 8 that divides the row's chunk count (the XOR stays inside the row). At d128 both of that
// kernel's read patterns fall on distinct banks (tests/cpu/test_smem_layout.cpp).
FLARE_HD constexpr int fp8_stage_swizzle(int head_dim) {
  return ((head_dim / 16) % 8 == 0 ? 8 : (head_dim / 16) % 4 == 0 ? 4 : 2) - 1;
}
// Byte offset of code `col` of row `row`.
FLARE_HD constexpr int fp8_stage_offset(int head_dim, int row, int col) {
  return row * head_dim + (((col >> 4) ^ (row & fp8_stage_swizzle(head_dim))) << 4) + (col & 15);
}

}  // namespace flare
