// The planner: every choice of a forward launch, made in one place from the validated params,
// the device's facts and the Tuning. The launchers (kernels/*/run_fwd_*) only carry out a plan:
// they read no device attribute and no environment.
//
// Order of the decisions (plan_forward):
//   1. the params the kernels see: default scale, head_dim_v (never 0), rotated-q strides, GQA
//      packing;
//   2. the kernel family (mma.sync prefill or decode, Hopper warp-specialised or all-threads)
//      and its variant (sm80: key step and row layout within the shared memory; sm90: the
//      Sm90Variant), hence the tile (rows, keys per step, CTAs per SM);
//   3. the split count, from that same tile;
//   4. the workspace layout: rotated q, split accumulators, tile counter.
#pragma once
#include <cstddef>

#include "common/tile_config.h"
#include "flare/flare.h"
#include "kernels/fwd_launch.h"
#include "kernels/sm90/variant.h"
#include "plan/tuning.h"

namespace flare {

// Facts of one device, read once per device ordinal (api/device.cpp) and cached.
struct DeviceInfo {
  int cc_major = 0;
  int cc_minor = 0;
  int num_sms = 0;
  int smem_optin = 0;  // shared memory a block may opt in to, bytes (0: unknown, no limit)
};

// Which Hopper instances this build compiled (the dispatcher fills it from FLARE_ARCHS /
// FLARE_DTYPES / FLARE_HEAD_DIMS); the planner sends a launch to a Hopper kernel only where one
// exists. Default: all of them, but the FP8 prefill instances (FLARE_FP8_PREFILL builds
// only): none.
struct KernelSet {
  // [dtype][64, 128, 256, 512, 192]
  bool sm90[2][5] = {{true, true, true, true, true}, {true, true, true, true, true}};
  bool sm90_fp8_prefill[2][5] = {};  // [out dtype][64, 128, 256; never 512 or 192]
  static int sm90_index(int sm90_head_dim) {
    switch (sm90_head_dim) {
      case 64: return 0;
      case 128: return 1;
      case 256: return 2;
      case 512: return 3;
      case 192: return 4;
      default: return -1;
    }
  }
  bool has_sm90(int dtype, int sm90_head_dim) const {
    const int i = sm90_index(sm90_head_dim);
    return i >= 0 && (dtype == FLARE_DTYPE_FP16 || dtype == FLARE_DTYPE_BF16) && sm90[dtype][i];
  }
  bool has_sm90_fp8_prefill(int dtype, int sm90_head_dim) const {
    const int i = sm90_index(sm90_head_dim);
    return i >= 0 && (dtype == FLARE_DTYPE_FP16 || dtype == FLARE_DTYPE_BF16) &&
           sm90_fp8_prefill[dtype][i];
  }
};

// The tile a launch runs: what the split heuristic counts and the launcher's instance has.
struct TileShape {
  int block_m;      // query rows per CTA (per tile of a persistent CTA)
  int block_n;      // keys per main-loop step, the unit of the split ranges
  int ctas_per_sm;  // resident CTAs per SM the split heuristic counts
};

// FlashAttention-2's occupancy rule: the smallest split count whose wave efficiency is within
// 85% of the best, among counts that change the blocks per split; 1 when the grid already fills
// 80% of the SMs. `num_sms` counts CTA slots (SMs x CTAs per SM).
int num_splits_heuristic(int batch_nheads_mblocks, int num_sms, int num_n_blocks, int max_splits);

constexpr size_t kWorkspaceAlignment = 256;
// workspace_bytes of a problem whose workspace would not fit in size_t (flare refuses it).
constexpr size_t kWorkspaceUnsatisfiable = ~size_t(0);
// CUDA's limit on gridDim.y and gridDim.z: the forward grid is (m blocks, heads, batch x splits).
constexpr int kMaxGridZ = 65535;
// An offset of a workspace region the plan does not have.
constexpr size_t kNoRegion = ~size_t(0);

struct FwdPlan {
  flare_mha_fwd_params p;  // the params the kernels see (scale resolved, GQA packing applied)
  FwdKernelFamily family;  // kNone: no mma.sync kernel fits the device's shared memory
  int kernel_head_dim;     // padded head dim (padded_head_dim): the mma.sync instance
  int sm90_head_dim;       // Hopper instance (sm90_kernel_head_dim), 0 on the mma.sync path
  int kernel_head_dim_v;   // O columns one CTA of the instance computes (V rows it loads):
                           // sm80_kernel_head_dim_v, or sm90_head_dim on the Hopper path
  int v_parts;             // CTAs per (query block, head, split), part j computing O columns
                           // [j * kernel_head_dim_v, (j + 1) * kernel_head_dim_v) below
                           // v_head_dim(p): 2 on the d512 mma.sync kernel, else 1
  TileShape tile;
  bool sm80_swizzled;      // mma.sync prefill: XOR-swizzled rows instead of padded ones
  Sm90Variant sm90;        // the Hopper variant (family kSm90*)
  bool packed_gqa;         // seqlen_q == 1 decode: the query heads of a KV head became rows
  bool rotate_q;           // KV cache with rotary: q is rotated into the workspace
  bool narrow;             // element-granular loads and stores (common/narrow.h)
  bool small_pages;        // decode kernel families: paged K/V with pages under the 16-row key
                           // groups of a warp (sm80_decode_small_pages): the SmallPages instance
  int num_splits;
  int max_seqlen_q;        // rows per (batch, head) in the split accumulators
  int num_sms;             // the device's SMs (persistent grids)
  bool combine_pdl;        // the split combine is a programmatic dependent launch (sm90+)
  // Byte offsets in the workspace; kNoRegion where the plan has no such region.
  size_t q_rot_offset, o_accum_offset, lse_accum_offset, tile_counter_offset;
  size_t workspace_bytes;  // kWorkspaceUnsatisfiable when it overflows size_t
};

// Builds the plan for validated params on `device`. A caller that offers no workspace
// (p.workspace null) gets a plan that needs none unless it forces splits: no heuristic split,
// no persistent tiles.
FwdPlan plan_forward(const flare_mha_fwd_params& p, const DeviceInfo& device,
                     const Tuning& tuning = Tuning{}, const KernelSet& kernels = KernelSet{});

// Shared memory per block of an mma.sync prefill instance with `block_n`-key steps (the tile's
// or the wide step) and padded or swizzled rows, as the planner counts it against the device's
// limit: Q + one K buffer (head_dim wide) and one V buffer (sm80_kernel_head_dim_v wide), the
// wide step's CTA state (an upper bound), the swizzled layout's alignment slack. run_fwd_sm80
// checks each instance's exact size against it.
constexpr int kSm80WideStateBytesMax = 512;
constexpr int sm80_prefill_smem_bytes(int head_dim, int block_m, int block_n, bool wide,
                                      bool swizzled) {
  return (block_m + block_n) * smem_row_bytes(head_dim, swizzled) +
         block_n * smem_row_bytes(sm80_kernel_head_dim_v(head_dim), swizzled) +
         (wide ? kSm80WideStateBytesMax : 0) + (swizzled ? 128 : 0);
}

}  // namespace flare
