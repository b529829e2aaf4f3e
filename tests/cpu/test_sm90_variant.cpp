// The Hopper variant choice (src/kernels/sm90/variant.h): which compiled Hopper kernel a head
// dim runs on, measured defaults per head dim, mask and sequence length, the paged d256
// exception, the Tuning overrides, Q by TMA, persistence, the key block and the consumer
// warpgroups, and the tile table the planner reads.
#include <gtest/gtest.h>

#include "common/tile_config.h"
#include "flare/flare.h"
#include "kernels/sm90/variant.h"
#include "valid_params.h"

namespace {

using flare::choose_sm90_variant;
using flare::sm90_kernel_head_dim;
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

// A paged prefill (the block table's contents play no part in the variant choice).
int g_block_table[8] = {};
flare_mha_fwd_params paged_prefill(int seqlen) {
  flare_mha_fwd_params p = prefill(seqlen);
  p.block_table = g_block_table;
  return p;
}

TEST(Sm90Variant, KernelHeadDimPadsUpToTheNextHopperKernel) {
  EXPECT_EQ(sm90_kernel_head_dim(32), 0);  // mma.sync kernels
  EXPECT_EQ(sm90_kernel_head_dim(64), 64);
  EXPECT_EQ(sm90_kernel_head_dim(96), 128);
  EXPECT_EQ(sm90_kernel_head_dim(128), 128);
  EXPECT_EQ(sm90_kernel_head_dim(192), 256);
  EXPECT_EQ(sm90_kernel_head_dim(256), 256);
  EXPECT_EQ(sm90_kernel_head_dim(512), 512);
  for (int bad : {0, -64, 8, 40, 100, 160, 320}) EXPECT_EQ(sm90_kernel_head_dim(bad), 0) << bad;
  // Every valid head dim (multiples of 8 up to 256), through the planner's padding: the Hopper
  // kernel is at least as wide and a whole number of 64-column atoms; d <= 32 has none. (d136
  // to d192 run on the d256 kernel: from d192 on, its fourth atom is wholly padding.)
  for (int d = 8; d <= 256; d += 8) {
    const int k = sm90_kernel_head_dim(flare::padded_head_dim(d));
    if (d <= 32) {
      EXPECT_EQ(k, 0) << d;
      continue;
    }
    EXPECT_GE(k, d) << d;
    EXPECT_EQ(k % 64, 0) << d;
  }
}

TEST(Sm90Variant, DefaultsFollowTheMeasurements) {
  const Sm90Overrides none;
  for (int d : {64, 128, 256}) {
    const auto v = choose_sm90_variant(prefill(512), d, none);
    EXPECT_TRUE(v.warp_specialized) << d;
    EXPECT_TRUE(v.pingpong) << d;
    EXPECT_EQ(v.tma, TmaMode::kOn) << d;
    EXPECT_EQ(v.tma_q, TmaMode::kOn) << d;  // Q follows the K/V switch
    EXPECT_TRUE(v.persistent) << d;         // persistent CTAs taking tile tickets
  }
  // d256 at every length (K and V of a stage have barriers of their own).
  for (int seqlen : {128, 512, 1024, 4096})
    EXPECT_TRUE(choose_sm90_variant(prefill(seqlen), 256, none).warp_specialized) << seqlen;
  EXPECT_TRUE(choose_sm90_variant(prefill(4096), 256, none).persistent);
}

// Masked (triangular, banded) work is balanced by the tile tickets, so masks keep the
// persistent CTAs; paged launches are persistent too (d64 / d128 have the instance).
TEST(Sm90Variant, MasksAndPagesKeepDynamicPersistence) {
  const Sm90Overrides none;
  flare_mha_fwd_params p = prefill(2048);
  p.causal = 1;
  EXPECT_TRUE(choose_sm90_variant(p, 64, none).persistent);
  p = prefill(2048);
  p.window_left = 128;
  EXPECT_TRUE(choose_sm90_variant(p, 128, none).persistent);
  p = prefill(2048);
  p.window_right = 0;
  EXPECT_TRUE(choose_sm90_variant(p, 64, none).persistent);
  p = paged_prefill(2048);
  for (int d : {64, 128}) {
    const auto v = choose_sm90_variant(p, d, none);
    EXPECT_TRUE(v.warp_specialized && v.persistent) << d;
    EXPECT_EQ(v.block_n, flare::sm90_default_block_n(d)) << d;
    EXPECT_EQ(v.consumer_wgs, 2) << d;
  }
  Sm90Overrides off = none;
  off.persistent = 0;
  EXPECT_FALSE(choose_sm90_variant(p, 128, off).persistent);
}

TEST(Sm90Variant, VarlenIsWarpSpecialisedAndPersistent) {
  int cu[3] = {0, 100, 3000};
  flare_mha_fwd_params p = prefill(1);
  p.cu_seqlens_q = p.cu_seqlens_k = cu;
  for (int max_len : {2900, 600}) {
    p.max_seqlen_q = p.max_seqlen_k = max_len;
    for (int d : {64, 128, 256}) {
      const auto v = choose_sm90_variant(p, d, Sm90Overrides{});
      EXPECT_TRUE(v.warp_specialized) << d << " " << max_len;
      EXPECT_TRUE(v.persistent) << d << " " << max_len;
    }
  }
}

TEST(Sm90Variant, PagedHeadDim256StaysOnTheAllThreadsKernel) {
  flare_mha_fwd_params p = paged_prefill(4096);
  Sm90Overrides force;
  force.warp_specialized = 1;
  EXPECT_FALSE(choose_sm90_variant(p, 256, force).warp_specialized);
  EXPECT_TRUE(choose_sm90_variant(p, 128, force).warp_specialized);
}

// d96 / d192 run on the d128 / d256 kernels and take their rules: the variant is chosen with the
// compiled head dim, p.head_dim plays no part.
TEST(Sm90Variant, PaddedHeadDimsFollowTheirKernel) {
  const Sm90Overrides none;
  for (int d : {96, 192}) {
    const int k = sm90_kernel_head_dim(d);
    for (int seqlen : {512, 1024, 4096}) {
      flare_mha_fwd_params p = prefill(seqlen);
      flare_mha_fwd_params wide = p;
      p.head_dim = d;
      const auto v = choose_sm90_variant(p, k, none);
      const auto w = choose_sm90_variant(wide, k, none);
      EXPECT_EQ(v.warp_specialized, w.warp_specialized) << d << " " << seqlen;
      EXPECT_EQ(v.persistent, w.persistent) << d << " " << seqlen;
      EXPECT_EQ(v.pingpong, w.pingpong) << d << " " << seqlen;
      EXPECT_EQ(v.tma, w.tma) << d << " " << seqlen;
    }
  }
  // d192 and d96: warp-specialised and persistent, like their kernels' head dims.
  flare_mha_fwd_params p = prefill(512);
  p.head_dim = 192;
  EXPECT_TRUE(choose_sm90_variant(p, sm90_kernel_head_dim(192), none).warp_specialized);
  EXPECT_TRUE(choose_sm90_variant(p, sm90_kernel_head_dim(192), none).persistent);
  p = prefill(512);
  p.head_dim = 96;
  const auto v96 = choose_sm90_variant(p, sm90_kernel_head_dim(96), none);
  EXPECT_TRUE(v96.warp_specialized);
  EXPECT_TRUE(v96.persistent);
  // Paged: d192 stays on the all-threads kernel like d256 (its producer has 24 registers); d96
  // takes the d128 kernel's paged cp.async producer.
  p = paged_prefill(4096);
  p.head_dim = 192;
  Sm90Overrides force;
  force.warp_specialized = 1;
  EXPECT_FALSE(choose_sm90_variant(p, sm90_kernel_head_dim(192), none).warp_specialized);
  EXPECT_FALSE(choose_sm90_variant(p, sm90_kernel_head_dim(192), force).warp_specialized);
  p.head_dim = 96;
  EXPECT_TRUE(choose_sm90_variant(p, sm90_kernel_head_dim(96), none).warp_specialized);
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

// tma_q: unset, Q follows tma (off, on, require); set, it decides for Q alone and leaves K/V
// to tma.
TEST(Sm90Variant, QTmaFollowsTheKvSwitchUnlessSetOnItsOwn) {
  const flare_mha_fwd_params p = prefill(2048);
  for (int tma : {-1, 0, 1, 2}) {
    Sm90Overrides o;
    o.tma = tma;
    const auto v = choose_sm90_variant(p, 128, o);
    EXPECT_EQ(v.tma_q, v.tma) << tma;
    for (int tma_q : {0, 1, 2}) {
      o.tma_q = tma_q;
      const auto w = choose_sm90_variant(p, 128, o);
      EXPECT_EQ(w.tma_q, TmaMode(tma_q)) << tma << " " << tma_q;
      EXPECT_EQ(w.tma, v.tma) << tma << " " << tma_q;
    }
  }
}

}  // namespace

namespace {

// Keys a query tile visits on average, the measure of the long-block rule.
TEST(Sm90Variant, MeanKeysPerTile) {
  using flare::sm90_mean_keys_per_tile;
  flare_mha_fwd_params p = prefill(8192);
  EXPECT_EQ(sm90_mean_keys_per_tile(p), 8192);
  p.causal = 1;
  EXPECT_EQ(sm90_mean_keys_per_tile(p), 4096);  // half the square, bottom-right aligned
  p.seqlen_q = 512;                             // a chunk of new queries after 7680 cached keys
  EXPECT_EQ(sm90_mean_keys_per_tile(p), 8192 - 256);
  p.seqlen_q = 8192;
  p.window_left = 255;
  EXPECT_EQ(sm90_mean_keys_per_tile(p), 256 + 128);  // the window plus a tile's slide
  p.causal = 0;
  p.window_right = 64;
  EXPECT_EQ(sm90_mean_keys_per_tile(p), 256 + 64 + 128);
  p.window_left = -1;  // right window only: bottom-right aligned rows up to i + 64
  EXPECT_EQ(sm90_mean_keys_per_tile(p), 4096 + 64);
  p.window_right = -1;
  p.window_left = 1000;  // left window only: row i sees up to 1001 + 8191 - i keys
  EXPECT_EQ(sm90_mean_keys_per_tile(p), 1001 + 4096);
  p.seqlen_k = 65536;    // the same behind a long cache
  EXPECT_EQ(sm90_mean_keys_per_tile(p), 1001 + 4096);
  p.window_left = 100000;  // wider than the keys: all of them
  EXPECT_EQ(sm90_mean_keys_per_tile(p), 65536);
  p.window_left = 0x7fffffff;  // the widest valid window: no int overflow (found by the fuzzer)
  p.window_right = 0x7fffffff;
  EXPECT_EQ(sm90_mean_keys_per_tile(p), 65536);
  // Varlen: by the longest sequences.
  int cu[3] = {0, 100, 9000};
  flare_mha_fwd_params v = prefill(1);
  v.cu_seqlens_q = v.cu_seqlens_k = cu;
  v.max_seqlen_q = v.max_seqlen_k = 8900;
  EXPECT_EQ(sm90_mean_keys_per_tile(v), 8900);
  // Never negative (more queries than keys, causal: the first rows see none).
  flare_mha_fwd_params few = prefill(100);
  few.seqlen_q = 4000;
  few.causal = 1;
  EXPECT_EQ(sm90_mean_keys_per_tile(few), 0);
}

// d64 takes 192-key blocks from 4096 keys per query tile on average where it runs two consumer
// warpgroups, only when persistent (its one instance), never when paged; d128 takes its 176-key
// block only where asked (same conditions); d256 keeps its blocks; the override wins where the
// instance exists.
TEST(Sm90Variant, LongKeyBlocksForLongD64Rows) {
  using flare::sm90_default_block_n;
  using flare::sm90_long_block_n;
  EXPECT_EQ(sm90_default_block_n(64), 128);
  EXPECT_EQ(sm90_default_block_n(128), 128);
  EXPECT_EQ(sm90_default_block_n(256), 80);
  EXPECT_EQ(sm90_long_block_n(64), 192);
  EXPECT_EQ(sm90_long_block_n(128), 176);
  EXPECT_EQ(sm90_long_block_n(256), 0);
  EXPECT_EQ(flare::sm90_long_block_min_keys(64), 4096);
  EXPECT_EQ(flare::sm90_long_block_min_keys(128), 0);
  Sm90Overrides none;
  none.consumer_wgs = 2;  // the rule of three warpgroups (below) off
  for (int s : {512, 1024, 2048}) EXPECT_EQ(choose_sm90_variant(prefill(s), 64, none).block_n, 128) << s;
  for (int s : {4096, 8192, 16384}) EXPECT_EQ(choose_sm90_variant(prefill(s), 64, none).block_n, 192) << s;
  flare_mha_fwd_params causal = prefill(4096);
  causal.causal = 1;
  EXPECT_EQ(choose_sm90_variant(causal, 64, none).block_n, 128);  // 2048 keys per tile
  causal.seqlen_q = causal.seqlen_k = 8192;
  EXPECT_EQ(choose_sm90_variant(causal, 64, none).block_n, 192);
  for (int d : {128, 256})
    EXPECT_EQ(choose_sm90_variant(prefill(16384), d, none).block_n, sm90_default_block_n(d)) << d;
  flare_mha_fwd_params window = prefill(16384);
  window.window_left = 1024;
  window.window_right = 0;
  EXPECT_EQ(choose_sm90_variant(window, 64, none).block_n, 128);
  flare_mha_fwd_params paged = paged_prefill(16384);
  EXPECT_EQ(choose_sm90_variant(paged, 64, none).block_n, 128);
  Sm90Overrides not_persistent = none;
  not_persistent.persistent = 0;
  EXPECT_EQ(choose_sm90_variant(prefill(16384), 64, not_persistent).block_n, 128);
  // block_n: 192 wherever the instance exists, 128 turns the rule off.
  Sm90Overrides long_n = none;
  long_n.block_n = 192;
  EXPECT_EQ(choose_sm90_variant(prefill(512), 64, long_n).block_n, 192);
  EXPECT_EQ(choose_sm90_variant(prefill(512), 128, long_n).block_n, 128);
  EXPECT_EQ(choose_sm90_variant(paged, 64, long_n).block_n, 128);
  Sm90Overrides short_n = none;
  short_n.block_n = 128;
  EXPECT_EQ(choose_sm90_variant(prefill(16384), 64, short_n).block_n, 128);
  // d128: 176 where asked, on its persistent unpaged instance only.
  Sm90Overrides n176 = none;
  n176.block_n = 176;
  for (int s : {512, 16384}) EXPECT_EQ(choose_sm90_variant(prefill(s), 128, n176).block_n, 176) << s;
  EXPECT_EQ(choose_sm90_variant(prefill(16384), 64, n176).block_n, 128);
  EXPECT_EQ(choose_sm90_variant(paged_prefill(16384), 128, n176).block_n, 128);
  Sm90Overrides n176_static = n176;
  n176_static.persistent = 0;
  EXPECT_EQ(choose_sm90_variant(prefill(16384), 128, n176_static).block_n, 128);
  // By default three warpgroups take the long rows; the long block stays for long keys under
  // fewer than 512 queries.
  const Sm90Overrides rules;
  EXPECT_EQ(choose_sm90_variant(prefill(16384), 64, rules).block_n, 128);
  flare_mha_fwd_params chunk = prefill(16384);
  chunk.seqlen_q = 256;
  chunk.causal = 1;
  const auto c = choose_sm90_variant(chunk, 64, rules);
  EXPECT_EQ(c.consumer_wgs, 2);
  EXPECT_EQ(c.block_n, 192);
}

}  // namespace

namespace {

// Three consumer warpgroups (192-row tiles): d64 only, persistent only, with the default key
// block; two everywhere by default.
TEST(Sm90Variant, ThreeConsumerWarpgroupsForD64) {
  EXPECT_EQ(flare::sm90_max_consumer_wgs(64), 3);
  EXPECT_EQ(flare::sm90_max_consumer_wgs(128), 2);
  EXPECT_EQ(flare::sm90_max_consumer_wgs(256), 2);
  const Sm90Overrides none;
  // Non-causal from 512 queries; causal from 1024 keys per query tile on average (causal 2k).
  for (int s : {512, 1024, 4096, 16384}) {
    const auto v = choose_sm90_variant(prefill(s), 64, none);
    EXPECT_EQ(v.consumer_wgs, 3) << s;
    EXPECT_EQ(v.block_n, 128) << s;  // not the long block
  }
  EXPECT_EQ(choose_sm90_variant(prefill(384), 64, none).consumer_wgs, 2);
  flare_mha_fwd_params causal = prefill(1024);
  causal.causal = 1;
  EXPECT_EQ(choose_sm90_variant(causal, 64, none).consumer_wgs, 2);  // 512 keys per tile
  causal.seqlen_q = causal.seqlen_k = 2048;
  EXPECT_EQ(choose_sm90_variant(causal, 64, none).consumer_wgs, 3);  // 1024
  flare_mha_fwd_params window = prefill(16384);
  window.window_left = 1024;  // left edge only: unmasked on the right, three
  EXPECT_EQ(choose_sm90_variant(window, 64, none).consumer_wgs, 3);
  window.window_right = 0;    // a sliding causal window of 1k keys (1153 per tile): three
  EXPECT_EQ(choose_sm90_variant(window, 64, none).consumer_wgs, 3);
  window.window_left = 256;   // of 256 keys: two
  EXPECT_EQ(choose_sm90_variant(window, 64, none).consumer_wgs, 2);
  int cu[3] = {0, 100, 3000};  // varlen: by the longest sequence
  flare_mha_fwd_params v = prefill(1);
  v.cu_seqlens_q = v.cu_seqlens_k = cu;
  v.max_seqlen_q = v.max_seqlen_k = 2900;
  EXPECT_EQ(choose_sm90_variant(v, 64, none).consumer_wgs, 3);
  v.max_seqlen_q = v.max_seqlen_k = 300;
  EXPECT_EQ(choose_sm90_variant(v, 64, none).consumer_wgs, 2);
  for (int d : {128, 256})
    for (int s : {512, 16384}) EXPECT_EQ(choose_sm90_variant(prefill(s), d, none).consumer_wgs, 2);
  // Never without persistence (the instance's one scheduler) or when paged.
  flare_mha_fwd_params paged = paged_prefill(16384);
  EXPECT_EQ(choose_sm90_variant(paged, 64, none).consumer_wgs, 2);
  Sm90Overrides one_cta;
  one_cta.persistent = 0;
  EXPECT_EQ(choose_sm90_variant(prefill(16384), 64, one_cta).consumer_wgs, 2);
  Sm90Overrides ws_off;
  ws_off.warp_specialized = 0;
  EXPECT_EQ(choose_sm90_variant(prefill(16384), 64, ws_off).consumer_wgs, 2);
  // consumer_wgs: 3 wherever the instance exists, 2 turns the rule off.
  Sm90Overrides three;
  three.consumer_wgs = 3;
  flare_mha_fwd_params short_causal = prefill(512);
  short_causal.causal = 1;
  EXPECT_EQ(choose_sm90_variant(short_causal, 64, three).consumer_wgs, 3);
  EXPECT_EQ(choose_sm90_variant(prefill(16384), 128, three).consumer_wgs, 2);
  EXPECT_EQ(choose_sm90_variant(paged, 64, three).consumer_wgs, 2);
  Sm90Overrides two;
  two.consumer_wgs = 2;
  EXPECT_EQ(choose_sm90_variant(prefill(16384), 64, two).consumer_wgs, 2);
}

}  // namespace

namespace {

// The tile table the planner reads (variant.h) for each variant.
TEST(Sm90Variant, TileTable) {
  EXPECT_EQ(flare::sm90_ws_block_m(128, 2), 128);
  EXPECT_EQ(flare::sm90_ws_block_m(64, 3), 192);
  EXPECT_EQ(flare::sm90_ws_block_m(512, 2), 64);  // both warpgroups on the same rows
  EXPECT_EQ(flare::kSm90AllThreadsBlockM, 128);
  EXPECT_EQ(flare::sm90_all_threads_block_n(64), 128);
  EXPECT_EQ(flare::sm90_all_threads_block_n(128), 128);
  EXPECT_EQ(flare::sm90_all_threads_block_n(256), 64);
  EXPECT_EQ(flare::kSm90TileCounterBytes % 256, 0u);
}

TEST(Sm90Variant, HeadDim512SplitsOAcrossTheConsumerWarpgroups) {
  // d512: one 64-row tile for both consumer warpgroups (each 256 of O's columns), 32-key blocks;
  // every other kernel: 64 rows per consumer warpgroup.
  EXPECT_TRUE(flare::sm90_ws_splits_o(512));
  for (int d : {64, 128, 256}) EXPECT_FALSE(flare::sm90_ws_splits_o(d)) << d;
  EXPECT_EQ(flare::sm90_default_block_n(512), 32);
  EXPECT_EQ(flare::sm90_long_block_n(512), 0);
  EXPECT_EQ(flare::sm90_max_consumer_wgs(512), 2);
  // Only where asked, unpaged, warp-specialised.
  const flare_mha_fwd_params p = prefill(4096);
  Sm90Overrides o;
  EXPECT_FALSE(flare::sm90_d512_applies(p, o));
  o.d512 = 1;
  EXPECT_TRUE(flare::sm90_d512_applies(p, o));
  EXPECT_FALSE(flare::sm90_d512_applies(paged_prefill(4096), o));
  o.warp_specialized = 0;
  EXPECT_FALSE(flare::sm90_d512_applies(p, o));
  // The variant: warp-specialised, TMA, the default key block; no ping-pong (the warpgroups
  // exchange their halves of S every key block), not even where asked; in clusters of two (one
  // tile per CTA) where every K/V block goes by TMA, else persistent.
  const flare_mha_fwd_params dense = flare_test::dense_fp16_params(2, 4096, 4096, 8, 8, 512);
  const flare::Sm90Variant v = flare::choose_sm90_variant(dense, 512, Sm90Overrides{});
  EXPECT_TRUE(v.warp_specialized);
  EXPECT_FALSE(v.pingpong);
  EXPECT_FALSE(flare::sm90_ws_takes_turns(512));
  for (int d : {64, 128, 192, 256}) EXPECT_TRUE(flare::sm90_ws_takes_turns(d)) << d;
  Sm90Overrides turns;
  turns.pingpong = 1;
  EXPECT_FALSE(flare::choose_sm90_variant(dense, 512, turns).pingpong);
  EXPECT_TRUE(flare::choose_sm90_variant(flare_test::dense_fp16_params(2, 4096, 4096, 8, 8, 256),
                                         256, turns)
                  .pingpong);
  EXPECT_EQ(v.block_n, 32);
  EXPECT_EQ(v.consumer_wgs, 2);
  EXPECT_EQ(v.cluster_m, 2);
  EXPECT_FALSE(v.persistent);
  EXPECT_TRUE(flare::sm90_cluster_applies(dense, 512));
  Sm90Overrides no_cluster;
  no_cluster.cluster_m = 1;
  const flare::Sm90Variant one = flare::choose_sm90_variant(dense, 512, no_cluster);
  EXPECT_EQ(one.cluster_m, 1);
  EXPECT_TRUE(one.persistent);
  Sm90Overrides no_tma;
  no_tma.tma = 0;
  EXPECT_EQ(flare::choose_sm90_variant(dense, 512, no_tma).cluster_m, 1);
  // Rows that are not exactly the sequence's (varlen: the K/V maps span every sequence) or
  // strides TMA cannot take: no clusters. Other head dims: never.
  const flare_mha_fwd_params varlen = flare_test::as_varlen(dense, 2, 4096, 4096);
  EXPECT_FALSE(flare::sm90_cluster_applies(varlen, 512));
  EXPECT_EQ(flare::choose_sm90_variant(varlen, 512, Sm90Overrides{}).cluster_m, 1);
  // One 64-row query tile: the second CTA of a cluster would have no rows.
  EXPECT_FALSE(flare::sm90_cluster_applies(
      flare_test::dense_fp16_params(2, 64, 4096, 8, 8, 512), 512));
  EXPECT_TRUE(flare::sm90_cluster_applies(
      flare_test::dense_fp16_params(2, 65, 4096, 8, 8, 512), 512));
  flare_mha_fwd_params odd_stride = dense;
  odd_stride.k_row_stride += 4;  // 8 bytes: not a multiple of 16
  EXPECT_FALSE(flare::sm90_cluster_applies(odd_stride, 512));
  for (int d : {64, 128, 256}) {
    const flare_mha_fwd_params q = flare_test::dense_fp16_params(2, 4096, 4096, 8, 8, d);
    EXPECT_FALSE(flare::sm90_cluster_applies(q, d)) << d;
    EXPECT_EQ(flare::choose_sm90_variant(q, d, Sm90Overrides{}).cluster_m, 1) << d;
  }
}

}  // namespace
