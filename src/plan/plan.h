// Planning a forward call: kernel head dim, GQA packing, split count, workspace layout.
#pragma once
#include <cstddef>
#include "flare/flare.h"

namespace flare {

// FlashAttention-2's occupancy rule: the smallest split count whose wave efficiency is within
// 85% of the best, among counts that change the blocks per split; 1 when the grid already fills
// 80% of the SMs. `num_sms` counts CTA slots (SMs x CTAs per SM).
int num_splits_heuristic(int batch_nheads_mblocks, int num_sms, int num_n_blocks, int max_splits);

struct FwdPlan {
  flare_mha_fwd_params p;  // the params the kernels see (GQA packing applied)
  int kernel_head_dim;     // compiled head dim the call runs on (head_dim padded up)
  bool packed_gqa;         // seqlen_q == 1 decode: the query heads of a KV head became rows
  bool rotate_q;           // KV cache with rotary: q is rotated into the workspace
  int num_splits;
  int max_seqlen_q;        // rows per (batch, head) in the split accumulators
  size_t q_rot_offset, o_accum_offset, lse_accum_offset;  // byte offsets in the workspace
  size_t workspace_bytes;  // kWorkspaceUnsatisfiable when it overflows size_t
};

constexpr size_t kWorkspaceAlignment = 256;
// workspace_bytes of a problem whose workspace would not fit in size_t (flare refuses it).
constexpr size_t kWorkspaceUnsatisfiable = ~size_t(0);
// CUDA's limit on gridDim.y and gridDim.z: the forward grid is (m blocks, heads, batch x splits).
constexpr int kMaxGridZ = 65535;

// Builds the plan for validated params on a device with `num_sms` SMs.
FwdPlan plan_forward(const flare_mha_fwd_params& p, int num_sms);

}  // namespace flare
