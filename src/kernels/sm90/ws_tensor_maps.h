// The tensor maps of a warp-specialised Hopper launch (the 16-bit kernels' and the FP8
// prefill's): which of Q and K/V go by TMA is the variant's (Sm90Variant::tma, tma_q) and the
// launch's (tma_maps.h) to say; the boxes are the instance's.
#pragma once
#include "kernels/sm90/tma_maps.h"
#include "kernels/sm90/variant.h"

namespace flare {
namespace sm90 {

// The Q and K/V tensor maps of a launch whose instance has block_m-row query tiles,
// block_n-key blocks and TMA boxes of box_cols columns, where the variant and the launch allow
// TMA.
inline int make_ws_tensor_maps(const flare_mha_fwd_params& p, const Sm90Variant& variant,
                               int box_cols, int block_m, int block_n, Sm90TensorMaps* maps) {
  if (variant.tma != TmaMode::kOff && kv_tma_unsupported_reason(p) == nullptr) {
    const int err = make_kv_tensor_maps(p, box_cols, block_n, maps);
    // TmaMode::kRequire: a launch that qualifies must not fall back silently.
    if (err != 0 && variant.tma == TmaMode::kRequire) return err;
  }
  if (variant.tma_q != TmaMode::kOff && q_tma_unsupported_reason(p) == nullptr) {
    const int err = make_q_tensor_map(p, box_cols, block_m, maps);
    if (err != 0 && variant.tma_q == TmaMode::kRequire) return err;
  }
  return 0;
}

}  // namespace sm90
}  // namespace flare
