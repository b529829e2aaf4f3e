// Host-side checks of the FP8 fields (flare.h, "FP8 inputs"), in this order:
//   1. kv_dtype is 0, FLARE_DTYPE_E4M3 or FLARE_DTYPE_E5M2; q_dtype is 0 or FLARE_DTYPE_E4M3,
//      and FP8 q comes with e4m3 k / v and without a KV-cache append (q is read as stored);
//   2. each descale array is set exactly when its tensor is FP8, 4-byte aligned, with
//      non-negative strides and an extent below 2^61;
//   3. FP8 tensors: 16-byte aligned bases and strides that are multiples of 16 elements (the
//      kernels move 16-byte chunks of 16 codes), head dims (and head_dim_v) multiples of 16.
// Like the rest of validation it never reads device memory: the descale VALUES (finite,
// non-zero) are the caller's responsibility.
#include "api/validate_fp8.h"

#include <cstdint>

#include "api/checks.h"
#include "api/error.h"
#include "common/fp8_params.h"
#include "common/narrow.h"
#include "common/serving_semantics.h"
#include "common/tile_config.h"
#include "kernels/sm90/variant.h"

namespace flare {
namespace {

constexpr int kFp8Chunk = 16;  // bytes = elements of a kernel's FP8 load

const char* dtype_name(int dtype) {
  switch (dtype) {
    case FLARE_DTYPE_E4M3: return "e4m3";
    case FLARE_DTYPE_E5M2: return "e5m2";
    case FLARE_DTYPE_FP16: return "fp16";
    case FLARE_DTYPE_BF16: return "bf16";
    default: return "unknown";
  }
}

flare_status check_dtypes(const flare_mha_fwd_params& p) {
  if (p.kv_dtype != 0 && !is_fp8_dtype(p.kv_dtype))
    return fail(FLARE_ERROR_UNSUPPORTED_DTYPE,
                "kv_dtype (%d) is not supported: use 0 (k and v have dtype), FLARE_DTYPE_E4M3 "
                "(%d) or FLARE_DTYPE_E5M2 (%d)",
                p.kv_dtype, int(FLARE_DTYPE_E4M3), int(FLARE_DTYPE_E5M2));
  if (p.q_dtype != 0 && p.q_dtype != FLARE_DTYPE_E4M3)
    return fail(FLARE_ERROR_UNSUPPORTED_DTYPE,
                "q_dtype (%d) is not supported: use 0 (q has dtype) or FLARE_DTYPE_E4M3 (%d)",
                p.q_dtype, int(FLARE_DTYPE_E4M3));
  if (!has_fp8_q(p)) return FLARE_OK;
  if (p.kv_dtype != FLARE_DTYPE_E4M3)
    return fail(FLARE_ERROR_UNSUPPORTED_DTYPE,
                "q_dtype e4m3 needs kv_dtype e4m3 (FLARE_DTYPE_E4M3, %d): kv_dtype is %d (%s)",
                int(FLARE_DTYPE_E4M3), p.kv_dtype, p.kv_dtype ? dtype_name(p.kv_dtype) : "dtype");
  if (p.k_new)
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "k_new with q_dtype e4m3: an FP8 q cannot be rotated or appended with; pass q in "
                "dtype for KV-cache appends");
  return FLARE_OK;
}

struct Descale {
  const char* name;
  const float* data;
  int64_t batch_stride, head_stride;
  bool fp8;                // whether its tensor is FP8 (the array must be set exactly then)
  const char* tensor_rule;  // what makes its tensor FP8, for the messages
};

flare_status check_descale(const flare_mha_fwd_params& p, const Descale& d) {
  if (d.fp8 && !d.data)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "%s is null: %s, whose codes need their descale factors (one per tensor: strides 0)",
                d.name, d.tensor_rule);
  if (!d.fp8 && d.data)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "%s is set but its tensor is not FP8 (%s does not hold)", d.name, d.tensor_rule);
  if (!d.data) return FLARE_OK;
  FLARE_CHECK(check_alignment(d.name, d.data, kWordAlignment));
  if (d.batch_stride < 0 || d.head_stride < 0)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s strides (%lld, %lld) must be >= 0", d.name,
                (long long)d.batch_stride, (long long)d.head_stride);
  // batch, num_heads_k <= 65535 (validated): products of a stride below 2^61 by them fit in
  // 128 bits, and the check keeps every index of the kernels in 64 bits.
  const unsigned __int128 extent =
      static_cast<unsigned __int128>(p.batch - 1) * uint64_t(d.batch_stride) +
      static_cast<unsigned __int128>(p.num_heads_k - 1) * uint64_t(d.head_stride);
  if (extent >= static_cast<unsigned __int128>(kMaxExtent))
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "%s spans more than 2^61 elements (strides %lld, %lld): its 64-bit element "
                "offsets could overflow",
                d.name, (long long)d.batch_stride, (long long)d.head_stride);
  return FLARE_OK;
}

// An FP8 tensor's base and strides address whole 16-byte chunks.
flare_status check_fp8_tensor(const char* name, const void* data, int64_t batch_stride,
                              int64_t row_stride, int64_t head_stride) {
  FLARE_CHECK(check_alignment(name, data, kFp8Chunk));
  const int64_t strides[3] = {batch_stride, row_stride, head_stride};
  const char* dims[3] = {"batch", "row", "head"};
  for (int i = 0; i < 3; ++i)
    if (strides[i] % kFp8Chunk != 0)
      return fail(FLARE_ERROR_MISALIGNED,
                  "%s_%s_stride (%lld) is not a multiple of %d elements: FP8 rows are read in "
                  "16-byte chunks",
                  name, dims[i], (long long)strides[i], kFp8Chunk);
  return FLARE_OK;
}

flare_status check_fp8_layouts(const flare_mha_fwd_params& p) {
  const bool kv = has_fp8_kv(p), q = has_fp8_q(p);
  if (!kv && !q) return FLARE_OK;
  if (p.head_dim % kFp8Chunk != 0 || v_head_dim(p) % kFp8Chunk != 0)
    return fail(FLARE_ERROR_UNSUPPORTED_HEAD_DIM,
                "head_dim (%d) / head_dim_v (%d): FP8 inputs need head dims that are multiples of "
                "%d",
                p.head_dim, v_head_dim(p), kFp8Chunk);
  if (q) FLARE_CHECK(check_fp8_tensor("q", p.q, p.q_batch_stride, p.q_row_stride, p.q_head_stride));
  if (kv) {
    FLARE_CHECK(check_fp8_tensor("k", p.k, p.k_batch_stride, p.k_row_stride, p.k_head_stride));
    FLARE_CHECK(check_fp8_tensor("v", p.v, p.v_batch_stride, p.v_row_stride, p.v_head_stride));
  }
  return FLARE_OK;
}

#if FLARE_FP8_PREFILL
// FP8 q on the Hopper FP8 prefill kernel (fwd_fp8_sm90.cuh): its head dims (64, 128, 256, the
// smaller ones on the next of these), head_dim_v equal to head_dim, unpaged K/V, out and the
// rest 16-byte chunk addressable. The device (compute capability 9.0) is the planner's check.
flare_status fp8_prefill_support(const flare_mha_fwd_params& p) {
  const int kernel_head_dim = sm90_kernel_head_dim(padded_head_dim(p.head_dim));
  if (kernel_head_dim == 0 || kernel_head_dim > 256)
    return fail(FLARE_ERROR_UNSUPPORTED_HEAD_DIM,
                "head_dim %d with q_dtype e4m3: the FP8 prefill kernel takes head dims 48 to 256",
                p.head_dim);
  if (v_head_dim(p) != p.head_dim)
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "head_dim_v %d with q_dtype e4m3: the FP8 prefill kernel needs head_dim_v equal "
                "to head_dim (%d)",
                v_head_dim(p), p.head_dim);
  if (p.block_table)
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "block_table with q_dtype e4m3: the FP8 prefill kernel reads contiguous K/V only");
  if (is_narrow(p))
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "q_dtype e4m3: out of an FP8 prefill call needs a 16-byte aligned base and "
                "strides that are multiples of 8 elements");
  return FLARE_OK;
}
#endif

}  // namespace

flare_status validate_fp8_fields(const flare_mha_fwd_params& p) {
  FLARE_CHECK(check_dtypes(p));
  const bool kv = has_fp8_kv(p), q = has_fp8_q(p);
  FLARE_CHECK(check_descale(p, {"q_descale", p.q_descale, p.q_descale_batch_stride,
                                p.q_descale_head_stride, q, "q_dtype is FP8"}));
  FLARE_CHECK(check_descale(p, {"k_descale", p.k_descale, p.k_descale_batch_stride,
                                p.k_descale_head_stride, kv, "kv_dtype is FP8"}));
  FLARE_CHECK(check_descale(p, {"v_descale", p.v_descale, p.v_descale_batch_stride,
                                p.v_descale_head_stride, kv, "kv_dtype is FP8"}));
  return check_fp8_layouts(p);
}

flare_status fp8_kernel_support(const flare_mha_fwd_params& p) {
#if FLARE_FP8_PREFILL
  if (has_fp8_q(p)) return fp8_prefill_support(p);
#else
  if (has_fp8_q(p))
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "q_dtype e4m3: FP8 prefill is not implemented on the GPU kernels yet");
#endif
  if (!has_fp8_kv(p)) return FLARE_OK;
  if (!sm80_has_decode_kernel(padded_head_dim(p.head_dim)))
    return fail(FLARE_ERROR_UNSUPPORTED_HEAD_DIM,
                "head_dim %d with kv_dtype %s: FP8 K/V run on the decode kernel, head dims up to "
                "256",
                p.head_dim, dtype_name(kv_element_dtype(p)));
  if (is_narrow(p))
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "kv_dtype %s: q, out, k_new and v_new of an FP8 K/V call need 16-byte aligned "
                "bases and strides that are multiples of 8 elements",
                dtype_name(kv_element_dtype(p)));
  return FLARE_OK;
}

}  // namespace flare
