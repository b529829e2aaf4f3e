// Host side of the Q/K/V tensor maps, pure logic (CPU-tested): which launches qualify, the 4-D
// views of Q / K / V and the box limits. The encoder call lives in tma_encode.cpp.
#include "kernels/sm90/tma_maps.h"

#include <climits>

#include "common/fp8_params.h"
#include "common/sequence.h"
#include "common/serving_semantics.h"

namespace flare {
namespace {

constexpr uint64_t kMaxStrideBytes = uint64_t(1) << 40;
// Extent used where the host cannot know the true one (see tma_maps.h): any in-range
// coordinate the kernel forms is below it.
constexpr uint64_t kOpenExtent = uint64_t(INT_MAX);
constexpr int kMaxBoxDim = 256;         // cuTensorMapEncodeTiled: boxDim[i] <= 256
constexpr int kSwizzleSpanBytes = 128;  // CU_TENSOR_MAP_SWIZZLE_128B

bool stride_ok(int64_t elems, int elem_bytes) {
  const uint64_t bytes = uint64_t(elems) * uint64_t(elem_bytes);
  return elems > 0 && bytes % 16 == 0 && bytes < kMaxStrideBytes;
}

// Element strides of a tensor and its element size in bytes.
struct Strides {
  int64_t batch, row, head;
  int elem_bytes;
};
Strides kv_strides(const flare_mha_fwd_params& p, bool is_v) {
  const int elem_bytes = element_bytes(kv_element_dtype(p));
  return is_v ? Strides{p.v_batch_stride, p.v_row_stride, p.v_head_stride, elem_bytes}
              : Strides{p.k_batch_stride, p.k_row_stride, p.k_head_stride, elem_bytes};
}
Strides q_strides(const flare_mha_fwd_params& p) {
  return Strides{p.q_batch_stride, p.q_row_stride, p.q_head_stride,
                 element_bytes(q_element_dtype(p))};
}

// Whether the batch / head dimension of a view is ever stepped by the kernel. K/V: a KV cache
// with cache_batch_idx may step the batch even for one sequence; Q never has an index.
bool kv_batch_used(const flare_mha_fwd_params& p) {
  return !is_varlen(p) && (p.batch > 1 || p.cache_batch_idx != nullptr);
}
bool kv_heads_used(const flare_mha_fwd_params& p) { return p.num_heads_k > 1; }
bool q_batch_used(const flare_mha_fwd_params& p) { return !is_varlen(p) && p.batch > 1; }
bool q_heads_used(const flare_mha_fwd_params& p) { return p.num_heads > 1; }

const char* strides_reason(const Strides& s, bool heads_used, bool batch_used) {
  if (!stride_ok(s.row, s.elem_bytes))
    return "row stride is not a positive multiple of 16 bytes below 2^40";
  if (heads_used && !stride_ok(s.head, s.elem_bytes))
    return "head stride is not a positive multiple of 16 bytes below 2^40";
  if (batch_used && !stride_ok(s.batch, s.elem_bytes))
    return "batch stride is not a positive multiple of 16 bytes below 2^40";
  return nullptr;
}

// Unused dimensions get extent 1 and any legal stride (the row stride).
TmaTensorView make_view(int head_dim, uint64_t rows, int heads, bool heads_used, uint64_t batches,
                        bool batch_used, const Strides& s) {
  TmaTensorView t;
  t.dims[0] = uint64_t(head_dim);
  t.dims[1] = rows;
  t.dims[2] = uint64_t(heads);
  t.dims[3] = batch_used ? batches : 1;
  t.elem_bytes = s.elem_bytes;
  t.strides_bytes[0] = uint64_t(s.row) * s.elem_bytes;
  t.strides_bytes[1] = uint64_t(heads_used ? s.head : s.row) * s.elem_bytes;
  t.strides_bytes[2] = uint64_t(batch_used ? s.batch : s.row) * s.elem_bytes;
  return t;
}

}  // namespace

const char* tma_box_unsupported_reason(int box_cols, int box_rows, int elem_bytes) {
  if (box_cols < 1 || box_cols > kMaxBoxDim || box_rows < 1 || box_rows > kMaxBoxDim)
    return "box dimension outside 1..256";
  const int inner_bytes = box_cols * elem_bytes;
  if (inner_bytes % 16 != 0) return "inner box span is not a multiple of 16 bytes";
  if (inner_bytes > kSwizzleSpanBytes) return "inner box span exceeds the 128-byte swizzle";
  if (inner_bytes != 128 && inner_bytes != 64)
    return "inner box span is neither a 128-byte nor a 64-byte swizzle row";
  return nullptr;
}

const char* kv_tma_unsupported_reason(const flare_mha_fwd_params& p) {
  if (is_paged(p)) return "paged KV (block_table) has no affine layout";
  // A zero extent is not encodable; such a launch has no whole tile to copy anyway.
  if (!is_varlen(p) && !is_kv_cache(p) && p.seqlen_k < 1) return "seqlen_k is 0";
  for (int is_v = 0; is_v < 2; ++is_v) {
    const char* r = strides_reason(kv_strides(p, is_v != 0), kv_heads_used(p), kv_batch_used(p));
    if (r != nullptr) return r;
  }
  return nullptr;
}

bool kv_tma_rows_exact(const flare_mha_fwd_params& p) { return !is_varlen(p) && !is_kv_cache(p); }
bool q_tma_rows_exact(const flare_mha_fwd_params& p) { return !is_varlen(p); }

TmaTensorView kv_tma_view(const flare_mha_fwd_params& p, bool is_v) {
  const bool open_rows = !kv_tma_rows_exact(p);
  const uint64_t batches = p.cache_batch_idx != nullptr ? kOpenExtent : uint64_t(p.batch);
  // V's rows have v_head_dim columns: a kernel wider than that gets the rest zero-filled.
  return make_view(is_v ? v_head_dim(p) : p.head_dim,
                   open_rows ? kOpenExtent : uint64_t(p.seqlen_k), p.num_heads_k,
                   kv_heads_used(p), batches, kv_batch_used(p), kv_strides(p, is_v));
}

const char* q_tma_unsupported_reason(const flare_mha_fwd_params& p) {
  if (!is_varlen(p) && p.seqlen_q < 1) return "seqlen_q is 0";
  return strides_reason(q_strides(p), q_heads_used(p), q_batch_used(p));
}

TmaTensorView q_tma_view(const flare_mha_fwd_params& p) {
  // Varlen: rows are the packed tokens of all sequences, whose count the host cannot read.
  return make_view(p.head_dim, q_tma_rows_exact(p) ? uint64_t(p.seqlen_q) : kOpenExtent,
                   p.num_heads, q_heads_used(p), uint64_t(p.batch), q_batch_used(p),
                   q_strides(p));
}

}  // namespace flare
