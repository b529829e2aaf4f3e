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

}  // namespace flare
