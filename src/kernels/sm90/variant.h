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
  int tma = -1;               // FLARE_SM90_TMA=0/1/require (K/V, and Q unless tma_q is set)
  int tma_q = -1;             // FLARE_SM90_TMA_Q=0/1/require (Q alone; unset: follows tma)
  int q_buffers = -1;         // FLARE_SM90_QBUFS=1/2 (persistent launches only)
  int sched = -1;             // FLARE_SM90_SCHED=static/dynamic: 0 / 1 (persistent launches only)
  int block_n = -1;           // FLARE_SM90_BLOCK_N=128/192: key block of the d64 kernel (dynamic
                              // tiles only)
  int consumer_wgs = -1;      // FLARE_SM90_CONSUMERS=2/3: consumer warpgroups of the d64 kernel
                              // (three: 192-row tiles, dynamic tiles only; 2 turns the rule off)
};

struct Sm90Variant {
  bool warp_specialized;  // producer warpgroup + 2 (or 3) consumer warpgroups; else the all-threads kernel
  bool persistent;        // one CTA per SM walking the tiles (warp-specialised only)
  bool pingpong;          // consumer warpgroups alternate their GEMM issue (warp-specialised only)
  TmaMode tma;            // K/V by TMA where the launch qualifies (warp-specialised only)
  TmaMode tma_q;          // Q by TMA where the launch qualifies (warp-specialised only)
  int q_buffers;          // Q buffers of the warp-specialised kernel: 2 only when persistent
  bool dynamic_tiles;     // persistent CTAs take their tiles from an atomic ticket counter
                          // instead of striding statically (persistent, unpaged only)
  int block_n;            // keys per main-loop block of the warp-specialised kernel: its
                          // default (sm90_default_block_n), or sm90_long_block_n for long rows
  int consumer_wgs;       // consumer warpgroups (64 query rows each) of the warp-specialised
                          // kernel: 2, or 3 where sm90_max_consumer_wgs allows, with dynamic
                          // tiles only (then block_n is the default)
};

// Consumer warpgroups the warp-specialised kernel compiled for `kernel_head_dim` can run: three
// at d64 (S 64 + P 32 + O 32 registers per consumer thread within 160, P single-buffered), two
// elsewhere.
constexpr int sm90_max_consumer_wgs(int kernel_head_dim) { return kernel_head_dim == 64 ? 3 : 2; }

// Where the d64 kernel takes three consumer warpgroups (v21, v22): at least this many query
// rows (a 192-row tile wastes a third of a 256-row sequence; 512 was the shortest measured,
// +6%) and, when a causal or right window edge masks the tiles, at least this many keys per
// query tile on average (sm90_mean_keys_per_tile: causal 2k, 1024 per tile, +5.5%; causal 1k
// -5%, 512 -19%).
constexpr long long kSm90ThreeWgsMinQueries = 512;
constexpr long long kSm90ThreeWgsMinMaskedKeys = 1024;

// Keys per main-loop block of the warp-specialised kernel compiled for `kernel_head_dim`: 128
// at d64/d128; 80 at d256 (two stages of K and V beside a 64 KB Q tile, v11).
constexpr int sm90_default_block_n(int kernel_head_dim) { return kernel_head_dim <= 128 ? 128 : 80; }

// The longer key block for rows of many keys, 0 where the kernel has none: d64 192 (v20: fewer
// per-block waits and hand-overs, +2..6% from 4k keys per query tile, but -14..29% at 512 keys,
// where the last block is mostly past the row's end or the causal diagonal). Three consumer
// warpgroups (v21) beat it where they apply; it remains for long keys under few queries (fewer
// than kSm90ThreeWgsMinQueries, e.g. a chunk of a long prefill) and with FLARE_SM90_CONSUMERS=2.
constexpr int sm90_long_block_n(int kernel_head_dim) { return kernel_head_dim == 64 ? 192 : 0; }

// Keys a query tile of `p` visits on average (a window's span, the average of a causal row's
// bottom-right aligned triangle; varlen: by the longest sequences), the measure of the rules of
// sm90_long_block_n and of three consumer warpgroups.
long long sm90_mean_keys_per_tile(const flare_mha_fwd_params& p);

// From this many keys per query tile the d64 kernel takes the long block (v20: causal 8k,
// 4k keys per tile on average, +1..2%; non-causal 4k +0..2%; causal 4k, 2k per tile, -5%).
constexpr long long kSm90LongBlockMinKeys = 4096;

// Q buffers the warp-specialised kernel compiled for `kernel_head_dim` can hold next to its K/V
// stages in 227 KB of shared memory: d64 2 Q (32 KB) + 4 stages (128 KB); d128 2 Q (64 KB) + 2
// stages (128 KB, one stage fewer than with one Q buffer); d256 (Q 64 KB, a stage 64 KB) only one.
constexpr int sm90_max_q_buffers(int kernel_head_dim) { return kernel_head_dim <= 128 ? 2 : 1; }

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

// FLARE_SM90_SCHED's value: 1 (dynamic) for a leading 'd' or '1', 0 (static) for a leading 's'
// or '0', -1 (the default: static) when unset, empty or anything else.
int sm90_sched_from_string(const char* value);

// Reads the FLARE_SM90_* variables (once per process).
const Sm90Overrides& sm90_overrides_from_env();

// The variant for params `p` on the Hopper kernel compiled for `kernel_head_dim` (64, 128 or
// 256: sm90_kernel_head_dim's value, not p.head_dim, which may be smaller).
Sm90Variant choose_sm90_variant(const flare_mha_fwd_params& p, int kernel_head_dim,
                                const Sm90Overrides& o);

}  // namespace flare
