// Problems with the serving fields of flare.h for the GPU suite (header-only): variable-length
// batches over contiguous or paged K/V (any page size >= 1, pages shuffled over a pool with
// spare pages, key counts from cu_seqlens_k or from seqused_k alone), KV-cache decode / chunked
// prefill with append (rotary, cache_batch_idx, leftpad), padded batches, any head dim with a
// separate V head dim, per-head sinks, multimodal prefix ranges, and FP8 K/V (e4m3 / e5m2 codes
// with per-tensor or per-(batch, K/V head) descale factors). One ServingCase describes a
// problem; build_serving_problem turns it into a HostProblem (gpu_test_util.h), and
// serving_reference computes its CPU reference (after the KV-cache append on host copies of the
// caches; into an FP8 cache the append writes quantize_fp8 codes).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/fp8_params.h"
#include "gpu/gpu_test_util.h"

namespace flare_test {

enum class KvMode {
  kVarlen,   // cu_seqlens_q / cu_seqlens_k, K/V contiguous or paged (page_size > 0)
  kKvCache,  // cache_seqlens (+ k_new / v_new), q a padded batch, cache contiguous or paged
  kBatch,    // a padded batch: seqlen_q / seqlen_k (q_lens all equal, k_lens all equal)
};

// The descale arrays of K and V (flare.h, "FP8 inputs"). Built whenever not kNone, whatever
// kv_dtype is, so a case can also pair them wrongly (bad input).
enum class Descale {
  kNone,       // k_descale / v_descale null
  kPerTensor,  // one factor per tensor: strides 0 / 0
  kPerHead,    // one per (batch entry, K/V head): FlashAttention-3's [batch, num_heads_k]
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
  // KV cache only: rotary embedding of k_new and q (rotary_dim > 0, tables in the dtype),
  // a contiguous cache of batch + 2 entries read through a shuffled cache_batch_idx, and rows
  // of left padding before each sequence's keys (leftpad_k; empty: none).
  int rotary_dim = 0;
  bool rotary_interleaved = false;
  bool cache_batch_idx = false;
  std::vector<int> leftpad;
  // FP8 K/V: FLARE_DTYPE_E4M3 / FLARE_DTYPE_E5M2 make k and v (the caches) byte codes (q, out,
  // k_new, v_new stay in dtype). Needs untight, unoffset tensors (16-byte FP8 chunks).
  int kv_dtype = 0;
  Descale descale = Descale::kNone;
  uint64_t seed = 1;

  int dv() const { return head_dim_v != 0 ? head_dim_v : head_dim; }
};

inline void PrintTo(const ServingCase& c, std::ostream* os) { *os << c.name; }

// The head stride of a row of `width` elements: a whole number of 16-byte chunks (8 16-bit
// elements, 16 FP8 codes: `elem_bytes` 2 or 1), plus one chunk more with padded strides (and 2
// / 4 chunks of gap between rows / batch entries); tight: exactly `width` (plus odd gaps 3 / 5 /
// 7 with padded strides), which makes the launch narrow unless width is a multiple of 8 and no
// gap is used. `offset` elements more for a base moved by that much.
inline Strides serving_strides(bool padded, int n, int rows, int heads, int width,
                               bool tight = false, int offset = 0, int elem_bytes = 2) {
  Strides s;
  const int chunk = 16 / elem_bytes;
  const int64_t wc = (width + chunk - 1) / chunk * chunk;
  if (tight) {
    s.head = padded ? width + 3 : width;
    s.row = int64_t(heads) * s.head + (padded ? 5 : 0);
    s.batch = int64_t(rows) * s.row + (padded ? 7 : 0);
  } else {
    s.head = padded ? wc + chunk : wc;
    s.row = int64_t(heads) * s.head + (padded ? 2 * chunk : 0);
    s.batch = int64_t(rows) * s.row + (padded ? 4 * chunk : 0);
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

// ---------------------------------------------------------------------------------------------
// FP8 K/V. The values of (sequence b, K/V head hk) are N(0, sigma^2) with sigma in [0.5, 2]
// drawn per (b, hk) (heads of different sizes, as in real caches), stored as the codes
// quantize_fp8(value, descale) (fp8_params.h). With T = the format's largest finite value / 8
// and u in [0.5, 2] drawn per factor: per head descale = u sigma / T, so typical codes are
// around T / u (the largest near the format's top); per tensor one descale = u 2 / T (2 = the
// largest sigma), so small heads get small codes, the subnormals included. Rows no sequence
// owns hold codes of N(0, T^2): finite garbage that must not reach the output.
inline float fp8_typical_code(int kv_dtype) {
  return (kv_dtype == FLARE_DTYPE_E5M2 ? flare::kE5m2Max : flare::kE4m3Max) / 8.f;
}

// Per-(b, hk) value scales (index b * num_heads_k + hk) of K and V.
struct Fp8Scales {
  std::vector<float> k_sigma, v_sigma;
};

// The values of a case's descale array: its slots and strides (set in p), NaN in the gaps (a
// kernel that reads a wrong slot outputs NaN), the factor of (b, hk) per `mode`. A per-tensor
// array is followed by batch * hk NaNs: a kernel that ignores the zero strides reads them.
inline std::vector<float> make_descale(Descale mode, bool padded, int batch, int hk,
                                       const std::vector<float>& sigma, float typical,
                                       std::mt19937_64& rng, int64_t* batch_stride,
                                       int64_t* head_stride) {
  std::uniform_real_distribution<float> log_u(std::log(0.5f), std::log(2.f));
  if (mode == Descale::kPerTensor) {
    *batch_stride = 0, *head_stride = 0;
    std::vector<float> d(size_t(batch) * hk + 1, std::numeric_limits<float>::quiet_NaN());
    d[0] = std::exp(log_u(rng)) * 2.f / typical;
    return d;
  }
  *head_stride = padded ? 2 : 1;
  *batch_stride = padded ? 2 * int64_t(hk) + 3 : hk;
  std::vector<float> d(size_t((batch - 1) * *batch_stride + (hk - 1) * *head_stride + 1),
                       std::numeric_limits<float>::quiet_NaN());
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < hk; ++h)
      d[size_t(b * *batch_stride + h * *head_stride)] =
          std::exp(log_u(rng)) * sigma[size_t(b) * hk + h] / typical;
  return d;
}

inline uint8_t* fp8_bytes(std::vector<uint16_t>& v) { return reinterpret_cast<uint8_t*>(v.data()); }

// A buffer of `elems` FP8 codes (packed two to a uint16_t), all garbage codes of N(0, T^2).
inline std::vector<uint16_t> fp8_garbage(size_t elems, int kv_dtype, std::mt19937_64& rng) {
  std::vector<uint16_t> v((elems + 1) / 2);
  std::normal_distribution<float> nd(0.f, 1.f);
  uint8_t* bytes = fp8_bytes(v);
  const float descale = 1.f / fp8_typical_code(kv_dtype);
  for (size_t i = 0; i < 2 * v.size(); ++i)
    bytes[i] = flare::quantize_fp8(nd(rng), descale, kv_dtype);
  return v;
}

// Overwrites the rows every sequence owns (`owned[b]` storage rows from the first of its
// entry / pages / varlen start: leftpad rows and unfilled capacity included) with the codes of
// its (b, hk) value scale and descale factor. `p` is the host binding of `hp`.
inline void fill_fp8_rows(const flare_mha_fwd_params& p, HostProblem& hp,
                          const std::vector<int>& owned, const Fp8Scales& sc,
                          std::mt19937_64& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  const int d = p.head_dim, dv = flare::v_head_dim(p), dt = p.kv_dtype;
  uint8_t* kb = fp8_bytes(hp.buf[kBufK]);
  uint8_t* vb = fp8_bytes(hp.buf[kBufV]);
  for (int b = 0; b < p.batch; ++b) {
    const flare::SequenceInfo s = flare::sequence_info(p, b);
    // A KV cache's storage starts leftpad rows before its first key; other modes at the key.
    const int first = flare::is_kv_cache(p) ? -int(s.k_row0) : 0;
    for (int r = first; r < first + owned[b]; ++r)
      for (int h = 0; h < p.num_heads_k; ++h) {
        const size_t i = size_t(b) * p.num_heads_k + h;
        const float kd = flare::k_descale(p, b, h), vd = flare::v_descale(p, b, h);
        uint8_t* kr = kb + flare::k_offset(p, s, r, h);
        uint8_t* vr = vb + flare::v_offset(p, s, r, h);
        for (int e = 0; e < d; ++e) kr[e] = flare::quantize_fp8(nd(rng) * sc.k_sigma[i], kd, dt);
        for (int e = 0; e < dv; ++e) vr[e] = flare::quantize_fp8(nd(rng) * sc.v_sigma[i], vd, dt);
      }
  }
}

// Multiplies each (b, row, hk) row of a 16-bit tensor by sigma[b * hk + hk] (rounded to dtype).
inline void scale_rows(std::vector<uint16_t>& v, int dtype, int batch, int rows, int hk,
                       int width, const Strides& st, const std::vector<float>& sigma) {
  for (int b = 0; b < batch; ++b)
    for (int r = 0; r < rows; ++r)
      for (int h = 0; h < hk; ++h) {
        uint16_t* x = v.data() + b * st.batch + r * st.row + h * st.head;
        for (int e = 0; e < width; ++e)
          x[e] = flare::ref::from_float(flare::ref::to_float(x[e], dtype) * sigma[size_t(b) * hk + h],
                                        dtype);
      }
}

// Standard rotary tables for `positions` positions: angle(pos, i) = pos * 10000^(-2i / dim), in
// the dtype.
inline void make_rotary_tables(HostProblem& hp, int dtype, int dim, int positions) {
  const int half = dim / 2;
  hp.buf[kBufCos].resize(size_t(positions) * half);
  hp.buf[kBufSin].resize(size_t(positions) * half);
  for (int pos = 0; pos < positions; ++pos)
    for (int i = 0; i < half; ++i) {
      const double theta = pos * std::pow(10000.0, -2.0 * i / dim);
      hp.buf[kBufCos][size_t(pos) * half + i] = flare::ref::from_double(std::cos(theta), dtype);
      hp.buf[kBufSin][size_t(pos) * half + i] = flare::ref::from_double(std::sin(theta), dtype);
    }
  hp.rotary_cos = {kBufCos, 0};
  hp.rotary_sin = {kBufSin, 0};
}

inline HostProblem build_serving_problem(const ServingCase& c) {
  std::mt19937_64 rng(mix_seed(base_seed(), c.seed));
  HostProblem hp;
  flare_mha_fwd_params& p = hp.tmpl;
  flare_mha_fwd_params_init(&p);
  p.dtype = c.dtype;
  p.kv_dtype = c.kv_dtype;
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
  const bool batched = c.mode != KvMode::kVarlen;  // q / out a padded batch
  const bool fp8 = flare::is_fp8_dtype(c.kv_dtype);
  const int kv_bytes = fp8 ? 1 : 2;
  const int max_q = *std::max_element(c.q_lens.begin(), c.q_lens.end());
  const int max_k = *std::max_element(c.k_lens.begin(), c.k_lens.end());
  int max_leftpad = 0;
  for (int lp : c.leftpad) max_leftpad = std::max(max_leftpad, lp);

  // q / out: packed rows (varlen) or a padded batch (KV cache, batch).
  const int total_q = std::accumulate(c.q_lens.begin(), c.q_lens.end(), 0);
  const int nq = batched ? p.batch : 1, rows_q = batched ? max_q : total_q;
  const Strides sq = serving_strides(c.padded, nq, rows_q, h, d, c.tight, c.base_offset);
  const Strides so = serving_strides(c.padded, nq, rows_q, h, dv, c.tight);
  hp.buf[kBufQ] = random_tensor(sq.elems, c.dtype, rng);
  hp.q = {kBufQ, c.base_offset};
  p.q_batch_stride = sq.batch, p.q_row_stride = sq.row, p.q_head_stride = sq.head;
  p.out_batch_stride = so.batch, p.out_row_stride = so.row, p.out_head_stride = so.head;
  hp.out_elems = so.elems;
  hp.ref_lse_elems = size_t(h) * total_q;
  hp.lse_elems = c.lse ? hp.ref_lse_elems : 0;
  if (batched) {
    p.seqlen_q = max_q;
  } else {
    hp.cu_q = prefix_sums(c.q_lens);
    p.max_seqlen_q = max_q;
    p.max_seqlen_k = max_k;
  }

  // k / v: a paged pool, a KV cache [batch (+ 2 with cache_batch_idx), capacity], a padded
  // batch or packed varlen rows. Every row is random: rows no sequence sees hold garbage that
  // must not reach the output. owned[b]: the storage rows sequence b owns (FP8 codes of its
  // scales are written there).
  const int extra = 5;  // KV cache capacity beyond the longest fill level (and left padding)
  int nk, rows_k;
  std::vector<int> owned(c.k_lens);
  if (c.page_size > 0) {
    std::vector<int> rows(c.k_lens);
    if (cache)
      for (int& r : rows) r = max_k + max_leftpad + extra;  // each owns its whole capacity
    nk = make_block_table(rows, c.page_size, 3, rng, &hp.block_table, &p.block_table_batch_stride);
    rows_k = c.page_size;
    p.page_block_size = c.page_size;
    p.num_pages = nk;
    if (cache) p.seqlen_k = int(p.block_table_batch_stride - 1) * c.page_size;
    for (size_t b = 0; b < rows.size(); ++b)
      owned[b] = (rows[b] + c.page_size - 1) / c.page_size * c.page_size;
  } else if (cache) {
    nk = c.cache_batch_idx ? p.batch + 2 : p.batch, rows_k = max_k + max_leftpad + extra;
    p.seqlen_k = rows_k;
    owned.assign(p.batch, rows_k);
  } else if (batched) {
    nk = p.batch, rows_k = max_k;
    p.seqlen_k = max_k;
  } else {
    nk = 1, rows_k = std::max(1, std::accumulate(c.k_lens.begin(), c.k_lens.end(), 0));
  }
  const Strides sk = serving_strides(c.padded, nk, rows_k, hk, d, c.tight, c.base_offset, kv_bytes);
  const Strides sv = serving_strides(c.padded, nk, rows_k, hk, dv, c.tight, c.base_offset, kv_bytes);
  Fp8Scales scales;
  if (fp8 || c.descale != Descale::kNone) {
    std::uniform_real_distribution<float> log_sigma(std::log(0.5f), std::log(2.f));
    scales.k_sigma.resize(size_t(p.batch) * hk);
    scales.v_sigma.resize(size_t(p.batch) * hk);
    for (float& x : scales.k_sigma) x = std::exp(log_sigma(rng));
    for (float& x : scales.v_sigma) x = std::exp(log_sigma(rng));
  }
  if (fp8) {
    hp.buf[kBufK] = fp8_garbage(sk.elems, c.kv_dtype, rng);
    hp.buf[kBufV] = fp8_garbage(sv.elems, c.kv_dtype, rng);
  } else {
    hp.buf[kBufK] = random_tensor(sk.elems, c.dtype, rng);
    hp.buf[kBufV] = random_tensor(sv.elems, c.dtype, rng);
  }
  if (c.descale != Descale::kNone) {
    const float typical = fp8_typical_code(fp8 ? c.kv_dtype : FLARE_DTYPE_E4M3);
    hp.k_descale = make_descale(c.descale, c.padded, p.batch, hk, scales.k_sigma, typical, rng,
                                &p.k_descale_batch_stride, &p.k_descale_head_stride);
    hp.v_descale = make_descale(c.descale, c.padded, p.batch, hk, scales.v_sigma, typical, rng,
                                &p.v_descale_batch_stride, &p.v_descale_head_stride);
  }
  hp.k = {kBufK, c.base_offset};
  hp.v = {kBufV, c.base_offset};
  p.k_batch_stride = sk.batch, p.k_row_stride = sk.row, p.k_head_stride = sk.head;
  p.v_batch_stride = sv.batch, p.v_row_stride = sv.row, p.v_head_stride = sv.head;

  if (cache) {
    hp.cache_seqlens.resize(p.batch);
    for (int b = 0; b < p.batch; ++b) {
      const int lp = c.leftpad.empty() ? 0 : c.leftpad[b];
      hp.cache_seqlens[b] = lp + c.k_lens[b] - c.seqlen_new;
    }
    if (!c.leftpad.empty()) hp.leftpad_k.assign(c.leftpad.begin(), c.leftpad.end());
    if (c.cache_batch_idx) {
      std::vector<int32_t> entries(nk);
      std::iota(entries.begin(), entries.end(), 0);
      std::shuffle(entries.begin(), entries.end(), rng);
      hp.cache_batch_idx.assign(entries.begin(), entries.begin() + p.batch);
    }
    if (c.seqlen_new > 0) {
      const Strides sn = serving_strides(c.padded, p.batch, c.seqlen_new, hk, d, c.tight,
                                            c.base_offset);
      const Strides snv = serving_strides(c.padded, p.batch, c.seqlen_new, hk, dv, c.tight,
                                             c.base_offset);
      hp.buf[kBufKNew] = random_tensor(sn.elems, c.dtype, rng);
      hp.buf[kBufVNew] = random_tensor(snv.elems, c.dtype, rng);
      if (fp8) {  // the new rows at their (b, hk) scales, like the cached ones
        scale_rows(hp.buf[kBufKNew], c.dtype, p.batch, c.seqlen_new, hk, d, sn, scales.k_sigma);
        scale_rows(hp.buf[kBufVNew], c.dtype, p.batch, c.seqlen_new, hk, dv, snv, scales.v_sigma);
      }
      hp.k_new = {kBufKNew, c.base_offset};
      hp.v_new = {kBufVNew, c.base_offset};
      p.seqlen_new = c.seqlen_new;
      p.k_new_batch_stride = sn.batch, p.k_new_row_stride = sn.row, p.k_new_head_stride = sn.head;
      p.v_new_batch_stride = snv.batch, p.v_new_row_stride = snv.row;
      p.v_new_head_stride = snv.head;
    }
    if (c.rotary_dim > 0) {
      make_rotary_tables(hp, c.dtype, c.rotary_dim, p.seqlen_k);
      p.rotary_dim = c.rotary_dim;
      p.rotary_interleaved = c.rotary_interleaved ? 1 : 0;
      p.rotary_max_positions = p.seqlen_k;
    }
  } else if (c.seqused_only) {
    hp.seqused_k.assign(c.k_lens.begin(), c.k_lens.end());
  } else if (!batched) {
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
  if (fp8) fill_fp8_rows(host_params(hp), hp, owned, scales, rng);
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
    // The caches' bases, as host_params points p.k / p.v (a base_offset moves them).
    flare::ref::append_kv(p, appended.buf[kBufK].data() + hp.k.offset,
                          appended.buf[kBufV].data() + hp.v.offset);
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
