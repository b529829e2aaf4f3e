// Overlap checks of the tensors flare writes: distinct (batch, row, head) entries of an output
// must not share an element, or two CTAs (or two rows of one) would race on it.
#pragma once
#include <cstdint>

#include "flare/flare.h"

namespace flare {

// One dimension of a strided tensor: its stride's field name, what its entries are called in a
// message ("rows", "heads"), its size (kUnknownSize: at least 2, count not known on the host,
// e.g. the rows of a varlen tensor) and its stride in elements.
struct LayoutDim {
  const char* stride_name;
  const char* entries;
  int64_t size;
  int64_t stride;
};
constexpr int64_t kUnknownSize = -1;

// FLARE_ERROR_INVALID_ARGUMENT, naming the stride field, when entries of `tensor` overlap: the
// dimensions of size > 1 sorted by stride must each step at least over the extent of the ones
// inside them (`inner` contiguous elements innermost). `dims` lists the dimensions outermost
// first (batch, rows, heads); that order breaks ties of equal strides. Dimensions outside one of
// unknown size cannot be checked and are accepted.
flare_status check_no_overlap(const char* tensor, const LayoutDim* dims, int count, int64_t inner);

}  // namespace flare
