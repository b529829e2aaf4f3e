// Which Hopper kernel variant runs a forward launch, and the tile sizes of each variant (host
// logic, CPU-tested). The planner (plan/plan.cpp) calls choose_sm90_variant; the defaults are
// the variants that measured fastest on the H100 (docs/decisions.md), Tuning's Sm90Overrides
// replace them for A/B runs and tests.
#pragma once
#include "flare/flare.h"
#include "plan/tuning.h"

namespace flare {

enum class TmaMode { kOff = 0, kOn = 1, kRequire = 2 };

struct Sm90Variant {
  bool warp_specialized;  // producer warpgroup + 2 (or 3) consumer warpgroups; else the
                          // all-threads kernel
  bool persistent;        // one CTA per SM taking tiles by tickets of an atomic counter (the
                          // workspace's tile counter); else one CTA per tile. Warp-specialised
                          // launches only (paged: default key block, two consumer warpgroups)
  bool pingpong;          // consumer warpgroups alternate their GEMM issue (warp-specialised
                          // only, not at d512: sm90_ws_takes_turns)
  TmaMode tma;            // K/V by TMA where the launch qualifies (warp-specialised only)
  TmaMode tma_q;          // Q by TMA where the launch qualifies (warp-specialised only)
  int block_n;            // keys per main-loop block of the warp-specialised kernel: its
                          // default (sm90_default_block_n), or sm90_long_block_n for long rows
                          // or where Sm90Overrides::block_n asks
  int consumer_wgs;       // consumer warpgroups (64 query rows each) of the warp-specialised
                          // kernel: 2, or 3 where sm90_max_consumer_wgs allows, persistent only
                          // (then block_n is the default)
  int cluster_m;          // CTAs per cluster sharing their K/V stages by TMA multicast: 1, or 2
                          // where sm90_cluster_applies (d512; one tile per CTA)
};

// The variant of the FP8 prefill kernel compiled for `kernel_head_dim` (64, 128 or 256; an
// FLARE_FP8_PREFILL build): the warp-specialised kernel's FP8 instance (its all-threads first
// version where Sm90Overrides::warp_specialized is 0), persistent CTAs as the 16-bit kernels'
// (the planner turns them off without a workspace), ping-pong unless turned off, two consumer
// warpgroups, fp8_layout.h's key block; Q, K and V's rows by cp.async unless Sm90Overrides::tma
// (tma_q) asks for TMA (warp-specialised only), V stored transposed by the producer threads.
Sm90Variant choose_sm90_fp8_variant(int kernel_head_dim, const Sm90Overrides& o);

// Whether the warp-specialised kernel compiled for `kernel_head_dim` runs launch `p` in
// clusters of two CTAs, consecutive query tiles of one head whose producers each copy half of
// every K/V stage into both (halving the K/V reads from L2 per tile): the d512 kernel, whose
// 64-row tiles read twice the K/V bytes per FLOP of the others, where every K/V block goes by
// TMA (tensor maps whose rows end with the sequence: not varlen, no KV cache, not paged), and
// with more than one 64-row query tile (else the second CTA of every cluster would hold an SM
// for no rows).
bool sm90_cluster_applies(const flare_mha_fwd_params& p, int kernel_head_dim);

// Whether the warp-specialised kernel compiled for `kernel_head_dim` splits O's columns between
// its two consumer warpgroups (d512: O is 64 x 512 fp32, 256 registers per thread of one
// warpgroup). Both warpgroups then own the tile's same 64 query rows: each computes the partial
// S = Q K^T of its 256 of the head dims, the two exchange partials through shared memory and
// each adds the other's (the same two values: S and the softmax are the same bit for bit in
// both), and each accumulates P V for its 256 of V's columns.
constexpr bool sm90_ws_splits_o(int kernel_head_dim) { return kernel_head_dim > 256; }

// Whether the consumer warpgroups of the warp-specialised kernel compiled for `kernel_head_dim`
// may take turns issuing their GEMMs (Sm90Variant::pingpong): not where they split O, where
// every key block's softmax waits for both warpgroups' halves of QK^T, so neither softmax can
// run under the other's GEMMs. The variant and the kernel (Sm90WsTraits::kTurns) both read it.
constexpr bool sm90_ws_takes_turns(int kernel_head_dim) {
  return !sm90_ws_splits_o(kernel_head_dim);
}

// Consumer warpgroups the warp-specialised kernel compiled for `kernel_head_dim` can run: three
// at d64 (S 64 + P 32 + O 32 registers per consumer thread within 160), two elsewhere.
constexpr int sm90_max_consumer_wgs(int kernel_head_dim) { return kernel_head_dim == 64 ? 3 : 2; }

// Where the d64 kernel takes three consumer warpgroups: at least this many query rows (a
// 192-row tile wastes a third of a 256-row sequence) and, when a causal or right window edge
// masks the tiles, at least this many keys per query tile on average (sm90_mean_keys_per_tile).
constexpr long long kSm90ThreeWgsMinQueries = 512;
constexpr long long kSm90ThreeWgsMinMaskedKeys = 1024;

// Keys per main-loop block of the warp-specialised kernel compiled for `kernel_head_dim` by
// default: 128 at d64/d128; 80 at d256 (two stages of K and V beside a 64 KB Q tile); 32 at d512 (two
// stages of 32 KB K and 32 KB V beside a 64 KB Q tile).
constexpr int sm90_default_block_n(int kernel_head_dim) {
  return kernel_head_dim <= 128 ? 128 : kernel_head_dim <= 256 ? 80 : 32;
}

// The longer key block for rows of many keys, 0 where the kernel has none: d64 192, d128 176
// (two stages of 44 KB K + 44 KB V beside the 32 KB Q tile): fewer per-block waits, hand-overs
// and softmax reductions per key; loses where the last block is mostly past the row's end or
// the causal diagonal. At d64 three consumer warpgroups take precedence where they apply; the
// long block remains for long keys under few queries (fewer than kSm90ThreeWgsMinQueries, e.g.
// a chunk of a long prefill) and with consumer_wgs forced to 2.
constexpr int sm90_long_block_n(int kernel_head_dim) {
  return kernel_head_dim == 64 ? 192 : kernel_head_dim == 128 ? 176 : 0;
}

// From this many keys per query tile the kernel takes its long block unless Sm90Overrides::
// block_n says otherwise; 0: only where block_n asks for it (d128's 176-key block, until it
// has been measured against the 128-key one).
constexpr long long sm90_long_block_min_keys(int kernel_head_dim) {
  return kernel_head_dim == 64 ? 4096 : 0;
}

// Tile sizes of the Hopper kernels, read by the planner (split count, grid) and checked by the
// launcher against the instance it runs (run_fwd_sm90.cuh static_asserts).
// Warp-specialised: 64 query rows per consumer warpgroup (64 in all where they split O's
// columns), the variant's key block.
constexpr int sm90_ws_block_m(int kernel_head_dim, int consumer_wgs) {
  return sm90_ws_splits_o(kernel_head_dim) ? 64 : 64 * consumer_wgs;
}
// All-threads kernel: two warpgroups of 64 rows; 128 keys per block up to d128, 64 at d256.
constexpr int kSm90AllThreadsBlockM = 128;
constexpr int sm90_all_threads_block_n(int kernel_head_dim) {
  return kernel_head_dim <= 128 ? 128 : 64;
}
// Resident CTAs per SM that the split heuristic counts: one for every Hopper kernel (each is
// launched with __launch_bounds__(threads, 1) and most fill the shared memory of an SM).
constexpr int kSm90CtasPerSm = 1;

// Bytes the plan reserves in the workspace for the tile counter of a persistent launch (the
// kernel's ticket words; flare_mha_fwd zeroes all of it before the launch).
constexpr unsigned kSm90TileCounterBytes = 256;

// Keys a query tile of `p` visits on average (a window's span, the average of a causal row's
// bottom-right aligned triangle; varlen: by the longest sequences), the measure of the rules of
// sm90_long_block_n and of three consumer warpgroups.
long long sm90_mean_keys_per_tile(const flare_mha_fwd_params& p);

// The Hopper kernel (compiled head dim) that runs a launch whose padded head dim is
// `kernel_head_dim` (padded_head_dim(p.head_dim): 32, 64, 96, 128, 192, 256 or 512): 64 on the
// d64 kernel, 96 and 128 on the d128 kernel, 192 and 256 on the d256 kernel, 512 on the d512
// kernel (where sm90_d512_applies); 0 where no Hopper kernel applies (d32 stays on the mma.sync
// kernels). The planner may take the d192 kernel instead of the d256 one for 192
// (Sm90Overrides::d192). A kernel wider than p.head_dim zero-fills the Q/K/V columns past p.head_dim in
// shared memory (cp.async zero fill, TMA out-of-bounds fill) and stores only the columns below
// it.
constexpr int sm90_kernel_head_dim(int kernel_head_dim) {
  switch (kernel_head_dim) {
    case 64: return 64;
    case 96:
    case 128: return 128;
    case 192:
    case 256: return 256;
    case 512: return 512;
    default: return 0;
  }
}

// Whether a launch for the d512 kernel runs it: unpaged (its producer has registers for TMA
// fills, not for the paged cp.async fill) and warp-specialised (there is no all-threads d512
// kernel), and where Sm90Overrides::d512 asks for it: the mma.sync d512 kernel stays the
// default until the Hopper one has been measured on a GPU (docs/decisions.md).
bool sm90_d512_applies(const flare_mha_fwd_params& p, const Sm90Overrides& o);

// Whether a 16-bit launch of padded head dim 192 runs the d192 kernel rather than the d256
// kernel (padded): unpaged and warp-specialised (the all-threads kernel's paged fill splits
// rows into chunk counts that divide its threads, which 24 chunks do not), and where
// Sm90Overrides::d192 asks for it until it has been measured against the padded d256 kernel.
bool sm90_d192_applies(const flare_mha_fwd_params& p, const Sm90Overrides& o);

// Hopper kernels compiled for one structure only: d192 and d512 have no all-threads kernel.
constexpr bool sm90_has_all_threads_kernel(int kernel_head_dim) {
  return kernel_head_dim != 192 && !sm90_ws_splits_o(kernel_head_dim);
}

// Whether launches of the Hopper kernel compiled for `kernel_head_dim` may have head_dim_v <
// head_dim: the one accepted pair (192, 128) (validate_serving.cpp) runs on the d256 kernel, or
// the d192 kernel where the planner takes it (Sm90Overrides::d192). The other kernels bound V's
// columns by head_dim, as K's, so their loaders hold no second column limit (the d128
// producer's 24 registers spilled with one).
constexpr bool sm90_kernel_has_narrower_v(int kernel_head_dim) {
  return kernel_head_dim == 256 || kernel_head_dim == 192;
}

// The variant for params `p` on the Hopper kernel compiled for `kernel_head_dim` (64, 128 or
// 256: sm90_kernel_head_dim's value, not p.head_dim, which may be smaller). Persistence needs a
// tile counter in the workspace; the planner turns it off (overrides.persistent = 0) when the
// caller offers no workspace.
Sm90Variant choose_sm90_variant(const flare_mha_fwd_params& p, int kernel_head_dim,
                                const Sm90Overrides& o);

}  // namespace flare
