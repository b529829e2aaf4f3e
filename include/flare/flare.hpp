// flare: header-only C++17 interface over the C ABI of <flare/flare.h>.
//
// Tensors are passed as TensorView: a non-owning pointer with dtype, shape and strides (in
// elements). Shapes follow FlashAttention-2:
//   flash_attn:              q [batch, seqlen_q, heads, d]; k [batch, seqlen_k, heads_k, d]
//   flash_attn_varlen:       q [total_q, heads, d];          k [total_k, heads_k, d]
//                            or, paged (VarlenArgs::block_table), [num_pages, page_block_size,
//                            heads_k, d]
//   flash_attn_with_kvcache: q [batch, seqlen_q, heads, d];
//                            k_cache [cache_batch, capacity, heads_k, d]
//                            or, paged, [num_pages, page_block_size, heads_k, d]
// v (v_cache, v_new) is shaped like k with its own head dim dv, and out like q with dv: dv is
// read from v's last extent and becomes head_dim_v (0 in the params when dv == d). Which
// (d, dv) pairs run is the library's rule (flare.h, head_dim_v).
// The last (head) dimension must be contiguous (stride 1): the C ABI has no head-dim stride.
//
// Each run function builds flare_mha_fwd_params (make_params*), which only checks how the views
// relate to each other (ranks, matching shapes and dtypes) and throws flare::Error with
// FLARE_ERROR_INVALID_ARGUMENT on a mismatch; the library then validates every rule again
// before anything is launched. Failures of the C calls throw flare::Error carrying the status
// and flare_last_error().
//
//   flare::TensorView q = flare::contiguous(q_ptr, flare::DType::BF16, {b, s, h, d});
//   ...                                                  // k, v, out likewise
//   flare::FlashAttnOptions opts;
//   opts.causal = true;
//   size_t bytes = flare::workspace_size(flare::make_params(q, k, v, out, opts), device);
//   flare::Workspace ws{bytes ? my_device_alloc(bytes) : nullptr, bytes};
//   flare::flash_attn(q, k, v, out, opts, stream, &ws);
#ifndef FLARE_FLARE_HPP
#define FLARE_FLARE_HPP

#include <flare/flare.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace flare {

// FP32 serves merge_attention_states (partials, lse views); attention takes FP16/BF16, and FP8
// codes for k / v (E4M3, E5M2) and q (E4M3) with their descale factors (FlashAttnOptions).
enum class DType : int32_t {
  FP16 = FLARE_DTYPE_FP16,
  BF16 = FLARE_DTYPE_BF16,
  FP32 = FLARE_DTYPE_FP32,
  E4M3 = FLARE_DTYPE_E4M3,
  E5M2 = FLARE_DTYPE_E5M2
};

inline const char* dtype_name(DType dtype) {
  return dtype == DType::FP16   ? "fp16"
         : dtype == DType::BF16 ? "bf16"
         : dtype == DType::FP32 ? "fp32"
         : dtype == DType::E4M3 ? "e4m3"
         : dtype == DType::E5M2 ? "e5m2"
                                : "unknown";
}

inline bool is_fp8(DType dtype) { return dtype == DType::E4M3 || dtype == DType::E5M2; }

// fp32 descale factors of an FP8 tensor, indexed by (batch entry, K/V head): the value of a code
// c is float(c) * data[b * batch_stride + hk * head_stride] (strides 0, 0: one per tensor).
struct Descale {
  const float* data = nullptr;
  int64_t batch_stride = 0;
  int64_t head_stride = 0;
};

// A failed flare call: the status and the library's message.
class Error : public std::runtime_error {
 public:
  Error(flare_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  flare_status status() const noexcept { return status_; }

 private:
  flare_status status_;
};

// Throws Error(status, flare_last_error()) unless status is FLARE_OK.
inline void check(flare_status status) {
  if (status != FLARE_OK) {
    const char* message = flare_last_error();
    throw Error(status, message && *message ? message : flare_status_string(status));
  }
}

// "MAJOR.MINOR.PATCH" of the loaded library (flare_version).
inline std::string version() { return flare_version(); }

// The library's build configuration, `key=value` lines (flare_build_info).
inline std::string build_info() { return flare_build_info(); }

namespace detail {
[[noreturn]] inline void invalid(const std::string& message) {
  throw Error(FLARE_ERROR_INVALID_ARGUMENT, message);
}
}  // namespace detail

// A non-owning view of a tensor of at most 4 dimensions. Inputs are only read through it.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::FP16;
  std::array<int64_t, 4> shape{};
  std::array<int64_t, 4> stride{};  // in elements
  int rank = 0;
  // What error messages call the view; null: the argument it is passed as (q, k_cache, ...).
  // Bindings set their own argument names here.
  const char* name = nullptr;

  bool defined() const { return data != nullptr; }
  int64_t size(int dim) const { return shape[static_cast<size_t>(dim)]; }
};

// A view with explicit strides (in elements); shape and stride must have the same length.
inline TensorView strided(const void* data, DType dtype, std::initializer_list<int64_t> shape,
                          std::initializer_list<int64_t> stride) {
  if (shape.size() < 1 || shape.size() > 4)
    detail::invalid("a TensorView has 1 to 4 dimensions, got " + std::to_string(shape.size()));
  if (stride.size() != shape.size())
    detail::invalid("a TensorView needs one stride per dimension: " +
                    std::to_string(shape.size()) + " dimensions, " +
                    std::to_string(stride.size()) + " strides");
  TensorView t;
  t.data = const_cast<void*>(data);
  t.dtype = dtype;
  t.rank = static_cast<int>(shape.size());
  size_t i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  i = 0;
  for (int64_t s : stride) t.stride[i++] = s;
  return t;
}

// A row-major (contiguous) view.
inline TensorView contiguous(const void* data, DType dtype, std::initializer_list<int64_t> shape) {
  if (shape.size() < 1 || shape.size() > 4)
    detail::invalid("a TensorView has 1 to 4 dimensions, got " + std::to_string(shape.size()));
  TensorView t;
  t.data = const_cast<void*>(data);
  t.dtype = dtype;
  t.rank = static_cast<int>(shape.size());
  size_t i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t step = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    t.stride[static_cast<size_t>(d)] = step;
    step *= t.shape[static_cast<size_t>(d)];
  }
  return t;
}

struct FlashAttnOptions {
  float softmax_scale = 0.f;  // 0: 1/sqrt(head_dim)
  bool causal = false;
  int window_left = -1;   // -1: unbounded
  int window_right = -1;  // -1: unbounded
  float softcap = 0.f;    // 0: off
  const float* alibi_slopes = nullptr;  // device, [heads] or [batch, heads]
  int64_t alibi_batch_stride = 0;       // 0: slopes shared by every batch entry
  float* lse = nullptr;  // device, [batch, heads, seqlen_q] (varlen: [heads, total_q]); optional
  int num_splits = 0;    // 0: heuristic, 1: no split, n: forced
  // Per-head sink logit, device fp32 [heads] (query heads), in score units: joins the softmax
  // denominator only (flare.h's score rules). Optional.
  const float* sink = nullptr;
  // Multimodal prefix ranges, device int32 [batch, max_mm_prefix_ranges, 2] of [start, end)
  // key positions: a query inside a range also sees the whole range (flare.h). Optional.
  const int32_t* mm_prefix_ranges = nullptr;
  int max_mm_prefix_ranges = 0;                // ranges per sequence
  int64_t mm_prefix_ranges_batch_stride = 0;   // int32 elements; 0: 2 * max_mm_prefix_ranges
  // Descale factors of FP8 views (flare.h, "FP8 inputs"): set exactly those of the FP8 tensors.
  Descale q_descale;
  Descale k_descale;
  Descale v_descale;
};

// Device memory for the call; size it with workspace_size().
struct Workspace {
  void* data = nullptr;
  size_t size = 0;
};

// Variable-length batch: sequence b has q rows [cu_seqlens_q[b], cu_seqlens_q[b + 1]).
struct VarlenArgs {
  const int32_t* cu_seqlens_q = nullptr;  // device, [batch + 1]
  const int32_t* cu_seqlens_k = nullptr;  // device, [batch + 1]
  int batch = 0;         // number of sequences (the arrays above hold batch + 1 entries)
  int max_seqlen_q = 0;  // longest q sequence (required)
  int max_seqlen_k = 0;  // longest k sequence
  const int32_t* seqused_k = nullptr;  // device, [batch]; optional
  // Paged KV (chunked prefill on a paged cache): k and v are page pools [num_pages,
  // page_block_size, heads_k, d] and block_table is [batch, max_pages_per_seq]; the keys of
  // sequence b are rows [0, len_k(b)) of its pages, len_k(b) = seqused_k[b] when given, else
  // cu_seqlens_k[b + 1] - cu_seqlens_k[b] (cu_seqlens_k may then be null). Any page size >= 1.
  const int32_t* block_table = nullptr;
  int max_pages_per_seq = 0;
  int64_t block_table_batch_stride = 0;  // 0: max_pages_per_seq
};

struct KvCacheOptions {
  const int32_t* cache_seqlens = nullptr;  // device, [batch]: rows in use (required)
  TensorView k_new;  // [batch, seqlen_new, heads_k, d]; appended before attention; optional
  TensorView v_new;  // like k_new
  // Rotary tables [positions, rotary_dim / 2], dtype of q, rows contiguous; optional (needs
  // k_new). rotary_dim is twice their second extent.
  TensorView rotary_cos;
  TensorView rotary_sin;
  bool rotary_interleaved = false;
  const int32_t* cache_batch_idx = nullptr;  // device, [batch]; unpaged only; optional
  const int32_t* leftpad_k = nullptr;        // device, [batch]; optional
  // Paged KV: k_cache/v_cache are page pools and block_table is [batch, max_pages_per_seq].
  const int32_t* block_table = nullptr;
  int max_pages_per_seq = 0;
  int64_t block_table_batch_stride = 0;  // 0: max_pages_per_seq
};

namespace detail {

// The name error messages give `t`: its own, else the argument's.
inline const char* label(const char* argument, const TensorView& t) {
  return t.name ? t.name : argument;
}

inline std::string dim_text(const char* name, int d, int64_t value) {
  return std::string(name) + ".shape[" + std::to_string(d) + "] (" + std::to_string(value) + ")";
}

inline int to_int(const char* name, int d, int64_t value) {
  if (value < 0 || value > std::numeric_limits<int32_t>::max())
    invalid(dim_text(name, d, value) + " is out of range [0, 2^31)");
  return static_cast<int>(value);
}

inline void expect_rank(const char* name, const TensorView& t, int rank) {
  name = label(name, t);
  if (t.rank != rank)
    invalid(std::string(name) + " must have " + std::to_string(rank) + " dimensions, got " +
            std::to_string(t.rank));
  if (t.stride[static_cast<size_t>(rank - 1)] != 1)
    invalid(std::string(name) + ".stride[" + std::to_string(rank - 1) + "] (" +
            std::to_string(t.stride[static_cast<size_t>(rank - 1)]) +
            ") must be 1: the head dimension is contiguous");
}

inline void expect_dtype(const char* name, const TensorView& t, const TensorView& ref,
                         const char* ref_name = "q") {
  name = label(name, t);
  if (t.dtype != ref.dtype)
    invalid(std::string(name) + " is " + dtype_name(t.dtype) + " but " + label(ref_name, ref) +
            " is " + dtype_name(ref.dtype));
}

inline void expect_dim(const char* name, const TensorView& t, int d, int64_t expected,
                       const std::string& what) {
  name = label(name, t);
  if (t.shape[static_cast<size_t>(d)] != expected)
    invalid(dim_text(name, d, t.shape[static_cast<size_t>(d)]) + " must equal " + what + " (" +
            std::to_string(expected) + ")");
}

inline void expect_same_shape(const char* name, const TensorView& t, const char* ref_name,
                              const TensorView& ref) {
  ref_name = label(ref_name, ref);
  for (int d = 0; d < ref.rank; ++d)
    expect_dim(name, t, d, ref.shape[static_cast<size_t>(d)],
               std::string(ref_name) + ".shape[" + std::to_string(d) + "]");
}

inline void expect_heads_divide(const TensorView& q, const TensorView& k, int heads,
                                int heads_k) {
  if (heads_k > 0 && heads % heads_k != 0)
    invalid(std::string(label("q", q)) + " has " + std::to_string(heads) +
            " heads, not a multiple of the " + std::to_string(heads_k) + " heads of " +
            (k.name ? k.name : "k/v"));
}

// Checks q/out (rank_q: 3 varlen, 4 batched) against k/v (rank_kv: rank_q, or 4 for page
// pools) and returns the head counts and dims. v is shaped like k but for its head dim dv;
// out like q but for dv. k_name / v_name: what messages call k and v when the views carry no
// name.
struct Heads {
  int heads, heads_k, head_dim, head_dim_v;
};

inline Heads check_views(const TensorView& q, const TensorView& k, const TensorView& v,
                         const TensorView& out, int rank_q, int rank_kv, const char* k_name = "k",
                         const char* v_name = "v") {
  expect_rank("q", q, rank_q);
  expect_rank(k_name, k, rank_kv);
  expect_rank(v_name, v, rank_kv);
  expect_rank("out", out, rank_q);
  if (!is_fp8(q.dtype) && !is_fp8(k.dtype)) {  // one type for q, k, v and out
    expect_dtype(k_name, k, q);
    expect_dtype(v_name, v, q);
    expect_dtype("out", out, q);
  } else {
    // FP8: out's type is the call's dtype; k and v share one type (out's, or FP8 codes); q has
    // out's type or FP8 codes.
    expect_dtype(v_name, v, k, k_name);
    if (!is_fp8(k.dtype)) expect_dtype(k_name, k, out, "out");
    if (!is_fp8(q.dtype)) expect_dtype("q", q, out, "out");
  }
  const int qd = rank_q - 1, qh = rank_q - 2, kd = rank_kv - 1, kh = rank_kv - 2;
  const std::string qn = label("q", q), kn = label(k_name, k), vn = label(v_name, v);
  auto dim = [](const std::string& name, int d) {
    return name + ".shape[" + std::to_string(d) + "]";
  };
  for (int d = 0; d < qd; ++d) expect_dim("out", out, d, q.size(d), dim(qn, d));
  for (int d = 0; d < kd; ++d) expect_dim(v_name, v, d, k.size(d), dim(kn, d));
  expect_dim(k_name, k, kd, q.size(qd), dim(qn, qd));
  expect_dim("out", out, qd, v.size(kd), dim(vn, kd) + ", the head dim of v");
  Heads h{to_int(qn.c_str(), qh, q.size(qh)), to_int(kn.c_str(), kh, k.size(kh)),
          to_int(qn.c_str(), qd, q.size(qd)), to_int(vn.c_str(), kd, v.size(kd))};
  expect_heads_divide(q, k, h.heads, h.heads_k);
  return h;
}

// check_views for callers without a separate V head dim (q, k, v, out of one rank and one
// head dim).
inline Heads check_qkvo(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, int rank, const char* k_name = "k",
                        const char* v_name = "v") {
  const Heads h = check_views(q, k, v, out, rank, rank, k_name, v_name);
  expect_dim(v_name, v, rank - 1, h.head_dim,
             std::string(label("q", q)) + ".shape[" + std::to_string(rank - 1) + "]");
  return h;
}

inline void apply_options(flare_mha_fwd_params& p, const FlashAttnOptions& o) {
  p.softmax_scale = o.softmax_scale;
  p.causal = o.causal ? 1 : 0;
  p.window_left = o.window_left;
  p.window_right = o.window_right;
  p.softcap = o.softcap;
  p.alibi_slopes = o.alibi_slopes;
  p.alibi_batch_stride = o.alibi_batch_stride;
  p.lse = o.lse;
  p.num_splits = o.num_splits;
  p.sink = o.sink;
  p.mm_prefix_ranges = o.mm_prefix_ranges;
  p.max_mm_prefix_ranges = o.max_mm_prefix_ranges;
  p.mm_prefix_ranges_batch_stride = o.mm_prefix_ranges_batch_stride
                                        ? o.mm_prefix_ranges_batch_stride
                                        : 2 * int64_t(o.max_mm_prefix_ranges);
  p.q_descale = o.q_descale.data;
  p.q_descale_batch_stride = o.q_descale.batch_stride;
  p.q_descale_head_stride = o.q_descale.head_stride;
  p.k_descale = o.k_descale.data;
  p.k_descale_batch_stride = o.k_descale.batch_stride;
  p.k_descale_head_stride = o.k_descale.head_stride;
  p.v_descale = o.v_descale.data;
  p.v_descale_batch_stride = o.v_descale.batch_stride;
  p.v_descale_head_stride = o.v_descale.head_stride;
}

inline flare_mha_fwd_params base_params(const TensorView& q, const TensorView& k,
                                        const TensorView& v, const TensorView& out,
                                        const Heads& h, const FlashAttnOptions& opts) {
  flare_mha_fwd_params p;
  flare_mha_fwd_params_init(&p);
  // dtype is out's; FP8 q / k / v name their own type (0: dtype).
  p.dtype = static_cast<int32_t>(out.dtype);
  p.q_dtype = is_fp8(q.dtype) ? static_cast<int32_t>(q.dtype) : 0;
  p.kv_dtype = is_fp8(k.dtype) ? static_cast<int32_t>(k.dtype) : 0;
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.out = out.data;
  p.num_heads = h.heads;
  p.num_heads_k = h.heads_k;
  p.head_dim = h.head_dim;
  p.head_dim_v = h.head_dim_v == h.head_dim ? 0 : h.head_dim_v;
  apply_options(p, opts);
  return p;
}

// Strides of a [batch, rows, heads, d] view into the three stride fields.
inline void strides4(const TensorView& t, int64_t& batch, int64_t& row, int64_t& head) {
  batch = t.stride[0];
  row = t.stride[1];
  head = t.stride[2];
}

// Strides of a [rows, heads, d] (varlen) view; no batch stride.
inline void strides3(const TensorView& t, int64_t& batch, int64_t& row, int64_t& head) {
  batch = 0;
  row = t.stride[0];
  head = t.stride[1];
}

// Paged K/V: the block table and the pool's geometry from `pool` [num_pages, page_block_size,
// heads_k, d] (its batch stride is the page stride).
inline void set_paged(flare_mha_fwd_params& p, const TensorView& pool, const char* pool_name,
                      const int32_t* block_table, int max_pages_per_seq,
                      int64_t block_table_batch_stride) {
  if (max_pages_per_seq < 1)
    invalid("max_pages_per_seq (" + std::to_string(max_pages_per_seq) +
            ") must be >= 1 with block_table");
  const char* name = label(pool_name, pool);
  p.block_table = block_table;
  p.page_block_size = to_int(name, 1, pool.size(1));
  p.num_pages = to_int(name, 0, pool.size(0));
  p.block_table_batch_stride = block_table_batch_stride ? block_table_batch_stride
                                                        : max_pages_per_seq;
}

}  // namespace detail

// ---- building params (no CUDA call; throws Error(INVALID_ARGUMENT) on mismatched views) ----

inline flare_mha_fwd_params make_params(const TensorView& q, const TensorView& k,
                                        const TensorView& v, const TensorView& out,
                                        const FlashAttnOptions& opts = {}) {
  const detail::Heads h = detail::check_views(q, k, v, out, 4, 4);
  detail::expect_dim("k", k, 0, q.size(0), "q.shape[0]");
  flare_mha_fwd_params p = detail::base_params(q, k, v, out, h, opts);
  p.batch = detail::to_int("q", 0, q.size(0));
  p.seqlen_q = detail::to_int("q", 1, q.size(1));
  p.seqlen_k = detail::to_int("k", 1, k.size(1));
  detail::strides4(q, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
  detail::strides4(k, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
  detail::strides4(v, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
  detail::strides4(out, p.out_batch_stride, p.out_row_stride, p.out_head_stride);
  return p;
}

inline flare_mha_fwd_params make_params_varlen(const TensorView& q, const TensorView& k,
                                               const TensorView& v, const TensorView& out,
                                               const VarlenArgs& varlen,
                                               const FlashAttnOptions& opts = {}) {
  using namespace detail;
  const bool paged = varlen.block_table != nullptr;
  const Heads h = check_views(q, k, v, out, 3, paged ? 4 : 3);
  flare_mha_fwd_params p = base_params(q, k, v, out, h, opts);
  p.batch = varlen.batch;
  p.cu_seqlens_q = varlen.cu_seqlens_q;
  p.cu_seqlens_k = varlen.cu_seqlens_k;
  p.seqused_k = varlen.seqused_k;
  p.max_seqlen_q = varlen.max_seqlen_q;
  p.max_seqlen_k = varlen.max_seqlen_k;
  strides3(q, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
  strides3(out, p.out_batch_stride, p.out_row_stride, p.out_head_stride);
  if (paged) {
    set_paged(p, k, "k", varlen.block_table, varlen.max_pages_per_seq,
              varlen.block_table_batch_stride);
    strides4(k, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
    strides4(v, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
  } else {
    strides3(k, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
    strides3(v, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
  }
  return p;
}

inline flare_mha_fwd_params make_params_kvcache(const TensorView& q, const TensorView& k_cache,
                                                const TensorView& v_cache, const TensorView& out,
                                                const KvCacheOptions& kv,
                                                const FlashAttnOptions& opts = {}) {
  using namespace detail;
  const Heads h = check_views(q, k_cache, v_cache, out, 4, 4, "k_cache", "v_cache");
  flare_mha_fwd_params p = base_params(q, k_cache, v_cache, out, h, opts);
  p.batch = to_int("q", 0, q.size(0));
  p.seqlen_q = to_int("q", 1, q.size(1));
  p.cache_seqlens = kv.cache_seqlens;
  p.cache_batch_idx = kv.cache_batch_idx;
  p.leftpad_k = kv.leftpad_k;
  strides4(q, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
  strides4(k_cache, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
  strides4(v_cache, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
  strides4(out, p.out_batch_stride, p.out_row_stride, p.out_head_stride);

  if (kv.block_table) {
    set_paged(p, k_cache, "k_cache", kv.block_table, kv.max_pages_per_seq, kv.block_table_batch_stride);
    const int64_t capacity = int64_t(kv.max_pages_per_seq) * p.page_block_size;
    if (capacity > std::numeric_limits<int32_t>::max())
      invalid("max_pages_per_seq * page_block_size (" + std::to_string(capacity) +
              ") is out of range");
    p.seqlen_k = static_cast<int>(capacity);
  } else {
    if (!kv.cache_batch_idx) expect_dim("k_cache", k_cache, 0, q.size(0), "q.shape[0]");
    p.seqlen_k = to_int("k_cache", 1, k_cache.size(1));
  }

  if (kv.k_new.defined() != kv.v_new.defined()) {
    const std::string k_new = label("k_new", kv.k_new), v_new = label("v_new", kv.v_new);
    invalid(kv.k_new.defined() ? v_new + " is missing while " + k_new + " is given"
                               : k_new + " is missing while " + v_new + " is given");
  }
  if (kv.k_new.defined()) {
    expect_rank("k_new", kv.k_new, 4);
    expect_rank("v_new", kv.v_new, 4);
    expect_dtype("k_new", kv.k_new, q);
    expect_dtype("v_new", kv.v_new, q);
    expect_dim("k_new", kv.k_new, 0, q.size(0), "q.shape[0]");
    expect_dim("k_new", kv.k_new, 2, h.heads_k, "the heads of k_cache");
    expect_dim("k_new", kv.k_new, 3, h.head_dim, "q.shape[3]");
    for (int d = 0; d < 3; ++d)
      expect_dim("v_new", kv.v_new, d, kv.k_new.size(d),
                 std::string(label("k_new", kv.k_new)) + ".shape[" + std::to_string(d) + "]");
    expect_dim("v_new", kv.v_new, 3, h.head_dim_v,
               std::string(label("v_cache", v_cache)) + ".shape[3]");
    p.k_new = kv.k_new.data;
    p.v_new = kv.v_new.data;
    p.seqlen_new = to_int("k_new", 1, kv.k_new.size(1));
    strides4(kv.k_new, p.k_new_batch_stride, p.k_new_row_stride, p.k_new_head_stride);
    strides4(kv.v_new, p.v_new_batch_stride, p.v_new_row_stride, p.v_new_head_stride);
  }

  if (kv.rotary_cos.defined() != kv.rotary_sin.defined()) {
    const std::string cos = label("rotary_cos", kv.rotary_cos);
    const std::string sin = label("rotary_sin", kv.rotary_sin);
    invalid(kv.rotary_cos.defined() ? sin + " is missing while " + cos + " is given"
                                    : cos + " is missing while " + sin + " is given");
  }
  if (kv.rotary_cos.defined()) {
    expect_rank("rotary_cos", kv.rotary_cos, 2);
    expect_rank("rotary_sin", kv.rotary_sin, 2);
    expect_dtype("rotary_cos", kv.rotary_cos, q);
    expect_dtype("rotary_sin", kv.rotary_sin, q);
    expect_same_shape("rotary_sin", kv.rotary_sin, "rotary_cos", kv.rotary_cos);
    // The C ABI takes dense tables: rows of rotary_dim / 2 elements.
    for (const TensorView* t : {&kv.rotary_cos, &kv.rotary_sin})
      if (t->stride[0] != t->shape[1])
        invalid(std::string(label(t == &kv.rotary_cos ? "rotary_cos" : "rotary_sin", *t)) +
                ".stride[0] (" + std::to_string(t->stride[0]) + ") must equal its shape[1] (" +
                std::to_string(t->shape[1]) + "): the tables are dense");
    p.rotary_cos = kv.rotary_cos.data;
    p.rotary_sin = kv.rotary_sin.data;
    p.rotary_max_positions = to_int("rotary_cos", 0, kv.rotary_cos.size(0));
    p.rotary_dim = 2 * to_int("rotary_cos", 1, kv.rotary_cos.size(1));
    p.rotary_interleaved = kv.rotary_interleaved ? 1 : 0;
  }
  return p;
}

// ---- queries and runs (call into the library) ----

// Bytes of device workspace the call needs on `device` (0 is possible).
inline size_t workspace_size(const flare_mha_fwd_params& params, int device) {
  size_t bytes = 0;
  check(flare_mha_fwd_workspace_size(&params, device, &bytes));
  return bytes;
}

// The split count the library would use on `device`.
inline int num_splits(const flare_mha_fwd_params& params, int device) {
  int splits = 0;
  check(flare_mha_fwd_num_splits(&params, device, &splits));
  return splits;
}

// Throws the reason when the library would refuse these params on `device`.
inline void check_can_implement(const flare_mha_fwd_params& params, int device) {
  check(flare_can_implement(&params, device));
}

// Runs prepared params on `stream` (a cudaStream_t; nullptr is the default stream).
inline void run(flare_mha_fwd_params params, void* stream = nullptr,
                const Workspace* workspace = nullptr) {
  if (workspace) {
    params.workspace = workspace->data;
    params.workspace_size = workspace->size;
  }
  check(flare_mha_fwd(&params, stream));
}

inline void flash_attn(const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const FlashAttnOptions& opts = {},
                       void* stream = nullptr, const Workspace* workspace = nullptr) {
  run(make_params(q, k, v, out, opts), stream, workspace);
}

inline void flash_attn_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                              const TensorView& out, const VarlenArgs& varlen,
                              const FlashAttnOptions& opts = {}, void* stream = nullptr,
                              const Workspace* workspace = nullptr) {
  run(make_params_varlen(q, k, v, out, varlen, opts), stream, workspace);
}

inline void flash_attn_with_kvcache(const TensorView& q, const TensorView& k_cache,
                                    const TensorView& v_cache, const TensorView& out,
                                    const KvCacheOptions& kv, const FlashAttnOptions& opts = {},
                                    void* stream = nullptr, const Workspace* workspace = nullptr) {
  run(make_params_kvcache(q, k_cache, v_cache, out, kv, opts), stream, workspace);
}

// ---- merging partial attention states (flare_merge_attention_states) ----
//
// Attention over keys split into parts, merged by log-sum-exp:
//   parts[s]  [batch, seqlen, heads, d]  FP16, BF16 or FP32; every part has the same dtype,
//             shape and strides (the head dimension contiguous)
//   lses[s]   FP32 [batch, heads, seqlen] (flare's lse layout), any strides, the same for all
//   out       [batch, seqlen, heads, d]  FP16, BF16 or FP32 (may be one of the parts: in place)
//   out_lse   optional FP32 [batch, heads, seqlen] (may be the lse of the in-place part)
// At most FLARE_MERGE_MAX_PART_PTRS parts (the C ABI also takes one base pointer + part
// stride, without that limit).
//
// make_merge_params builds the params without calling the library (throws
// Error(INVALID_ARGUMENT) on mismatched views); the params point into part_ptrs and lse_ptrs,
// which it fills and which must outlive the call. An undefined out gets no pointer (set
// params.out before the call).
inline flare_merge_params make_merge_params(const std::vector<TensorView>& parts,
                                            const std::vector<TensorView>& lses,
                                            const TensorView& out, const TensorView& out_lse,
                                            std::vector<const void*>& part_ptrs,
                                            std::vector<const float*>& lse_ptrs) {
  using namespace detail;
  if (parts.empty()) invalid("merge_attention_states needs at least one part");
  if (lses.size() != parts.size())
    invalid("merge_attention_states: " + std::to_string(parts.size()) + " parts but " +
            std::to_string(lses.size()) + " lse views");
  if (parts.size() > FLARE_MERGE_MAX_PART_PTRS)
    invalid("merge_attention_states takes at most " +
            std::to_string(FLARE_MERGE_MAX_PART_PTRS) + " parts, got " +
            std::to_string(parts.size()));
  const TensorView& p0 = parts[0];
  const TensorView& l0 = lses[0];
  const std::string p0_name = label("parts[0]", p0), l0_name = label("lses[0]", l0);
  expect_rank(p0_name.c_str(), p0, 4);
  expect_rank("out", out, 4);
  part_ptrs.assign(parts.size(), nullptr);
  lse_ptrs.assign(parts.size(), nullptr);
  for (size_t s = 0; s < parts.size(); ++s) {
    const std::string name = label(("parts[" + std::to_string(s) + "]").c_str(), parts[s]);
    const std::string lname = label(("lses[" + std::to_string(s) + "]").c_str(), lses[s]);
    expect_rank(name.c_str(), parts[s], 4);
    if (parts[s].dtype != p0.dtype)
      invalid(name + " is " + dtype_name(parts[s].dtype) + " but " + p0_name + " is " +
              dtype_name(p0.dtype));
    expect_same_shape(name.c_str(), parts[s], "out", out);
    if (parts[s].stride != p0.stride)
      invalid(name + " has other strides than " + p0_name + ": all parts share their strides");
    if (lses[s].rank != 3) invalid(lname + " must have 3 dimensions [batch, heads, seqlen]");
    if (lses[s].dtype != DType::FP32) invalid(lname + " must be fp32");
    const std::string out_name = label("out", out);
    expect_dim(lname.c_str(), lses[s], 0, out.size(0), out_name + ".shape[0]");
    expect_dim(lname.c_str(), lses[s], 1, out.size(2), out_name + ".shape[2]");
    expect_dim(lname.c_str(), lses[s], 2, out.size(1), out_name + ".shape[1]");
    if (lses[s].stride != l0.stride)
      invalid(lname + " has other strides than " + l0_name + ": all lses share their strides");
    part_ptrs[s] = parts[s].data;
    lse_ptrs[s] = static_cast<const float*>(lses[s].data);
  }
  flare_merge_params p;
  flare_merge_params_init(&p);
  p.num_parts = static_cast<int32_t>(parts.size());
  p.part_dtype = static_cast<int32_t>(p0.dtype);
  p.out_dtype = static_cast<int32_t>(out.dtype);
  p.part_ptrs = part_ptrs.data();
  p.lse_ptrs = lse_ptrs.data();
  p.batch = to_int("out", 0, out.size(0));
  p.seqlen = to_int("out", 1, out.size(1));
  p.num_heads = to_int("out", 2, out.size(2));
  p.head_dim = to_int("out", 3, out.size(3));
  strides4(p0, p.part_batch_stride, p.part_row_stride, p.part_head_stride);
  p.lse_batch_stride = l0.stride[0];
  p.lse_head_stride = l0.stride[1];
  p.lse_row_stride = l0.stride[2];
  p.out = out.data;
  strides4(out, p.out_batch_stride, p.out_row_stride, p.out_head_stride);
  if (out_lse.defined()) {
    const std::string name = label("out_lse", out_lse), out_name = label("out", out);
    if (out_lse.rank != 3) invalid(name + " must have 3 dimensions [batch, heads, seqlen]");
    if (out_lse.dtype != DType::FP32) invalid(name + " must be fp32");
    expect_dim("out_lse", out_lse, 0, out.size(0), out_name + ".shape[0]");
    expect_dim("out_lse", out_lse, 1, out.size(2), out_name + ".shape[2]");
    expect_dim("out_lse", out_lse, 2, out.size(1), out_name + ".shape[1]");
    p.out_lse = static_cast<float*>(out_lse.data);
    p.out_lse_batch_stride = out_lse.stride[0];
    p.out_lse_head_stride = out_lse.stride[1];
    p.out_lse_row_stride = out_lse.stride[2];
  }
  return p;
}

inline void merge_attention_states(const std::vector<TensorView>& parts,
                                   const std::vector<TensorView>& lses, const TensorView& out,
                                   const TensorView& out_lse = TensorView{},
                                   void* stream = nullptr) {
  std::vector<const void*> part_ptrs;
  std::vector<const float*> lse_ptrs;
  const flare_merge_params p = make_merge_params(parts, lses, out, out_lse, part_ptrs, lse_ptrs);
  check(flare_merge_attention_states(&p, stream));
}

}  // namespace flare

#endif  // FLARE_FLARE_HPP
