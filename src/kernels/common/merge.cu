// flare_merge_attention_states on the device: the row layout of the public merge params for
// the shared merge kernel of merge.cuh, instantiated for every (part dtype, out dtype) pair.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/common/merge.cuh"
#include "kernels/merge_launch.h"

namespace flare {
namespace {

// Rows are (b, i, h) in that order, so neighbouring rows are neighbouring heads: contiguous
// in the usual [batch, seqlen, heads, head_dim] layout.
template <typename TIn, typename TOut>
struct StatesLayout {
  int n, d, seqlen, heads;
  int64_t rows;
  // Parts: pointer table (use_part_ptrs) or base + s * part_stride.
  bool use_part_ptrs, use_lse_ptrs;
  const TIn* part_base;
  int64_t part_stride;
  const float* lse_base;
  int64_t lse_part_stride;
  const TIn* part_ptr[FLARE_MERGE_MAX_PART_PTRS];
  const float* lse_ptr[FLARE_MERGE_MAX_PART_PTRS];
  int64_t pb, pr, ph;  // part strides
  int64_t lb, lr, lh;  // lse strides
  TOut* out_base;
  int64_t ob, orow, oh;
  float* out_lse_base;
  int64_t olb, olr, olh;

  struct Row {
    int b, i, h;
  };

  // Host and device: launch_merge sizes the grid with them on the host.
  __host__ __device__ int64_t num_rows() const { return rows; }
  __host__ __device__ int num_parts() const { return n; }
  __host__ __device__ int head_dim() const { return d; }
  __host__ __device__ bool out_elementwise() const { return false; }  // validated alignment
  __device__ bool locate(int64_t r, Row& at) const {
    at.h = (int)(r % heads);
    const int64_t bi = r / heads;
    at.i = (int)(bi % seqlen);
    at.b = (int)(bi / seqlen);
    return true;
  }
  __device__ const TIn* part(int s, const Row& at) const {
    const TIn* base = use_part_ptrs ? part_ptr[s] : part_base + (int64_t)s * part_stride;
    return base + at.b * pb + at.i * pr + at.h * ph;
  }
  __device__ float lse(int s, const Row& at) const {
    const float* base = use_lse_ptrs ? lse_ptr[s] : lse_base + (int64_t)s * lse_part_stride;
    return __ldg(base + at.b * lb + at.i * lr + at.h * lh);
  }
  __device__ TOut* out(const Row& at) const {
    return out_base + at.b * ob + at.i * orow + at.h * oh;
  }
  __device__ float* out_lse(const Row& at) const {
    return out_lse_base != nullptr ? out_lse_base + at.b * olb + at.i * olr + at.h * olh
                                   : nullptr;
  }
};

template <typename TIn, typename TOut>
cudaError_t launch_states(const flare_merge_params& p, cudaStream_t stream) {
  StatesLayout<TIn, TOut> L{};
  L.n = p.num_parts;
  L.d = p.head_dim;
  L.seqlen = p.seqlen;
  L.heads = p.num_heads;
  L.rows = (int64_t)p.batch * p.seqlen * p.num_heads;
  L.use_part_ptrs = p.part_ptrs != nullptr;
  L.use_lse_ptrs = p.lse_ptrs != nullptr;
  L.part_base = static_cast<const TIn*>(p.parts);
  L.part_stride = p.part_stride;
  L.lse_base = p.lse;
  L.lse_part_stride = p.lse_part_stride;
  if (L.use_part_ptrs || L.use_lse_ptrs) {
    if (p.num_parts > FLARE_MERGE_MAX_PART_PTRS) return cudaErrorInvalidValue;
    for (int s = 0; s < p.num_parts; ++s) {
      if (L.use_part_ptrs) L.part_ptr[s] = static_cast<const TIn*>(p.part_ptrs[s]);
      if (L.use_lse_ptrs) L.lse_ptr[s] = p.lse_ptrs[s];
    }
  }
  L.pb = p.part_batch_stride;
  L.pr = p.part_row_stride;
  L.ph = p.part_head_stride;
  L.lb = p.lse_batch_stride;
  L.lr = p.lse_row_stride;
  L.lh = p.lse_head_stride;
  L.out_base = static_cast<TOut*>(p.out);
  L.ob = p.out_batch_stride;
  L.orow = p.out_row_stride;
  L.oh = p.out_head_stride;
  L.out_lse_base = p.out_lse;
  L.olb = p.out_lse_batch_stride;
  L.olr = p.out_lse_row_stride;
  L.olh = p.out_lse_head_stride;
  return merge_impl::launch_merge<TIn, TOut>(L, stream);
}

template <typename TIn>
cudaError_t dispatch_out(const flare_merge_params& p, cudaStream_t stream) {
  switch (p.out_dtype) {
    case FLARE_DTYPE_FP16: return launch_states<TIn, __half>(p, stream);
    case FLARE_DTYPE_BF16: return launch_states<TIn, __nv_bfloat16>(p, stream);
    case FLARE_DTYPE_FP32: return launch_states<TIn, float>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

int run_merge_states(const flare_merge_params& p, cudaStream_t stream) {
  switch (p.part_dtype) {
    case FLARE_DTYPE_FP16: return (int)dispatch_out<__half>(p, stream);
    case FLARE_DTYPE_BF16: return (int)dispatch_out<__nv_bfloat16>(p, stream);
    case FLARE_DTYPE_FP32: return (int)dispatch_out<float>(p, stream);
  }
  return (int)cudaErrorInvalidValue;
}

}  // namespace flare
