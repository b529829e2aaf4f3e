// The contract between the host dispatcher and the kernels: one resolved launch description
// (what the plan decided, plan/plan.h), and the entry points each kernel translation unit
// instantiates. The launchers carry out the plan: they read no device attribute and no
// environment.
#pragma once
#include <cstddef>
#include "flare/flare.h"
#include "kernels/sm90/variant.h"

typedef struct CUstream_st* cudaStream_t;

namespace flare {

// The kernel family a plan runs.
enum class FwdKernelFamily : int {
  kNone = 0,              // no kernel fits (the call is refused before anything is launched)
  kSm80Prefill,           // mma.sync prefill kernel (fwd_kernel.cuh)
  kSm80Decode,            // mma.sync decode kernel (decode_kernel.cuh), <= 16 query rows
  kSm80DecodeFp8,         // its FP8 K/V instances (kv_dtype e4m3 / e5m2), any query rows
  kSm90WarpSpecialized,   // Hopper producer / consumer kernel (fwd_kernel_sm90_ws.cuh)
  kSm90AllThreads,        // Hopper kernel without a producer warpgroup (fwd_kernel_sm90.cuh)
  kSm90Fp8Prefill,        // Hopper FP8 prefill kernel, q/k/v e4m3 (fwd_fp8_sm90.cuh;
                          // FLARE_FP8_PREFILL builds only)
};

// Everything a forward launch needs, resolved on the host from the caller's params and the plan.
struct FwdLaunch {
  flare_mha_fwd_params p;   // the caller's params, with q redirected to the rotated copy
                            // in the workspace when rotary is applied
  int num_splits;           // >= 1
  int max_seqlen_q;         // rows per batch entry of the split accumulators
  float* o_accum;           // [num_splits, batch, heads, max_seqlen_q,
                            //  split_accum_row_floats(head_dim_v)] when split
  float* lse_accum;         // [num_splits, batch, heads, max_seqlen_q] when split
  FwdKernelFamily family;   // which kernel runs
  int block_m, block_n;     // the instance's tile: query rows per CTA, keys per step
  int kernel_head_dim_v;    // O columns one CTA computes (the instance's V width)
  int v_parts;              // CTAs per (query block, head, split): part j computes O columns
                            // [j * kernel_head_dim_v, (j + 1) * kernel_head_dim_v); the grid's x
                            // dimension runs m blocks x v_parts
  bool sm80_swizzled;       // mma.sync prefill: XOR-swizzled shared-memory rows
  bool narrow;              // tensors not movable in 16-byte chunks: element-granular loads
                            // and stores (common/narrow.h); CTA-uniform
  bool small_pages;         // decode kernels: the SmallPages instance (pages under 16 rows)
  Sm90Variant sm90;         // Hopper variant (families kSm90*)
  int num_sms;              // SMs of the device (grid of persistent launches)
  bool combine_pdl;         // launch the split combine as a programmatic dependent
  bool packed_gqa;          // GQA packing (plan.cpp): row r of head h is query head
                            // h * p.seqlen_q + r (row_query_head: the sink's head)
  unsigned int* tile_counter;  // dynamic tile tickets: a zeroed word in the workspace (null when the plan has none)
};

// Forward kernel of the mma.sync family, compiled for `Arch` (80 or 90), element type
// `Dtype` (flare_dtype) and head dimension `HeadDim` (32, 64, 96, 128, 192, 256, 512): the
// decode or prefill kernel and the instance (key step, row layout) that launch.family / block_n
// / sm80_swizzled name. V, out and the split accumulators have v_head_dim(p) columns (at most
// p.head_dim); the d512 instance computes 256 of them per CTA (launch.v_parts). Returns a
// cudaError_t value.
template <int Arch, int Dtype, int HeadDim>
int run_fwd_sm80(const FwdLaunch& launch, cudaStream_t stream);

// The decode kernel's FP8 K/V instances (family kSm80DecodeFp8), compiled like run_fwd_sm80
// (`Dtype` is q's and out's type) for head dims up to 256. Returns a cudaError_t value.
template <int Arch, int Dtype, int HeadDim>
int run_decode_fp8_sm80(const FwdLaunch& launch, cudaStream_t stream);

// Hopper forward kernels (sm90a only): the variant launch.sm90 names. Compiled for head dims
// 64, 128, 256; p.head_dim may be smaller (the planner runs d96 on the 128 kernel and d192 on
// the 256 kernel, sm90_kernel_head_dim): columns past p.head_dim are zero in shared memory and
// never stored; likewise V's columns past v_head_dim(p). Returns a cudaError_t value.
template <int Dtype, int HeadDim>
int run_fwd_sm90(const FwdLaunch& launch, cudaStream_t stream);

// The Hopper FP8 prefill kernel (sm90a, FLARE_FP8_PREFILL builds): q, k, v e4m3, out `Dtype`,
// for head dims 64, 128, 256 (p.head_dim may be smaller, as for run_fwd_sm90); unpaged, one
// split. Returns a cudaError_t value.
template <int Dtype, int HeadDim>
int run_fwd_fp8_sm90(const FwdLaunch& launch, cudaStream_t stream);

// Merges the split accumulators into out and lse.
int run_split_combine(const FwdLaunch& launch, cudaStream_t stream);

// KV cache append: writes k_new/v_new (keys rotated when rotary is on) into the cache, and the
// rotated q into `q_rotated` (dense [batch, seqlen_q, heads, head_dim]) when rotary is on.
int run_append_kv(const flare_mha_fwd_params& p, void* q_rotated, cudaStream_t stream);

}  // namespace flare
