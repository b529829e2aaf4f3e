// Host-side checks of flare_mha_fwd_params.
//
// read_params copies the caller's struct (its first struct_size bytes) over a default-filled
// full struct, so a caller compiled against an older, shorter struct gets the defaults of
// flare_mha_fwd_params_init for every field it does not know.
//
// validate_params checks, in this order, and stops at the first failure:
//   1. dtype;
//   2. the tensors q, k, v, out (and k_new, v_new in step 6): non-null, base aligned to one
//      element (2 bytes: an odd address is refused), strides non-negative, in elements, any
//      value (0 broadcasts);
//   3. shapes: batch, seqlen_q / seqlen_k (or max_seqlen_* for varlen), heads, and
//      the launch limits: batch and num_heads <= 65535 (CUDA grid y / z), sequence lengths
//      <= 2^30 (row indices and block counts stay in 32-bit ints);
//   4. scalar options: softmax_scale, softcap, causal, windows, alibi, p_dropout, and the
//      alignment of the optional alibi_slopes / lse arrays;
//   5. variable length (cu_seqlens_q / cu_seqlens_k / seqused_k, max_seqlen_*);
//   6. KV cache: append (k_new / v_new), rotary, cache_batch_idx / leftpad_k;
//      or, without cache_seqlens, that no KV-cache-only field is set;
//   6a. the FP8 fields: kv_dtype / q_dtype, the descale arrays, FP8 alignment
//      (api/validate_fp8.cpp);
//   6b. the serving fields (head dims, sink, mm_prefix_ranges, paged KV) and the features the
//      GPU kernels do not run yet (api/validate_serving.cpp);
//   7. num_splits and the workspace pointer;
//   8. the extent of every tensor (the element offset one past its last element, from the
//      sizes and strides) is below 2^61, so no 64-bit offset computed on the host or in a
//      kernel (packed-GQA strides included) can overflow;
//   9. the written tensors do not overlap themselves: out's rows and heads (and batch
//      entries), and the K/V cache when k_new is appended (api/layout_check.h). Read-only
//      inputs may overlap (a zero stride broadcasts);
//  10. FP8 inputs the GPU kernels do not run yet (api/validate_fp8.cpp).
//
// read_params accepts a struct_size larger than the library's struct only when every byte past
// the library's struct is zero (a newer caller that sets no field this library lacks).
//
// Every pointer except the tensors' base addresses is a device pointer, and even those are
// only compared, never read: validation never dereferences anything but the params struct.
// Hence rules about the CONTENTS of device arrays (cu_seqlens increasing, cache_seqlens[b] +
// seqlen_new <= capacity, leftpad_k[b] <= cache_seqlens[b], block table entries < num_pages,
// cache_batch_idx[b] in range) cannot be checked here; they are the caller's responsibility.
//
// The head dimension is contiguous by definition (the struct has no head-dim stride). Tensors
// need only element alignment: where a row is not 16-byte addressable (a base not 16-byte
// aligned, a stride not a multiple of 8 elements, a head dim not a multiple of 8) the planner
// makes the launch narrow (common/narrow.h) and the kernels move elements one by one instead of
// 16-byte chunks; the output keeps the caller's head dim and layout. A stride of 0 is accepted:
// it is how a caller leaves the batch stride of a batch of one (or of a varlen tensor) unset.
#include "api/validate.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "api/checks.h"
#include "api/error.h"
#include "api/layout_check.h"
#include "api/read_struct.h"
#include "api/validate_fp8.h"
#include "api/validate_serving.h"
#include "common/serving_semantics.h"

namespace flare {
namespace {

// Fields a caller must always set (tensors, shapes, strides); every field after them has a
// usable default, so an older struct may end anywhere after this point.
constexpr size_t kMinStructSize =
    offsetof(flare_mha_fwd_params, out_head_stride) + sizeof(int64_t);

constexpr uintptr_t kTensorAlignment = 2;  // one fp16/bf16 element
constexpr uintptr_t kWorkspaceAlign = 256;
constexpr int kMaxSplits = 128;
// The forward grid is (query blocks, heads, batch x splits): CUDA allows 65535 in y and z.
constexpr int kMaxGridYZ = 65535;
// Varlen row indices come from int32 cu_seqlens.
constexpr int64_t kMaxVarlenRows = 0x7fffffff;

flare_status check_at_most(const char* name, long long value, long long max, const char* why) {
  if (value > max)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s (%lld) must be <= %lld (%s)", name, value, max,
                why);
  return FLARE_OK;
}

flare_status check_at_least(const char* name, long long value, long long min) {
  if (value < min) return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s (%lld) must be >= %lld", name, value, min);
  return FLARE_OK;
}

flare_status check_flag(const char* name, int32_t value) {
  if (value != 0 && value != 1)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s (%d) must be 0 or 1", name, value);
  return FLARE_OK;
}

flare_status check_finite_non_negative(const char* name, float value) {
  if (!std::isfinite(value) || value < 0.f)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s (%g) must be finite and >= 0", name,
                double(value));
  return FLARE_OK;
}

// a and b must be given together; the message names the missing one.
flare_status check_pair(const char* name_a, const void* a, const char* name_b, const void* b) {
  if (a && !b) return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s is null but %s is set", name_b, name_a);
  if (b && !a) return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s is null but %s is set", name_a, name_b);
  return FLARE_OK;
}

flare_status check_requires_cache(const char* name, const void* ptr) {
  if (ptr) return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s requires cache_seqlens", name);
  return FLARE_OK;
}

// One stride of a tensor, named like its field: "<tensor>_<dim>_stride".
flare_status check_stride(const char* tensor, const char* dim, int64_t value) {
  if (value < 0)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s_%s_stride (%lld) must be >= 0", tensor, dim,
                (long long)value);
  return FLARE_OK;
}

struct TensorRef {
  const char* name;
  const void* data;
  int64_t batch_stride, row_stride, head_stride;
};

flare_status check_tensor(const TensorRef& t) {
  if (!t.data) return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s is null", t.name);
  FLARE_CHECK(check_alignment(t.name, t.data, kTensorAlignment));
  FLARE_CHECK(check_stride(t.name, "batch", t.batch_stride));
  FLARE_CHECK(check_stride(t.name, "row", t.row_stride));
  FLARE_CHECK(check_stride(t.name, "head", t.head_stride));
  return FLARE_OK;
}

flare_status check_dtype(const flare_mha_fwd_params& p) {
  if (p.dtype != FLARE_DTYPE_FP16 && p.dtype != FLARE_DTYPE_BF16)
    return fail(FLARE_ERROR_UNSUPPORTED_DTYPE,
                "dtype (%d) is not supported: use FLARE_DTYPE_FP16 (%d) or FLARE_DTYPE_BF16 (%d)",
                p.dtype, int(FLARE_DTYPE_FP16), int(FLARE_DTYPE_BF16));
  return FLARE_OK;
}

flare_status check_main_tensors(const flare_mha_fwd_params& p) {
  FLARE_CHECK(check_tensor({"q", p.q, p.q_batch_stride, p.q_row_stride, p.q_head_stride}));
  FLARE_CHECK(check_tensor({"k", p.k, p.k_batch_stride, p.k_row_stride, p.k_head_stride}));
  FLARE_CHECK(check_tensor({"v", p.v, p.v_batch_stride, p.v_row_stride, p.v_head_stride}));
  FLARE_CHECK(
      check_tensor({"out", p.out, p.out_batch_stride, p.out_row_stride, p.out_head_stride}));
  return FLARE_OK;
}

flare_status check_shapes(const flare_mha_fwd_params& p) {
  FLARE_CHECK(check_at_least("batch", p.batch, 1));
  if (p.cu_seqlens_q == nullptr && p.cu_seqlens_k == nullptr) {
    // Padded batch; varlen uses max_seqlen_q / max_seqlen_k instead (checked with varlen).
    FLARE_CHECK(check_at_least("seqlen_q", p.seqlen_q, 1));
    FLARE_CHECK(check_at_least("seqlen_k", p.seqlen_k, 0));
    FLARE_CHECK(check_at_most("seqlen_q", p.seqlen_q, kMaxSeqlen, "2^30 rows per sequence"));
    FLARE_CHECK(check_at_most("seqlen_k", p.seqlen_k, kMaxSeqlen, "2^30 rows per sequence"));
  }
  FLARE_CHECK(check_at_most("batch", p.batch, kMaxGridYZ, "the CUDA grid limit"));
  FLARE_CHECK(check_at_least("num_heads", p.num_heads, 1));
  FLARE_CHECK(check_at_most("num_heads", p.num_heads, kMaxGridYZ, "the CUDA grid limit"));
  FLARE_CHECK(check_at_least("num_heads_k", p.num_heads_k, 1));
  if (p.num_heads % p.num_heads_k != 0)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "num_heads (%d) is not a multiple of num_heads_k (%d)",
                p.num_heads, p.num_heads_k);
  return FLARE_OK;
}

flare_status check_options(const flare_mha_fwd_params& p) {
  FLARE_CHECK(check_finite_non_negative("softmax_scale", p.softmax_scale));
  FLARE_CHECK(check_finite_non_negative("softcap", p.softcap));
  FLARE_CHECK(check_flag("causal", p.causal));
  FLARE_CHECK(check_at_least("window_left", p.window_left, -1));
  FLARE_CHECK(check_at_least("window_right", p.window_right, -1));
  FLARE_CHECK(check_alignment("alibi_slopes", p.alibi_slopes, kWordAlignment));
  FLARE_CHECK(check_at_least("alibi_batch_stride", p.alibi_batch_stride, 0));
  if (p.p_dropout != 0.f)  // also true for NaN
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "p_dropout (%g) is not supported: flare implements inference attention without "
                "dropout",
                double(p.p_dropout));
  FLARE_CHECK(check_alignment("lse", p.lse, kWordAlignment));
  return FLARE_OK;
}

flare_status check_varlen(const flare_mha_fwd_params& p) {
  // Paged varlen may give the key counts by seqused_k alone.
  if (!(p.block_table && p.seqused_k && p.cu_seqlens_q))
    FLARE_CHECK(check_pair("cu_seqlens_q", p.cu_seqlens_q, "cu_seqlens_k", p.cu_seqlens_k));
  FLARE_CHECK(check_alignment("seqused_k", p.seqused_k, kWordAlignment));
  if (!p.cu_seqlens_q) return FLARE_OK;
  FLARE_CHECK(check_alignment("cu_seqlens_q", p.cu_seqlens_q, kWordAlignment));
  FLARE_CHECK(check_alignment("cu_seqlens_k", p.cu_seqlens_k, kWordAlignment));
  if (p.max_seqlen_q < 1)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "max_seqlen_q (%d) must be set with cu_seqlens_q (>= 1)", p.max_seqlen_q);
  if (p.max_seqlen_k < 0)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "max_seqlen_k (%d) must be set with cu_seqlens_k (>= 0)", p.max_seqlen_k);
  FLARE_CHECK(check_at_most("max_seqlen_q", p.max_seqlen_q, kMaxSeqlen, "2^30 rows per sequence"));
  FLARE_CHECK(check_at_most("max_seqlen_k", p.max_seqlen_k, kMaxSeqlen, "2^30 rows per sequence"));
  return FLARE_OK;
}

// Fields that only make sense with a KV cache.
flare_status check_no_cache_fields(const flare_mha_fwd_params& p) {
  FLARE_CHECK(check_requires_cache("k_new", p.k_new));
  FLARE_CHECK(check_requires_cache("v_new", p.v_new));
  FLARE_CHECK(check_requires_cache("rotary_cos", p.rotary_cos));
  FLARE_CHECK(check_requires_cache("rotary_sin", p.rotary_sin));
  FLARE_CHECK(check_requires_cache("cache_batch_idx", p.cache_batch_idx));
  FLARE_CHECK(check_requires_cache("leftpad_k", p.leftpad_k));
  return FLARE_OK;
}

flare_status check_append(const flare_mha_fwd_params& p) {
  FLARE_CHECK(check_pair("k_new", p.k_new, "v_new", p.v_new));
  if (!p.k_new) return FLARE_OK;
  FLARE_CHECK(check_at_least("seqlen_new", p.seqlen_new, 1));
  FLARE_CHECK(check_at_most("seqlen_new", p.seqlen_new, kMaxSeqlen, "2^30 rows per sequence"));
  FLARE_CHECK(check_tensor(
      {"k_new", p.k_new, p.k_new_batch_stride, p.k_new_row_stride, p.k_new_head_stride}));
  FLARE_CHECK(check_tensor(
      {"v_new", p.v_new, p.v_new_batch_stride, p.v_new_row_stride, p.v_new_head_stride}));
  // Unpaged: the appended rows must fit the capacity (per-sequence fill levels are on device).
  if (!p.block_table && p.seqlen_new > p.seqlen_k)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "seqlen_new (%d) exceeds the KV cache capacity seqlen_k (%d)", p.seqlen_new,
                p.seqlen_k);
  return FLARE_OK;
}

flare_status check_rotary(const flare_mha_fwd_params& p) {
  FLARE_CHECK(check_pair("rotary_cos", p.rotary_cos, "rotary_sin", p.rotary_sin));
  if (!p.rotary_cos) {
    if (p.rotary_dim != 0)
      return fail(FLARE_ERROR_INVALID_ARGUMENT, "rotary_dim (%d) is set but rotary_cos is null",
                  p.rotary_dim);
    return FLARE_OK;
  }
  if (!p.k_new)
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "rotary_cos without k_new is not supported: rotary embedding is applied to the "
                "appended keys and to q");
  FLARE_CHECK(check_alignment("rotary_cos", p.rotary_cos, kWordAlignment));
  FLARE_CHECK(check_alignment("rotary_sin", p.rotary_sin, kWordAlignment));
  if (p.rotary_dim <= 0 || p.rotary_dim % 2 != 0 || p.rotary_dim > p.head_dim)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "rotary_dim (%d) must be even, > 0 and <= head_dim (%d)", p.rotary_dim,
                p.head_dim);
  FLARE_CHECK(check_at_least("rotary_max_positions", p.rotary_max_positions, 1));
  FLARE_CHECK(check_flag("rotary_interleaved", p.rotary_interleaved));
  return FLARE_OK;
}

flare_status check_kv_cache(const flare_mha_fwd_params& p) {
  if (!p.cache_seqlens) return check_no_cache_fields(p);
  if (p.cu_seqlens_q)
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "cache_seqlens with cu_seqlens_q/cu_seqlens_k (varlen) is not supported");
  if (p.seqused_k)
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "seqused_k with cache_seqlens is not supported: cache_seqlens already gives "
                "the keys in use");
  FLARE_CHECK(check_alignment("cache_seqlens", p.cache_seqlens, kWordAlignment));
  FLARE_CHECK(check_alignment("cache_batch_idx", p.cache_batch_idx, kWordAlignment));
  FLARE_CHECK(check_alignment("leftpad_k", p.leftpad_k, kWordAlignment));
  if (p.seqlen_k < 1)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "seqlen_k (%d) is the KV cache capacity and must be >= 1", p.seqlen_k);
  FLARE_CHECK(check_append(p));
  FLARE_CHECK(check_rotary(p));
  return FLARE_OK;
}

flare_status check_splits_and_workspace(const flare_mha_fwd_params& p) {
  if (p.num_splits < 0 || p.num_splits > kMaxSplits)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "num_splits (%d) must be in [0, %d]", p.num_splits,
                kMaxSplits);
  if (p.workspace_size > 0 && !p.workspace)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "workspace is null but workspace_size (%zu) is > 0",
                p.workspace_size);
  FLARE_CHECK(check_alignment("workspace", p.workspace, kWorkspaceAlign));
  return FLARE_OK;
}

// Element offset one past the last element of a [n, rows, heads, head_dim] tensor with the
// given strides (all sizes >= 1, strides >= 0), saturated at kMaxExtent + 1.
int64_t tensor_extent(int64_t n, int64_t rows, int64_t heads, int64_t head_dim, int64_t bs,
                      int64_t rs, int64_t hs) {
  const unsigned __int128 e = static_cast<unsigned __int128>(n - 1) * uint64_t(bs) +
                              static_cast<unsigned __int128>(rows - 1) * uint64_t(rs) +
                              static_cast<unsigned __int128>(heads - 1) * uint64_t(hs) +
                              uint64_t(head_dim);
  return e > static_cast<unsigned __int128>(kMaxExtent) ? kMaxExtent + 1 : int64_t(e);
}

flare_status check_extent(const char* name, int64_t n, int64_t rows, int64_t heads,
                          const flare_mha_fwd_params& p, int64_t bs, int64_t rs, int64_t hs) {
  if (n < 1 || rows < 1) return FLARE_OK;  // an empty tensor is never addressed
  const int64_t e = tensor_extent(n, rows, heads, p.head_dim, bs, rs, hs);
  if (e > kMaxExtent)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "%s spans more than 2^61 elements (%lld x %lld rows x %lld heads with strides "
                "%lld/%lld/%lld): its 64-bit element offsets could overflow",
                name, (long long)n, (long long)rows, (long long)heads, (long long)bs,
                (long long)rs, (long long)hs);
  return FLARE_OK;
}

// Runs after every other check, so sizes are in range and the flags are consistent.
flare_status check_extents(const flare_mha_fwd_params& p) {
  const bool varlen = p.cu_seqlens_q != nullptr;
  // q / out: varlen rows are indexed through cu_seqlens_q (int32), the batch stride unused.
  const int64_t nq = varlen ? 1 : p.batch;
  const int64_t rows_q = varlen ? kMaxVarlenRows : p.seqlen_q;
  FLARE_CHECK(check_extent("q", nq, rows_q, p.num_heads, p, p.q_batch_stride, p.q_row_stride,
                           p.q_head_stride));
  FLARE_CHECK(check_extent("out", nq, rows_q, p.num_heads, p, p.out_batch_stride,
                           p.out_row_stride, p.out_head_stride));
  // k / v: varlen rows via cu_seqlens_k; paged: pages of page_block_size rows; a KV cache
  // indexed by cache_batch_idx is assumed to hold `batch` entries (its contents are on device).
  int64_t nk = p.batch, rows_k = p.seqlen_k;
  if (varlen) nk = 1, rows_k = kMaxVarlenRows;
  if (p.block_table) nk = p.num_pages, rows_k = p.page_block_size;
  FLARE_CHECK(check_extent("k", nk, rows_k, p.num_heads_k, p, p.k_batch_stride, p.k_row_stride,
                           p.k_head_stride));
  FLARE_CHECK(check_extent("v", nk, rows_k, p.num_heads_k, p, p.v_batch_stride, p.v_row_stride,
                           p.v_head_stride));
  if (p.cache_seqlens && p.k_new) {
    FLARE_CHECK(check_extent("k_new", p.batch, p.seqlen_new, p.num_heads_k, p,
                             p.k_new_batch_stride, p.k_new_row_stride, p.k_new_head_stride));
    FLARE_CHECK(check_extent("v_new", p.batch, p.seqlen_new, p.num_heads_k, p,
                             p.v_new_batch_stride, p.v_new_row_stride, p.v_new_head_stride));
  }
  return FLARE_OK;
}

// Runs last. Outputs must not overlap themselves: out always, the K/V cache when the append
// pass writes into it. The read-only inputs q, k, v may alias (a stride of 0 broadcasts, e.g.
// one K/V for every batch entry); out overlapping an input is not detected and is undefined.
flare_status check_output_layouts(const flare_mha_fwd_params& p) {
  const bool varlen = p.cu_seqlens_q != nullptr;
  const LayoutDim out_dims[3] = {
      {"out_batch_stride", "batch entries", varlen ? 1 : p.batch, p.out_batch_stride},
      {"out_row_stride", "rows", varlen ? kUnknownSize : p.seqlen_q, p.out_row_stride},
      {"out_head_stride", "heads", p.num_heads, p.out_head_stride}};
  FLARE_CHECK(check_no_overlap("out", out_dims, 3, v_head_dim(p)));
  if (p.cache_seqlens && p.k_new) {
    const bool paged = p.block_table != nullptr;
    const int64_t n = paged ? p.num_pages : p.batch;
    const int64_t rows = paged ? p.page_block_size : p.seqlen_k;
    const LayoutDim k_dims[3] = {{"k_batch_stride", "cache entries", n, p.k_batch_stride},
                                 {"k_row_stride", "rows", rows, p.k_row_stride},
                                 {"k_head_stride", "heads", p.num_heads_k, p.k_head_stride}};
    FLARE_CHECK(check_no_overlap("the K cache k", k_dims, 3, p.head_dim));
    const LayoutDim v_dims[3] = {{"v_batch_stride", "cache entries", n, p.v_batch_stride},
                                 {"v_row_stride", "rows", rows, p.v_row_stride},
                                 {"v_head_stride", "heads", p.num_heads_k, p.v_head_stride}};
    FLARE_CHECK(check_no_overlap("the V cache v", v_dims, 3, v_head_dim(p)));
  }
  return FLARE_OK;
}

}  // namespace

flare_status read_params(const flare_mha_fwd_params* params, flare_mha_fwd_params* full) {
  return read_struct(params, full, kMinStructSize, "flare_mha_fwd_params",
                     &flare_mha_fwd_params_init);
}

flare_status validate_params(const flare_mha_fwd_params* params) {
  if (!params) return fail(FLARE_ERROR_INVALID_ARGUMENT, "params is null");
  const flare_mha_fwd_params& p = *params;
  FLARE_CHECK(check_dtype(p));
  FLARE_CHECK(check_main_tensors(p));
  FLARE_CHECK(check_shapes(p));
  FLARE_CHECK(check_options(p));
  FLARE_CHECK(check_varlen(p));
  FLARE_CHECK(check_kv_cache(p));
  FLARE_CHECK(validate_fp8_fields(p));
  FLARE_CHECK(check_serving_params(p));
  FLARE_CHECK(check_splits_and_workspace(p));
  FLARE_CHECK(check_extents(p));
  FLARE_CHECK(check_output_layouts(p));
  return fp8_kernel_support(p);
}


}  // namespace flare
