// Hopper kernel variant choice: the measured defaults and the environment overrides.
#include "kernels/sm90/variant.h"

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

}  // namespace

const Sm90Overrides& sm90_overrides_from_env() {
  static const Sm90Overrides o = [] {
    Sm90Overrides r;
    r.warp_specialized = env_switch("FLARE_SM90_WS");
    r.persistent = env_switch("FLARE_SM90_PERSISTENT");
    r.pingpong = env_switch("FLARE_SM90_PINGPONG");
    const char* t = std::getenv("FLARE_SM90_TMA");
    r.tma = t == nullptr || t[0] == '\0' ? -1 : t[0] == 'r' ? 2 : t[0] == '0' ? 0 : 1;
    return r;
  }();
  return o;
}

Sm90Variant choose_sm90_variant(const flare_mha_fwd_params& p, int kernel_head_dim,
                                const Sm90Overrides& o) {
  Sm90Variant v{};
  const int keys = is_varlen(p) ? p.max_seqlen_k : p.seqlen_k;
  // Rules are per compiled kernel: head dims 96 and 192 run on the d128 / d256 kernels
  // (sm90_kernel_head_dim) and take their rules, measured at 128 / 256 only.
  // Head dim 256 (64-key blocks, two stages) gained 2-10% from 1k keys and lost 2-7% at 512.
  v.warp_specialized = o.warp_specialized >= 0 ? o.warp_specialized == 1
                                               : kernel_head_dim <= 128 || keys >= 1024;
  // At head dim 256 the producer has 24 registers: enough for TMA, not for paged cp.async.
  if (kernel_head_dim > 128 && is_paged(p)) v.warp_specialized = false;
  if (!v.warp_specialized) return v;
  // Persistent CTAs: +2..25% for unmasked head dim 64; slower with a causal mask (static
  // striding balances triangular work badly) and at head dims 128/256.
  const bool unmasked = p.causal == 0 && p.window_left < 0 && p.window_right < 0;
  v.persistent = o.persistent >= 0 ? o.persistent == 1 : kernel_head_dim == 64 && unmasked;
  v.pingpong = o.pingpong != 0;  // faster on every prefill shape measured
  v.tma = o.tma >= 0 ? TmaMode(o.tma) : TmaMode::kOn;
  return v;
}

}  // namespace flare
