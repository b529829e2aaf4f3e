#include "plan/plan.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/sequence.h"
#include "common/tile_config.h"

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

}  // namespace

FwdPlan plan_forward(const flare_mha_fwd_params& in, int num_sms) {
  FwdPlan plan{};
  plan.p = in;
  flare_mha_fwd_params& p = plan.p;
  if (p.softmax_scale == 0.f) p.softmax_scale = effective_scale(p);
  plan.kernel_head_dim = padded_head_dim(p.head_dim);
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
  plan.max_seqlen_q = is_varlen(p) ? p.max_seqlen_q : p.seqlen_q;

  // The tile of the kernel this launch runs (decode or prefill), so block counts and CTA slots
  // match what the kernel does.
  const TileConfig tile = sm80_kernel_tile(plan.kernel_head_dim, plan.max_seqlen_q);
  const int max_seqlen_k = is_varlen(p) ? p.max_seqlen_k
                                            : p.seqlen_k;  // KV cache: the capacity
  // 64-bit: validated lengths are <= 2^30 and batch, heads <= 65535, but their product is not.
  const int64_t m_blocks = (int64_t(plan.max_seqlen_q) + tile.block_m - 1) / tile.block_m;
  const int n_blocks = int((int64_t(max_seqlen_k) + tile.block_n - 1) / tile.block_n);
  if (p.num_splits > 0) {
    plan.num_splits = std::min(p.num_splits, std::max(1, n_blocks));
  } else {
    // FA2's rule over CTA slots. Prefill: resident CTAs per SM of the kernel that runs. Decode
    // kernel: one per SM (sm80_decode_split_slots_per_sm): it streams K/V at DRAM speed, so a
    // second resident CTA adds no bandwidth, only more partial rows and combine work.
    const int per_sm = sm80_use_decode_kernel(plan.max_seqlen_q) ? sm80_decode_split_slots_per_sm()
                                                                 : tile.ctas_per_sm;
    const int64_t slots = int64_t(std::max(num_sms, 1)) * per_sm;
    const int64_t blocks = int64_t(p.batch) * p.num_heads * m_blocks;
    plan.num_splits = num_splits_heuristic(int(std::min<int64_t>(blocks, 0x7fffffff)),
                                           int(std::min<int64_t>(slots, 0x7fffffff)), n_blocks,
                                           128);
  }
  // The grid's z dimension is batch x splits, at most 65535 (a forced count is lowered).
  plan.num_splits = std::max(1, std::min(plan.num_splits, kMaxGridZ / std::max(1, p.batch)));

  size_t offset = 0;
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
    offset = sat_add_aligned(offset, sat_mul(sat_mul(split_rows, size_t(p.head_dim)), sizeof(float)));
    plan.lse_accum_offset = offset;
    offset = sat_add_aligned(offset, sat_mul(split_rows, sizeof(float)));
  }
  plan.workspace_bytes = offset;
  return plan;
}

}  // namespace flare
