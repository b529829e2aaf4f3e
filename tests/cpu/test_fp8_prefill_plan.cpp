// Planning of FP8 prefill (q_dtype e4m3; src/plan/plan.cpp): the Hopper FP8 kernel where the
// build has it (KernelSet::sm90_fp8_prefill, filled by the dispatcher in FLARE_FP8_PREFILL
// builds only) on compute capability 9.0, unpaged, one split, persistent CTAs where a workspace
// holds their tile counter; nothing otherwise
// (flare_mha_fwd then refuses the call with FLARE_ERROR_NOT_SUPPORTED).
#include <gtest/gtest.h>

#include "flare/flare.h"
#include "kernels/sm90/fp8_layout.h"
#include "plan/plan.h"
#include "valid_params.h"

namespace {

using flare::DeviceInfo;
using flare::FwdKernelFamily;
using flare::KernelSet;

constexpr DeviceInfo kH100{9, 0, 132, 227 * 1024};
constexpr DeviceInfo kA100{8, 0, 108, 163 * 1024};

// q, k, v e4m3 [2, 1000, 8 / 2, head_dim], out bf16, per-tensor descales (never read here).
flare_mha_fwd_params fp8_prefill(int head_dim) {
  flare_mha_fwd_params p = flare_test::dense_fp16_params(2, 1000, 1000, 8, 2, head_dim);
  p.dtype = FLARE_DTYPE_BF16;
  p.q_dtype = p.kv_dtype = FLARE_DTYPE_E4M3;
  p.q_descale = p.k_descale = p.v_descale = reinterpret_cast<const float*>(0x710000);
  p.workspace = reinterpret_cast<void*>(0x800000);
  p.workspace_size = 1 << 20;
  return p;
}

KernelSet with_fp8_prefill() {
  KernelSet k;
  for (auto& dt : k.sm90_fp8_prefill)
    for (bool& b : dt) b = true;
  return k;
}

TEST(Fp8PrefillPlan, HopperWithTheKernelPicksIt) {
  for (int d : {48, 64, 80, 128, 192, 256}) {
    const flare::FwdPlan plan =
        flare::plan_forward(fp8_prefill(d), kH100, flare::Tuning{}, with_fp8_prefill());
    EXPECT_EQ(plan.family, FwdKernelFamily::kSm90Fp8Prefill) << d;
    const int kd = d <= 64 ? 64 : d <= 128 ? 128 : 256;
    EXPECT_EQ(plan.sm90_head_dim, kd) << d;
    EXPECT_EQ(plan.tile.block_m, flare::sm90::kSm90Fp8BlockM) << d;
    EXPECT_EQ(plan.tile.block_n, flare::sm90::sm90_fp8_block_n(kd)) << d;
    EXPECT_EQ(plan.num_splits, 1) << d;  // even with a workspace the heuristic could use
    EXPECT_EQ(plan.v_parts, 1) << d;
    // The warp-specialised kernel's FP8 instance: persistent CTAs (the tile counter is the
    // workspace), ping-pong, no TMA unless asked (below).
    EXPECT_EQ(plan.workspace_bytes, flare::kSm90TileCounterBytes) << d;
    EXPECT_EQ(plan.tile_counter_offset, 0u) << d;
    EXPECT_TRUE(plan.sm90.warp_specialized) << d;
    EXPECT_TRUE(plan.sm90.pingpong) << d;
    EXPECT_TRUE(plan.sm90.persistent) << d;
    EXPECT_EQ(plan.sm90.tma, flare::TmaMode::kOff) << d;
    EXPECT_EQ(plan.sm90.block_n, plan.tile.block_n) << d;
  }
  // Without a workspace: one CTA per tile, nothing asked of the caller.
  flare_mha_fwd_params no_ws = fp8_prefill(128);
  no_ws.workspace = nullptr;
  no_ws.workspace_size = 0;
  const flare::FwdPlan bare = flare::plan_forward(no_ws, kH100, flare::Tuning{}, with_fp8_prefill());
  EXPECT_FALSE(bare.sm90.persistent);
  EXPECT_EQ(bare.workspace_bytes, 0u);
  // Sm90Overrides::warp_specialized = 0: the all-threads FP8 kernel, no ping-pong.
  flare::Tuning all_threads;
  all_threads.sm90.warp_specialized = 0;
  const flare::FwdPlan plan =
      flare::plan_forward(fp8_prefill(128), kH100, all_threads, with_fp8_prefill());
  EXPECT_EQ(plan.family, FwdKernelFamily::kSm90Fp8Prefill);
  EXPECT_FALSE(plan.sm90.warp_specialized);
  EXPECT_FALSE(plan.sm90.pingpong);
  EXPECT_EQ(plan.sm90.tma, flare::TmaMode::kOff);
  // Sm90Overrides::tma = 1: Q, K and V's staging rows by TMA on the warp-specialised kernel
  // (tma_q follows unless set), never on the all-threads one.
  flare::Tuning tma;
  tma.sm90.tma = 1;
  const flare::FwdPlan by_tma =
      flare::plan_forward(fp8_prefill(128), kH100, tma, with_fp8_prefill());
  EXPECT_EQ(by_tma.sm90.tma, flare::TmaMode::kOn);
  EXPECT_EQ(by_tma.sm90.tma_q, flare::TmaMode::kOn);
  tma.sm90.tma_q = 0;
  EXPECT_EQ(flare::plan_forward(fp8_prefill(128), kH100, tma, with_fp8_prefill()).sm90.tma_q,
            flare::TmaMode::kOff);
  tma.sm90.warp_specialized = 0;
  EXPECT_EQ(flare::plan_forward(fp8_prefill(128), kH100, tma, with_fp8_prefill()).sm90.tma,
            flare::TmaMode::kOff);
}

TEST(Fp8PrefillPlan, NothingElseTakesFp8Q) {
  const flare_mha_fwd_params p = fp8_prefill(128);
  // The default KernelSet (a build without FLARE_FP8_PREFILL), another architecture, d32.
  EXPECT_EQ(flare::plan_forward(p, kH100).family, FwdKernelFamily::kNone);
  EXPECT_EQ(flare::plan_forward(p, kA100, flare::Tuning{}, with_fp8_prefill()).family,
            FwdKernelFamily::kNone);
  EXPECT_EQ(flare::plan_forward(p, DeviceInfo{9, 1, 132, 227 * 1024}, flare::Tuning{},
                                with_fp8_prefill())
                .family,
            FwdKernelFamily::kNone);
  EXPECT_EQ(flare::plan_forward(fp8_prefill(32), kH100, flare::Tuning{}, with_fp8_prefill()).family,
            FwdKernelFamily::kNone);
  // Only the out dtype's instances count.
  KernelSet fp16_only;
  for (bool& b : fp16_only.sm90_fp8_prefill[FLARE_DTYPE_FP16]) b = true;
  EXPECT_EQ(flare::plan_forward(p, kH100, flare::Tuning{}, fp16_only).family,
            FwdKernelFamily::kNone);
}

// FP8 K/V with a 16-bit q still take the decode kernel's FP8 instances, kernel or not.
TEST(Fp8PrefillPlan, Fp8KvAloneIsUnchanged) {
  flare_mha_fwd_params p = fp8_prefill(128);
  p.q_dtype = 0;
  p.q_descale = nullptr;
  EXPECT_EQ(flare::plan_forward(p, kH100, flare::Tuning{}, with_fp8_prefill()).family,
            FwdKernelFamily::kSm80DecodeFp8);
}

}  // namespace
