// Shared-memory placement of 16-byte chunks of 16-bit rows read by ldmatrix: one definition for
// the kernels and the CPU tests that check its properties (tests/cpu/test_smem_layout.cpp).
//
// Padded rows (row_bytes = 16 mod 128) keep the 8 row addresses of an ldmatrix phase in 8
// distinct 16-byte bank groups, but a 128-byte run of a row straddles two 128-byte lines, so
// the cp.async that fills it is split into partial-line requests. Swizzled rows (row_bytes a
// multiple of 128, no padding) place chunk c of row r at chunk c ^ (r & 7) of the row: the
// same 8 rows at one logical chunk still hit 8 distinct bank groups, and the 8 chunks of each
// 128-byte run of a row land in one aligned 128-byte line.
#pragma once
#include "host_device.h"

namespace flare {

FLARE_HD constexpr int smem_chunk_offset(bool swizzled, int row_bytes, int row, int chunk) {
  return row * row_bytes + ((swizzled ? chunk ^ (row & 7) : chunk) << 4);
}

}  // namespace flare
