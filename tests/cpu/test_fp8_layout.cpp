// The FP8 prefill kernel's layouts (kernels/sm90/fp8_layout.h) against the PTX ISA's tables: the
// swizzled K-major tiles as the hardware addresses them, their wgmma descriptors, and the byte
// permutation that lets P's e4m3 A fragments be packed from each lane's own S accumulators.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <utility>
#include <vector>

#include "kernels/sm90/fp8_layout.h"
#include "kernels/sm90/tma_maps.h"
#include "kernels/sm90/wgmma_desc.h"

namespace {

using namespace flare::sm90;

// The PTX ISA's k32 8-bit A fragment table, written out independently of fp8_a_row / fp8_a_col:
// a_i for i < 4 or 8 <= i < 12 is on row groupID, else groupID + 8; its column is
// threadID_in_group * 4 + (i & 3), + 16 for i >= 8.
std::pair<int, int> ptx_a_fragment(int lane, int i) {
  const int group = lane >> 2, tig = lane & 3;
  const int row = (i < 4 || (i >= 8 && i < 12)) ? group : group + 8;
  const int col = tig * 4 + (i & 3) + (i >= 8 ? 16 : 0);
  return {row, col};
}

TEST(Fp8Layout, AFragmentMatchesThePtxTable) {
  std::set<std::pair<int, int>> seen;
  for (int lane = 0; lane < 32; ++lane)
    for (int reg = 0; reg < 4; ++reg)
      for (int byte = 0; byte < 4; ++byte) {
        const auto want = ptx_a_fragment(lane, 4 * reg + byte);
        EXPECT_EQ(fp8_a_row(lane, reg, byte), want.first) << lane << " " << reg << " " << byte;
        EXPECT_EQ(fp8_a_col(lane, reg, byte), want.second) << lane << " " << reg << " " << byte;
        seen.insert(want);
      }
  EXPECT_EQ(seen.size(), 16u * 32u);  // every (row, column) of the warp's 16 x 32 once
}

TEST(Fp8Layout, AccumulatorCoversEachScoreOnce) {
  const int n = 128;
  std::set<std::pair<int, int>> seen;
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < n / 2; ++i) {
      const int r = acc_row(lane, i), c = acc_col(lane, i);
      ASSERT_TRUE(r >= 0 && r < 16 && c >= 0 && c < n);
      seen.insert({r, c});
    }
  EXPECT_EQ(seen.size(), size_t(16 * n));
}

TEST(Fp8Layout, KeyPermutationIsABijectionWithItsInverse) {
  std::set<int> keys;
  for (int kappa = 0; kappa < 32; ++kappa) {
    const int key = fp8_p_key(kappa);
    ASSERT_TRUE(key >= 0 && key < 32);
    EXPECT_EQ(fp8_p_slot(key), kappa);
    EXPECT_EQ(key / 16, kappa / 16);  // stays in its half of the step
    keys.insert(key);
  }
  EXPECT_EQ(keys.size(), 32u);
}

// The point of the permutation: the code a lane packs into (register, byte) of step kk is the
// probability of the A fragment's row and of the key V^T's column kappa holds, so
// sum_kappa A[row][kappa] V^T[n][kappa] = sum_key P[row][key] V[key][n].
TEST(Fp8Layout, PackedProbabilitiesSitWhereThePermutedVExpectsThem) {
  const int block_n = 128;
  for (int lane = 0; lane < 32; ++lane)
    for (int kk = 0; kk < block_n / 32; ++kk)
      for (int reg = 0; reg < 4; ++reg)
        for (int byte = 0; byte < 4; ++byte) {
          const int i = fp8_p_acc_index(kk, reg, byte);
          ASSERT_TRUE(i >= 0 && i < block_n / 2);
          const auto a = ptx_a_fragment(lane, 4 * reg + byte);
          EXPECT_EQ(acc_row(lane, i), a.first);
          EXPECT_EQ(acc_col(lane, i), 32 * kk + fp8_p_key(a.second));
        }
}

// The swizzle as the hardware applies it to a byte address inside a 1024-byte aligned region:
// 128-byte atoms XOR address bits [4, 7) with bits [7, 10), 64-byte atoms bits [4, 6) with
// [7, 9).
uint32_t hardware_swizzle(uint32_t addr, int atom) {
  const uint32_t mask = uint32_t(atom / 16 - 1);
  return addr ^ (((addr >> 7) & mask) << 4);
}

// The term a * rows * atom + hardware_swizzle(logical) below is also where a TMA box lands: box a
// (tma_box_cols columns from column a * cols, `rows` rows) written at the tile's slab a with the
// swizzle of its row width (128 or 64 bytes). The FP8 kernels' boxes are their atom rows.
TEST(Fp8Layout, TmaBoxesAreTheAtomRows) {
  for (int d : {64, 128, 256}) {
    EXPECT_EQ(flare::tma_box_cols(d, 1), fp8_atom_bytes(d)) << d;
    EXPECT_EQ(d % flare::tma_box_cols(d, 1), 0) << d;
  }
}

TEST(Fp8Layout, TileOffsetsAreTheHardwareSwizzle) {
  for (int row_bytes : {64, 128, 256}) {
    for (int rows : {64, 128}) {
      const int atom = fp8_atom_bytes(row_bytes);
      std::set<uint32_t> offsets;
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < row_bytes / 16; ++c) {
          const uint32_t off = k_major_tile_offset(r, c, rows, row_bytes);
          const int a = c / (atom / 16);
          const uint32_t logical = uint32_t(r * atom + (c % (atom / 16)) * 16);
          EXPECT_EQ(off, uint32_t(a * rows * atom) + hardware_swizzle(logical, atom))
              << row_bytes << " " << rows << " " << r << " " << c;
          offsets.insert(off);
        }
      EXPECT_EQ(offsets.size(), size_t(rows * row_bytes / 16));
      EXPECT_LT(*offsets.rbegin(), uint32_t(rows * row_bytes));
    }
  }
}

TEST(Fp8Layout, DescriptorFields) {
  const uint64_t d128 = fp8_desc_k_major(0x1A400, 256);
  EXPECT_EQ(d128 & 0x3FFF, 0x1A400u >> 4);
  EXPECT_EQ((d128 >> 32) & 0x3FFF, 1024u >> 4);  // 8 rows of 128 bytes
  EXPECT_EQ(d128 >> 62, 1u);                     // 128-byte swizzle
  const uint64_t d64 = fp8_desc_k_major(0x2000, 64);
  EXPECT_EQ((d64 >> 32) & 0x3FFF, 512u >> 4);    // 8 rows of 64 bytes
  EXPECT_EQ(d64 >> 62, 2u);                      // 64-byte swizzle
  // Reserved bits stay zero.
  for (uint64_t d : {d128, d64})
    EXPECT_EQ(d & ((uint64_t(0x3) << 14) | (uint64_t(0x3) << 30) | (uint64_t(0xFFFF) << 46)), 0u);
}

// A k32 step starts at column 32 ks of row 0: the unswizzled row, so the step's start address
// is the offset of its first chunk.
TEST(Fp8Layout, KStepOffsets) {
  for (int row_bytes : {64, 128, 256})
    for (int ks = 0; ks < row_bytes / 32; ++ks)
      EXPECT_EQ(fp8_k_step_offset(ks, 128, row_bytes), k_major_tile_offset(0, 2 * ks, 128, row_bytes));
}

}  // namespace

namespace {

using namespace flare::sm90;

TEST(Fp8Layout, TransposeFourByFour) {
  uint32_t in[4], out[4];
  for (int k = 0; k < 4; ++k) {
    in[k] = 0;
    for (int b = 0; b < 4; ++b) in[k] |= uint32_t(0x10 * k + b) << (8 * b);  // key k, column b
  }
  fp8_transpose_4x4(in, out);
  for (int b = 0; b < 4; ++b)
    for (int k = 0; k < 4; ++k)
      EXPECT_EQ((out[b] >> (8 * k)) & 0xFF, uint32_t(0x10 * k + b)) << b << " " << k;
}

// Each V^T word of group grp holds its keys at the slots the P packing expects.
TEST(Fp8Layout, VtGroupsHoldTheirKeysAtTheirSlots) {
  for (int block_n : {64, 128}) {
    std::set<int> keys;
    for (int grp = 0; grp < block_n / 4; ++grp)
      for (int k = 0; k < 4; ++k) {
        const int key = fp8_vt_group_key(grp, k);
        const int col = 4 * grp + k;
        EXPECT_EQ(key / 32, col / 32);
        EXPECT_EQ(fp8_p_slot(key % 32), col % 32) << block_n << " " << grp << " " << k;
        keys.insert(key);
      }
    EXPECT_EQ(keys.size(), size_t(block_n));
    EXPECT_EQ(*keys.rbegin(), block_n - 1);
  }
}

}  // namespace

namespace {

using namespace flare::sm90;

// The shared-memory byte a wgmma k32 8-bit K-major operand reads for (row r, byte kb of the
// step), from its descriptor alone: row r at start + (r / 8) SBO + (r % 8) atom + kb, then the
// swizzle of the descriptor's layout type on the address bits (tiles 1024-byte aligned).
uint32_t descriptor_address(uint64_t desc, int r, int kb) {
  const uint32_t start = uint32_t(desc & 0x3FFF) << 4;
  const uint32_t sbo = uint32_t((desc >> 32) & 0x3FFF) << 4;
  const int mode = int(desc >> 62);
  const int atom = mode == 1 ? 128 : mode == 2 ? 64 : 32;
  const uint32_t addr = start + uint32_t(r / 8) * sbo + uint32_t(r % 8) * atom + uint32_t(kb);
  return hardware_swizzle(addr, atom);
}

// Where the tile layout puts (row, byte col) of a tile at `base`.
uint32_t tile_address(uint32_t base, int row, int col, int rows, int row_bytes) {
  return base + k_major_tile_offset(row, col / 16, rows, row_bytes) + col % 16;
}

// The descriptors as issue_qk_fp8 / issue_pv_fp8 (fwd_fp8_sm90.cuh) build them read the tile
// elements the GEMMs mean: Q rows 64 wg + r (A of S = Q K^T), K rows n (B), V^T rows c (B of
// O += P V), each at byte 32 ks + kb of its row.
TEST(Fp8Layout, DescriptorsReadTheTiles) {
  const uint32_t base = 0x3400;  // 1024-byte aligned
  for (int head_dim : {64, 128, 256}) {
    const int block_m = kSm90Fp8BlockM, block_n = sm90_fp8_block_n(head_dim);
    for (int ks = 0; ks < head_dim / 32; ++ks) {
      for (int wg = 0; wg < 2; ++wg) {
        const uint64_t a0 = fp8_desc_k_major(base + wg * 64 * fp8_atom_bytes(head_dim), head_dim);
        const uint64_t a = flare::sm90::desc_add(a0, fp8_k_step_offset(ks, block_m, head_dim));
        for (int r = 0; r < 64; ++r)
          for (int kb = 0; kb < 32; ++kb)
            ASSERT_EQ(descriptor_address(a, r, kb),
                      tile_address(base, 64 * wg + r, 32 * ks + kb, block_m, head_dim))
                << "Q d" << head_dim << " ks " << ks << " wg " << wg << " r " << r << " kb " << kb;
      }
      const uint64_t b = flare::sm90::desc_add(fp8_desc_k_major(base, head_dim),
                                               fp8_k_step_offset(ks, block_n, head_dim));
      for (int n = 0; n < block_n; ++n)
        for (int kb = 0; kb < 32; ++kb)
          ASSERT_EQ(descriptor_address(b, n, kb),
                    tile_address(base, n, 32 * ks + kb, block_n, head_dim))
              << "K d" << head_dim << " ks " << ks << " n " << n << " kb " << kb;
    }
    for (int kk = 0; kk < block_n / 32; ++kk) {
      const uint64_t b = flare::sm90::desc_add(fp8_desc_k_major(base, block_n),
                                               fp8_k_step_offset(kk, head_dim, block_n));
      for (int c = 0; c < head_dim; ++c)
        for (int kb = 0; kb < 32; ++kb)
          ASSERT_EQ(descriptor_address(b, c, kb),
                    tile_address(base, c, 32 * kk + kb, head_dim, block_n))
              << "V^T d" << head_dim << " kk " << kk << " c " << c << " kb " << kb;
    }
  }
}

}  // namespace

namespace {

using namespace flare::sm90;

// Whether a V^T tile `vt` holds V block `v` ([key][column]) as P V reads it: its B operand,
// read through its descriptors, holds at (column c, slot kappa of step kk) V's row
// 32 kk + fp8_p_key(kappa), column c.
testing::AssertionResult pv_reads_permuted_keys(const std::vector<uint8_t>& vt,
                                                const std::vector<uint8_t>& v, int head_dim,
                                                int block_n) {
  for (int kk = 0; kk < block_n / 32; ++kk) {
    const uint64_t desc = flare::sm90::desc_add(fp8_desc_k_major(0, block_n),
                                                fp8_k_step_offset(kk, head_dim, block_n));
    for (int c = 0; c < head_dim; ++c)
      for (int kappa = 0; kappa < 32; ++kappa)
        if (vt[descriptor_address(desc, c, kappa)] !=
            v[size_t(32 * kk + fp8_p_key(kappa)) * head_dim + c])
          return testing::AssertionFailure()
                 << "d" << head_dim << " kk " << kk << " c " << c << " kappa " << kappa;
  }
  return testing::AssertionSuccess();
}

// The V^T store end to end, as Fp8VtBlock (fp8_ops_sm90.cuh) runs it: every item's four key
// rows of a V block (16 columns each) through fp8_transpose_4x4 into the words at
// fp8_vt_word_offset, where P V reads them (pv_reads_permuted_keys).
TEST(Fp8Layout, VtStoreFeedsPvWithThePermutedKeys) {
  for (int head_dim : {64, 128, 256}) {
    const int block_n = sm90_fp8_block_n(head_dim);
    std::vector<uint8_t> v(size_t(block_n) * head_dim);  // V block [key][column]
    for (size_t i = 0; i < v.size(); ++i) v[i] = uint8_t((i * 2654435761u) >> 13);
    std::vector<uint8_t> smem(size_t(head_dim) * block_n, 0);
    const int groups = block_n / 4;
    for (int item = 0; item < groups * (head_dim / 16); ++item) {
      const int grp = item % groups, chunk = item / groups;
      for (int w = 0; w < 4; ++w) {
        uint32_t in[4], out[4];
        for (int k = 0; k < 4; ++k) {
          const uint8_t* row = &v[size_t(fp8_vt_group_key(grp, k)) * head_dim + 16 * chunk + 4 * w];
          in[k] = uint32_t(row[0]) | uint32_t(row[1]) << 8 | uint32_t(row[2]) << 16 |
                  uint32_t(row[3]) << 24;
        }
        fp8_transpose_4x4(in, out);
        for (int b = 0; b < 4; ++b) {
          const uint32_t off = fp8_vt_word_offset(grp, 16 * chunk + 4 * w + b, head_dim, block_n);
          for (int j = 0; j < 4; ++j) smem[off + j] = uint8_t(out[b] >> (8 * j));
        }
      }
    }
    ASSERT_TRUE(pv_reads_permuted_keys(smem, v, head_dim, block_n));
  }
}

}  // namespace

namespace {

using namespace flare::sm90;

// The ldmatrix / stmatrix V^T store (transpose_v_fp8, fp8_ops_sm90.cuh) end to end, the two
// instructions emulated from the PTX ISA's description, written out here independently of
// fp8_layout.h: for .x4, lane 8 m + r gives the address of row r (16 bytes) of matrix m; lane
// 4 g + q's register m holds 16-bit elements (g, 2q) and (g, 2q + 1) of matrix m, or with .trans
// elements (2q, g) and (2q + 1, g). A V block in the staging tile (as load_swizzled / TMA write
// it) must come out where P V's descriptors read it (as VtStoreFeedsPvWithThePermutedKeys), and
// each 8-lane phase of either instruction must touch eight distinct 16-byte bank groups.
TEST(Fp8Layout, LdmatrixTransposeFeedsPvWithThePermutedKeys) {
  for (int head_dim : {64, 128, 256}) {
    const int block_n = sm90_fp8_block_n(head_dim);
    std::vector<uint8_t> v(size_t(block_n) * head_dim);  // V block [key][column]
    for (size_t i = 0; i < v.size(); ++i) v[i] = uint8_t((i * 2654435761u) >> 11);
    std::vector<uint8_t> staging(v.size()), vt(v.size(), 0);
    for (int key = 0; key < block_n; ++key)
      for (int col = 0; col < head_dim; ++col)
        staging[tile_address(0, key, col, block_n, head_dim)] = v[size_t(key) * head_dim + col];
    const int ops = fp8_vt_ops(head_dim, block_n);
    ASSERT_EQ(ops % 4, 0);  // whole ops per producer warp
    for (int o = 0; o < ops; ++o) {
      uint32_t load_row[32], store_row[32];
      for (int lane = 0; lane < 32; ++lane) {
        load_row[lane] = fp8_vt_load_offset(o, lane, head_dim, block_n);
        store_row[lane] = fp8_vt_store_offset(o, lane, head_dim, block_n);
        ASSERT_EQ(load_row[lane] % 16, 0u);
        ASSERT_EQ(store_row[lane] % 16, 0u);
      }
      for (int m = 0; m < 4; ++m) {
        std::set<uint32_t> load_banks, store_banks;
        for (int r = 0; r < 8; ++r) {
          load_banks.insert((load_row[8 * m + r] / 16) % 8);
          store_banks.insert((store_row[8 * m + r] / 16) % 8);
        }
        EXPECT_EQ(load_banks.size(), 8u) << "ldmatrix conflict d" << head_dim << " op " << o;
        EXPECT_EQ(store_banks.size(), 8u) << "stmatrix conflict d" << head_dim << " op " << o;
      }
      // 16-bit element e of row r of matrix m, as two bytes.
      auto element = [&](const uint32_t* rows, const std::vector<uint8_t>& mem, int m, int r,
                         int e) {
        const uint32_t at = rows[8 * m + r] + 2 * e;
        return uint32_t(mem[at]) | uint32_t(mem[at + 1]) << 8;
      };
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, q = lane % 4;
        uint32_t d[4];
        for (int m = 0; m < 4; ++m)  // .trans: elements (2q, g) and (2q + 1, g)
          d[m] = element(load_row, staging, m, 2 * q, g) |
                 element(load_row, staging, m, 2 * q + 1, g) << 16;
        const uint32_t st[4] = {fp8_byte_perm(d[0], d[1], fp8_vt_select(lane, 0)),
                                fp8_byte_perm(d[0], d[1], fp8_vt_select(lane, 1)),
                                fp8_byte_perm(d[2], d[3], fp8_vt_select(lane, 0)),
                                fp8_byte_perm(d[2], d[3], fp8_vt_select(lane, 1))};
        for (int m = 0; m < 4; ++m)  // stmatrix: word q of row g of matrix m
          for (int b = 0; b < 4; ++b) vt[store_row[8 * m + g] + 4 * q + b] = uint8_t(st[m] >> (8 * b));
      }
    }
    ASSERT_TRUE(pv_reads_permuted_keys(vt, v, head_dim, block_n));
  }
}

}  // namespace
