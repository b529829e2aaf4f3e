// The contract between the host dispatcher and the kernels: one resolved launch description,
// and the entry points each kernel translation unit instantiates.
#pragma once
#include <cstddef>
#include "flare/flare.h"

typedef struct CUstream_st* cudaStream_t;

namespace flare {

// Everything a forward launch needs, resolved on the host from the caller's params.
struct FwdLaunch {
  flare_mha_fwd_params p;   // the caller's params, with q redirected to the rotated copy
                            // in the workspace when rotary is applied
  int num_splits;           // >= 1
  int max_seqlen_q;         // rows per batch entry of the split accumulators
  float* o_accum;           // [num_splits, batch, heads, max_seqlen_q, head_dim] when split
  float* lse_accum;         // [num_splits, batch, heads, max_seqlen_q] when split
  int smem_optin;           // shared memory a block may opt in to on this device, bytes
                            // (0: not known; the launchers then assume every variant fits)
  unsigned int* tile_counter;  // dynamic tile tickets: a zeroed word in the workspace (null when the plan has none)
};

// Forward kernel of the mma.sync family, compiled for `Arch` (80 or 90), element type
// `Dtype` (flare_dtype) and head dimension `HeadDim`. Returns a cudaError_t value.
template <int Arch, int Dtype, int HeadDim>
int run_fwd_sm80(const FwdLaunch& launch, cudaStream_t stream);

// Hopper forward kernels (sm90a only; run_fwd_sm90.cuh picks the variant). Compiled for head
// dims 64, 128, 256; p.head_dim may be smaller (the dispatcher runs d96 on the 128 kernel and
// d192 on the 256 kernel, sm90_kernel_head_dim): columns past p.head_dim are zero in shared
// memory and never stored. Returns a cudaError_t value.
template <int Dtype, int HeadDim>
int run_fwd_sm90(const FwdLaunch& launch, cudaStream_t stream);

// Merges the split accumulators into out and lse.
int run_split_combine(const FwdLaunch& launch, cudaStream_t stream);

// KV cache append: writes k_new/v_new (keys rotated when rotary is on) into the cache, and the
// rotated q into `q_rotated` (dense [batch, seqlen_q, heads, head_dim]) when rotary is on.
int run_append_kv(const flare_mha_fwd_params& p, void* q_rotated, cudaStream_t stream);

}  // namespace flare
