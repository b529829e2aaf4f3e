// Split-KV combine: merges the per-split normalised partial outputs and their log-sum-exps
// (written by the forward kernel into the workspace) into the final out and lse. The math and
// the kernel are merge.cuh's (the public flare_merge_attention_states runs the same merge_row);
// this file only describes where the split accumulators and the outputs live.
//
// Layout of the accumulators (row r = (b * heads + h) * max_seqlen_q + i):
//   lse_accum[s * rows + r]                 natural-log LSE of split s, -inf when it saw no key
//   o_accum[(s * rows + r) * split_accum_row_floats(head_dim) + d]
//                                           normalised partial output (garbage when lse is -inf;
//                                           the row's floats past head_dim are never stored)
//
// Sinks: the splits write their parts without the sink; the combine counts it once, as one more
// part whose lse is the row's sink logit z and whose output is zero (kZeroRow):
//   lse = log(sum_s exp(lse_s) + exp(z)),  out = sum_s exp(lse_s - lse) o_s,
// and a row whose splits are all empty gets out 0 and lse z.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/sequence.h"
#include "common/serving_semantics.h"
#include "common/split.h"
#include "kernels/common/merge.cuh"
#include "kernels/fwd_launch.h"

namespace flare {
namespace {

// The output of the sink's part: zeros, as wide as the widest row the merge takes.
__device__ __align__(16) float kZeroRow[512];

// merge.cuh's row layout over the split accumulators (parts = splits, fp32) and the caller's
// out / lse (any strides, varlen). Padding rows of shorter varlen sequences are skipped.
template <typename T>
struct SplitAccumLayout {
  FwdLaunch launch;
  int64_t rows;  // batch * heads * max_seqlen_q

  struct Row {
    int64_t r;  // accumulator row
    int i, h;
    SequenceInfo seq;
  };

  __host__ __device__ int64_t num_rows() const { return rows; }
  // The splits, and the sink's part after them.
  __host__ __device__ int num_parts() const {
    return launch.num_splits + (launch.p.sink != nullptr ? 1 : 0);
  }
  __host__ __device__ int head_dim() const { return launch.p.head_dim; }
  // Narrow launches (common/narrow.h): out rows may be odd-element aligned.
  __host__ __device__ bool out_elementwise() const { return launch.narrow; }
  __device__ bool locate(int64_t r, Row& at) const {
    const int max_seqlen_q = launch.max_seqlen_q;
    at.r = r;
    at.i = (int)(r % max_seqlen_q);
    const int64_t bh = r / max_seqlen_q;
    at.h = (int)(bh % launch.p.num_heads);
    at.seq = sequence_info(launch.p, (int)(bh / launch.p.num_heads));
    return at.i < at.seq.seqlen_q;
  }
  __device__ const float* part(int s, const Row& at) const {
    if (s == launch.num_splits) return kZeroRow;
    return launch.o_accum +
           ((int64_t)s * rows + at.r) * split_accum_row_floats(launch.p.head_dim);
  }
  __device__ float lse(int s, const Row& at) const {
    if (s == launch.num_splits)
      return __ldg(launch.p.sink + row_query_head(launch.p, launch.packed_gqa, at.h, at.i));
    return __ldg(launch.lse_accum + (int64_t)s * rows + at.r);
  }
  __device__ T* out(const Row& at) const {
    return static_cast<T*>(launch.p.out) + out_offset(launch.p, at.seq, at.i, at.h);
  }
  __device__ float* out_lse(const Row& at) const {
    return launch.p.lse != nullptr ? launch.p.lse + lse_offset(launch.p, at.seq, at.i, at.h)
                                   : nullptr;
  }
};

template <typename T>
cudaError_t launch_combine(const FwdLaunch& launch, cudaStream_t stream) {
  SplitAccumLayout<T> L{};
  L.launch = launch;
  L.rows = (int64_t)launch.p.batch * launch.p.num_heads * launch.max_seqlen_q;
  // On devices of compute capability >= 9 the plan makes the combine a programmatic dependent of
  // the forward kernel (launch.combine_pdl), so its launch overlaps the forward kernel's tail.
  return merge_impl::launch_merge<float, T>(L, stream, launch.combine_pdl);
}

}  // namespace

int run_split_combine(const FwdLaunch& launch, cudaStream_t stream) {
  const flare_mha_fwd_params& p = launch.p;
  if (p.head_dim <= 0 || (p.head_dim % 8 != 0 && !launch.narrow) || p.head_dim > 256 ||
      launch.num_splits < 1 ||
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
