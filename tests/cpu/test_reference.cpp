// Hand-checked cases for the CPU reference (src/reference): each expectation is computed here
// from first principles (explicit key sets, explicit rotations), not from the shared helpers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "reference/reference.h"

namespace {

using flare::ref::Precision;
using flare::ref::from_double;
using flare::ref::from_float;
using flare::ref::to_float;

const int kDtypes[] = {FLARE_DTYPE_FP16, FLARE_DTYPE_BF16};

// A padded-batch problem with dense tensors: q/out [b, sq, h, d], k/v [b, sk, hk, d].
struct Problem {
  int batch, sq, sk, h, hk, d, dtype;
  std::vector<uint16_t> q, k, v;
  std::vector<double> out, lse;
  flare_mha_fwd_params p;

  Problem(int batch_, int sq_, int sk_, int h_, int hk_, int d_, int dtype_)
      : batch(batch_), sq(sq_), sk(sk_), h(h_), hk(hk_), d(d_), dtype(dtype_) {
    q.assign(static_cast<size_t>(batch) * sq * h * d, 0);
    k.assign(static_cast<size_t>(batch) * sk * hk * d, 0);
    v.assign(k.size(), 0);
    out.assign(q.size(), 12345.0);  // poison: every real element must be overwritten
    lse.assign(static_cast<size_t>(batch) * h * sq, 12345.0);
    flare_mha_fwd_params_zero();
  }

  void flare_mha_fwd_params_zero() {
    std::memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.window_left = p.window_right = -1;
    p.dtype = dtype;
    p.batch = batch;
    p.seqlen_q = sq;
    p.seqlen_k = sk;
    p.num_heads = h;
    p.num_heads_k = hk;
    p.head_dim = d;
    p.q_head_stride = d, p.q_row_stride = int64_t(h) * d, p.q_batch_stride = int64_t(sq) * h * d;
    p.out_head_stride = p.q_head_stride, p.out_row_stride = p.q_row_stride;
    p.out_batch_stride = p.q_batch_stride;
    p.k_head_stride = d, p.k_row_stride = int64_t(hk) * d, p.k_batch_stride = int64_t(sk) * hk * d;
    p.v_head_stride = p.k_head_stride, p.v_row_stride = p.k_row_stride;
    p.v_batch_stride = p.k_batch_stride;
  }

  size_t qi(int b, int i, int hh) const { return ((size_t(b) * sq + i) * h + hh) * d; }
  size_t ki(int b, int j, int hh) const { return ((size_t(b) * sk + j) * hk + hh) * d; }
  size_t li(int b, int hh, int i) const { return (size_t(b) * h + hh) * sq + i; }

  void set(std::vector<uint16_t>& t, size_t at, std::initializer_list<float> vals) {
    int e = 0;
    for (float x : vals) t[at + e++] = from_float(x, dtype);
  }
  double get(const std::vector<uint16_t>& t, size_t at) const { return to_float(t[at], dtype); }

  // Random values that are exact in both fp16 and bf16 (multiples of 1/8 in [-2, 2]).
  void fill_random(std::mt19937& rng) {
    std::uniform_int_distribution<int> dist(-16, 16);
    for (auto* t : {&q, &k, &v})
      for (auto& x : *t) x = from_float(dist(rng) / 8.0f, dtype);
  }

  void run(Precision prec = Precision::Float64) {
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    flare::ref::attention_forward(p, prec, out.data(), lse.data());
  }
};

struct RowResult {
  std::vector<double> out;
  double lse;
};

// softmax(scale * q.k_j + bias_j) over the listed keys, in long double from scratch.
RowResult manual_row(const std::vector<double>& q, const std::vector<std::vector<double>>& keys,
                     const std::vector<std::vector<double>>& vals, double scale,
                     const std::vector<double>& bias = {}) {
  RowResult r;
  r.out.assign(q.size(), 0.0);
  if (keys.empty()) {
    r.lse = -INFINITY;
    return r;
  }
  std::vector<long double> s(keys.size());
  long double mx = -INFINITY;
  for (size_t j = 0; j < keys.size(); ++j) {
    long double dot = 0;
    for (size_t e = 0; e < q.size(); ++e) dot += (long double)q[e] * keys[j][e];
    s[j] = scale * dot + (bias.empty() ? 0.0 : bias[j]);
    mx = std::max(mx, s[j]);
  }
  long double sum = 0;
  for (auto& x : s) sum += std::exp(x - mx);
  for (size_t j = 0; j < keys.size(); ++j) {
    const long double w = std::exp(s[j] - mx) / sum;
    for (size_t e = 0; e < q.size(); ++e) r.out[e] += static_cast<double>(w * vals[j][e]);
  }
  r.lse = static_cast<double>(mx + std::log(sum));
  return r;
}

std::vector<double> row_of(const Problem& pr, const std::vector<uint16_t>& t, size_t at) {
  std::vector<double> r(pr.d);
  for (int e = 0; e < pr.d; ++e) r[e] = pr.get(t, at + e);
  return r;
}

// Checks query row (b, i, head) of pr against manual attention over the listed key rows.
void expect_row_matches(const Problem& pr, int b, int i, int head, const std::vector<int>& keys,
                        double tol = 1e-12) {
  const int kvh = head / (pr.h / pr.hk);
  std::vector<std::vector<double>> ks, vs;
  for (int j : keys) {
    ks.push_back(row_of(pr, pr.k, pr.ki(b, j, kvh)));
    vs.push_back(row_of(pr, pr.v, pr.ki(b, j, kvh)));
  }
  const double scale = pr.p.softmax_scale != 0 ? pr.p.softmax_scale : 1.0f / std::sqrt(float(pr.d));
  const RowResult want = manual_row(row_of(pr, pr.q, pr.qi(b, i, head)), ks, vs, scale);
  for (int e = 0; e < pr.d; ++e)
    EXPECT_NEAR(pr.out[pr.qi(b, i, head) + e], want.out[e], tol)
        << "b=" << b << " row=" << i << " head=" << head << " e=" << e;
  if (std::isinf(want.lse))
    EXPECT_EQ(pr.lse[pr.li(b, head, i)], -INFINITY);
  else
    EXPECT_NEAR(pr.lse[pr.li(b, head, i)], want.lse, tol) << "row " << i;
}

std::vector<int> key_range(int lo, int hi) {
  std::vector<int> r;
  for (int j = std::max(lo, 0); j < hi; ++j) r.push_back(j);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Conversions

// Value of an adjacent pair's midpoint, where `next` may be the infinity just past the largest
// finite value (then its value is the next power of two).
double pattern_value(uint16_t bits, int dtype) {
  const double x = to_float(bits, dtype);
  if (!std::isinf(x)) return x;
  return std::copysign(dtype == FLARE_DTYPE_BF16 ? std::ldexp(1.0, 128) : 65536.0, x);
}

bool is_nan_pattern(uint16_t b, int dtype) { return std::isnan(to_float(b, dtype)); }

TEST(ReferenceConvert, KnownValues) {
  EXPECT_EQ(to_float(0x3c00, FLARE_DTYPE_FP16), 1.0f);
  EXPECT_EQ(to_float(0xc000, FLARE_DTYPE_FP16), -2.0f);
  EXPECT_EQ(to_float(0x7bff, FLARE_DTYPE_FP16), 65504.0f);
  EXPECT_EQ(to_float(0x0001, FLARE_DTYPE_FP16), std::ldexp(1.0f, -24));
  EXPECT_EQ(to_float(0x03ff, FLARE_DTYPE_FP16), 1023 * std::ldexp(1.0f, -24));
  EXPECT_EQ(to_float(0x0400, FLARE_DTYPE_FP16), std::ldexp(1.0f, -14));
  EXPECT_TRUE(std::isinf(to_float(0xfc00, FLARE_DTYPE_FP16)));
  EXPECT_TRUE(std::isnan(to_float(0x7e00, FLARE_DTYPE_FP16)));
  EXPECT_EQ(to_float(0x3f80, FLARE_DTYPE_BF16), 1.0f);
  EXPECT_EQ(to_float(0xc0a0, FLARE_DTYPE_BF16), -5.0f);
  EXPECT_EQ(from_float(1.0f + std::ldexp(1.0f, -11), FLARE_DTYPE_FP16), 0x3c00);  // tie -> even
  EXPECT_EQ(from_float(1.0f + 3 * std::ldexp(1.0f, -11), FLARE_DTYPE_FP16), 0x3c02);
  EXPECT_EQ(from_float(65519.0f, FLARE_DTYPE_FP16), 0x7bff);
  EXPECT_EQ(from_float(65520.0f, FLARE_DTYPE_FP16), 0x7c00);
  EXPECT_EQ(from_float(1e-9f, FLARE_DTYPE_FP16), 0x0000);
  EXPECT_EQ(from_float(-1e-9f, FLARE_DTYPE_FP16), 0x8000);
  EXPECT_EQ(from_float(3e38f, FLARE_DTYPE_FP16), 0x7c00);
  EXPECT_EQ(from_float(1.0f + std::ldexp(1.0f, -8), FLARE_DTYPE_BF16), 0x3f80);  // tie -> even
  EXPECT_EQ(from_float(std::numeric_limits<float>::max(), FLARE_DTYPE_BF16), 0x7f80);
  EXPECT_EQ(from_double(1e300, FLARE_DTYPE_BF16), 0x7f80);
  EXPECT_EQ(from_double(-1e300, FLARE_DTYPE_FP16), 0xfc00);
  EXPECT_EQ(from_double(1e-300, FLARE_DTYPE_BF16), 0x0000);
  EXPECT_TRUE(std::isnan(to_float(from_float(NAN, FLARE_DTYPE_FP16), FLARE_DTYPE_FP16)));
  EXPECT_TRUE(std::isnan(to_float(from_double(NAN, FLARE_DTYPE_BF16), FLARE_DTYPE_BF16)));
  // Double rounding trap: just above a half-way point must round up even though float
  // would first round it onto the tie.
  const double above_tie = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  EXPECT_EQ(from_double(above_tie, FLARE_DTYPE_FP16), 0x3c01);
  EXPECT_EQ(from_double(1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -45), FLARE_DTYPE_BF16),
            0x3f81);
}

TEST(ReferenceConvert, AllPatternsRoundTrip) {
  for (int dtype : kDtypes)
    for (uint32_t b = 0; b < 65536; ++b) {
      const uint16_t bits = static_cast<uint16_t>(b);
      const float x = to_float(bits, dtype);
      if (std::isnan(x)) {
        ASSERT_TRUE(is_nan_pattern(from_float(x, dtype), dtype)) << std::hex << b;
        ASSERT_TRUE(is_nan_pattern(from_double(x, dtype), dtype)) << std::hex << b;
        continue;
      }
      ASSERT_EQ(from_float(x, dtype), bits) << "dtype " << dtype << " bits 0x" << std::hex << b;
      ASSERT_EQ(from_double(static_cast<double>(x), dtype), bits)
          << "dtype " << dtype << " bits 0x" << std::hex << b;
    }
}

// Every tie between neighbours goes to the even pattern; just off the tie goes to the nearer.
TEST(ReferenceConvert, AllMidpointsRoundToNearestEven) {
  for (int dtype : kDtypes)
    for (uint32_t b = 0; b < 65536; ++b) {
      const uint16_t lo = static_cast<uint16_t>(b);
      const uint16_t hi = static_cast<uint16_t>(b + 1);
      const double vlo = to_float(lo, dtype);
      if (std::isnan(vlo) || std::isinf(vlo)) continue;
      if ((lo & 0x7fff) == 0x7fff) continue;
      if (is_nan_pattern(hi, dtype) || (hi & 0x7fff) == 0) continue;  // crossed the sign
      const double vhi = pattern_value(hi, dtype);
      const double mid = 0.5 * (vlo + vhi);
      const uint16_t even = (lo & 1) ? hi : lo;
      SCOPED_TRACE(::testing::Message() << "dtype " << dtype << " lo 0x" << std::hex << b);
      ASSERT_EQ(from_float(static_cast<float>(mid), dtype), even);
      ASSERT_EQ(from_double(mid, dtype), even);
      const double eps = std::fabs(vhi - vlo) * std::ldexp(1.0, -30);
      const double up = mid + std::copysign(eps, mid), down = mid - std::copysign(eps, mid);
      ASSERT_EQ(from_double(up, dtype), hi);
      ASSERT_EQ(from_double(down, dtype), lo);
      const float fup = std::nextafter(static_cast<float>(mid), static_cast<float>(vhi) * 2);
      const float fdown = std::nextafter(static_cast<float>(mid), 0.0f);
      ASSERT_EQ(from_float(fup, dtype), hi);
      ASSERT_EQ(from_float(fdown, dtype), lo);
    }
}

// ---------------------------------------------------------------------------------------------
// Attention, hand-checked

TEST(ReferenceAttention, SingleKeyReturnsItsValue) {
  for (int dtype : kDtypes)
    for (Precision prec : {Precision::Float64, Precision::NaiveLowPrecision}) {
      Problem pr(1, 1, 1, 1, 1, 4, dtype);
      pr.p.softmax_scale = 0.5f;
      pr.set(pr.q, 0, {1.0f, 0.5f, 0.0f, -1.0f});
      pr.set(pr.k, 0, {0.5f, 1.0f, 2.0f, 0.25f});
      pr.set(pr.v, 0, {3.0f, -1.5f, 0.125f, 7.0f});
      pr.run(prec);
      const double v[] = {3.0, -1.5, 0.125, 7.0};
      for (int e = 0; e < 4; ++e) EXPECT_EQ(pr.out[e], v[e]);
      EXPECT_DOUBLE_EQ(pr.lse[0], 0.5 * (0.5 + 0.5 + 0.0 - 0.25));
    }
}

TEST(ReferenceAttention, TwoKeysAnalytic) {
  Problem pr(1, 1, 2, 1, 1, 2, FLARE_DTYPE_BF16);
  pr.p.softmax_scale = 1.0f;
  pr.set(pr.q, 0, {1.0f, 2.0f});
  pr.set(pr.k, 0, {1.0f, 0.0f});   // score 1
  pr.set(pr.k, 2, {0.5f, 1.0f});   // score 2.5
  pr.set(pr.v, 0, {1.0f, 0.0f});
  pr.set(pr.v, 2, {0.0f, 4.0f});
  pr.run();
  const double p0 = 1.0 / (1.0 + std::exp(1.5)), p1 = 1.0 - p0;
  EXPECT_NEAR(pr.out[0], p0, 1e-14);
  EXPECT_NEAR(pr.out[1], 4.0 * p1, 1e-14);
  EXPECT_NEAR(pr.lse[0], std::log(std::exp(1.0) + std::exp(2.5)), 1e-14);
}

TEST(ReferenceAttention, DefaultScaleIsInverseSqrtHeadDim) {
  Problem pr(1, 1, 1, 1, 1, 16, FLARE_DTYPE_FP16);
  for (int e = 0; e < 16; ++e) pr.set(pr.q, e, {1.0f}), pr.set(pr.k, e, {1.0f});
  pr.run();
  EXPECT_NEAR(pr.lse[0], 16 * 0.25, 1e-6);
}

TEST(ReferenceAttention, CausalSquare) {
  std::mt19937 rng(1);
  Problem pr(1, 6, 6, 2, 2, 8, FLARE_DTYPE_FP16);
  pr.fill_random(rng);
  pr.p.causal = 1;
  pr.run();
  for (int hh = 0; hh < 2; ++hh)
    for (int i = 0; i < 6; ++i) expect_row_matches(pr, 0, i, hh, key_range(0, i + 1));
}

TEST(ReferenceAttention, CausalBottomRightAlignment) {
  std::mt19937 rng(2);
  {  // fewer queries than keys: row i sees keys [0, i + 4]
    Problem pr(2, 3, 7, 1, 1, 8, FLARE_DTYPE_BF16);
    pr.fill_random(rng);
    pr.p.causal = 1;
    pr.run();
    for (int b = 0; b < 2; ++b) {
      expect_row_matches(pr, b, 0, 0, {0, 1, 2, 3, 4});
      expect_row_matches(pr, b, 1, 0, {0, 1, 2, 3, 4, 5});
      expect_row_matches(pr, b, 2, 0, key_range(0, 7));
    }
  }
  {  // more queries than keys: rows 0..2 see nothing, row 3 sees key 0, row 4 keys 0 and 1
    Problem pr(1, 5, 2, 1, 1, 8, FLARE_DTYPE_FP16);
    pr.fill_random(rng);
    pr.p.causal = 1;
    pr.run();
    for (int i = 0; i < 3; ++i) {
      for (int e = 0; e < 8; ++e) EXPECT_EQ(pr.out[pr.qi(0, i, 0) + e], 0.0);
      EXPECT_EQ(pr.lse[pr.li(0, 0, i)], -INFINITY);
    }
    expect_row_matches(pr, 0, 3, 0, {0});
    expect_row_matches(pr, 0, 4, 0, {0, 1});
  }
}

TEST(ReferenceAttention, SlidingWindow) {
  std::mt19937 rng(3);
  Problem pr(1, 8, 8, 1, 1, 8, FLARE_DTYPE_BF16);
  pr.fill_random(rng);
  pr.p.window_left = 2;
  pr.p.window_right = 1;
  pr.run();
  for (int i = 0; i < 8; ++i) expect_row_matches(pr, 0, i, 0, key_range(i - 2, std::min(i + 2, 8)));

  // Offset diagonal (sq < sk): row i sits at key i + 3 and sees [i + 2, i + 3].
  Problem pr2(1, 4, 7, 1, 1, 8, FLARE_DTYPE_FP16);
  pr2.fill_random(rng);
  pr2.p.window_left = 1;
  pr2.p.window_right = 0;
  pr2.run();
  for (int i = 0; i < 4; ++i) expect_row_matches(pr2, 0, i, 0, {i + 2, i + 3});
}

TEST(ReferenceAttention, FullyMaskedRowsAreZeroNotNan) {
  std::mt19937 rng(4);
  for (Precision prec : {Precision::Float64, Precision::NaiveLowPrecision}) {
    // Window entirely to the right of the keys for the first rows: sq=6, sk=2, right window 1.
    Problem pr(1, 6, 2, 2, 1, 8, FLARE_DTYPE_BF16);
    pr.fill_random(rng);
    pr.p.window_right = 1;  // row i sees j <= i - 4 + 1
    pr.run(prec);
    for (double x : pr.out) EXPECT_FALSE(std::isnan(x));
    for (double x : pr.lse) EXPECT_FALSE(std::isnan(x));
    for (int hh = 0; hh < 2; ++hh) {
      for (int i = 0; i < 3; ++i) {
        for (int e = 0; e < 8; ++e) EXPECT_EQ(pr.out[pr.qi(0, i, hh) + e], 0.0);
        EXPECT_EQ(pr.lse[pr.li(0, hh, i)], -INFINITY) << "row " << i;
      }
      for (int i = 3; i < 6; ++i) EXPECT_TRUE(std::isfinite(pr.lse[pr.li(0, hh, i)]));
    }
  }
}

TEST(ReferenceAttention, AlibiBias) {
  std::mt19937 rng(5);
  Problem pr(2, 2, 3, 2, 2, 4, FLARE_DTYPE_FP16);
  pr.fill_random(rng);
  const float slopes[] = {0.5f, 0.25f, 1.0f, 2.0f};  // [batch, heads]
  pr.p.alibi_slopes = slopes;
  pr.p.alibi_batch_stride = 2;
  pr.p.softmax_scale = 0.5f;
  pr.run();
  for (int b = 0; b < 2; ++b)
    for (int hh = 0; hh < 2; ++hh)
      for (int i = 0; i < 2; ++i) {
        std::vector<std::vector<double>> ks, vs;
        std::vector<double> bias;
        for (int j = 0; j < 3; ++j) {
          ks.push_back(row_of(pr, pr.k, pr.ki(b, j, hh)));
          vs.push_back(row_of(pr, pr.v, pr.ki(b, j, hh)));
          bias.push_back(-slopes[b * 2 + hh] * std::abs(i + 3 - 2 - j));  // key position i + 1
        }
        const RowResult want = manual_row(row_of(pr, pr.q, pr.qi(b, i, hh)), ks, vs, 0.5, bias);
        for (int e = 0; e < 4; ++e) EXPECT_NEAR(pr.out[pr.qi(b, i, hh) + e], want.out[e], 1e-12);
        EXPECT_NEAR(pr.lse[pr.li(b, hh, i)], want.lse, 1e-12);
      }

  // Zero queries: only the bias remains, lse = log(sum_j exp(-slope * |1 - j|)) for row 0.
  Problem z(1, 2, 3, 1, 1, 4, FLARE_DTYPE_BF16);
  const float slope[] = {0.75f};
  z.p.alibi_slopes = slope;
  z.run();
  EXPECT_NEAR(z.lse[0], std::log(std::exp(-0.75) + 1.0 + std::exp(-0.75)), 1e-14);
  EXPECT_NEAR(z.lse[1], std::log(std::exp(-1.5) + std::exp(-0.75) + 1.0), 1e-14);
}

TEST(ReferenceAttention, Softcap) {
  Problem pr(1, 1, 1, 1, 1, 2, FLARE_DTYPE_BF16);
  pr.set(pr.q, 0, {2.0f, 1.0f});
  pr.set(pr.k, 0, {1.5f, 1.0f});  // q.k = 4
  pr.p.softmax_scale = 0.5f;
  pr.p.softcap = 1.5f;
  pr.run();
  EXPECT_NEAR(pr.lse[0], 1.5 * std::tanh(0.5 * 4.0 / 1.5), 1e-7);  // float softcap/scale args

  // Two keys: the weights follow the capped scores.
  Problem two(1, 1, 2, 1, 1, 1, FLARE_DTYPE_FP16);
  two.set(two.q, 0, {4.0f});
  two.set(two.k, 0, {1.0f});
  two.set(two.k, 1, {-2.0f});
  two.set(two.v, 0, {1.0f});
  two.set(two.v, 1, {0.0f});
  two.p.softmax_scale = 1.0f;
  two.p.softcap = 2.0f;
  two.run();
  const double s0 = 2.0 * std::tanh(2.0), s1 = 2.0 * std::tanh(-4.0);
  EXPECT_NEAR(two.out[0], std::exp(s0) / (std::exp(s0) + std::exp(s1)), 1e-14);
  EXPECT_NEAR(two.lse[0], std::log(std::exp(s0) + std::exp(s1)), 1e-14);
}

TEST(ReferenceAttention, GqaHeadMapping) {
  Problem pr(1, 1, 1, 6, 2, 2, FLARE_DTYPE_FP16);
  pr.set(pr.v, pr.ki(0, 0, 0), {1.0f, 2.0f});
  pr.set(pr.v, pr.ki(0, 0, 1), {-3.0f, 4.0f});
  pr.run();
  for (int hh = 0; hh < 6; ++hh) {
    const double want0 = hh < 3 ? 1.0 : -3.0, want1 = hh < 3 ? 2.0 : 4.0;
    EXPECT_EQ(pr.out[pr.qi(0, 0, hh)], want0) << "head " << hh;
    EXPECT_EQ(pr.out[pr.qi(0, 0, hh) + 1], want1) << "head " << hh;
  }
  std::mt19937 rng(6);
  Problem r(2, 3, 5, 4, 2, 8, FLARE_DTYPE_BF16);
  r.fill_random(rng);
  r.run();
  for (int b = 0; b < 2; ++b)
    for (int hh = 0; hh < 4; ++hh)
      for (int i = 0; i < 3; ++i) expect_row_matches(r, b, i, hh, key_range(0, 5));
}

TEST(ReferenceAttention, VarlenWithEmptySequences) {
  std::mt19937 rng(7);
  const int h = 2, d = 8;
  // Sequence 1 is empty; sequence 3 has queries but no keys.
  const int32_t cu_q[] = {0, 3, 3, 7, 9};
  const int32_t cu_k[] = {0, 5, 5, 9, 9};
  Problem pr(1, 9, 9, h, h, d, FLARE_DTYPE_FP16);  // packed rows in a batch of one
  pr.fill_random(rng);
  pr.p.batch = 4;
  pr.p.cu_seqlens_q = cu_q;
  pr.p.cu_seqlens_k = cu_k;
  pr.p.max_seqlen_q = 4;
  pr.p.max_seqlen_k = 5;
  pr.p.causal = 1;
  std::vector<double> lse(static_cast<size_t>(h) * 9, 777.0);  // [heads, total_q]
  pr.p.q = pr.q.data();
  pr.p.k = pr.k.data();
  pr.p.v = pr.v.data();
  flare::ref::attention_forward(pr.p, Precision::Float64, pr.out.data(), lse.data());
  for (int b = 0; b < 4; ++b) {
    const int sq = cu_q[b + 1] - cu_q[b], sk = cu_k[b + 1] - cu_k[b];
    for (int hh = 0; hh < h; ++hh)
      for (int i = 0; i < sq; ++i) {
        std::vector<std::vector<double>> ks, vs;
        for (int j = 0; j <= i + sk - sq && j < sk; ++j) {
          ks.push_back(row_of(pr, pr.k, pr.ki(0, cu_k[b] + j, hh)));
          vs.push_back(row_of(pr, pr.v, pr.ki(0, cu_k[b] + j, hh)));
        }
        const int row = cu_q[b] + i;
        const RowResult want =
            manual_row(row_of(pr, pr.q, pr.qi(0, row, hh)), ks, vs, 1.0 / std::sqrt(8.0));
        for (int e = 0; e < d; ++e) EXPECT_NEAR(pr.out[pr.qi(0, row, hh) + e], want.out[e], 1e-7);
        if (ks.empty())
          EXPECT_EQ(lse[hh * 9 + row], -INFINITY);
        else
          EXPECT_NEAR(lse[hh * 9 + row], want.lse, 1e-7);
      }
  }
  for (double x : pr.out) EXPECT_NE(x, 12345.0);  // every real row written
}

// ---------------------------------------------------------------------------------------------
// KV cache: paging, append, rotary

struct Cache {
  int batch, cap, hk, d, dtype;
  std::vector<uint16_t> k, v;  // contiguous [batch, cap, hk, d]
  Cache(int b, int c, int h, int dd, int dt) : batch(b), cap(c), hk(h), d(dd), dtype(dt) {
    k.assign(static_cast<size_t>(b) * c * h * dd, 0);
    v.assign(k.size(), 0);
  }
  size_t at(int b, int r, int h) const { return ((size_t(b) * cap + r) * hk + h) * d; }
};

flare_mha_fwd_params cache_params(const Cache& c, int sq, int h, const uint16_t* q,
                                  const int32_t* seqlens) {
  flare_mha_fwd_params p;
  std::memset(&p, 0, sizeof p);
  p.struct_size = sizeof p;
  p.window_left = p.window_right = -1;
  p.dtype = c.dtype;
  p.batch = c.batch;
  p.seqlen_q = sq;
  p.seqlen_k = c.cap;
  p.num_heads = h;
  p.num_heads_k = c.hk;
  p.head_dim = c.d;
  p.q = q;
  p.q_head_stride = c.d, p.q_row_stride = int64_t(h) * c.d, p.q_batch_stride = int64_t(sq) * h * c.d;
  p.out_head_stride = p.q_head_stride, p.out_row_stride = p.q_row_stride;
  p.out_batch_stride = p.q_batch_stride;
  p.k_head_stride = p.v_head_stride = c.d;
  p.k_row_stride = p.v_row_stride = int64_t(c.hk) * c.d;
  p.k_batch_stride = p.v_batch_stride = int64_t(c.cap) * c.hk * c.d;
  p.cache_seqlens = seqlens;
  return p;
}

TEST(ReferenceKvCache, PagedEqualsContiguous) {
  std::mt19937 rng(8);
  const int batch = 3, cap = 32, hk = 2, h = 4, d = 8, sq = 3, page = 4;
  for (int dtype : kDtypes) {
    Cache c(batch, cap, hk, d, dtype);
    std::uniform_int_distribution<int> dist(-16, 16);
    for (auto* t : {&c.k, &c.v})
      for (auto& x : *t) x = from_float(dist(rng) / 8.0f, dtype);
    std::vector<uint16_t> q(static_cast<size_t>(batch) * sq * h * d);
    for (auto& x : q) x = from_float(dist(rng) / 8.0f, dtype);
    const int32_t seqlens[] = {30, 7, 32};
    const int32_t leftpad[] = {2, 0, 5};
    flare_mha_fwd_params pc = cache_params(c, sq, h, q.data(), seqlens);
    pc.leftpad_k = leftpad;
    pc.causal = 1;
    pc.k = c.k.data();
    pc.v = c.v.data();

    // Scatter the cache into a pool of pages in shuffled order.
    const int per_seq = cap / page, num_pages = batch * per_seq + 2;
    std::vector<int32_t> pages(num_pages);
    std::iota(pages.begin(), pages.end(), 0);
    std::shuffle(pages.begin(), pages.end(), rng);
    std::vector<int32_t> table(static_cast<size_t>(batch) * per_seq);
    for (size_t t = 0; t < table.size(); ++t) table[t] = pages[t];
    std::vector<uint16_t> pk(static_cast<size_t>(num_pages) * page * hk * d, 0), pv(pk.size(), 0);
    for (int b = 0; b < batch; ++b)
      for (int r = 0; r < cap; ++r) {
        const size_t dst = (size_t(table[b * per_seq + r / page]) * page + r % page) * hk * d;
        std::copy_n(&c.k[c.at(b, r, 0)], hk * d, &pk[dst]);
        std::copy_n(&c.v[c.at(b, r, 0)], hk * d, &pv[dst]);
      }
    flare_mha_fwd_params pp = pc;
    pp.k = pk.data();
    pp.v = pv.data();
    pp.block_table = table.data();
    pp.block_table_batch_stride = per_seq;
    pp.page_block_size = page;
    pp.num_pages = num_pages;
    pp.k_batch_stride = pp.v_batch_stride = int64_t(page) * hk * d;

    std::vector<double> oc(q.size(), 1.0), op(q.size(), 2.0);
    std::vector<double> lc(static_cast<size_t>(batch) * h * sq, 1.0), lp(lc.size(), 2.0);
    flare::ref::attention_forward(pc, Precision::Float64, oc.data(), lc.data());
    flare::ref::attention_forward(pp, Precision::Float64, op.data(), lp.data());
    EXPECT_EQ(oc, op);
    EXPECT_EQ(lc, lp);

    // And the contiguous cache itself: sequence 1 (no leftpad, 7 keys) row 0 sees keys 0..4.
    std::vector<std::vector<double>> ks, vs;
    for (int j = 0; j < 5; ++j) {
      std::vector<double> kr(d), vr(d);
      for (int e = 0; e < d; ++e) {
        kr[e] = to_float(c.k[c.at(1, j, 1) + e], dtype);
        vr[e] = to_float(c.v[c.at(1, j, 1) + e], dtype);
      }
      ks.push_back(kr);
      vs.push_back(vr);
    }
    std::vector<double> qr(d);
    const size_t qat = (size_t(1) * sq * h + 2) * d;  // batch 1, row 0, head 2 (kv head 1)
    for (int e = 0; e < d; ++e) qr[e] = to_float(q[qat + e], dtype);
    const RowResult want = manual_row(qr, ks, vs, 1.0 / std::sqrt(8.0));
    for (int e = 0; e < d; ++e) EXPECT_NEAR(oc[qat + e], want.out[e], 1e-7);
  }
}

// Manual rotation of one row: pairs (2f, 2f+1) or (f, f + rd/2), in float, rounded.
std::vector<uint16_t> manual_rotate(const uint16_t* x, int d, int rd, bool interleaved,
                                    const uint16_t* cos_row, const uint16_t* sin_row, int dtype) {
  std::vector<uint16_t> r(x, x + d);
  for (int f = 0; f < rd / 2; ++f) {
    const int a = interleaved ? 2 * f : f, b = interleaved ? 2 * f + 1 : f + rd / 2;
    const float c = to_float(cos_row[f], dtype), s = to_float(sin_row[f], dtype);
    const float xa = to_float(x[a], dtype), xb = to_float(x[b], dtype);
    r[a] = from_float(xa * c - xb * s, dtype);
    r[b] = from_float(xb * c + xa * s, dtype);
  }
  return r;
}

TEST(ReferenceKvCache, AppendWithRotary) {
  std::mt19937 rng(9);
  const int batch = 2, cap = 16, hk = 2, h = 2, d = 8, rd = 4, snew = 3, positions = 20;
  std::uniform_real_distribution<float> val(-2.0f, 2.0f);
  for (int dtype : kDtypes)
    for (int interleaved = 0; interleaved < 2; ++interleaved)
      for (int causal = 0; causal < 2; ++causal) {
        SCOPED_TRACE(::testing::Message() << "dtype " << dtype << " interleaved " << interleaved
                                          << " causal " << causal);
        Cache c(batch, cap, hk, d, dtype);
        for (auto* t : {&c.k, &c.v})
          for (auto& x : *t) x = from_float(val(rng), dtype);
        const Cache before = c;
        std::vector<uint16_t> q(static_cast<size_t>(batch) * snew * h * d);
        std::vector<uint16_t> kn(static_cast<size_t>(batch) * snew * hk * d), vn(kn.size());
        for (auto* t : {&q, &kn, &vn})
          for (auto& x : *t) x = from_float(val(rng), dtype);
        std::vector<uint16_t> cos(positions * rd / 2), sin(cos.size());
        for (int pos = 0; pos < positions; ++pos)
          for (int f = 0; f < rd / 2; ++f) {
            const double ang = pos * std::pow(100.0, -2.0 * f / rd);
            cos[pos * rd / 2 + f] = from_double(std::cos(ang), dtype);
            sin[pos * rd / 2 + f] = from_double(std::sin(ang), dtype);
          }
        const int32_t seqlens[] = {5, 9};
        const int32_t leftpad[] = {0, 3};
        flare_mha_fwd_params p = cache_params(c, snew, h, q.data(), seqlens);
        p.leftpad_k = leftpad;
        p.causal = causal;
        p.k = c.k.data();
        p.v = c.v.data();
        p.k_new = kn.data();
        p.v_new = vn.data();
        p.seqlen_new = snew;
        p.k_new_head_stride = p.v_new_head_stride = d;
        p.k_new_row_stride = p.v_new_row_stride = int64_t(hk) * d;
        p.k_new_batch_stride = p.v_new_batch_stride = int64_t(snew) * hk * d;
        p.rotary_cos = cos.data();
        p.rotary_sin = sin.data();
        p.rotary_dim = rd;
        p.rotary_interleaved = interleaved;
        p.rotary_max_positions = positions;

        flare::ref::append_kv(p, c.k.data(), c.v.data());
        for (int b = 0; b < batch; ++b)
          for (int r = 0; r < cap; ++r)
            for (int hh = 0; hh < hk; ++hh) {
              const size_t at = c.at(b, r, hh);
              const int t = r - seqlens[b];
              if (t < 0 || t >= snew) {  // untouched
                ASSERT_TRUE(std::equal(&c.k[at], &c.k[at] + d, &before.k[at]));
                ASSERT_TRUE(std::equal(&c.v[at], &c.v[at] + d, &before.v[at]));
                continue;
              }
              const size_t src = (size_t(b) * snew + t) * hk * d + size_t(hh) * d;
              const int pos = seqlens[b] + t;  // absolute cache row
              const std::vector<uint16_t> want = manual_rotate(
                  &kn[src], d, rd, interleaved != 0, &cos[pos * rd / 2], &sin[pos * rd / 2], dtype);
              for (int e = 0; e < d; ++e) {
                ASSERT_EQ(c.k[at + e], want[e]) << "b " << b << " row " << r << " e " << e;
                ASSERT_EQ(c.v[at + e], vn[src + e]);
              }
              for (int e = rd; e < d; ++e) ASSERT_EQ(c.k[at + e], kn[src + e]);
            }

        // Attention over [leftpad, seqlens + snew) with q rotated at seqlens[b] (+ i if causal).
        std::vector<double> out(q.size(), 9.0), lse(static_cast<size_t>(batch) * h * snew, 9.0);
        flare::ref::attention_forward(p, Precision::Float64, out.data(), lse.data());
        for (int b = 0; b < batch; ++b)
          for (int hh = 0; hh < h; ++hh)
            for (int i = 0; i < snew; ++i) {
              const int qpos = seqlens[b] + (causal ? i : 0);
              const size_t qat = (size_t(b) * snew + i) * h * d + size_t(hh) * d;
              std::vector<double> qr(d);
              for (int e = 0; e < d; ++e) qr[e] = to_float(q[qat + e], dtype);
              for (int f = 0; f < rd / 2; ++f) {  // exact rotation in double
                const int a = interleaved ? 2 * f : f, bb = interleaved ? 2 * f + 1 : f + rd / 2;
                const double cs = to_float(cos[qpos * rd / 2 + f], dtype);
                const double sn = to_float(sin[qpos * rd / 2 + f], dtype);
                const double xa = qr[a], xb = qr[bb];
                qr[a] = xa * cs - xb * sn;
                qr[bb] = xb * cs + xa * sn;
              }
              const int nkeys = seqlens[b] - leftpad[b] + snew;
              const int last = causal ? i + nkeys - snew : nkeys - 1;
              std::vector<std::vector<double>> ks, vs;
              for (int j = 0; j <= last; ++j) {
                std::vector<double> kr(d), vr(d);
                for (int e = 0; e < d; ++e) {
                  kr[e] = to_float(c.k[c.at(b, leftpad[b] + j, hh) + e], dtype);
                  vr[e] = to_float(c.v[c.at(b, leftpad[b] + j, hh) + e], dtype);
                }
                ks.push_back(kr);
                vs.push_back(vr);
              }
              const RowResult want = manual_row(qr, ks, vs, 1.0 / std::sqrt(8.0));
              for (int e = 0; e < d; ++e) EXPECT_NEAR(out[qat + e], want.out[e], 1e-6);
              EXPECT_NEAR(lse[(size_t(b) * h + hh) * snew + i], want.lse, 1e-6);
            }
      }
}

// ---------------------------------------------------------------------------------------------
// The naive low-precision variant

TEST(ReferenceNaive, CloseToFloat64AndRepresentable) {
  // Scores of N(0,1) data reach a few units, where one bf16 rounding step is ~1e-2 relative on
  // the weight; the bounds allow a few such steps but not a wrong mask or a missing term.
  std::mt19937 rng(10);
  std::normal_distribution<float> val(0.0f, 1.0f);
  for (int dtype : kDtypes)
    for (float softcap : {0.0f, 10.0f}) {
      SCOPED_TRACE(::testing::Message() << "dtype " << dtype << " softcap " << softcap);
      Problem pr(1, 64, 80, 2, 1, 64, dtype);
      for (auto* t : {&pr.q, &pr.k, &pr.v})
        for (auto& x : *t) x = from_float(val(rng), dtype);
      pr.p.causal = 1;
      pr.p.softcap = softcap;
      pr.run(Precision::Float64);
      const std::vector<double> o64 = pr.out, l64 = pr.lse;
      pr.run(Precision::NaiveLowPrecision);
      double max_err = 0, sum_err = 0, max_lse_err = 0;
      for (size_t t = 0; t < o64.size(); ++t) {
        const double err = std::fabs(pr.out[t] - o64[t]);
        max_err = std::max(max_err, err);
        sum_err += err;
        ASSERT_EQ(static_cast<double>(to_float(from_double(pr.out[t], dtype), dtype)), pr.out[t]);
      }
      for (size_t t = 0; t < l64.size(); ++t)
        max_lse_err = std::max(max_lse_err, std::fabs(pr.lse[t] - l64[t]));
      const bool bf16 = dtype == FLARE_DTYPE_BF16;
      EXPECT_LT(max_err, bf16 ? 1.5e-2 : 2e-3);
      EXPECT_LT(sum_err / o64.size(), bf16 ? 2e-3 : 2.5e-4);  // typical error: a rounding step
      EXPECT_GT(max_err, 0.0) << "the naive variant should actually round";
      EXPECT_LT(max_lse_err, bf16 ? 1e-2 : 1e-3);
    }
}

}  // namespace
