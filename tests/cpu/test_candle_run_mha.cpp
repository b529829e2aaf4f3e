// flare_candle's run_mha on the CPU: every refusal names its reason in
// flare_candle_last_error() and on stderr, and writes nothing. The tensors are host buffers
// poisoned with a pattern: run_mha and flare's validation compare pointers but never read or
// write them, so an unchanged buffer shows nothing was written. Refusals by flare's own
// validation come before any device query, so they hold on a machine without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "flare_candle.h"

namespace {

constexpr uint16_t kPoison = 0x7e11;

// cu_seqlens for the batch as variable-length sequences of 8 rows (queries and keys alike).
constexpr int32_t kCuSeqlens[3] = {0, 8, 16};

// One run_mha call's arguments: a padded batch of b=2, seqlen 8 / 16, h=4, h_k=2, d=64, with
// contiguous [b, s, h, d] tensors in 16-byte aligned host buffers.
struct Call {
  std::vector<uint16_t> q, k, v, o;
  std::vector<float> lse;
  const void* q_ptr;
  const void* k_ptr;
  const void* v_ptr;
  const void* o_ptr;
  const void* lse_ptr;
  const void* alibi = nullptr;
  const int32_t* cu_q = nullptr;
  const int32_t* cu_k = nullptr;
  uint32_t b = 2, h = 4, h_k = 2, d = 64, seqlen_q = 8, seqlen_k = 16;
  uint32_t q_bs, k_bs, v_bs, o_bs, alibi_bs = 0;
  uint32_t q_rs, k_rs, v_rs, o_rs, q_hs, k_hs, v_hs, o_hs;
  float scale = 0.125f;
  int is_bf16 = 0, is_causal = 0, unpadded_lse = 0, wl = -1, wr = -1;
  float softcap = 0.f;
  const int32_t* block_table = nullptr;
  uint32_t bt_stride = 0;
  int page_block_size = -1;
  const int32_t* mm = nullptr;
  uint32_t mm_stride = 0;
  int max_mm = 0;

  Call() {
    q.assign(size_t(b) * seqlen_q * h * d + 8, kPoison);
    o = q;
    k.assign(size_t(b) * seqlen_k * h_k * d + 8, kPoison);
    v = k;
    lse.assign(size_t(b) * h * seqlen_q, -7.f);
    q_ptr = q.data();
    k_ptr = k.data();
    v_ptr = v.data();
    o_ptr = o.data();
    lse_ptr = lse.data();
    q_rs = o_rs = h * d;
    k_rs = v_rs = h_k * d;
    q_hs = k_hs = v_hs = o_hs = d;
    q_bs = o_bs = seqlen_q * h * d;
    k_bs = v_bs = seqlen_k * h_k * d;
  }

  void run() {
    run_mha(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, alibi, cu_q, cu_k, q_bs, k_bs, v_bs, o_bs,
            alibi_bs, q_rs, k_rs, v_rs, o_rs, q_hs, k_hs, v_hs, o_hs, b, h, h_k, d,
            (d + 31) / 32 * 32, scale, seqlen_q, seqlen_k, (seqlen_q + 127) / 128 * 128,
            (seqlen_k + 127) / 128 * 128, b * seqlen_q, is_bf16, is_causal, unpadded_lse, wl, wr,
            softcap, block_table, bt_stride, page_block_size, mm, mm_stride, max_mm, nullptr);
  }

  // The batch as variable-length sequences (kCuSeqlens), lse unpadded.
  void make_varlen() {
    cu_q = cu_k = kCuSeqlens;
    unpadded_lse = 1;
  }

  bool untouched() const {
    for (uint16_t x : o)
      if (x != kPoison) return false;
    for (uint16_t x : q)
      if (x != kPoison) return false;
    for (float x : lse)
      if (x != -7.f) return false;
    return true;
  }
};

bool has_gpu() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  (void)cudaGetLastError();
  return ok;
}

// Runs the call, expects a refusal whose message contains every one of `needles`, on stderr
// too.
void expect_refused(Call& c, const std::vector<std::string>& needles) {
  testing::internal::CaptureStderr();
  c.run();
  const std::string err = testing::internal::GetCapturedStderr();
  const char* last = flare_candle_last_error();
  ASSERT_NE(last, nullptr) << "run_mha accepted the call";
  for (const std::string& needle : needles)
    EXPECT_NE(std::string(last).find(needle), std::string::npos) << last;
  EXPECT_NE(err.find("flare_candle: run_mha: "), std::string::npos) << err;
  EXPECT_NE(err.find(last), std::string::npos) << err;
  EXPECT_TRUE(c.untouched());
}

void expect_refused(Call& c, const char* needle) {
  expect_refused(c, std::vector<std::string>{needle});
}

// On a machine without a GPU: runs a valid call, expects it refused (nothing written) for a
// reason other than "not supported" and, when field is not empty, one not naming field.
void expect_refused_only_for_the_device(Call& c, const std::string& field) {
  c.run();
  ASSERT_NE(flare_candle_last_error(), nullptr);
  const std::string msg = flare_candle_last_error();
  EXPECT_EQ(msg.find("not supported"), std::string::npos) << msg;
  if (!field.empty()) EXPECT_EQ(msg.find(field), std::string::npos) << msg;
  EXPECT_TRUE(c.untouched());
}

// A refusal by flare carries flare's message and its status string.
constexpr const char* kNotSupported = "(feature or combination not supported)";
constexpr const char* kInvalidArgument = "(invalid argument)";

}  // namespace

TEST(CandleRunMha, LastErrorIsNullBeforeAnyCall) {
  const char* seen = reinterpret_cast<const char*>(1);
  std::thread([&] { seen = flare_candle_last_error(); }).join();
  EXPECT_EQ(seen, nullptr);
}

// Multimodal prefix ranges go to flare as candle gives them: flare validates them and runs
// valid ones (without a GPU only the device is missing; with one, the GPU suites run them: the
// ranges here are host memory).
TEST(CandleRunMha, MultimodalPrefixRangesAreFlaresToAnswer) {
  const int32_t ranges[4] = {0, 4, 0, 0};  // b = 2, one range each; the second is empty
  if (!has_gpu()) {
    Call c;
    c.mm = ranges;
    c.mm_stride = 2;
    c.max_mm = 1;
    expect_refused_only_for_the_device(c, "mm_prefix_ranges");
  }
  {
    Call c;
    c.mm = ranges;
    c.mm_stride = 2;
    c.max_mm = 2;
    expect_refused(c, {"mm_prefix_ranges_batch_stride (2) must be >= 2 * max_mm_prefix_ranges (4)",
                       kInvalidArgument});
  }
  {
    Call c;
    c.max_mm = 2;
    expect_refused(c, {"max_mm_prefix_ranges (2) is set but mm_prefix_ranges is null",
                       kInvalidArgument});
  }
  {
    Call c;
    c.mm = ranges;
    c.mm_stride = 2;
    c.max_mm = -1;
    expect_refused(c, {"max_mm_prefix_ranges (-1) must be >= 0", kInvalidArgument});
  }
}

// Paged K/V with cu_seqlens is flare's paged varlen mode: flare validates the paging fields;
// a valid call (any page size) is refused without a GPU only for the device.
TEST(CandleRunMha, PagedVarlenIsFlaresToAnswer) {
  const int32_t table[4] = {0, 1, 2, 3};
  auto paged_varlen = [&](Call& c) {
    c.make_varlen();
    c.block_table = table;
    c.bt_stride = 2;
    c.page_block_size = 16;
    c.k_bs = c.v_bs = 16 * c.h_k * c.d;
  };
  if (!has_gpu()) {
    for (int page : {16, 3}) {
      Call c;
      paged_varlen(c);
      c.page_block_size = page;
      c.k_bs = c.v_bs = page * c.h_k * c.d;
      expect_refused_only_for_the_device(c, "block_table");
    }
  }
  {
    Call c;
    paged_varlen(c);
    c.page_block_size = 0;
    expect_refused(c, {"page_block_size (0) must be >= 1", kInvalidArgument});
  }
  {
    Call c;
    paged_varlen(c);
    c.bt_stride = 0;
    expect_refused(c, {"block_table_batch_stride (0) must be >= 1", kInvalidArgument});
  }
}

TEST(CandleRunMha, OneCuSeqlensAloneIsRefused) {
  Call c;
  c.make_varlen();
  c.cu_k = nullptr;
  expect_refused(c, "cu_seqlens_k is null");
}

TEST(CandleRunMha, LseLayoutMustMatchTheBatchKind) {
  Call padded;
  padded.unpadded_lse = 1;
  expect_refused(padded, "unpadded_lse != 0 without cu_seqlens");

  Call varlen;
  varlen.make_varlen();
  varlen.unpadded_lse = 0;
  expect_refused(varlen, "unpadded_lse == 0 with cu_seqlens");
}

TEST(CandleRunMha, ZeroScaleIsRefused) {
  Call c;
  c.scale = 0.f;
  expect_refused(c, "softmax_scale 0");
}

TEST(CandleRunMha, SizesBeyondInt32AreRefused) {
  Call c;
  c.seqlen_k = 0x80000000u;
  expect_refused(c, "seqlen_k (2147483648) is out of range");
}

// flare's own validation, reached through run_mha: status and message pass through.
TEST(CandleRunMha, FlareValidationMessagesPassThrough) {
  {
    Call c;
    c.d = 600;
    c.q_hs = c.k_hs = c.v_hs = c.o_hs = 600;
    expect_refused(c, "head_dim (600) is not supported");
  }
  {
    Call c;
    c.q_ptr = reinterpret_cast<const char*>(c.q.data()) + 1;  // tensors need 2-byte alignment
    expect_refused(c, "is not 2-byte aligned");
  }
  {
    Call c;
    c.h = 3;  // not a multiple of h_k = 2
    expect_refused(c, "num_heads (3) is not a multiple of num_heads_k (2)");
  }
}

TEST(CandleRunMha, PagedArgumentsAreChecked) {
  Call c;
  const int32_t table[2] = {0, 1};
  c.block_table = table;
  c.bt_stride = 0;
  c.page_block_size = 16;
  expect_refused(c, "block_table_batch_stride (0) is smaller than the 1 pages");

  Call odd;
  odd.block_table = table;
  odd.bt_stride = 1;
  odd.page_block_size = 0;
  expect_refused(odd, "page_block_size (0) must be > 0");
}

// Paged K/V of a padded batch is served through flare's KV-cache path, and a ranges pointer
// with no ranges is plain attention: both pass validation, so without a GPU the only refusal
// left is the device's.
TEST(CandleRunMha, ValidCallsFailOnlyForTheDeviceWithoutGpu) {
  if (has_gpu()) GTEST_SKIP() << "a GPU is present: the GPU suites run these calls";
  Call plain;
  expect_refused_only_for_the_device(plain, "");

  Call paged;
  const int32_t table[2] = {1, 0};
  paged.block_table = table;
  paged.bt_stride = 1;
  paged.page_block_size = 16;
  paged.k_bs = paged.v_bs = 16 * paged.h_k * paged.d;
  expect_refused_only_for_the_device(paged, "block_table");

  // A ranges pointer with zero ranges per sequence is no range at all.
  Call no_ranges;
  const int32_t ranges[2] = {0, 4};
  no_ranges.mm = ranges;
  no_ranges.mm_stride = 2;
  no_ranges.max_mm = 0;
  expect_refused_only_for_the_device(no_ranges, "mm_prefix_ranges");
}
