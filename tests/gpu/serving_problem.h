// Problems with the serving fields of flare.h for the GPU suite (header-only): variable-length
// batches over contiguous or paged K/V (any page size >= 1, pages shuffled over a pool with
// spare pages, key counts from cu_seqlens_k or from seqused_k alone), KV-cache decode / chunked
// prefill with append, any head dim with a separate V head dim, per-head sinks and multimodal
// prefix ranges. One ServingCase describes a problem; build_serving_problem turns it into a
// HostProblem (gpu_test_util.h), and serving_reference computes its CPU reference (after the
// KV-cache append on host copies of the caches).
#pragma once

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "gpu/gpu_test_util.h"

namespace flare_test {

enum class KvMode {
  kVarlen,   // cu_seqlens_q / cu_seqlens_k, K/V contiguous or paged (page_size > 0)
  kKvCache,  // cache_seqlens (+ k_new / v_new), q a padded batch, cache contiguous or paged
};

struct ServingCase {
  std::string name;  // unique, gtest-safe
  int dtype = FLARE_DTYPE_BF16;
  int head_dim = 64;
  int head_dim_v = 0;  // 0: head_dim
  int num_heads = 4, num_heads_k = 2;
  KvMode mode = KvMode::kVarlen;
  std::vector<int> q_lens;  // per sequence (KV cache: all equal, the padded seqlen_q)
  std::vector<int> k_lens;  // keys each sequence sees (KV cache: after the append)
  int page_size = 0;        // 0: contiguous K/V; else paged with this page size
  bool seqused_only = false;  // paged varlen: key counts from seqused_k, cu_seqlens_k null
  int seqlen_new = 0;         // KV cache: rows appended by the call
  bool causal = false;
  int window_left = -1, window_right = -1;
  bool alibi = false;
  float softcap = 0.f;
  bool sink = false;
  float sink_shift = 0.f;  // added to every sink: far above or below the scores
  std::vector<std::vector<std::pair<int, int>>> ranges;  // per sequence [start, end) pairs
  int max_ranges = 0;  // slots per sequence; unused slots hold start == end
  bool lse = true;
  int num_splits = 1;
  bool padded = false;  // padded strides (gaps that must stay poisoned)
  // Narrow tensors (flare's common/narrow.h): strides of exactly the row's width in elements
  // (padded: plus odd gaps), so rows are not 16-byte addressable whatever the head dim; and
  // bases of q, k, v, k_new, v_new moved by `base_offset` elements (odd: 2-byte aligned only).
  bool tight = false;
  int base_offset = 0;
  uint64_t seed = 1;

  int dv() const { return head_dim_v != 0 ? head_dim_v : head_dim; }
};

inline void PrintTo(const ServingCase& c, std::ostream* os) { *os << c.name; }

// The head stride of a row of `width` elements: a multiple of 8 elements (16 bytes, the fast
// path's chunk), plus 8 more with padded strides; tight: exactly `width` (plus odd gaps 3 / 5 / 7
// with padded strides), which makes the launch narrow unless width is a multiple of 8 and no
// gap is used. `offset` elements more for a base moved by that much.
inline Strides serving_strides(bool padded, int n, int rows, int heads, int width,
                               bool tight = false, int offset = 0) {
  Strides s;
  const int64_t w8 = (width + 7) / 8 * 8;
  if (tight) {
    s.head = padded ? width + 3 : width;
    s.row = int64_t(heads) * s.head + (padded ? 5 : 0);
    s.batch = int64_t(rows) * s.row + (padded ? 7 : 0);
  } else {
    s.head = padded ? w8 + 8 : w8;
    s.row = int64_t(heads) * s.head + (padded ? 16 : 0);
    s.batch = int64_t(rows) * s.row + (padded ? 32 : 0);
  }
  s.elems = size_t(n) * size_t(s.batch) + size_t(offset);
  return s;
}

// A paged pool of `num_pages` pages of `page` rows for sequences of `rows[b]` rows each:
// every sequence gets ceil(rows / page) pages drawn from a shuffled permutation, the block
// table has one padding column more than the longest sequence needs (pointing at a spare page
// no sequence owns), and `spare` pages stay unowned. Returns the pool's page count.
inline int make_block_table(const std::vector<int>& rows, int page, int spare, std::mt19937_64& rng,
                            std::vector<int32_t>* table, int64_t* table_stride) {
  const int batch = int(rows.size());
  int max_pages = 1, owned = 0;
  for (int r : rows) {
    max_pages = std::max(max_pages, (r + page - 1) / page);
    owned += (r + page - 1) / page;
  }
  const int num_pages = owned + spare;
  std::vector<int32_t> perm(num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  const int stride = max_pages + 1;
  table->assign(size_t(batch) * stride, perm[num_pages - 1]);  // spare page in unused slots
  int next = 0;
  for (int b = 0; b < batch; ++b)
    for (int j = 0; j < (rows[b] + page - 1) / page; ++j)
      (*table)[size_t(b) * stride + j] = perm[next++];
  *table_stride = stride;
  return num_pages;
}

// Per-head sink logits around the score scale, with a dominant head and (from 3 heads on) a
// head of -inf, which must behave exactly like no sink.
inline std::vector<float> make_sinks(int num_heads, std::mt19937_64& rng) {
  std::normal_distribution<float> nd(0.f, 1.5f);
  std::vector<float> s(num_heads);
  for (float& x : s) x = nd(rng);
  if (num_heads >= 2) s[1] = 6.f;
  if (num_heads >= 3) s[2] = -INFINITY;
  return s;
}

inline HostProblem build_serving_problem(const ServingCase& c) {
  std::mt19937_64 rng(mix_seed(base_seed(), c.seed));
  HostProblem hp;
  flare_mha_fwd_params& p = hp.tmpl;
  flare_mha_fwd_params_init(&p);
  p.dtype = c.dtype;
  p.head_dim = c.head_dim;
  p.head_dim_v = c.head_dim_v;
  p.num_heads = c.num_heads;
  p.num_heads_k = c.num_heads_k;
  p.batch = int(c.q_lens.size());
  p.causal = c.causal ? 1 : 0;
  p.window_left = c.window_left;
  p.window_right = c.window_right;
  p.softcap = c.softcap;
  p.num_splits = c.num_splits;
  const int h = c.num_heads, hk = c.num_heads_k, d = c.head_dim, dv = c.dv();
  const bool cache = c.mode == KvMode::kKvCache;
  const int max_q = *std::max_element(c.q_lens.begin(), c.q_lens.end());
  const int max_k = *std::max_element(c.k_lens.begin(), c.k_lens.end());

  // q / out: packed rows (varlen) or a padded batch (KV cache).
  const int total_q = std::accumulate(c.q_lens.begin(), c.q_lens.end(), 0);
  const int nq = cache ? p.batch : 1, rows_q = cache ? max_q : total_q;
  const Strides sq = serving_strides(c.padded, nq, rows_q, h, d, c.tight, c.base_offset);
  const Strides so = serving_strides(c.padded, nq, rows_q, h, dv, c.tight);
  hp.buf[kBufQ] = random_tensor(sq.elems, c.dtype, rng);
  hp.q = {kBufQ, c.base_offset};
  p.q_batch_stride = sq.batch, p.q_row_stride = sq.row, p.q_head_stride = sq.head;
  p.out_batch_stride = so.batch, p.out_row_stride = so.row, p.out_head_stride = so.head;
  hp.out_elems = so.elems;
  hp.ref_lse_elems = size_t(h) * total_q;
  hp.lse_elems = c.lse ? hp.ref_lse_elems : 0;
  if (cache) {
    p.seqlen_q = max_q;
  } else {
    hp.cu_q = prefix_sums(c.q_lens);
    p.max_seqlen_q = max_q;
    p.max_seqlen_k = max_k;
  }

  // k / v: a paged pool, a KV cache [batch, capacity], or packed varlen rows. Every row is
  // random: rows no sequence sees hold garbage that must not reach the output.
  const int extra = 5;  // KV cache capacity beyond the longest fill level
  int nk, rows_k;
  if (c.page_size > 0) {
    std::vector<int> rows(c.k_lens);
    if (cache)
      for (int& r : rows) r = max_k + extra;  // every sequence owns its whole capacity
    nk = make_block_table(rows, c.page_size, 3, rng, &hp.block_table, &p.block_table_batch_stride);
    rows_k = c.page_size;
    p.page_block_size = c.page_size;
    p.num_pages = nk;
    if (cache) p.seqlen_k = int(p.block_table_batch_stride - 1) * c.page_size;
  } else if (cache) {
    nk = p.batch, rows_k = max_k + extra;
    p.seqlen_k = rows_k;
  } else {
    nk = 1, rows_k = std::max(1, std::accumulate(c.k_lens.begin(), c.k_lens.end(), 0));
  }
  const Strides sk = serving_strides(c.padded, nk, rows_k, hk, d, c.tight, c.base_offset);
  const Strides sv = serving_strides(c.padded, nk, rows_k, hk, dv, c.tight, c.base_offset);
  hp.buf[kBufK] = random_tensor(sk.elems, c.dtype, rng);
  hp.buf[kBufV] = random_tensor(sv.elems, c.dtype, rng);
  hp.k = {kBufK, c.base_offset};
  hp.v = {kBufV, c.base_offset};
  p.k_batch_stride = sk.batch, p.k_row_stride = sk.row, p.k_head_stride = sk.head;
  p.v_batch_stride = sv.batch, p.v_row_stride = sv.row, p.v_head_stride = sv.head;

  if (cache) {
    hp.cache_seqlens.resize(p.batch);
    for (int b = 0; b < p.batch; ++b) hp.cache_seqlens[b] = c.k_lens[b] - c.seqlen_new;
    if (c.seqlen_new > 0) {
      const Strides sn = serving_strides(c.padded, p.batch, c.seqlen_new, hk, d, c.tight,
                                            c.base_offset);
      const Strides snv = serving_strides(c.padded, p.batch, c.seqlen_new, hk, dv, c.tight,
                                             c.base_offset);
      hp.buf[kBufKNew] = random_tensor(sn.elems, c.dtype, rng);
      hp.buf[kBufVNew] = random_tensor(snv.elems, c.dtype, rng);
      hp.k_new = {kBufKNew, c.base_offset};
      hp.v_new = {kBufVNew, c.base_offset};
      p.seqlen_new = c.seqlen_new;
      p.k_new_batch_stride = sn.batch, p.k_new_row_stride = sn.row, p.k_new_head_stride = sn.head;
      p.v_new_batch_stride = snv.batch, p.v_new_row_stride = snv.row;
      p.v_new_head_stride = snv.head;
    }
  } else if (c.seqused_only) {
    hp.seqused_k.assign(c.k_lens.begin(), c.k_lens.end());
  } else {
    hp.cu_k = prefix_sums(c.k_lens);
  }

  if (c.alibi) {
    hp.alibi.resize(h);
    for (int i = 0; i < h; ++i) hp.alibi[i] = std::pow(2.f, -8.f * float(i + 1) / float(h));
  }
  if (c.sink) {
    hp.sink = make_sinks(h, rng);
    for (float& z : hp.sink) z += c.sink_shift;
  }
  if (c.max_ranges > 0) {
    // One spare int32 pair per sequence beyond the slots: the batch stride is not 2 * max.
    const int64_t stride = 2 * int64_t(c.max_ranges) + 2;
    hp.mm_ranges.assign(size_t(p.batch) * stride, 0);
    for (size_t b = 0; b < c.ranges.size() && int(b) < p.batch; ++b)
      for (size_t r = 0; r < c.ranges[b].size() && int(r) < c.max_ranges; ++r) {
        hp.mm_ranges[b * stride + 2 * r] = c.ranges[b][r].first;
        hp.mm_ranges[b * stride + 2 * r + 1] = c.ranges[b][r].second;
      }
    for (int b = 0; b < p.batch; ++b)  // the spare pair: a range that must never be read
      hp.mm_ranges[size_t(b) * stride + stride - 2] = 0,
          hp.mm_ranges[size_t(b) * stride + stride - 1] = 1 << 30;
    p.mm_prefix_ranges_batch_stride = stride;
    p.max_mm_prefix_ranges = c.max_ranges;
  }
  return hp;
}

// The CPU reference of a serving problem, and for a KV cache with append the caches as the
// call must leave them (k_after / v_after; empty without append).
struct ServingReference {
  RefOutputs ref;
  std::vector<uint16_t> k_after, v_after;
};

inline ServingReference serving_reference(const HostProblem& hp) {
  ServingReference r;
  HostProblem appended = hp;
  if (hp.tmpl.seqlen_new > 0 && !hp.cache_seqlens.empty()) {
    const flare_mha_fwd_params p = host_params(appended);
    flare::ref::append_kv(p, appended.buf[kBufK].data(), appended.buf[kBufV].data());
    r.k_after = appended.buf[kBufK];
    r.v_after = appended.buf[kBufV];
  }
  r.ref = compute_reference(host_params(appended), appended);
  return r;
}

// Multiply-adds of the reference, for keeping the suite's CPU work in check.
inline double serving_work(const ServingCase& c) {
  double w = 0;
  for (size_t b = 0; b < c.q_lens.size(); ++b) w += double(c.q_lens[b]) * c.k_lens[b];
  return w * c.num_heads * (c.head_dim + c.dv());
}

}  // namespace flare_test
