// Which key blocks a query block must visit, and which of those need per-element masking.
#pragma once
#include "mask.h"

namespace flare {

struct BlockRange {
  int begin;  // first key block
  int end;    // one past the last key block (end <= begin: nothing to visit)
};

// Key blocks of size block_n holding any key visible to rows [m_begin, m_end) of the query.
FLARE_HD BlockRange key_block_range(const MaskSpec& m, int m_begin, int m_end, int block_n) {
  if (m_end > m.seqlen_q) m_end = m.seqlen_q;
  BlockRange r{0, 0};
  if (m_begin >= m_end || m.seqlen_k <= 0) return r;
  // Visible keys of a row form an interval whose ends move right with the row, so the union
  // over the block is [first_key(m_begin), end_key(m_end - 1)).
  const int lo = m.first_key(m_begin);
  const int hi = m.end_key(m_end - 1);
  if (hi <= lo) return r;
  r.begin = lo / block_n;
  r.end = (hi + block_n - 1) / block_n;
  return r;
}

// True when some element of key block n_block, for rows [m_begin, m_end), is not visible
// (past seqlen_k or outside the window), so the kernel must mask it element by element.
FLARE_HD bool block_needs_mask(const MaskSpec& m, int m_begin, int m_end, int n_block,
                               int block_n) {
  if (m_end > m.seqlen_q) m_end = m.seqlen_q;
  const int n_begin = n_block * block_n;
  const int n_last = n_begin + block_n - 1;
  if (n_last >= m.seqlen_k) return true;
  if (m.has_left() && n_begin < (m_end - 1) + m.diagonal() - m.window_left) return true;
  if (m.has_right() && (long long)n_last > (long long)m_begin + m.diagonal() + m.window_right)
    return true;
  return false;
}

}  // namespace flare
