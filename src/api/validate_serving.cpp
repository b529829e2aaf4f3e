// Host-side checks of the serving fields (flare.h: head_dim / head_dim_v, sink,
// mm_prefix_ranges, paged KV in both modes) and the list of valid params the GPU kernels do
// not run yet.
//
// validate_serving_fields runs inside validate_params after the shapes, options, varlen and
// KV cache checks and before the workspace and extent checks, in this order:
//   1. head dims: head_dim in [1, 512]; head_dim_v 0 (= head_dim) or a pair of the accepted
//      list (every equal pair, (192, 128));
//   2. sink: 4-byte aligned;
//   3. mm_prefix_ranges: 4-byte aligned, max_mm_prefix_ranges >= 0 (0 when the pointer is
//      null), mm_prefix_ranges_batch_stride >= 2 * max_mm_prefix_ranges, and the last entry's
//      element offset below 2^61;
//   4. paged KV (block_table): with cache_seqlens (KV cache) or cu_seqlens_q (paged varlen),
//      not with cache_batch_idx, 4-byte aligned, page_block_size in [1, 2^30],
//      block_table_batch_stride >= 1, num_pages >= 1.
// Like the rest of validation it never reads device memory, so the CONTENTS of sink, the
// ranges and the block table are the caller's responsibility (a range with start >= end is
// empty by definition, never an error).
//
// v and out are checked by validate.cpp with head_dim's width; every accepted head_dim_v is at
// most head_dim, so those extent checks bound the head_dim_v tensors too.
//
// serving_features_not_yet_supported then lists the valid params the GPU kernels cannot run
// yet, one feature a check; each check goes away when its kernels land (and its GPU tests flip,
// tests/gpu/test_serving.cpp). Head dims keep FLARE_ERROR_UNSUPPORTED_HEAD_DIM, the status
// they had before head dims up to 512 became valid input; the other features return
// FLARE_ERROR_NOT_SUPPORTED.
#include "api/validate_serving.h"

#include <cstdint>

#include "api/checks.h"
#include "api/error.h"

namespace flare {
namespace {

constexpr int kMaxHeadDim = 512;
// The head dims the GPU kernels run today: [1, 256] (those that are not multiples of 8 as
// narrow launches, common/narrow.h).
constexpr int kKernelMaxHeadDim = 256;

// (head_dim, head_dim_v) pairs with a separate V head dim that flare accepts.
struct HeadDimPair {
  int qk, v;
};
constexpr HeadDimPair kSeparateVPairs[] = {{192, 128}};

flare_status check_head_dims(const flare_mha_fwd_params& p) {
  if (p.head_dim < 1 || p.head_dim > kMaxHeadDim)
    return fail(FLARE_ERROR_UNSUPPORTED_HEAD_DIM,
                "head_dim (%d) is not supported: it must be in [1, %d]", p.head_dim, kMaxHeadDim);
  if (p.head_dim_v == 0 || p.head_dim_v == p.head_dim) return FLARE_OK;
  for (const HeadDimPair& pair : kSeparateVPairs)
    if (p.head_dim == pair.qk && p.head_dim_v == pair.v) return FLARE_OK;
  return fail(FLARE_ERROR_UNSUPPORTED_HEAD_DIM,
              "head_dim_v (%d) with head_dim (%d) is not supported: the accepted (head_dim, "
              "head_dim_v) pairs are equal dims and (192, 128); head_dim_v 0 means head_dim",
              p.head_dim_v, p.head_dim);
}

flare_status check_mm_prefix_ranges(const flare_mha_fwd_params& p) {
  if (!p.mm_prefix_ranges) {
    if (p.max_mm_prefix_ranges != 0)
      return fail(FLARE_ERROR_INVALID_ARGUMENT,
                  "max_mm_prefix_ranges (%d) is set but mm_prefix_ranges is null",
                  p.max_mm_prefix_ranges);
    return FLARE_OK;
  }
  FLARE_CHECK(check_alignment("mm_prefix_ranges", p.mm_prefix_ranges, kWordAlignment));
  if (p.max_mm_prefix_ranges < 0)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "max_mm_prefix_ranges (%d) must be >= 0",
                p.max_mm_prefix_ranges);
  const int64_t row = 2 * int64_t(p.max_mm_prefix_ranges);
  if (p.mm_prefix_ranges_batch_stride < row)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "mm_prefix_ranges_batch_stride (%lld) must be >= 2 * max_mm_prefix_ranges "
                "(%lld): each sequence holds max_mm_prefix_ranges [start, end) pairs",
                (long long)p.mm_prefix_ranges_batch_stride, (long long)row);
  // batch <= 65535 and row < 2^32 (validated), so only the stride product can overflow.
  const unsigned __int128 extent =
      static_cast<unsigned __int128>(p.batch - 1) * uint64_t(p.mm_prefix_ranges_batch_stride) +
      uint64_t(row);
  if (extent > static_cast<unsigned __int128>(kMaxExtent))
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "mm_prefix_ranges spans more than 2^61 elements (batch %d, "
                "mm_prefix_ranges_batch_stride %lld): its 64-bit element offsets could overflow",
                p.batch, (long long)p.mm_prefix_ranges_batch_stride);
  return FLARE_OK;
}

flare_status check_paged(const flare_mha_fwd_params& p) {
  if (!p.block_table) return FLARE_OK;
  if (!p.cache_seqlens && !p.cu_seqlens_q)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "block_table requires cache_seqlens (KV cache) or cu_seqlens_q (paged varlen)");
  if (p.cache_batch_idx)
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "cache_batch_idx with block_table is not supported: index the block table "
                "instead");
  FLARE_CHECK(check_alignment("block_table", p.block_table, kWordAlignment));
  if (p.page_block_size < 1)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "page_block_size (%d) must be >= 1",
                p.page_block_size);
  if (p.page_block_size > kMaxSeqlen)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "page_block_size (%d) must be <= %d (2^30 rows per sequence)", p.page_block_size,
                kMaxSeqlen);
  if (p.block_table_batch_stride < 1)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "block_table_batch_stride (%lld) must be >= 1",
                (long long)p.block_table_batch_stride);
  if (p.num_pages < 1)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "num_pages (%d) must be >= 1", p.num_pages);
  return FLARE_OK;
}

}  // namespace

flare_status validate_serving_fields(const flare_mha_fwd_params& p) {
  FLARE_CHECK(check_head_dims(p));
  FLARE_CHECK(check_alignment("sink", p.sink, kWordAlignment));
  FLARE_CHECK(check_mm_prefix_ranges(p));
  FLARE_CHECK(check_paged(p));
  return FLARE_OK;
}

flare_status serving_features_not_yet_supported(const flare_mha_fwd_params& p) {
  if (p.head_dim > kKernelMaxHeadDim)
    return fail(FLARE_ERROR_UNSUPPORTED_HEAD_DIM,
                "head_dim (%d) is not supported by the GPU kernels yet: they run [1, %d]",
                p.head_dim, kKernelMaxHeadDim);
  if (p.head_dim_v != 0 && p.head_dim_v != p.head_dim)
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "head_dim_v (%d) != head_dim (%d): a separate V head dim is not implemented on "
                "the GPU kernels yet",
                p.head_dim_v, p.head_dim);
  return FLARE_OK;
}

flare_status check_serving_params(const flare_mha_fwd_params& p) {
  FLARE_CHECK(validate_serving_fields(p));
  return serving_features_not_yet_supported(p);
}


}  // namespace flare
