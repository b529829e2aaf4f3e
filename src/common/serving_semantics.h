// The semantic rules of the serving fields of flare_mha_fwd_params (flare.h): the head dim of
// V / out, the per-head sink logit, and the visibility added by multimodal prefix ranges. One
// place for each rule, shared by the CPU reference and (later) the kernels.
#pragma once
#include <math.h>

#include "flare/flare.h"
#include "host_device.h"
#include "mask.h"
#include "sequence.h"

namespace flare {

// Head dim of v, v_new, out and the split-KV accumulators: head_dim_v, or head_dim when 0.
FLARE_HD int v_head_dim(const flare_mha_fwd_params& p) {
  return p.head_dim_v != 0 ? p.head_dim_v : p.head_dim;
}

FLARE_HD bool has_sink(const flare_mha_fwd_params& p) { return p.sink != nullptr; }

// Sink logit of query head `head` in the units of the scores s (natural log); -inf (no term in
// the denominator) without sinks.
FLARE_HD float sink_logit(const flare_mha_fwd_params& p, int head) {
  return p.sink ? p.sink[head] : -INFINITY;
}

// The query head of row `row` of the kernels' head `head`: `head`, or under GQA packing
// (plan.cpp: the query heads of a KV head become the rows of one kernel head, p.seqlen_q of
// them) head * p.seqlen_q + row. p is the params the kernels see.
FLARE_HD int row_query_head(const flare_mha_fwd_params& p, bool packed_gqa, int head, int row) {
  return packed_gqa ? head * p.seqlen_q + row : head;
}

// The sink of a kernel row in log2 units (for OnlineSoftmax::finish_with_sink); -inf without
// sinks and for rows past the sequence (row_ok false), whose packed head may not exist.
FLARE_HD float row_sink_log2(const flare_mha_fwd_params& p, bool packed_gqa, int head, int row,
                             bool row_ok) {
  if (!row_ok || !p.sink) return -INFINITY;
  return p.sink[row_query_head(p, packed_gqa, head, row)] * 1.4426950408889634f;
}

// One multimodal prefix range of a sequence: key positions [start, end); empty when
// start >= end (unused slots hold start == end).
struct KeyRange {
  int start;
  int end;
  FLARE_HD bool contains(long long pos) const { return pos >= start && pos < end; }
};

FLARE_HD int num_mm_prefix_ranges(const flare_mha_fwd_params& p) {
  return p.mm_prefix_ranges ? p.max_mm_prefix_ranges : 0;
}

// Range r (< max_mm_prefix_ranges) of sequence b.
FLARE_HD KeyRange mm_prefix_range(const flare_mha_fwd_params& p, int b, int r) {
  const int32_t* e = p.mm_prefix_ranges + (int64_t)b * p.mm_prefix_ranges_batch_stride + 2 * r;
  return KeyRange{e[0], e[1]};
}

// Whether key j of sequence s is visible from its query row i: the causal / window mask `m`
// (sequence_mask), or a prefix range that holds both j and the row's absolute key position
// i + seqlen_k - seqlen_q. Keys outside [0, seqlen_k) are never visible.
FLARE_HD bool key_visible(const flare_mha_fwd_params& p, const SequenceInfo& s,
                          const MaskSpec& m, int i, int j) {
  if (j < 0 || j >= s.seqlen_k) return false;
  if (m.visible(i, j)) return true;
  const long long pos = (long long)i + m.diagonal();
  const int n = num_mm_prefix_ranges(p);
  for (int r = 0; r < n; ++r) {
    const KeyRange range = mm_prefix_range(p, s.batch, r);
    if (range.contains(pos) && range.contains(j)) return true;
  }
  return false;
}

}  // namespace flare
