// Parameter validation (src/api/validate.cpp), read_params, status strings and the thread-local
// error state. Validation never dereferences tensors or device arrays, so the params below
// hold fake, suitably aligned addresses.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "api/error.h"
#include "api/validate.h"
#include "flare/flare.h"
#include "valid_params.h"

namespace {

using flare_test::fake_ptr;

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

// Dense fp16 batch: q [2, 128, 8, 64], k/v [2, 256, 2, 64] (GQA 4:1), all contiguous.
flare_mha_fwd_params dense_base() {
  flare_mha_fwd_params p = flare_test::dense_fp16_params(2, 128, 256, 8, 2, 64);
  p.lse = fake_ptr<float>(0x500000);
  return p;
}

// Varlen bf16: 3 sequences packed as q [total_q, 8, 64], k/v [total_k, 2, 64]; the padded
// seqlen and batch-stride fields are left 0 (ignored).
flare_mha_fwd_params varlen_base() {
  flare_mha_fwd_params p = flare_test::as_varlen(dense_base(), 3, 100, 300);
  p.dtype = FLARE_DTYPE_BF16;
  p.seqused_k = fake_ptr<const int32_t>(0x600200);
  p.causal = 1;
  return p;
}

// Decode into a paged KV cache with append and rotary: q [4, 1, 8, 64], K/V pools
// [64 pages, 256 rows, 2, 64], block table [4, 4] (capacity 1024 rows per sequence).
flare_mha_fwd_params kv_paged_base() {
  flare_mha_fwd_params p = flare_test::as_paged_decode(dense_base(), 4, 1024, 256, 4, 64);
  p.leftpad_k = fake_ptr<const int32_t>(0x700100);
  p.k_new = fake_ptr(0x800000);
  p.v_new = fake_ptr(0x900000);
  p.seqlen_new = 1;
  p.k_new_head_stride = p.v_new_head_stride = 64;
  p.k_new_row_stride = p.v_new_row_stride = 2 * 64;
  p.k_new_batch_stride = p.v_new_batch_stride = 2 * 64;
  p.rotary_cos = fake_ptr(0xA00000);
  p.rotary_sin = fake_ptr(0xB00000);
  p.rotary_dim = 64;
  p.rotary_max_positions = 4096;
  p.rotary_interleaved = 1;
  p.causal = 1;
  return p;
}

// Unpaged cache [8 slots, 512 rows, 2, 64] addressed through cache_batch_idx, with append.
flare_mha_fwd_params kv_unpaged_base() {
  flare_mha_fwd_params p = kv_paged_base();
  p.block_table = nullptr;
  p.block_table_batch_stride = 0;
  p.page_block_size = 0;
  p.num_pages = 0;
  p.rotary_cos = p.rotary_sin = nullptr;
  p.rotary_dim = 0;
  p.rotary_max_positions = 0;
  p.seqlen_k = 512;
  p.k_batch_stride = p.v_batch_stride = 512 * 2 * 64;
  p.cache_batch_idx = fake_ptr<const int32_t>(0x700300);
  return p;
}

enum class Base { Dense, Varlen, KvPaged, KvUnpaged };

flare_mha_fwd_params make_base(Base b) {
  switch (b) {
    case Base::Dense: return dense_base();
    case Base::Varlen: return varlen_base();
    case Base::KvPaged: return kv_paged_base();
    case Base::KvUnpaged: return kv_unpaged_base();
  }
  return dense_base();
}

using Mutation = std::function<void(flare_mha_fwd_params&)>;

// Runs params through the library's intake path: read_params, then validate_params.
flare_status intake(const flare_mha_fwd_params& params) {
  flare::clear_error();
  flare_mha_fwd_params full;
  const flare_status s = flare::read_params(&params, &full);
  if (s != FLARE_OK) return s;
  return flare::validate_params(&full);
}

// ---------------------------------------------------------------------------------------------
// Valid inputs.

struct GoodCase {
  std::string name;
  Base base;
  Mutation mutate;
};

void PrintTo(const GoodCase& c, std::ostream* os) { *os << c.name; }

std::vector<GoodCase> good_cases() {
  auto none = [](flare_mha_fwd_params&) {};
  return {
      {"dense", Base::Dense, none},
      {"varlen", Base::Varlen, none},
      {"kv_paged_rotary_append", Base::KvPaged, none},
      {"kv_unpaged_cache_batch_idx", Base::KvUnpaged, none},
      {"kv_without_append", Base::KvUnpaged,
       [](flare_mha_fwd_params& p) { p.k_new = p.v_new = nullptr; p.seqlen_new = 0; }},
      {"bf16", Base::Dense, [](flare_mha_fwd_params& p) { p.dtype = FLARE_DTYPE_BF16; }},
      {"lse_absent", Base::Dense, [](flare_mha_fwd_params& p) { p.lse = nullptr; }},
      {"batch_one_zero_batch_stride", Base::Dense,
       [](flare_mha_fwd_params& p) {
         p.batch = 1;
         p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = p.out_batch_stride = 0;
       }},
      {"seqlen_k_zero", Base::Dense, [](flare_mha_fwd_params& p) { p.seqlen_k = 0; }},
      {"head_dim_8", Base::Dense, [](flare_mha_fwd_params& p) { p.head_dim = 8; }},
      // Narrow tensors (common/narrow.h): head dims that are not multiples of 8, strides of any
      // element count, bases aligned to one element only.
      {"head_dim_4", Base::Dense, [](flare_mha_fwd_params& p) { p.head_dim = 4; }},
      {"head_dim_59_contiguous", Base::Dense,
       [](flare_mha_fwd_params& p) {
         p.head_dim = 59;
         p.q_head_stride = p.k_head_stride = p.v_head_stride = p.out_head_stride = 59;
         p.q_row_stride = p.out_row_stride = 8 * 59;
         p.k_row_stride = p.v_row_stride = 2 * 59;
         p.q_batch_stride = p.out_batch_stride = 128 * 8 * 59;
         p.k_batch_stride = p.v_batch_stride = 256 * 2 * 59;
       }},
      {"head_dim_100_padded", Base::Dense,
       [](flare_mha_fwd_params& p) {
         p.head_dim = 100;
         p.out_head_stride = 103;
         p.out_row_stride = 8 * 103 + 1;
         p.out_batch_stride = 128 * (8 * 103 + 1);
       }},
      {"strides_not_multiple_of_8", Base::Dense,
       [](flare_mha_fwd_params& p) {
         p.k_row_stride = 131;
         p.v_head_stride = 65;
         p.v_row_stride = 2 * 65 + 3;
         p.q_batch_stride += 1;
       }},
      {"bases_element_aligned", Base::Dense,
       [](flare_mha_fwd_params& p) {
         p.q = static_cast<const char*>(p.q) + 2;
         p.k = static_cast<const char*>(p.k) + 6;
         p.v = static_cast<const char*>(p.v) + 10;
         p.out = static_cast<char*>(p.out) + 14;
       }},
      {"kv_append_narrow", Base::KvPaged,
       [](flare_mha_fwd_params& p) {
         p.k_new = static_cast<const char*>(p.k_new) + 2;
         p.v_new_row_stride += 3;
       }},
      {"head_dim_200_padded", Base::Dense,
       [](flare_mha_fwd_params& p) {
         p.head_dim = 200;
         p.out_head_stride = 200;
         p.out_row_stride = 8 * 200;
         p.out_batch_stride = 128 * 8 * 200;
       }},
      {"head_dim_256", Base::Dense,
       [](flare_mha_fwd_params& p) {
         p.head_dim = 256;
         p.out_head_stride = 256;
         p.out_row_stride = 8 * 256;
         p.out_batch_stride = 128 * 8 * 256;
       }},
      // Read-only inputs may overlap: one K/V for every batch entry, one q row for all heads.
      {"k_v_broadcast_over_batch", Base::Dense,
       [](flare_mha_fwd_params& p) { p.k_batch_stride = p.v_batch_stride = 0; }},
      {"q_broadcast_over_heads", Base::Dense, [](flare_mha_fwd_params& p) { p.q_head_stride = 0; }},
      // Outputs may have gaps and any nesting order: heads outermost, rows padded.
      {"out_heads_outermost", Base::Dense,
       [](flare_mha_fwd_params& p) {
         p.out_row_stride = 64;
         p.out_batch_stride = 128 * 64;
         p.out_head_stride = 2 * 128 * 64;
       }},
      {"out_rows_padded", Base::Dense,
       [](flare_mha_fwd_params& p) {
         p.out_row_stride = 8 * 64 + 64;
         p.out_batch_stride = 128 * (8 * 64 + 64);
       }},
      {"varlen_out_heads_outer", Base::Varlen,
       [](flare_mha_fwd_params& p) {
         p.out_row_stride = 64;
         p.out_head_stride = int64_t(1) << 24;  // total rows unknown on the host: accepted
       }},
      {"mha_equal_heads", Base::Dense, [](flare_mha_fwd_params& p) { p.num_heads_k = 8; }},
      {"softcap_with_alibi", Base::Dense,
       [](flare_mha_fwd_params& p) {
         p.softcap = 30.f;
         p.alibi_slopes = fake_ptr<const float>(0xC00000);
         p.alibi_batch_stride = 8;
       }},
      {"explicit_scale_and_windows", Base::Dense,
       [](flare_mha_fwd_params& p) {
         p.softmax_scale = 0.125f;
         p.window_left = 0;
         p.window_right = 16;
       }},
      {"negative_zero_dropout", Base::Dense, [](flare_mha_fwd_params& p) { p.p_dropout = -0.f; }},
      {"varlen_ignores_seqlens", Base::Varlen,
       [](flare_mha_fwd_params& p) { p.seqlen_q = -5; p.seqlen_k = -5; }},
      {"varlen_max_seqlen_k_zero", Base::Varlen, [](flare_mha_fwd_params& p) { p.max_seqlen_k = 0; }},
      {"seqused_k_padded_batch", Base::Dense,
       [](flare_mha_fwd_params& p) { p.seqused_k = fake_ptr<const int32_t>(0x600200); }},
      {"kv_rotary_half", Base::KvPaged,
       [](flare_mha_fwd_params& p) { p.rotary_dim = 2; p.rotary_interleaved = 0; }},
      {"kv_seqlen_new_equals_capacity", Base::KvUnpaged,
       [](flare_mha_fwd_params& p) { p.seqlen_new = 512; }},
      {"num_splits_max", Base::Dense, [](flare_mha_fwd_params& p) { p.num_splits = 128; }},
      {"workspace_given", Base::Dense,
       [](flare_mha_fwd_params& p) { p.workspace = fake_ptr(0xD00000); p.workspace_size = 4096; }},
      {"workspace_without_size", Base::Dense,
       [](flare_mha_fwd_params& p) { p.workspace = fake_ptr(0xD00000); }},
  };
}

class ValidInput : public ::testing::TestWithParam<GoodCase> {};

TEST_P(ValidInput, Passes) {
  const GoodCase& c = GetParam();
  flare_mha_fwd_params p = make_base(c.base);
  c.mutate(p);
  EXPECT_EQ(intake(p), FLARE_OK) << flare_last_error();
}

INSTANTIATE_TEST_SUITE_P(Table, ValidInput, ::testing::ValuesIn(good_cases()),
                         [](const ::testing::TestParamInfo<GoodCase>& row) {
                           return row.param.name;
                         });

// ---------------------------------------------------------------------------------------------
// Invalid inputs: one row per rule and field.

struct BadCase {
  std::string name;
  Base base;
  Mutation mutate;
  flare_status status;
  std::string message;  // must appear in flare_last_error()
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

using Stride = int64_t flare_mha_fwd_params::*;

// Rows for the three strides of one tensor: negative (invalid). Any non-negative stride is
// valid (a stride that is not a multiple of 8 makes the launch narrow: common/narrow.h).
void add_stride_rows(std::vector<BadCase>& rows, Base base, const std::string& tensor,
                     Stride batch, Stride row, Stride head) {
  const std::pair<const char*, Stride> strides[] = {{"batch", batch}, {"row", row}, {"head", head}};
  for (const auto& s : strides) {
    const std::string field = tensor + "_" + s.first + "_stride";
    const Stride member = s.second;
    rows.push_back({field + "_negative", base, [member](flare_mha_fwd_params& p) { p.*member = -64; },
                    FLARE_ERROR_INVALID_ARGUMENT, field + " (-64)"});
  }
}

using Ptr = const void* flare_mha_fwd_params::*;

std::vector<BadCase> bad_cases() {
  using P = flare_mha_fwd_params;
  const auto INVALID = FLARE_ERROR_INVALID_ARGUMENT;
  const auto MISALIGNED = FLARE_ERROR_MISALIGNED;
  const auto NOT_SUPPORTED = FLARE_ERROR_NOT_SUPPORTED;
  const auto BAD_HDIM = FLARE_ERROR_UNSUPPORTED_HEAD_DIM;
  std::vector<BadCase> rows = {
      // dtype
      {"dtype_2", Base::Dense, [](P& p) { p.dtype = 2; }, FLARE_ERROR_UNSUPPORTED_DTYPE, "dtype (2)"},
      {"dtype_negative", Base::Dense, [](P& p) { p.dtype = -1; }, FLARE_ERROR_UNSUPPORTED_DTYPE,
       "dtype (-1)"},
      // shapes
      {"batch_zero", Base::Dense, [](P& p) { p.batch = 0; }, INVALID, "batch (0) must be >= 1"},
      {"batch_negative", Base::Dense, [](P& p) { p.batch = -3; }, INVALID, "batch (-3)"},
      {"varlen_batch_zero", Base::Varlen, [](P& p) { p.batch = 0; }, INVALID, "batch (0)"},
      {"seqlen_q_zero", Base::Dense, [](P& p) { p.seqlen_q = 0; }, INVALID, "seqlen_q (0) must be >= 1"},
      {"seqlen_k_negative", Base::Dense, [](P& p) { p.seqlen_k = -1; }, INVALID,
       "seqlen_k (-1) must be >= 0"},
      {"num_heads_zero", Base::Dense, [](P& p) { p.num_heads = 0; }, INVALID, "num_heads (0)"},
      {"num_heads_k_zero", Base::Dense, [](P& p) { p.num_heads_k = 0; }, INVALID, "num_heads_k (0)"},
      {"num_heads_not_multiple", Base::Dense, [](P& p) { p.num_heads = 12; p.num_heads_k = 5; },
       INVALID, "num_heads (12) is not a multiple of num_heads_k (5)"},
      {"num_heads_k_larger", Base::Dense, [](P& p) { p.num_heads = 2; p.num_heads_k = 8; }, INVALID,
       "num_heads (2) is not a multiple of num_heads_k (8)"},
      {"head_dim_zero", Base::Dense, [](P& p) { p.head_dim = 0; }, BAD_HDIM, "head_dim (0)"},
      {"head_dim_264", Base::Dense, [](P& p) { p.head_dim = 264; }, BAD_HDIM, "head_dim (264)"},
      {"head_dim_negative", Base::Dense, [](P& p) { p.head_dim = -64; }, BAD_HDIM, "head_dim (-64)"},
      // scalar options
      {"softmax_scale_negative", Base::Dense, [](P& p) { p.softmax_scale = -1.f; }, INVALID,
       "softmax_scale (-1) must be finite and >= 0"},
      {"softmax_scale_nan", Base::Dense, [](P& p) { p.softmax_scale = kNaN; }, INVALID,
       "softmax_scale ("},
      {"softmax_scale_inf", Base::Dense, [](P& p) { p.softmax_scale = kInf; }, INVALID,
       "softmax_scale (inf)"},
      {"softcap_negative", Base::Dense, [](P& p) { p.softcap = -30.f; }, INVALID, "softcap (-30)"},
      {"softcap_inf", Base::Dense, [](P& p) { p.softcap = kInf; }, INVALID, "softcap (inf)"},
      {"softcap_nan", Base::Dense, [](P& p) { p.softcap = kNaN; }, INVALID, "softcap ("},
      {"causal_2", Base::Dense, [](P& p) { p.causal = 2; }, INVALID, "causal (2) must be 0 or 1"},
      {"causal_negative", Base::Dense, [](P& p) { p.causal = -1; }, INVALID, "causal (-1)"},
      {"window_left_below_minus_one", Base::Dense, [](P& p) { p.window_left = -2; }, INVALID,
       "window_left (-2) must be >= -1"},
      {"window_right_below_minus_one", Base::Dense, [](P& p) { p.window_right = -5; }, INVALID,
       "window_right (-5)"},
      {"alibi_slopes_misaligned", Base::Dense,
       [](P& p) { p.alibi_slopes = fake_ptr<const float>(0xC00002); }, MISALIGNED, "alibi_slopes"},
      {"alibi_batch_stride_negative", Base::Dense,
       [](P& p) {
         p.alibi_slopes = fake_ptr<const float>(0xC00000);
         p.alibi_batch_stride = -8;
       },
       INVALID, "alibi_batch_stride (-8)"},
      // overlapping outputs
      {"out_rows_overlap", Base::Dense, [](P& p) { p.out_row_stride = 64; }, INVALID,
       "out_row_stride (64) makes the rows of out overlap: each spans 512 elements"},
      {"out_heads_overlap", Base::Dense, [](P& p) { p.out_head_stride = 32; }, INVALID,
       "out_head_stride (32) makes the heads of out overlap: each spans 64 elements"},
      {"out_head_stride_zero", Base::Dense, [](P& p) { p.out_head_stride = 0; }, INVALID,
       "out_head_stride (0) makes the heads of out overlap"},
      {"out_batches_overlap", Base::Dense, [](P& p) { p.out_batch_stride = 8 * 64; }, INVALID,
       "out_batch_stride (512) makes the batch entries of out overlap"},
      {"varlen_out_rows_overlap", Base::Varlen, [](P& p) { p.out_row_stride = 8; }, INVALID,
       "out_row_stride (8) makes the rows of out overlap"},
      {"kv_append_cache_rows_overlap", Base::KvUnpaged, [](P& p) { p.k_row_stride = 64; }, INVALID,
       "k_row_stride (64) makes the rows of the K cache k overlap"},
      {"kv_append_pages_overlap", Base::KvPaged, [](P& p) { p.v_batch_stride = 128; }, INVALID,
       "v_batch_stride (128) makes the cache entries of the V cache v overlap"},
      {"p_dropout_0_1", Base::Dense, [](P& p) { p.p_dropout = 0.1f; }, NOT_SUPPORTED,
       "p_dropout (0.1) is not supported: flare implements inference attention without dropout"},
      {"p_dropout_negative", Base::Dense, [](P& p) { p.p_dropout = -0.5f; }, NOT_SUPPORTED,
       "p_dropout (-0.5)"},
      {"p_dropout_nan", Base::Dense, [](P& p) { p.p_dropout = kNaN; }, NOT_SUPPORTED, "p_dropout ("},
      {"lse_misaligned", Base::Dense, [](P& p) { p.lse = fake_ptr<float>(0x500002); }, MISALIGNED,
       "lse"},
      // variable length
      {"cu_seqlens_q_without_k", Base::Dense,
       [](P& p) { p.cu_seqlens_q = fake_ptr<const int32_t>(0x600000); p.max_seqlen_q = 8; }, INVALID,
       "cu_seqlens_k is null but cu_seqlens_q is set"},
      {"cu_seqlens_k_without_q", Base::Dense,
       [](P& p) { p.cu_seqlens_k = fake_ptr<const int32_t>(0x600000); }, INVALID,
       "cu_seqlens_q is null but cu_seqlens_k is set"},
      {"varlen_cu_seqlens_q_only", Base::Varlen, [](P& p) { p.cu_seqlens_k = nullptr; }, INVALID,
       "cu_seqlens_k is null"},
      {"max_seqlen_q_zero", Base::Varlen, [](P& p) { p.max_seqlen_q = 0; }, INVALID,
       "max_seqlen_q (0) must be set with cu_seqlens_q"},
      {"max_seqlen_q_negative", Base::Varlen, [](P& p) { p.max_seqlen_q = -1; }, INVALID,
       "max_seqlen_q (-1)"},
      {"max_seqlen_k_negative", Base::Varlen, [](P& p) { p.max_seqlen_k = -1; }, INVALID,
       "max_seqlen_k (-1)"},
      {"cu_seqlens_q_misaligned", Base::Varlen,
       [](P& p) { p.cu_seqlens_q = fake_ptr<const int32_t>(0x600001); }, MISALIGNED, "cu_seqlens_q"},
      {"cu_seqlens_k_misaligned", Base::Varlen,
       [](P& p) { p.cu_seqlens_k = fake_ptr<const int32_t>(0x600102); }, MISALIGNED, "cu_seqlens_k"},
      {"seqused_k_misaligned", Base::Varlen,
       [](P& p) { p.seqused_k = fake_ptr<const int32_t>(0x600203); }, MISALIGNED, "seqused_k"},
      {"varlen_with_cache_seqlens", Base::Varlen,
       [](P& p) { p.cache_seqlens = fake_ptr<const int32_t>(0x700000); p.seqused_k = nullptr; },
       NOT_SUPPORTED, "cache_seqlens"},
      {"varlen_with_block_table_page_size_zero", Base::Varlen,
       [](P& p) { p.block_table = fake_ptr<const int32_t>(0x700200); }, INVALID,
       "page_block_size (0) must be >= 1"},
      // KV cache
      {"kv_with_seqused_k", Base::KvPaged,
       [](P& p) { p.seqused_k = fake_ptr<const int32_t>(0x600200); }, NOT_SUPPORTED, "seqused_k"},
      {"kv_capacity_zero", Base::KvUnpaged, [](P& p) { p.seqlen_k = 0; }, INVALID,
       "seqlen_k (0) is the KV cache capacity"},
      {"kv_paged_capacity_zero", Base::KvPaged, [](P& p) { p.seqlen_k = 0; }, INVALID, "seqlen_k (0)"},
      {"cache_seqlens_misaligned", Base::KvPaged,
       [](P& p) { p.cache_seqlens = fake_ptr<const int32_t>(0x700002); }, MISALIGNED, "cache_seqlens"},
      {"leftpad_k_misaligned", Base::KvPaged,
       [](P& p) { p.leftpad_k = fake_ptr<const int32_t>(0x700101); }, MISALIGNED, "leftpad_k"},
      {"cache_batch_idx_misaligned", Base::KvUnpaged,
       [](P& p) { p.cache_batch_idx = fake_ptr<const int32_t>(0x700302); }, MISALIGNED,
       "cache_batch_idx"},
      {"k_new_missing", Base::KvUnpaged, [](P& p) { p.k_new = nullptr; }, INVALID,
       "k_new is null but v_new is set"},
      {"v_new_missing", Base::KvUnpaged, [](P& p) { p.v_new = nullptr; }, INVALID,
       "v_new is null but k_new is set"},
      {"seqlen_new_zero", Base::KvUnpaged, [](P& p) { p.seqlen_new = 0; }, INVALID,
       "seqlen_new (0) must be >= 1"},
      {"seqlen_new_over_capacity", Base::KvUnpaged, [](P& p) { p.seqlen_new = 513; }, INVALID,
       "seqlen_new (513) exceeds the KV cache capacity seqlen_k (512)"},
      {"k_new_misaligned", Base::KvPaged, [](P& p) { p.k_new = fake_ptr(0x800009); }, MISALIGNED,
       "k_new ("},
      {"v_new_misaligned", Base::KvPaged, [](P& p) { p.v_new = fake_ptr(0x900005); }, MISALIGNED,
       "v_new ("},
      {"rotary_without_k_new", Base::KvPaged,
       [](P& p) { p.k_new = p.v_new = nullptr; p.seqlen_new = 0; }, NOT_SUPPORTED,
       "rotary_cos without k_new is not supported"},
      {"rotary_sin_missing", Base::KvPaged, [](P& p) { p.rotary_sin = nullptr; }, INVALID,
       "rotary_sin is null but rotary_cos is set"},
      {"rotary_cos_missing", Base::KvPaged, [](P& p) { p.rotary_cos = nullptr; }, INVALID,
       "rotary_cos is null but rotary_sin is set"},
      {"rotary_cos_misaligned", Base::KvPaged, [](P& p) { p.rotary_cos = fake_ptr(0xA00002); },
       MISALIGNED, "rotary_cos"},
      {"rotary_sin_misaligned", Base::KvPaged, [](P& p) { p.rotary_sin = fake_ptr(0xB00001); },
       MISALIGNED, "rotary_sin"},
      {"rotary_dim_zero", Base::KvPaged, [](P& p) { p.rotary_dim = 0; }, INVALID, "rotary_dim (0)"},
      {"rotary_dim_odd", Base::KvPaged, [](P& p) { p.rotary_dim = 63; }, INVALID,
       "rotary_dim (63) must be even"},
      {"rotary_dim_over_head_dim", Base::KvPaged, [](P& p) { p.rotary_dim = 128; }, INVALID,
       "rotary_dim (128) must be even, > 0 and <= head_dim (64)"},
      {"rotary_dim_without_tables", Base::KvUnpaged, [](P& p) { p.rotary_dim = 64; }, INVALID,
       "rotary_dim (64) is set but rotary_cos is null"},
      {"rotary_max_positions_zero", Base::KvPaged, [](P& p) { p.rotary_max_positions = 0; }, INVALID,
       "rotary_max_positions (0)"},
      {"rotary_interleaved_2", Base::KvPaged, [](P& p) { p.rotary_interleaved = 2; }, INVALID,
       "rotary_interleaved (2) must be 0 or 1"},
      // paged KV
      {"cache_batch_idx_with_block_table", Base::KvPaged,
       [](P& p) { p.cache_batch_idx = fake_ptr<const int32_t>(0x700300); }, NOT_SUPPORTED,
       "cache_batch_idx with block_table"},
      {"block_table_misaligned", Base::KvPaged,
       [](P& p) { p.block_table = fake_ptr<const int32_t>(0x700202); }, MISALIGNED, "block_table"},
      {"page_block_size_zero", Base::KvPaged, [](P& p) { p.page_block_size = 0; }, INVALID,
       "page_block_size (0)"},
      {"page_block_size_negative", Base::KvPaged, [](P& p) { p.page_block_size = -16; }, INVALID,
       "page_block_size (-16)"},
      {"block_table_batch_stride_zero", Base::KvPaged, [](P& p) { p.block_table_batch_stride = 0; },
       INVALID, "block_table_batch_stride (0)"},
      {"num_pages_zero", Base::KvPaged, [](P& p) { p.num_pages = 0; }, INVALID, "num_pages (0)"},
      // splits and workspace
      {"num_splits_negative", Base::Dense, [](P& p) { p.num_splits = -1; }, INVALID,
       "num_splits (-1) must be in [0, 128]"},
      {"num_splits_129", Base::Dense, [](P& p) { p.num_splits = 129; }, INVALID, "num_splits (129)"},
      {"workspace_null_with_size", Base::Dense, [](P& p) { p.workspace_size = 1024; }, INVALID,
       "workspace is null but workspace_size (1024)"},
      {"workspace_misaligned", Base::Dense,
       [](P& p) { p.workspace = fake_ptr(0xD00080); p.workspace_size = 1024; }, MISALIGNED,
       "workspace ("},
  };

  // Required tensors: null, and base not 16-byte aligned (8- or 2-byte only).
  const std::pair<const char*, Ptr> tensors[] = {
      {"q", &P::q}, {"k", &P::k}, {"v", &P::v}};
  for (const auto& t : tensors) {
    const Ptr member = t.second;
    rows.push_back({std::string(t.first) + "_null", Base::Dense,
                    [member](P& p) { p.*member = nullptr; }, INVALID, std::string(t.first) + " is null"});
    // Tensors need element (2-byte) alignment: an odd address is refused.
    rows.push_back({std::string(t.first) + "_misaligned", Base::Dense,
                    [member](P& p) { p.*member = static_cast<const char*>(p.*member) + 1; },
                    MISALIGNED, std::string(t.first) + " ("});
  }
  rows.push_back({"out_null", Base::Dense, [](P& p) { p.out = nullptr; }, INVALID, "out is null"});
  rows.push_back({"out_misaligned", Base::Dense, [](P& p) { p.out = fake_ptr(0x400003); },
                  MISALIGNED, "out ("});

  // KV-cache-only fields given without cache_seqlens.
  rows.push_back({"k_new_without_cache", Base::Dense, [](P& p) { p.k_new = fake_ptr(0x800000); },
                  INVALID, "k_new requires cache_seqlens"});
  rows.push_back({"v_new_without_cache", Base::Dense, [](P& p) { p.v_new = fake_ptr(0x900000); },
                  INVALID, "v_new requires cache_seqlens"});
  rows.push_back({"rotary_cos_without_cache", Base::Dense,
                  [](P& p) { p.rotary_cos = fake_ptr(0xA00000); }, INVALID,
                  "rotary_cos requires cache_seqlens"});
  rows.push_back({"rotary_sin_without_cache", Base::Dense,
                  [](P& p) { p.rotary_sin = fake_ptr(0xB00000); }, INVALID,
                  "rotary_sin requires cache_seqlens"});
  rows.push_back({"block_table_without_cache", Base::Dense,
                  [](P& p) { p.block_table = fake_ptr<const int32_t>(0x700200); }, INVALID,
                  "block_table requires cache_seqlens"});
  rows.push_back({"cache_batch_idx_without_cache", Base::Dense,
                  [](P& p) { p.cache_batch_idx = fake_ptr<const int32_t>(0x700300); }, INVALID,
                  "cache_batch_idx requires cache_seqlens"});
  rows.push_back({"leftpad_k_without_cache", Base::Dense,
                  [](P& p) { p.leftpad_k = fake_ptr<const int32_t>(0x700100); }, INVALID,
                  "leftpad_k requires cache_seqlens"});

  // Every stride family.
  add_stride_rows(rows, Base::Dense, "q", &P::q_batch_stride, &P::q_row_stride, &P::q_head_stride);
  add_stride_rows(rows, Base::Dense, "k", &P::k_batch_stride, &P::k_row_stride, &P::k_head_stride);
  add_stride_rows(rows, Base::Dense, "v", &P::v_batch_stride, &P::v_row_stride, &P::v_head_stride);
  add_stride_rows(rows, Base::Dense, "out", &P::out_batch_stride, &P::out_row_stride,
                  &P::out_head_stride);
  add_stride_rows(rows, Base::KvPaged, "k_new", &P::k_new_batch_stride, &P::k_new_row_stride,
                  &P::k_new_head_stride);
  add_stride_rows(rows, Base::KvPaged, "v_new", &P::v_new_batch_stride, &P::v_new_row_stride,
                  &P::v_new_head_stride);
  return rows;
}

class InvalidInput : public ::testing::TestWithParam<BadCase> {};

TEST_P(InvalidInput, FailsWithStatusAndMessage) {
  const BadCase& c = GetParam();
  flare_mha_fwd_params p = make_base(c.base);
  ASSERT_EQ(intake(p), FLARE_OK) << "baseline must pass: " << flare_last_error();
  c.mutate(p);
  const flare_status s = intake(p);
  EXPECT_EQ(s, c.status) << flare_status_string(s) << ": " << flare_last_error();
  EXPECT_NE(std::string(flare_last_error()).find(c.message), std::string::npos)
      << "message: \"" << flare_last_error() << "\" lacks \"" << c.message << "\"";
}

INSTANTIATE_TEST_SUITE_P(Table, InvalidInput, ::testing::ValuesIn(bad_cases()),
                         [](const ::testing::TestParamInfo<BadCase>& row) {
                           return row.param.name;
                         });

TEST(Validation, NullParams) {
  EXPECT_EQ(flare::validate_params(nullptr), FLARE_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flare_last_error()).find("params is null"), std::string::npos);
}

TEST(Validation, NeverReadsDevicePointers) {
  // Addresses that would fault if read: validation must only compare them.
  flare_mha_fwd_params p = kv_paged_base();
  p.cache_seqlens = fake_ptr<const int32_t>(0x10);
  p.leftpad_k = fake_ptr<const int32_t>(0x20);
  p.block_table = fake_ptr<const int32_t>(0x30);
  EXPECT_EQ(intake(p), FLARE_OK) << flare_last_error();
  flare_mha_fwd_params v = varlen_base();
  v.cu_seqlens_q = fake_ptr<const int32_t>(0x40);
  v.cu_seqlens_k = fake_ptr<const int32_t>(0x50);
  EXPECT_EQ(intake(v), FLARE_OK) << flare_last_error();
}

// ---------------------------------------------------------------------------------------------
// read_params

TEST(ReadParams, NullPointers) {
  flare_mha_fwd_params full;
  EXPECT_EQ(flare::read_params(nullptr, &full), FLARE_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flare_last_error()).find("params is null"), std::string::npos);
  const flare_mha_fwd_params p = dense_base();
  EXPECT_EQ(flare::read_params(&p, nullptr), FLARE_ERROR_INVALID_ARGUMENT);
}

TEST(ReadParams, FullStructRoundTrips) {
  const flare_mha_fwd_params p = kv_paged_base();
  flare_mha_fwd_params full;
  ASSERT_EQ(flare::read_params(&p, &full), FLARE_OK);
  EXPECT_EQ(std::memcmp(&p, &full, sizeof(p)), 0);
}

TEST(ReadParams, RejectsTooSmallStruct) {
  flare_mha_fwd_params p = dense_base();
  flare_mha_fwd_params full;
  for (uint32_t size : {0u, 8u, uint32_t(offsetof(flare_mha_fwd_params, out_head_stride))}) {
    p.struct_size = size;
    EXPECT_EQ(flare::read_params(&p, &full), FLARE_ERROR_INVALID_ARGUMENT) << size;
    EXPECT_NE(std::string(flare_last_error()).find("struct_size (" + std::to_string(size) + ")"),
              std::string::npos)
        << flare_last_error();
  }
}

TEST(ReadParams, RejectsSizeNotMultipleOf8) {
  flare_mha_fwd_params p = dense_base();
  p.struct_size = sizeof(flare_mha_fwd_params) - 4;
  flare_mha_fwd_params full;
  EXPECT_EQ(flare::read_params(&p, &full), FLARE_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flare_last_error()).find("is not a multiple of 8"), std::string::npos);
}

TEST(ReadParams, ShortStructGetsDefaults) {
  // An older caller whose struct ended right after the out strides: its buffer holds only
  // those bytes; every later field must come back with the init defaults.
  flare_mha_fwd_params src = dense_base();
  const size_t short_size = offsetof(flare_mha_fwd_params, softmax_scale);
  src.struct_size = uint32_t(short_size);
  std::vector<unsigned char> buffer(short_size);
  std::memcpy(buffer.data(), &src, short_size);

  flare_mha_fwd_params full;
  std::memset(&full, 0xAB, sizeof(full));  // garbage that must be overwritten
  ASSERT_EQ(flare::read_params(reinterpret_cast<const flare_mha_fwd_params*>(buffer.data()), &full),
            FLARE_OK)
      << flare_last_error();

  flare_mha_fwd_params defaults;
  flare_mha_fwd_params_init(&defaults);
  EXPECT_EQ(full.struct_size, sizeof(flare_mha_fwd_params));
  EXPECT_EQ(std::memcmp(reinterpret_cast<const char*>(&full) + sizeof(uint32_t),
                        reinterpret_cast<const char*>(&src) + sizeof(uint32_t),
                        short_size - sizeof(uint32_t)),
            0);
  EXPECT_EQ(std::memcmp(reinterpret_cast<const char*>(&full) + short_size,
                        reinterpret_cast<const char*>(&defaults) + short_size,
                        sizeof(full) - short_size),
            0);
  EXPECT_EQ(full.window_left, -1);
  EXPECT_EQ(full.window_right, -1);
  EXPECT_EQ(full.cache_seqlens, nullptr);
  EXPECT_EQ(full.p_dropout, 0.f);
  EXPECT_EQ(flare::validate_params(&full), FLARE_OK) << flare_last_error();
}

// A newer caller's struct: its fields past this library's struct must be zero (unset).
struct Newer {
  flare_mha_fwd_params base;
  int64_t future_field;
};

TEST(ReadParams, NewerCallerZeroTailAccepted) {
  Newer newer{};
  newer.base = dense_base();
  newer.base.struct_size = sizeof(Newer);
  flare_mha_fwd_params full;
  ASSERT_EQ(flare::read_params(&newer.base, &full), FLARE_OK) << flare_last_error();
  EXPECT_EQ(full.struct_size, sizeof(flare_mha_fwd_params));
  EXPECT_EQ(full.batch, 2);
  EXPECT_EQ(full.window_left, -1);
}

TEST(ReadParams, NewerCallerNonZeroTailRejected) {
  Newer newer{};
  newer.base = dense_base();
  newer.base.struct_size = sizeof(Newer);
  newer.future_field = 42;
  flare_mha_fwd_params full;
  EXPECT_EQ(flare::read_params(&newer.base, &full), FLARE_ERROR_INVALID_ARGUMENT);
  const std::string msg = flare_last_error();
  EXPECT_NE(msg.find("struct_size (" + std::to_string(sizeof(Newer)) + ") is larger than this "
                     "library's flare_mha_fwd_params (" +
                     std::to_string(sizeof(flare_mha_fwd_params)) + " bytes)"),
            std::string::npos)
      << msg;
}

// ---------------------------------------------------------------------------------------------
// Status strings and the thread-local error.

TEST(Status, EveryValueHasDistinctString) {
  const flare_status all[] = {FLARE_OK,
                              FLARE_ERROR_INVALID_ARGUMENT,
                              FLARE_ERROR_MISALIGNED,
                              FLARE_ERROR_UNSUPPORTED_DTYPE,
                              FLARE_ERROR_UNSUPPORTED_HEAD_DIM,
                              FLARE_ERROR_NOT_SUPPORTED,
                              FLARE_ERROR_ARCH_NOT_SUPPORTED,
                              FLARE_ERROR_WORKSPACE_TOO_SMALL,
                              FLARE_ERROR_CUDA,
                              FLARE_ERROR_NO_DEVICE};
  const std::string unknown = flare_status_string(static_cast<flare_status>(15));
  EXPECT_FALSE(unknown.empty());
  std::set<std::string> seen;
  for (flare_status s : all) {
    const char* text = flare_status_string(s);
    ASSERT_NE(text, nullptr);
    EXPECT_GT(std::strlen(text), 0u) << int(s);
    EXPECT_NE(unknown, text) << int(s);
    EXPECT_TRUE(seen.insert(text).second) << "duplicate: " << text;
  }
}

TEST(ThreadLocalError, EachThreadSeesItsOwn) {
  flare::fail(FLARE_ERROR_CUDA, "main thread error");
  std::atomic<int> arrived{0};
  std::string seen[2];
  auto worker = [&](int id) {
    flare::fail(FLARE_ERROR_INVALID_ARGUMENT, "error of thread %d", id);
    // Both threads have recorded their error before either reads it back.
    arrived.fetch_add(1);
    while (arrived.load() < 2) std::this_thread::yield();
    seen[id] = flare_last_error();
  };
  std::thread a(worker, 0), b(worker, 1);
  a.join();
  b.join();
  EXPECT_EQ(seen[0], "error of thread 0");
  EXPECT_EQ(seen[1], "error of thread 1");
  EXPECT_STREQ(flare_last_error(), "main thread error");
  flare::clear_error();
  EXPECT_STREQ(flare_last_error(), "");
}

TEST(ThreadLocalError, NewThreadStartsEmpty) {
  flare::fail(FLARE_ERROR_CUDA, "set on main");
  std::string seen = "unset";
  std::thread t([&] { seen = flare_last_error(); });
  t.join();
  EXPECT_EQ(seen, "");
}

}  // namespace
