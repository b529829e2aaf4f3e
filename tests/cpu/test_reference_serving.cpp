// The CPU reference (src/reference) on the serving fields of flare.h: paged KV in varlen and in
// the KV cache at any page size, head dims 1..512 with a separate V head dim, attention sinks and
// multimodal prefix ranges, alone and combined with causal / window / ALiBi / softcap / GQA / LSE.
//
// Two kinds of check:
//   - hand-computed cases: the expectation is written out here (one key and a sink, a range that
//     opens a future key to a causal row, ...);
//   - an independent brute force: `brute_force` evaluates flare.h's score and visibility rules
//     directly on logical per-sequence arrays in long double (no shared helper, no strides, no
//     pages), and the reference, run on a physical layout (varlen, paged varlen with shuffled
//     pages of any size, KV cache contiguous or paged), must agree to 1e-12. Layout properties
//     (paged == contiguous, sink -inf == no sink, empty ranges == no ranges) must hold bit for
//     bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "reference/reference.h"

namespace {

using flare::ref::Precision;
using flare::ref::from_float;
using flare::ref::to_float;

constexpr double kNoValue = 12345.0;  // poison: every real output element must be overwritten
constexpr double kTol = 1e-12;
const double kInf = std::numeric_limits<double>::infinity();

// One attention problem in logical form: per sequence b, q[b] is [sq, h, d], k[b] is [sk, hk, d],
// v[b] is [sk, hk, dv], values exact in fp16 and bf16.
struct Logical {
  int batch = 1, h = 1, hk = 1, d = 8, dv = 8, dtype = FLARE_DTYPE_FP16;
  std::vector<int> sq, sk;
  std::vector<std::vector<uint16_t>> q, k, v;
  bool causal = false;
  int window_left = -1, window_right = -1;
  float softcap = 0.f, scale = 0.f;
  std::vector<float> alibi;  // [h] or empty
  std::vector<float> sink;   // [h] or empty
  std::vector<std::vector<std::pair<int, int>>> ranges;  // per sequence; empty: no ranges
  int max_ranges = 0;  // slots per sequence (>= every ranges[b].size())

  double scale_used() const { return scale != 0.f ? scale : 1.0f / std::sqrt(float(d)); }
  size_t qi(int i, int hh, int e) const { return (size_t(i) * h + hh) * d + e; }
  size_t ki(int j, int hh, int e) const { return (size_t(j) * hk + hh) * d + e; }
  size_t vi(int j, int hh, int e) const { return (size_t(j) * hk + hh) * dv + e; }
  double val(const std::vector<uint16_t>& t, size_t at) const { return to_float(t[at], dtype); }
};

Logical make_logical(std::mt19937& rng, int batch, int h, int hk, int d, int dv,
                     std::vector<int> sq, std::vector<int> sk, int dtype = FLARE_DTYPE_FP16) {
  Logical L;
  L.batch = batch, L.h = h, L.hk = hk, L.d = d, L.dv = dv, L.dtype = dtype;
  L.sq = std::move(sq);
  L.sk = std::move(sk);
  std::uniform_int_distribution<int> dist(-16, 16);  // multiples of 1/8 in [-2, 2]
  auto fill = [&](size_t n) {
    std::vector<uint16_t> t(n);
    for (auto& x : t) x = from_float(dist(rng) / 8.0f, dtype);
    return t;
  };
  for (int b = 0; b < batch; ++b) {
    L.q.push_back(fill(size_t(L.sq[b]) * h * d));
    L.k.push_back(fill(size_t(L.sk[b]) * hk * d));
    L.v.push_back(fill(size_t(L.sk[b]) * hk * dv));
  }
  return L;
}

// Output in logical form: out[b] is [sq, h, dv], lse[b] is [h, sq].
struct Result {
  std::vector<std::vector<double>> out, lse;
};

// flare.h's rules, evaluated from their text: key j of sequence b is visible from row i when
// 0 <= j < sk and it passes causal / window around a = i + sk - sq, or a range holds j and a.
bool visible(const Logical& L, int b, int i, int j) {
  const long long a = (long long)i + L.sk[b] - L.sq[b];
  if (j < 0 || j >= L.sk[b]) return false;
  const int right = L.causal ? 0 : L.window_right;
  bool in_mask = true;
  if (L.window_left >= 0 && j < a - L.window_left) in_mask = false;
  if (right >= 0 && j > a + right) in_mask = false;
  if (in_mask) return true;
  if (b < int(L.ranges.size()))
    for (auto [start, end] : L.ranges[b])
      if (start <= j && j < end && start <= a && a < end) return true;
  return false;
}

Result brute_force(const Logical& L) {
  Result R;
  const int group = L.h / L.hk;
  for (int b = 0; b < L.batch; ++b) {
    R.out.emplace_back(size_t(L.sq[b]) * L.h * L.dv, 0.0);
    R.lse.emplace_back(size_t(L.h) * L.sq[b], 0.0);
    for (int hh = 0; hh < L.h; ++hh) {
      const int kh = hh / group;
      const long double z = L.sink.empty() ? -INFINITY : (long double)L.sink[hh];
      for (int i = 0; i < L.sq[b]; ++i) {
        const long long a = (long long)i + L.sk[b] - L.sq[b];
        std::vector<int> keys;
        std::vector<long double> s;
        for (int j = 0; j < L.sk[b]; ++j) {
          if (!visible(L, b, i, j)) continue;
          long double dot = 0;
          for (int e = 0; e < L.d; ++e)
            dot += (long double)L.val(L.q[b], L.qi(i, hh, e)) * L.val(L.k[b], L.ki(j, kh, e));
          long double x = L.scale_used() * dot;
          if (L.softcap > 0) x = L.softcap * std::tanh(x / L.softcap);
          if (!L.alibi.empty()) x -= (long double)L.alibi[hh] * std::fabs((long double)(a - j));
          keys.push_back(j);
          s.push_back(x);
        }
        double* o = &R.out[b][(size_t(i) * L.h + hh) * L.dv];
        double& lse = R.lse[b][size_t(hh) * L.sq[b] + i];
        if (keys.empty()) {
          lse = double(z);
          continue;
        }
        long double mx = z;
        for (auto x : s) mx = std::max(mx, x);
        long double sum = std::isinf(z) ? 0.0L : std::exp(z - mx);
        for (auto x : s) sum += std::exp(x - mx);
        const long double l = mx + std::log(sum);
        for (size_t u = 0; u < keys.size(); ++u) {
          const long double w = std::exp(s[u] - l);
          for (int e = 0; e < L.dv; ++e) o[e] += double(w * L.val(L.v[b], L.vi(keys[u], kh, e)));
        }
        lse = double(l);
      }
    }
  }
  return R;
}

// How the reference sees the keys.
enum class Layout {
  Varlen,          // cu_seqlens_q / cu_seqlens_k, packed k/v
  PagedVarlen,     // cu_seqlens_q + cu_seqlens_k + block_table
  PagedSequsedK,   // cu_seqlens_q + seqused_k + block_table (cu_seqlens_k null)
  KvCache,         // cache_seqlens, contiguous cache [batch, capacity, hk, d]
  KvCachePaged,    // cache_seqlens + block_table
};

bool is_paged_layout(Layout l) {
  return l == Layout::PagedVarlen || l == Layout::PagedSequsedK || l == Layout::KvCachePaged;
}
bool is_cache_layout(Layout l) { return l == Layout::KvCache || l == Layout::KvCachePaged; }

// The physical tensors of one run of the reference, and the params pointing at them.
struct Physical {
  std::vector<uint16_t> q, k, v;
  std::vector<int32_t> cu_q, cu_k, seqused, cache_seqlens, block_table, ranges;
  std::vector<float> alibi, sink;
  std::vector<double> out, lse;
  flare_mha_fwd_params p;
};

// Builds `layout` of L. KV cache layouts need equal sq (q is a padded batch there); `extra`
// pads each KV cache sequence's capacity beyond sk (rows never seen). Paged layouts spread the
// pages of every sequence over a pool in a shuffled order (shuffle seed `seed`), with one unused
// page at the front of the pool.
Physical build(const Logical& L, Layout layout, int page = 16, unsigned seed = 1, int extra = 3) {
  Physical P;
  flare_mha_fwd_params& p = P.p;
  std::memset(&p, 0, sizeof p);
  p.struct_size = sizeof p;
  p.window_left = L.window_left;
  p.window_right = L.window_right;
  p.causal = L.causal ? 1 : 0;
  p.dtype = L.dtype;
  p.batch = L.batch;
  p.num_heads = L.h;
  p.num_heads_k = L.hk;
  p.head_dim = L.d;
  p.head_dim_v = L.dv == L.d ? 0 : L.dv;
  p.softmax_scale = L.scale;
  p.softcap = L.softcap;
  const bool cache = is_cache_layout(layout);
  const bool paged = is_paged_layout(layout);

  // q / out: varlen packed, or a padded batch for the KV cache.
  int total_q = 0;
  P.cu_q.push_back(0);
  for (int b = 0; b < L.batch; ++b) P.cu_q.push_back(total_q += L.sq[b]);
  if (cache) {
    for (int b = 1; b < L.batch; ++b)
      if (L.sq[b] != L.sq[0]) throw std::logic_error("KV cache layouts need equal sq");
    p.seqlen_q = L.sq[0];
  }
  P.q.resize(size_t(total_q) * L.h * L.d);
  for (int b = 0; b < L.batch; ++b)
    std::copy(L.q[b].begin(), L.q[b].end(), P.q.begin() + size_t(P.cu_q[b]) * L.h * L.d);
  p.q_head_stride = L.d, p.q_row_stride = int64_t(L.h) * L.d;
  p.out_head_stride = L.dv, p.out_row_stride = int64_t(L.h) * L.dv;
  if (cache) {
    p.q_batch_stride = p.q_row_stride * p.seqlen_q;
    p.out_batch_stride = p.out_row_stride * p.seqlen_q;
  } else {
    p.cu_seqlens_q = nullptr;  // set below once the vectors are final
    p.max_seqlen_q = *std::max_element(L.sq.begin(), L.sq.end());
  }
  P.out.assign(size_t(total_q) * L.h * L.dv, kNoValue);
  P.lse.assign(size_t(total_q) * L.h, kNoValue);

  // k / v rows: logical row j of sequence b goes to physical row phys(b, j).
  p.k_head_stride = L.d, p.k_row_stride = int64_t(L.hk) * L.d;
  p.v_head_stride = L.dv, p.v_row_stride = int64_t(L.hk) * L.dv;
  const int max_sk = *std::max_element(L.sk.begin(), L.sk.end());
  std::vector<std::vector<int64_t>> phys(L.batch);  // physical row index per logical row
  int64_t rows = 0;
  if (paged) {
    const int capacity = (cache ? max_sk + extra : max_sk);
    const int max_pages = std::max(1, (capacity + page - 1) / page);
    std::vector<int> order(1 + size_t(L.batch) * max_pages);
    std::iota(order.begin(), order.end(), 0);
    std::mt19937 rng(seed);
    std::shuffle(order.begin() + 1, order.end(), rng);  // page order[0] = 0 stays unused
    P.block_table.resize(size_t(L.batch) * max_pages);
    for (int b = 0; b < L.batch; ++b)
      for (int t = 0; t < max_pages; ++t)
        P.block_table[size_t(b) * max_pages + t] = order[1 + size_t(b) * max_pages + t];
    for (int b = 0; b < L.batch; ++b)
      for (int j = 0; j < L.sk[b]; ++j)
        phys[b].push_back(int64_t(P.block_table[size_t(b) * max_pages + j / page]) * page +
                          j % page);
    p.page_block_size = page;
    p.num_pages = int(order.size());
    p.block_table_batch_stride = max_pages;
    rows = int64_t(p.num_pages) * page;
    p.k_batch_stride = p.k_row_stride * page;
    p.v_batch_stride = p.v_row_stride * page;
    if (cache) p.seqlen_k = max_pages * page;
  } else if (cache) {
    const int capacity = max_sk + extra;
    for (int b = 0; b < L.batch; ++b)
      for (int j = 0; j < L.sk[b]; ++j) phys[b].push_back(int64_t(b) * capacity + j);
    rows = int64_t(L.batch) * capacity;
    p.seqlen_k = capacity;
    p.k_batch_stride = p.k_row_stride * capacity;
    p.v_batch_stride = p.v_row_stride * capacity;
  } else {
    int64_t at = 0;
    for (int b = 0; b < L.batch; ++b)
      for (int j = 0; j < L.sk[b]; ++j) phys[b].push_back(at++);
    rows = at;
  }
  // Rows nobody should read hold NaN: a reference that reads them poisons its output.
  const uint16_t nan_bits = from_float(std::numeric_limits<float>::quiet_NaN(), L.dtype);
  P.k.assign(size_t(std::max<int64_t>(rows, 1)) * L.hk * L.d, nan_bits);
  P.v.assign(size_t(std::max<int64_t>(rows, 1)) * L.hk * L.dv, nan_bits);
  for (int b = 0; b < L.batch; ++b)
    for (int j = 0; j < L.sk[b]; ++j) {
      std::copy_n(&L.k[b][L.ki(j, 0, 0)], size_t(L.hk) * L.d, &P.k[size_t(phys[b][j]) * L.hk * L.d]);
      std::copy_n(&L.v[b][L.vi(j, 0, 0)], size_t(L.hk) * L.dv,
                  &P.v[size_t(phys[b][j]) * L.hk * L.dv]);
    }

  int total_k = 0;
  P.cu_k.push_back(0);
  for (int b = 0; b < L.batch; ++b) P.cu_k.push_back(total_k += L.sk[b]);
  P.seqused.assign(L.sk.begin(), L.sk.end());
  P.cache_seqlens.assign(L.sk.begin(), L.sk.end());

  P.alibi = L.alibi;
  P.sink = L.sink;
  if (!L.ranges.empty() || L.max_ranges > 0) {
    const int slots = L.max_ranges;
    P.ranges.assign(size_t(L.batch) * 2 * slots + 1, 0);  // unused slots: start == end == 0
    for (int b = 0; b < int(L.ranges.size()); ++b)
      for (size_t r = 0; r < L.ranges[b].size(); ++r) {
        P.ranges[size_t(b) * 2 * slots + 2 * r] = L.ranges[b][r].first;
        P.ranges[size_t(b) * 2 * slots + 2 * r + 1] = L.ranges[b][r].second;
      }
    p.max_mm_prefix_ranges = slots;
    p.mm_prefix_ranges_batch_stride = 2 * slots;
  }
  if (!cache) p.max_seqlen_k = max_sk;
  return P;
}

// Points the params at P's vectors (after any copy of P) and runs the reference.
void run(Physical& P, Layout layout, Precision prec = Precision::Float64) {
  flare_mha_fwd_params& p = P.p;
  p.q = P.q.data();
  p.k = P.k.data();
  p.v = P.v.data();
  const bool cache = is_cache_layout(layout);
  if (!cache) {
    p.cu_seqlens_q = P.cu_q.data();
    p.cu_seqlens_k = layout == Layout::PagedSequsedK ? nullptr : P.cu_k.data();
    p.seqused_k = layout == Layout::PagedSequsedK ? P.seqused.data() : nullptr;
  } else {
    p.cache_seqlens = P.cache_seqlens.data();
  }
  p.block_table = is_paged_layout(layout) ? P.block_table.data() : nullptr;
  p.alibi_slopes = P.alibi.empty() ? nullptr : P.alibi.data();
  p.sink = P.sink.empty() ? nullptr : P.sink.data();
  p.mm_prefix_ranges = P.ranges.empty() ? nullptr : P.ranges.data();
  flare::ref::attention_forward(p, prec, P.out.data(), P.lse.data());
}

// P's outputs in logical form. lse: varlen [h, total_q]; KV cache [b, h, sq].
Result logical_result(const Logical& L, const Physical& P, Layout layout) {
  Result R;
  const int total_q = P.cu_q.back();
  for (int b = 0; b < L.batch; ++b) {
    const size_t row0 = size_t(P.cu_q[b]);
    R.out.emplace_back(P.out.begin() + row0 * L.h * L.dv,
                       P.out.begin() + (row0 + L.sq[b]) * L.h * L.dv);
    std::vector<double> lse(size_t(L.h) * L.sq[b]);
    for (int hh = 0; hh < L.h; ++hh)
      for (int i = 0; i < L.sq[b]; ++i)
        lse[size_t(hh) * L.sq[b] + i] =
            is_cache_layout(layout) ? P.lse[(size_t(b) * L.h + hh) * L.sq[b] + i]
                                    : P.lse[size_t(hh) * total_q + row0 + i];
    R.lse.push_back(std::move(lse));
  }
  return R;
}

void expect_close(const Result& want, const Result& got, double tol, const char* what) {
  ASSERT_EQ(want.out.size(), got.out.size());
  for (size_t b = 0; b < want.out.size(); ++b) {
    ASSERT_EQ(want.out[b].size(), got.out[b].size());
    for (size_t x = 0; x < want.out[b].size(); ++x)
      ASSERT_NEAR(got.out[b][x], want.out[b][x], tol) << what << " out b=" << b << " x=" << x;
    for (size_t x = 0; x < want.lse[b].size(); ++x) {
      if (std::isinf(want.lse[b][x]))
        ASSERT_EQ(got.lse[b][x], want.lse[b][x]) << what << " lse b=" << b << " x=" << x;
      else
        ASSERT_NEAR(got.lse[b][x], want.lse[b][x], tol) << what << " lse b=" << b << " x=" << x;
    }
  }
}

// Bit-for-bit equality (NaN never equals: a poisoned element fails).
void expect_same(const Result& a, const Result& b, const char* what) {
  ASSERT_EQ(a.out.size(), b.out.size());
  for (size_t s = 0; s < a.out.size(); ++s) {
    ASSERT_EQ(a.out[s].size(), b.out[s].size());
    for (size_t x = 0; x < a.out[s].size(); ++x)
      ASSERT_EQ(a.out[s][x], b.out[s][x]) << what << " out b=" << s << " x=" << x;
    for (size_t x = 0; x < a.lse[s].size(); ++x)
      ASSERT_EQ(a.lse[s][x], b.lse[s][x]) << what << " lse b=" << s << " x=" << x;
  }
}

Result run_layout(const Logical& L, Layout layout, int page = 16, unsigned seed = 1,
                  Precision prec = Precision::Float64) {
  Physical P = build(L, layout, page, seed);
  run(P, layout, prec);
  return logical_result(L, P, layout);
}

// ---- hand-computed cases ------------------------------------------------------------------

// One query, one key, d = 1, sink z: out = v e^s / (e^s + e^z), lse = log(e^s + e^z).
TEST(ReferenceServing, SinkWithOneKey) {
  std::mt19937 rng(1);
  Logical L = make_logical(rng, 1, 1, 1, 1, 1, {1}, {1});
  L.q[0] = {from_float(1.5f, L.dtype)};
  L.k[0] = {from_float(2.0f, L.dtype)};
  L.v[0] = {from_float(-0.75f, L.dtype)};
  L.scale = 0.5f;  // s = 0.5 * 1.5 * 2 = 1.5
  L.sink = {0.25f};
  const Result r = run_layout(L, Layout::Varlen);
  const double s = 1.5, z = 0.25;
  EXPECT_NEAR(r.out[0][0], -0.75 * std::exp(s) / (std::exp(s) + std::exp(z)), kTol);
  EXPECT_NEAR(r.lse[0][0], std::log(std::exp(s) + std::exp(z)), kTol);
}

// A sink far above the score takes (almost) all the mass: the output goes to 0, lse to z.
TEST(ReferenceServing, DominantSinkSilencesTheRow) {
  std::mt19937 rng(2);
  Logical L = make_logical(rng, 1, 1, 1, 4, 4, {1}, {3});
  L.sink = {80.f};
  const Result r = run_layout(L, Layout::Varlen);
  for (double x : r.out[0]) EXPECT_NEAR(x, 0.0, 1e-30);
  EXPECT_NEAR(r.lse[0][0], 80.0, 1e-12);
}

// A row that sees no key (window past every key): out 0 and lse = the sink (-inf without one).
TEST(ReferenceServing, EmptyRowGetsSinkAsLse) {
  std::mt19937 rng(3);
  Logical L = make_logical(rng, 1, 2, 1, 8, 8, {4}, {2});
  L.causal = true;  // sq 4 > sk 2: rows 0 and 1 sit before key 0 and see nothing
  L.sink = {-1.5f, 3.f};
  const Result r = run_layout(L, Layout::Varlen);
  for (int hh = 0; hh < 2; ++hh)
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(r.lse[0][size_t(hh) * 4 + i], double(L.sink[hh]));
      for (int e = 0; e < 8; ++e) EXPECT_EQ(r.out[0][(size_t(i) * 2 + hh) * 8 + e], 0.0);
    }
  L.sink.clear();
  const Result r2 = run_layout(L, Layout::Varlen);
  EXPECT_EQ(r2.lse[0][0], -kInf);
}

// Causal 4 x 4 with the range [1, 3): row 1 (position 1) also sees key 2, a future key; rows
// 0 and 3 are unchanged (0 is outside the range, 3 already sees everything).
TEST(ReferenceServing, RangeOpensAFutureKeyToACausalRow) {
  std::mt19937 rng(4);
  Logical L = make_logical(rng, 1, 1, 1, 1, 1, {4}, {4});
  const float qs[4] = {1, 1, 1, 1}, ks[4] = {0.5f, 1, -1, 2}, vs[4] = {1, 2, 3, 4};
  for (int t = 0; t < 4; ++t) {
    L.q[0][t] = from_float(qs[t], L.dtype);
    L.k[0][t] = from_float(ks[t], L.dtype);
    L.v[0][t] = from_float(vs[t], L.dtype);
  }
  L.scale = 1.f;
  L.causal = true;
  L.ranges = {{{1, 3}}};
  L.max_ranges = 2;  // slot 1 unused (start == end)
  const Result r = run_layout(L, Layout::Varlen);
  auto softmax_out = [&](std::vector<int> keys) {
    double num = 0, den = 0;
    for (int j : keys) num += std::exp(double(ks[j])) * vs[j], den += std::exp(double(ks[j]));
    return num / den;
  };
  EXPECT_NEAR(r.out[0][0], 1.0, kTol);                         // row 0: key 0
  EXPECT_NEAR(r.out[0][1], softmax_out({0, 1, 2}), kTol);      // row 1: causal {0,1} + range {1,2}
  EXPECT_NEAR(r.out[0][2], softmax_out({0, 1, 2}), kTol);      // row 2: causal {0,1,2}
  EXPECT_NEAR(r.out[0][3], softmax_out({0, 1, 2, 3}), kTol);   // row 3: all
  EXPECT_NEAR(r.lse[0][1], std::log(std::exp(0.5) + std::exp(1.0) + std::exp(-1.0)), kTol);
}

// A range widens a sliding window to the left too, and ranges use the bottom-right aligned
// position: with sq 2 < sk 6, row 0 sits at position 4.
TEST(ReferenceServing, RangeWidensWindowAtAbsolutePosition) {
  std::mt19937 rng(5);
  Logical L = make_logical(rng, 1, 1, 1, 8, 8, {2}, {6});
  L.window_left = 0;
  L.window_right = 0;  // each row sees only its own position
  L.ranges = {{{3, 5}}};
  L.max_ranges = 1;
  const Result r = run_layout(L, Layout::Varlen);
  const Result want = brute_force(L);
  expect_close(want, r, kTol, "window + range");
  // Row 0 (position 4) sees keys {3, 4}; row 1 (position 5) only key 5: its output is v_5.
  for (int e = 0; e < 8; ++e)
    EXPECT_NEAR(r.out[0][size_t(1) * 8 + e], L.val(L.v[0], L.vi(5, 0, e)), kTol);
  double s3 = 0, s4 = 0;
  for (int e = 0; e < 8; ++e) {
    s3 += L.val(L.q[0], L.qi(0, 0, e)) * L.val(L.k[0], L.ki(3, 0, e));
    s4 += L.val(L.q[0], L.qi(0, 0, e)) * L.val(L.k[0], L.ki(4, 0, e));
  }
  const double sc = L.scale_used();
  EXPECT_NEAR(r.lse[0][0], std::log(std::exp(sc * s3) + std::exp(sc * s4)), kTol);
}

// Paged varlen with page sizes 1 and 3 and a shuffled block table gives exactly the
// contiguous varlen result.
TEST(ReferenceServing, PagedVarlenPageSizes1And3EqualContiguous) {
  std::mt19937 rng(6);
  Logical L = make_logical(rng, 3, 4, 2, 16, 16, {5, 1, 7}, {9, 4, 7});
  L.causal = true;
  const Result contiguous = run_layout(L, Layout::Varlen);
  for (int page : {1, 3}) {
    expect_same(contiguous, run_layout(L, Layout::PagedVarlen, page, 11), "paged, cu_seqlens_k");
    expect_same(contiguous, run_layout(L, Layout::PagedSequsedK, page, 12), "paged, seqused_k");
  }
}

// (head_dim, head_dim_v) = (192, 128): scores over 192 elements, outputs of 128.
TEST(ReferenceServing, HeadDim192WithVHeadDim128) {
  std::mt19937 rng(7);
  Logical L = make_logical(rng, 1, 2, 1, 192, 128, {3}, {5});
  const Result r = run_layout(L, Layout::Varlen);
  ASSERT_EQ(r.out[0].size(), size_t(3) * 2 * 128);
  // Row 2, head 1, by hand: softmax over all 5 keys of the 192-wide scores, times 128-wide v.
  std::vector<double> s(5);
  for (int j = 0; j < 5; ++j) {
    double dot = 0;
    for (int e = 0; e < 192; ++e) dot += L.val(L.q[0], L.qi(2, 1, e)) * L.val(L.k[0], L.ki(j, 0, e));
    s[j] = L.scale_used() * dot;
  }
  const double mx = *std::max_element(s.begin(), s.end());
  double den = 0;
  for (double x : s) den += std::exp(x - mx);
  for (int e = 0; e < 128; ++e) {
    double num = 0;
    for (int j = 0; j < 5; ++j) num += std::exp(s[j] - mx) * L.val(L.v[0], L.vi(j, 0, e));
    EXPECT_NEAR(r.out[0][(size_t(2) * 2 + 1) * 128 + e], num / den, 1e-12) << e;
  }
  EXPECT_NEAR(r.lse[0][size_t(1) * 3 + 2], mx + std::log(den), 1e-12);
}

// The reference never reads past a row: with head_dim_v < head_dim the out tensor has exactly
// dv columns a row, all written, and nothing beyond the last row.
TEST(ReferenceServing, VHeadDimWritesExactlyItsColumns) {
  std::mt19937 rng(8);
  Logical L = make_logical(rng, 2, 2, 2, 192, 128, {2, 3}, {4, 1});
  Physical P = build(L, Layout::Varlen);
  P.out.push_back(kNoValue);  // sentinel one past the end
  run(P, Layout::Varlen);
  for (size_t x = 0; x + 1 < P.out.size(); ++x) ASSERT_NE(P.out[x], kNoValue) << x;
  EXPECT_EQ(P.out.back(), kNoValue);
}

// Odd head dims (FlashAttention-2's 59 and 111, and the extremes) against the brute force.
TEST(ReferenceServing, OddHeadDims) {
  std::mt19937 rng(9);
  for (int d : {1, 7, 59, 111, 200, 264, 511, 512}) {
    Logical L = make_logical(rng, 2, 2, 1, d, d, {3, 2}, {4, 6});
    L.causal = true;
    expect_close(brute_force(L), run_layout(L, Layout::Varlen), kTol, "odd head dim");
  }
}

// KV cache: the append writes the new rows into pages of size 3 exactly where a contiguous
// cache gets them, and attention over the two caches agrees bit for bit.
TEST(ReferenceServing, PagedKvCacheAppendPageSize3) {
  std::mt19937 rng(10);
  const int batch = 2, hk = 2, h = 4, d = 16, dv = 16, seqlen_new = 2;
  Logical L = make_logical(rng, batch, h, hk, d, dv, {2, 2}, {5, 8});  // keys after the append
  std::vector<uint16_t> k_new(size_t(batch) * seqlen_new * hk * d),
      v_new(size_t(batch) * seqlen_new * hk * dv);
  std::uniform_int_distribution<int> dist(-16, 16);
  for (auto& x : k_new) x = from_float(dist(rng) / 8.0f, L.dtype);
  for (auto& x : v_new) x = from_float(dist(rng) / 8.0f, L.dtype);
  std::vector<Result> results;
  for (Layout layout : {Layout::KvCache, Layout::KvCachePaged}) {
    Physical P = build(L, layout, 3, 21);
    for (auto& c : P.cache_seqlens) c -= seqlen_new;  // rows before the append
    P.p.k_new = k_new.data();
    P.p.v_new = v_new.data();
    P.p.seqlen_new = seqlen_new;
    P.p.k_new_head_stride = d, P.p.k_new_row_stride = int64_t(hk) * d;
    P.p.k_new_batch_stride = P.p.k_new_row_stride * seqlen_new;
    P.p.v_new_head_stride = dv, P.p.v_new_row_stride = int64_t(hk) * dv;
    P.p.v_new_batch_stride = P.p.v_new_row_stride * seqlen_new;
    P.p.cache_seqlens = P.cache_seqlens.data();
    P.p.block_table = layout == Layout::KvCachePaged ? P.block_table.data() : nullptr;
    flare::ref::append_kv(P.p, P.k.data(), P.v.data());
    run(P, layout);
    results.push_back(logical_result(L, P, layout));
  }
  expect_same(results[0], results[1], "paged append");
  for (double x : results[0].out[1]) ASSERT_FALSE(std::isnan(x));
}

// ---- properties over random problems --------------------------------------------------------

struct RandomCase {
  Logical L;
  int page;
};

// A random problem: 1-3 sequences of random lengths, GQA, a random mask, maybe ALiBi, softcap,
// sinks, ranges and a separate V head dim.
RandomCase random_case(std::mt19937& rng, bool equal_sq) {
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int batch = uni(1, 3);
  const int hk = uni(1, 2), h = hk * uni(1, 3);
  const int dims[][2] = {{8, 8}, {16, 16}, {5, 5}, {24, 24}, {192, 128}, {1, 1}, {40, 40}};
  const auto& dd = dims[uni(0, 6)];
  std::vector<int> sq(batch), sk(batch);
  const int sq0 = uni(1, 6);
  for (int b = 0; b < batch; ++b) {
    sq[b] = equal_sq ? sq0 : uni(1, 6);
    sk[b] = uni(0, 12);
  }
  RandomCase c{make_logical(rng, batch, h, hk, dd[0], dd[1], sq, sk,
                            uni(0, 1) ? FLARE_DTYPE_BF16 : FLARE_DTYPE_FP16),
               uni(1, 7)};
  Logical& L = c.L;
  switch (uni(0, 3)) {
    case 0: break;
    case 1: L.causal = true; break;
    case 2: L.window_left = uni(0, 4), L.window_right = uni(-1, 3); break;
    case 3: L.causal = true, L.window_left = uni(0, 5); break;
  }
  if (uni(0, 2) == 0) {
    L.alibi.resize(h);
    for (auto& a : L.alibi) a = uni(1, 8) / 16.0f;
  }
  if (uni(0, 2) == 0) L.softcap = uni(1, 4) * 2.0f;
  if (uni(0, 1)) {
    L.sink.resize(h);
    for (auto& z : L.sink) z = uni(-20, 20) / 8.0f;
  }
  if (uni(0, 1)) {
    L.max_ranges = uni(1, 3);
    L.ranges.resize(batch);
    for (int b = 0; b < batch; ++b)
      for (int r = 0, n = uni(0, L.max_ranges); r < n; ++r) {
        const int s = uni(-2, sk[b] + 1);
        L.ranges[b].push_back({s, s + uni(-1, 5)});  // may be empty, reversed or out of bounds
      }
  }
  return c;
}

// The reference agrees with the brute force on every layout, and paged equals contiguous.
TEST(ReferenceServing, RandomCombinationsMatchBruteForce) {
  std::mt19937 rng(20);
  for (int it = 0; it < 150; ++it) {
    const bool cache = it % 3 == 2;
    RandomCase c = random_case(rng, cache);
    SCOPED_TRACE("case " + std::to_string(it) + " page " + std::to_string(c.page));
    const Result want = brute_force(c.L);
    if (cache) {
      const Result contiguous = run_layout(c.L, Layout::KvCache);
      expect_close(want, contiguous, kTol, "kv cache");
      expect_same(contiguous, run_layout(c.L, Layout::KvCachePaged, c.page, it), "kv paged");
    } else {
      const Result contiguous = run_layout(c.L, Layout::Varlen);
      expect_close(want, contiguous, kTol, "varlen");
      expect_same(contiguous, run_layout(c.L, Layout::PagedVarlen, c.page, it), "paged varlen");
      expect_same(contiguous, run_layout(c.L, Layout::PagedSequsedK, c.page, it + 1000),
                  "paged seqused_k");
    }
    if (HasFatalFailure()) return;
  }
}

// sink = -inf everywhere is the same as no sink, bit for bit, in both precisions.
TEST(ReferenceServing, MinusInfinitySinkEqualsNoSink) {
  std::mt19937 rng(21);
  for (int it = 0; it < 40; ++it) {
    RandomCase c = random_case(rng, false);
    c.L.sink.clear();
    for (Precision prec : {Precision::Float64, Precision::NaiveLowPrecision}) {
      const Result none = run_layout(c.L, Layout::Varlen, 16, 1, prec);
      Logical with = c.L;
      with.sink.assign(with.h, -std::numeric_limits<float>::infinity());
      expect_same(none, run_layout(with, Layout::Varlen, 16, 1, prec), "sink -inf");
    }
  }
}

// Ranges that select nothing (start >= end, or positions outside the keys, or zero slots) are
// the same as no ranges, bit for bit.
TEST(ReferenceServing, EmptyRangesEqualNoRanges) {
  std::mt19937 rng(22);
  for (int it = 0; it < 40; ++it) {
    RandomCase c = random_case(rng, false);
    c.L.ranges.clear();
    c.L.max_ranges = 0;
    const Result none = run_layout(c.L, Layout::Varlen);
    Logical with = c.L;
    with.max_ranges = 3;
    with.ranges.resize(with.batch);
    for (int b = 0; b < with.batch; ++b)
      with.ranges[b] = {{2, 2}, {5, 1}, {with.sk[b], with.sk[b] + 4}};
    expect_same(none, run_layout(with, Layout::Varlen), "empty ranges");
    Logical zero_slots = c.L;  // a pointer with 0 ranges per sequence
    zero_slots.max_ranges = 0;
    zero_slots.ranges.assign(zero_slots.batch, {});
    Physical P = build(zero_slots, Layout::Varlen);
    P.ranges.assign(4, 7);  // never read: 0 slots
    run(P, Layout::Varlen);
    expect_same(none, logical_result(zero_slots, P, Layout::Varlen), "zero slots");
  }
}

// The naive low-precision variant follows the same visibility and sink rules: it stays within
// the element type's rounding of the float64 result.
TEST(ReferenceServing, NaiveLowPrecisionTracksFloat64) {
  std::mt19937 rng(23);
  for (int it = 0; it < 40; ++it) {
    RandomCase c = random_case(rng, false);
    const Result exact = run_layout(c.L, Layout::Varlen);
    const Result naive = run_layout(c.L, Layout::Varlen, 16, 1, Precision::NaiveLowPrecision);
    const double tol = c.L.dtype == FLARE_DTYPE_BF16 ? 0.25 : 0.06;
    for (size_t b = 0; b < exact.out.size(); ++b)
      for (size_t x = 0; x < exact.out[b].size(); ++x)
        ASSERT_NEAR(naive.out[b][x], exact.out[b][x], tol) << it;
  }
}

}  // namespace
