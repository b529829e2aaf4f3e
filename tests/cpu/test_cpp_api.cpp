// The header-only C++ API (include/flare/flare.hpp): views, params building and the errors it
// throws. Only the parts that need no GPU are exercised: make_params* and the shape checks,
// plus the library's host validation of the params they build (linked from flare_host).
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "api/error.h"
#include "api/validate.h"
#include "api/validate_serving.h"
#include "flare/flare.hpp"

namespace {

using flare::DType;
using flare::TensorView;

const void* addr(uintptr_t a) { return reinterpret_cast<const void*>(a); }
const int32_t* iaddr(uintptr_t a) { return reinterpret_cast<const int32_t*>(a); }

// read_params + validate_params, throwing flare::Error like the run functions would.
void validate(const flare_mha_fwd_params& p) {
  flare_mha_fwd_params full;
  flare::check(flare::read_params(&p, &full));
  flare::check(flare::validate_params(&full));
}

// validate() for params with serving features: every rule must pass; the one refusal allowed is
// the library's list of features its GPU kernels do not run yet (then the serving fields'
// own rules must still pass), so the test holds before and after those kernels land.
void validate_serving(const flare_mha_fwd_params& p) {
  flare_mha_fwd_params full;
  flare::check(flare::read_params(&p, &full));
  const flare_status st = flare::validate_params(&full);
  if (st == FLARE_OK) return;
  EXPECT_EQ(flare::validate_serving_fields(full), FLARE_OK) << flare_last_error();
  EXPECT_EQ(flare::serving_features_not_yet_supported(full), st)
      << "validation failed outside the not-yet list: " << flare_last_error();
}

// Runs f, expects flare::Error with `status` and `text` in what().
void expect_error(const std::function<void()>& f, flare_status status, const std::string& text) {
  try {
    f();
    ADD_FAILURE() << "no flare::Error thrown (expected \"" << text << "\")";
  } catch (const flare::Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos)
        << "\"" << e.what() << "\" lacks \"" << text << "\"";
  }
}

TEST(TensorView, ContiguousStrides) {
  const TensorView t = flare::contiguous(addr(0x1000), DType::BF16, {2, 3, 4, 5});
  EXPECT_EQ(t.rank, 4);
  EXPECT_EQ(t.dtype, DType::BF16);
  EXPECT_EQ(t.data, addr(0x1000));
  EXPECT_EQ(t.shape, (std::array<int64_t, 4>{2, 3, 4, 5}));
  EXPECT_EQ(t.stride, (std::array<int64_t, 4>{60, 20, 5, 1}));
  const TensorView v = flare::contiguous(addr(0x1000), DType::FP16, {7, 3});
  EXPECT_EQ(v.rank, 2);
  EXPECT_EQ(v.stride[0], 3);
  EXPECT_EQ(v.stride[1], 1);
  EXPECT_TRUE(v.defined());
  EXPECT_FALSE(TensorView{}.defined());
}

TEST(TensorView, BadRanksThrow) {
  expect_error([] { flare::contiguous(addr(0x1000), DType::FP16, {1, 2, 3, 4, 5}); },
               FLARE_ERROR_INVALID_ARGUMENT, "1 to 4 dimensions");
  expect_error([] { flare::contiguous(addr(0x1000), DType::FP16, {}); },
               FLARE_ERROR_INVALID_ARGUMENT, "1 to 4 dimensions");
  expect_error([] { flare::strided(addr(0x1000), DType::FP16, {2, 3}, {3}); },
               FLARE_ERROR_INVALID_ARGUMENT, "one stride per dimension");
}

TEST(MakeParams, DenseFieldsAndOptions) {
  const TensorView q = flare::contiguous(addr(0x100000), DType::BF16, {2, 128, 8, 64});
  const TensorView k = flare::contiguous(addr(0x200000), DType::BF16, {2, 256, 2, 64});
  const TensorView v = flare::contiguous(addr(0x300000), DType::BF16, {2, 256, 2, 64});
  const TensorView out = flare::contiguous(addr(0x400000), DType::BF16, {2, 128, 8, 64});
  flare::FlashAttnOptions o;
  o.softmax_scale = 0.1f;
  o.causal = true;
  o.window_left = 32;
  o.softcap = 50.f;
  o.alibi_slopes = reinterpret_cast<const float*>(0x500000);
  o.alibi_batch_stride = 8;
  o.lse = reinterpret_cast<float*>(0x600000);
  o.num_splits = 3;
  const flare_mha_fwd_params p = flare::make_params(q, k, v, out, o);

  EXPECT_EQ(p.struct_size, sizeof(flare_mha_fwd_params));
  EXPECT_EQ(p.dtype, FLARE_DTYPE_BF16);
  EXPECT_EQ(p.q, q.data);
  EXPECT_EQ(p.k, k.data);
  EXPECT_EQ(p.v, v.data);
  EXPECT_EQ(p.out, out.data);
  EXPECT_EQ(p.batch, 2);
  EXPECT_EQ(p.seqlen_q, 128);
  EXPECT_EQ(p.seqlen_k, 256);
  EXPECT_EQ(p.num_heads, 8);
  EXPECT_EQ(p.num_heads_k, 2);
  EXPECT_EQ(p.head_dim, 64);
  EXPECT_EQ(p.q_batch_stride, 128 * 8 * 64);
  EXPECT_EQ(p.q_row_stride, 8 * 64);
  EXPECT_EQ(p.q_head_stride, 64);
  EXPECT_EQ(p.k_batch_stride, 256 * 2 * 64);
  EXPECT_EQ(p.k_row_stride, 2 * 64);
  EXPECT_EQ(p.k_head_stride, 64);
  EXPECT_EQ(p.v_row_stride, 2 * 64);
  EXPECT_EQ(p.out_row_stride, 8 * 64);
  EXPECT_FLOAT_EQ(p.softmax_scale, 0.1f);
  EXPECT_EQ(p.causal, 1);
  EXPECT_EQ(p.window_left, 32);
  EXPECT_EQ(p.window_right, -1);
  EXPECT_FLOAT_EQ(p.softcap, 50.f);
  EXPECT_EQ(p.alibi_slopes, o.alibi_slopes);
  EXPECT_EQ(p.alibi_batch_stride, 8);
  EXPECT_EQ(p.lse, o.lse);
  EXPECT_EQ(p.num_splits, 3);
  EXPECT_EQ(p.cu_seqlens_q, nullptr);
  EXPECT_EQ(p.cache_seqlens, nullptr);
  EXPECT_EQ(p.workspace, nullptr);
  EXPECT_EQ(p.p_dropout, 0.f);
  EXPECT_NO_THROW(validate(p));
}

TEST(MakeParams, StridedViewsOfPackedQkv) {
  // qkv [b=2, s=64, 3, h=4, d=128]: q, k, v are strided views into one buffer.
  const int64_t b = 2, s = 64, h = 4, d = 128;
  const uintptr_t base = 0x1000000;
  auto part = [&](int i) {
    return flare::strided(addr(base + uintptr_t(i * h * d * 2)), DType::FP16, {b, s, h, d},
                          {s * 3 * h * d, 3 * h * d, d, 1});
  };
  const TensorView out = flare::contiguous(addr(0x2000000), DType::FP16, {b, s, h, d});
  const flare_mha_fwd_params p = flare::make_params(part(0), part(1), part(2), out);
  EXPECT_EQ(p.q_batch_stride, s * 3 * h * d);
  EXPECT_EQ(p.q_row_stride, 3 * h * d);
  EXPECT_EQ(p.k_row_stride, 3 * h * d);
  EXPECT_EQ(p.v_head_stride, d);
  EXPECT_EQ(p.k, addr(base + uintptr_t(h * d * 2)));
  EXPECT_EQ(p.out_row_stride, h * d);
  EXPECT_EQ(p.causal, 0);
  EXPECT_EQ(p.window_left, -1);
  EXPECT_NO_THROW(validate(p));
}

TEST(MakeParams, Varlen) {
  const TensorView q = flare::contiguous(addr(0x100000), DType::FP16, {300, 8, 64});
  const TensorView k = flare::contiguous(addr(0x200000), DType::FP16, {900, 8, 64});
  const TensorView out = flare::contiguous(addr(0x400000), DType::FP16, {300, 8, 64});
  flare::VarlenArgs varlen;
  varlen.cu_seqlens_q = iaddr(0x500000);
  varlen.cu_seqlens_k = iaddr(0x500100);
  varlen.batch = 3;
  varlen.max_seqlen_q = 120;
  varlen.max_seqlen_k = 400;
  varlen.seqused_k = iaddr(0x500200);
  const flare_mha_fwd_params p = flare::make_params_varlen(q, k, k, out, varlen);
  EXPECT_EQ(p.batch, 3);
  EXPECT_EQ(p.cu_seqlens_q, varlen.cu_seqlens_q);
  EXPECT_EQ(p.cu_seqlens_k, varlen.cu_seqlens_k);
  EXPECT_EQ(p.seqused_k, varlen.seqused_k);
  EXPECT_EQ(p.max_seqlen_q, 120);
  EXPECT_EQ(p.max_seqlen_k, 400);
  EXPECT_EQ(p.q_batch_stride, 0);
  EXPECT_EQ(p.k_batch_stride, 0);
  EXPECT_EQ(p.q_row_stride, 8 * 64);
  EXPECT_EQ(p.q_head_stride, 64);
  EXPECT_EQ(p.num_heads_k, 8);
  EXPECT_NO_THROW(validate(p));
}

TEST(MakeParams, PagedKvCacheWithAppendAndRotary) {
  const TensorView q = flare::contiguous(addr(0x100000), DType::BF16, {4, 1, 16, 128});
  const TensorView pool = flare::contiguous(addr(0x200000), DType::BF16, {100, 64, 2, 128});
  const TensorView out = flare::contiguous(addr(0x400000), DType::BF16, {4, 1, 16, 128});
  flare::KvCacheOptions kv;
  kv.cache_seqlens = iaddr(0x500000);
  kv.leftpad_k = iaddr(0x500100);
  kv.block_table = iaddr(0x500200);
  kv.max_pages_per_seq = 16;
  kv.k_new = flare::contiguous(addr(0x600000), DType::BF16, {4, 1, 2, 128});
  kv.v_new = flare::contiguous(addr(0x700000), DType::BF16, {4, 1, 2, 128});
  kv.rotary_cos = flare::contiguous(addr(0x800000), DType::BF16, {2048, 32});
  kv.rotary_sin = flare::contiguous(addr(0x900000), DType::BF16, {2048, 32});
  kv.rotary_interleaved = true;
  const flare_mha_fwd_params p = flare::make_params_kvcache(q, pool, pool, out, kv);
  EXPECT_EQ(p.batch, 4);
  EXPECT_EQ(p.seqlen_q, 1);
  EXPECT_EQ(p.num_heads, 16);
  EXPECT_EQ(p.num_heads_k, 2);
  EXPECT_EQ(p.cache_seqlens, kv.cache_seqlens);
  EXPECT_EQ(p.leftpad_k, kv.leftpad_k);
  EXPECT_EQ(p.block_table, kv.block_table);
  EXPECT_EQ(p.page_block_size, 64);
  EXPECT_EQ(p.num_pages, 100);
  EXPECT_EQ(p.block_table_batch_stride, 16);
  EXPECT_EQ(p.seqlen_k, 16 * 64);
  EXPECT_EQ(p.k_batch_stride, 64 * 2 * 128);  // page stride
  EXPECT_EQ(p.k_row_stride, 2 * 128);
  EXPECT_EQ(p.k_new, kv.k_new.data);
  EXPECT_EQ(p.v_new, kv.v_new.data);
  EXPECT_EQ(p.seqlen_new, 1);
  EXPECT_EQ(p.k_new_batch_stride, 2 * 128);
  EXPECT_EQ(p.k_new_row_stride, 2 * 128);
  EXPECT_EQ(p.v_new_head_stride, 128);
  EXPECT_EQ(p.rotary_cos, kv.rotary_cos.data);
  EXPECT_EQ(p.rotary_sin, kv.rotary_sin.data);
  EXPECT_EQ(p.rotary_dim, 64);
  EXPECT_EQ(p.rotary_max_positions, 2048);
  EXPECT_EQ(p.rotary_interleaved, 1);
  EXPECT_NO_THROW(validate(p));

  flare::KvCacheOptions strided_table = kv;
  strided_table.block_table_batch_stride = 32;
  EXPECT_EQ(flare::make_params_kvcache(q, pool, pool, out, strided_table).block_table_batch_stride,
            32);
}

TEST(MakeParams, UnpagedKvCacheWithBatchIndex) {
  // 8 cache slots for a batch of 4, chosen by cache_batch_idx; no append.
  const TensorView q = flare::contiguous(addr(0x100000), DType::FP16, {4, 1, 8, 64});
  const TensorView cache = flare::contiguous(addr(0x200000), DType::FP16, {8, 512, 8, 64});
  const TensorView out = flare::contiguous(addr(0x400000), DType::FP16, {4, 1, 8, 64});
  flare::KvCacheOptions kv;
  kv.cache_seqlens = iaddr(0x500000);
  kv.cache_batch_idx = iaddr(0x500100);
  const flare_mha_fwd_params p = flare::make_params_kvcache(q, cache, cache, out, kv);
  EXPECT_EQ(p.seqlen_k, 512);
  EXPECT_EQ(p.cache_batch_idx, kv.cache_batch_idx);
  EXPECT_EQ(p.block_table, nullptr);
  EXPECT_EQ(p.k_new, nullptr);
  EXPECT_EQ(p.rotary_dim, 0);
  EXPECT_EQ(p.k_batch_stride, 512 * 8 * 64);
  EXPECT_NO_THROW(validate(p));
}

// ---------------------------------------------------------------------------------------------
// Mismatched views: flare::Error(INVALID_ARGUMENT) before any library call.

struct Views {
  TensorView q = flare::contiguous(addr(0x100000), DType::FP16, {2, 16, 8, 64});
  TensorView k = flare::contiguous(addr(0x200000), DType::FP16, {2, 32, 2, 64});
  TensorView v = flare::contiguous(addr(0x300000), DType::FP16, {2, 32, 2, 64});
  TensorView out = flare::contiguous(addr(0x400000), DType::FP16, {2, 16, 8, 64});
  flare_mha_fwd_params make() const { return flare::make_params(q, k, v, out); }
};

struct BadViews {
  const char* name;
  std::function<void(Views&)> mutate;
  const char* message;
};

TEST(MakeParams, MismatchedViewsThrow) {
  const BadViews cases[] = {
      {"head_dim",
       [](Views& t) {
         t.k = flare::contiguous(t.k.data, DType::FP16, {2, 32, 2, 128});
         t.v = flare::contiguous(t.v.data, DType::FP16, {2, 32, 2, 128});
       },
       "k.shape[3] (128) must equal q.shape[3] (64)"},
      {"k_v_heads", [](Views& t) { t.v = flare::contiguous(t.v.data, DType::FP16, {2, 32, 4, 64}); },
       "v.shape[2] (4) must equal k.shape[2]"},
      {"k_v_seqlen", [](Views& t) { t.v = flare::contiguous(t.v.data, DType::FP16, {2, 31, 2, 64}); },
       "v.shape[1] (31)"},
      {"heads_not_multiple",
       [](Views& t) {
         t.k = flare::contiguous(t.k.data, DType::FP16, {2, 32, 3, 64});
         t.v = t.k;
       },
       "q has 8 heads, not a multiple of the 3 heads of k/v"},
      {"out_shape", [](Views& t) { t.out = flare::contiguous(t.out.data, DType::FP16, {2, 16, 4, 64}); },
       "out.shape[2] (4) must equal q.shape[2]"},
      {"batch", [](Views& t) {
         t.k = flare::contiguous(t.k.data, DType::FP16, {1, 32, 2, 64});
         t.v = t.k;
       },
       "k.shape[0] (1) must equal q.shape[0] (2)"},
      {"dtype", [](Views& t) { t.v.dtype = DType::BF16; }, "v is bf16 but q is fp16"},
      {"out_dtype", [](Views& t) { t.out.dtype = DType::BF16; }, "out is bf16 but q is fp16"},
      {"fp8_q_out_differs",
       [](Views& t) {
         t.k.dtype = t.v.dtype = DType::E4M3;  // an FP8 cache: q must have out's type
         t.out.dtype = DType::BF16;
       },
       "q is fp16 but out is bf16"},
      {"fp8_k_v_differ",
       [](Views& t) {
         t.k.dtype = DType::E4M3;
         t.v.dtype = DType::E5M2;
       },
       "v is e5m2 but k is e4m3"},
      {"rank", [](Views& t) { t.q = flare::contiguous(t.q.data, DType::FP16, {32, 8, 64}); },
       "q must have 4 dimensions, got 3"},
      {"head_dim_not_contiguous", [](Views& t) { t.k.stride[3] = 2; },
       "k.stride[3] (2) must be 1"},
      {"int32_overflow",
       [](Views& t) {
         t.k.shape[1] = t.v.shape[1] = int64_t(1) << 31;
       },
       "k.shape[1] (2147483648) is out of range"},
      {"negative_extent", [](Views& t) { t.q.shape[1] = t.out.shape[1] = -1; },
       "q.shape[1] (-1) is out of range"},
  };
  for (const BadViews& c : cases) {
    SCOPED_TRACE(c.name);
    Views t;
    EXPECT_NO_THROW(t.make());
    c.mutate(t);
    expect_error([&] { t.make(); }, FLARE_ERROR_INVALID_ARGUMENT, c.message);
  }
}

TEST(MakeParams, VarlenNeedsRank3) {
  const Views t;
  expect_error([&] { flare::make_params_varlen(t.q, t.k, t.v, t.out, flare::VarlenArgs{}); },
               FLARE_ERROR_INVALID_ARGUMENT, "q must have 3 dimensions, got 4");
}

struct KvViews {
  TensorView q = flare::contiguous(addr(0x100000), DType::FP16, {4, 1, 8, 64});
  TensorView cache = flare::contiguous(addr(0x200000), DType::FP16, {4, 256, 2, 64});
  TensorView out = flare::contiguous(addr(0x400000), DType::FP16, {4, 1, 8, 64});
  flare::KvCacheOptions kv;
  KvViews() {
    kv.cache_seqlens = iaddr(0x500000);
    kv.k_new = flare::contiguous(addr(0x600000), DType::FP16, {4, 2, 2, 64});
    kv.v_new = flare::contiguous(addr(0x700000), DType::FP16, {4, 2, 2, 64});
    kv.rotary_cos = flare::contiguous(addr(0x800000), DType::FP16, {512, 16});
    kv.rotary_sin = flare::contiguous(addr(0x900000), DType::FP16, {512, 16});
  }
  flare_mha_fwd_params make() const {
    return flare::make_params_kvcache(q, cache, cache, out, kv);
  }
};

struct BadKv {
  const char* name;
  std::function<void(KvViews&)> mutate;
  const char* message;
};

TEST(MakeParams, MismatchedKvCacheViewsThrow) {
  const BadKv cases[] = {
      {"paged_without_pages", [](KvViews& t) { t.kv.block_table = iaddr(0x500200); },
       "max_pages_per_seq (0) must be >= 1 with block_table"},
      {"cache_batch_without_index",
       [](KvViews& t) { t.cache = flare::contiguous(t.cache.data, DType::FP16, {8, 256, 2, 64}); },
       "k_cache.shape[0] (8) must equal q.shape[0] (4)"},
      {"k_new_alone", [](KvViews& t) { t.kv.v_new = TensorView{}; },
       "v_new is missing while k_new is given"},
      {"v_new_alone", [](KvViews& t) { t.kv.k_new = TensorView{}; },
       "k_new is missing while v_new is given"},
      {"k_new_heads",
       [](KvViews& t) {
         t.kv.k_new = flare::contiguous(t.kv.k_new.data, DType::FP16, {4, 2, 8, 64});
       },
       "k_new.shape[2] (8) must equal the heads of k_cache (2)"},
      {"v_new_seqlen",
       [](KvViews& t) {
         t.kv.v_new = flare::contiguous(t.kv.v_new.data, DType::FP16, {4, 3, 2, 64});
       },
       "v_new.shape[1] (3) must equal k_new.shape[1]"},
      {"k_new_dtype", [](KvViews& t) { t.kv.k_new.dtype = DType::BF16; },
       "k_new is bf16 but q is fp16"},
      {"cos_alone", [](KvViews& t) { t.kv.rotary_sin = TensorView{}; },
       "rotary_sin is missing while rotary_cos is given"},
      {"rotary_not_dense",
       [](KvViews& t) {
         t.kv.rotary_cos = flare::strided(t.kv.rotary_cos.data, DType::FP16, {512, 16}, {32, 1});
       },
       "rotary_cos.stride[0] (32) must equal its shape[1] (16)"},
      {"rotary_rank",
       [](KvViews& t) {
         t.kv.rotary_sin = flare::contiguous(t.kv.rotary_sin.data, DType::FP16, {512});
       },
       "rotary_sin must have 2 dimensions, got 1"},
      {"rotary_dtype", [](KvViews& t) { t.kv.rotary_cos.dtype = DType::BF16; },
       "rotary_cos is bf16 but q is fp16"},
  };
  for (const BadKv& c : cases) {
    SCOPED_TRACE(c.name);
    KvViews t;
    EXPECT_NO_THROW(t.make());
    c.mutate(t);
    expect_error([&] { t.make(); }, FLARE_ERROR_INVALID_ARGUMENT, c.message);
  }
}

// ---------------------------------------------------------------------------------------------
// Serving options: sink, multimodal prefix ranges, a separate V head dim, paged varlen.

TEST(MakeParams, SinkAndPrefixRangesMapToTheirFields) {
  const TensorView q = flare::contiguous(addr(0x100000), DType::BF16, {2, 128, 8, 64});
  const TensorView k = flare::contiguous(addr(0x200000), DType::BF16, {2, 256, 2, 64});
  const TensorView out = flare::contiguous(addr(0x400000), DType::BF16, {2, 128, 8, 64});
  flare::FlashAttnOptions o;
  o.sink = reinterpret_cast<const float*>(0x500000);
  o.mm_prefix_ranges = iaddr(0x600000);
  o.max_mm_prefix_ranges = 3;
  flare_mha_fwd_params p = flare::make_params(q, k, k, out, o);
  EXPECT_EQ(p.sink, o.sink);
  EXPECT_EQ(p.mm_prefix_ranges, o.mm_prefix_ranges);
  EXPECT_EQ(p.max_mm_prefix_ranges, 3);
  EXPECT_EQ(p.mm_prefix_ranges_batch_stride, 6);  // dense [batch, 3, 2]
  EXPECT_EQ(p.head_dim_v, 0);
  validate_serving(p);

  o.mm_prefix_ranges_batch_stride = 16;  // rows of a wider table
  p = flare::make_params(q, k, k, out, o);
  EXPECT_EQ(p.mm_prefix_ranges_batch_stride, 16);
  validate_serving(p);

  // A table with no range per sequence is accepted (it is no range at all).
  o.max_mm_prefix_ranges = 0;
  o.mm_prefix_ranges_batch_stride = 0;
  p = flare::make_params(q, k, k, out, o);
  EXPECT_EQ(p.max_mm_prefix_ranges, 0);
  EXPECT_EQ(p.mm_prefix_ranges_batch_stride, 0);
  validate_serving(p);

  // Without the options the fields keep their defaults.
  p = flare::make_params(q, k, k, out);
  EXPECT_EQ(p.sink, nullptr);
  EXPECT_EQ(p.mm_prefix_ranges, nullptr);
  EXPECT_EQ(p.max_mm_prefix_ranges, 0);
  EXPECT_EQ(p.mm_prefix_ranges_batch_stride, 0);
  EXPECT_NO_THROW(validate(p));

  // The library's own rules on the fields surface through validation.
  flare::FlashAttnOptions bad = o;
  bad.sink = reinterpret_cast<const float*>(0x500002);
  expect_error([&] { validate(flare::make_params(q, k, k, out, bad)); }, FLARE_ERROR_MISALIGNED,
               "sink");
  bad = o;
  bad.max_mm_prefix_ranges = 2;
  bad.mm_prefix_ranges_batch_stride = 3;
  expect_error([&] { validate(flare::make_params(q, k, k, out, bad)); },
               FLARE_ERROR_INVALID_ARGUMENT, "mm_prefix_ranges_batch_stride (3)");
}

TEST(MakeParams, SeparateVHeadDimFromV) {
  // DeepSeek prefill: (head_dim, head_dim_v) = (192, 128); out takes v's head dim.
  const TensorView q = flare::contiguous(addr(0x100000), DType::BF16, {2, 64, 8, 192});
  const TensorView k = flare::contiguous(addr(0x200000), DType::BF16, {2, 96, 8, 192});
  const TensorView v = flare::contiguous(addr(0x300000), DType::BF16, {2, 96, 8, 128});
  const TensorView out = flare::contiguous(addr(0x400000), DType::BF16, {2, 64, 8, 128});
  const flare_mha_fwd_params p = flare::make_params(q, k, v, out);
  EXPECT_EQ(p.head_dim, 192);
  EXPECT_EQ(p.head_dim_v, 128);
  EXPECT_EQ(p.v_row_stride, 8 * 128);
  EXPECT_EQ(p.v_batch_stride, 96 * 8 * 128);
  EXPECT_EQ(p.out_row_stride, 8 * 128);
  EXPECT_EQ(p.out_head_stride, 128);
  validate_serving(p);

  // Varlen and the KV cache take v's head dim the same way.
  const TensorView qv = flare::contiguous(addr(0x100000), DType::BF16, {300, 8, 192});
  const TensorView kv3 = flare::contiguous(addr(0x200000), DType::BF16, {900, 8, 192});
  const TensorView vv = flare::contiguous(addr(0x300000), DType::BF16, {900, 8, 128});
  const TensorView ov = flare::contiguous(addr(0x400000), DType::BF16, {300, 8, 128});
  flare::VarlenArgs varlen;
  varlen.cu_seqlens_q = iaddr(0x500000);
  varlen.cu_seqlens_k = iaddr(0x500100);
  varlen.batch = 3;
  varlen.max_seqlen_q = 120;
  varlen.max_seqlen_k = 400;
  const flare_mha_fwd_params pv = flare::make_params_varlen(qv, kv3, vv, ov, varlen);
  EXPECT_EQ(pv.head_dim_v, 128);
  EXPECT_EQ(pv.out_row_stride, 8 * 128);
  validate_serving(pv);

  const TensorView qc = flare::contiguous(addr(0x100000), DType::BF16, {4, 1, 8, 192});
  const TensorView kc = flare::contiguous(addr(0x200000), DType::BF16, {4, 256, 8, 192});
  const TensorView vc = flare::contiguous(addr(0x300000), DType::BF16, {4, 256, 8, 128});
  const TensorView oc = flare::contiguous(addr(0x400000), DType::BF16, {4, 1, 8, 128});
  flare::KvCacheOptions kvo;
  kvo.cache_seqlens = iaddr(0x500000);
  kvo.k_new = flare::contiguous(addr(0x600000), DType::BF16, {4, 1, 8, 192});
  kvo.v_new = flare::contiguous(addr(0x700000), DType::BF16, {4, 1, 8, 128});
  const flare_mha_fwd_params pc = flare::make_params_kvcache(qc, kc, vc, oc, kvo);
  EXPECT_EQ(pc.head_dim_v, 128);
  EXPECT_EQ(pc.v_new_row_stride, 8 * 128);
  validate_serving(pc);

  // Mismatches name the views.
  expect_error([&] { flare::make_params(q, k, v, flare::contiguous(out.data, DType::BF16, {2, 64, 8, 192})); },
               FLARE_ERROR_INVALID_ARGUMENT, "out.shape[3] (192) must equal v.shape[3]");
  expect_error([&] { flare::make_params(q, k, flare::contiguous(v.data, DType::BF16, {2, 95, 8, 128}), out); },
               FLARE_ERROR_INVALID_ARGUMENT, "v.shape[1] (95) must equal k.shape[1]");
  flare::KvCacheOptions bad_new = kvo;
  bad_new.v_new = flare::contiguous(addr(0x700000), DType::BF16, {4, 1, 8, 192});
  expect_error([&] { flare::make_params_kvcache(qc, kc, vc, oc, bad_new); },
               FLARE_ERROR_INVALID_ARGUMENT, "v_new.shape[3] (192) must equal v_cache.shape[3]");

  // An unsupported pair is the library's to refuse, naming both dims.
  const TensorView v64 = flare::contiguous(addr(0x300000), DType::BF16, {2, 96, 8, 64});
  const TensorView o64 = flare::contiguous(addr(0x400000), DType::BF16, {2, 64, 8, 64});
  expect_error([&] { validate(flare::make_params(q, k, v64, o64)); },
               FLARE_ERROR_UNSUPPORTED_HEAD_DIM, "head_dim_v (64) with head_dim (192)");
}

TEST(MakeParams, PagedVarlen) {
  // Chunked prefill over a paged cache: 3 sequences, pools of 40 pages of 16 rows.
  const TensorView q = flare::contiguous(addr(0x100000), DType::FP16, {300, 8, 128});
  const TensorView pool = flare::contiguous(addr(0x200000), DType::FP16, {40, 16, 2, 128});
  const TensorView out = flare::contiguous(addr(0x400000), DType::FP16, {300, 8, 128});
  flare::VarlenArgs varlen;
  varlen.cu_seqlens_q = iaddr(0x500000);
  varlen.cu_seqlens_k = iaddr(0x500100);
  varlen.batch = 3;
  varlen.max_seqlen_q = 120;
  varlen.max_seqlen_k = 200;
  varlen.block_table = iaddr(0x500200);
  varlen.max_pages_per_seq = 13;
  flare_mha_fwd_params p = flare::make_params_varlen(q, pool, pool, out, varlen);
  EXPECT_EQ(p.cu_seqlens_q, varlen.cu_seqlens_q);
  EXPECT_EQ(p.cu_seqlens_k, varlen.cu_seqlens_k);
  EXPECT_EQ(p.block_table, varlen.block_table);
  EXPECT_EQ(p.block_table_batch_stride, 13);
  EXPECT_EQ(p.page_block_size, 16);
  EXPECT_EQ(p.num_pages, 40);
  EXPECT_EQ(p.k_batch_stride, 16 * 2 * 128);  // page stride
  EXPECT_EQ(p.k_row_stride, 2 * 128);
  EXPECT_EQ(p.v_batch_stride, 16 * 2 * 128);
  EXPECT_EQ(p.q_batch_stride, 0);
  EXPECT_EQ(p.q_row_stride, 8 * 128);
  EXPECT_EQ(p.cache_seqlens, nullptr);
  validate_serving(p);

  // Any page size, a strided block table, key counts by seqused_k alone.
  for (int page : {1, 3, 48, 256}) {
    SCOPED_TRACE(page);
    const TensorView pg = flare::contiguous(addr(0x200000), DType::FP16, {40, page, 2, 128});
    flare::VarlenArgs v2 = varlen;
    v2.cu_seqlens_k = nullptr;
    v2.seqused_k = iaddr(0x500300);
    v2.block_table_batch_stride = 64;
    p = flare::make_params_varlen(q, pg, pg, out, v2);
    EXPECT_EQ(p.page_block_size, page);
    EXPECT_EQ(p.block_table_batch_stride, 64);
    EXPECT_EQ(p.seqused_k, v2.seqused_k);
    EXPECT_EQ(p.k_batch_stride, int64_t(page) * 2 * 128);
    validate_serving(p);
  }

  expect_error([&] {
    flare::VarlenArgs v2 = varlen;
    v2.max_pages_per_seq = 0;
    flare::make_params_varlen(q, pool, pool, out, v2);
  }, FLARE_ERROR_INVALID_ARGUMENT, "max_pages_per_seq (0) must be >= 1 with block_table");
  const TensorView flat = flare::contiguous(addr(0x200000), DType::FP16, {640, 2, 128});
  expect_error([&] { flare::make_params_varlen(q, flat, flat, out, varlen); },
               FLARE_ERROR_INVALID_ARGUMENT, "k must have 4 dimensions, got 3");
  const TensorView pool3 = flare::contiguous(addr(0x200000), DType::FP16, {40, 16, 3, 128});
  expect_error([&] { flare::make_params_varlen(q, pool, pool3, out, varlen); },
               FLARE_ERROR_INVALID_ARGUMENT, "v.shape[2] (3) must equal k.shape[2]");
  // Page size 0 is the library's to refuse.
  const TensorView empty_pages = flare::contiguous(addr(0x200000), DType::FP16, {40, 0, 2, 128});
  expect_error([&] { validate(flare::make_params_varlen(q, empty_pages, empty_pages, out, varlen)); },
               FLARE_ERROR_INVALID_ARGUMENT, "page_block_size (0)");
}

// ---------------------------------------------------------------------------------------------
// Params that build fine but break a library rule fail in validation with its status.

TEST(MakeParams, LibraryValidationStatusesSurface) {
  const Views t;
  flare::FlashAttnOptions bad_window;
  bad_window.window_left = -5;
  expect_error([&] { validate(flare::make_params(t.q, t.k, t.v, t.out, bad_window)); },
               FLARE_ERROR_INVALID_ARGUMENT, "window_left (-5)");

  flare::FlashAttnOptions bad_splits;
  bad_splits.num_splits = 500;
  expect_error([&] { validate(flare::make_params(t.q, t.k, t.v, t.out, bad_splits)); },
               FLARE_ERROR_INVALID_ARGUMENT, "num_splits (500)");

  Views odd = t;
  for (TensorView* v : {&odd.q, &odd.k, &odd.v, &odd.out}) {
    v->shape[3] = 12;
    v->stride[2] = 12;
  }
  // Head dim 12 with strides of 12 elements is a narrow launch (common/narrow.h): valid.
  validate(odd.make());

  Views misaligned = t;
  misaligned.k.data = reinterpret_cast<void*>(0x200009);  // tensors need 2-byte alignment
  expect_error([&] { validate(misaligned.make()); }, FLARE_ERROR_MISALIGNED, "k (");
}

// FP8 views: out's type is the call's dtype, FP8 k / v / q name their own type, and the
// descales map to their fields. The library validates them: an FP8 K/V call is valid, FP8
// prefill (FP8 q) is refused naming the type.
TEST(MakeParams, Fp8ViewsAndDescales) {
  Views t;
  t.k = flare::contiguous(t.k.data, DType::E4M3, {2, 32, 2, 64});
  t.v = flare::contiguous(t.v.data, DType::E4M3, {2, 32, 2, 64});
  t.out.dtype = t.q.dtype = DType::BF16;
  flare::FlashAttnOptions o;
  o.k_descale = {reinterpret_cast<const float*>(0x710000), 2, 1};
  o.v_descale = {reinterpret_cast<const float*>(0x710100), 0, 0};
  flare_mha_fwd_params p = flare::make_params(t.q, t.k, t.v, t.out, o);
  EXPECT_EQ(p.dtype, FLARE_DTYPE_BF16);
  EXPECT_EQ(p.kv_dtype, FLARE_DTYPE_E4M3);
  EXPECT_EQ(p.q_dtype, 0);
  EXPECT_EQ(p.k_descale, o.k_descale.data);
  EXPECT_EQ(p.k_descale_batch_stride, 2);
  EXPECT_EQ(p.k_descale_head_stride, 1);
  EXPECT_EQ(p.v_descale, o.v_descale.data);
  EXPECT_EQ(p.q_descale, nullptr);
  EXPECT_NO_THROW(validate(p));

  // FP8 prefill: q, k, v e4m3, out bf16.
  t.q = flare::contiguous(t.q.data, DType::E4M3, {2, 16, 8, 64});
  o.q_descale = {reinterpret_cast<const float*>(0x710200), 0, 0};
  p = flare::make_params(t.q, t.k, t.v, t.out, o);
  EXPECT_EQ(p.q_dtype, FLARE_DTYPE_E4M3);
  EXPECT_EQ(p.q_descale, o.q_descale.data);
#if FLARE_FP8_PREFILL
  EXPECT_NO_THROW(validate(p));  // the Hopper FP8 prefill kernel is in this build
#else
  expect_error([&] { validate(p); }, FLARE_ERROR_NOT_SUPPORTED, "q_dtype e4m3");
#endif

  // A missing descale is the library's error, naming the field.
  o.k_descale = {};
  expect_error([&] { validate(flare::make_params(t.q, t.k, t.v, t.out, o)); },
               FLARE_ERROR_INVALID_ARGUMENT, "k_descale is null");
}

TEST(Error, CheckCarriesStatusAndLastError) {
  EXPECT_NO_THROW(flare::check(FLARE_OK));
  const flare_status s = flare::fail(FLARE_ERROR_WORKSPACE_TOO_SMALL, "workspace_size (%d) is too small", 7);
  try {
    flare::check(s);
    ADD_FAILURE() << "check did not throw";
  } catch (const std::runtime_error& e) {
    const auto* fe = dynamic_cast<const flare::Error*>(&e);
    ASSERT_NE(fe, nullptr);
    EXPECT_EQ(fe->status(), FLARE_ERROR_WORKSPACE_TOO_SMALL);
    EXPECT_STREQ(e.what(), "workspace_size (7) is too small");
  }
  flare::clear_error();
  expect_error([] { flare::check(FLARE_ERROR_CUDA); }, FLARE_ERROR_CUDA, "CUDA error");
}

}  // namespace
