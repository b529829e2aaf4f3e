#include "api/layout_check.h"

#include <algorithm>

#include "api/error.h"

namespace flare {

flare_status check_no_overlap(const char* tensor, const LayoutDim* dims, int count, int64_t inner) {
  // Dimensions of size > 1 by stride; equal strides in the declared nesting order (the last
  // dimension innermost), so a message names the stride that was set against its inner one.
  struct Ranked {
    LayoutDim dim;
    int rank;  // declared position, outermost first
  } sorted[4];
  int n = 0;
  for (int i = 0; i < count && n < 4; ++i)
    if (dims[i].size == kUnknownSize || dims[i].size > 1) sorted[n++] = {dims[i], i};
  std::sort(sorted, sorted + n, [](const Ranked& a, const Ranked& b) {
    return a.dim.stride != b.dim.stride ? a.dim.stride < b.dim.stride : a.rank > b.rank;
  });
  // Elements spanned by the dimensions checked so far; saturates (a larger extent is refused
  // by the 2^61 extent check anyway).
  unsigned __int128 extent = static_cast<unsigned __int128>(inner);
  for (int i = 0; i < n; ++i) {
    const LayoutDim& d = sorted[i].dim;
    if (d.stride < 0 || static_cast<unsigned __int128>(d.stride) < extent)
      return fail(FLARE_ERROR_INVALID_ARGUMENT,
                  "%s (%lld) makes the %s of %s overlap: each spans %llu elements (the "
                  "dimensions with smaller strides included), so the stride must be at least that",
                  d.stride_name, (long long)d.stride, d.entries, tensor,
                  (unsigned long long)std::min<unsigned __int128>(extent, ~0ULL));
    if (d.size == kUnknownSize) break;
    extent += static_cast<unsigned __int128>(d.size - 1) * static_cast<uint64_t>(d.stride);
  }
  return FLARE_OK;
}

}  // namespace flare
