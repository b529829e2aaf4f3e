// Paged K/V fills without a block-table read and a division per row: which row of a fill each
// lane looks up, and which lane holds the page of a row a thread copies (the lanes then trade
// pages by shuffle). Used by the Hopper kernels' paged cp.async fills (PagedFillRows in
// kernels/sm90/fwd_kernel_sm90.cuh); CPU-tested by brute force (tests/cpu/test_semantics.cpp).
//
// A fill copies `Rows` rows of `Chunks` 16-byte chunks with `Threads` threads: thread x copies
// chunk x % Chunks of rows x / Chunks + i * kRowsPerPass, pass i = 0 .. kPasses - 1. Where
// Chunks divides 32, a warp copies kWarpRows whole rows per pass, so at most 32 rows per fill
// when kWarpRows * kPasses <= 32: one row per lane.
#pragma once
#include "host_device.h"

namespace flare {

template <int Chunks, int Threads, int Rows>
struct PagedLaneRows {
  static constexpr int kWarpRows = 32 % Chunks == 0 ? 32 / Chunks : 0;  // a warp's rows per pass
  static constexpr int kRowsPerPass = Threads / Chunks;
  static constexpr int kPasses = Rows / kRowsPerPass;
  // The layout above: whole rows per warp, whole passes, at most one looked-up row per lane.
  static constexpr bool kApplies = kWarpRows > 0 && Threads % 32 == 0 &&
                                   Rows % kRowsPerPass == 0 && kWarpRows * kPasses <= 32;

  // The row of the fill that lane `lane` of warp `warp` looks up, or -1 (no row).
  FLARE_HD static int lookup_row(int warp, int lane) {
    if (lane >= kWarpRows * kPasses) return -1;
    return warp * kWarpRows + lane % kWarpRows + (lane / kWarpRows) * kRowsPerPass;
  }
  // The row thread `thread` copies in pass `pass`.
  FLARE_HD static int copied_row(int thread, int pass) {
    return thread / Chunks + pass * kRowsPerPass;
  }
  // The lane of the thread's warp that looked that row up.
  FLARE_HD static int holder(int thread, int pass) {
    return pass * kWarpRows + (thread % 32) / Chunks;
  }
};

}  // namespace flare
