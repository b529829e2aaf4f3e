// wgmma matrix descriptors (kernels/sm90/wgmma_desc.h): the field layout, and desc_add, which the
// Hopper kernels use to move a base descriptor by a constant offset instead of rebuilding it.
#include <gtest/gtest.h>

#include <cstdint>

#include "kernels/sm90/wgmma_desc.h"

namespace {

using flare::sm90::desc_add;
using flare::sm90::desc_k_major;
using flare::sm90::desc_mn_major;
using flare::sm90::make_desc;

TEST(WgmmaDesc, FieldLayout) {
  const uint64_t d = make_desc(0x1A3F0, 0x4000, 1024);
  EXPECT_EQ(d & 0x3FFF, 0x1A3F0u >> 4);             // start address >> 4
  EXPECT_EQ((d >> 16) & 0x3FFF, 0x4000u >> 4);      // leading-dimension byte offset >> 4
  EXPECT_EQ((d >> 32) & 0x3FFF, 1024u >> 4);        // stride-dimension byte offset >> 4
  EXPECT_EQ(d >> 62, 1u);                           // 128-byte swizzle
  EXPECT_EQ(d & ((uint64_t(0x3) << 14) | (uint64_t(0x3) << 30) | (uint64_t(0xFFFF) << 46)), 0u);
}

// Every shared-memory address is below 2^18 (at most 228 KB per SM): for bases and offsets in
// that range desc_add equals rebuilding the descriptor at the moved address. Offsets cover the
// kernels' uses (Q/K atoms of up to 4 x 128 rows of 128 bytes plus the k-step within an atom,
// V k-steps of 16 rows of 128 bytes).
TEST(WgmmaDesc, AddEqualsRebuildBelowTheSharedWindowLimit) {
  const uint32_t kLimit = 1u << 18;
  int checked = 0;
  for (uint32_t base = 0; base < 232448; base += 1024 + 16) {
    for (uint32_t atom = 0; atom < 4; ++atom)
      for (uint32_t within = 0; within < 128; within += 32) {
        const uint32_t off = atom * 128 * 128 + within;
        if (base + off >= kLimit) continue;
        ASSERT_EQ(desc_add(desc_k_major(base), off), desc_k_major(base + off))
            << "base " << base << " offset " << off;
        ++checked;
      }
    for (uint32_t kk = 0; kk < 8; ++kk) {
      const uint32_t off = kk * 16 * 128;
      if (base + off >= kLimit) continue;
      ASSERT_EQ(desc_add(desc_mn_major(base, 128 * 128), off), desc_mn_major(base + off, 128 * 128));
      ++checked;
    }
  }
  EXPECT_GT(checked, 4000);
}

// The precondition matters: past 2^18 the rebuilt descriptor wraps its 14-bit field while the
// added one carries into the leading-offset bits.
TEST(WgmmaDesc, AddDiffersOnceTheFieldWouldOverflow) {
  const uint32_t base = (1u << 18) - 32, off = 64;
  EXPECT_NE(desc_add(desc_k_major(base), off), desc_k_major(base + off));
}

}  // namespace
