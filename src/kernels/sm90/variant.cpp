// Hopper kernel variant choice: the measured defaults and the environment overrides.
#include "kernels/sm90/variant.h"

#include <algorithm>
#include <cstdlib>

#include "common/sequence.h"

namespace flare {
namespace {

// -1 when unset or empty, else 1 for a leading '1' and 0 otherwise.
int env_switch(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || v[0] == '\0') return -1;
  return v[0] == '1' ? 1 : 0;
}

// -1 when unset or empty, else its integer value (atoi).
int env_int(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr || v[0] == '\0' ? -1 : std::atoi(v);
}

// -1 when unset or empty, 2 for a leading 'r' (require), 0 for a leading '0', else 1.
int env_tma_mode(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || v[0] == '\0') return -1;
  return v[0] == 'r' ? 2 : v[0] == '0' ? 0 : 1;
}

}  // namespace

int sm90_sched_from_string(const char* value) {
  if (value == nullptr) return -1;
  switch (value[0]) {
    case 'd': case 'D': case '1': return 1;
    case 's': case 'S': case '0': return 0;
    default: return -1;
  }
}

const Sm90Overrides& sm90_overrides_from_env() {
  static const Sm90Overrides o = [] {
    Sm90Overrides r;
    r.warp_specialized = env_switch("FLARE_SM90_WS");
    r.persistent = env_switch("FLARE_SM90_PERSISTENT");
    r.pingpong = env_switch("FLARE_SM90_PINGPONG");
    r.tma = env_tma_mode("FLARE_SM90_TMA");
    r.tma_q = env_tma_mode("FLARE_SM90_TMA_Q");
    const char* q = std::getenv("FLARE_SM90_QBUFS");
    r.q_buffers = q == nullptr || q[0] == '\0' ? -1 : q[0] == '2' ? 2 : 1;
    r.sched = sm90_sched_from_string(std::getenv("FLARE_SM90_SCHED"));
    r.block_n = env_int("FLARE_SM90_BLOCK_N");
    r.consumer_wgs = env_int("FLARE_SM90_CONSUMERS");
    return r;
  }();
  return o;
}

long long sm90_mean_keys_per_tile(const flare_mha_fwd_params& p) {
  const bool varlen = is_varlen(p);
  const long long q = varlen ? p.max_seqlen_q : p.seqlen_q;
  const long long k = varlen ? p.max_seqlen_k : p.seqlen_k;
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

Sm90Variant choose_sm90_variant(const flare_mha_fwd_params& p, int kernel_head_dim,
                                const Sm90Overrides& o) {
  Sm90Variant v{};
  v.q_buffers = 1;
  v.block_n = sm90_default_block_n(kernel_head_dim);
  v.consumer_wgs = 2;
  // Rules are per compiled kernel: head dims 96 and 192 run on the d128 / d256 kernels
  // (sm90_kernel_head_dim) and take their rules, measured at 128 / 256 only.
  // Every head dim and length: at head dim 256 the warp-specialised kernel lost 2-7% at 512
  // keys while K and V of a stage shared one barrier; with their own barriers it gains
  // 19..47% there (sixth session, call 2).
  v.warp_specialized = o.warp_specialized != 0;
  // At head dim 256 the producer has 24 registers: enough for TMA, not for paged cp.async.
  if (kernel_head_dim > 128 && is_paged(p)) v.warp_specialized = false;
  if (!v.warp_specialized) return v;
  // Persistent CTAs taking tiles by atomic tickets (v10, FLARE_SM90_SCHED=dynamic, the default):
  // at or above one CTA per tile on every shape of the A/B (causal s=512 +19%, d64 causal 1k
  // +18%, varlen +10%, 16k +-2%). Static striding (FLARE_SM90_SCHED=static) balances triangular
  // work badly (causal 16k -28%), so it is never the default. Paged launches have no dynamic
  // instance: one CTA per tile.
  const bool dynamic_ok = !is_paged(p);
  v.persistent = o.persistent >= 0 ? o.persistent == 1 : dynamic_ok;
  v.pingpong = o.pingpong != 0;  // faster on every prefill shape measured
  v.tma = o.tma >= 0 ? TmaMode(o.tma) : TmaMode::kOn;
  // Q by TMA (v9): +5..20% below 4k keys, neutral at 16k. Follows the K/V switch unless set on
  // its own.
  v.tma_q = o.tma_q >= 0 ? TmaMode(o.tma_q) : v.tma;
  // Two Q buffers (v9; opt-in): the next tile's Q loads while the current tile runs, but at d128
  // the second buffer costs a K/V stage, and that measured 2-20% slower. Only persistent CTAs
  // have a next tile; paged launches keep one buffer (no kernel instance for them), and d256 has
  // no room for a second buffer.
  v.q_buffers = o.q_buffers == 2 && v.persistent && !is_paged(p) &&
                        sm90_max_q_buffers(kernel_head_dim) >= 2
                    ? 2
                    : 1;
  // Dynamic tile scheduler (v10): persistent CTAs take their next tile from an atomic counter,
  // so triangular (causal) and uneven (varlen) work balances. run_fwd_sm90 runs one CTA per
  // tile instead under stream capture (a graph would replay one counter slot).
  v.dynamic_tiles = v.persistent && dynamic_ok && o.sched != 0;
  // The long key block (v20) has a dynamic-tiles instance only (run_fwd_sm90 launches the
  // default block under stream capture, where dynamic tiles are off).
  const int long_n = sm90_long_block_n(kernel_head_dim);
  if (long_n > 0 && v.dynamic_tiles) {
    const bool long_rows = sm90_mean_keys_per_tile(p) >= kSm90LongBlockMinKeys;
    if (o.block_n == long_n || (o.block_n < 0 && long_rows)) v.block_n = long_n;
  }
  // Three consumer warpgroups (192-row tiles, v21), with 128-key blocks, each skipping the
  // blocks none of its rows sees (v22): +6..16% on every non-causal d64 row from 512 queries,
  // +5..14% on causal rows from 1024 keys per query tile on average (causal 2k), but -5% at
  // causal 1k and -19% at 512 (a 192-row tile's diagonal still costs more there).
  if (sm90_max_consumer_wgs(kernel_head_dim) >= 3 && v.dynamic_tiles) {
    const bool right_bounded = p.causal || p.window_right >= 0;
    const long long queries = is_varlen(p) ? p.max_seqlen_q : p.seqlen_q;
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
