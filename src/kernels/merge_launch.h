// The contract between flare_merge_attention_states (src/api/merge_api.cpp) and its kernel
// (src/kernels/common/merge.cu).
#pragma once
#include "flare/flare.h"

typedef struct CUstream_st* cudaStream_t;

namespace flare {

// Merges the parts described by validated params (validate_merge_params) on `stream`.
// Returns a cudaError_t value.
int run_merge_states(const flare_merge_params& p, cudaStream_t stream);

}  // namespace flare
