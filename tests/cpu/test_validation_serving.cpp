// Validation of the serving fields (src/api/validate_serving.cpp): head dims up to 512 and
// head_dim_v, sinks, multimodal prefix ranges, paged KV in varlen and at any page size; the list
// of valid params the GPU kernels do not run yet; and the struct growth (older callers get the
// new fields as zero). Validation never dereferences device arrays: the params hold fake,
// suitably aligned addresses.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "api/error.h"
#include "api/validate.h"
#include "api/validate_serving.h"
#include "flare/flare.h"
#include "valid_params.h"

namespace {

using flare_test::fake_ptr;

// Dense fp16 batch: q [2, 64, 4, 64], k/v [2, 128, 2, 64], all contiguous.
flare_mha_fwd_params dense_base() {
  flare_mha_fwd_params p = flare_test::dense_fp16_params(2, 64, 128, 4, 2, 64);
  p.lse = fake_ptr<float>(0x500000);
  return p;
}

// Paged varlen: 3 sequences, q [total_q, 4, 64], K/V pools [40 pages, 16 rows, 2, 64], block
// table [3, 8], key counts from cu_seqlens_k.
flare_mha_fwd_params paged_varlen_base() {
  flare_mha_fwd_params p = flare_test::as_varlen(dense_base(), 3, 50, 128);
  p.k_batch_stride = p.v_batch_stride = 16 * 2 * 64;  // page stride
  p.block_table = fake_ptr<const int32_t>(0x700200);
  p.block_table_batch_stride = 8;
  p.page_block_size = 16;
  p.num_pages = 40;
  p.causal = 1;
  return p;
}

// Decode over a paged KV cache: q [4, 1, 4, 64], pools [64 pages, 16 rows, 2, 64].
flare_mha_fwd_params kv_paged_base() {
  return flare_test::as_paged_decode(dense_base(), 4, 256, 16, 16, 64);
}

flare_status intake(const flare_mha_fwd_params& params) {
  flare::clear_error();
  flare_mha_fwd_params full;
  const flare_status s = flare::read_params(&params, &full);
  if (s != FLARE_OK) return s;
  return flare::validate_params(&full);
}

using P = flare_mha_fwd_params;
using Mutation = std::function<void(P&)>;

struct Case {
  const char* name;
  std::function<P()> base;
  Mutation mutate;
  flare_status status;
  const char* message;  // a substring of flare_last_error()
};

std::string last_error() { return flare_last_error(); }

void expect_case(const Case& c) {
  P p = c.base();
  c.mutate(p);
  const flare_status s = intake(p);
  EXPECT_EQ(s, c.status) << c.name << ": " << flare_status_string(s) << ": " << last_error();
  EXPECT_NE(last_error().find(c.message), std::string::npos)
      << c.name << ": \"" << last_error() << "\" lacks \"" << c.message << "\"";
}

const auto INVALID = FLARE_ERROR_INVALID_ARGUMENT;
const auto MISALIGNED = FLARE_ERROR_MISALIGNED;
const auto BAD_HDIM = FLARE_ERROR_UNSUPPORTED_HEAD_DIM;
const auto NOT_YET = FLARE_ERROR_NOT_SUPPORTED;

TEST(ValidationServing, BadInput) {
  const Case cases[] = {
      // head dims
      {"head_dim_0", dense_base, [](P& p) { p.head_dim = 0; }, BAD_HDIM, "head_dim (0)"},
      {"head_dim_513", dense_base, [](P& p) { p.head_dim = 513; }, BAD_HDIM,
       "head_dim (513) is not supported: it must be in [1, 512]"},
      {"head_dim_negative", dense_base, [](P& p) { p.head_dim = -8; }, BAD_HDIM, "head_dim (-8)"},
      {"pair_128_64", dense_base, [](P& p) { p.head_dim = 128, p.head_dim_v = 64; }, BAD_HDIM,
       "head_dim_v (64) with head_dim (128)"},
      {"pair_64_128", dense_base, [](P& p) { p.head_dim_v = 128; }, BAD_HDIM,
       "head_dim_v (128) with head_dim (64)"},
      {"pair_192_96", dense_base, [](P& p) { p.head_dim = 192, p.head_dim_v = 96; }, BAD_HDIM,
       "head_dim_v (96) with head_dim (192)"},
      {"head_dim_v_negative", dense_base, [](P& p) { p.head_dim_v = -1; }, BAD_HDIM,
       "head_dim_v (-1)"},
      // sink
      {"sink_misaligned", dense_base, [](P& p) { p.sink = fake_ptr<const float>(0x900002); },
       MISALIGNED, "sink"},
      // mm prefix ranges
      {"ranges_misaligned", dense_base,
       [](P& p) {
         p.mm_prefix_ranges = fake_ptr<const int32_t>(0x900001);
         p.max_mm_prefix_ranges = 1, p.mm_prefix_ranges_batch_stride = 2;
       },
       MISALIGNED, "mm_prefix_ranges"},
      {"ranges_max_negative", dense_base,
       [](P& p) {
         p.mm_prefix_ranges = fake_ptr<const int32_t>(0x900000);
         p.max_mm_prefix_ranges = -1;
       },
       INVALID, "max_mm_prefix_ranges (-1) must be >= 0"},
      {"ranges_stride_short", dense_base,
       [](P& p) {
         p.mm_prefix_ranges = fake_ptr<const int32_t>(0x900000);
         p.max_mm_prefix_ranges = 3, p.mm_prefix_ranges_batch_stride = 5;
       },
       INVALID, "mm_prefix_ranges_batch_stride (5) must be >= 2 * max_mm_prefix_ranges (6)"},
      {"ranges_stride_negative", dense_base,
       [](P& p) {
         p.mm_prefix_ranges = fake_ptr<const int32_t>(0x900000);
         p.mm_prefix_ranges_batch_stride = -2;
       },
       INVALID, "mm_prefix_ranges_batch_stride (-2)"},
      {"ranges_stride_overflow", dense_base,
       [](P& p) {
         p.mm_prefix_ranges = fake_ptr<const int32_t>(0x900000);
         p.max_mm_prefix_ranges = 1, p.mm_prefix_ranges_batch_stride = int64_t(1) << 62;
       },
       INVALID, "mm_prefix_ranges spans more than 2^61"},
      {"ranges_max_without_pointer", dense_base, [](P& p) { p.max_mm_prefix_ranges = 2; },
       INVALID, "max_mm_prefix_ranges (2) is set but mm_prefix_ranges is null"},
      // paged KV
      {"block_table_without_cache_or_varlen", dense_base,
       [](P& p) {
         p.block_table = fake_ptr<const int32_t>(0x700200);
         p.page_block_size = 16, p.block_table_batch_stride = 8, p.num_pages = 4;
       },
       INVALID, "block_table requires cache_seqlens (KV cache) or cu_seqlens_q (paged varlen)"},
      {"paged_varlen_page_size_0", paged_varlen_base, [](P& p) { p.page_block_size = 0; },
       INVALID, "page_block_size (0) must be >= 1"},
      {"kv_page_size_0", kv_paged_base, [](P& p) { p.page_block_size = 0; }, INVALID,
       "page_block_size (0) must be >= 1"},
      {"page_size_over_2_30", kv_paged_base, [](P& p) { p.page_block_size = (1 << 30) + 1; },
       INVALID, "page_block_size (1073741825) must be <= 1073741824"},
      {"paged_varlen_misaligned_table", paged_varlen_base,
       [](P& p) { p.block_table = fake_ptr<const int32_t>(0x700203); }, MISALIGNED,
       "block_table"},
      {"paged_varlen_table_stride_0", paged_varlen_base,
       [](P& p) { p.block_table_batch_stride = 0; }, INVALID, "block_table_batch_stride (0)"},
      {"paged_varlen_num_pages_0", paged_varlen_base, [](P& p) { p.num_pages = 0; }, INVALID,
       "num_pages (0) must be >= 1"},
      {"paged_varlen_no_key_counts", paged_varlen_base, [](P& p) { p.cu_seqlens_k = nullptr; },
       INVALID, "cu_seqlens_k is null but cu_seqlens_q is set"},
      {"unpaged_varlen_seqused_only", paged_varlen_base,
       [](P& p) {
         p.block_table = nullptr, p.cu_seqlens_k = nullptr;
         p.seqused_k = fake_ptr<const int32_t>(0x600200);
       },
       INVALID, "cu_seqlens_k is null but cu_seqlens_q is set"},
  };
  for (const Case& c : cases) expect_case(c);
}

// Valid params the kernels do not run yet: the status and the message naming the feature.
TEST(ValidationServing, NotYetSupported) {
  const Case cases[] = {
      {"head_dim_v_192_128", dense_base, [](P& p) { p.head_dim = 192, p.head_dim_v = 128; },
       NOT_YET, "head_dim_v (128) != head_dim (192)"},
      // Head dims keep the status they had before 1..512 became valid input.
      {"head_dim_512", dense_base, [](P& p) { p.head_dim = 512; }, BAD_HDIM,
       "head_dim (512) is not supported by the GPU kernels yet"},
  };
  for (const Case& c : cases) expect_case(c);
}

// What stays valid: empty serving fields, a range pointer with 0 ranges per sequence, head_dim_v
// equal to head_dim; paged KV at any page size >= 1, in KV-cache and in varlen mode (key counts
// from cu_seqlens_k or from seqused_k alone); and what the kernels run: sinks and prefix ranges.
TEST(ValidationServing, StillAccepted) {
  const Mutation ok[] = {
      [](P&) {},
      [](P& p) { p.head_dim_v = 64; },
      [](P& p) { p.mm_prefix_ranges = fake_ptr<const int32_t>(0x900000); },
      [](P& p) {
        p.mm_prefix_ranges = fake_ptr<const int32_t>(0x900000);
        p.mm_prefix_ranges_batch_stride = 6;
      },
      [](P& p) { p.sink = fake_ptr<const float>(0x900000); },
      [](P& p) {
        p.mm_prefix_ranges = fake_ptr<const int32_t>(0x900000);
        p.max_mm_prefix_ranges = 2, p.mm_prefix_ranges_batch_stride = 4;
      },
      [](P& p) {
        p.sink = fake_ptr<const float>(0x900000);
        p.mm_prefix_ranges = fake_ptr<const int32_t>(0x900100);
        p.max_mm_prefix_ranges = 3, p.mm_prefix_ranges_batch_stride = 8;
      },
  };
  for (const Mutation& m : ok) {
    P p = dense_base();
    m(p);
    EXPECT_EQ(intake(p), FLARE_OK) << last_error();
  }
  for (int page : {1, 3, 16, 17, 48, 256, 1000}) {
    P p = kv_paged_base();
    p.page_block_size = page;
    p.k_batch_stride = p.v_batch_stride = int64_t(page) * p.k_row_stride;  // whole pages
    EXPECT_EQ(intake(p), FLARE_OK) << "kv page " << page << ": " << last_error();
    P v = paged_varlen_base();
    v.page_block_size = page;
    v.k_batch_stride = v.v_batch_stride = int64_t(page) * v.k_row_stride;
    EXPECT_EQ(intake(v), FLARE_OK) << "varlen page " << page << ": " << last_error();
    v.cu_seqlens_k = nullptr, v.seqused_k = fake_ptr<const int32_t>(0x600200);
    EXPECT_EQ(intake(v), FLARE_OK) << "varlen seqused_k page " << page << ": " << last_error();
  }
}

// Every head dim in [1, 512] and the accepted pairs pass the field rules; exactly the multiples
// of 8 in [8, 256] with equal V dims pass the not-yet list.
TEST(ValidationServing, HeadDimRangeAndKernelSet) {
  for (int d = 1; d <= 512; ++d) {
    P p = dense_base();
    p.head_dim = d;
    p.q_head_stride = p.out_head_stride = p.k_head_stride = p.v_head_stride = (d + 7) / 8 * 8;
    EXPECT_EQ(flare::validate_serving_fields(p), FLARE_OK) << d << ": " << last_error();
    const bool kernel = d <= 256;  // narrow launches where d is not a multiple of 8
    EXPECT_EQ(flare::serving_features_not_yet_supported(p) == FLARE_OK, kernel) << d;
    p.head_dim_v = d;
    EXPECT_EQ(flare::validate_serving_fields(p), FLARE_OK) << d;
  }
  P p = dense_base();
  p.head_dim = 192;
  p.head_dim_v = 128;
  EXPECT_EQ(flare::validate_serving_fields(p), FLARE_OK) << last_error();
}

// Rejections never read the device arrays: the pointers are fake, and every failing call leaves
// a message.
TEST(ValidationServing, EveryRejectionHasAMessage) {
  P p = paged_varlen_base();
  p.sink = fake_ptr<const float>(0x10);
  p.mm_prefix_ranges = fake_ptr<const int32_t>(0x22);
  p.max_mm_prefix_ranges = 1, p.mm_prefix_ranges_batch_stride = 2;
  EXPECT_EQ(intake(p), MISALIGNED);
  EXPECT_NE(last_error().find("mm_prefix_ranges"), std::string::npos) << last_error();
}

// The serving fields start the 8-byte group after p_dropout's: a caller compiled against the
// older struct (ending there) never covers them, whatever its padding bytes hold, and gets them
// as zero.
TEST(ValidationServing, OlderStructGetsServingFieldsZero) {
  static_assert(offsetof(flare_mha_fwd_params, sink) ==
                    (offsetof(flare_mha_fwd_params, p_dropout) + sizeof(float) + 7) / 8 * 8,
                "sink starts the 8-byte group after p_dropout's");
  static_assert(offsetof(flare_mha_fwd_params, head_dim_v) >
                    offsetof(flare_mha_fwd_params, max_mm_prefix_ranges),
                "head_dim_v follows max_mm_prefix_ranges");
  static_assert(FLARE_MHA_FWD_PARAMS_VERSION >= 2, "the serving fields came with version 2");
  const size_t older_size = offsetof(flare_mha_fwd_params, sink);
  P src = dense_base();
  src.struct_size = uint32_t(older_size);
  // The older caller's buffer: its fields, then its padding holding garbage, then memory that
  // is not its struct at all (garbage too: read_params must not read it).
  std::vector<unsigned char> buffer(sizeof(P), 0xCD);
  std::memcpy(buffer.data(), &src, offsetof(flare_mha_fwd_params, p_dropout) + sizeof(float));
  P full;
  std::memset(&full, 0xAB, sizeof full);
  ASSERT_EQ(flare::read_params(reinterpret_cast<const P*>(buffer.data()), &full), FLARE_OK)
      << last_error();
  EXPECT_EQ(full.sink, nullptr);
  EXPECT_EQ(full.mm_prefix_ranges, nullptr);
  EXPECT_EQ(full.mm_prefix_ranges_batch_stride, 0);
  EXPECT_EQ(full.max_mm_prefix_ranges, 0);
  EXPECT_EQ(full.head_dim_v, 0);
  EXPECT_EQ(full.head_dim, 64);
  EXPECT_EQ(flare::validate_params(&full), FLARE_OK) << last_error();
}

}  // namespace
