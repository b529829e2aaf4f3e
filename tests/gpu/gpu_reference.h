// A deliberately simple fp32 attention kernel used as the reference for shapes too large for the
// CPU reference (seqlen 16k), plus small device helpers (random fill, poison fill, error norms).
// Everything here is independent of flare's kernels: plain loops, one warp per query row.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace flare_test {

struct GpuRefArgs {
  int dtype = 0;  // flare_dtype of q/k/v
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  float* out = nullptr;  // fp32 [batch, seqlen_q, num_heads, head_dim_v], dense
  float* lse = nullptr;  // optional fp32 [batch, num_heads, seqlen_q]
  int batch = 0, seqlen_q = 0, seqlen_k = 0, num_heads = 0, num_heads_k = 0, head_dim = 0;
  int head_dim_v = 0;  // of v and out; 0: head_dim
  int64_t q_batch_stride = 0, q_row_stride = 0, q_head_stride = 0;
  int64_t k_batch_stride = 0, k_row_stride = 0, k_head_stride = 0;
  int64_t v_batch_stride = 0, v_row_stride = 0, v_head_stride = 0;
  float softmax_scale = 0.f;  // 0: 1/sqrt(head_dim)
  float softcap = 0.f;
  int causal = 0;
  int window_left = -1, window_right = -1;  // bottom-right aligned, like flare
  // The serving fields with flare.h's meaning: per-head sink logits [num_heads] (device), and
  // multimodal prefix ranges int32 [batch, max_mm_prefix_ranges, 2] (device).
  const float* sink = nullptr;
  const int32_t* mm_prefix_ranges = nullptr;
  int64_t mm_prefix_ranges_batch_stride = 0;
  int max_mm_prefix_ranges = 0;
};

// Launches the reference on `stream` (head_dim and head_dim_v <= 512; GQA when num_heads_k
// divides num_heads).
cudaError_t gpu_reference_attention(const GpuRefArgs& args, cudaStream_t stream);

// n values ~ N(0, 1) rounded to the dtype, from a counter-based hash of (seed, index).
cudaError_t gpu_fill_normal(void* dst, size_t n, int dtype, uint64_t seed, cudaStream_t stream);
cudaError_t gpu_fill_u16(void* dst, size_t n, uint16_t value, cudaStream_t stream);
cudaError_t gpu_fill_f32(float* dst, size_t n, float value, cudaStream_t stream);

struct GpuDiffStats {
  double diff_sq = 0;             // sum (out - ref)^2
  double ref_sq = 0;              // sum ref^2
  double max_abs = 0;             // max |out - ref|
  unsigned long long nonfinite = 0;  // elements of out that are NaN/inf (e.g. still poisoned)
};

// Compares n dtype elements of `out` against n fp32 `ref` values; synchronises `stream`.
cudaError_t gpu_diff_stats(const void* out, int dtype, const float* ref, size_t n,
                           GpuDiffStats* stats, cudaStream_t stream);

}  // namespace flare_test
