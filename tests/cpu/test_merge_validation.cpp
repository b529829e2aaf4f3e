// flare_merge_params: read_merge_params, validate_merge_params (statuses and messages) and the
// float64 CPU reference merge (src/reference/merge_reference.h). Validation never dereferences
// device memory, so the params hold fake, suitably aligned addresses; only the host arrays
// part_ptrs / lse_ptrs are read.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "api/error.h"
#include "api/merge_validate.h"
#include "flare/flare.h"
#include "reference/merge_reference.h"
#include "valid_params.h"

namespace {

const float kInf = std::numeric_limits<float>::infinity();

using flare_test::fake_ptr;

// 3 bf16 parts [2, 16, 4, 64] stacked with part_stride, lse [part][batch, heads, seqlen],
// fp16 out contiguous, merged lse [batch, heads, seqlen].
flare_merge_params base_params() {
  flare_merge_params p = flare_test::merge_params(3, 2, 16, 4, 64);
  p.out_dtype = FLARE_DTYPE_FP16;
  p.out_lse_row_stride = 1;
  p.out_lse_head_stride = 16;
  p.out_lse_batch_stride = 4 * 16;
  p.out_lse = fake_ptr<float>(0x400000);
  return p;
}

// Validates p; expects `status` and a message containing `needle`.
void expect_invalid(const flare_merge_params& p, flare_status status, const std::string& needle) {
  const flare_status st = flare::validate_merge_params(&p);
  EXPECT_EQ(st, status) << flare_last_error();
  EXPECT_NE(std::string(flare_last_error()).find(needle), std::string::npos)
      << "message: \"" << flare_last_error() << "\" lacks \"" << needle << "\"";
}

TEST(MergeValidation, InitSetsSizeAndZeroes) {
  flare_merge_params p;
  std::memset(&p, 0xAB, sizeof p);
  flare_merge_params_init(&p);
  EXPECT_EQ(p.struct_size, sizeof(flare_merge_params));
  EXPECT_EQ(p.num_parts, 0);
  EXPECT_EQ(p.part_ptrs, nullptr);
  EXPECT_EQ(p.out_lse, nullptr);
  EXPECT_EQ(sizeof(flare_merge_params) % 8, 0u);
  flare_merge_params_init(nullptr);  // no crash
}

TEST(MergeValidation, BaseParamsAreValid) {
  flare_merge_params p = base_params();
  EXPECT_EQ(flare::validate_merge_params(&p), FLARE_OK) << flare_last_error();
  p.out_lse = nullptr;  // optional
  EXPECT_EQ(flare::validate_merge_params(&p), FLARE_OK) << flare_last_error();
}

TEST(MergeValidation, PointerArraysAreValid) {
  flare_merge_params p = base_params();
  const void* parts[3] = {fake_ptr(0x10000), fake_ptr(0x20008), fake_ptr(0x30000)};
  const float* lses[3] = {fake_ptr<float>(0x40004), fake_ptr<float>(0x50000),
                          fake_ptr<float>(0x60000)};
  p.parts = nullptr;
  p.lse = nullptr;
  p.part_ptrs = parts;
  p.lse_ptrs = lses;
  EXPECT_EQ(flare::validate_merge_params(&p), FLARE_OK) << flare_last_error();
  // Mixed: pointer array for parts, base + stride for lse.
  p.lse_ptrs = nullptr;
  p.lse = fake_ptr<float>(0x70000);
  EXPECT_EQ(flare::validate_merge_params(&p), FLARE_OK) << flare_last_error();

  parts[1] = nullptr;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "part_ptrs[1] is null");
  parts[1] = fake_ptr(0x20004);  // bf16: groups of 4 elements are 8 bytes
  expect_invalid(p, FLARE_ERROR_MISALIGNED, "part_ptrs[1]");
  parts[1] = fake_ptr(0x20008);
  p.lse = nullptr;
  p.lse_ptrs = lses;
  lses[2] = fake_ptr<float>(0x60002);
  expect_invalid(p, FLARE_ERROR_MISALIGNED, "lse_ptrs[2]");
  lses[2] = nullptr;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "lse_ptrs[2] is null");
}

TEST(MergeValidation, PointerArrayLimit) {
  flare_merge_params p = base_params();
  std::vector<const void*> parts(FLARE_MERGE_MAX_PART_PTRS + 1, fake_ptr(0x10000));
  p.parts = nullptr;
  p.part_ptrs = parts.data();
  p.num_parts = FLARE_MERGE_MAX_PART_PTRS;
  EXPECT_EQ(flare::validate_merge_params(&p), FLARE_OK) << flare_last_error();
  p.num_parts = FLARE_MERGE_MAX_PART_PTRS + 1;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "FLARE_MERGE_MAX_PART_PTRS");
  // Base + stride has no such limit.
  p.part_ptrs = nullptr;
  p.parts = fake_ptr(0x100000);
  p.num_parts = 1000;
  p.out = fake_ptr(0x80000000);  // past the 1000 stacked parts
  EXPECT_EQ(flare::validate_merge_params(&p), FLARE_OK) << flare_last_error();
}

TEST(MergeValidation, CountsAndDtypes) {
  flare_merge_params p = base_params();
  p.num_parts = 0;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "num_parts (0) must be >= 1");
  p = base_params();
  p.part_dtype = 7;
  expect_invalid(p, FLARE_ERROR_UNSUPPORTED_DTYPE, "part_dtype (7)");
  p = base_params();
  p.out_dtype = -1;
  expect_invalid(p, FLARE_ERROR_UNSUPPORTED_DTYPE, "out_dtype (-1)");
  for (int pd : {FLARE_DTYPE_FP16, FLARE_DTYPE_BF16, FLARE_DTYPE_FP32})
    for (int od : {FLARE_DTYPE_FP16, FLARE_DTYPE_BF16, FLARE_DTYPE_FP32}) {
      p = base_params();
      p.part_dtype = pd;
      p.out_dtype = od;
      EXPECT_EQ(flare::validate_merge_params(&p), FLARE_OK) << pd << " " << od << ": "
                                                             << flare_last_error();
    }
}

TEST(MergeValidation, ExactlyOneSourceEach) {
  flare_merge_params p = base_params();
  const void* parts[3] = {fake_ptr(0x10000), fake_ptr(0x20000), fake_ptr(0x30000)};
  p.part_ptrs = parts;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "part_ptrs and parts are both set");
  p = base_params();
  p.parts = nullptr;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "part_ptrs and parts are both null");
  p = base_params();
  p.lse = nullptr;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "lse_ptrs and lse are both null");
  p = base_params();
  const float* lses[3] = {fake_ptr<float>(0x40000), fake_ptr<float>(0x50000),
                          fake_ptr<float>(0x60000)};
  p.lse_ptrs = lses;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "lse_ptrs and lse are both set");
}

TEST(MergeValidation, Alignment) {
  flare_merge_params p = base_params();
  p.parts = fake_ptr(0x100004);  // bf16 needs 8 bytes
  expect_invalid(p, FLARE_ERROR_MISALIGNED, "parts (");
  p = base_params();
  p.part_dtype = FLARE_DTYPE_FP32;
  p.parts = fake_ptr(0x100008);  // fp32 needs 16 bytes
  expect_invalid(p, FLARE_ERROR_MISALIGNED, "16-byte aligned");
  p = base_params();
  p.part_stride = 2 * 16 * 4 * 64 + 2;
  expect_invalid(p, FLARE_ERROR_MISALIGNED, "part_stride");
  p = base_params();
  p.part_stride = -4;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "part_stride (-4) must be >= 0");
  p = base_params();
  p.lse = fake_ptr<const float>(0x200002);
  expect_invalid(p, FLARE_ERROR_MISALIGNED, "lse (");
  p = base_params();
  p.lse_part_stride = -1;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "lse_part_stride (-1) must be >= 0");
  p = base_params();
  p.out = fake_ptr(0x300002);
  expect_invalid(p, FLARE_ERROR_MISALIGNED, "out (");
  p = base_params();
  p.out_lse = fake_ptr<float>(0x400001);
  expect_invalid(p, FLARE_ERROR_MISALIGNED, "out_lse (");
}

TEST(MergeValidation, Shapes) {
  flare_merge_params p = base_params();
  p.batch = 0;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "batch (0) must be >= 1");
  p = base_params();
  p.seqlen = -3;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "seqlen (-3) must be >= 1");
  p = base_params();
  p.num_heads = 0;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "num_heads (0) must be >= 1");
  for (int d : {0, 2, 6, 516, 1024}) {
    p = base_params();
    p.head_dim = d;
    expect_invalid(p, FLARE_ERROR_UNSUPPORTED_HEAD_DIM, "head_dim (" + std::to_string(d) + ")");
  }
  for (int d : {4, 12, 100, 512}) {
    p = base_params();
    p.head_dim = d;
    // out contiguous for this head dim (its rows and heads must not overlap).
    p.out_head_stride = d;
    p.out_row_stride = 4 * d;
    p.out_batch_stride = 16 * 4 * d;
    EXPECT_EQ(flare::validate_merge_params(&p), FLARE_OK) << d << ": " << flare_last_error();
  }
}

TEST(MergeValidation, Strides) {
  struct Case {
    int64_t flare_merge_params::*field;
    const char* name;
    bool vector;  // must be a multiple of 4 elements
    bool output;  // a stride of out / out_lse: 0 (or too small) makes entries overlap
  };
  const Case cases[] = {
      {&flare_merge_params::part_batch_stride, "part_batch_stride", true, false},
      {&flare_merge_params::part_row_stride, "part_row_stride", true, false},
      {&flare_merge_params::part_head_stride, "part_head_stride", true, false},
      {&flare_merge_params::out_batch_stride, "out_batch_stride", true, true},
      {&flare_merge_params::out_row_stride, "out_row_stride", true, true},
      {&flare_merge_params::out_head_stride, "out_head_stride", true, true},
      {&flare_merge_params::lse_batch_stride, "lse_batch_stride", false, false},
      {&flare_merge_params::lse_row_stride, "lse_row_stride", false, false},
      {&flare_merge_params::lse_head_stride, "lse_head_stride", false, false},
      {&flare_merge_params::out_lse_batch_stride, "out_lse_batch_stride", false, true},
      {&flare_merge_params::out_lse_row_stride, "out_lse_row_stride", false, true},
      {&flare_merge_params::out_lse_head_stride, "out_lse_head_stride", false, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    flare_merge_params p = base_params();
    p.*c.field = -8;
    expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, std::string(c.name) + " (-8) must be >= 0");
    p = base_params();
    p.*c.field = 6;  // any value for input lse strides; not a multiple of 4 for the others
    if (c.vector)
      expect_invalid(p, FLARE_ERROR_MISALIGNED, std::string(c.name) + " (6) is not a multiple");
    else if (c.output)  // rows of out_lse 6 apart: they now overlap its heads (16 apart)
      expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "of out_lse overlap");
    else
      EXPECT_EQ(flare::validate_merge_params(&p), FLARE_OK) << flare_last_error();
    p = base_params();
    p.*c.field = 0;  // inputs: broadcast; outputs: entries would overlap
    if (c.output)
      expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, std::string(c.name) + " (0) makes the");
    else
      EXPECT_EQ(flare::validate_merge_params(&p), FLARE_OK) << flare_last_error();
  }
  // An output stride of 0 is fine where its dimension has one entry.
  flare_merge_params one = base_params();
  one.batch = 1;
  one.out_batch_stride = one.out_lse_batch_stride = 0;
  EXPECT_EQ(flare::validate_merge_params(&one), FLARE_OK) << flare_last_error();
  // Rows packed tighter than a row of heads overlap; heads outermost is a valid layout.
  one = base_params();
  one.out_row_stride = 3 * 64;
  expect_invalid(one, FLARE_ERROR_INVALID_ARGUMENT,
                 "out_row_stride (192) makes the rows of out overlap: each spans 256 elements");
  one = base_params();
  one.out_head_stride = 2 * 16 * 64;  // [heads, batch, rows, d]
  one.out_batch_stride = 16 * 64;
  one.out_row_stride = 64;
  EXPECT_EQ(flare::validate_merge_params(&one), FLARE_OK) << flare_last_error();
  // Without out_lse its strides are not looked at.
  flare_merge_params p = base_params();
  p.out_lse = nullptr;
  p.out_lse_row_stride = -1;
  EXPECT_EQ(flare::validate_merge_params(&p), FLARE_OK) << flare_last_error();
}

TEST(MergeValidation, OutputsAndInPlace) {
  flare_merge_params p = base_params();
  p.out = nullptr;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "out is null");

  // out = part 1 (base + stride): allowed with the part's dtype and strides.
  p = base_params();
  p.out_dtype = FLARE_DTYPE_BF16;
  p.out = fake_ptr(0x100000 + 2 * p.part_stride);
  EXPECT_EQ(flare::validate_merge_params(&p), FLARE_OK) << flare_last_error();
  p.out_dtype = FLARE_DTYPE_FP16;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "out is part 1 in place but out_dtype (fp16)");
  p.out_dtype = FLARE_DTYPE_BF16;
  p.out_row_stride = 8 * 64;
  p.out_batch_stride = 16 * 8 * 64;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "out is part 1 in place but its strides");

  // out_lse = lse of part 2: same strides needed.
  p = base_params();
  p.out_lse = fake_ptr<float>(0x200000 + 4 * 2 * p.lse_part_stride);
  EXPECT_EQ(flare::validate_merge_params(&p), FLARE_OK) << flare_last_error();
  p.out_lse_head_stride = 32;
  p.out_lse_batch_stride = 4 * 32;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "out_lse is the lse of part 2 in place");

  // Pointer arrays: out = part_ptrs[0].
  p = base_params();
  const void* parts[3] = {fake_ptr(0x300000), fake_ptr(0x20000), fake_ptr(0x30000)};
  p.parts = nullptr;
  p.part_ptrs = parts;
  expect_invalid(p, FLARE_ERROR_INVALID_ARGUMENT, "out is part 0 in place but out_dtype (fp16)");
}

TEST(MergeValidation, ReadParams) {
  flare_merge_params full;
  EXPECT_EQ(flare::read_merge_params(nullptr, &full), FLARE_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flare_last_error()).find("params is null"), std::string::npos);

  flare_merge_params p = base_params();
  p.struct_size = 8;
  EXPECT_EQ(flare::read_merge_params(&p, &full), FLARE_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flare_last_error()).find("struct_size (8) is too small"),
            std::string::npos);
  p.struct_size = sizeof(flare_merge_params) - 4;
  EXPECT_EQ(flare::read_merge_params(&p, &full), FLARE_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flare_last_error()).find("not a multiple of 8"), std::string::npos);

  // An older caller without out_lse: the missing fields read as zero (no merged lse).
  p.struct_size = offsetof(flare_merge_params, out_lse);
  EXPECT_EQ(flare::read_merge_params(&p, &full), FLARE_OK);
  EXPECT_EQ(full.struct_size, sizeof(flare_merge_params));
  EXPECT_EQ(full.out_lse, nullptr);
  EXPECT_EQ(full.out_lse_row_stride, 0);
  EXPECT_EQ(full.head_dim, 64);
  EXPECT_EQ(flare::validate_merge_params(&full), FLARE_OK) << flare_last_error();

  // A newer caller's struct: accepted when the fields past the library's are zero, refused
  // (naming struct_size) when one is set.
  struct Bigger {
    flare_merge_params p;
    int64_t extra[2];
  } big{};
  big.p = base_params();
  big.p.struct_size = sizeof(Bigger);
  EXPECT_EQ(flare::read_merge_params(&big.p, &full), FLARE_OK) << flare_last_error();
  EXPECT_EQ(full.struct_size, sizeof(flare_merge_params));
  big.extra[1] = 1;
  EXPECT_EQ(flare::read_merge_params(&big.p, &full), FLARE_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flare_last_error()).find("struct_size (" + std::to_string(sizeof(Bigger)) +
                                                 ") is larger than"),
            std::string::npos)
      << flare_last_error();
}

// ---- CPU reference merge ----

// Attention of one query over keys with scores `s` and values `v` (d values per key), over
// the keys in [lo, hi): normalised output and lse. Empty range: lse -inf, out NaN (garbage).
void attend(const std::vector<double>& s, const std::vector<double>& v, int d, int lo, int hi,
            std::vector<float>& out, float& lse) {
  out.assign(d, std::numeric_limits<float>::quiet_NaN());
  if (lo >= hi) {
    lse = -kInf;
    return;
  }
  double mx = -INFINITY;
  for (int j = lo; j < hi; ++j) mx = std::max(mx, s[j]);
  double sum = 0;
  std::vector<double> acc(d, 0.0);
  for (int j = lo; j < hi; ++j) {
    const double w = std::exp(s[j] - mx);
    sum += w;
    for (int t = 0; t < d; ++t) acc[t] += w * v[size_t(j) * d + t];
  }
  for (int t = 0; t < d; ++t) out[t] = float(acc[t] / sum);
  lse = float(mx + std::log(sum));
}

TEST(MergeReference, SplitKeysEqualsFullSoftmax) {
  // One (batch, row, head) per query; 5 queries as rows, 12 keys split at 0 | 5 | 12 and an
  // empty part in between: the merge of the fp32 parts equals attention over all keys.
  const int rows = 5, keys = 12, d = 8, n = 3;
  const int cuts[n + 1] = {0, 5, 5, 12};
  std::mt19937 rng(7);
  std::normal_distribution<double> nd(0.0, 2.0);
  std::vector<float> parts(size_t(n) * rows * d), lses(size_t(n) * rows);
  std::vector<double> want(size_t(rows) * d), want_lse(rows);
  for (int i = 0; i < rows; ++i) {
    std::vector<double> s(keys), v(size_t(keys) * d);
    for (double& x : s) x = nd(rng);
    for (double& x : v) x = nd(rng);
    for (int k = 0; k < n; ++k) {
      std::vector<float> o;
      float l;
      attend(s, v, d, cuts[k], cuts[k + 1], o, l);
      for (int t = 0; t < d; ++t) parts[(size_t(k) * rows + i) * d + t] = o[t];
      lses[size_t(k) * rows + i] = l;
    }
    std::vector<float> o;
    float l;
    attend(s, v, d, 0, keys, o, l);
    for (int t = 0; t < d; ++t) want[size_t(i) * d + t] = o[t];
    want_lse[i] = l;
  }
  flare_merge_params p;
  flare_merge_params_init(&p);
  p.num_parts = n;
  p.part_dtype = p.out_dtype = FLARE_DTYPE_FP32;
  p.parts = parts.data();
  p.part_stride = int64_t(rows) * d;
  p.lse = lses.data();
  p.lse_part_stride = rows;
  p.batch = 1;
  p.seqlen = rows;
  p.num_heads = 1;
  p.head_dim = d;
  p.part_row_stride = p.out_row_stride = d;
  p.part_head_stride = p.out_head_stride = d;
  p.lse_row_stride = p.out_lse_row_stride = 1;
  std::vector<double> out(size_t(rows) * d), out_lse(rows);
  flare::ref::merge_attention_states(p, out.data(), out_lse.data());
  for (size_t e = 0; e < out.size(); ++e) EXPECT_NEAR(out[e], want[e], 1e-5) << e;
  for (int i = 0; i < rows; ++i) EXPECT_NEAR(out_lse[i], want_lse[i], 1e-5) << i;
}

TEST(MergeReference, EmptyPartsAndRows) {
  // 2 rows x 2 parts of fp16 given as pointer arrays, lse strided [row] with stride 3.
  const int d = 4;
  const uint16_t nan16 = 0x7E00;
  const uint16_t one = flare::ref::from_float(1.f, FLARE_DTYPE_FP16);
  const uint16_t two = flare::ref::from_float(2.f, FLARE_DTYPE_FP16);
  std::vector<uint16_t> a = {one, one, one, one, nan16, nan16, nan16, nan16};
  std::vector<uint16_t> b = {two, two, two, two, nan16, nan16, nan16, nan16};
  std::vector<float> la = {0.f, 0, 0, -kInf}, lb = {std::log(3.f), 0, 0, -kInf};
  const void* parts[2] = {a.data(), b.data()};
  const float* lses[2] = {la.data(), lb.data()};
  flare_merge_params p;
  flare_merge_params_init(&p);
  p.num_parts = 2;
  p.part_dtype = FLARE_DTYPE_FP16;
  p.out_dtype = FLARE_DTYPE_BF16;
  p.part_ptrs = parts;
  p.lse_ptrs = lses;
  p.batch = 1;
  p.seqlen = 2;
  p.num_heads = 1;
  p.head_dim = d;
  p.part_row_stride = p.out_row_stride = d;
  p.lse_row_stride = 3;
  p.out_lse_row_stride = 1;
  std::vector<double> out(2 * d), lse(2);
  flare::ref::merge_attention_states(p, out.data(), lse.data());
  // Row 0: weights 1/4 and 3/4 -> 1.75, lse = log(4).
  for (int t = 0; t < d; ++t) EXPECT_NEAR(out[t], 1.75, 1e-6);
  EXPECT_NEAR(lse[0], std::log(4.0), 1e-6);
  // Row 1: every part empty (NaN garbage never read): out 0, lse -inf.
  for (int t = 0; t < d; ++t) EXPECT_EQ(out[d + t], 0.0);
  EXPECT_TRUE(std::isinf(lse[1]) && lse[1] < 0);
}

}  // namespace
