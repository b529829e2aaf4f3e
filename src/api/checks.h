// The pieces every host-side validator shares (validate.cpp, validate_serving.cpp,
// merge_validate.cpp): early return on the first failing check, pointer alignment, and the
// limits on sequence lengths and tensor extents.
#pragma once
#include <cstdint>

#include "api/error.h"

// Returns from the enclosing function with the status of the first failing check.
#define FLARE_CHECK(expr)                                  \
  do {                                                     \
    const flare_status flare_check_s_ = (expr);            \
    if (flare_check_s_ != FLARE_OK) return flare_check_s_; \
  } while (0)

namespace flare {

constexpr uintptr_t kWordAlignment = 4;  // float / int32 device arrays
// Rows of one sequence: row indices, row + block size and block counts fit in int.
constexpr int kMaxSeqlen = 1 << 30;
// Largest element offset any tensor may reach (leaves headroom for stride x ratio products).
constexpr int64_t kMaxExtent = int64_t(1) << 61;

// FLARE_ERROR_MISALIGNED naming `name` when ptr is not a multiple of `alignment` (a null
// pointer passes: whether it may be null is each field's own rule).
inline flare_status check_alignment(const char* name, const void* ptr, uintptr_t alignment) {
  if (reinterpret_cast<uintptr_t>(ptr) % alignment != 0)
    return fail(FLARE_ERROR_MISALIGNED, "%s (%p) is not %u-byte aligned", name, ptr,
                unsigned(alignment));
  return FLARE_OK;
}

}  // namespace flare
