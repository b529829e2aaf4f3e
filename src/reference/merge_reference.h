// CPU reference of flare_merge_attention_states, in float64. All pointers in the params are
// HOST pointers; fp16/bf16 parts are uint16_t bit patterns, fp32 parts floats.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/lse_merge.h"
#include "flare/flare.h"
#include "reference/reference.h"

namespace flare {
namespace ref {

// Element `index` of a host tensor of a merge dtype, as double.
inline double merge_element(const void* base, int dtype, int64_t index) {
  if (dtype == FLARE_DTYPE_FP32) return static_cast<const float*>(base)[index];
  return to_float(static_cast<const uint16_t*>(base)[index], dtype);
}

// Merges the parts of `p` (host pointers; p.out / p.out_lse are ignored) into `out` and
// `out_lse`, both double and laid out with p's out / out_lse strides. Rows whose parts are
// all empty get out = 0 and lse = -inf; empty parts (lse -inf) are never read.
inline void merge_attention_states(const flare_merge_params& p, double* out, double* out_lse) {
  const int n = p.num_parts;
  std::vector<double> l(static_cast<size_t>(n));
  for (int b = 0; b < p.batch; ++b)
    for (int i = 0; i < p.seqlen; ++i)
      for (int h = 0; h < p.num_heads; ++h) {
        const int64_t lse_at = b * p.lse_batch_stride + i * p.lse_row_stride + h * p.lse_head_stride;
        const int64_t part_at =
            b * p.part_batch_stride + i * p.part_row_stride + h * p.part_head_stride;
        for (int s = 0; s < n; ++s) {
          const float* lse_s = p.lse_ptrs ? p.lse_ptrs[s] : p.lse + s * p.lse_part_stride;
          l[s] = lse_s[lse_at];
        }
        const double lse = merged_lse(l.data(), n);
        const int64_t out_at = b * p.out_batch_stride + i * p.out_row_stride + h * p.out_head_stride;
        for (int t = 0; t < p.head_dim; ++t) {
          double acc = 0.0;
          if (lse != -INFINITY)
            for (int s = 0; s < n; ++s) {
              if (l[s] == -INFINITY) continue;
              const void* base = p.part_ptrs ? p.part_ptrs[s] : nullptr;
              int64_t index = part_at + t;
              if (!base) {
                base = p.parts;
                index += s * p.part_stride;
              }
              acc += merge_weight(l[s], lse) * merge_element(base, p.part_dtype, index);
            }
          out[out_at + t] = acc;
        }
        if (out_lse)
          out_lse[b * p.out_lse_batch_stride + i * p.out_lse_row_stride +
                  h * p.out_lse_head_stride] = lse;
      }
}

}  // namespace ref
}  // namespace flare
