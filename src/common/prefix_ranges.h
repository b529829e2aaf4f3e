// Multimodal prefix ranges as the kernels see them: each row's visible keys as one interval,
// and the key blocks of a query tile. The rule itself is key_visible() (serving_semantics.h);
// brute-force CPU tests hold these functions to it.
//
// Why one interval per row: the ranges that hold a row's absolute position a_i all share that
// point, so their union is [min start, max end). When 0 <= a_i the mask interval
// [first_key(i), end_key(i)) holds a_i too (causal and window bounds are >= 0), and so does the
// range union clipped to [0, seqlen_k): two intervals through one point are one interval. When
// a_i < 0 both start at key 0 (or the mask interval is empty). So a row's visible keys are
// [first, end) with first/end widened by its ranges, and the per-element mask of the kernels
// stays a test against two bounds.
//
// Tiles: a tile (rows [m_begin, m_end)) whose rows gain no key through a range gets exactly
// key_block_range's blocks and its kernels run today's code (TileKeys::prefix false); only
// tiles with `prefix` set widen each row's bounds (row_keys) at the blocks that need masking.
// block_needs_mask needs no change: it is false only when every row's mask interval covers the
// block, and a widened interval covers it too; every block outside the mask's range (a block
// that only ranges reach) has some key outside a row's mask interval, so it is masked.
// A launch whose mask bounds no row (no window, not causal) sees every key already: ranges add
// nothing and are skipped. This also makes them exact under GQA packing (plan.cpp), whose one
// decode row has no window and sees every key.
#pragma once
#include "block_range.h"
#include "flare/flare.h"
#include "host_device.h"
#include "mask.h"
#include "serving_semantics.h"

namespace flare {

// Whether prefix ranges can change any row's keys: ranges are given and the mask bounds rows.
FLARE_HD bool prefix_ranges_apply(const flare_mha_fwd_params& p, const MaskSpec& m) {
  return num_mm_prefix_ranges(p) > 0 && (m.has_left() || m.has_right());
}

// [first, end) (a row's mask interval) joined with [lo, hi) (its prefix ranges' keys, clipped
// to [0, seqlen_k)): one interval, as the header comment shows. Either may be empty.
FLARE_HD void row_keys_union(int& first, int& end, int lo, int hi) {
  if (hi <= lo) return;
  if (end <= first) {
    first = lo;
    end = hi;
    return;
  }
  if (lo < first) first = lo;
  if (hi > end) end = hi;
}

// Row i's visible keys [first, end), from its mask interval (the caller's first/end, as
// first_key / end_key give them) widened by the ranges of sequence `batch` that hold a_i.
// first >= end: the row sees no key.
FLARE_HD void row_keys(const flare_mha_fwd_params& p, int batch, const MaskSpec& m, int i,
                       int& first, int& end) {
  const long long pos = (long long)i + m.diagonal();
  int lo = m.seqlen_k, hi = 0;  // union of the ranges holding pos, clipped to [0, seqlen_k)
  const int n = num_mm_prefix_ranges(p);
  // Not unrolled: this runs only on the masked blocks of tiles that touch a range, and the
  // kernels' code stays small.
#pragma unroll 1
  for (int r = 0; r < n; ++r) {
    const KeyRange range = mm_prefix_range(p, batch, r);
    if (!range.contains(pos)) continue;
    const int s = range.start < 0 ? 0 : range.start;
    const int e = range.end > m.seqlen_k ? m.seqlen_k : range.end;
    if (s < lo) lo = s;
    if (e > hi) hi = e;
  }
  row_keys_union(first, end, lo, hi);
}

// The key blocks of one query tile and whether its rows need row_keys.
struct TileKeys {
  BlockRange range;  // the blocks holding any key visible to a row of the tile
  bool prefix;       // some row sees a key outside its mask interval through a range
};

// Key blocks of size block_n for rows [m_begin, m_end) of sequence `batch` (mask m): the
// blocks of key_block_range, widened to the keys the ranges give the tile's rows. The one
// place that decides a tile's blocks: every kernel, the Hopper producer and its consumers call
// it (and split the result with split_block_range), so they agree.
FLARE_HD TileKeys tile_key_blocks(const flare_mha_fwd_params& p, int batch, const MaskSpec& m,
                                  int m_begin, int m_end, int block_n) {
  TileKeys t{key_block_range(m, m_begin, m_end, block_n), false};
  if (!prefix_ranges_apply(p, m)) return t;
  if (m_end > m.seqlen_q) m_end = m.seqlen_q;
  if (m_begin >= m_end || m.seqlen_k <= 0) return t;
  int lo = m.seqlen_k, hi = 0;  // hull of the keys ranges add to some row
  const int n = num_mm_prefix_ranges(p);
  const long long diag = m.diagonal();
#pragma unroll 1
  for (int r = 0; r < n; ++r) {
    const KeyRange range = mm_prefix_range(p, batch, r);
    if (range.start >= range.end) continue;
    // Rows of the tile whose position lies in the range: [ib, ie).
    const long long rb = (long long)range.start - diag, re = (long long)range.end - diag;
    const int ib = rb > m_begin ? (int)rb : m_begin;
    const int ie = re < m_end ? (int)re : m_end;
    if (ib >= ie) continue;
    const int s = range.start < 0 ? 0 : range.start;
    const int e = range.end > m.seqlen_k ? m.seqlen_k : range.end;
    if (s >= e) continue;
    // first_key and end_key grow with the row: the range gives some row of [ib, ie) a key
    // outside its mask interval iff it reaches left of the last row's first key or right of the
    // first row's end (an empty mask interval ends at <= 0 < e).
    if (s < m.first_key(ie - 1) || e > m.end_key(ib)) {
      if (s < lo) lo = s;
      if (e > hi) hi = e;
    }
  }
  if (hi <= lo) return t;
  t.prefix = true;
  const int b = lo / block_n, en = (hi + block_n - 1) / block_n;
  if (t.range.end <= t.range.begin) {
    t.range = BlockRange{b, en};
  } else {
    if (b < t.range.begin) t.range.begin = b;
    if (en > t.range.end) t.range.end = en;
  }
  return t;
}

}  // namespace flare
