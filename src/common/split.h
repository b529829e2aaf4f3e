// How the key blocks of one query block are divided among split-KV CTAs.
#pragma once
#include "block_range.h"

namespace flare {

// Split s of num_splits over the blocks [range.begin, range.end): equal contiguous chunks,
// the last ones possibly empty.
FLARE_HD BlockRange split_block_range(BlockRange range, int num_splits, int split) {
  const int n = range.end > range.begin ? range.end - range.begin : 0;
  const int per = (n + num_splits - 1) / num_splits;
  int b = range.begin + split * per;
  int e = b + per;
  if (b > range.begin + n) b = range.begin + n;
  if (e > range.begin + n) e = range.begin + n;
  return BlockRange{b, e};
}

// Floats per row of the split-KV accumulators (o_accum) of a head dim: rounded up to whole
// 8-element chunks, so every row starts 32-byte aligned and the kernels' float2 / float4 stores
// of a chunk never cross into the next row, narrow head dims included.
FLARE_HD constexpr int split_accum_row_floats(int head_dim) { return (head_dim + 7) / 8 * 8; }

}  // namespace flare
