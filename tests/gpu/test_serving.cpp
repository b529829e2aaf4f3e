// GPU tests of the serving features of issue 20 through the C ABI: paged KV in variable-length
// attention at any page size (and odd page sizes in KV-cache decode), head dims 1..512 with a
// separate V head dim, attention sinks, multimodal prefix ranges; each alone and combined with
// causal / window / ALiBi / softcap / GQA / LSE / split-KV / padded strides.
//
// Every case runs flare_mha_fwd on poisoned outputs. While the GPU kernels lack a feature the
// case uses (its switch below is false), the call must fail with that feature's status and a
// message naming it, and leave out, lse and the KV cache exactly as they were. Once a feature's
// switch is true the case is compared with the float64 CPU reference like every forward case
// (gpu_test_util.h: error <= 2x the naive low-precision error + 1e-5, every element written,
// stride gaps untouched, empty rows 0 with lse = the sink; caches after the append as the
// reference appends them). Cases that use no missing feature (page sizes 16 / 48 / 256 in the
// KV cache, head dims of today's set) run against the reference today.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "gpu/gpu_reference.h"
#include "gpu/gpu_test_util.h"
#include "gpu/serving_problem.h"

namespace flare_test {
namespace {

// ---------------------------------------------------------------------------------------------
// One switch per line of serving_features_not_yet_supported (src/api/validate_serving.cpp):
// flip a switch in the same change that deletes its line and lands the kernels.
constexpr bool kOddHeadDimsOnGpu = true;     // head_dim in [1, 512] not a multiple of 8 (narrow)
constexpr bool kHeadDimVOnGpu = true;        // head_dim_v != head_dim, i.e. (192, 128)
constexpr bool kSinksOnGpu = true;           // sink
constexpr bool kPrefixRangesOnGpu = true;    // mm_prefix_ranges
constexpr bool kPagedVarlenOnGpu = true;     // block_table with cu_seqlens_q
constexpr bool kAnyPageSizeOnGpu = true;     // page_block_size not a multiple of 16

// The refusal a case gets while a feature it uses is missing: the first missing feature in
// the order serving_features_not_yet_supported checks them.
struct Refusal {
  bool refused = false;
  flare_status status = FLARE_OK;
  const char* message = "";
};

Refusal expected_refusal(const ServingCase& c) {
  // Head dims up to 512 run (narrow where not a multiple of 8) once kOddHeadDimsOnGpu is on;
  // 257..512 on the d512 instance.
  const bool kernel_head_dim = c.head_dim <= 512 && (c.head_dim % 8 == 0 || kOddHeadDimsOnGpu);
  if (!kernel_head_dim && !kOddHeadDimsOnGpu)
    return {true, FLARE_ERROR_UNSUPPORTED_HEAD_DIM, "is not supported by the GPU kernels yet"};
  if (c.dv() != c.head_dim && !kHeadDimVOnGpu)
    return {true, FLARE_ERROR_NOT_SUPPORTED, "a separate V head dim is not implemented"};
  if (c.sink && !kSinksOnGpu)
    return {true, FLARE_ERROR_NOT_SUPPORTED, "sink: attention sinks are not implemented"};
  if (c.max_ranges > 0 && !kPrefixRangesOnGpu)
    return {true, FLARE_ERROR_NOT_SUPPORTED, "mm_prefix_ranges: multimodal prefix ranges"};
  if (c.page_size > 0 && c.mode == KvMode::kVarlen && !kPagedVarlenOnGpu)
    return {true, FLARE_ERROR_NOT_SUPPORTED, "block_table with cu_seqlens_q"};
  if (c.page_size > 0 && c.page_size % 16 != 0 && !kAnyPageSizeOnGpu)
    return {true, FLARE_ERROR_NOT_SUPPORTED, "page sizes that are not a multiple of 16"};
  return {};
}

// ---------------------------------------------------------------------------------------------
// The cases.
std::vector<ServingCase> serving_cases() {
  std::vector<ServingCase> out;
  uint64_t seed = 0x5E41000;
  auto add = [&](ServingCase c) {
    c.seed = ++seed;
    out.push_back(std::move(c));
  };
  // A vLLM-style mixed step: prefill chunks over cached prefixes, a decode row, a whole prompt,
  // an empty sequence.
  const std::vector<int> mixed_q = {37, 1, 0, 100, 1};
  const std::vector<int> mixed_k = {170, 65, 9, 100, 300};

  // 1. Paged varlen at every page size of the issue, key counts from cu_seqlens_k or seqused_k.
  for (int page : {1, 3, 16, 48, 256})
    for (int used : {0, 1}) {
      ServingCase c;
      c.name = "paged_varlen_page" + std::to_string(page) + (used ? "_seqused" : "_cuk");
      c.dtype = used ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
      c.head_dim = page == 48 ? 128 : 64;
      c.num_heads = 8, c.num_heads_k = 2;
      c.q_lens = mixed_q, c.k_lens = mixed_k;
      c.page_size = page, c.seqused_only = used == 1;
      c.causal = true;
      c.num_splits = page == 3 ? 3 : page == 16 ? 0 : 1;
      c.padded = page == 48;
      add(c);
    }
  {  // paged varlen with every other feature: window, ALiBi, softcap, splits
    ServingCase c;
    c.name = "paged_varlen_page3_window_alibi_softcap_split";
    c.head_dim = 96, c.num_heads = 6, c.num_heads_k = 3;
    c.q_lens = mixed_q, c.k_lens = mixed_k, c.page_size = 3;
    c.window_left = 40, c.window_right = 7, c.alibi = true, c.softcap = 20.f, c.num_splits = 4;
    add(c);
  }
  // Paged varlen batches of decode rows only (at most 16 query rows per sequence: the decode
  // kernel on both paths), pages smaller than and not dividing its 16-row key groups.
  for (int page : {1, 3, 5, 48}) {
    ServingCase c;
    c.name = "paged_varlen_decode_rows_page" + std::to_string(page);
    c.dtype = page % 2 ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
    c.head_dim = page == 5 ? 64 : 128, c.num_heads = 8, c.num_heads_k = 2;
    c.q_lens = {1, 16, 0, 3, 1}, c.k_lens = {1, 200, 17, 64, 1000};
    c.page_size = page, c.seqused_only = page == 3;
    c.causal = page != 5;
    c.num_splits = page == 1 ? 3 : page == 48 ? 0 : 1;
    add(c);
  }
  // Many key blocks per tile through the paged producer / all-threads kernel: page 1 (every
  // row its own page), 7 and 256 with GQA, non-causal and windowed, forced splits; d256 runs
  // the Hopper all-threads kernel.
  for (int page : {1, 7, 256})
    for (int d : {64, 128, 256}) {
      ServingCase c;
      c.name = "paged_varlen_long_page" + std::to_string(page) + "_d" + std::to_string(d);
      c.dtype = d == 128 ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
      c.head_dim = d, c.num_heads = 4, c.num_heads_k = d == 256 ? 4 : 1;
      c.q_lens = {300, 129, 0, 17}, c.k_lens = {1100, 700, 50, 17};
      c.page_size = page;
      c.causal = d == 128;
      if (d == 64) c.window_left = 200, c.window_right = 30;
      c.num_splits = page == 7 ? 5 : 1;
      c.padded = page == 256;
      add(c);
    }
  // 2. KV-cache decode and chunked prefill at odd page sizes (and 16 / 48 / 256, which run
  //    today), with append.
  for (int page : {1, 3, 16, 48, 256}) {
    ServingCase c;
    c.name = "kv_page" + std::to_string(page) + "_append";
    c.mode = KvMode::kKvCache;
    c.head_dim = 128, c.num_heads = 8, c.num_heads_k = 1;
    c.q_lens = {1, 1, 1}, c.k_lens = {1, 77, 300};
    c.page_size = page, c.seqlen_new = 1, c.causal = true;
    c.num_splits = page == 256 ? 0 : 3;
    add(c);
  }
  {
    ServingCase c;
    c.name = "kv_page1_chunk40_causal";
    c.mode = KvMode::kKvCache;
    c.head_dim = 64, c.num_heads = 4, c.num_heads_k = 4;
    c.q_lens = {40, 40}, c.k_lens = {40, 250};
    c.page_size = 1, c.seqlen_new = 40, c.causal = true, c.num_splits = 2;
    add(c);
  }
  // 3. Head dims: FlashAttention-2's odd 59 and 111, the extremes, 200 / 264 / 511 / 512, and the
  //    (192, 128) pair (DeepSeek), plus d40 (today's set) as a control.
  for (int d : {1, 7, 40, 59, 111, 200, 264, 511, 512}) {
    ServingCase c;
    c.name = "head_dim" + std::to_string(d);
    c.dtype = d % 2 ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
    c.head_dim = d;
    c.q_lens = {65, 3}, c.k_lens = {130, 70};
    c.causal = d != 111;
    c.num_splits = d == 512 ? 3 : 1;
    c.padded = d == 59;
    add(c);
  }
  // d512 and d264 (the d512 kernel, two V column parts) with every feature: GQA, window,
  // ALiBi, softcap, LSE, forced and heuristic split-KV, padded strides, paged KV-cache decode
  // with GQA packing and append, chunked prefill into a cache.
  for (int d : {264, 512}) {
    ServingCase c;
    c.name = "head_dim" + std::to_string(d) + "_gqa_window_alibi_softcap_split4";
    c.head_dim = d, c.num_heads = 6, c.num_heads_k = 2;
    c.q_lens = {70, 130, 1}, c.k_lens = {200, 130, 90};
    c.window_left = 50, c.window_right = 10, c.alibi = true, c.softcap = 15.f;
    c.num_splits = 4, c.padded = d == 264;
    add(c);
  }
  for (int d : {264, 512}) {
    ServingCase c;
    c.name = "head_dim" + std::to_string(d) + "_causal_gqa_heuristic_split";
    c.dtype = FLARE_DTYPE_FP16;
    c.head_dim = d, c.num_heads = 8, c.num_heads_k = 2;
    c.q_lens = {33, 1}, c.k_lens = {700, 1000};
    c.causal = true, c.num_splits = 0;
    add(c);
  }
  for (int d : {264, 512}) {
    ServingCase c;
    c.name = "head_dim" + std::to_string(d) + "_kv_page16_decode_gqa_append";
    c.mode = KvMode::kKvCache;
    c.head_dim = d, c.num_heads = 8, c.num_heads_k = 2;
    c.q_lens = {1, 1, 1}, c.k_lens = {1, 100, 700};
    c.page_size = 16, c.seqlen_new = 1, c.causal = true, c.num_splits = 0;
    add(c);
  }
  {
    ServingCase c;
    c.name = "head_dim512_kv_page48_chunk20_causal_split3";
    c.mode = KvMode::kKvCache;
    c.head_dim = 512, c.num_heads = 4, c.num_heads_k = 4;
    c.q_lens = {20, 20}, c.k_lens = {40, 300};
    c.page_size = 48, c.seqlen_new = 20, c.causal = true, c.num_splits = 3;
    add(c);
  }
  // 3b. Narrow tensors (common/narrow.h): the odd head dims with strides of exactly the
  //     head dim (never multiples of 8) and with odd gaps, bases that are only 2-byte aligned
  //     (an aligned head dim made narrow by its addresses alone), varlen, KV cache with append
  //     and rotary-free append into odd-strided caches, paged, split-KV, GQA-packed decode,
  //     causal and window masks.
  for (int d : {1, 7, 59, 111, 200, 264, 511}) {
    for (int padded : {0, 1}) {
      ServingCase c;
      c.name = "narrow_d" + std::to_string(d) + (padded ? "_padded_odd_gaps" : "_contiguous");
      c.dtype = (d + padded) % 2 ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
      c.head_dim = d, c.num_heads = 4, c.num_heads_k = 2;
      c.tight = true, c.padded = padded == 1;
      c.q_lens = {70, 1, 129}, c.k_lens = {200, 33, 129};
      c.causal = padded == 0;
      if (padded) c.window_left = 50, c.window_right = 3;
      c.num_splits = padded ? 3 : 1;
      add(c);
    }
  }
  {
    ServingCase c;
    c.name = "narrow_d64_odd_base_offsets";
    c.head_dim = 64, c.num_heads = 4, c.num_heads_k = 4;
    c.base_offset = 1;
    c.q_lens = {100, 17}, c.k_lens = {260, 17};
    c.causal = true, c.num_splits = 0;
    add(c);
  }
  {
    ServingCase c;
    c.name = "narrow_d128_tight_gaps_split4";
    c.dtype = FLARE_DTYPE_FP16;
    c.head_dim = 128, c.num_heads = 2, c.num_heads_k = 1;
    c.tight = true, c.padded = true;  // aligned head dim, odd gaps
    c.q_lens = {200}, c.k_lens = {700};
    c.num_splits = 4;
    add(c);
  }
  for (int d : {7, 59, 111}) {
    ServingCase c;
    c.name = "narrow_kv_d" + std::to_string(d) + "_append_decode_gqa";
    c.mode = KvMode::kKvCache;
    c.head_dim = d, c.num_heads = 8, c.num_heads_k = 2;
    c.tight = true, c.base_offset = d == 59 ? 3 : 0;
    c.q_lens = {1, 1, 1}, c.k_lens = {1, 90, 400};
    c.seqlen_new = 1, c.num_splits = d == 111 ? 0 : 3;
    add(c);
  }
  {
    ServingCase c;
    c.name = "narrow_kv_d59_page16_chunk_append_causal";
    c.mode = KvMode::kKvCache;
    c.head_dim = 59, c.num_heads = 4, c.num_heads_k = 2;
    c.tight = true, c.padded = true;
    c.q_lens = {24, 24}, c.k_lens = {24, 150};
    c.page_size = 16, c.seqlen_new = 24, c.causal = true, c.num_splits = 2;
    add(c);
  }
  {
    ServingCase c;
    c.name = "narrow_varlen_d111_alibi_softcap";
    c.dtype = FLARE_DTYPE_FP16;
    c.head_dim = 111, c.num_heads = 6, c.num_heads_k = 3;
    c.tight = true, c.base_offset = 5;
    c.q_lens = {37, 1, 0, 100, 1}, c.k_lens = {170, 65, 9, 100, 300};
    c.alibi = true, c.softcap = 20.f, c.causal = true, c.num_splits = 0;
    add(c);
  }
  for (int splits : {1, 0}) {
    ServingCase c;
    c.name = std::string("head_dim192_v128_causal_sp") + std::to_string(splits);
    c.head_dim = 192, c.head_dim_v = 128, c.num_heads = 8, c.num_heads_k = 8;
    c.q_lens = {128, 77}, c.k_lens = {128, 300};
    c.causal = true, c.num_splits = splits;
    add(c);
  }
  {
    ServingCase c;
    c.name = "head_dim192_v128_kv_page16_append";
    c.mode = KvMode::kKvCache;
    c.head_dim = 192, c.head_dim_v = 128;
    c.q_lens = {1, 1}, c.k_lens = {33, 1000};
    c.page_size = 16, c.seqlen_new = 1, c.num_splits = 0;
    add(c);
  }
  // 4. Sinks: with split-KV (the combine must count the sink once), varlen, decode with GQA
  //    packing, rows that see no key (lse = the sink), ALiBi + softcap.
  for (int splits : {1, 3, 0}) {
    ServingCase c;
    c.name = "sink_varlen_causal_sp" + std::to_string(splits);
    c.num_heads = 8, c.num_heads_k = 2;
    c.q_lens = {50, 130, 1}, c.k_lens = {20, 400, 64};  // sequence 0: rows before key 0
    c.causal = true, c.sink = true, c.num_splits = splits;
    add(c);
  }
  {
    ServingCase c;
    c.name = "sink_decode_gqa_pack_page16";
    c.mode = KvMode::kKvCache;
    c.head_dim = 128, c.num_heads = 16, c.num_heads_k = 2;
    c.q_lens = {1, 1, 1, 1}, c.k_lens = {1, 17, 512, 2000};
    c.page_size = 16, c.seqlen_new = 1, c.sink = true, c.num_splits = 0;
    add(c);
  }
  {
    ServingCase c;
    c.name = "sink_alibi_softcap_window";
    c.num_heads = 3, c.num_heads_k = 1;
    c.q_lens = {90}, c.k_lens = {90};
    c.window_left = 16, c.window_right = 0, c.alibi = true, c.softcap = 10.f, c.sink = true;
    add(c);
  }
  // Sinks with forced splits on prefill and decode shapes (the combine adds the sink once),
  // GQA packing unsplit and split (the sink of the packed row's own query head; 32 query heads
  // per KV head take the prefill kernels), rows that see no key under a window, sinks far above
  // and below every score, and the Hopper tile shapes (d64 / d128 / d256).
  for (int splits : {2, 3, 4}) {
    ServingCase c;
    c.name = "sink_prefill_split" + std::to_string(splits);
    c.head_dim = splits == 2 ? 128 : splits == 3 ? 256 : 64;
    c.num_heads = 6, c.num_heads_k = 2;
    c.q_lens = {200, 64, 7}, c.k_lens = {333, 64, 500};
    c.causal = splits != 3, c.sink = true, c.num_splits = splits;
    add(c);
  }
  for (int splits : {1, 2, 4}) {
    ServingCase c;
    c.name = "sink_decode_kv_split" + std::to_string(splits);
    c.mode = KvMode::kKvCache;
    c.head_dim = 128, c.num_heads = 4, c.num_heads_k = 4;
    c.q_lens = {5, 5}, c.k_lens = {40, 700};
    c.seqlen_new = 5, c.causal = true, c.sink = true, c.num_splits = splits;
    add(c);
  }
  for (int splits : {1, 4}) {
    for (int ratio : {8, 32}) {
      ServingCase c;
      c.name = "sink_gqa_pack_r" + std::to_string(ratio) + "_split" + std::to_string(splits);
      c.mode = KvMode::kKvCache;
      c.head_dim = ratio == 8 ? 128 : 64;
      c.num_heads = 2 * ratio, c.num_heads_k = 2;
      c.q_lens = {1, 1, 1}, c.k_lens = {3, 260, 1500};
      c.seqlen_new = 1, c.causal = true, c.sink = true, c.num_splits = splits;
      add(c);
    }
  }
  for (int splits : {1, 2}) {
    ServingCase c;
    c.name = "sink_window_empty_rows_split" + std::to_string(splits);
    c.num_heads = 3, c.num_heads_k = 3;
    c.q_lens = {150, 40}, c.k_lens = {60, 300};  // sequence 0: rows before key -2 see nothing
    c.window_left = 5, c.window_right = 2, c.sink = true, c.num_splits = splits;
    add(c);
  }
  for (float shift : {-60.f, 60.f}) {
    ServingCase c;
    c.name = shift > 0 ? "sink_far_above_split3" : "sink_far_below_split1";
    c.num_heads = 4, c.num_heads_k = 1;
    c.q_lens = {70, 1}, c.k_lens = {200, 90};
    c.causal = true, c.sink = true, c.sink_shift = shift, c.num_splits = shift > 0 ? 3 : 1;
    add(c);
  }
  // 5. Prefix ranges: ranges crossing key tiles (64 / 128) and split boundaries, with causal and
  //    window masks, empty and out-of-range slots, rows of decode.
  {
    ServingCase c;
    c.name = "ranges_causal_cross_tiles_split3";
    c.q_lens = {300, 200}, c.k_lens = {300, 260};
    c.causal = true, c.num_splits = 3;
    c.max_ranges = 3;
    c.ranges = {{{5, 70}, {100, 260}, {280, 280}}, {{60, 200}, {250, 400}}};
    add(c);
  }
  {
    ServingCase c;
    c.name = "ranges_window_gqa_lse";
    c.head_dim = 128, c.num_heads = 8, c.num_heads_k = 2;
    c.q_lens = {129, 64}, c.k_lens = {257, 64};
    c.window_left = 32, c.window_right = 0, c.max_ranges = 2;
    c.ranges = {{{128, 250}, {-5, 3}}, {{0, 64}}};
    add(c);
  }
  {
    ServingCase c;
    c.name = "ranges_decode_kv_page16";
    c.mode = KvMode::kKvCache;
    c.q_lens = {4, 4}, c.k_lens = {100, 36};
    c.page_size = 16, c.seqlen_new = 4, c.causal = true, c.max_ranges = 1;
    c.ranges = {{{90, 110}}, {{33, 35}}};
    add(c);
  }
  {  // no range in any slot: must equal the same call without ranges (and run once enabled)
    ServingCase c;
    c.name = "ranges_all_empty";
    c.q_lens = {64}, c.k_lens = {128};
    c.causal = true, c.max_ranges = 2;
    c.ranges = {{{7, 7}, {9, 3}}};
    add(c);
  }
  // Ranges crossing 64 / 128 / 192-row tiles and every split boundary, seqlen_q < seqlen_k,
  // overlapping and touching ranges, unused slots, a sequence without ranges, window + causal,
  // the Hopper tile shapes (d64: three consumer warpgroups on long rows; d256: per-warpgroup
  // blocks), decode rows with splits, and GQA-packed decode (whose row sees every key).
  for (int d : {64, 128, 256}) {
    for (int splits : {1, 4}) {
      ServingCase c;
      c.name = "ranges_causal_d" + std::to_string(d) + "_split" + std::to_string(splits);
      c.head_dim = d, c.num_heads = 4, c.num_heads_k = 2;
      c.q_lens = {300, 129, 200}, c.k_lens = {700, 129, 1200};
      c.causal = true, c.num_splits = splits, c.max_ranges = 4;
      c.ranges = {{{100, 450}, {430, 520}, {520, 700}},  // overlapping, touching, to the end
                  {},                                    // no range at all
                  {{1000, 1100}, {1190, 1300}}};         // the second past seqlen_k
      add(c);
    }
  }
  {
    ServingCase c;
    c.name = "ranges_window_causal_split2";
    c.head_dim = 128, c.num_heads = 2, c.num_heads_k = 1;
    c.q_lens = {400}, c.k_lens = {400};
    c.causal = true, c.window_left = 50, c.num_splits = 2, c.max_ranges = 2;
    c.ranges = {{{60, 200}, {250, 390}}};
    add(c);
  }
  {
    ServingCase c;
    c.name = "ranges_window_both_sides_sink";
    c.head_dim = 64, c.num_heads = 4, c.num_heads_k = 4;
    c.q_lens = {256, 33}, c.k_lens = {512, 20};  // sequence 1: rows before key 0
    c.window_left = 20, c.window_right = 10, c.sink = true, c.max_ranges = 3;
    c.ranges = {{{0, 128}, {300, 301}, {250, 500}}, {{-20, 5}}};
    add(c);
  }
  {
    ServingCase c;
    c.name = "ranges_decode_kv_window_split3";
    c.mode = KvMode::kKvCache;
    c.head_dim = 128, c.num_heads = 4, c.num_heads_k = 2;
    c.q_lens = {8, 8}, c.k_lens = {900, 64};
    c.seqlen_new = 8, c.window_left = 16, c.window_right = 0, c.num_splits = 3;
    c.max_ranges = 2;
    c.ranges = {{{100, 895}, {}}, {{0, 60}}};
    add(c);
  }
  {
    ServingCase c;
    c.name = "ranges_gqa_pack_decode_sink_split2";
    c.mode = KvMode::kKvCache;
    c.head_dim = 128, c.num_heads = 8, c.num_heads_k = 2;
    c.q_lens = {1, 1}, c.k_lens = {300, 50};
    c.seqlen_new = 1, c.causal = true, c.sink = true, c.num_splits = 2, c.max_ranges = 1;
    c.ranges = {{{10, 300}}, {{49, 60}}};
    add(c);
  }
  // 6. Everything at once.
  {
    ServingCase c;
    c.name = "all_paged_varlen_page3_d192v128_sink_ranges_split";
    c.head_dim = 192, c.head_dim_v = 128, c.num_heads = 4, c.num_heads_k = 2;
    c.q_lens = mixed_q, c.k_lens = mixed_k;
    c.page_size = 3, c.seqused_only = true, c.causal = true, c.sink = true, c.num_splits = 0;
    c.max_ranges = 2;
    c.ranges = {{{120, 160}}, {}, {}, {{10, 90}, {95, 96}}, {{250, 299}}};
    add(c);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
std::vector<uint16_t> download16(const DeviceBuffer& b) { return b.download<uint16_t>(); }

class ServingSweep : public ::testing::TestWithParam<ServingCase> {};

TEST_P(ServingSweep, RefusedUntouchedOrMatchesReference) {
  FLARE_REQUIRE_GPU();
  const ServingCase& c = GetParam();
  const HostProblem hp = build_serving_problem(c);
  DeviceProblem dp(hp);
  const flare_mha_fwd_params p = dp.params(hp);
  FLARE_SKIP_IF_NO_KERNEL(p);
  Stream stream;
  const Refusal want = expected_refusal(c);

  if (want.refused) {
    // Every entry point refuses the same way, and nothing is written.
    expect_refused(c.name, p, dp, stream.get(), want.status, {want.message}, true);
    EXPECT_EQ(download16(dp.buf[kBufK]), hp.buf[kBufK]) << c.name << ": K cache written";
    EXPECT_EQ(download16(dp.buf[kBufV]), hp.buf[kBufV]) << c.name << ": V cache written";
    return;
  }

  std::string error;
  const flare_status st = run_flare(p, dp.workspace, stream.get(), &error);
  ASSERT_EQ(st, FLARE_OK) << c.name << ": " << error;
  const std::vector<uint16_t> out = download16(dp.out);
  const std::vector<float> lse = dp.lse.download<float>();
  const ServingReference ref = serving_reference(hp);
  HostProblem appended = hp;
  if (!ref.k_after.empty()) {
    appended.buf[kBufK] = ref.k_after;
    appended.buf[kBufV] = ref.v_after;
    EXPECT_EQ(download16(dp.buf[kBufK]), ref.k_after) << c.name << ": K cache after append";
    EXPECT_EQ(download16(dp.buf[kBufV]), ref.v_after) << c.name << ": V cache after append";
  }
  const Verdict v = check_output(host_params(appended), out, lse, ref.ref);
  if (!v.ok) report_failure(c.name, v.summary());
}

INSTANTIATE_TEST_SUITE_P(Serving, ServingSweep, ::testing::ValuesIn(serving_cases()),
                         [](const ::testing::TestParamInfo<ServingCase>& info) {
                           return info.param.name;
                         });

// ---------------------------------------------------------------------------------------------
// Chunked prefill over a paged cache at the bench shape (8 sequences, 512 new tokens
// each over 8192 cached, 32 / 8 heads, d128, bf16, causal), pages of 1, 16 and 256 rows
// shuffled over the pool, against the fp32 GPU reference run per sequence on the contiguous
// keys; page 16 adds sinks. Bounds as ForwardLarge (test_forward.cpp): relative L2 < 1e-2, lse
// within 1e-3 + 1e-4 |lse|. While a feature is missing the call must refuse and leave out
// poisoned.
class ServingLarge : public ::testing::TestWithParam<int> {};

TEST_P(ServingLarge, PagedChunkedPrefillMatchesGpuReference) {
  FLARE_REQUIRE_GPU();
  const int page = GetParam();
  const int nseq = quick_mode() ? 2 : 8, q_len = 512, k_len = (quick_mode() ? 2048 : 8192) + q_len;
  const int h = 32, hk = 8, d = 128, dtype = FLARE_DTYPE_BF16;
  ServingCase c;  // what the call uses, for expected_refusal
  c.name = "large_page" + std::to_string(page);
  c.head_dim = d, c.num_heads = h, c.num_heads_k = hk, c.dtype = dtype;
  c.q_lens.assign(nseq, q_len), c.k_lens.assign(nseq, k_len);
  c.page_size = page, c.causal = true, c.sink = page == 16;
  const int64_t total_q = int64_t(nseq) * q_len, total_k = int64_t(nseq) * k_len;
  const int64_t q_row = int64_t(h) * d, k_row = int64_t(hk) * d;
  Stream stream;
  const uint64_t seed = mix_seed(base_seed(), 0x5E4100 + page);
  DeviceBuffer q(total_q * q_row * 2), k(total_k * k_row * 2), v(total_k * k_row * 2);
  CUDA_CHECK(gpu_fill_normal(q.get(), total_q * q_row, dtype, seed, stream.get()));
  CUDA_CHECK(gpu_fill_normal(k.get(), total_k * k_row, dtype, seed + 1, stream.get()));
  CUDA_CHECK(gpu_fill_normal(v.get(), total_k * k_row, dtype, seed + 2, stream.get()));

  // The pool: garbage everywhere, then each sequence's rows copied page by page (a page's rows
  // are contiguous in both layouts).
  std::mt19937_64 rng(seed);
  std::vector<int32_t> table;
  int64_t table_stride = 0;
  const int num_pages = make_block_table(c.k_lens, page, 3, rng, &table, &table_stride);
  const int64_t pool_elems = int64_t(num_pages) * page * k_row;
  DeviceBuffer k_pool(pool_elems * 2), v_pool(pool_elems * 2);
  CUDA_CHECK(gpu_fill_normal(k_pool.get(), pool_elems, dtype, seed + 3, stream.get()));
  CUDA_CHECK(gpu_fill_normal(v_pool.get(), pool_elems, dtype, seed + 4, stream.get()));
  for (int b = 0; b < nseq; ++b)
    for (int t = 0; t * page < k_len; ++t) {
      const int rows = std::min(page, k_len - t * page);
      const int64_t src = (int64_t(b) * k_len + int64_t(t) * page) * k_row;
      const int64_t dst = int64_t(table[size_t(b) * table_stride + t]) * page * k_row;
      const size_t bytes = size_t(rows) * k_row * 2;
      CUDA_CHECK(cudaMemcpyAsync(k_pool.as<uint16_t>() + dst, k.as<uint16_t>() + src, bytes,
                                 cudaMemcpyDeviceToDevice, stream.get()));
      CUDA_CHECK(cudaMemcpyAsync(v_pool.as<uint16_t>() + dst, v.as<uint16_t>() + src, bytes,
                                 cudaMemcpyDeviceToDevice, stream.get()));
    }
  DeviceBuffer cu_q, cu_k, dev_table, sink, out(total_q * q_row * 2), lse(total_q * h * 4);
  cu_q.upload(prefix_sums(c.q_lens));
  cu_k.upload(prefix_sums(c.k_lens));
  dev_table.upload(table);
  std::vector<float> sinks;
  if (c.sink) sinks = make_sinks(h, rng);
  sink.upload(sinks);
  CUDA_CHECK(gpu_fill_u16(out.get(), total_q * q_row, kPoison16, stream.get()));
  CUDA_CHECK(gpu_fill_f32(lse.as<float>(), total_q * h, poison_f32(), stream.get()));
  CUDA_CHECK(cudaStreamSynchronize(stream.get()));

  flare_mha_fwd_params p;
  flare_mha_fwd_params_init(&p);
  p.dtype = dtype;
  p.q = q.get(), p.k = k_pool.get(), p.v = v_pool.get(), p.out = out.get();
  p.lse = lse.as<float>();
  p.batch = nseq, p.num_heads = h, p.num_heads_k = hk, p.head_dim = d;
  p.q_row_stride = p.out_row_stride = q_row, p.q_head_stride = p.out_head_stride = d;
  p.k_row_stride = p.v_row_stride = k_row, p.k_head_stride = p.v_head_stride = d;
  p.k_batch_stride = p.v_batch_stride = int64_t(page) * k_row;
  p.cu_seqlens_q = cu_q.as<const int32_t>(), p.cu_seqlens_k = cu_k.as<const int32_t>();
  p.max_seqlen_q = q_len, p.max_seqlen_k = k_len;
  p.block_table = dev_table.as<const int32_t>(), p.block_table_batch_stride = table_stride;
  p.page_block_size = page, p.num_pages = num_pages;
  p.sink = sink.as<const float>();
  p.causal = 1;
  p.num_splits = 0;

  const Refusal want = expected_refusal(c);
  if (want.refused) {
    EXPECT_EQ(flare_mha_fwd(&p, stream.get()), want.status) << flare_last_error();
    EXPECT_NE(std::string(flare_last_error()).find(want.message), std::string::npos)
        << flare_last_error();
    CUDA_CHECK(cudaStreamSynchronize(stream.get()));
    DeviceBuffer zeros(total_q * q_row * 4);
    CUDA_CHECK(cudaMemset(zeros.get(), 0, zeros.bytes()));
    GpuDiffStats st;
    CUDA_CHECK(gpu_diff_stats(out.get(), dtype, zeros.as<float>(), total_q * q_row, &st,
                              stream.get()));
    EXPECT_EQ(st.nonfinite, (unsigned long long)(total_q * q_row)) << "out written";
    return;
  }
  DeviceBuffer ws;
  std::string error;
  ASSERT_EQ(run_flare(p, ws, stream.get(), &error), FLARE_OK) << error;

  DeviceBuffer ref_out(total_q * q_row * 4), ref_lse(total_q * h * 4);
  for (int b = 0; b < nseq; ++b) {
    GpuRefArgs a;
    a.dtype = dtype;
    a.q = q.as<uint16_t>() + int64_t(b) * q_len * q_row;
    a.k = k.as<uint16_t>() + int64_t(b) * k_len * k_row;
    a.v = v.as<uint16_t>() + int64_t(b) * k_len * k_row;
    a.out = ref_out.as<float>() + int64_t(b) * q_len * q_row;
    a.lse = ref_lse.as<float>() + int64_t(b) * h * q_len;  // [h, q_len] of sequence b
    a.batch = 1, a.seqlen_q = q_len, a.seqlen_k = k_len, a.num_heads = h, a.num_heads_k = hk;
    a.head_dim = d;
    a.q_row_stride = q_row, a.k_row_stride = a.v_row_stride = k_row;
    a.q_head_stride = a.k_head_stride = a.v_head_stride = d;
    a.causal = 1;
    a.sink = c.sink ? sink.as<const float>() : nullptr;
    CUDA_CHECK(gpu_reference_attention(a, stream.get()));
  }
  CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  GpuDiffStats st;
  CUDA_CHECK(gpu_diff_stats(out.get(), dtype, ref_out.as<float>(), total_q * q_row, &st,
                            stream.get()));
  const double rel = std::sqrt(st.diff_sq / std::max(st.ref_sq, 1e-300));
  std::printf("ServingLarge page=%d sink=%d: rel_l2=%.3e max_abs=%.3e nonfinite=%llu\n", page,
              int(c.sink), rel, st.max_abs, st.nonfinite);
  EXPECT_EQ(st.nonfinite, 0u) << "unwritten (still poisoned) or non-finite outputs";
  EXPECT_LT(rel, 1e-2) << "relative L2 error against the fp32 GPU reference";
  // flare's varlen lse is [h, total_q]; the reference's [b][h, q_len].
  const std::vector<float> got = lse.download<float>(), want_lse = ref_lse.download<float>();
  size_t bad = 0;
  for (int b = 0; b < nseq; ++b)
    for (int hh = 0; hh < h; ++hh)
      for (int i = 0; i < q_len; ++i) {
        const float g = got[size_t(hh) * total_q + int64_t(b) * q_len + i];
        const float r = want_lse[(size_t(b) * h + hh) * q_len + i];
        if (!std::isfinite(g) || std::fabs(double(g) - r) > 1e-3 + 1e-4 * std::fabs(r)) ++bad;
      }
  EXPECT_EQ(bad, 0u) << "lse mismatches";
}

INSTANTIATE_TEST_SUITE_P(Bf16, ServingLarge, ::testing::Values(1, 16, 256),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return "page" + std::to_string(i.param);
                         });

// ---------------------------------------------------------------------------------------------
// Bad serving fields: the specific status, a message naming the field, nothing written. These
// stay errors whatever the kernels implement.
struct ServingBad {
  const char* name;
  std::function<void(flare_mha_fwd_params&, const DeviceProblem&)> mutate;
  flare_status status;
  const char* message;
};

TEST(ServingBadInput, RejectedWithoutWriting) {
  FLARE_REQUIRE_GPU();
  using P = flare_mha_fwd_params;
  using D = DeviceProblem;
  const ServingBad rows[] = {
      {"page_size_zero", [](P& p, const D&) { p.page_block_size = 0; },
       FLARE_ERROR_INVALID_ARGUMENT, "page_block_size (0) must be >= 1"},
      {"sink_misaligned",
       [](P& p, const D& d) { p.sink = reinterpret_cast<const float*>(d.buf[kBufQ].as<char>() + 2); },
       FLARE_ERROR_MISALIGNED, "sink"},
      {"head_dim_v_unsupported_pair", [](P& p, const D&) { p.head_dim_v = 32; },
       FLARE_ERROR_UNSUPPORTED_HEAD_DIM, "head_dim_v (32) with head_dim (64)"},
      {"ranges_misaligned",
       [](P& p, const D& d) {
         p.mm_prefix_ranges = reinterpret_cast<const int32_t*>(d.buf[kBufQ].as<char>() + 2);
         p.max_mm_prefix_ranges = 1, p.mm_prefix_ranges_batch_stride = 2;
       },
       FLARE_ERROR_MISALIGNED, "mm_prefix_ranges"},
      {"ranges_stride_short",
       [](P& p, const D& d) {
         p.mm_prefix_ranges = d.buf[kBufQ].as<const int32_t>();
         p.max_mm_prefix_ranges = 2, p.mm_prefix_ranges_batch_stride = 3;
       },
       FLARE_ERROR_INVALID_ARGUMENT, "mm_prefix_ranges_batch_stride (3)"},
      {"ranges_negative_count",
       [](P& p, const D& d) {
         p.mm_prefix_ranges = d.buf[kBufQ].as<const int32_t>();
         p.max_mm_prefix_ranges = -1;
       },
       FLARE_ERROR_INVALID_ARGUMENT, "max_mm_prefix_ranges (-1)"},
  };
  ServingCase c;  // a valid paged varlen problem (page 16) that each row breaks once
  c.name = "bad_base";
  c.q_lens = {33, 7}, c.k_lens = {70, 7};
  c.page_size = 16, c.causal = true, c.num_splits = 3, c.seed = 0xBAD;
  const HostProblem hp = build_serving_problem(c);
  Stream stream;
  for (const ServingBad& row : rows) {
    DeviceProblem dp(hp);
    flare_mha_fwd_params p = dp.params(hp);
    row.mutate(p, dp);
    expect_refused(row.name, p, dp, stream.get(), row.status, {row.message});
  }
}

}  // namespace
}  // namespace flare_test
