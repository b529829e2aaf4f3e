// The visibility rule of a key for a query row: causal / sliding window, aligned bottom-right.
#pragma once
#include "host_device.h"

namespace flare {

// Window of one (batch) sequence pair after normalisation: left/right < 0 means unbounded.
struct MaskSpec {
  int seqlen_q;
  int seqlen_k;
  int window_left;   // -1 = unbounded
  int window_right;  // -1 = unbounded; causal is window_right = 0

  // Bottom-right alignment: query row i sits at key position i + diagonal().
  FLARE_HD int diagonal() const { return seqlen_k - seqlen_q; }
  FLARE_HD bool has_left() const { return window_left >= 0; }
  FLARE_HD bool has_right() const { return window_right >= 0; }

  // First key row i may see (may exceed the last, then the row sees nothing).
  FLARE_HD int first_key(int i) const {
    if (!has_left()) return 0;
    const int lo = i + diagonal() - window_left;
    return lo < 0 ? 0 : lo;
  }
  // One past the last key row i may see.
  FLARE_HD int end_key(int i) const {
    if (!has_right()) return seqlen_k;
    const long long hi = (long long)i + diagonal() + window_right + 1;
    return hi < 0 ? 0 : (hi > seqlen_k ? seqlen_k : (int)hi);
  }
  FLARE_HD bool visible(int i, int j) const {
    return j >= 0 && j < seqlen_k && j >= first_key(i) && j < end_key(i);
  }
};

// Causal is the window (left, 0); a bound that can never exclude a key becomes unbounded.
// The right bound of row 0 is seqlen_k - seqlen_q + right, so right >= seqlen_k alone is not
// enough when seqlen_q > seqlen_k + 1: it also needs right >= seqlen_q - 1.
FLARE_HD MaskSpec make_mask(int seqlen_q, int seqlen_k, bool causal, int window_left,
                            int window_right) {
  MaskSpec m;
  m.seqlen_q = seqlen_q;
  m.seqlen_k = seqlen_k;
  m.window_left = (window_left < 0 || window_left >= seqlen_k) ? -1 : window_left;
  int right = causal ? 0 : window_right;
  m.window_right = (right < 0 || (right >= seqlen_k && right >= seqlen_q - 1)) ? -1 : right;
  return m;
}

}  // namespace flare
