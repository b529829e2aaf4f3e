// Validation of flare_merge_params.
//
// Checks, in this order, stopping at the first failure:
//   1. num_parts, part_dtype, out_dtype;
//   2. the partial outputs: exactly one of part_ptrs / parts, the pointer count limit, every
//      pointer non-null and aligned to 4 elements, part_stride;
//   3. the partial LSEs: exactly one of lse_ptrs / lse, pointers non-null and 4-byte aligned,
//      lse_part_stride;
//   4. shapes: batch, seqlen, num_heads >= 1; head_dim a multiple of 4 in [4, 512];
//   5. strides: part and out strides >= 0 and multiples of 4 elements; lse strides >= 0;
//   6. out (non-null, aligned), out_lse (optional, 4-byte aligned, strides >= 0), and neither
//      overlapping itself (api/layout_check.h);
//   7. in-place use: an output at the address of an input must have its dtype and strides.
#include "api/merge_validate.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "api/checks.h"
#include "api/error.h"
#include "api/layout_check.h"
#include "api/read_struct.h"

namespace flare {
namespace {

// Fields through out_head_stride must always be set; out_lse and its strides may be absent.
constexpr size_t kMinMergeStructSize =
    offsetof(flare_merge_params, out_head_stride) + sizeof(int64_t);
constexpr int kMinHeadDim = 4;
constexpr int kMaxHeadDim = 512;
constexpr int64_t kVector = 4;  // elements per vector access

const char* dtype_text(int32_t dtype) {
  switch (dtype) {
    case FLARE_DTYPE_FP16: return "fp16";
    case FLARE_DTYPE_BF16: return "bf16";
    case FLARE_DTYPE_FP32: return "fp32";
  }
  return "unknown";
}

flare_status check_dtype(const char* name, int32_t dtype) {
  if (merge_dtype_size(dtype) == 0)
    return fail(FLARE_ERROR_UNSUPPORTED_DTYPE,
                "%s (%d) is not supported: use FLARE_DTYPE_FP16 (%d), FLARE_DTYPE_BF16 (%d) or "
                "FLARE_DTYPE_FP32 (%d)",
                name, dtype, int(FLARE_DTYPE_FP16), int(FLARE_DTYPE_BF16), int(FLARE_DTYPE_FP32));
  return FLARE_OK;
}

// A stride of a vector-accessed tensor: >= 0 and whole groups of 4 elements.
flare_status check_vector_stride(const char* name, int64_t value, int esize) {
  if (value < 0)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s (%lld) must be >= 0", name, (long long)value);
  if (value % kVector != 0)
    return fail(FLARE_ERROR_MISALIGNED, "%s (%lld) is not a multiple of %lld elements (%d bytes)",
                name, (long long)value, (long long)kVector, int(kVector) * esize);
  return FLARE_OK;
}

flare_status check_non_negative(const char* name, int64_t value) {
  if (value < 0)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s (%lld) must be >= 0", name, (long long)value);
  return FLARE_OK;
}

flare_status check_at_least(const char* name, long long value, long long min) {
  if (value < min)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s (%lld) must be >= %lld", name, value, min);
  return FLARE_OK;
}

// One of a (host array of pointers, single pointer) pair must be set.
flare_status check_one_of(const char* array_name, const void* array, const char* base_name,
                          const void* base) {
  if (array && base)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s and %s are both set: give exactly one",
                array_name, base_name);
  if (!array && !base)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s and %s are both null: give exactly one",
                array_name, base_name);
  return FLARE_OK;
}

// A host table of num_parts device pointers (part_ptrs, lse_ptrs): within the table limit, none
// null, each aligned. `alternative` names the stacked form to use for more parts.
template <typename Ptr>
flare_status check_pointer_table(const char* table, const Ptr* ptrs, int num_parts,
                                 uintptr_t align, const char* alternative) {
  if (num_parts > FLARE_MERGE_MAX_PART_PTRS)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "num_parts (%d) exceeds FLARE_MERGE_MAX_PART_PTRS (%d) with %s: pass %s instead",
                num_parts, FLARE_MERGE_MAX_PART_PTRS, table, alternative);
  char name[48];
  for (int s = 0; s < num_parts; ++s) {
    std::snprintf(name, sizeof name, "%s[%d]", table, s);
    if (!ptrs[s]) return fail(FLARE_ERROR_INVALID_ARGUMENT, "%s is null", name);
    FLARE_CHECK(check_alignment(name, ptrs[s], align));
  }
  return FLARE_OK;
}

flare_status check_parts(const flare_merge_params& p) {
  const int esize = merge_dtype_size(p.part_dtype);
  const uintptr_t align = uintptr_t(kVector * esize);
  FLARE_CHECK(check_one_of("part_ptrs", p.part_ptrs, "parts", p.parts));
  if (p.part_ptrs) {
    FLARE_CHECK(check_pointer_table("part_ptrs", p.part_ptrs, p.num_parts, align,
                                    "parts + part_stride"));
  } else {
    FLARE_CHECK(check_alignment("parts", p.parts, align));
    FLARE_CHECK(check_vector_stride("part_stride", p.part_stride, esize));
  }
  return FLARE_OK;
}

flare_status check_lses(const flare_merge_params& p) {
  FLARE_CHECK(check_one_of("lse_ptrs", p.lse_ptrs, "lse", p.lse));
  if (p.lse_ptrs) {
    FLARE_CHECK(check_pointer_table("lse_ptrs", p.lse_ptrs, p.num_parts, 4,
                                    "lse + lse_part_stride"));
  } else {
    FLARE_CHECK(check_alignment("lse", p.lse, 4));
    FLARE_CHECK(check_non_negative("lse_part_stride", p.lse_part_stride));
  }
  return FLARE_OK;
}

flare_status check_shapes(const flare_merge_params& p) {
  FLARE_CHECK(check_at_least("batch", p.batch, 1));
  FLARE_CHECK(check_at_least("seqlen", p.seqlen, 1));
  FLARE_CHECK(check_at_least("num_heads", p.num_heads, 1));
  if (p.head_dim < kMinHeadDim || p.head_dim > kMaxHeadDim || p.head_dim % kVector != 0)
    return fail(FLARE_ERROR_UNSUPPORTED_HEAD_DIM,
                "head_dim (%d) is not supported: it must be a multiple of %d in [%d, %d]",
                p.head_dim, int(kVector), kMinHeadDim, kMaxHeadDim);
  return FLARE_OK;
}

flare_status check_strides(const flare_merge_params& p) {
  const int pe = merge_dtype_size(p.part_dtype), oe = merge_dtype_size(p.out_dtype);
  FLARE_CHECK(check_vector_stride("part_batch_stride", p.part_batch_stride, pe));
  FLARE_CHECK(check_vector_stride("part_row_stride", p.part_row_stride, pe));
  FLARE_CHECK(check_vector_stride("part_head_stride", p.part_head_stride, pe));
  FLARE_CHECK(check_non_negative("lse_batch_stride", p.lse_batch_stride));
  FLARE_CHECK(check_non_negative("lse_row_stride", p.lse_row_stride));
  FLARE_CHECK(check_non_negative("lse_head_stride", p.lse_head_stride));
  FLARE_CHECK(check_vector_stride("out_batch_stride", p.out_batch_stride, oe));
  FLARE_CHECK(check_vector_stride("out_row_stride", p.out_row_stride, oe));
  FLARE_CHECK(check_vector_stride("out_head_stride", p.out_head_stride, oe));
  return FLARE_OK;
}

flare_status check_outputs(const flare_merge_params& p) {
  if (!p.out) return fail(FLARE_ERROR_INVALID_ARGUMENT, "out is null");
  FLARE_CHECK(check_alignment("out", p.out, uintptr_t(kVector * merge_dtype_size(p.out_dtype))));
  if (p.out_lse) {
    FLARE_CHECK(check_alignment("out_lse", p.out_lse, 4));
    FLARE_CHECK(check_non_negative("out_lse_batch_stride", p.out_lse_batch_stride));
    FLARE_CHECK(check_non_negative("out_lse_row_stride", p.out_lse_row_stride));
    FLARE_CHECK(check_non_negative("out_lse_head_stride", p.out_lse_head_stride));
  }
  // The merged rows are written: no two (batch, row, head) entries may share an element.
  const LayoutDim out_dims[3] = {
      {"out_batch_stride", "batch entries", p.batch, p.out_batch_stride},
      {"out_row_stride", "rows", p.seqlen, p.out_row_stride},
      {"out_head_stride", "heads", p.num_heads, p.out_head_stride}};
  FLARE_CHECK(check_no_overlap("out", out_dims, 3, p.head_dim));
  if (p.out_lse) {
    const LayoutDim lse_dims[3] = {
        {"out_lse_batch_stride", "batch entries", p.batch, p.out_lse_batch_stride},
        {"out_lse_row_stride", "rows", p.seqlen, p.out_lse_row_stride},
        {"out_lse_head_stride", "heads", p.num_heads, p.out_lse_head_stride}};
    FLARE_CHECK(check_no_overlap("out_lse", lse_dims, 3, 1));
  }
  return FLARE_OK;
}

// Address of part s / lse s (only compared, never dereferenced).
const char* part_address(const flare_merge_params& p, int s) {
  if (p.part_ptrs) return static_cast<const char*>(p.part_ptrs[s]);
  return static_cast<const char*>(p.parts) + p.part_stride * s * merge_dtype_size(p.part_dtype);
}
const char* lse_address(const flare_merge_params& p, int s) {
  if (p.lse_ptrs) return reinterpret_cast<const char*>(p.lse_ptrs[s]);
  return reinterpret_cast<const char*>(p.lse + p.lse_part_stride * s);
}

flare_status check_in_place(const flare_merge_params& p) {
  for (int s = 0; s < p.num_parts; ++s) {
    if (part_address(p, s) == static_cast<const char*>(p.out)) {
      if (p.out_dtype != p.part_dtype)
        return fail(FLARE_ERROR_INVALID_ARGUMENT,
                    "out is part %d in place but out_dtype (%s) differs from part_dtype (%s)", s,
                    dtype_text(p.out_dtype), dtype_text(p.part_dtype));
      if (p.out_batch_stride != p.part_batch_stride || p.out_row_stride != p.part_row_stride ||
          p.out_head_stride != p.part_head_stride)
        return fail(FLARE_ERROR_INVALID_ARGUMENT,
                    "out is part %d in place but its strides (%lld, %lld, %lld) differ from the "
                    "part strides (%lld, %lld, %lld)",
                    s, (long long)p.out_batch_stride, (long long)p.out_row_stride,
                    (long long)p.out_head_stride, (long long)p.part_batch_stride,
                    (long long)p.part_row_stride, (long long)p.part_head_stride);
    }
    if (p.out_lse && lse_address(p, s) == reinterpret_cast<const char*>(p.out_lse) &&
        (p.out_lse_batch_stride != p.lse_batch_stride ||
         p.out_lse_row_stride != p.lse_row_stride || p.out_lse_head_stride != p.lse_head_stride))
      return fail(FLARE_ERROR_INVALID_ARGUMENT,
                  "out_lse is the lse of part %d in place but its strides (%lld, %lld, %lld) "
                  "differ from the lse strides (%lld, %lld, %lld)",
                  s, (long long)p.out_lse_batch_stride, (long long)p.out_lse_row_stride,
                  (long long)p.out_lse_head_stride, (long long)p.lse_batch_stride,
                  (long long)p.lse_row_stride, (long long)p.lse_head_stride);
  }
  return FLARE_OK;
}

}  // namespace

int merge_dtype_size(int32_t dtype) {
  switch (dtype) {
    case FLARE_DTYPE_FP16:
    case FLARE_DTYPE_BF16: return 2;
    case FLARE_DTYPE_FP32: return 4;
  }
  return 0;
}

flare_status read_merge_params(const flare_merge_params* params, flare_merge_params* full) {
  return read_struct(params, full, kMinMergeStructSize, "flare_merge_params",
                     &flare_merge_params_init);
}

flare_status validate_merge_params(const flare_merge_params* params) {
  if (!params) return fail(FLARE_ERROR_INVALID_ARGUMENT, "params is null");
  const flare_merge_params& p = *params;
  FLARE_CHECK(check_at_least("num_parts", p.num_parts, 1));
  FLARE_CHECK(check_dtype("part_dtype", p.part_dtype));
  FLARE_CHECK(check_dtype("out_dtype", p.out_dtype));
  FLARE_CHECK(check_parts(p));
  FLARE_CHECK(check_lses(p));
  FLARE_CHECK(check_shapes(p));
  FLARE_CHECK(check_strides(p));
  FLARE_CHECK(check_outputs(p));
  FLARE_CHECK(check_in_place(p));
  return FLARE_OK;
}


}  // namespace flare

extern "C" FLARE_API void flare_merge_params_init(flare_merge_params* params) {
  if (!params) return;
  *params = flare_merge_params{};
  params->struct_size = sizeof(flare_merge_params);
}
