// Planning (src/plan/plan.cpp): the split-count heuristic, plan_forward's split choice,
// workspace layout, head-dim padding and GQA packing. Expected values are derived by hand
// from the rule documented in plan.h; each case shows its arithmetic.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "flare/flare.h"
#include "common/tile_config.h"
#include "common/split.h"
#include "plan/plan.h"
#include "plan/tuning.h"
#include "valid_params.h"

namespace {

using flare::DeviceInfo;
using flare::FwdKernelFamily;
using flare::FwdPlan;
using flare::kNoRegion;
using flare::kWorkspaceAlignment;
using flare::num_splits_heuristic;
using flare::Tuning;

// ---------------------------------------------------------------------------------------------
// num_splits_heuristic(batch_nheads_mblocks, num_sms (CTA slots), num_n_blocks, max_splits)

struct HeuristicCase {
  const char* name;
  int bnm, slots, n_blocks, max_splits;
  int expected;
  const char* why;
};

const HeuristicCase kHeuristicCases[] = {
    {"decode_small_grid", 2, 264, 8, 128, 8,
     "max = min(128, 264, 8) = 8; eligible s (ceil(8/s) changes) = {1,2,3,4,8}; all waves < 1 so "
     "efficiency = 2s/264, best at s=8 (16/264); 0.85*16 = 13.6 -> first s with 2s >= 13.6 is 8"},
    {"grid_at_80_percent", 106, 132, 100, 128, 1, "106 >= 0.8*132 = 105.6 -> 1"},
    {"grid_full", 264, 264, 64, 128, 1, "264 >= 211.2 -> 1"},
    {"single_key_block", 1, 132, 1, 128, 1, "max = min(128, 132, 1) = 1 -> 1"},
    {"no_keys", 1, 132, 0, 128, 1, "max = 0 -> 1"},
    {"capped_by_max_splits", 1, 132, 64, 4, 4,
     "max = 4; eligible {1,2,3,4}; efficiency s/132, best 4/132; 0.85*4 = 3.4 -> 4"},
    {"capped_by_slots", 1, 2, 100, 128, 2,
     "max = min(128, 2, 100) = 2; efficiency 0.5 (s=1), 1.0 (s=2) -> 2"},
    {"wave_quantisation", 100, 132, 16, 128, 6,
     "max = 16; eligible {1,2,3,4,6,8,16}; waves 100s/132: s=1..4 -> eff 0.758, s=6 -> 4.55/5 = "
     "0.909, s=8 -> 6.06/7 = 0.866, s=16 -> 12.1/13 = 0.932; 0.85*0.932 = 0.793 -> 6"},
    {"half_grid_doubles", 66, 132, 4, 128, 2,
     "max = 4; eligible {1,2,4}; eff 0.5, 1.0, 1.0; 0.85 -> 2"},
};

TEST(NumSplitsHeuristic, Table) {
  for (const HeuristicCase& c : kHeuristicCases) {
    EXPECT_EQ(num_splits_heuristic(c.bnm, c.slots, c.n_blocks, c.max_splits), c.expected)
        << c.name << ": " << c.why;
  }
}

TEST(NumSplitsHeuristic, StaysWithinBounds) {
  for (int bnm : {1, 3, 17, 50, 131, 200})
    for (int slots : {1, 8, 132, 264})
      for (int n : {0, 1, 2, 7, 64, 300})
        for (int max_splits : {1, 2, 16, 128}) {
          const int s = num_splits_heuristic(bnm, slots, n, max_splits);
          EXPECT_GE(s, 1);
          EXPECT_LE(s, std::max(1, std::min({max_splits, slots, n})))
              << bnm << " " << slots << " " << n << " " << max_splits;
        }
}

// ---------------------------------------------------------------------------------------------
// plan_forward

// Contiguous fp16 q/out [batch, seqlen_q, heads, d], k/v [batch, seqlen_k, heads_k, d], with a
// workspace offered (the heuristic splits only then).
flare_mha_fwd_params dense(int batch, int seqlen_q, int seqlen_k, int heads, int heads_k,
                           int head_dim) {
  flare_mha_fwd_params p =
      flare_test::dense_fp16_params(batch, seqlen_q, seqlen_k, heads, heads_k, head_dim);
  p.workspace = flare_test::fake_ptr(0x800000);
  return p;
}

constexpr int kH100Sms = 132;
// An mma.sync device (compute capability 8.0) with the H100's SM count and shared memory, so the
// arithmetic below counts 132 SMs; and the H100 itself.
constexpr DeviceInfo kSm80{8, 0, kH100Sms, 227 * 1024};
constexpr DeviceInfo kH100{9, 0, kH100Sms, 227 * 1024};

// flare::plan_forward on the mma.sync device by default, with the default Tuning.
FwdPlan make_plan(const flare_mha_fwd_params& p, const DeviceInfo& device = kSm80,
                     const Tuning& tuning = Tuning{}) {
  return flare::plan_forward(p, device, tuning);
}

TEST(PlanForward, SmallDecodeGridSplits) {
  // seqlen_q 8 <= 16: the decode kernel (block_m 16, 3 CTAs per SM at d = 64).
  // m_blocks = 1, grid = 1*2*1 = 2 CTAs, n_blocks = 512/64 = 8, slots = 3*132 = 396
  // -> as in the "decode_small_grid" row above (all waves < 1, best at s = 8): 8 splits.
  const FwdPlan plan = make_plan(dense(1, 8, 512, 2, 2, 64));
  EXPECT_GE(plan.num_splits, 2);
  EXPECT_EQ(plan.num_splits, 8);
  EXPECT_EQ(plan.kernel_head_dim, 64);
  EXPECT_FALSE(plan.packed_gqa);
  EXPECT_FALSE(plan.rotate_q);
  EXPECT_EQ(plan.max_seqlen_q, 8);
  // rows = 1*2*8 = 16; o_accum = 8*16*64*4 = 32768 (aligned); lse = 8*16*4 = 512 (aligned).
  EXPECT_EQ(plan.o_accum_offset, 0u);
  EXPECT_EQ(plan.lse_accum_offset, 32768u);
  EXPECT_EQ(plan.workspace_bytes, 32768u + 512u);
}

TEST(PlanForward, DecodeKernelCountsOneSlotPerSm) {
  // d = 64, 40 heads, 4096 keys. seqlen_q 16 runs the decode kernel (64-key blocks), whose split
  // heuristic counts one CTA per SM (4 fit): slots = 132, 64 blocks. seqlen_q 17 runs the prefill
  // kernel on its wide 128-key step (non-causal) over its own slots (2 CTAs per SM): slots 264,
  // 32 blocks. The slot counts give different answers here, so a change in what is counted
  // shows.
  const int decode = num_splits_heuristic(40, kH100Sms, 64, 128);
  const int prefill = num_splits_heuristic(40, 2 * kH100Sms, 32, 128);
  ASSERT_NE(decode, num_splits_heuristic(40, 4 * kH100Sms, 64, 128));
  ASSERT_NE(decode, num_splits_heuristic(40, 2 * kH100Sms, 64, 128));
  EXPECT_EQ(flare::sm80_decode_ctas_per_sm(64), 4);
  const FwdPlan d = make_plan(dense(1, 16, 4096, 40, 40, 64));
  EXPECT_EQ(d.family, FwdKernelFamily::kSm80Decode);
  EXPECT_EQ(d.tile.block_m, 16);
  EXPECT_EQ(d.tile.block_n, 64);
  EXPECT_EQ(d.tile.ctas_per_sm, 1);
  EXPECT_EQ(d.num_splits, decode);
  const FwdPlan p = make_plan(dense(1, 17, 4096, 40, 40, 64));
  EXPECT_EQ(p.family, FwdKernelFamily::kSm80Prefill);
  EXPECT_EQ(p.tile.block_n, 128);
  EXPECT_EQ(p.num_splits, prefill);
  // 240 heads: the decode grid (240 >= 0.8 * 132) does not split.
  EXPECT_EQ(make_plan(dense(1, 16, 4096, 240, 240, 64)).num_splits, 1);
}

TEST(PlanForward, FullGridDoesNotSplit) {
  // m_blocks = 1024/128 = 8, grid = 16*16*8 = 2048 >= 0.8 * 264 -> 1; no workspace.
  const FwdPlan plan = make_plan(dense(16, 1024, 1024, 16, 16, 128));
  EXPECT_EQ(plan.num_splits, 1);
  EXPECT_EQ(plan.workspace_bytes, 0u);
}

TEST(PlanForward, HeadDim256DecodeCountsOneCtaPerSm) {
  // d = 256 decode: one slot per SM -> slots = 132. grid = 1*1*1, n_blocks = 64, max = 64; waves < 1
  // for s <= 64 < 132, so efficiency = s/132 peaks at s = 64 and the first eligible s with
  // s >= 0.85*64 = 54.4 is the first s >= 55 where ceil(64/s) changes: ceil(64/s) = 2 for
  // s in [32, 63], 1 at s = 64 -> 64.
  const FwdPlan plan = make_plan(dense(1, 1, 4096, 1, 1, 256));
  EXPECT_EQ(plan.num_splits, num_splits_heuristic(1, 132, 64, 128));
  EXPECT_EQ(plan.num_splits, 64);
}

// d = 256 prefill: 64-row tiles, two CTAs per SM -> m_blocks = 128 / 64 = 2,
// slots = 2 * 132, n_blocks = 4096 / 64 = 64.
TEST(PlanForward, HeadDim256PrefillCountsTwoCtasPerSmOf64Rows) {
  EXPECT_EQ(flare::sm80_tile_config(256).block_m, 64);
  EXPECT_EQ(flare::sm80_tile_config(256).ctas_per_sm, 2);
  EXPECT_EQ(flare::sm80_tile_config(192).block_m, 64);
  const FwdPlan plan = make_plan(dense(1, 128, 4096, 1, 1, 256));
  EXPECT_EQ(plan.num_splits, num_splits_heuristic(2, 264, 64, 128));
  EXPECT_GT(plan.num_splits, 1);
}

TEST(PlanForward, ForcedSplitsRespectedAndCapped) {
  flare_mha_fwd_params p = dense(1, 8, 512, 2, 2, 64);  // n_blocks = 8
  p.num_splits = 5;
  EXPECT_EQ(make_plan(p).num_splits, 5);
  p.num_splits = 100;
  EXPECT_EQ(make_plan(p).num_splits, 8);
  p.num_splits = 1;
  const FwdPlan one = make_plan(p);
  EXPECT_EQ(one.num_splits, 1);
  EXPECT_EQ(one.workspace_bytes, 0u);
  // Forced splits also override a grid that fills the GPU.
  flare_mha_fwd_params big = dense(16, 1024, 1024, 16, 16, 128);
  big.num_splits = 3;
  EXPECT_EQ(make_plan(big).num_splits, 3);
  // No key at all: n_blocks = 0, capped at 1.
  flare_mha_fwd_params empty = dense(1, 8, 0, 2, 2, 64);
  empty.num_splits = 4;
  EXPECT_EQ(make_plan(empty).num_splits, 1);
  EXPECT_EQ(make_plan(empty).workspace_bytes, 0u);
}

TEST(PlanForward, WorkspaceAccumulatorsAligned) {
  // d = 8 (kernel d 32), seqlen_q 3, seqlen_k 200 (n_blocks 4), forced 3 splits:
  // rows = 1*1*3 = 3; o_accum = 3*3*8*4 = 288 -> 512; lse = 3*3*4 = 36 -> 512 + 36 -> 768.
  flare_mha_fwd_params p = dense(1, 3, 200, 1, 1, 8);
  p.num_splits = 3;
  const FwdPlan plan = make_plan(p);
  EXPECT_EQ(plan.kernel_head_dim, 32);
  ASSERT_EQ(plan.num_splits, 3);
  EXPECT_EQ(plan.o_accum_offset, 0u);
  EXPECT_EQ(plan.lse_accum_offset, 512u);
  EXPECT_EQ(plan.workspace_bytes, 768u);
  EXPECT_EQ(plan.lse_accum_offset % kWorkspaceAlignment, 0u);
  EXPECT_EQ(plan.workspace_bytes % kWorkspaceAlignment, 0u);
}

// Narrow launches (common/narrow.h): any tensor whose rows are not 16-byte addressable, or a
// head dim that is not a multiple of 8. They run the mma.sync family on Hopper too, and the
// split accumulators' rows are padded to whole 8-float chunks.
TEST(PlanForward, NarrowWhereRowsAreNotChunkAddressable) {
  const flare_mha_fwd_params aligned = dense(2, 256, 512, 4, 2, 64);
  EXPECT_FALSE(make_plan(aligned).narrow);
  EXPECT_FALSE(make_plan(aligned, kH100).narrow);
  EXPECT_EQ(make_plan(aligned, kH100).family, flare::FwdKernelFamily::kSm90WarpSpecialized);
  using Mutation = void (*)(flare_mha_fwd_params&);
  const Mutation narrowing[] = {
      [](flare_mha_fwd_params& p) { p.q = static_cast<const char*>(p.q) + 2; },
      [](flare_mha_fwd_params& p) { p.k = static_cast<const char*>(p.k) + 8; },
      [](flare_mha_fwd_params& p) { p.v = static_cast<const char*>(p.v) + 14; },
      [](flare_mha_fwd_params& p) { p.out = static_cast<char*>(p.out) + 4; },
      [](flare_mha_fwd_params& p) { p.q_batch_stride += 1; },
      [](flare_mha_fwd_params& p) { p.k_row_stride += 4; },
      [](flare_mha_fwd_params& p) { p.v_head_stride = 66; },
      [](flare_mha_fwd_params& p) { p.out_row_stride += 2; },
  };
  for (Mutation m : narrowing) {
    flare_mha_fwd_params p = aligned;
    m(p);
    EXPECT_TRUE(make_plan(p).narrow);
    const FwdPlan hopper = make_plan(p, kH100);
    EXPECT_TRUE(hopper.narrow);
    EXPECT_EQ(hopper.family, flare::FwdKernelFamily::kSm80Prefill);
    EXPECT_EQ(hopper.sm90_head_dim, 0);
  }
  // Head dims 1..7 run on the d32 instance, 9..63 on d64, 111 on d128.
  for (int d : {1, 7, 59, 111}) {
    flare_mha_fwd_params p = dense(1, 100, 300, 2, 2, d);
    p.q_head_stride = p.k_head_stride = p.v_head_stride = p.out_head_stride = d;
    p.q_row_stride = p.out_row_stride = 2 * d;
    p.k_row_stride = p.v_row_stride = 2 * d;
    p.q_batch_stride = p.out_batch_stride = 100 * 2 * d;
    p.k_batch_stride = p.v_batch_stride = 300 * 2 * d;
    const FwdPlan plan = make_plan(p, kH100);
    EXPECT_TRUE(plan.narrow) << d;
    EXPECT_EQ(plan.kernel_head_dim, flare::padded_head_dim(d)) << d;
    EXPECT_EQ(plan.family, flare::FwdKernelFamily::kSm80Prefill) << d;
  }
}

TEST(PlanForward, NarrowSplitAccumulatorRowsArePadded) {
  // d = 59, forced 3 splits: rows = 1*1*3 = 3; o_accum rows of 64 floats: 3*3*64*4 = 2304
  // -> 2304 (aligned); lse = 3*3*4 = 36 -> 2560.
  flare_mha_fwd_params p = dense(1, 3, 200, 1, 1, 59);
  p.num_splits = 3;
  const FwdPlan plan = make_plan(p);
  EXPECT_TRUE(plan.narrow);
  ASSERT_EQ(plan.num_splits, 3);
  EXPECT_EQ(flare::split_accum_row_floats(59), 64);
  EXPECT_EQ(flare::split_accum_row_floats(64), 64);
  EXPECT_EQ(flare::split_accum_row_floats(1), 8);
  EXPECT_EQ(plan.o_accum_offset, 0u);
  EXPECT_EQ(plan.lse_accum_offset, 2304u);
  EXPECT_EQ(plan.workspace_bytes, 2560u);
}

TEST(PlanForward, VarlenUsesMaxSeqlens) {
  // batch 3, heads 2, d 64, max_seqlen_q 100 (prefill, m_blocks 1), max_seqlen_k 1000: the wide
  // 128-key step (non-causal), n_blocks 8; grid = 6, slots 264, eligible {1,2,3,4,8},
  // efficiency 6s/264 -> best at 8; 0.85*48 = 40.8 -> first eligible s with 6s >= 40.8 is 8.
  // rows = 3*2*100 = 600; o_accum = 8*600*64*4 = 1228800 (= 4800*256);
  // lse = 8*600*4 = 19200 (= 75*256).
  flare_mha_fwd_params p = dense(3, 0, 0, 2, 2, 64);
  p.q_batch_stride = p.out_batch_stride = p.k_batch_stride = p.v_batch_stride = 0;
  p.cu_seqlens_q = reinterpret_cast<const int32_t*>(uintptr_t(0x300000));
  p.cu_seqlens_k = reinterpret_cast<const int32_t*>(uintptr_t(0x300100));
  p.max_seqlen_q = 100;
  p.max_seqlen_k = 1000;
  const FwdPlan plan = make_plan(p);
  EXPECT_EQ(plan.max_seqlen_q, 100);
  EXPECT_EQ(plan.tile.block_n, 128);
  EXPECT_EQ(plan.num_splits, 8);
  EXPECT_EQ(plan.lse_accum_offset, 1228800u);
  EXPECT_EQ(plan.workspace_bytes, 1228800u + 19200u);
}

// KV cache decode with append and rotary: batch 2, seqlen_q 3, 4 heads (no GQA), d 64,
// capacity 256, 3 new rows.
flare_mha_fwd_params kv_rotary() {
  flare_mha_fwd_params p = dense(2, 3, 256, 4, 4, 64);
  // A non-dense q, to see the planner replace its strides by the dense rotated copy's.
  p.q_head_stride = 128;
  p.q_row_stride = 1024;
  p.q_batch_stride = 8192;
  p.cache_seqlens = reinterpret_cast<const int32_t*>(uintptr_t(0x400000));
  p.k_new = p.v_new = reinterpret_cast<const void*>(uintptr_t(0x500000));
  p.seqlen_new = 3;
  p.rotary_cos = p.rotary_sin = reinterpret_cast<const void*>(uintptr_t(0x600000));
  p.rotary_dim = 32;
  p.rotary_max_positions = 1024;
  return p;
}

TEST(PlanForward, RotaryWorkspaceWithoutSplit) {
  // q_rot = 2*3*4*64*2 bytes = 3072 (= 12*256); no split -> that is all.
  flare_mha_fwd_params p = kv_rotary();
  p.num_splits = 1;
  const FwdPlan plan = make_plan(p);
  EXPECT_TRUE(plan.rotate_q);
  EXPECT_EQ(plan.num_splits, 1);
  EXPECT_EQ(plan.q_rot_offset, 0u);
  EXPECT_EQ(plan.workspace_bytes, 3072u);
  // The kernels read the rotated q densely: [batch, seqlen_q, heads, d].
  EXPECT_EQ(plan.p.q_head_stride, 64);
  EXPECT_EQ(plan.p.q_row_stride, 4 * 64);
  EXPECT_EQ(plan.p.q_batch_stride, 3 * 4 * 64);
}

TEST(PlanForward, RotaryWorkspaceWithSplit) {
  // q_rot 3072; rows = 2*4*3 = 24; o_accum = 2*24*64*4 = 12288 at 3072 -> 15360 (aligned);
  // lse = 2*24*4 = 192 at 15360 -> 15552 -> aligned up to 15616.
  flare_mha_fwd_params p = kv_rotary();
  p.num_splits = 2;
  const FwdPlan plan = make_plan(p);
  ASSERT_EQ(plan.num_splits, 2);
  EXPECT_EQ(plan.q_rot_offset, 0u);
  EXPECT_EQ(plan.o_accum_offset, 3072u);
  EXPECT_EQ(plan.lse_accum_offset, 15360u);
  EXPECT_EQ(plan.workspace_bytes, 15616u);
}

TEST(PlanForward, NoRotaryWithoutAppend) {
  // Rotary needs k_new; without it q is used in place (validation rejects the combination,
  // the planner simply does not rotate).
  flare_mha_fwd_params p = kv_rotary();
  p.k_new = p.v_new = nullptr;
  p.num_splits = 1;
  const FwdPlan plan = make_plan(p);
  EXPECT_FALSE(plan.rotate_q);
  EXPECT_EQ(plan.workspace_bytes, 0u);
  EXPECT_EQ(plan.p.q_row_stride, 1024);
}

TEST(PlanForward, KvCacheKeyBlocksCountCapacity) {
  // Appended rows live inside the capacity, so the planner bounds the keys by the capacity
  // 128 -> 2 key blocks of 64, and a forced 10 splits is capped at 2.
  flare_mha_fwd_params p = dense(1, 1, 128, 1, 1, 64);
  p.cache_seqlens = reinterpret_cast<const int32_t*>(uintptr_t(0x400000));
  p.k_new = p.v_new = reinterpret_cast<const void*>(uintptr_t(0x500000));
  p.seqlen_new = 1;
  p.num_splits = 10;
  EXPECT_EQ(make_plan(p).num_splits, 2);
}

TEST(PlanForward, DefaultSoftmaxScaleResolved) {
  EXPECT_FLOAT_EQ(make_plan(dense(1, 8, 8, 1, 1, 64)).p.softmax_scale, 0.125f);
  flare_mha_fwd_params p = dense(1, 8, 8, 1, 1, 64);
  p.softmax_scale = 0.5f;
  EXPECT_FLOAT_EQ(make_plan(p).p.softmax_scale, 0.5f);
}

TEST(PlanForward, HeadDimPaddedToCompiled) {
  const std::pair<int, int> cases[] = {{8, 32},    {32, 32},   {40, 64},   {64, 64},
                                       {72, 96},   {128, 128}, {136, 192}, {200, 256},
                                       {256, 256}, {264, 512}, {320, 512}, {504, 512},
                                       {512, 512}};
  for (const auto& c : cases)
    EXPECT_EQ(make_plan(dense(1, 8, 8, 1, 1, c.first)).kernel_head_dim, c.second)
        << c.first;
}

TEST(TileConfig, VColumnParts) {
  // One CTA computes at most 256 O columns: the d512 kernel's V width is 256.
  for (int d : {32, 64, 96, 128, 192, 256}) EXPECT_EQ(flare::sm80_kernel_head_dim_v(d), d) << d;
  EXPECT_EQ(flare::sm80_kernel_head_dim_v(512), 256);
  EXPECT_EQ(flare::v_column_parts(512, 256), 2);
  EXPECT_EQ(flare::v_column_parts(264, 256), 2);
  EXPECT_EQ(flare::v_column_parts(256, 256), 1);
  EXPECT_EQ(flare::v_column_parts(128, 192), 1);  // (192, 128) on the d192 kernel
  // d512: 64 x 32 tiles; Q and K rows of 512, V rows of 256 (padded: + 8 elements).
  EXPECT_EQ(flare::sm80_tile_config(512).block_m, 64);
  EXPECT_EQ(flare::sm80_tile_config(512).block_n, 32);
  EXPECT_EQ(flare::sm80_prefill_min_smem_bytes(512), (64 + 32) * 520 * 2 + 32 * 264 * 2);
  EXPECT_EQ(flare::sm80_prefill_smem_bytes(512, 64, 32, false, true),
            (64 + 32) * 1024 + 32 * 512 + 128);
  EXPECT_FALSE(flare::sm80_has_decode_kernel(512));
  EXPECT_TRUE(flare::sm80_has_decode_kernel(256));
}

TEST(PlanForward, HeadDim512RunsTwoVColumnParts) {
  // d512, batch 1, 8 heads, 512 rows: the mma.sync prefill kernel, 64 x 32 swizzled tiles, two
  // CTAs per (query block, head) computing 256 O columns each. Split count: m_blocks 8, grid
  // 1 * 8 * 8 * 2 = 128 CTAs >= 0.8 * 132 (one CTA slot per SM) -> 1 split; without the parts
  // (64 CTAs) it would have split.
  for (const DeviceInfo& dev : {kSm80, kH100}) {
    const FwdPlan plan = make_plan(dense(1, 512, 512, 8, 8, 512), dev);
    EXPECT_EQ(plan.family, FwdKernelFamily::kSm80Prefill) << dev.cc_major;
    EXPECT_EQ(plan.kernel_head_dim, 512);
    EXPECT_EQ(plan.sm90_head_dim, 0);  // the Hopper d512 kernel only where asked (below)
    EXPECT_EQ(plan.kernel_head_dim_v, 256);
    EXPECT_EQ(plan.v_parts, 2);
    EXPECT_EQ(plan.p.head_dim_v, 512);  // resolved from 0: the kernels read it as is
    EXPECT_EQ(plan.tile.block_m, 64);
    EXPECT_EQ(plan.tile.block_n, 32);
    EXPECT_EQ(plan.tile.ctas_per_sm, 1);
    EXPECT_TRUE(plan.sm80_swizzled);
    EXPECT_EQ(plan.num_splits, 1);
  }
  EXPECT_GT(num_splits_heuristic(64, kH100Sms, 16, 128), 1);
  // Head dims 264..511 run on the same instance, also in two parts.
  const FwdPlan d264 = make_plan(dense(1, 512, 512, 8, 8, 264), kH100);
  EXPECT_EQ(d264.kernel_head_dim, 512);
  EXPECT_EQ(d264.v_parts, 2);
  // Decode shapes: no d512 decode kernel, the prefill kernel takes them. 1 query row, 8 heads,
  // 4096 keys: m_blocks 1, 1 * 8 * 1 * 2 = 16 CTAs over 132 slots, 4096 / 32 = 128 key blocks.
  const FwdPlan dec = make_plan(dense(1, 1, 4096, 8, 8, 512), kH100);
  EXPECT_EQ(dec.family, FwdKernelFamily::kSm80Prefill);
  EXPECT_EQ(dec.v_parts, 2);
  EXPECT_EQ(dec.num_splits, num_splits_heuristic(16, kH100Sms, 128, 128));
  EXPECT_GT(dec.num_splits, 1);
  // Split accumulators of 512 columns: rows 1 * 8 * 1.
  EXPECT_EQ(dec.lse_accum_offset, size_t(dec.num_splits) * 8 * 512 * 4);
  // A100 (163 KB): the swizzled tile (112.1 KB) fits; 99 KB parts have no d512 kernel.
  const DeviceInfo a100{8, 0, 108, 163 * 1024};
  EXPECT_TRUE(make_plan(dense(1, 512, 512, 8, 8, 512), a100).sm80_swizzled);
  const DeviceInfo sm89{8, 9, 128, 99 * 1024};
  EXPECT_EQ(make_plan(dense(1, 512, 512, 8, 8, 512), sm89).family, FwdKernelFamily::kNone);
  // Every other head dim runs one part.
  for (int d : {32, 64, 128, 256})
    EXPECT_EQ(make_plan(dense(1, 512, 512, 8, 8, d), kH100).v_parts, 1) << d;
}

// p over a block table (never read by the planner) of pages of 256 rows.
flare_mha_fwd_params paged256(flare_mha_fwd_params p) {
  static int table[4] = {};
  p.block_table = table;
  p.page_block_size = 256;
  return p;
}

TEST(PlanForward, HeadDim512OnHopperWhereAsked) {
  // Sm90Overrides::d512 = 1: head dims 257..512 take the warp-specialised d512 kernel on
  // compute capability 9.0: one 64-row tile whose two consumer warpgroups split O's 512
  // columns (one V part), 32-key blocks, in clusters of two CTAs (one tile each: no tile
  // counter in the workspace).
  Tuning t;
  t.sm90.d512 = 1;
  for (int d : {264, 320, 504, 512}) {
    flare_mha_fwd_params p = dense(1, 512, 512, 8, 8, d);
    const FwdPlan plan = make_plan(p, kH100, t);
    EXPECT_EQ(plan.family, FwdKernelFamily::kSm90WarpSpecialized) << d;
    EXPECT_EQ(plan.sm90_head_dim, 512) << d;
    EXPECT_EQ(plan.kernel_head_dim_v, 512) << d;
    EXPECT_EQ(plan.v_parts, 1) << d;
    EXPECT_EQ(plan.tile.block_m, 64) << d;
    EXPECT_EQ(plan.tile.block_n, 32) << d;
    EXPECT_EQ(plan.sm90.consumer_wgs, 2) << d;
    EXPECT_EQ(plan.sm90.cluster_m, 2) << d;
    EXPECT_FALSE(plan.sm90.persistent) << d;
    EXPECT_EQ(plan.tile_counter_offset, kNoRegion) << d;
    // m_blocks 8, 8 heads: 64 tiles over 132 SMs, 512 / 32 = 16 key blocks.
    EXPECT_EQ(plan.num_splits, num_splits_heuristic(64, kH100Sms, 16, 128)) << d;
  }
  // Without the override, on other devices, paged (the producer's cp.async fill needs the
  // registers it does not have), with the all-threads kernel forced (none at d512), with the
  // Hopper kernels off, and for decode shapes: the mma.sync d512 kernel in two V parts.
  EXPECT_EQ(make_plan(dense(1, 512, 512, 8, 8, 512), kH100).sm90_head_dim, 0);
  EXPECT_EQ(make_plan(dense(1, 512, 512, 8, 8, 512), kSm80, t).sm90_head_dim, 0);
  EXPECT_FALSE(flare::sm90_d512_applies(paged256(dense(1, 512, 512, 8, 8, 512)), t.sm90));
  Tuning all_threads = t;
  all_threads.sm90.warp_specialized = 0;
  Tuning sm80_path = t;
  sm80_path.hopper_kernels = false;
  for (const Tuning& other : {all_threads, sm80_path}) {
    const FwdPlan plan = make_plan(dense(1, 512, 512, 8, 8, 512), kH100, other);
    EXPECT_EQ(plan.family, FwdKernelFamily::kSm80Prefill);
    EXPECT_EQ(plan.v_parts, 2);
  }
  EXPECT_EQ(make_plan(dense(1, 1, 4096, 8, 8, 512), kH100, t).family, FwdKernelFamily::kSm80Prefill);
  // A build without the instance keeps the mma.sync kernel.
  flare::KernelSet none;
  none.sm90[FLARE_DTYPE_BF16][3] = false;
  flare_mha_fwd_params bf16 = dense(1, 512, 512, 8, 8, 512);
  bf16.dtype = FLARE_DTYPE_BF16;
  EXPECT_EQ(flare::plan_forward(bf16, kH100, t, none).sm90_head_dim, 0);
  EXPECT_EQ(flare::plan_forward(bf16, kH100, t).sm90_head_dim, 512);
}

TEST(PlanForward, HeadDim192OnItsOwnHopperKernelWhereAsked) {
  // By default head dims 136..192 run on the Hopper d256 kernel, padded; Sm90Overrides::d192 = 1
  // takes the d192 kernel (warp-specialised, 80-key blocks), the (192, 128) pair included.
  Tuning t;
  t.sm90.d192 = 1;
  for (int d : {144, 192}) {
    EXPECT_EQ(make_plan(dense(1, 1024, 1024, 16, 16, d), kH100).sm90_head_dim, 256) << d;
    const FwdPlan plan = make_plan(dense(1, 1024, 1024, 16, 16, d), kH100, t);
    EXPECT_EQ(plan.family, FwdKernelFamily::kSm90WarpSpecialized) << d;
    EXPECT_EQ(plan.sm90_head_dim, 192) << d;
    EXPECT_EQ(plan.kernel_head_dim_v, 192) << d;
    EXPECT_EQ(plan.tile.block_m, 128) << d;
    EXPECT_EQ(plan.tile.block_n, 80) << d;
  }
  flare_mha_fwd_params dv = dense(1, 1024, 1024, 16, 16, 192);
  dv.head_dim_v = 128;
  dv.v_head_stride = 128;
  dv.v_row_stride = dv.out_row_stride = 16 * 128;
  dv.v_batch_stride = dv.out_batch_stride = int64_t(1024) * 16 * 128;
  dv.out_head_stride = 128;
  EXPECT_EQ(make_plan(dv, kH100, t).sm90_head_dim, 192);
  EXPECT_EQ(make_plan(dv, kH100, t).v_parts, 1);
  // Paged and all-threads launches keep the d256 kernel (the d192 kernel has no all-threads
  // structure), as does a build without the instance.
  EXPECT_FALSE(flare::sm90_d192_applies(paged256(dense(1, 1024, 1024, 16, 16, 192)), t.sm90));
  Tuning all_threads = t;
  all_threads.sm90.warp_specialized = 0;
  EXPECT_EQ(make_plan(dense(1, 1024, 1024, 16, 16, 192), kH100, all_threads).sm90_head_dim, 256);
  flare::KernelSet no192;
  no192.sm90[FLARE_DTYPE_FP16][4] = false;
  EXPECT_EQ(flare::plan_forward(dense(1, 1024, 1024, 16, 16, 192), kH100, t, no192).sm90_head_dim,
            256);
  EXPECT_FALSE(flare::sm90_has_all_threads_kernel(192));
  EXPECT_FALSE(flare::sm90_has_all_threads_kernel(512));
  EXPECT_TRUE(flare::sm90_has_all_threads_kernel(256));
}

TEST(PlanForward, PackedGqaDecodeRowsOnTheDecodeKernelWhereAsked) {
  // MQA decode, 32 query heads over 1 KV head, d128: packed into 32 rows of one KV head. By
  // default more than 16 rows leave the decode kernel (Hopper: the warp-specialised kernel, one
  // 128-row tile); Tuning::decode_packed_rows = 32 keeps them on it as two 16-row blocks.
  flare_mha_fwd_params p = dense(32, 1, 8192, 32, 1, 128);
  const FwdPlan by_default = make_plan(p, kH100);
  EXPECT_TRUE(by_default.packed_gqa);
  EXPECT_EQ(by_default.max_seqlen_q, 32);
  EXPECT_EQ(by_default.family, FwdKernelFamily::kSm90WarpSpecialized);
  Tuning t;
  t.decode_packed_rows = 32;
  for (const DeviceInfo& dev : {kH100, kSm80}) {
    const FwdPlan plan = make_plan(p, dev, t);
    EXPECT_EQ(plan.family, FwdKernelFamily::kSm80Decode) << dev.cc_major;
    EXPECT_EQ(plan.tile.block_m, 16);
    // m_blocks 2 x 32 batches = 64 CTAs over 132 slots, 8192 / block_n key blocks.
    EXPECT_EQ(plan.num_splits,
              num_splits_heuristic(64, kH100Sms, 8192 / plan.tile.block_n, 128));
  }
  // Unpacked launches of more than 16 rows (a 32-row prefill chunk) are not decode shapes.
  EXPECT_NE(make_plan(dense(1, 32, 8192, 8, 8, 128), kH100, t).family,
            FwdKernelFamily::kSm80Decode);
  // 64 packed rows stay off it unless asked for that many.
  const flare_mha_fwd_params p64 = dense(4, 1, 4096, 64, 1, 128);
  EXPECT_NE(make_plan(p64, kH100, t).family, FwdKernelFamily::kSm80Decode);
  t.decode_packed_rows = 64;
  EXPECT_EQ(make_plan(p64, kH100, t).family, FwdKernelFamily::kSm80Decode);
}

TEST(PlanForward, SeparateVHeadDim) {
  // (192, 128): the kernel of the QK head dim loads V with 128 valid columns; one part. The
  // split accumulators hold 128 columns: forced 4 splits, rows 1 * 8 * 512, o_accum 4 * 4096 *
  // 128 * 4 bytes.
  flare_mha_fwd_params p = dense(1, 512, 512, 8, 8, 192);
  p.head_dim_v = 128;
  p.num_splits = 4;
  const FwdPlan m = make_plan(p);
  EXPECT_EQ(m.p.head_dim_v, 128);
  EXPECT_EQ(m.family, FwdKernelFamily::kSm80Prefill);
  EXPECT_EQ(m.kernel_head_dim, 192);
  EXPECT_EQ(m.kernel_head_dim_v, 192);
  EXPECT_EQ(m.v_parts, 1);
  EXPECT_EQ(m.num_splits, 4);
  EXPECT_EQ(m.lse_accum_offset, size_t(4) * 4096 * 128 * 4);
  // Hopper: the d256 kernel.
  const FwdPlan h = make_plan(p, kH100);
  EXPECT_TRUE(h.family == FwdKernelFamily::kSm90WarpSpecialized ||
              h.family == FwdKernelFamily::kSm90AllThreads);
  EXPECT_EQ(h.sm90_head_dim, 256);
  EXPECT_EQ(h.kernel_head_dim_v, 256);
  EXPECT_EQ(h.v_parts, 1);
  // Only that kernel bounds V's columns by head_dim_v (the others' loaders use head_dim).
  EXPECT_TRUE(flare::sm90_kernel_has_narrower_v(h.sm90_head_dim));
  EXPECT_FALSE(flare::sm90_kernel_has_narrower_v(64));
  EXPECT_FALSE(flare::sm90_kernel_has_narrower_v(128));
  // Decode shape: the d192 decode kernel.
  flare_mha_fwd_params d = dense(1, 1, 4096, 8, 8, 192);
  d.head_dim_v = 128;
  const FwdPlan dec = make_plan(d, kH100);
  EXPECT_EQ(dec.family, FwdKernelFamily::kSm80Decode);
  EXPECT_EQ(dec.kernel_head_dim_v, 192);
  EXPECT_EQ(dec.v_parts, 1);
}

// ---------------------------------------------------------------------------------------------
// GQA packing

TEST(PlanForward, PacksGqaDecode) {
  // q [2, 1, 32, 128] with 8 KV heads: viewed as [2, 4, 8, 128], row = query head within its
  // group (old head stride), head = KV head (ratio * old head stride).
  flare_mha_fwd_params p = dense(2, 1, 4096, 32, 8, 128);
  p.causal = 1;  // vacuous for a single query row
  const FwdPlan plan = make_plan(p);
  EXPECT_TRUE(plan.packed_gqa);
  EXPECT_EQ(plan.p.seqlen_q, 4);
  EXPECT_EQ(plan.p.num_heads, 8);
  EXPECT_EQ(plan.p.num_heads_k, 8);
  EXPECT_EQ(plan.p.q_row_stride, 128);
  EXPECT_EQ(plan.p.q_head_stride, 512);
  EXPECT_EQ(plan.p.q_batch_stride, 32 * 128);
  EXPECT_EQ(plan.p.out_row_stride, 128);
  EXPECT_EQ(plan.p.out_head_stride, 512);
  EXPECT_EQ(plan.p.causal, 0);
  EXPECT_EQ(plan.p.window_right, -1);
  EXPECT_EQ(plan.max_seqlen_q, 4);
  // The split count sees the packed grid: 2 batches * 8 heads * 1 m-block (decode kernel,
  // block_m 16, one slot per SM), 64 key blocks.
  EXPECT_EQ(plan.num_splits, num_splits_heuristic(16, kH100Sms, 64, 128));
  EXPECT_GE(plan.num_splits, 2);
}

TEST(PlanForward, PacksGqaForKvCacheDecode) {
  flare_mha_fwd_params p = dense(4, 1, 2048, 16, 2, 64);
  p.cache_seqlens = reinterpret_cast<const int32_t*>(uintptr_t(0x400000));
  const FwdPlan plan = make_plan(p);
  EXPECT_TRUE(plan.packed_gqa);
  EXPECT_EQ(plan.p.seqlen_q, 8);
  EXPECT_EQ(plan.p.num_heads, 2);
}

struct NoPackCase {
  const char* name;
  void (*mutate)(flare_mha_fwd_params&);
};

TEST(PlanForward, DoesNotPackGqa) {
  const NoPackCase cases[] = {
      {"alibi", [](flare_mha_fwd_params& p) {
         p.alibi_slopes = reinterpret_cast<const float*>(uintptr_t(0x700000));
       }},
      {"window_left", [](flare_mha_fwd_params& p) { p.window_left = 16; }},
      {"window_right", [](flare_mha_fwd_params& p) { p.window_right = 4; }},
      {"seqlen_q_2", [](flare_mha_fwd_params& p) {
         p.seqlen_q = 2;
         p.q_batch_stride = p.out_batch_stride = 2 * 32 * 128;
       }},
      {"no_gqa", [](flare_mha_fwd_params& p) {
         p.num_heads_k = 32;
         p.k_row_stride = p.v_row_stride = 32 * 128;
       }},
      {"varlen", [](flare_mha_fwd_params& p) {
         p.cu_seqlens_q = reinterpret_cast<const int32_t*>(uintptr_t(0x300000));
         p.cu_seqlens_k = reinterpret_cast<const int32_t*>(uintptr_t(0x300100));
         p.max_seqlen_q = 1;
         p.max_seqlen_k = 4096;
       }},
  };
  for (const NoPackCase& c : cases) {
    flare_mha_fwd_params p = dense(2, 1, 4096, 32, 8, 128);
    c.mutate(p);
    const FwdPlan plan = make_plan(p);
    EXPECT_FALSE(plan.packed_gqa) << c.name;
    EXPECT_EQ(plan.p.num_heads, 32) << c.name;
    EXPECT_EQ(plan.p.seqlen_q, p.seqlen_q) << c.name;
    EXPECT_EQ(plan.p.q_row_stride, p.q_row_stride) << c.name;
    EXPECT_EQ(plan.p.q_head_stride, p.q_head_stride) << c.name;
  }
}

}  // namespace

TEST(TileConfig, WideStepChoice) {
  // d64's 128-key step only where rows see many keys or no causal/window mask.
  EXPECT_EQ(flare::sm80_wide_block_n(64), 128);
  EXPECT_FALSE(flare::sm80_wide_step_pays(64, true, 512));
  EXPECT_FALSE(flare::sm80_wide_step_pays(64, true, 2047));
  EXPECT_TRUE(flare::sm80_wide_step_pays(64, true, 2048));
  EXPECT_TRUE(flare::sm80_wide_step_pays(64, false, 512));
  // d96/d128: the 64-key step everywhere; d32/d192/d256 compile none.
  EXPECT_EQ(flare::sm80_wide_block_n(128), 64);
  EXPECT_TRUE(flare::sm80_wide_step_pays(128, true, 512));
  EXPECT_EQ(flare::sm80_wide_block_n(32), 0);
  EXPECT_EQ(flare::sm80_wide_block_n(192), 0);
  EXPECT_EQ(flare::sm80_wide_block_n(256), 0);
}

TEST(TileConfig, DecodeSharedMemory) {
  // Swizzled (unpadded) K/V rows where a row is whole 128-byte lines; padded rows elsewhere.
  EXPECT_TRUE(flare::sm80_decode_kv_swizzled(128));
  EXPECT_FALSE(flare::sm80_decode_kv_swizzled(96));
  EXPECT_EQ(flare::sm80_decode_smem_bytes(128), 16 * 136 * 2 + 3 * 2 * 64 * 256);
  EXPECT_EQ(flare::sm80_decode_smem_bytes(96), 16 * 104 * 2 + 3 * 2 * 64 * 208);
  EXPECT_EQ(flare::sm80_decode_ctas_per_sm(128), 2);
  EXPECT_EQ(flare::sm80_decode_ctas_per_sm(256), 1);
}

TEST(TileConfig, SharedMemoryFit) {
  using flare::Sm80Kernel;
  using flare::sm80_fitting_kernel;
  constexpr int kH100 = 227 * 1024, kA100 = 163 * 1024, kSm89 = 99 * 1024;
  for (int d : {32, 64, 96, 128, 192, 256}) {
    // H100 and A100 hold every variant: decode shapes take the decode kernel.
    EXPECT_EQ(sm80_fitting_kernel(d, true, kH100), Sm80Kernel::kDecode) << d;
    EXPECT_EQ(sm80_fitting_kernel(d, true, kA100), Sm80Kernel::kDecode) << d;
    EXPECT_EQ(sm80_fitting_kernel(d, false, kA100), Sm80Kernel::kPrefill) << d;
    EXPECT_EQ(sm80_fitting_kernel(d, true, 0), Sm80Kernel::kDecode) << d;  // no known limit
  }
  // 99 KB parts: d128 decode (102.7 KB) falls back to the prefill kernel (52 KB); so do d192 and
  // d256, whose 64-row prefill tiles fit (d256 padded: exactly 99 KB).
  EXPECT_EQ(sm80_fitting_kernel(64, true, kSm89), Sm80Kernel::kDecode);
  EXPECT_EQ(sm80_fitting_kernel(96, true, kSm89), Sm80Kernel::kDecode);
  EXPECT_EQ(sm80_fitting_kernel(128, true, kSm89), Sm80Kernel::kPrefill);
  EXPECT_EQ(sm80_fitting_kernel(128, false, kSm89), Sm80Kernel::kPrefill);
  EXPECT_EQ(sm80_fitting_kernel(192, true, kSm89), Sm80Kernel::kPrefill);
  EXPECT_EQ(sm80_fitting_kernel(256, true, kSm89), Sm80Kernel::kPrefill);
  EXPECT_EQ(sm80_fitting_kernel(256, false, kSm89), Sm80Kernel::kPrefill);
  EXPECT_EQ(flare::sm80_prefill_min_smem_bytes(256), (64 + 2 * 64) * 264 * 2);
  // Below that, nothing fits: the launch is refused before anything is written.
  EXPECT_EQ(sm80_fitting_kernel(256, false, kSm89 - 1024), Sm80Kernel::kNone);
  EXPECT_EQ(sm80_fitting_kernel(192, true, 64 * 1024), Sm80Kernel::kNone);
  EXPECT_EQ(flare::sm80_prefill_min_smem_bytes(128), (128 + 2 * 32) * 136 * 2);
  EXPECT_GT(flare::sm80_decode_smem_bytes(128), kSm89);
  // d512: no decode kernel; its prefill kernel (114 KB padded) fits H100 and A100, not 99 KB.
  EXPECT_EQ(sm80_fitting_kernel(512, true, kH100), Sm80Kernel::kPrefill);
  EXPECT_EQ(sm80_fitting_kernel(512, false, kA100), Sm80Kernel::kPrefill);
  EXPECT_EQ(sm80_fitting_kernel(512, true, kSm89), Sm80Kernel::kNone);
}

// ---------------------------------------------------------------------------------------------
// Kernel family, variant and tile: the planner's choices, and the split count over the plan's
// own tile.

namespace {

bool is_sm90(FwdKernelFamily f) {
  return f == FwdKernelFamily::kSm90WarpSpecialized || f == FwdKernelFamily::kSm90AllThreads;
}

TEST(PlanForward, HopperCountsSplitsWithItsOwnTile) {
  // H100, d128, batch 1, 8 heads, 512 queries and keys: the warp-specialised kernel (two
  // consumer warpgroups at d128), 128 x 128 tiles, one CTA per SM: m_blocks 4, grid 32,
  // n_blocks 4, slots 132 -> max 4, efficiency 32s/132, best at 4 (0.97), 0.85 * 0.97 = 0.82 ->
  // 4 (3: 0.73). The mma.sync tile (128 x 32 keys on the narrow step, two CTAs per SM) would
  // have counted 16 key blocks over 264 slots.
  const FwdPlan plan = make_plan(dense(1, 512, 512, 8, 8, 128), kH100);
  EXPECT_EQ(plan.family, FwdKernelFamily::kSm90WarpSpecialized);
  EXPECT_EQ(plan.sm90_head_dim, 128);
  EXPECT_TRUE(plan.sm90.persistent);
  EXPECT_EQ(plan.tile.block_m, 128);
  EXPECT_EQ(plan.tile.block_n, 128);
  EXPECT_EQ(plan.tile.ctas_per_sm, 1);
  EXPECT_EQ(plan.num_splits, num_splits_heuristic(32, 132, 4, 128));
  EXPECT_EQ(plan.num_splits, 4);
  EXPECT_NE(plan.num_splits, num_splits_heuristic(32, 264, 16, 128));
  EXPECT_EQ(plan.num_sms, kH100Sms);
  EXPECT_TRUE(plan.combine_pdl);
  // Workspace: o_accum 4*8*512*128*4 = 8 MiB at 0, lse 4*8*512*4 = 65536 after it, then the
  // tile counter (256 bytes, aligned).
  const size_t rows = 8 * 512;
  EXPECT_EQ(plan.o_accum_offset, 0u);
  EXPECT_EQ(plan.lse_accum_offset, 4 * rows * 128 * 4);
  EXPECT_EQ(plan.tile_counter_offset, plan.lse_accum_offset + 4 * rows * 4);
  EXPECT_EQ(plan.tile_counter_offset % kWorkspaceAlignment, 0u);
  EXPECT_EQ(plan.workspace_bytes, plan.tile_counter_offset + flare::kSm90TileCounterBytes);
}

TEST(PlanForward, HopperD64ThreeConsumerWarpgroupsTile) {
  // d64, 4096 queries and keys, non-causal: three consumer warpgroups, 192-row tiles, 128-key
  // blocks; the full grid (22 m-blocks x 16 heads x 2) does not split.
  const FwdPlan plan = make_plan(dense(2, 4096, 4096, 16, 16, 64), kH100);
  EXPECT_EQ(plan.family, FwdKernelFamily::kSm90WarpSpecialized);
  EXPECT_EQ(plan.sm90.consumer_wgs, 3);
  EXPECT_EQ(plan.tile.block_m, 192);
  EXPECT_EQ(plan.tile.block_n, 128);
  EXPECT_EQ(plan.num_splits, 1);
  // No split accumulators: the tile counter is the whole workspace.
  EXPECT_EQ(plan.o_accum_offset, kNoRegion);
  EXPECT_EQ(plan.tile_counter_offset, 0u);
  EXPECT_EQ(plan.workspace_bytes, flare::kSm90TileCounterBytes);
}

TEST(PlanForward, HopperWithoutWorkspaceIsNotPersistent) {
  // No workspace: no tile counter, so one CTA per tile, no heuristic split, nothing to allocate.
  flare_mha_fwd_params p = dense(1, 512, 512, 8, 8, 128);
  p.workspace = nullptr;
  const FwdPlan plan = make_plan(p, kH100);
  EXPECT_EQ(plan.family, FwdKernelFamily::kSm90WarpSpecialized);
  EXPECT_FALSE(plan.sm90.persistent);
  EXPECT_EQ(plan.num_splits, 1);
  EXPECT_EQ(plan.tile_counter_offset, kNoRegion);
  EXPECT_EQ(plan.workspace_bytes, 0u);
  // d64 long rows: three warpgroups and the long block need persistence too.
  flare_mha_fwd_params q = dense(2, 4096, 4096, 16, 16, 64);
  q.workspace = nullptr;
  const FwdPlan plan64 = make_plan(q, kH100);
  EXPECT_EQ(plan64.sm90.consumer_wgs, 2);
  EXPECT_EQ(plan64.tile.block_m, 128);
  EXPECT_EQ(plan64.tile.block_n, 128);
}

TEST(PlanForward, HopperAllThreadsAndPagedTiles) {
  Tuning t;
  t.sm90.warp_specialized = 0;
  const FwdPlan a = make_plan(dense(1, 512, 512, 8, 8, 256), kH100, t);
  EXPECT_EQ(a.family, FwdKernelFamily::kSm90AllThreads);
  EXPECT_EQ(a.tile.block_m, 128);
  EXPECT_EQ(a.tile.block_n, 64);
  EXPECT_EQ(a.tile_counter_offset, kNoRegion);
  // Paged d128: warp-specialised; persistent with a tile counter where the call has a
  // workspace, one CTA per tile without one.
  flare_mha_fwd_params p = dense(1, 512, 512, 8, 8, 128);
  p.cache_seqlens = reinterpret_cast<const int32_t*>(uintptr_t(0x400000));
  p.block_table = reinterpret_cast<const int32_t*>(uintptr_t(0x410000));
  p.block_table_batch_stride = 4;
  p.page_block_size = 128;
  p.num_pages = 4;
  const FwdPlan paged = make_plan(p, kH100);
  EXPECT_EQ(paged.family, FwdKernelFamily::kSm90WarpSpecialized);
  EXPECT_EQ(paged.sm90.persistent, p.workspace != nullptr);
  EXPECT_EQ(paged.tile_counter_offset == kNoRegion, p.workspace == nullptr);
  p.workspace = reinterpret_cast<void*>(uintptr_t(0x500000));
  p.workspace_size = size_t(1) << 20;
  const FwdPlan paged_ws = make_plan(p, kH100);
  EXPECT_EQ(paged_ws.family, FwdKernelFamily::kSm90WarpSpecialized);
  EXPECT_TRUE(paged_ws.sm90.persistent);
  EXPECT_NE(paged_ws.tile_counter_offset, kNoRegion);
  EXPECT_EQ(paged_ws.tile.block_n, 128);
  // d256 (80-key blocks of the warp-specialised kernel) and d192 on it.
  const FwdPlan d256 = make_plan(dense(1, 512, 512, 8, 8, 256), kH100);
  EXPECT_EQ(d256.tile.block_n, 80);
  EXPECT_EQ(make_plan(dense(1, 512, 512, 8, 8, 192), kH100).sm90_head_dim, 256);
}

TEST(PlanForward, HopperFamilyOnlyWhereItApplies) {
  // Decode shapes (<= 16 rows) take the mma.sync decode kernel on Hopper too.
  EXPECT_EQ(make_plan(dense(1, 16, 4096, 8, 8, 128), kH100).family,
            FwdKernelFamily::kSm80Decode);
  // d32 has no Hopper kernel.
  EXPECT_EQ(make_plan(dense(1, 512, 512, 8, 8, 32), kH100).family,
            FwdKernelFamily::kSm80Prefill);
  // hopper_kernels = false (FLARE_KERNEL_PATH=sm80 in the tests).
  Tuning sm80;
  sm80.hopper_kernels = false;
  const FwdPlan m = make_plan(dense(1, 512, 512, 8, 8, 128), kH100, sm80);
  EXPECT_EQ(m.family, FwdKernelFamily::kSm80Prefill);
  EXPECT_EQ(m.tile_counter_offset, kNoRegion);
  // A build without the instance.
  flare::KernelSet none;
  none.sm90[FLARE_DTYPE_FP16][1] = false;
  EXPECT_EQ(flare::plan_forward(dense(1, 512, 512, 8, 8, 128), kH100, Tuning{}, none).family,
            FwdKernelFamily::kSm80Prefill);
  EXPECT_TRUE(is_sm90(flare::plan_forward(dense(1, 512, 512, 8, 8, 64), kH100, Tuning{}, none).family));
  // Other compute capabilities never run Hopper kernels.
  for (int major : {8, 10, 12}) {
    const DeviceInfo dev{major, 0, kH100Sms, 227 * 1024};
    EXPECT_FALSE(is_sm90(make_plan(dense(1, 512, 512, 8, 8, 128), dev).family)) << major;
    EXPECT_EQ(make_plan(dense(1, 512, 512, 8, 8, 128), dev).combine_pdl, major >= 9) << major;
  }
  Tuning no_pdl;
  no_pdl.combine_pdl = false;
  EXPECT_FALSE(make_plan(dense(1, 512, 512, 8, 8, 128), kH100, no_pdl).combine_pdl);
}

TEST(PlanForward, Sm80KeyStepAndRows) {
  // d128: the wide 64-key step on swizzled rows; FLARE_SM80_WIDE=0 / _SWIZZLE=0 equivalents.
  const FwdPlan w = make_plan(dense(1, 512, 512, 8, 8, 128));
  EXPECT_EQ(w.family, FwdKernelFamily::kSm80Prefill);
  EXPECT_EQ(w.tile.block_m, 128);
  EXPECT_EQ(w.tile.block_n, 64);
  EXPECT_TRUE(w.sm80_swizzled);
  Tuning narrow;
  narrow.sm80_wide = false;
  EXPECT_EQ(make_plan(dense(1, 512, 512, 8, 8, 128), kSm80, narrow).tile.block_n, 32);
  Tuning padded;
  padded.sm80_swizzle = false;
  EXPECT_FALSE(make_plan(dense(1, 512, 512, 8, 8, 128), kSm80, padded).sm80_swizzled);
  // d96: wide, never swizzled (rows are not whole 128-byte lines).
  const FwdPlan d96 = make_plan(dense(1, 512, 512, 8, 8, 96));
  EXPECT_EQ(d96.tile.block_n, 64);
  EXPECT_FALSE(d96.sm80_swizzled);
  // d64 causal at 512 keys keeps the tile's 64-key step (sm80_wide_step_pays).
  flare_mha_fwd_params causal = dense(1, 512, 512, 8, 8, 64);
  causal.causal = 1;
  EXPECT_EQ(make_plan(causal).tile.block_n, 64);
  // d256: no wide step, 64 x 64 tiles.
  const FwdPlan d256 = make_plan(dense(1, 512, 512, 8, 8, 256));
  EXPECT_EQ(d256.tile.block_m, 64);
  EXPECT_EQ(d256.tile.block_n, 64);
}

TEST(PlanForward, Sm80SharedMemoryLimits) {
  // 99 KB parts: d128 decode (102.7 KB) falls back to the prefill kernel; the limit can be
  // emulated through Tuning (FLARE_SMEM_LIMIT_KB) on a larger device.
  const DeviceInfo sm89{8, 9, 128, 99 * 1024};
  EXPECT_EQ(make_plan(dense(1, 1, 4096, 8, 8, 128), sm89).family,
            FwdKernelFamily::kSm80Prefill);
  Tuning limit;
  limit.smem_limit_bytes = 99 * 1024;
  EXPECT_EQ(make_plan(dense(1, 1, 4096, 8, 8, 128), kSm80, limit).family,
            FwdKernelFamily::kSm80Prefill);
  EXPECT_EQ(make_plan(dense(1, 1, 4096, 8, 8, 128)).family, FwdKernelFamily::kSm80Decode);
  // d256 on 99 KB: the 64-row prefill fits, swizzled (192 rows x 512 bytes + 128 = 98432).
  const FwdPlan d256 = make_plan(dense(1, 512, 512, 8, 8, 256), sm89);
  EXPECT_EQ(d256.family, FwdKernelFamily::kSm80Prefill);
  EXPECT_TRUE(d256.sm80_swizzled);
  // Below the smallest prefill variant: no kernel (the call is refused).
  const DeviceInfo tiny{8, 0, 16, 64 * 1024};
  EXPECT_EQ(make_plan(dense(1, 512, 512, 8, 8, 256), tiny).family, FwdKernelFamily::kNone);
  // FLARE_SM80_DECODE=0: decode shapes run the prefill kernel.
  Tuning no_decode;
  no_decode.sm80_decode = false;
  EXPECT_EQ(make_plan(dense(1, 1, 4096, 8, 8, 64), kSm80, no_decode).family,
            FwdKernelFamily::kSm80Prefill);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Tuning: the parser the tests and flare_bench use, and a default build that ignores the
// environment.

namespace {

struct EnvVar {
  const char* name;
  const char* value;  // null: unset
};

// The FLARE_* tuning variables, all unset.
const std::initializer_list<EnvVar> kAllUnset = {
    {"FLARE_KERNEL_PATH", nullptr},    {"FLARE_SMEM_LIMIT_KB", nullptr},
    {"FLARE_SM80_DECODE", nullptr},    {"FLARE_SM80_WIDE", nullptr},
    {"FLARE_SM80_SWIZZLE", nullptr},   {"FLARE_COMBINE_PDL", nullptr},
    {"FLARE_SM90_WS", nullptr},        {"FLARE_SM90_PERSISTENT", nullptr},
    {"FLARE_SM90_PINGPONG", nullptr},  {"FLARE_SM90_TMA", nullptr},
    {"FLARE_SM90_TMA_Q", nullptr},     {"FLARE_SM90_BLOCK_N", nullptr},
    {"FLARE_SM90_CONSUMERS", nullptr}};

// Sets (or unsets) the variables for the scope and restores their previous values after it.
class ScopedEnv {
 public:
  explicit ScopedEnv(std::initializer_list<EnvVar> vars) {
    for (const EnvVar& v : vars) {
      const char* old = std::getenv(v.name);
      saved_.push_back({v.name, old != nullptr, old != nullptr ? old : ""});
      if (v.value != nullptr)
        setenv(v.name, v.value, 1);
      else
        unsetenv(v.name);
    }
  }
  ~ScopedEnv() {
    for (const Saved& s : saved_) {
      if (s.was_set)
        setenv(s.name.c_str(), s.value.c_str(), 1);
      else
        unsetenv(s.name.c_str());
    }
  }

 private:
  struct Saved {
    std::string name;
    bool was_set;
    std::string value;
  };
  std::vector<Saved> saved_;
};

TEST(Tuning, ParserReadsEveryVariable) {
  const Tuning defaults;
  {
    ScopedEnv env({{"FLARE_KERNEL_PATH", "sm80"},
                   {"FLARE_SMEM_LIMIT_KB", "99"},
                   {"FLARE_SM80_DECODE", "0"},
                   {"FLARE_SM80_WIDE", "0"},
                   {"FLARE_SM80_SWIZZLE", "0"},
                   {"FLARE_COMBINE_PDL", "0"},
                   {"FLARE_SM90_WS", "1"},
                   {"FLARE_SM90_PERSISTENT", "0"},
                   {"FLARE_SM90_PINGPONG", "0"},
                   {"FLARE_SM90_TMA", "require"},
                   {"FLARE_SM90_TMA_Q", "0"},
                   {"FLARE_SM90_BLOCK_N", "192"},
                   {"FLARE_SM90_CONSUMERS", "3"}});
    const Tuning t = flare::tuning_from_env();
    EXPECT_FALSE(t.hopper_kernels);
    EXPECT_EQ(t.smem_limit_bytes, 99 * 1024);
    EXPECT_FALSE(t.sm80_decode);
    EXPECT_FALSE(t.sm80_wide);
    EXPECT_FALSE(t.sm80_swizzle);
    EXPECT_FALSE(t.combine_pdl);
    EXPECT_EQ(t.sm90.warp_specialized, 1);
    EXPECT_EQ(t.sm90.persistent, 0);
    EXPECT_EQ(t.sm90.pingpong, 0);
    EXPECT_EQ(t.sm90.tma, 2);
    EXPECT_EQ(t.sm90.tma_q, 0);
    EXPECT_EQ(t.sm90.block_n, 192);
    EXPECT_EQ(t.sm90.consumer_wgs, 3);
  }
  // Unset: the defaults.
  ScopedEnv unset(kAllUnset);
  const Tuning u = flare::tuning_from_env();
  EXPECT_EQ(u.hopper_kernels, defaults.hopper_kernels);
  EXPECT_EQ(u.smem_limit_bytes, 0);
  EXPECT_TRUE(u.sm80_decode && u.sm80_wide && u.sm80_swizzle && u.combine_pdl);
  EXPECT_EQ(u.sm90.warp_specialized, -1);
  EXPECT_EQ(u.sm90.tma, -1);
  EXPECT_EQ(u.sm90.consumer_wgs, -1);
  // Other values of FLARE_KERNEL_PATH keep the Hopper kernels.
  ScopedEnv other({{"FLARE_KERNEL_PATH", "sm90"}});
  EXPECT_TRUE(flare::tuning_from_env().hopper_kernels);
}

// A default build plans with Tuning{} whatever the environment says; a FLARE_TUNING build reads
// it at the first plan.
TEST(Tuning, LibraryReadsEnvironmentOnlyInTuningBuilds) {
  ScopedEnv env({{"FLARE_KERNEL_PATH", "sm80"}});
#if defined(FLARE_TUNING_FROM_ENV)
  EXPECT_FALSE(flare::current_tuning().hopper_kernels);
#else
  EXPECT_TRUE(flare::current_tuning().hopper_kernels);
#endif
  // set_tuning replaces it in either build.
  Tuning t;
  t.sm80_wide = false;
  flare::set_tuning(t);
  EXPECT_FALSE(flare::current_tuning().sm80_wide);
  EXPECT_TRUE(flare::current_tuning().hopper_kernels);
  flare::set_tuning(Tuning{});
}

}  // namespace

// FP8 K/V run on the decode kernel's FP8 instances on every device and for any query rows
// (the only kernels that read FP8 codes); d512 has none, and the d256 instance does not fit a
// 99 KB device.
TEST(PlanForward, Fp8KvTakesTheFp8DecodeKernel) {
  auto fp8 = [](flare_mha_fwd_params p) {
    p.kv_dtype = FLARE_DTYPE_E4M3;
    return p;
  };
  for (const DeviceInfo& dev : {kSm80, kH100}) {
    for (int seqlen_q : {1, 16, 17, 512}) {
      const FwdPlan plan = make_plan(fp8(dense(2, seqlen_q, 4096, 32, 8, 128)), dev);
      EXPECT_EQ(plan.family, FwdKernelFamily::kSm80DecodeFp8) << seqlen_q;
      EXPECT_EQ(plan.sm90_head_dim, 0);
      EXPECT_EQ(plan.tile.block_m, 16);
      EXPECT_EQ(plan.tile.block_n, 64);
      EXPECT_GE(plan.num_splits, 1);
    }
  }
  // GQA packing applies as for 16-bit K/V (seqlen_q 1: the 4 query heads of a KV head are rows).
  EXPECT_TRUE(make_plan(fp8(dense(2, 1, 4096, 32, 8, 128)), kH100).packed_gqa);
  EXPECT_EQ(make_plan(fp8(dense(1, 1, 4096, 4, 4, 512)), kH100).family, FwdKernelFamily::kNone);
  const DeviceInfo sm89{8, 9, 128, 99 * 1024};
  EXPECT_EQ(make_plan(fp8(dense(1, 1, 4096, 4, 4, 128)), sm89).family,
            FwdKernelFamily::kSm80DecodeFp8);
  // Every FP8 decode instance fits a 99 KB part (d256: two stages of codes, 80 KB).
  EXPECT_EQ(make_plan(fp8(dense(1, 1, 4096, 4, 4, 256)), sm89).family,
            FwdKernelFamily::kSm80DecodeFp8);
  for (int d : {32, 64, 96, 128, 192, 256})
    EXPECT_LE(flare::sm80_decode_smem_bytes(d, true), 99 * 1024) << d;
  // The kernel's shared memory: Q, the stages of codes, Q's fp16 fragments.
  EXPECT_EQ(flare::sm80_decode_smem_bytes(128, true), 16 * 136 * 2 + 5 * 2 * 64 * 128 + 16 * 128 * 2);
  EXPECT_EQ(flare::sm80_decode_ctas_per_sm(128, true), 2);
}

// The decode kernels' SmallPages instance is the plan's decision: paged K/V with pages under a
// warp's 16-row key group, on the decode families only.
TEST(PlanForward, SmallPagesIsPlanned) {
  auto paged = [](flare_mha_fwd_params p, int page) {
    p.block_table = flare_test::fake_ptr<const int32_t>(0x900000);
    p.page_block_size = page;
    p.block_table_batch_stride = 64;
    return p;
  };
  EXPECT_TRUE(make_plan(paged(dense(2, 1, 4096, 8, 8, 128), 3)).small_pages);
  EXPECT_FALSE(make_plan(paged(dense(2, 1, 4096, 8, 8, 128), 16)).small_pages);
  EXPECT_FALSE(make_plan(dense(2, 1, 4096, 8, 8, 128)).small_pages);
  const FwdPlan prefill = make_plan(paged(dense(2, 512, 4096, 8, 8, 128), 3));
  EXPECT_EQ(prefill.family, FwdKernelFamily::kSm80Prefill);
  EXPECT_FALSE(prefill.small_pages);
  flare_mha_fwd_params fp8 = paged(dense(2, 512, 4096, 8, 8, 128), 1);
  fp8.kv_dtype = FLARE_DTYPE_E4M3;
  EXPECT_TRUE(make_plan(fp8, kH100).small_pages);
}
