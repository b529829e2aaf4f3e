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

// Reads the FLARE_SM90_* variables (once per process).
const Sm90Overrides& sm90_overrides_from_env();

// The variant for params `p` on the kernel compiled for `kernel_head_dim` (64, 128 or 256).
Sm90Variant choose_sm90_variant(const flare_mha_fwd_params& p, int kernel_head_dim,
                                const Sm90Overrides& o);

}  // namespace flare
