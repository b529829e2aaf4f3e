// The Hopper variant choice (src/kernels/sm90/variant.h): measured defaults per head dim, mask
// and sequence length, the paged d256 exception, and the environment overrides.
#include <gtest/gtest.h>

#include "flare/flare.h"
#include "kernels/sm90/variant.h"

namespace {

using flare::choose_sm90_variant;
using flare::Sm90Overrides;
using flare::TmaMode;

flare_mha_fwd_params prefill(int seqlen) {
  flare_mha_fwd_params p;
  flare_mha_fwd_params_init(&p);
  p.batch = 2;
  p.seqlen_q = p.seqlen_k = seqlen;
  p.num_heads = p.num_heads_k = 8;
  p.head_dim = 128;
  return p;
}

TEST(Sm90Variant, DefaultsFollowTheMeasurements) {
  const Sm90Overrides none;
  for (int d : {64, 128}) {
    const auto v = choose_sm90_variant(prefill(512), d, none);
    EXPECT_TRUE(v.warp_specialized) << d;
    EXPECT_TRUE(v.pingpong) << d;
    EXPECT_EQ(v.tma, TmaMode::kOn) << d;
    EXPECT_EQ(v.persistent, d == 64) << d;  // persistent only for unmasked d64
  }
  // d256: warp-specialised from 1k keys only.
  EXPECT_FALSE(choose_sm90_variant(prefill(512), 256, none).warp_specialized);
  EXPECT_TRUE(choose_sm90_variant(prefill(1024), 256, none).warp_specialized);
  EXPECT_FALSE(choose_sm90_variant(prefill(4096), 256, none).persistent);
}

TEST(Sm90Variant, MasksTurnPersistenceOff) {
  const Sm90Overrides none;
  flare_mha_fwd_params p = prefill(2048);
  p.causal = 1;
  EXPECT_FALSE(choose_sm90_variant(p, 64, none).persistent);
  p = prefill(2048);
  p.window_left = 128;
  EXPECT_FALSE(choose_sm90_variant(p, 64, none).persistent);
  p = prefill(2048);
  p.window_right = 0;
  EXPECT_FALSE(choose_sm90_variant(p, 64, none).persistent);
}

TEST(Sm90Variant, VarlenUsesMaxSeqlenK) {
  int cu[3] = {0, 100, 3000};
  flare_mha_fwd_params p = prefill(1);
  p.cu_seqlens_q = p.cu_seqlens_k = cu;
  p.max_seqlen_q = p.max_seqlen_k = 2900;
  EXPECT_TRUE(choose_sm90_variant(p, 256, Sm90Overrides{}).warp_specialized);
  p.max_seqlen_k = 600;
  EXPECT_FALSE(choose_sm90_variant(p, 256, Sm90Overrides{}).warp_specialized);
}

TEST(Sm90Variant, PagedHeadDim256StaysOnTheAllThreadsKernel) {
  int table[8] = {};
  flare_mha_fwd_params p = prefill(4096);
  p.block_table = table;
  Sm90Overrides force;
  force.warp_specialized = 1;
  EXPECT_FALSE(choose_sm90_variant(p, 256, force).warp_specialized);
  EXPECT_TRUE(choose_sm90_variant(p, 128, force).warp_specialized);
}

TEST(Sm90Variant, OverridesWin) {
  Sm90Overrides o;
  o.warp_specialized = 0;
  EXPECT_FALSE(choose_sm90_variant(prefill(8192), 128, o).warp_specialized);
  o = Sm90Overrides{};
  o.persistent = 1;
  o.pingpong = 0;
  o.tma = 2;
  flare_mha_fwd_params p = prefill(8192);
  p.causal = 1;
  const auto v = choose_sm90_variant(p, 128, o);
  EXPECT_TRUE(v.persistent);
  EXPECT_FALSE(v.pingpong);
  EXPECT_EQ(v.tma, TmaMode::kRequire);
  o = Sm90Overrides{};
  o.persistent = 0;
  EXPECT_FALSE(choose_sm90_variant(prefill(512), 64, o).persistent);
  o = Sm90Overrides{};
  o.tma = 0;
  EXPECT_EQ(choose_sm90_variant(prefill(512), 64, o).tma, TmaMode::kOff);
}

}  // namespace
