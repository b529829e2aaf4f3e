// Tuning: the switches that override the planner's measured defaults, for A/B runs and tests.
//
// A default build never reads the environment: the library plans with Tuning{} unless a test or
// flare_bench calls set_tuning (internal, not part of the C ABI; reachable from binaries that
// link flare_static). A library configured with -DFLARE_TUNING=ON fills its Tuning once from the
// FLARE_* environment variables (tuning_from_env, the one parser) before its first plan.
#pragma once

#include <string>

namespace flare {

// Overrides of the Hopper variant rules (kernels/sm90/variant.h); -1 = the rule decides.
struct Sm90Overrides {
  int warp_specialized = -1;  // 0: the all-threads kernel; 1: warp-specialised
  int persistent = -1;        // 0: one CTA per tile; 1: persistent CTAs taking tile tickets
  int pingpong = -1;          // 0/1: consumer warpgroups alternate their GEMM issue
  int tma = -1;               // TmaMode for K/V (and Q unless tma_q is set): 0 off, 1 on, 2 require
  int tma_q = -1;             // TmaMode for Q alone; -1 follows tma
  int block_n = -1;           // key block of the warp-specialised kernel: its long block
                              // (d64 192, d128 176) or its default (128); -1: the rule
  int consumer_wgs = -1;      // consumer warpgroups of the d64 kernel: 2 or 3
  int d512 = -1;              // 1: head dims 257..512 run the Hopper d512 kernel
                              // (sm90_d512_applies); else the mma.sync d512 kernel
  int cluster_m = -1;         // 1: no clusters; else two where sm90_cluster_applies
  int d192 = -1;              // 1: 16-bit head dim 192 (and the (192, 128) pair) on the d192
                              // kernel; else on the d256 kernel, padded
};

struct Tuning {
  bool hopper_kernels = true;  // false: compute capability 9.0 runs the mma.sync kernels too
  int smem_limit_bytes = 0;    // > 0: assume at most this much opt-in shared memory per block
                               // (emulates 99 KB parts on a larger GPU); 0: the device's own
  bool sm80_decode = true;     // false: decode shapes run the mma.sync prefill kernel
  int decode_packed_rows = 16;  // packed GQA decode (one query row, query heads per KV head as
                                // rows) of up to this many rows runs the decode kernel, in
                                // 16-row blocks that read the same K/V (shared through L2);
                                // more rows: the prefill kernels (one read, most rows idle)
  bool sm80_wide = true;       // false: the mma.sync prefill keeps the tile's key step
  bool sm80_swizzle = true;    // false: padded instead of XOR-swizzled shared-memory rows
  bool combine_pdl = true;     // false: the split combine is not a programmatic dependent launch
  Sm90Overrides sm90;
};

// The Tuning the library plans with now (Tuning{} unless set; see above). Thread-safe.
Tuning current_tuning();

// Replaces the library's Tuning for every later plan. For tests and benchmarks only; calls
// racing with forward calls on other threads see the old or the new value.
void set_tuning(const Tuning& tuning);

// The Tuning the FLARE_* environment variables describe (defaults where unset):
//   FLARE_KERNEL_PATH=sm80       hopper_kernels = false
//   FLARE_SMEM_LIMIT_KB=N        smem_limit_bytes = N * 1024
//   FLARE_SM80_DECODE=0          sm80_decode = false
//   FLARE_DECODE_PACKED_ROWS=N   decode_packed_rows = N
//   FLARE_SM80_WIDE=0            sm80_wide = false
//   FLARE_SM80_SWIZZLE=0         sm80_swizzle = false
//   FLARE_COMBINE_PDL=0          combine_pdl = false
//   FLARE_SM90_WS=0|1            sm90.warp_specialized
//   FLARE_SM90_PERSISTENT=0|1    sm90.persistent
//   FLARE_SM90_PINGPONG=0|1      sm90.pingpong
//   FLARE_SM90_TMA=0|1|require   sm90.tma
//   FLARE_SM90_TMA_Q=0|1|require sm90.tma_q
//   FLARE_SM90_BLOCK_N=N         sm90.block_n
//   FLARE_SM90_CONSUMERS=N       sm90.consumer_wgs
//   FLARE_SM90_D512=0|1          sm90.d512
//   FLARE_SM90_CLUSTER=1|2       sm90.cluster_m
//   FLARE_SM90_D192=0|1          sm90.d192
// Defined in tuning_env.cpp, which a default library does not contain: tests and flare_bench
// link it (CMake target flare_tuning_env) to pass the environment on through set_tuning.
Tuning tuning_from_env();

// One line naming every field of tuning ("hopper_kernels=1 smem_limit_bytes=0 ... sm90{ws=-1
// ...}"), for the tests and flare_bench to print the Tuning they run under. In tuning_env.cpp.
std::string describe(const Tuning& tuning);

}  // namespace flare
