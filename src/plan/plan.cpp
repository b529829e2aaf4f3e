#include "plan/plan.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/fp8_params.h"
#include "common/narrow.h"
#include "common/sequence.h"
#include "common/serving_semantics.h"
#include "common/split.h"
#include "common/tile_config.h"
#include "kernels/sm90/fp8_layout.h"

namespace flare {

int num_splits_heuristic(int batch_nheads_mblocks, int num_sms, int num_n_blocks, int max_splits) {
  if (batch_nheads_mblocks >= 0.8f * num_sms) return 1;
  max_splits = std::min({max_splits, num_sms, num_n_blocks});
  if (max_splits <= 1) return 1;
  auto ceil_div = [](int a, int b) { return (a + b - 1) / b; };
  // A count is worth trying only if it changes the number of key blocks per split.
  auto eligible = [&](int s) {
    return s == 1 || ceil_div(num_n_blocks, s) != ceil_div(num_n_blocks, s - 1);
  };
  std::vector<float> efficiency(max_splits + 1, 0.f);
  float best = 0.f;
  for (int s = 1; s <= max_splits; ++s) {
    if (!eligible(s)) continue;
    const float waves = float(batch_nheads_mblocks) * s / num_sms;
    efficiency[s] = waves / std::ceil(waves);
    best = std::max(best, efficiency[s]);
  }
  for (int s = 1; s <= max_splits; ++s)
    if (eligible(s) && efficiency[s] >= 0.85f * best) return s;
  return 1;
}

namespace {

size_t align_up(size_t x) { return (x + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment; }

// Workspace arithmetic saturates at SIZE_MAX (kWorkspaceUnsatisfiable): a size no allocation
// can meet, instead of a wrapped-around small one that the kernels would overrun.
size_t sat_mul(size_t a, size_t b) {
  size_t r;
  return __builtin_mul_overflow(a, b, &r) ? kWorkspaceUnsatisfiable : r;
}
size_t sat_add_aligned(size_t offset, size_t bytes) {
  size_t r;
  if (offset == kWorkspaceUnsatisfiable || bytes == kWorkspaceUnsatisfiable ||
      __builtin_add_overflow(offset, bytes, &r) || r > kWorkspaceUnsatisfiable - kWorkspaceAlignment)
    return kWorkspaceUnsatisfiable;
  return align_up(r);
}

// seqlen_q == 1 with several query heads per KV head: view q [b, 1, hk*r, d] as [b, r, hk, d]
// so each CTA reads a KV head once for all r query heads. Needs the same mask and bias for
// every packed row, hence no window, no per-head alibi; causal is vacuous for one query row.
bool can_pack_gqa(const flare_mha_fwd_params& p) {
  return p.seqlen_q == 1 && p.num_heads > p.num_heads_k && p.cu_seqlens_q == nullptr &&
         p.alibi_slopes == nullptr && p.window_left < 0 && (p.window_right < 0 || p.causal);
}

// Step 1: the params the kernels see.
void resolve_params(FwdPlan& plan) {
  flare_mha_fwd_params& p = plan.p;
  if (p.softmax_scale == 0.f) p.softmax_scale = effective_scale(p);
  // head_dim_v resolved (never 0): an epilogue reads p.head_dim_v straight from the launch
  // instead of holding v_head_dim's select in a register (the Hopper d256 kernel spilled with it).
  p.head_dim_v = v_head_dim(p);
  plan.rotate_q = p.cache_seqlens && p.k_new && p.rotary_dim > 0;
  if (plan.rotate_q) {
    // The append pass writes the rotated q densely into the workspace; the dispatcher points
    // p.q there.
    p.q_head_stride = p.head_dim;
    p.q_row_stride = int64_t(p.num_heads) * p.head_dim;
    p.q_batch_stride = p.q_row_stride * p.seqlen_q;
  }
  plan.packed_gqa = can_pack_gqa(p);
  if (plan.packed_gqa) {
    const int ratio = p.num_heads / p.num_heads_k;
    p.seqlen_q = ratio;
    p.num_heads = p.num_heads_k;
    p.q_row_stride = p.q_head_stride;
    p.q_head_stride *= ratio;
    p.out_row_stride = p.out_head_stride;
    p.out_head_stride *= ratio;
    p.causal = 0;
    p.window_right = -1;
    if (p.max_seqlen_q) p.max_seqlen_q = ratio;
  }
  plan.max_seqlen_q = max_query_rows(p);
}

// Whether the launch has the decode kernel's shape: at most 16 query rows per (batch, head), or
// a packed GQA decode of at most Tuning::decode_packed_rows rows (several 16-row blocks).
bool decode_shape(const FwdPlan& plan, const Tuning& t) {
  return sm80_use_decode_kernel(plan.max_seqlen_q) ||
         (plan.packed_gqa && plan.max_seqlen_q <= t.decode_packed_rows);
}

// Step 2, mma.sync family: the decode kernel where it is enabled and fits, else the prefill
// kernel with the wide key step where it pays and fits, swizzled rows where the head dim allows
// and they fit.
void choose_sm80(FwdPlan& plan, int smem_optin, const Tuning& t) {
  const int d = plan.kernel_head_dim;
  auto fits = [smem_optin](int bytes) { return smem_fits(bytes, smem_optin); };
  // FP8 K/V: the decode kernel's FP8 instances, whatever the query rows (the only kernels that
  // read FP8 codes).
  if (has_fp8_kv(plan.p)) {
    if (!sm80_has_decode_kernel(d) || !fits(sm80_decode_smem_bytes(d, true))) {
      plan.family = FwdKernelFamily::kNone;
      return;
    }
    plan.family = FwdKernelFamily::kSm80DecodeFp8;
    plan.tile = {kSm80DecodeMaxRows, sm80_decode_tile_config(d, true).block_n,
                 sm80_decode_split_slots_per_sm()};
    return;
  }
  const Sm80Kernel fitting = sm80_fitting_kernel(d, decode_shape(plan, t), smem_optin);
  if (fitting == Sm80Kernel::kNone) {
    plan.family = FwdKernelFamily::kNone;
    return;
  }
  if (t.sm80_decode && fitting == Sm80Kernel::kDecode) {
    const TileConfig c = sm80_decode_tile_config(d);
    plan.family = FwdKernelFamily::kSm80Decode;
    // The decode kernel streams K/V at DRAM speed: the heuristic counts one CTA per SM
    // (sm80_decode_split_slots_per_sm) although more fit.
    plan.tile = {c.block_m, c.block_n, sm80_decode_split_slots_per_sm()};
    return;
  }
  const TileConfig c = sm80_tile_config(d);
  plan.family = FwdKernelFamily::kSm80Prefill;
  plan.tile = {c.block_m, c.block_n, c.ctas_per_sm};
  const bool can_swizzle = t.sm80_swizzle && d % 64 == 0;
  const flare_mha_fwd_params& p = plan.p;
  const int wide_n = sm80_wide_block_n(d);
  const bool masked = p.causal != 0 || p.window_left >= 0 || p.window_right >= 0;
  const int max_keys = max_key_rows(p);
  if (wide_n != 0 && t.sm80_wide && sm80_wide_step_pays(d, masked, max_keys) &&
      fits(sm80_prefill_smem_bytes(d, c.block_m, wide_n, true, false))) {
    plan.tile.block_n = wide_n;
    plan.sm80_swizzled = can_swizzle && fits(sm80_prefill_smem_bytes(d, c.block_m, wide_n, true, true));
    return;
  }
  plan.sm80_swizzled = can_swizzle && fits(sm80_prefill_smem_bytes(d, c.block_m, c.block_n, false, true));
}

// Step 2, Hopper: the variant, and with it the tile.
void choose_sm90(FwdPlan& plan, const Tuning& t) {
  Sm90Overrides o = t.sm90;
  // Persistent tiles take their tickets from a counter in the workspace.
  if (plan.p.workspace == nullptr) o.persistent = 0;
  plan.sm90 = choose_sm90_variant(plan.p, plan.sm90_head_dim, o);
  if (plan.sm90.warp_specialized) {
    plan.family = FwdKernelFamily::kSm90WarpSpecialized;
    plan.tile = {sm90_ws_block_m(plan.sm90_head_dim, plan.sm90.consumer_wgs),
                 plan.sm90.block_n, kSm90CtasPerSm};
  } else {
    plan.family = FwdKernelFamily::kSm90AllThreads;
    plan.tile = {kSm90AllThreadsBlockM, sm90_all_threads_block_n(plan.sm90_head_dim),
                 kSm90CtasPerSm};
  }
}

// Step 3: the split count over the plan's own tile.
int choose_splits(const FwdPlan& plan, int num_sms) {
  const flare_mha_fwd_params& p = plan.p;
  const int max_seqlen_k = max_key_rows(p);
  // 64-bit: validated lengths are <= 2^30 and batch, heads <= 65535, but their product is not.
  const int64_t m_blocks = (int64_t(plan.max_seqlen_q) + plan.tile.block_m - 1) / plan.tile.block_m;
  const int n_blocks = int((int64_t(max_seqlen_k) + plan.tile.block_n - 1) / plan.tile.block_n);
  int splits;
  if (p.num_splits > 0) {
    splits = std::min(p.num_splits, std::max(1, n_blocks));
  } else if (p.workspace == nullptr) {
    splits = 1;  // the heuristic never asks for memory the caller did not offer
  } else {
    const int64_t slots = int64_t(std::max(num_sms, 1)) * plan.tile.ctas_per_sm;
    // Every V column part is a CTA of its own.
    const int64_t blocks = int64_t(p.batch) * p.num_heads * m_blocks * plan.v_parts;
    splits = num_splits_heuristic(int(std::min<int64_t>(blocks, 0x7fffffff)),
                                  int(std::min<int64_t>(slots, 0x7fffffff)), n_blocks, 128);
  }
  // The grid's z dimension is batch x splits, at most 65535 (a forced count is lowered).
  return std::max(1, std::min(splits, kMaxGridZ / std::max(1, p.batch)));
}

// Step 4: the workspace layout, each region 256-byte aligned.
void lay_out_workspace(FwdPlan& plan) {
  const flare_mha_fwd_params& p = plan.p;
  size_t offset = 0;
  plan.q_rot_offset = plan.o_accum_offset = plan.lse_accum_offset = kNoRegion;
  plan.tile_counter_offset = kNoRegion;
  if (plan.rotate_q) {
    const size_t es = 2;
    plan.q_rot_offset = offset;
    offset = sat_add_aligned(
        offset, sat_mul(sat_mul(sat_mul(size_t(p.batch), size_t(p.seqlen_q)),
                                sat_mul(size_t(p.num_heads), size_t(p.head_dim))), es));
  }
  if (plan.num_splits > 1) {
    const size_t rows = sat_mul(sat_mul(size_t(p.batch), size_t(p.num_heads)),
                                size_t(plan.max_seqlen_q));
    const size_t split_rows = sat_mul(size_t(plan.num_splits), rows);
    plan.o_accum_offset = offset;
    const size_t row_floats = size_t(split_accum_row_floats(v_head_dim(p)));
    offset = sat_add_aligned(offset, sat_mul(sat_mul(split_rows, row_floats), sizeof(float)));
    plan.lse_accum_offset = offset;
    offset = sat_add_aligned(offset, sat_mul(split_rows, sizeof(float)));
  }
  if ((plan.family == FwdKernelFamily::kSm90WarpSpecialized ||
       plan.family == FwdKernelFamily::kSm90Fp8Prefill) &&
      plan.sm90.persistent) {
    plan.tile_counter_offset = offset;
    offset = sat_add_aligned(offset, kSm90TileCounterBytes);
  }
  plan.workspace_bytes = offset;
}

}  // namespace

FwdPlan plan_forward(const flare_mha_fwd_params& in, const DeviceInfo& device,
                     const Tuning& tuning, const KernelSet& kernels) {
  FwdPlan plan{};
  plan.p = in;
  plan.kernel_head_dim = padded_head_dim(in.head_dim);
  plan.num_sms = device.num_sms;
  plan.combine_pdl = tuning.combine_pdl && device.cc_major >= 9;
  plan.narrow = is_narrow(in);
  resolve_params(plan);

  // Hopper kernels run on compute capability 9.0 (sm_90a code runs there only) where this build
  // has the instance; decode shapes (decode_shape) take the mma.sync decode kernel there too.
  // Head dims above 256 run the Hopper d512 kernel where sm90_d512_applies, else the mma.sync
  // d512 kernel. Narrow launches take the mma.sync family: the Hopper producer moves
  // K/V by TMA or 16-byte cp.async only (common/narrow.h). FP8 K/V take the decode kernel's FP8
  // instances everywhere.
  const int sm90_hd = sm90_kernel_head_dim(plan.kernel_head_dim);
  // 16-bit head dim 192 (the (192, 128) pair included) on the d192 kernel where
  // sm90_d192_applies and the build has it; else on the d256 kernel, padded.
  const int sm90_hd16 = plan.kernel_head_dim == 192 && sm90_d192_applies(in, tuning.sm90) &&
                                kernels.has_sm90(in.dtype, 192)
                            ? 192
                            : sm90_hd;
  const bool hopper = device.cc_major == 9 && tuning.hopper_kernels &&
                      sm90_hd16 != 0 && kernels.has_sm90(in.dtype, sm90_hd16) &&
                      (sm90_hd16 != 512 || sm90_d512_applies(in, tuning.sm90)) &&
                      !decode_shape(plan, tuning) && !plan.narrow &&
                      !has_fp8_kv(in);
  if (has_fp8_q(in)) {
    // FP8 q: the Hopper FP8 prefill kernel on compute capability 9.0 where this build has it
    // (FLARE_FP8_PREFILL), unpaged, one split; nothing else reads FP8 q.
    if (device.cc_major == 9 && device.cc_minor == 0 && sm90_hd != 0 &&
        kernels.has_sm90_fp8_prefill(in.dtype, sm90_hd) && !is_paged(in)) {
      plan.sm90_head_dim = sm90_hd;
      plan.family = FwdKernelFamily::kSm90Fp8Prefill;
      Sm90Overrides o = tuning.sm90;
      if (plan.p.workspace == nullptr) o.persistent = 0;  // no room for the tile counter
      plan.sm90 = choose_sm90_fp8_variant(sm90_hd, o);
      plan.tile = {sm90::kSm90Fp8BlockM, plan.sm90.block_n, 1};
    } else {
      plan.family = FwdKernelFamily::kNone;
    }
  } else if (hopper) {
    plan.sm90_head_dim = sm90_hd16;
    choose_sm90(plan, tuning);
  } else {
    int smem = device.smem_optin;
    if (tuning.smem_limit_bytes > 0 && (smem <= 0 || tuning.smem_limit_bytes < smem))
      smem = tuning.smem_limit_bytes;
    choose_sm80(plan, smem, tuning);
  }
  plan.small_pages = (plan.family == FwdKernelFamily::kSm80Decode ||
                      plan.family == FwdKernelFamily::kSm80DecodeFp8) &&
                     sm80_decode_small_pages(is_paged(plan.p), plan.p.page_block_size);
  plan.kernel_head_dim_v =
      plan.sm90_head_dim != 0 ? plan.sm90_head_dim : sm80_kernel_head_dim_v(plan.kernel_head_dim);
  plan.v_parts = v_column_parts(v_head_dim(plan.p), plan.kernel_head_dim_v);
  plan.num_splits = plan.family == FwdKernelFamily::kNone ||
                            plan.family == FwdKernelFamily::kSm90Fp8Prefill
                        ? 1
                        : choose_splits(plan, device.num_sms);
  lay_out_workspace(plan);
  return plan;
}

}  // namespace flare
