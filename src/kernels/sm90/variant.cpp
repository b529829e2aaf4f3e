// Hopper kernel variant choice: the measured defaults (docs/decisions.md) and the Tuning
// overrides.
#include "kernels/sm90/variant.h"

#include <algorithm>

#include "common/sequence.h"
#include "kernels/sm90/fp8_layout.h"
#include "kernels/sm90/tma_maps.h"

namespace flare {

long long sm90_mean_keys_per_tile(const flare_mha_fwd_params& p) {
  const long long q = max_query_rows(p);
  const long long k = max_key_rows(p);
  const long long right = p.causal ? 0 : p.window_right;  // -1: unbounded
  long long keys = k;
  // Bottom-right aligned: query row i sees keys up to k - q + i + right, k - q / 2 + right on
  // average.
  if (right >= 0) keys = std::min(keys, k - q / 2 + right);
  // A left window: left + 1 + right keys per row (+ a 128-row tile's slide); with the right
  // unbounded, row i sees left + q - i, left + q / 2 on average.
  if (p.window_left >= 0)
    keys = std::min(keys, (long long)p.window_left + 1 + (right >= 0 ? right + 128 : q / 2));
  return std::max(keys, 0LL);
}

bool sm90_cluster_applies(const flare_mha_fwd_params& p, int kernel_head_dim) {
  return sm90_ws_splits_o(kernel_head_dim) &&
         max_query_rows(p) > sm90_ws_block_m(kernel_head_dim, 2) &&
         kv_tma_unsupported_reason(p) == nullptr && kv_tma_rows_exact(p);
}

namespace {
// The kernels compiled warp-specialised only and without a paged instance (d192, d512): a
// launch may run them when it is unpaged and not forced onto the all-threads kernel.
bool ws_only_kernel_fits(const flare_mha_fwd_params& p, const Sm90Overrides& o) {
  return !is_paged(p) && o.warp_specialized != 0;
}
}  // namespace

bool sm90_d192_applies(const flare_mha_fwd_params& p, const Sm90Overrides& o) {
  return o.d192 == 1 && ws_only_kernel_fits(p, o);
}

Sm90Variant choose_sm90_fp8_variant(int kernel_head_dim, const Sm90Overrides& o) {
  Sm90Variant v{};
  v.warp_specialized = o.warp_specialized != 0;
  v.persistent = v.warp_specialized && o.persistent != 0;
  v.pingpong = v.warp_specialized && o.pingpong != 0;
  // Q, K and V's staging rows by TMA only where asked, until measured against cp.async.
  v.tma = v.warp_specialized && o.tma > 0 ? TmaMode(o.tma) : TmaMode::kOff;
  v.tma_q = v.warp_specialized && o.tma_q >= 0 ? TmaMode(o.tma_q) : v.tma;
  v.block_n = sm90::sm90_fp8_block_n(kernel_head_dim);
  v.consumer_wgs = 2;
  v.cluster_m = 1;
  return v;
}

bool sm90_d512_applies(const flare_mha_fwd_params& p, const Sm90Overrides& o) {
  return o.d512 == 1 && ws_only_kernel_fits(p, o);
}

Sm90Variant choose_sm90_variant(const flare_mha_fwd_params& p, int kernel_head_dim,
                                const Sm90Overrides& o) {
  Sm90Variant v{};
  v.block_n = sm90_default_block_n(kernel_head_dim);
  v.consumer_wgs = 2;
  v.cluster_m = 1;
  // Rules are per compiled kernel: head dims 96 and 192 run on the d128 / d256 kernels
  // (sm90_kernel_head_dim) and take their rules, measured at 128 / 256 only.
  // Warp-specialised at every head dim and length.
  v.warp_specialized = o.warp_specialized != 0;
  // At head dim 256 the producer has 24 registers: enough for TMA, not for paged cp.async.
  if (kernel_head_dim > 128 && is_paged(p)) v.warp_specialized = false;
  if (!v.warp_specialized) return v;
  // Persistent CTAs taking tiles by atomic tickets, so triangular (causal) and uneven (varlen)
  // work balances; paged launches too (their instance has the default key block and two
  // consumer warpgroups).
  v.persistent = o.persistent != 0;
  const bool paged = is_paged(p);
  // Faster on every prefill shape measured; not where the kernel exchanges S (d512).
  v.pingpong = o.pingpong != 0 && sm90_ws_takes_turns(kernel_head_dim);
  v.tma = o.tma >= 0 ? TmaMode(o.tma) : TmaMode::kOn;
  // Q by TMA follows the K/V switch unless set on its own.
  v.tma_q = o.tma_q >= 0 ? TmaMode(o.tma_q) : v.tma;
  // Clusters of two (d512, every K/V block by TMA): one tile per CTA, so not persistent.
  if (v.tma != TmaMode::kOff && o.cluster_m != 1 && sm90_cluster_applies(p, kernel_head_dim)) {
    v.cluster_m = 2;
    v.persistent = false;
  }
  // The long key block has a persistent, unpaged instance only.
  const int long_n = sm90_long_block_n(kernel_head_dim);
  if (long_n > 0 && v.persistent && !paged) {
    const long long min_keys = sm90_long_block_min_keys(kernel_head_dim);
    const bool long_rows = min_keys > 0 && sm90_mean_keys_per_tile(p) >= min_keys;
    if (o.block_n == long_n || (o.block_n < 0 && long_rows)) v.block_n = long_n;
  }
  // Three consumer warpgroups (192-row tiles, 128-key blocks, each warpgroup skipping the
  // blocks none of its rows sees): persistent and unpaged only; on long enough rows, and where
  // a causal or right window edge masks the tiles, on enough keys per tile.
  if (sm90_max_consumer_wgs(kernel_head_dim) >= 3 && v.persistent && !paged) {
    const bool right_bounded = p.causal || p.window_right >= 0;
    const long long queries = max_query_rows(p);
    const bool three = queries >= kSm90ThreeWgsMinQueries &&
                       (!right_bounded || sm90_mean_keys_per_tile(p) >= kSm90ThreeWgsMinMaskedKeys);
    if (o.consumer_wgs == 3 || (o.consumer_wgs < 0 && three)) {
      v.consumer_wgs = 3;
      v.block_n = sm90_default_block_n(kernel_head_dim);
    }
  }
  return v;
}

}  // namespace flare
