// Host side of the K/V tensor maps, pure logic (CPU-tested): which launches qualify and the
// 4-D view of K / V. The encoder call lives in tma_encode.cpp.
#include "kernels/sm90/tma_maps.h"

#include <climits>

#include "common/sequence.h"

namespace flare {
namespace {

constexpr uint64_t kMaxStrideBytes = uint64_t(1) << 40;
// Extent used where the host cannot know the true one (see tma_maps.h): any in-range
// coordinate the kernel forms is below it.
constexpr uint64_t kOpenExtent = uint64_t(INT_MAX);

bool stride_ok(int64_t elems) {
  const uint64_t bytes = uint64_t(elems) * 2;
  return elems > 0 && bytes % 16 == 0 && bytes < kMaxStrideBytes;
}

struct KvStrides {
  int64_t batch, row, head;
};
KvStrides strides_of(const flare_mha_fwd_params& p, bool is_v) {
  return is_v ? KvStrides{p.v_batch_stride, p.v_row_stride, p.v_head_stride}
              : KvStrides{p.k_batch_stride, p.k_row_stride, p.k_head_stride};
}

// Whether the batch / head dimension of the view is ever stepped by the kernel.
bool batch_used(const flare_mha_fwd_params& p) {
  return !is_varlen(p) && (p.batch > 1 || p.cache_batch_idx != nullptr);
}
bool heads_used(const flare_mha_fwd_params& p) { return p.num_heads_k > 1; }

}  // namespace

const char* kv_tma_unsupported_reason(const flare_mha_fwd_params& p) {
  if (is_paged(p)) return "paged KV (block_table) has no affine layout";
  // A zero extent is not encodable; such a launch has no whole tile to copy anyway.
  if (!is_varlen(p) && !is_kv_cache(p) && p.seqlen_k < 1) return "seqlen_k is 0";
  for (int is_v = 0; is_v < 2; ++is_v) {
    const KvStrides s = strides_of(p, is_v != 0);
    if (!stride_ok(s.row)) return "row stride is not a positive multiple of 16 bytes below 2^40";
    if (heads_used(p) && !stride_ok(s.head))
      return "head stride is not a positive multiple of 16 bytes below 2^40";
    if (batch_used(p) && !stride_ok(s.batch))
      return "batch stride is not a positive multiple of 16 bytes below 2^40";
  }
  return nullptr;
}

TmaTensorView kv_tma_view(const flare_mha_fwd_params& p, bool is_v) {
  const KvStrides s = strides_of(p, is_v);
  TmaTensorView t;
  // Unused dimensions get extent 1 and any legal stride (the row stride).
  const int64_t head_stride = heads_used(p) ? s.head : s.row;
  const int64_t batch_stride = batch_used(p) ? s.batch : s.row;
  const bool open_rows = is_varlen(p) || is_kv_cache(p);
  t.dims[0] = uint64_t(p.head_dim);
  t.dims[1] = open_rows ? kOpenExtent : uint64_t(p.seqlen_k);
  t.dims[2] = uint64_t(p.num_heads_k);
  t.dims[3] = !batch_used(p) ? 1 : p.cache_batch_idx != nullptr ? kOpenExtent : uint64_t(p.batch);
  t.strides_bytes[0] = uint64_t(s.row) * 2;
  t.strides_bytes[1] = uint64_t(head_stride) * 2;
  t.strides_bytes[2] = uint64_t(batch_stride) * 2;
  return t;
}

}  // namespace flare
