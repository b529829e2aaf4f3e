// FP8 inputs on the CPU side: the e4m3 / e5m2 conversions of src/common/fp8.h against CUDA's own
// host implementation (cuda_fp8.h, an independent one), the validation of the FP8 fields
// (src/api/validate_fp8.cpp), and the CPU reference on FP8 K/V and q (code x descale) and the
// append's quantization into an FP8 cache.
#include <cuda_fp8.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "api/error.h"
#include "api/validate.h"
#include "common/fp8.h"
#include "common/fp8_params.h"
#include "flare/flare.h"
#include "reference/reference.h"
#include "valid_params.h"

namespace {

float cuda_fp8_to_float(uint8_t code, __nv_fp8_interpretation_t kind) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t(code), kind);
  return flare::ref::to_float(h.x, FLARE_DTYPE_FP16);
}

// ---------------------------------------------------------------------------------------------
// Conversions.

TEST(Fp8Format, DecodeEveryCodeLikeCuda) {
  for (int c = 0; c < 256; ++c) {
    const float e4 = flare::e4m3_to_float(uint8_t(c));
    const float cuda_e4 = cuda_fp8_to_float(uint8_t(c), __NV_E4M3);
    if (std::isnan(cuda_e4)) {
      EXPECT_TRUE(std::isnan(e4)) << "e4m3 code " << c;
    } else {
      EXPECT_EQ(e4, cuda_e4) << "e4m3 code " << c;
      EXPECT_EQ(std::signbit(e4), std::signbit(cuda_e4)) << "e4m3 code " << c;
    }
    const float e5 = flare::e5m2_to_float(uint8_t(c));
    const float cuda_e5 = cuda_fp8_to_float(uint8_t(c), __NV_E5M2);
    if (std::isnan(cuda_e5)) {
      EXPECT_TRUE(std::isnan(e5)) << "e5m2 code " << c;
    } else {
      EXPECT_EQ(e5, cuda_e5) << "e5m2 code " << c;
    }
  }
  EXPECT_EQ(flare::e4m3_to_float(0x7e), 448.f);
  EXPECT_EQ(flare::e4m3_to_float(0x01), std::ldexp(1.f, -9));
  EXPECT_EQ(flare::e5m2_to_float(0x7b), 57344.f);
  EXPECT_EQ(flare::e5m2_to_float(0x01), std::ldexp(1.f, -16));
}

// Every finite code is exact in bf16 and fp16: dequantizing to the compute type loses nothing.
TEST(Fp8Format, FiniteCodesAreExactInHalfAndBf16) {
  for (int c = 0; c < 256; ++c)
    for (int dtype : {FLARE_DTYPE_E4M3, FLARE_DTYPE_E5M2}) {
      const float x = flare::fp8_to_float(uint8_t(c), dtype);
      if (!std::isfinite(x)) continue;
      for (int t : {FLARE_DTYPE_FP16, FLARE_DTYPE_BF16})
        EXPECT_EQ(flare::ref::to_float(flare::ref::from_float(x, t), t), x)
            << "code " << c << " dtype " << dtype << " in " << t;
    }
}

TEST(Fp8Format, EncodeRoundTripsEveryFiniteCode) {
  for (int c = 0; c < 256; ++c) {
    const float e4 = flare::e4m3_to_float(uint8_t(c));
    if (!std::isnan(e4)) EXPECT_EQ(flare::float_to_e4m3(e4), uint8_t(c)) << "e4m3 code " << c;
    const float e5 = flare::e5m2_to_float(uint8_t(c));
    if (std::isfinite(e5)) EXPECT_EQ(flare::float_to_e5m2(e5), uint8_t(c)) << "e5m2 code " << c;
  }
}

// Round to nearest even and saturation, against CUDA's __NV_SATFINITE conversion on values
// that hit every binade, the midpoints between codes and the saturation edges.
TEST(Fp8Format, EncodeMatchesCudaSatfinite) {
  std::vector<float> xs = {0.f, -0.f, 448.f, 449.f, 464.f, 465.f, 1e9f, -1e9f, INFINITY,
                           -INFINITY, 57344.f, 61440.f, 1e-30f, -1e-30f};
  for (int c = 0; c < 255; ++c) {  // midpoints of neighbouring codes, and just around them
    for (int dtype : {FLARE_DTYPE_E4M3, FLARE_DTYPE_E5M2}) {
      const float a = flare::fp8_to_float(uint8_t(c), dtype);
      const float b = flare::fp8_to_float(uint8_t(c + 1), dtype);
      if (!std::isfinite(a) || !std::isfinite(b)) continue;
      const float mid = 0.5f * (a + b);
      xs.insert(xs.end(), {mid, std::nextafter(mid, -INFINITY), std::nextafter(mid, INFINITY)});
    }
  }
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> mant(-2.f, 2.f);
  std::uniform_int_distribution<int> ex(-20, 17);
  for (int i = 0; i < 20000; ++i) xs.push_back(std::ldexp(mant(rng), ex(rng)));
  for (float x : xs) {
    EXPECT_EQ(flare::float_to_e4m3(x), uint8_t(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3)))
        << "e4m3 of " << x;
    EXPECT_EQ(flare::float_to_e5m2(x), uint8_t(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2)))
        << "e5m2 of " << x;
  }
}

// ---------------------------------------------------------------------------------------------
// Validation.

using P = flare_mha_fwd_params;
using flare_test::fake_ptr;

// Decode over a contiguous FP8 KV cache: q [2, 1, 8, 64] fp16, K/V cache [2, 256, 2, 64] e4m3
// with per-(batch, head) descales [2, 2].
P fp8_cache_base() {
  P p = flare_test::dense_fp16_params(2, 1, 256, 8, 2, 64);
  p.cache_seqlens = fake_ptr<const int32_t>(0x700000);
  p.kv_dtype = FLARE_DTYPE_E4M3;
  p.k_descale = fake_ptr<const float>(0x710000);
  p.v_descale = fake_ptr<const float>(0x710100);
  p.k_descale_batch_stride = p.v_descale_batch_stride = 2;
  p.k_descale_head_stride = p.v_descale_head_stride = 1;
  return p;
}

// FP8 prefill: q, k, v e4m3 [2, 128, 4 / 2, 128], per-tensor descales.
P fp8_prefill_base() {
  P p = flare_test::dense_fp16_params(2, 128, 128, 4, 2, 128);
  p.dtype = FLARE_DTYPE_BF16;
  p.q_dtype = p.kv_dtype = FLARE_DTYPE_E4M3;
  p.q_descale = fake_ptr<const float>(0x710000);
  p.k_descale = fake_ptr<const float>(0x710100);
  p.v_descale = fake_ptr<const float>(0x710200);
  return p;
}

flare_status intake(const P& params) {
  flare::clear_error();
  P full;
  const flare_status s = flare::read_params(&params, &full);
  if (s != FLARE_OK) return s;
  return flare::validate_params(&full);
}

struct Case {
  const char* name;
  std::function<P()> base;
  std::function<void(P&)> mutate;
  flare_status status;
  const char* message;
};

TEST(Fp8Validation, EachRuleNamesItsField) {
  const auto INVALID = FLARE_ERROR_INVALID_ARGUMENT;
  const Case cases[] = {
      {"valid e4m3 cache", fp8_cache_base, [](P&) {}, FLARE_OK, ""},
      {"valid e5m2 cache, one factor per tensor", fp8_cache_base,
       [](P& p) {
         p.kv_dtype = FLARE_DTYPE_E5M2;
         p.k_descale_batch_stride = p.k_descale_head_stride = 0;
         p.v_descale_batch_stride = p.v_descale_head_stride = 0;
       },
       FLARE_OK, ""},
      {"fp8 cache with a 2-byte-offset q", fp8_cache_base,
       [](P& p) { p.q = fake_ptr(0x100002); }, FLARE_ERROR_NOT_SUPPORTED,
       "kv_dtype e4m3: q, out, k_new and v_new of an FP8 K/V call need 16-byte aligned"},
      {"e5m2 cache with an odd out row stride", fp8_cache_base,
       [](P& p) {
         p.kv_dtype = FLARE_DTYPE_E5M2;
         p.out_row_stride += 1;
         p.out_batch_stride = p.out_row_stride;
       },
       FLARE_ERROR_NOT_SUPPORTED, "kv_dtype e5m2: q, out"},
      {"fp8 cache at head dim 384", [] {
         P p = fp8_cache_base();
         p.head_dim = 384;
         p.q_head_stride = p.out_head_stride = p.k_head_stride = p.v_head_stride = 384;
         p.q_row_stride = p.out_row_stride = 8 * 384;
         p.q_batch_stride = p.out_batch_stride = 8 * 384;
         p.k_row_stride = p.v_row_stride = 2 * 384;
         p.k_batch_stride = p.v_batch_stride = 256 * 2 * 384;
         return p;
       },
       [](P&) {}, FLARE_ERROR_UNSUPPORTED_HEAD_DIM, "head_dim 384 with kv_dtype e4m3"},
#if FLARE_FP8_PREFILL
      // Builds with the Hopper FP8 prefill kernel accept it (the device is the planner's).
      {"valid prefill", fp8_prefill_base, [](P&) {}, FLARE_OK, ""},
      {"fp8 prefill at head dim 32", fp8_prefill_base, [](P& p) { p.head_dim = 32; },
       FLARE_ERROR_UNSUPPORTED_HEAD_DIM, "head_dim 32 with q_dtype e4m3"},
      {"paged fp8 prefill", fp8_prefill_base,
       [](P& p) {
         p.block_table = fake_ptr<const int32_t>(0x720000);
         p.block_table_batch_stride = 1;
         p.page_block_size = 128;
         p.num_pages = 2;  // each batch entry's 128 K/V rows are a page
         p.cache_seqlens = fake_ptr<const int32_t>(0x700000);
       },
       FLARE_ERROR_NOT_SUPPORTED, "block_table with q_dtype e4m3"},
#else
      {"valid prefill is refused until its kernels land", fp8_prefill_base, [](P&) {},
       FLARE_ERROR_NOT_SUPPORTED, "q_dtype e4m3: FP8 prefill is not implemented"},
#endif
      {"kv_dtype bf16", fp8_cache_base, [](P& p) { p.kv_dtype = FLARE_DTYPE_BF16; },
       FLARE_ERROR_UNSUPPORTED_DTYPE, "kv_dtype (1) is not supported"},
      {"kv_dtype 9", fp8_cache_base, [](P& p) { p.kv_dtype = 9; }, FLARE_ERROR_UNSUPPORTED_DTYPE,
       "kv_dtype (9)"},
      {"q_dtype e5m2", fp8_prefill_base, [](P& p) { p.q_dtype = FLARE_DTYPE_E5M2; },
       FLARE_ERROR_UNSUPPORTED_DTYPE, "q_dtype (4) is not supported"},
      {"fp8 q over a bf16 cache", fp8_prefill_base,
       [](P& p) {
         p.kv_dtype = 0;
         p.k_descale = p.v_descale = nullptr;
       },
       FLARE_ERROR_UNSUPPORTED_DTYPE, "q_dtype e4m3 needs kv_dtype e4m3"},
      {"fp8 q over an e5m2 cache", fp8_prefill_base, [](P& p) { p.kv_dtype = FLARE_DTYPE_E5M2; },
       FLARE_ERROR_UNSUPPORTED_DTYPE, "kv_dtype is 4 (e5m2)"},
      {"missing k_descale", fp8_cache_base, [](P& p) { p.k_descale = nullptr; }, INVALID,
       "k_descale is null"},
      {"missing v_descale", fp8_cache_base, [](P& p) { p.v_descale = nullptr; }, INVALID,
       "v_descale is null"},
      {"missing q_descale", fp8_prefill_base, [](P& p) { p.q_descale = nullptr; }, INVALID,
       "q_descale is null"},
      {"descale without fp8", fp8_cache_base, [](P& p) { p.kv_dtype = 0; }, INVALID,
       "k_descale is set but its tensor is not FP8"},
      {"q_descale without fp8 q", fp8_cache_base,
       [](P& p) { p.q_descale = fake_ptr<const float>(0x720000); }, INVALID,
       "q_descale is set but its tensor is not FP8"},
      {"misaligned descale", fp8_cache_base,
       [](P& p) { p.v_descale = fake_ptr<const float>(0x710102); }, FLARE_ERROR_MISALIGNED,
       "v_descale"},
      {"negative descale stride", fp8_cache_base, [](P& p) { p.k_descale_head_stride = -1; },
       INVALID, "k_descale strides (2, -1) must be >= 0"},
      {"huge descale stride", fp8_cache_base,
       [](P& p) { p.k_descale_batch_stride = int64_t(1) << 62; }, INVALID,
       "k_descale spans more than 2^61"},
      {"fp8 k row stride not 16 elements", fp8_cache_base,
       [](P& p) {
         p.k_row_stride = 2 * 64 + 8;
         p.k_batch_stride = 256 * p.k_row_stride;
       },
       FLARE_ERROR_MISALIGNED, "k_row_stride (136) is not a multiple of 16 elements"},
      {"fp8 v base 8-byte aligned", fp8_cache_base,
       [](P& p) { p.v = fake_ptr(0x300008); }, FLARE_ERROR_MISALIGNED, "v ("},
      {"fp8 head dim 72", [] {
         P p = flare_test::dense_fp16_params(2, 1, 256, 8, 2, 72);
         p.head_dim = 72;
         p.k_head_stride = p.v_head_stride = 80;
         p.k_row_stride = p.v_row_stride = 160;
         p.k_batch_stride = p.v_batch_stride = 160 * 256;
         p.cache_seqlens = fake_ptr<const int32_t>(0x700000);
         p.kv_dtype = FLARE_DTYPE_E4M3;
         p.k_descale = fake_ptr<const float>(0x710000);
         p.v_descale = fake_ptr<const float>(0x710100);
         return p;
       },
       [](P&) {}, FLARE_ERROR_UNSUPPORTED_HEAD_DIM, "multiples of 16"},
      {"fp8 q with an append", [] {
         P p = fp8_prefill_base();
         p.cache_seqlens = fake_ptr<const int32_t>(0x700000);
         p.k_new = fake_ptr(0x800000);
         p.v_new = fake_ptr(0x900000);
         p.seqlen_new = 1;
         p.k_new_head_stride = p.v_new_head_stride = 128;
         p.k_new_row_stride = p.v_new_row_stride = 256;
         p.k_new_batch_stride = p.v_new_batch_stride = 256;
         return p;
       },
       [](P&) {}, FLARE_ERROR_NOT_SUPPORTED, "k_new with q_dtype e4m3"},
  };
  for (const Case& c : cases) {
    P p = c.base();
    c.mutate(p);
    const flare_status s = intake(p);
    EXPECT_EQ(s, c.status) << c.name << ": " << flare_last_error();
    EXPECT_NE(std::string(flare_last_error()).find(c.message), std::string::npos)
        << c.name << ": \"" << flare_last_error() << "\" lacks \"" << c.message << "\"";
  }
}

// A caller of the previous struct version (ending after head_dim_v) gets the FP8 fields zero:
// no FP8, no descale.
TEST(Fp8Validation, OlderStructGetsFp8FieldsZero) {
  P src = flare_test::dense_fp16_params(2, 64, 128, 4, 2, 64);
  src.struct_size = uint32_t((offsetof(P, head_dim_v) + sizeof(int32_t) + 7) / 8 * 8);
  ASSERT_EQ(offsetof(P, kv_dtype), size_t(src.struct_size)) << "kv_dtype starts a new 8-byte group";
  std::vector<unsigned char> buffer(sizeof(P), 0xCD);
  std::memcpy(buffer.data(), &src, src.struct_size);
  P full;
  ASSERT_EQ(flare::read_params(reinterpret_cast<const P*>(buffer.data()), &full), FLARE_OK);
  EXPECT_EQ(full.kv_dtype, 0);
  EXPECT_EQ(full.q_dtype, 0);
  EXPECT_EQ(full.q_descale, nullptr);
  EXPECT_EQ(full.k_descale, nullptr);
  EXPECT_EQ(full.v_descale, nullptr);
  EXPECT_EQ(flare::validate_params(&full), FLARE_OK) << flare_last_error();
}

// ---------------------------------------------------------------------------------------------
// The reference on FP8 inputs: a code c with factor s is the value c x s, so an FP8 problem
// equals the fp16 problem holding those values wherever they are exact in fp16 (power-of-two
// factors keep them exact), bit for bit.

struct Dense {
  int b = 2, sq = 5, sk = 37, h = 4, hk = 2, d = 32;
  std::vector<uint8_t> q8, k8, v8;       // codes
  std::vector<uint16_t> q16, k16, v16;   // fp16 of code x factor
  std::vector<float> qs, ks, vs;         // factors [b, hk]
};

Dense make_dense(int dtype, bool fp8_q) {
  Dense D;
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> code(0, 255);
  std::uniform_int_distribution<int> exp2(-3, 3);
  const int nq = D.b * D.sq * D.h * D.d, nk = D.b * D.sk * D.hk * D.d;
  auto factors = [&] {
    std::vector<float> f(D.b * D.hk);
    for (auto& x : f) x = std::ldexp(1.f, exp2(rng));
    return f;
  };
  D.qs = factors(), D.ks = factors(), D.vs = factors();
  auto fill = [&](std::vector<uint8_t>& c8, std::vector<uint16_t>& c16, int n, int rows,
                  int heads, const std::vector<float>& f) {
    c8.resize(n), c16.resize(n);
    for (int i = 0; i < n; ++i) {
      uint8_t c;
      do c = uint8_t(code(rng));
      while (!std::isfinite(flare::fp8_to_float(c, dtype)) ||
             std::fabs(flare::fp8_to_float(c, dtype)) > 8.f);
      c8[i] = c;
      const int head = (i / D.d) % heads;
      const int batch = i / (D.d * heads * rows);
      const float x = flare::fp8_to_float(c, dtype) * f[batch * D.hk + head * D.hk / heads];
      c16[i] = flare::ref::from_float(x, FLARE_DTYPE_FP16);
      EXPECT_EQ(flare::ref::to_float(c16[i], FLARE_DTYPE_FP16), x);
    }
  };
  fill(D.k8, D.k16, nk, D.sk, D.hk, D.ks);
  fill(D.v8, D.v16, nk, D.sk, D.hk, D.vs);
  if (fp8_q) {
    fill(D.q8, D.q16, nq, D.sq, D.h, D.qs);
  } else {
    D.q16.resize(nq);
    std::uniform_int_distribution<int> v(-16, 16);
    for (auto& x : D.q16) x = flare::ref::from_float(v(rng) / 8.f, FLARE_DTYPE_FP16);
  }
  return D;
}

P dense_host_params(const Dense& D) {
  P p = flare_test::dense_fp16_params(D.b, D.sq, D.sk, D.h, D.hk, D.d);
  p.causal = 1;
  return p;
}

void run_pair(int kv_dtype, bool fp8_q) {
  const Dense D = make_dense(kv_dtype, fp8_q);
  P want = dense_host_params(D);
  want.q = D.q16.data(), want.k = D.k16.data(), want.v = D.v16.data();
  P got = want;
  got.kv_dtype = kv_dtype;
  got.k = D.k8.data(), got.v = D.v8.data();
  got.k_descale = D.ks.data(), got.v_descale = D.vs.data();
  got.k_descale_batch_stride = got.v_descale_batch_stride = D.hk;
  got.k_descale_head_stride = got.v_descale_head_stride = 1;
  if (fp8_q) {
    got.q_dtype = FLARE_DTYPE_E4M3;
    got.q = D.q8.data();
    got.q_descale = D.qs.data();
    got.q_descale_batch_stride = D.hk;
    got.q_descale_head_stride = 1;
  }
  const size_t n = size_t(D.b) * D.sq * D.h * D.d, nl = size_t(D.b) * D.h * D.sq;
  std::vector<double> o1(n, 7.0), o2(n, 9.0), l1(nl, 7.0), l2(nl, 9.0);
  flare::ref::attention_forward(want, flare::ref::Precision::Float64, o1.data(), l1.data());
  flare::ref::attention_forward(got, flare::ref::Precision::Float64, o2.data(), l2.data());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(o1[i], o2[i]) << "out " << i;
  for (size_t i = 0; i < nl; ++i) ASSERT_EQ(l1[i], l2[i]) << "lse " << i;
}

TEST(Fp8Reference, E4m3CacheEqualsItsDequantizedValues) { run_pair(FLARE_DTYPE_E4M3, false); }
TEST(Fp8Reference, E5m2CacheEqualsItsDequantizedValues) { run_pair(FLARE_DTYPE_E5M2, false); }
TEST(Fp8Reference, E4m3PrefillEqualsItsDequantizedValues) { run_pair(FLARE_DTYPE_E4M3, true); }

// The naive model of FP8 prefill rounds the unnormalised probabilities to e4m3. With scores
// in [-0.5, 0.5] every probability exp(x - max) is in [e^-1, 1], a normal e4m3 value, so each is
// within 2^-4 of its own size and the output within 2^-4 max|v| of float64 (plus the bf16
// rounding of scores and out): close, but not equal.
TEST(Fp8Reference, NaiveFp8PrefillRoundsProbabilities) {
  const Dense D = make_dense(FLARE_DTYPE_E4M3, true);
  P p = dense_host_params(D);
  p.dtype = FLARE_DTYPE_BF16;
  p.q_dtype = p.kv_dtype = FLARE_DTYPE_E4M3;
  p.q = D.q8.data(), p.k = D.k8.data(), p.v = D.v8.data();
  // |q|, |k| <= 8 / 32: |q.k| <= 32 / 16, times the scale 1 / sqrt(32): below 0.5.
  const std::vector<float> small(D.b * D.hk, 1.f / 32);
  p.q_descale = small.data(), p.k_descale = small.data(), p.v_descale = D.vs.data();
  p.q_descale_batch_stride = p.k_descale_batch_stride = p.v_descale_batch_stride = D.hk;
  p.q_descale_head_stride = p.k_descale_head_stride = p.v_descale_head_stride = 1;
  const size_t n = size_t(D.b) * D.sq * D.h * D.d;
  std::vector<double> exact(n), naive(n);
  flare::ref::attention_forward(p, flare::ref::Precision::Float64, exact.data(), nullptr);
  flare::ref::attention_forward(p, flare::ref::Precision::NaiveLowPrecision, naive.data(), nullptr);
  double max_err = 0, max_v = 0;
  for (size_t i = 0; i < n; ++i) max_err = std::fmax(max_err, std::fabs(exact[i] - naive[i]));
  for (const uint8_t c : D.v8) max_v = std::fmax(max_v, std::fabs(flare::e4m3_to_float(c)) * 8);
  EXPECT_GT(max_err, 0.0);
  EXPECT_LE(max_err, max_v * (std::ldexp(1.0, -4) + std::ldexp(1.0, -7)));
}

// The append quantizes k_new / v_new into an FP8 cache: code = nearest to x / factor.
TEST(Fp8Reference, AppendQuantizesIntoTheCache) {
  const int b = 2, cap = 8, hk = 2, d = 16, h = 2;
  P p = flare_test::dense_fp16_params(b, 1, cap, h, hk, d);
  std::vector<int32_t> seqlens = {3, 5};
  std::vector<uint8_t> kc(size_t(b) * cap * hk * d, 0xAA), vc(kc.size(), 0xAA);
  std::vector<uint16_t> kn(size_t(b) * hk * d), vn(kn.size());
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-600.f, 600.f);
  for (auto& x : kn) x = flare::ref::from_float(u(rng), FLARE_DTYPE_FP16);
  for (auto& x : vn) x = flare::ref::from_float(u(rng) / 64, FLARE_DTYPE_FP16);
  std::vector<float> ks = {0.5f, 2.f, 1.f, 0.25f}, vs = {1.f, 1.f, 3.f, 0.1f};
  p.cache_seqlens = seqlens.data();
  p.kv_dtype = FLARE_DTYPE_E4M3;
  p.k_descale = ks.data(), p.v_descale = vs.data();
  p.k_descale_batch_stride = p.v_descale_batch_stride = hk;
  p.k_descale_head_stride = p.v_descale_head_stride = 1;
  p.k_new = kn.data(), p.v_new = vn.data(), p.seqlen_new = 1;
  p.k_new_head_stride = p.v_new_head_stride = d;
  p.k_new_row_stride = p.v_new_row_stride = hk * d;
  p.k_new_batch_stride = p.v_new_batch_stride = hk * d;
  flare::ref::append_kv(p, kc.data(), vc.data());
  for (int bb = 0; bb < b; ++bb)
    for (int hh = 0; hh < hk; ++hh)
      for (int e = 0; e < d; ++e) {
        const size_t src = (size_t(bb) * hk + hh) * d + e;
        const size_t dst = ((size_t(bb) * cap + seqlens[bb]) * hk + hh) * d + e;
        const float kx = flare::ref::to_float(kn[src], FLARE_DTYPE_FP16);
        const float vx = flare::ref::to_float(vn[src], FLARE_DTYPE_FP16);
        EXPECT_EQ(kc[dst], uint8_t(__nv_cvt_float_to_fp8(kx / ks[bb * hk + hh], __NV_SATFINITE,
                                                         __NV_E4M3)));
        EXPECT_EQ(vc[dst], uint8_t(__nv_cvt_float_to_fp8(vx / vs[bb * hk + hh], __NV_SATFINITE,
                                                         __NV_E4M3)));
      }
  // Rows other than the appended one are untouched.
  EXPECT_EQ(kc[0], 0xAA);
  EXPECT_EQ(vc[vc.size() - 1], 0xAA);
}

}  // namespace
