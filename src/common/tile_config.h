// Tile shapes of the mma.sync forward kernel per head dimension: shared by the kernel and by
// the planner (split heuristic, workspace), so both agree on block counts.
#pragma once
#include "host_device.h"

namespace flare {

struct TileConfig {
  int block_m;  // query rows per CTA
  int block_n;  // key rows per main-loop step
  int warps;    // each warp owns block_m / warps query rows
};

// Rows per warp: 32 where the accumulators fit in registers (d <= 128), else 16.
FLARE_HD constexpr TileConfig sm80_tile_config(int head_dim) {
  return head_dim <= 64    ? TileConfig{128, 64, 4}
         : head_dim <= 128 ? TileConfig{128, 64, 4}
                           : TileConfig{128, 64, 8};
}

// Head dimensions with compiled kernels; others are padded up to the next one.
FLARE_HD constexpr int padded_head_dim(int head_dim) {
  return head_dim <= 32 ? 32 : head_dim <= 64 ? 64 : head_dim <= 96 ? 96
       : head_dim <= 128 ? 128 : head_dim <= 192 ? 192 : 256;
}

}  // namespace flare
