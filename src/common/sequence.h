// Where sequence b of a batch lives: its lengths and the element offsets of its rows in q, k/v,
// out and lse, for every mode (padded batch, varlen, KV cache with leftpad, paged KV).
// Host code calls these with host pointers in params, device code with device pointers.
#pragma once
#include "flare/flare.h"
#include <math.h>
#include "host_device.h"
#include "mask.h"

namespace flare {

struct SequenceInfo {
  int batch;        // index b in the batch
  int seqlen_q;     // query rows of this sequence
  int seqlen_k;     // keys attention sees (cache rows + appended rows for a KV cache)
  int64_t q_row0;   // first q/out row (varlen), else 0
  int64_t k_row0;   // first k/v row inside the k/v batch entry (varlen start or leftpad)
  int kv_batch;     // batch entry of k/v (cache_batch_idx), 0 for varlen
  int cache_len;    // KV cache: rows already in the cache before the append (after leftpad)
};

FLARE_HD bool is_varlen(const flare_mha_fwd_params& p) { return p.cu_seqlens_q != nullptr; }
FLARE_HD bool is_kv_cache(const flare_mha_fwd_params& p) { return p.cache_seqlens != nullptr; }
FLARE_HD bool is_paged(const flare_mha_fwd_params& p) { return p.block_table != nullptr; }

// The longest sequence's query rows and keys: the varlen maxima, else the fixed lengths (the
// KV cache's: its capacity).
FLARE_HD int max_query_rows(const flare_mha_fwd_params& p) {
  return is_varlen(p) ? p.max_seqlen_q : p.seqlen_q;
}
FLARE_HD int max_key_rows(const flare_mha_fwd_params& p) {
  return is_varlen(p) ? p.max_seqlen_k : p.seqlen_k;
}

FLARE_HD SequenceInfo sequence_info(const flare_mha_fwd_params& p, int b) {
  SequenceInfo s;
  s.batch = b;
  s.kv_batch = b;
  s.cache_len = 0;
  if (is_varlen(p)) {
    s.q_row0 = p.cu_seqlens_q[b];
    s.seqlen_q = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b];
    // Paged varlen: the keys are rows [0, len) of the sequence's pages; cu_seqlens_k (which may
    // be null there when seqused_k is given) only gives len.
    s.k_row0 = (p.cu_seqlens_k && !is_paged(p)) ? p.cu_seqlens_k[b] : 0;
    s.seqlen_k = p.cu_seqlens_k ? p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b] : 0;
    s.kv_batch = 0;
  } else {
    s.q_row0 = 0;
    s.seqlen_q = p.seqlen_q;
    s.k_row0 = 0;
    s.seqlen_k = p.seqlen_k;
  }
  if (is_kv_cache(p)) {
    const int leftpad = p.leftpad_k ? p.leftpad_k[b] : 0;
    s.k_row0 = leftpad;
    s.kv_batch = p.cache_batch_idx ? p.cache_batch_idx[b] : b;
    s.cache_len = p.cache_seqlens[b] - leftpad;
    s.seqlen_k = s.cache_len + (p.k_new ? p.seqlen_new : 0);
  }
  if (p.seqused_k) s.seqlen_k = p.seqused_k[b];
  return s;
}

FLARE_HD MaskSpec sequence_mask(const flare_mha_fwd_params& p, const SequenceInfo& s) {
  return make_mask(s.seqlen_q, s.seqlen_k, p.causal != 0, p.window_left, p.window_right);
}

FLARE_HD int64_t q_offset(const flare_mha_fwd_params& p, const SequenceInfo& s, int row, int head) {
  const int64_t batch = is_varlen(p) ? 0 : (int64_t)s.batch * p.q_batch_stride;
  return batch + (s.q_row0 + row) * p.q_row_stride + (int64_t)head * p.q_head_stride;
}

FLARE_HD int64_t out_offset(const flare_mha_fwd_params& p, const SequenceInfo& s, int row,
                            int head) {
  const int64_t batch = is_varlen(p) ? 0 : (int64_t)s.batch * p.out_batch_stride;
  return batch + (s.q_row0 + row) * p.out_row_stride + (int64_t)head * p.out_head_stride;
}

// Offset of key row `row` (0-based within the sequence's visible keys) of head_k in a k or v
// tensor with the given strides. Paged KV maps the row through the block table.
FLARE_HD int64_t kv_offset(const flare_mha_fwd_params& p, const SequenceInfo& s, int row,
                           int head_k, int64_t batch_stride, int64_t row_stride,
                           int64_t head_stride) {
  if (is_paged(p)) {
    // Rows of one sequence fit in 32 bits: 32-bit division is far cheaper on the GPU.
    const int r = int(s.k_row0) + row;
    const int page = p.block_table[(int64_t)s.batch * p.block_table_batch_stride +
                                   r / p.page_block_size];
    return (int64_t)page * batch_stride + (int64_t)(r % p.page_block_size) * row_stride +
           (int64_t)head_k * head_stride;
  }
  const int64_t r = s.k_row0 + row;
  const int64_t batch = is_varlen(p) ? 0 : (int64_t)s.kv_batch * batch_stride;
  return batch + r * row_stride + (int64_t)head_k * head_stride;
}

FLARE_HD int64_t k_offset(const flare_mha_fwd_params& p, const SequenceInfo& s, int row, int hk) {
  return kv_offset(p, s, row, hk, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
}
FLARE_HD int64_t v_offset(const flare_mha_fwd_params& p, const SequenceInfo& s, int row, int hk) {
  return kv_offset(p, s, row, hk, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
}

// lse is [batch, heads, seqlen_q], or [heads, total_q] for varlen.
FLARE_HD int64_t lse_offset(const flare_mha_fwd_params& p, const SequenceInfo& s, int row,
                            int head) {
  if (is_varlen(p)) return (int64_t)head * p.cu_seqlens_q[p.batch] + s.q_row0 + row;
  return ((int64_t)s.batch * p.num_heads + head) * p.seqlen_q + row;
}

// ALiBi slope of (batch, head), 0 when off.
FLARE_HD float alibi_slope(const flare_mha_fwd_params& p, int b, int head) {
  return p.alibi_slopes ? p.alibi_slopes[(int64_t)b * p.alibi_batch_stride + head] : 0.f;
}

// The units every kernel scores in. Softmax works in log2 units: p = exp2(x * unit_log2 - max *
// unit_log2). Without softcap x is the raw q.k and unit = scale; with softcap x is already the
// capped score softcap * tanh(q.k * cap_in) and unit = 1. The ALiBi bias is in the units of x.
// (The Hopper kernels call it; the mma.sync kernels spell the same lines inline, since calling
// it changes their instruction schedule.)
struct ScoreUnits {
  bool has_softcap;
  float unit_log2;
  float cap_in;  // softcap: scale / softcap, else 0
  float alibi;   // ALiBi slope of (batch, head) in the units of x (0: off)
};
// The unit of x: 1 with softcap (x is the capped score), else the softmax scale.
FLARE_HD float score_unit(const flare_mha_fwd_params& p) {
  return p.softcap > 0.f ? 1.f : p.softmax_scale;
}
// The launch's part (alibi 0), which a persistent kernel computes once.
FLARE_HD ScoreUnits launch_score_units(const flare_mha_fwd_params& p) {
  const bool has_softcap = p.softcap > 0.f;
  return ScoreUnits{has_softcap, score_unit(p) * 1.4426950408889634f,
                    has_softcap ? p.softmax_scale / p.softcap : 0.f, 0.f};
}
// The ALiBi slope of (b, head) in the units of x (0 without ALiBi, no division then).
FLARE_HD float alibi_in_units(const flare_mha_fwd_params& p, int b, int head) {
  if (p.alibi_slopes == nullptr) return 0.f;
  return alibi_slope(p, b, head) / score_unit(p);
}
FLARE_HD ScoreUnits score_units(const flare_mha_fwd_params& p, int b, int head) {
  ScoreUnits u = launch_score_units(p);
  u.alibi = alibi_in_units(p, b, head);
  return u;
}

// Rotary position of query row i: with a causal or windowed mask each query row sits at its
// own cache position; otherwise all query rows share the position of the first new token.
FLARE_HD int rotary_q_position(const flare_mha_fwd_params& p, const SequenceInfo& s, int i) {
  const bool per_row = p.causal || p.window_left >= 0 || p.window_right >= 0;
  return s.k_row0 + s.cache_len + (per_row ? i : 0);
}

// The effective softmax scale (0 selects 1/sqrt(head_dim)).
FLARE_HD float effective_scale(const flare_mha_fwd_params& p) {
  return p.softmax_scale != 0.f ? p.softmax_scale : 1.0f / sqrtf((float)p.head_dim);
}

}  // namespace flare
