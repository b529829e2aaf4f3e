// Merging partial attention results by their log-sum-exp: the math of the split-KV combine.
#pragma once
#include <math.h>
#include "host_device.h"

namespace flare {

// log(sum_s exp(lse[s])) with the max subtracted; -inf when every part is empty (-inf).
template <typename Float>
FLARE_HD Float merged_lse(const Float* lse, int n) {
  Float mx = -INFINITY;
  for (int s = 0; s < n; ++s) mx = lse[s] > mx ? lse[s] : mx;
  if (mx == -INFINITY) return mx;
  Float sum = 0;
  for (int s = 0; s < n; ++s) sum += exp(lse[s] - mx);
  return mx + log(sum);
}

// Weight of part s in the merged output: exp(lse_s - merged); 0 for an empty part.
template <typename Float>
FLARE_HD Float merge_weight(Float lse_part, Float lse_merged) {
  if (lse_part == -INFINITY) return Float(0);
  return exp(lse_part - lse_merged);
}

}  // namespace flare
