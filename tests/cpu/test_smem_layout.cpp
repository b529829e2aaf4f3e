// Properties of the shared-memory chunk placement (common/smem_swizzle.h) for the decode
// kernel's K/V stages at every compiled head dim: every chunk has its own in-row slot, the 8
// row addresses of an ldmatrix phase fall in 8 distinct bank groups, and (swizzled rows) each
// 128-byte run of a row fills one aligned 128-byte line.
#include <gtest/gtest.h>

#include <set>

#include "common/smem_swizzle.h"
#include "common/tile_config.h"

namespace {

using flare::smem_chunk_offset;

constexpr int kHeadDims[] = {32, 64, 96, 128, 192, 256};
constexpr int kRows = 64;  // one decode key block

TEST(SmemLayout, DecodeChunksHaveDistinctInRowSlots) {
  for (int d : kHeadDims) {
    const bool swz = flare::sm80_decode_kv_swizzled(d);
    const int rb = flare::sm80_decode_kv_row_bytes(d);
    std::set<int> seen;
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < d / 8; ++c) {
        const int off = smem_chunk_offset(swz, rb, r, c);
        EXPECT_EQ(off % 16, 0) << "d " << d;
        EXPECT_GE(off, r * rb) << "d " << d << " row " << r << " chunk " << c;
        EXPECT_LE(off + 16, r * rb + d * 2) << "d " << d << " row " << r << " chunk " << c;
        EXPECT_TRUE(seen.insert(off).second) << "d " << d << " row " << r << " chunk " << c;
      }
  }
}

TEST(SmemLayout, LdmatrixPhasesAreConflictFree) {
  // An ldmatrix phase reads 8 rows r0..r0+7 (r0 a multiple of 8: the kernels' row groups) at
  // one logical chunk; 16-byte bank group = (byte offset / 16) mod 8.
  for (int d : kHeadDims) {
    const bool swz = flare::sm80_decode_kv_swizzled(d);
    const int rb = flare::sm80_decode_kv_row_bytes(d);
    for (int r0 = 0; r0 < kRows; r0 += 8)
      for (int c = 0; c < d / 8; ++c) {
        std::set<int> groups;
        for (int i = 0; i < 8; ++i) groups.insert(smem_chunk_offset(swz, rb, r0 + i, c) / 16 % 8);
        EXPECT_EQ(groups.size(), 8u) << "d " << d << " rows " << r0 << "+ chunk " << c;
      }
  }
}

TEST(SmemLayout, SwizzledRunsFillWholeLines) {
  // The swizzle is used exactly where rows are whole 128-byte lines, and then chunks 8k..8k+7
  // of a row land in one aligned 128-byte line (what an 8-lane cp.async group writes).
  for (int d : kHeadDims) {
    EXPECT_EQ(flare::sm80_decode_kv_swizzled(d), d * 2 % 128 == 0) << "d " << d;
    if (!flare::sm80_decode_kv_swizzled(d)) continue;
    const int rb = flare::sm80_decode_kv_row_bytes(d);
    EXPECT_EQ(rb, d * 2);
    for (int r = 0; r < kRows; ++r)
      for (int c0 = 0; c0 < d / 8; c0 += 8) {
        std::set<int> lines, slots;
        for (int c = c0; c < c0 + 8; ++c) {
          const int off = smem_chunk_offset(true, rb, r, c);
          lines.insert(off / 128);
          slots.insert(off / 16 % 8);
        }
        EXPECT_EQ(lines.size(), 1u) << "d " << d << " row " << r << " run " << c0;
        EXPECT_EQ(slots.size(), 8u) << "d " << d << " row " << r << " run " << c0;
      }
  }
}

TEST(SmemLayout, DecodeStepOffsets) {
  // The decode kernel keeps four per-lane offsets (steps 0-3) and adds 128 bytes per further
  // four steps: offset(row, 2 s + half) = offset(row, 2 (s % 4) + half) + 128 (s / 4).
  for (int d : kHeadDims) {
    const bool swz = flare::sm80_decode_kv_swizzled(d);
    const int rb = flare::sm80_decode_kv_row_bytes(d);
    for (int row = 0; row < kRows; ++row)
      for (int half = 0; half < 2; ++half)
        for (int s = 0; s < d / 16; ++s)
          ASSERT_EQ(smem_chunk_offset(swz, rb, row, 2 * (s % 4) + half) + 128 * (s / 4),
                    smem_chunk_offset(swz, rb, row, 2 * s + half))
              << "d " << d << " row " << row << " half " << half << " step " << s;
  }
}

TEST(SmemLayout, PaddedRowsStraddleLines) {
  // Why the swizzle: with padded rows the 128-byte runs of every row but the first of each 8
  // straddle two lines (the split cp.async requests measured on the H100).
  const int d = 128, rb = (d + 8) * 2;
  int straddling = 0;
  for (int r = 0; r < 8; ++r) {
    const int first = smem_chunk_offset(false, rb, r, 0), last = smem_chunk_offset(false, rb, r, 7);
    straddling += first / 128 != (last + 15) / 128;
  }
  EXPECT_EQ(straddling, 7);
}

}  // namespace

namespace {

TEST(SmemLayout, LdmatrixStepAddressMatchesChunkOffset) {
  // The kernels' per-step ldmatrix address (lane address, then XOR + immediate per step) is the
  // address of chunk 2 s + half of the lane's row, for both layouts, every row of a 128-row
  // tile, on a 128-byte-aligned base plus multiples of 128 (m/n tiles, stages).
  for (int d : {64, 128, 192, 256}) {
    for (bool swz : {false, true}) {
      const int rb = flare::smem_row_bytes(d, swz);
      for (uint32_t base : {0u, 1024u, 40960u})
        for (int row = 0; row < 128; ++row)
          for (int half = 0; half < 2; ++half) {
            const uint32_t lane =
                flare::ldmatrix_lane_address(swz, base + uint32_t(row * rb), row, half);
            for (int s = 0; s < d / 16; ++s) {
              ASSERT_EQ(flare::ldmatrix_step_address(swz, lane, s),
                        base + uint32_t(smem_chunk_offset(swz, rb, row, 2 * s + half)))
                  << "d " << d << " swizzled " << swz << " row " << row << " half " << half
                  << " step " << s;
              // The prefill kernel's form: the lane address of the tile's first row, the step's
              // XOR, then the tile offset (16 rows) added after it.
              if (row >= 16) {
                const uint32_t lane0 = flare::ldmatrix_lane_address(
                    swz, base + uint32_t((row - 16) * rb), row - 16, half);
                ASSERT_EQ(flare::ldmatrix_step_address(swz, lane0, s) + uint32_t(16 * rb),
                          base + uint32_t(smem_chunk_offset(swz, rb, row, 2 * s + half)))
                    << "d " << d << " swizzled " << swz << " row " << row << " step " << s;
              }
            }
          }
    }
  }
}

// FP8 decode stages (fp8_stage_offset): each row's codes are a permutation of its own bytes
// that keeps 16-byte chunks whole.
TEST(SmemLayout, Fp8StageRowsPermuteTheirChunks) {
  for (int d : kHeadDims) {
    for (int r = 0; r < 16; ++r) {
      std::set<int> chunks;
      for (int c = 0; c < d; c += 16) {
        const int off = flare::fp8_stage_offset(d, r, c);
        ASSERT_EQ(off % 16, 0) << "d " << d << " row " << r;
        ASSERT_GE(off, r * d);
        ASSERT_LT(off, (r + 1) * d);
        for (int b = 1; b < 16; ++b)
          ASSERT_EQ(flare::fp8_stage_offset(d, r, c + b), off + b) << "d " << d;
        chunks.insert(off);
      }
      EXPECT_EQ(int(chunks.size()), d / 16) << "d " << d << " row " << r;
    }
  }
}

// The FP8 decode kernel's 16-byte reads at d128 (decode_fp8.cuh): each quarter warp (8 lanes,
// one 128-byte wavefront) hits 8 distinct 16-byte bank groups. K: lane (g, t) reads row
// 8 nt + g at code 32 t + 16 i; V: row 2t + (r & 1) + 8 (r >> 1) at code 16 g.
TEST(SmemLayout, Fp8DecodeReadsAreConflictFreeAtD128) {
  constexpr int d = 128;
  auto conflict_free = [](auto addr_of_lane) {
    for (int q = 0; q < 4; ++q) {
      std::set<int> groups;
      for (int l = 8 * q; l < 8 * q + 8; ++l) groups.insert(addr_of_lane(l) / 16 % 8);
      if (groups.size() != 8) return false;
    }
    return true;
  };
  for (int nt = 0; nt < 2; ++nt)
    for (int i = 0; i < 2; ++i)
      EXPECT_TRUE(conflict_free([&](int l) {
        return flare::fp8_stage_offset(d, 8 * nt + l / 4, 32 * (l % 4) + 16 * i);
      })) << "K n-tile " << nt << " piece " << i;
  for (int r = 0; r < 4; ++r)
    EXPECT_TRUE(conflict_free([&](int l) {
      return flare::fp8_stage_offset(d, 2 * (l % 4) + (r & 1) + 8 * (r >> 1), 16 * (l / 4));
    })) << "V row " << r;
  // Unswizzled rows would not be: the K reads of rows g and g + 1 share their bank groups.
  EXPECT_FALSE(conflict_free([&](int l) { return (l / 4) * d + 32 * (l % 4); }));
}

}  // namespace
