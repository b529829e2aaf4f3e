// Split-KV combine: merges the per-split normalised partial outputs and their log-sum-exps
// (written by the forward kernel into the workspace) into the final out and lse, with the
// shared merge kernel of merge.cuh (the same device code as flare_merge_attention_states).
//
// Layout of the accumulators (row r = (b * heads + h) * max_seqlen_q + i):
//   lse_accum[s * rows + r]                 natural-log LSE of split s, -inf when it saw no key
//   o_accum[(s * rows + r) * head_dim + d]  normalised partial output (garbage when lse is -inf)
// Rows i >= seqlen_q of a shorter varlen sequence are padding and are skipped.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/sequence.h"
#include "kernels/common/merge.cuh"
#include "kernels/fwd_launch.h"

namespace flare {
namespace {

// The row layout of the split accumulators for merge_impl::merge_row.
template <typename T>
struct SplitAccumLayout {
  flare_mha_fwd_params p;  // out, lse, shapes, varlen arrays
  const float* o_accum;
  const float* lse_accum;
  int64_t rows;            // batch * heads * max_seqlen_q
  int max_seqlen_q;
  int n;

  struct Row {
    int64_t row;      // r
    int64_t out_off;  // element offset of the row in out
    int64_t lse_off;  // offset in p.lse
  };

  __device__ int64_t num_rows() const { return rows; }
  __device__ int num_parts() const { return n; }
  __device__ int head_dim() const { return p.head_dim; }
  __device__ bool locate(int64_t r, Row& at) const {
    const int i = (int)(r % max_seqlen_q);
    const int64_t bh = r / max_seqlen_q;
    const int h = (int)(bh % p.num_heads);
    const int b = (int)(bh / p.num_heads);
    const SequenceInfo seq = sequence_info(p, b);
    if (i >= seq.seqlen_q) return false;  // padding row of a shorter varlen sequence
    at.row = r;
    at.out_off = out_offset(p, seq, i, h);
    at.lse_off = p.lse != nullptr ? lse_offset(p, seq, i, h) : 0;
    return true;
  }
  __device__ const float* part(int s, const Row& at) const {
    return o_accum + ((int64_t)s * rows + at.row) * p.head_dim;
  }
  __device__ float lse(int s, const Row& at) const {
    return __ldg(lse_accum + (int64_t)s * rows + at.row);
  }
  __device__ T* out(const Row& at) const { return static_cast<T*>(p.out) + at.out_off; }
  __device__ float* out_lse(const Row& at) const {
    return p.lse != nullptr ? p.lse + at.lse_off : nullptr;
  }
};

template <typename T>
cudaError_t launch_combine(const FwdLaunch& launch, cudaStream_t stream) {
  SplitAccumLayout<T> L;
  L.p = launch.p;
  L.o_accum = launch.o_accum;
  L.lse_accum = launch.lse_accum;
  L.max_seqlen_q = launch.max_seqlen_q;
  L.rows = (int64_t)launch.p.batch * launch.p.num_heads * launch.max_seqlen_q;
  L.n = launch.num_splits;
  return merge_impl::launch_merge<float, T>(L, stream);
}

}  // namespace

int run_split_combine(const FwdLaunch& launch, cudaStream_t stream) {
  const flare_mha_fwd_params& p = launch.p;
  if (p.head_dim <= 0 || p.head_dim % 8 != 0 || p.head_dim > 256 || launch.num_splits < 1 ||
      launch.o_accum == nullptr || launch.lse_accum == nullptr || p.out == nullptr)
    return (int)cudaErrorInvalidValue;
  switch (p.dtype) {
    case FLARE_DTYPE_FP16:
      return (int)launch_combine<__half>(launch, stream);
    case FLARE_DTYPE_BF16:
      return (int)launch_combine<__nv_bfloat16>(launch, stream);
    default:
      return (int)cudaErrorInvalidValue;
  }
}

}  // namespace flare
