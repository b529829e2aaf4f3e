// Host-side checks of flare_merge_params (plain C++: testable without a GPU).
#pragma once
#include "flare/flare.h"

namespace flare {

// Copies the caller's struct (its first struct_size bytes; an older, shorter struct gets zeros
// for the fields it lacks) into a full one.
flare_status read_merge_params(const flare_merge_params* params, flare_merge_params* full);

// Checks every rule the merge kernel relies on; on failure records a message naming the field
// and its value (flare_last_error) and returns the status. Reads the host arrays part_ptrs /
// lse_ptrs, never device memory.
flare_status validate_merge_params(const flare_merge_params* params);

// Size in bytes of one element of a merge dtype (fp16/bf16: 2, fp32: 4), 0 when unknown.
int merge_dtype_size(int32_t dtype);

}  // namespace flare
