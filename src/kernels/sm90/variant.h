// Which Hopper kernel variant runs a forward launch (host logic, CPU-tested). The defaults are
// the variants that measured fastest on the H100 (docs/notes/sm90-kernel.md, v4-v7); the
// FLARE_SM90_* environment variables override them for A/B runs.
#pragma once
#include "flare/flare.h"

namespace flare {

enum class TmaMode { kOff = 0, kOn = 1, kRequire = 2 };

// Per-process overrides, -1 = the default rule.
struct Sm90Overrides {
  int warp_specialized = -1;  // FLARE_SM90_WS=0/1
  int persistent = -1;        // FLARE_SM90_PERSISTENT=0/1
  int pingpong = -1;          // FLARE_SM90_PINGPONG=0/1
  int tma = -1;               // FLARE_SM90_TMA=0/1/require
};

struct Sm90Variant {
  bool warp_specialized;  // producer warpgroup + 2 consumer warpgroups; else the all-threads kernel
  bool persistent;        // one CTA per SM walking the tiles (warp-specialised only)
  bool pingpong;          // consumer warpgroups alternate their GEMM issue (warp-specialised only)
  TmaMode tma;            // K/V by TMA where the launch qualifies (warp-specialised only)
};

// The Hopper kernel (compiled head dim) that runs a launch whose padded head dim is
// `kernel_head_dim` (padded_head_dim(p.head_dim): 32, 64, 96, 128, 192 or 256): 64 on the d64
// kernel, 96 and 128 on the d128 kernel, 192 and 256 on the d256 kernel; 0 where no Hopper
// kernel applies (d32 stays on the mma.sync kernels). A kernel wider than p.head_dim zero-fills
// the Q/K/V columns past p.head_dim in shared memory (cp.async zero fill, TMA out-of-bounds
// fill) and stores only the columns below it.
constexpr int sm90_kernel_head_dim(int kernel_head_dim) {
  switch (kernel_head_dim) {
    case 64: return 64;
    case 96:
    case 128: return 128;
    case 192:
    case 256: return 256;
    default: return 0;
  }
}

// Reads the FLARE_SM90_* variables (once per process).
const Sm90Overrides& sm90_overrides_from_env();

// The variant for params `p` on the Hopper kernel compiled for `kernel_head_dim` (64, 128 or
// 256: sm90_kernel_head_dim's value, not p.head_dim, which may be smaller).
Sm90Variant choose_sm90_variant(const flare_mha_fwd_params& p, int kernel_head_dim,
                                const Sm90Overrides& o);

}  // namespace flare
