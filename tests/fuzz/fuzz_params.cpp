// libFuzzer target over flare's host part: read_params -> validate_params -> plan_forward.
//
// The input bytes drive a FuzzedDataProvider that fills a flare_mha_fwd_params field by field:
// sizes from a mix of small, boundary and arbitrary values, strides (mostly multiples of 8),
// fake device pointers (null, aligned, misaligned; validation compares them and never
// dereferences them, so no real memory is behind them), flags, floats (NaN, inf, negative), and
// struct_size (the caller's struct is copied into a heap block of exactly struct_size bytes, so
// AddressSanitizer catches any read past what an older caller would have allocated).
//
// Invariants checked (a violation aborts, which libFuzzer reports as a crash):
//   - no crash, no UB (ASan + UBSan, -fno-sanitize-recover);
//   - every rejection returns an input status (INVALID_ARGUMENT .. NOT_SUPPORTED, never a
//     device or CUDA status) and leaves a non-empty flare_last_error(); a struct_size larger
//     than the library's struct is accepted only with an all-zero tail;
//   - for accepted params, plan_forward on a random device (compute capability 8.x / 9.0 /
//     12.x, SM count, opt-in shared memory) and Tuning gives 1 <= num_splits <= 128 (forced
//     counts never raised), kernel_head_dim >= head_dim and one of the compiled head dims, a
//     family that matches the device, a tile whose split count is the heuristic's over that
//     same tile, 256-byte aligned workspace regions (rotated q, split accumulators, tile
//     counter) that lie within workspace_bytes and do not overlap, a tile counter exactly for
//     persistent Hopper launches, and a CUDA grid within the launch limits; without a
//     workspace the plan needs none unless it forces splits or rotates q.
//   - the serving fields (fill_serving, check_serving_*): an older caller's struct never sets
//     them; accepted params pass validate_serving_fields and serving_features_not_yet_supported
//     (so a feature the GPU kernels lack never reaches a plan) and obey the documented rules
//     (head dims, sink / range alignment and strides, paged KV modes and page size); the split
//     accumulators hold head_dim_v columns; paged KV is never refused for its page size or
//     for varlen mode (every page size >= 1 runs, paged varlen runs).
//   - the FP8 fields (fill_fp8): accepted FP8 K/V plan onto the decode kernel's FP8 instances
//     and nothing else does; the SmallPages instance is planned exactly for paged decode-family
//     launches with pages under 16 rows.
//   - validation and planning read no device memory: the per-sequence arrays (cu_seqlens,
//     seqused_k, cache_seqlens, leftpad_k, block_table, sink, mm_prefix_ranges) sometimes point
//     into a host arena that AddressSanitizer poisons, holding what would be bad contents if
//     anyone read them (ranges with start > end, negative and out-of-pool page indices,
//     decreasing cu_seqlens): any read is an ASan report.
//
// Build (see .ci/steps/fuzz.sh):
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
//     -Iinclude -Isrc -I<cuda>/include tests/fuzz/fuzz_params.cpp src/api/error.cpp
//     src/api/validate.cpp src/api/layout_check.cpp src/api/validate_serving.cpp src/api/validate_fp8.cpp
//     src/plan/plan.cpp src/plan/tuning.cpp
//     src/kernels/sm90/tma_maps.cpp src/kernels/sm90/variant.cpp -o flare_fuzz_params
#include <fuzzer/FuzzedDataProvider.h>
#include <sanitizer/asan_interface.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "api/error.h"
#include "api/validate.h"
#include "api/validate_serving.h"
#include "common/sequence.h"
#include "common/fp8_params.h"
#include "common/narrow.h"
#include "common/serving_semantics.h"
#include "common/split.h"
#include "common/tile_config.h"
#include "flare/flare.h"
#include "kernels/sm90/tma_maps.h"
#include "kernels/sm90/variant.h"
#include "plan/plan.h"

namespace {

[[noreturn]] void violated(const char* what, const flare_mha_fwd_params& p, long long a,
                           long long b) {
  std::fprintf(stderr,
               "INVARIANT VIOLATED: %s (%lld, %lld)\n  batch=%d sq=%d sk=%d h=%d hk=%d d=%d "
               "splits=%d max_sq=%d max_sk=%d varlen=%d cache=%d paged=%d knew=%d rot=%d\n",
               what, a, b, p.batch, p.seqlen_q, p.seqlen_k, p.num_heads, p.num_heads_k,
               p.head_dim, p.num_splits, p.max_seqlen_q, p.max_seqlen_k,
               p.cu_seqlens_q != nullptr, p.cache_seqlens != nullptr, p.block_table != nullptr,
               p.k_new != nullptr, p.rotary_cos != nullptr);
  std::abort();
}

#define REQUIRE(cond, p, a, b) \
  do {                         \
    if (!(cond)) violated(#cond, p, (long long)(a), (long long)(b)); \
  } while (0)

int32_t pick_int(FuzzedDataProvider& in, int32_t small_lo, int32_t small_hi) {
  static const int32_t kEdges[] = {0,       1,       -1,      2,          7,          8,
                                   15,      16,      17,      63,         64,         65,
                                   127,     128,     129,     255,        256,        257,
                                   1024,    65535,   65536,   1 << 20,    (1 << 30) - 1,
                                   1 << 30, (1 << 30) + 1,    0x7fffff80, 0x7fffffff,
                                   -0x7fffffff - 1};
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
    case 1: return in.ConsumeIntegralInRange<int32_t>(small_lo, small_hi);
    case 2: return in.PickValueInArray(kEdges);
    default: return in.ConsumeIntegral<int32_t>();
  }
}

int64_t pick_stride(FuzzedDataProvider& in) {
  static const int64_t kEdges[] = {0,
                                   8,
                                   64,
                                   128,
                                   1 << 16,
                                   int64_t(1) << 31,
                                   int64_t(1) << 40,
                                   int64_t(1) << 60,
                                   std::numeric_limits<int64_t>::max() & ~int64_t(7),
                                   -8,
                                   std::numeric_limits<int64_t>::min()};
  switch (in.ConsumeIntegralInRange<int>(0, 4)) {
    case 0:
    case 1: return 8 * in.ConsumeIntegralInRange<int64_t>(0, 1 << 14);
    case 2: return in.PickValueInArray(kEdges);
    case 3: return in.ConsumeIntegralInRange<int64_t>(-16, 1 << 16);  // odd strides included
    default: return in.ConsumeIntegral<int64_t>();
  }
}

float pick_float(FuzzedDataProvider& in, float common) {
  static const float kEdges[] = {0.f,   1.f,    0.125f, 30.f,   -1.f,  -0.f, 1e-30f, 1e30f,
                                 1e-45f, 3.4e38f, std::numeric_limits<float>::infinity(),
                                 -std::numeric_limits<float>::infinity(),
                                 std::numeric_limits<float>::quiet_NaN()};
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: return common;
    case 1: return in.PickValueInArray(kEdges);
    case 2: return in.ConsumeFloatingPointInRange<float>(0.f, 100.f);
    default: {
      const uint32_t bits = in.ConsumeIntegral<uint32_t>();
      float f;
      std::memcpy(&f, &bits, sizeof f);
      return f;
    }
  }
}

// A fake device address: null, 256-aligned, or misaligned by a few bytes. Never dereferenced.
const void* pick_ptr(FuzzedDataProvider& in, int null_weight) {
  const int kind = in.ConsumeIntegralInRange<int>(0, null_weight + 3);
  if (kind < null_weight) return nullptr;
  uintptr_t base = uintptr_t(0x7f0000000000ull) + (in.ConsumeIntegralInRange<uintptr_t>(1, 1 << 20) << 8);
  if (kind == null_weight + 3) base += in.ConsumeIntegralInRange<uintptr_t>(1, 15);
  if (kind == null_weight + 2 && in.ConsumeBool()) base += 4;  // word- but not 16-byte aligned
  return reinterpret_cast<const void*>(base);
}

// "Device memory" the host part must never read: 64 KiB of int32 values that would be bad
// input (ranges with start > end, negative and huge page indices, decreasing offsets),
// poisoned for AddressSanitizer once. Pointers into it are 16-byte aligned.
const void* poisoned_arena(size_t offset_words) {
  static int32_t* arena = [] {
    constexpr size_t kWords = 16384;
    auto* a = static_cast<int32_t*>(std::aligned_alloc(256, kWords * sizeof(int32_t)));
    static const int32_t kBad[] = {100, 5, -1, 0x7fffffff, -0x7fffffff - 1, 3, 1 << 30, -7};
    for (size_t i = 0; i < kWords; ++i) a[i] = kBad[i % 8];
    ASAN_POISON_MEMORY_REGION(a, kWords * sizeof(int32_t));
    return a;
  }();
  return arena + (offset_words % 16000) / 4 * 4;
}

// Points some of the per-sequence arrays that are set into the poisoned arena.
void point_into_arena(FuzzedDataProvider& in, flare_mha_fwd_params& p) {
  auto maybe = [&](const auto*& ptr) {
    using E = std::remove_cv_t<std::remove_pointer_t<std::remove_reference_t<decltype(ptr)>>>;
    if (ptr != nullptr && in.ConsumeBool())
      ptr = static_cast<const E*>(poisoned_arena(in.ConsumeIntegral<uint16_t>()));
  };
  maybe(p.cu_seqlens_q);
  maybe(p.cu_seqlens_k);
  maybe(p.seqused_k);
  maybe(p.cache_seqlens);
  maybe(p.leftpad_k);
  maybe(p.cache_batch_idx);
  maybe(p.block_table);
  maybe(p.sink);
  maybe(p.mm_prefix_ranges);
  maybe(p.alibi_slopes);
}

// The serving fields: head dims up to 512 and head_dim_v, sinks, multimodal prefix ranges, and
// paged KV in varlen at any page size. Mostly left unset, so the other fields keep their weight.
void fill_serving(FuzzedDataProvider& in, flare_mha_fwd_params& p) {
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0) {
    static const int32_t kDims[] = {1, 7, 59, 111, 192, 200, 256, 264, 511, 512, 513};
    p.head_dim = in.ConsumeBool() ? in.PickValueInArray(kDims) : pick_int(in, 1, 520);
  }
  switch (in.ConsumeIntegralInRange<int>(0, 5)) {
    case 0: p.head_dim_v = p.head_dim; break;
    case 1: p.head_dim_v = in.ConsumeBool() ? 128 : pick_int(in, -1, 520); break;
    case 2: p.head_dim = 192, p.head_dim_v = 128; break;
    default: break;  // 0: head_dim
  }
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0)
    p.sink = static_cast<const float*>(pick_ptr(in, 0));
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0) {
    p.mm_prefix_ranges = static_cast<const int32_t*>(pick_ptr(in, 1));
    p.max_mm_prefix_ranges = in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(0, 8)
                                              : pick_int(in, -1, 64);
    p.mm_prefix_ranges_batch_stride =
        in.ConsumeBool() ? 2 * int64_t(p.max_mm_prefix_ranges) + in.ConsumeIntegralInRange<int>(-1, 2)
                         : pick_stride(in);
  }
  if (p.cu_seqlens_q != nullptr && in.ConsumeIntegralInRange<int>(0, 2) == 0) {  // paged varlen
    p.block_table = static_cast<const int32_t*>(pick_ptr(in, 0));
    p.block_table_batch_stride =
        in.ConsumeBool() ? in.ConsumeIntegralInRange<int64_t>(-1, 4096) : pick_stride(in);
    p.page_block_size = in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(0, 300)
                                         : pick_int(in, -16, 1024);
    p.num_pages = pick_int(in, 0, 1 << 16);
    if (in.ConsumeBool()) p.cu_seqlens_k = nullptr;  // key counts from seqused_k alone
  } else if (p.block_table != nullptr && in.ConsumeBool()) {
    p.page_block_size = pick_int(in, 1, 300);  // KV cache: any page size
  }
  if (p.block_table != nullptr && in.ConsumeIntegralInRange<int>(0, 3) == 0) {
    // Whole pages in k / v (the page stride of a pool of page_block_size rows), so that the
    // extent checks let more paged calls through to the planner.
    int64_t page_stride = 0;
    if (!__builtin_mul_overflow(int64_t(p.page_block_size), p.k_row_stride, &page_stride))
      p.k_batch_stride = p.v_batch_stride = page_stride;
  }
  if (in.ConsumeIntegralInRange<int>(0, 2) == 0) point_into_arena(in, p);
}

// The FP8 fields: K/V (sometimes q) as e4m3 / e5m2 codes or a bad type, descales set or not,
// with FlashAttention-3's [batch, heads_k] strides, zeros (per tensor) or picked strides.
// Mostly left unset.
void fill_fp8(FuzzedDataProvider& in, flare_mha_fwd_params& p) {
  if (in.ConsumeIntegralInRange<int>(0, 3) != 0) return;
  static const int32_t kTypes[] = {FLARE_DTYPE_E4M3, FLARE_DTYPE_E5M2, 0, 1, 5, -1};
  p.kv_dtype = in.PickValueInArray(kTypes);
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0) p.q_dtype = in.PickValueInArray(kTypes);
  auto descale = [&](const float*& ptr, int64_t& batch_stride, int64_t& head_stride, bool fp8) {
    if (fp8 ? in.ConsumeIntegralInRange<int>(0, 7) == 0 : in.ConsumeIntegralInRange<int>(0, 7) != 0)
      return;  // mostly: set exactly for FP8 tensors
    ptr = static_cast<const float*>(pick_ptr(in, 0));
    switch (in.ConsumeIntegralInRange<int>(0, 2)) {
      case 0: batch_stride = p.num_heads_k, head_stride = 1; break;
      case 1: batch_stride = head_stride = 0; break;
      default: batch_stride = pick_stride(in), head_stride = pick_stride(in); break;
    }
  };
  const bool kv = flare::is_fp8_dtype(p.kv_dtype), q = flare::is_fp8_dtype(p.q_dtype);
  descale(p.k_descale, p.k_descale_batch_stride, p.k_descale_head_stride, kv);
  descale(p.v_descale, p.v_descale_batch_stride, p.v_descale_head_stride, kv);
  descale(p.q_descale, p.q_descale_batch_stride, p.q_descale_head_stride, q);
}

void fill(FuzzedDataProvider& in, flare_mha_fwd_params& p) {
  flare_mha_fwd_params_init(&p);
  p.dtype = in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(0, 1) : pick_int(in, -2, 3);

  p.q = pick_ptr(in, 1);
  p.k = pick_ptr(in, 1);
  p.v = pick_ptr(in, 1);
  p.out = const_cast<void*>(pick_ptr(in, 1));
  p.lse = static_cast<float*>(const_cast<void*>(pick_ptr(in, 4)));

  p.batch = pick_int(in, 0, 64);
  p.seqlen_q = pick_int(in, 0, 4096);
  p.seqlen_k = pick_int(in, 0, 1 << 17);
  p.num_heads = pick_int(in, 0, 130);
  p.num_heads_k = in.ConsumeBool() ? p.num_heads : pick_int(in, 0, 130);
  p.head_dim = in.ConsumeBool() ? 8 * in.ConsumeIntegralInRange<int32_t>(0, 33) : pick_int(in, -8, 300);

  int64_t* strides[] = {&p.q_batch_stride, &p.q_row_stride, &p.q_head_stride,
                        &p.k_batch_stride, &p.k_row_stride, &p.k_head_stride,
                        &p.v_batch_stride, &p.v_row_stride, &p.v_head_stride,
                        &p.out_batch_stride, &p.out_row_stride, &p.out_head_stride};
  for (int64_t* s : strides) *s = pick_stride(in);

  p.softmax_scale = pick_float(in, 0.f);
  p.softcap = pick_float(in, 0.f);
  p.causal = in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(0, 1) : pick_int(in, -1, 2);
  p.window_left = pick_int(in, -2, 512);
  p.window_right = pick_int(in, -2, 512);
  p.alibi_slopes = static_cast<const float*>(pick_ptr(in, 4));
  p.alibi_batch_stride = in.ConsumeBool() ? 0 : pick_stride(in);

  if (in.ConsumeIntegralInRange<int>(0, 3) == 0) {  // varlen
    p.cu_seqlens_q = static_cast<const int32_t*>(pick_ptr(in, 0));
    p.cu_seqlens_k = static_cast<const int32_t*>(pick_ptr(in, 1));
  }
  p.seqused_k = static_cast<const int32_t*>(pick_ptr(in, 6));
  p.max_seqlen_q = pick_int(in, -1, 4096);
  p.max_seqlen_k = pick_int(in, -1, 1 << 17);

  if (in.ConsumeIntegralInRange<int>(0, 2) == 0) {  // KV cache
    p.cache_seqlens = static_cast<const int32_t*>(pick_ptr(in, 0));
    p.cache_batch_idx = static_cast<const int32_t*>(pick_ptr(in, 4));
    p.leftpad_k = static_cast<const int32_t*>(pick_ptr(in, 3));
    if (in.ConsumeBool()) {
      p.block_table = static_cast<const int32_t*>(pick_ptr(in, 0));
      p.block_table_batch_stride = in.ConsumeBool() ? in.ConsumeIntegralInRange<int64_t>(-1, 4096)
                                                    : pick_stride(in);
      switch (in.ConsumeIntegralInRange<int>(0, 2)) {
        case 0: p.page_block_size = 16 * in.ConsumeIntegralInRange<int32_t>(0, 64); break;
        case 1: p.page_block_size = in.ConsumeIntegralInRange<int32_t>(1, 300); break;
        default: p.page_block_size = pick_int(in, -16, 1024); break;
      }
      p.num_pages = pick_int(in, 0, 1 << 16);
    }
    if (in.ConsumeBool()) {
      p.k_new = pick_ptr(in, 0);
      p.v_new = pick_ptr(in, 1);
      p.seqlen_new = pick_int(in, 0, 64);
      int64_t* ns[] = {&p.k_new_batch_stride, &p.k_new_row_stride, &p.k_new_head_stride,
                       &p.v_new_batch_stride, &p.v_new_row_stride, &p.v_new_head_stride};
      for (int64_t* s : ns) *s = pick_stride(in);
      if (in.ConsumeBool()) {
        p.rotary_cos = pick_ptr(in, 0);
        p.rotary_sin = pick_ptr(in, 1);
        p.rotary_dim = in.ConsumeBool() ? 2 * in.ConsumeIntegralInRange<int32_t>(0, 128)
                                        : pick_int(in, -2, 300);
        p.rotary_interleaved = pick_int(in, 0, 1);
        p.rotary_max_positions = pick_int(in, 0, 1 << 17);
      }
    }
  } else if (in.ConsumeIntegralInRange<int>(0, 15) == 0) {
    // Cache-only fields without a cache: must be rejected.
    p.k_new = pick_ptr(in, 2);
    p.block_table = static_cast<const int32_t*>(pick_ptr(in, 2));
    p.rotary_dim = pick_int(in, 0, 64);
  }

  p.num_splits = in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(0, 128) : pick_int(in, -1, 130);
  p.workspace = const_cast<void*>(pick_ptr(in, 2));
  p.workspace_size = in.ConsumeBool() ? 0 : in.ConsumeIntegral<size_t>();
  p.p_dropout = in.ConsumeIntegralInRange<int>(0, 15) == 0 ? pick_float(in, 0.1f) : 0.f;
  fill_serving(in, p);
  fill_fp8(in, p);
}

unsigned __int128 region(unsigned __int128 a, unsigned __int128 b, unsigned __int128 c,
                         unsigned __int128 d, unsigned __int128 e) {
  return a * b * c * d * e;  // operands < 2^32 each but for e (bytes): no 128-bit overflow
}

// The Hopper-only host decisions for an accepted launch (see the header comment).
void check_sm90_choices(const flare_mha_fwd_params& p, int kernel_head_dim) {
  // Every view a qualifying launch encodes (K, V; Q with view index 2) is one the encoder takes.
  auto check_view = [&](const flare::TmaTensorView& t, int which) {
    // V's rows (view index 1) have v_head_dim columns, Q's and K's head_dim.
    REQUIRE(t.dims[0] == uint64_t(which == 1 ? flare::v_head_dim(p) : p.head_dim), p, t.dims[0],
            which);
    for (int i = 0; i < 4; ++i)
      REQUIRE(t.dims[i] >= 1 && t.dims[i] <= (uint64_t(1) << 32), p, t.dims[i], i);
    for (int i = 0; i < 3; ++i)
      REQUIRE(t.strides_bytes[i] > 0 && t.strides_bytes[i] % 16 == 0 &&
                  t.strides_bytes[i] < (uint64_t(1) << 40),
              p, t.strides_bytes[i], i);
  };
  const char* reason = flare::kv_tma_unsupported_reason(p);
  if (p.block_table != nullptr) REQUIRE(reason != nullptr, p, 0, 0);
  if (reason == nullptr)
    for (int is_v = 0; is_v < 2; ++is_v) check_view(flare::kv_tma_view(p, is_v != 0), is_v);
  if (flare::q_tma_unsupported_reason(p) == nullptr) check_view(flare::q_tma_view(p), 2);
  // The Hopper kernel the dispatcher runs (d96 on d128, d192 on d256; none for d32): at least
  // as wide as the head dim, and the variant is chosen for that kernel.
  const int sm90_hd = flare::sm90_kernel_head_dim(kernel_head_dim);
  if (sm90_hd == 0) return;
  REQUIRE(sm90_hd >= p.head_dim && sm90_hd % 64 == 0, p, sm90_hd, p.head_dim);
  const flare::Sm90Variant v = flare::choose_sm90_variant(p, sm90_hd, flare::Sm90Overrides{});
  if (p.block_table != nullptr && sm90_hd > 128) REQUIRE(!v.warp_specialized, p, 0, 0);
  if (!v.warp_specialized) REQUIRE(!v.persistent && !v.pingpong, p, v.persistent, v.pingpong);
  // Paged warp-specialised launches: the instances of the default key block and two consumer
  // warpgroups only (persistent or not), at d64 / d128.
  if (p.block_table != nullptr && v.warp_specialized)
    REQUIRE(sm90_hd <= 128 && v.block_n == flare::sm90_default_block_n(sm90_hd) &&
                v.consumer_wgs == 2,
            p, v.block_n, v.consumer_wgs);
  // The long key block only where its (persistent, unpaged) instance exists.
  REQUIRE(v.block_n == flare::sm90_default_block_n(sm90_hd) ||
              (v.block_n == flare::sm90_long_block_n(sm90_hd) && v.persistent &&
               p.block_table == nullptr),
          p, v.block_n, sm90_hd);
  // Clusters only at d512 where every K/V block goes by TMA, one tile per CTA.
  REQUIRE(v.cluster_m == 1 ||
              (v.cluster_m == 2 && flare::sm90_ws_splits_o(sm90_hd) && reason == nullptr &&
               flare::kv_tma_rows_exact(p) && !v.persistent && v.warp_specialized),
          p, v.cluster_m, sm90_hd);
  // Three consumer warpgroups only where their (d64, persistent, unpaged) instance exists,
  // and then with the default key block.
  REQUIRE(v.consumer_wgs == 2 ||
              (v.consumer_wgs == 3 && flare::sm90_max_consumer_wgs(sm90_hd) >= 3 &&
               v.persistent && p.block_table == nullptr &&
               v.block_n == flare::sm90_default_block_n(sm90_hd)),
          p, v.consumer_wgs, sm90_hd);
}

void check_plan(const flare_mha_fwd_params& p, const flare::FwdPlan& plan,
                const flare::DeviceInfo& dev, const flare::Tuning& tuning) {
  using flare::FwdKernelFamily;
  REQUIRE(plan.num_splits >= 1 && plan.num_splits <= 128, p, plan.num_splits, 0);
  if (p.num_splits > 0) REQUIRE(plan.num_splits <= p.num_splits, p, plan.num_splits, p.num_splits);
  REQUIRE(plan.kernel_head_dim >= p.head_dim, p, plan.kernel_head_dim, p.head_dim);
  const int kd = plan.kernel_head_dim;
  REQUIRE(kd == 32 || kd == 64 || kd == 96 || kd == 128 || kd == 192 || kd == 256 || kd == 512,
          p, kd, 0);
  // V column parts: together they cover v_head_dim, each at most 256 columns (sm80) or the
  // Hopper kernel's width; more than one only on the d512 kernel.
  REQUIRE(plan.v_parts >= 1 && plan.kernel_head_dim_v >= 1 &&
              int64_t(plan.v_parts) * plan.kernel_head_dim_v >= flare::v_head_dim(p) &&
              int64_t(plan.v_parts - 1) * plan.kernel_head_dim_v < flare::v_head_dim(p) &&
              (plan.v_parts == 1 || kd == 512),
          p, plan.v_parts, plan.kernel_head_dim_v);
  REQUIRE(plan.max_seqlen_q >= 1, p, plan.max_seqlen_q, 0);

  // The family fits the device: Hopper kernels on 9.x only, never for decode shapes.
  const bool sm90 = plan.family == FwdKernelFamily::kSm90WarpSpecialized ||
                    plan.family == FwdKernelFamily::kSm90AllThreads;
  if (sm90)
    REQUIRE(dev.cc_major == 9 &&
                (plan.sm90_head_dim == flare::sm90_kernel_head_dim(kd) ||
                 (kd == 192 && plan.sm90_head_dim == 192 && tuning.sm90.d192 == 1)) &&
                plan.sm90_head_dim != 0 && plan.max_seqlen_q > flare::kSm80DecodeMaxRows,
            p, dev.cc_major, plan.sm90_head_dim);
  // The Hopper d512 kernel: warp-specialised and unpaged only, one 64-row tile split O's 512
  // columns between its consumer warpgroups (one V part).
  if (sm90 && plan.sm90_head_dim == 512)
    REQUIRE(plan.family == FwdKernelFamily::kSm90WarpSpecialized && !flare::is_paged(p) &&
                plan.tile.block_m == 64 && plan.tile.block_n == 32 && plan.v_parts == 1,
            p, int(plan.family), plan.tile.block_m);
  // Clusters: d512 only, never persistent (no tile counter).
  if (plan.family == FwdKernelFamily::kSm90WarpSpecialized && plan.sm90.cluster_m != 1)
    REQUIRE(plan.sm90.cluster_m == 2 && plan.sm90_head_dim == 512 && !plan.sm90.persistent &&
                plan.tile_counter_offset == flare::kNoRegion,
            p, plan.sm90.cluster_m, plan.sm90_head_dim);
  if (plan.family == FwdKernelFamily::kSm80Decode)
    REQUIRE(plan.max_seqlen_q <= flare::kSm80DecodeMaxRows ||
                (plan.packed_gqa && plan.max_seqlen_q <= tuning.decode_packed_rows),
            p, plan.max_seqlen_q, tuning.decode_packed_rows);
  // FP8 K/V run on the decode kernel's FP8 instances only; the SmallPages instance only on the
  // decode families, for pages under a warp's 16-row key group.
  REQUIRE((plan.family == FwdKernelFamily::kSm80DecodeFp8) ==
              (flare::has_fp8_kv(p) && plan.family != FwdKernelFamily::kNone),
          p, int(plan.family), 0);
  const bool decode_family = plan.family == FwdKernelFamily::kSm80Decode ||
                             plan.family == FwdKernelFamily::kSm80DecodeFp8;
  REQUIRE(plan.small_pages ==
              (decode_family && flare::is_paged(p) && p.page_block_size < flare::kSm80DecodeWarpKeys),
          p, plan.small_pages, p.page_block_size);
  // Narrow launches (element-granular loads and stores) exactly where some row is not 16-byte
  // addressable; they never take the Hopper kernels (TMA / 16-byte cp.async only). Accepted
  // tensors are element aligned.
  REQUIRE(plan.narrow == flare::is_narrow(p), p, plan.narrow, 0);
  if (plan.narrow) REQUIRE(!sm90, p, int(plan.family), 0);
  for (const void* t : {p.q, p.k, p.v, static_cast<const void*>(p.out)})
    REQUIRE(reinterpret_cast<uintptr_t>(t) % 2 == 0, p, reinterpret_cast<uintptr_t>(t), 0);
  if (plan.family == FwdKernelFamily::kNone) {
    REQUIRE(dev.smem_optin > 0 && !sm90, p, dev.smem_optin, 0);
    return;
  }
  REQUIRE(plan.tile.block_m >= 16 && plan.tile.block_n >= 32 && plan.tile.ctas_per_sm >= 1, p,
          plan.tile.block_m, plan.tile.block_n);

  // The split count is the heuristic's over the plan's own tile.
  // Varlen (paged varlen by seqused_k alone too): max_seqlen_k; else seqlen_k.
  const int max_seqlen_k = flare::max_key_rows(plan.p);
  const long long m_blocks =
      (static_cast<long long>(plan.max_seqlen_q) + plan.tile.block_m - 1) / plan.tile.block_m;
  const long long n_blocks =
      (static_cast<long long>(max_seqlen_k) + plan.tile.block_n - 1) / plan.tile.block_n;
  if (p.num_splits == 0 && p.workspace != nullptr) {
    const long long blocks =
        static_cast<long long>(plan.p.batch) * plan.p.num_heads * m_blocks * plan.v_parts;
    const long long slots = static_cast<long long>(dev.num_sms) * plan.tile.ctas_per_sm;
    int expected = flare::num_splits_heuristic(int(std::min(blocks, 0x7fffffffLL)),
                                               int(std::min(slots, 0x7fffffffLL)),
                                               int(n_blocks), 128);
    expected = std::max(1, std::min(expected, 65535 / plan.p.batch));
    REQUIRE(plan.num_splits == expected, p, plan.num_splits, expected);
  }
  if (p.num_splits == 0 && p.workspace == nullptr) REQUIRE(plan.num_splits == 1, p, plan.num_splits, 0);

  // CUDA grid of the forward kernel: (m_blocks, heads, batch * splits).
  REQUIRE(m_blocks <= 0x7fffffffLL, p, m_blocks, 0);
  REQUIRE(plan.p.num_heads >= 1 && plan.p.num_heads <= 65535, p, plan.p.num_heads, 0);
  REQUIRE(static_cast<long long>(plan.p.batch) * plan.num_splits <= 65535, p, plan.p.batch,
          plan.num_splits);

  // A tile counter exactly for persistent warp-specialised launches (16-bit or FP8), which need
  // a workspace.
  const bool counter = (plan.family == FwdKernelFamily::kSm90WarpSpecialized ||
                        plan.family == FwdKernelFamily::kSm90Fp8Prefill) &&
                       plan.sm90.persistent;
  REQUIRE(counter == (plan.tile_counter_offset != flare::kNoRegion), p, counter, 0);
  if (counter) REQUIRE(p.workspace != nullptr, p, 0, 0);

  const size_t ws = plan.workspace_bytes;
  REQUIRE(ws % flare::kWorkspaceAlignment == 0 || ws == SIZE_MAX, p, ws, 0);
  if (p.workspace == nullptr && p.num_splits <= 1)
    REQUIRE(ws == 0 || plan.rotate_q, p, ws, 0);
  if (ws == SIZE_MAX) return;  // saturated: more than any address space; flare_mha_fwd refuses
  // Every region aligned, within the workspace, and disjoint from the others.
  struct Region { size_t offset; unsigned __int128 bytes; const char* what; };
  Region regions[4];
  int n = 0;
  if (plan.rotate_q)
    regions[n++] = {plan.q_rot_offset, region(p.batch, p.seqlen_q, p.num_heads, p.head_dim, 2),
                    "q_rot region"};
  if (plan.num_splits > 1) {
    const unsigned __int128 rows =
        static_cast<unsigned __int128>(plan.p.batch) * plan.p.num_heads * plan.max_seqlen_q;
    regions[n++] = {plan.o_accum_offset,
                    rows * plan.num_splits *
                        flare::split_accum_row_floats(flare::v_head_dim(plan.p)) * 4,
                    "o_accum region"};
    regions[n++] = {plan.lse_accum_offset, rows * plan.num_splits * 4, "lse_accum region"};
  }
  if (counter) regions[n++] = {plan.tile_counter_offset, flare::kSm90TileCounterBytes, "tile counter"};
  for (int i = 0; i < n; ++i) {
    const Region& r = regions[i];
    if (r.offset % flare::kWorkspaceAlignment != 0) violated(r.what, p, r.offset, 0);
    if (static_cast<unsigned __int128>(r.offset) + r.bytes > ws) violated(r.what, p, r.offset, ws);
    for (int j = 0; j < i; ++j) {
      const Region& o = regions[j];
      const bool disjoint = static_cast<unsigned __int128>(r.offset) + r.bytes <= o.offset ||
                            static_cast<unsigned __int128>(o.offset) + o.bytes <= r.offset;
      if (!disjoint) violated(r.what, p, r.offset, o.offset);
    }
  }
}

// A struct that ends before the serving fields never sets them.
void check_serving_read(uint32_t struct_size, const flare_mha_fwd_params& full) {
  if (struct_size > offsetof(flare_mha_fwd_params, sink)) return;
  REQUIRE(full.sink == nullptr && full.mm_prefix_ranges == nullptr, full, struct_size, 0);
  REQUIRE(full.mm_prefix_ranges_batch_stride == 0 && full.max_mm_prefix_ranges == 0, full,
          struct_size, full.max_mm_prefix_ranges);
  REQUIRE(full.head_dim_v == 0, full, struct_size, full.head_dim_v);
}

// Accepted params: the serving checks agree (validate_params runs them, so nothing the GPU
// kernels lack reaches a plan) and the documented rules hold.
void check_serving_accepted(const flare_mha_fwd_params& p) {
  flare::clear_error();
  REQUIRE(flare::validate_serving_fields(p) == FLARE_OK, p, 0, 0);
  REQUIRE(flare::serving_features_not_yet_supported(p) == FLARE_OK, p, 0, 0);
  REQUIRE(p.head_dim >= 1 && p.head_dim <= 512, p, p.head_dim, 0);
  REQUIRE(p.head_dim_v == 0 || p.head_dim_v == p.head_dim ||
              (p.head_dim == 192 && p.head_dim_v == 128),
          p, p.head_dim, p.head_dim_v);
  REQUIRE(reinterpret_cast<uintptr_t>(p.sink) % 4 == 0, p, 0, 0);
  if (p.mm_prefix_ranges != nullptr) {
    REQUIRE(reinterpret_cast<uintptr_t>(p.mm_prefix_ranges) % 4 == 0, p, 0, 0);
    REQUIRE(p.max_mm_prefix_ranges >= 0, p, p.max_mm_prefix_ranges, 0);
    REQUIRE(p.mm_prefix_ranges_batch_stride >= 2 * int64_t(p.max_mm_prefix_ranges), p,
            p.mm_prefix_ranges_batch_stride, p.max_mm_prefix_ranges);
  } else {
    REQUIRE(p.max_mm_prefix_ranges == 0, p, p.max_mm_prefix_ranges, 0);
  }
  if (p.block_table != nullptr) {
    REQUIRE(p.cache_seqlens != nullptr || p.cu_seqlens_q != nullptr, p, 0, 0);
    REQUIRE(p.page_block_size >= 1 && p.num_pages >= 1 && p.block_table_batch_stride >= 1, p,
            p.page_block_size, p.num_pages);
  }
  if (p.cu_seqlens_q != nullptr && p.cu_seqlens_k == nullptr)  // paged varlen by seqused_k
    REQUIRE(p.block_table != nullptr && p.seqused_k != nullptr, p, 0, 0);
}

// The split accumulators of a plan hold head_dim_v columns a row (v_head_dim <= head_dim for
// every accepted pair, so a plan sized by head_dim is large enough).
void check_serving_plan(const flare_mha_fwd_params& p, const flare::FwdPlan& plan) {
  if (plan.num_splits <= 1 || plan.workspace_bytes == SIZE_MAX) return;
  const unsigned __int128 rows = static_cast<unsigned __int128>(plan.p.batch) *
                                 plan.p.num_heads * plan.max_seqlen_q * plan.num_splits;
  const unsigned __int128 o_end =
      plan.o_accum_offset +
      rows * static_cast<unsigned>(flare::split_accum_row_floats(flare::v_head_dim(p))) * 4;
  REQUIRE(o_end <= plan.workspace_bytes, p, plan.o_accum_offset, plan.workspace_bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  flare_mha_fwd_params p;
  fill(in, p);
  flare::DeviceInfo dev;
  static const int kMajors[] = {8, 9, 12};
  dev.cc_major = in.PickValueInArray(kMajors);
  dev.num_sms = in.ConsumeBool() ? in.ConsumeIntegralInRange<int>(1, 264)
                                 : in.ConsumeIntegralInRange<int>(1, 1 << 20);
  static const int kSmem[] = {0, 48 * 1024, 99 * 1024, 163 * 1024, 227 * 1024};
  dev.smem_optin = in.PickValueInArray(kSmem);
  flare::Tuning tuning;
  tuning.hopper_kernels = in.ConsumeIntegralInRange<int>(0, 3) != 0;
  tuning.sm80_decode = in.ConsumeIntegralInRange<int>(0, 3) != 0;
  tuning.decode_packed_rows = 16 << in.ConsumeIntegralInRange<int>(0, 3);
  tuning.sm80_wide = in.ConsumeIntegralInRange<int>(0, 3) != 0;
  tuning.sm80_swizzle = in.ConsumeIntegralInRange<int>(0, 3) != 0;
  tuning.sm90.warp_specialized = in.ConsumeIntegralInRange<int>(-1, 1);
  tuning.sm90.persistent = in.ConsumeIntegralInRange<int>(-1, 1);
  tuning.sm90.consumer_wgs = in.ConsumeBool() ? -1 : in.ConsumeIntegralInRange<int>(2, 3);
  tuning.sm90.block_n = in.ConsumeBool() ? -1 : (in.ConsumeBool() ? 128 : 192);
  tuning.sm90.d512 = in.ConsumeIntegralInRange<int>(-1, 1);
  tuning.sm90.cluster_m = in.ConsumeIntegralInRange<int>(-1, 2);
  tuning.sm90.d192 = in.ConsumeIntegralInRange<int>(-1, 1);

  // The caller's struct: usually the full size, sometimes an older (shorter) or newer (longer)
  // caller, or garbage. The block holds exactly struct_size bytes (at least the size field);
  // bytes past the library's struct are zero or not.
  uint32_t struct_size = sizeof(flare_mha_fwd_params);
  switch (in.ConsumeIntegralInRange<int>(0, 7)) {
    case 0: struct_size = in.ConsumeIntegralInRange<uint32_t>(0, sizeof(p) + 64); break;
    case 1: struct_size = 8 * in.ConsumeIntegralInRange<uint32_t>(0, (sizeof(p) + 64) / 8); break;
    default: break;
  }
  const bool zero_tail = in.ConsumeBool();
  const size_t block = std::max<size_t>(struct_size, sizeof(uint32_t));
  std::vector<unsigned char> caller(block, zero_tail ? 0 : 0xA5);
  p.struct_size = struct_size;
  std::memcpy(caller.data(), &p, std::min(block, sizeof(p)));
  // Heap block of exactly `block` bytes (vector storage) so ASan sees over-reads.
  const auto* user = reinterpret_cast<const flare_mha_fwd_params*>(caller.data());

  flare::clear_error();
  flare_mha_fwd_params full;
  flare_status st = flare::read_params(user, &full);
  if (st != FLARE_OK) {
    REQUIRE(st >= FLARE_ERROR_INVALID_ARGUMENT && st <= FLARE_ERROR_NOT_SUPPORTED, p, st, 0);
    REQUIRE(flare_last_error()[0] != '\0', p, st, 0);
    return 0;
  }
  REQUIRE(full.struct_size == sizeof(full), p, full.struct_size, 0);
  REQUIRE(struct_size <= sizeof(full) || zero_tail, p, struct_size, zero_tail);
  check_serving_read(struct_size, full);

  flare::clear_error();
  st = flare::validate_params(&full);
  if (st != FLARE_OK) {
    REQUIRE(st >= FLARE_ERROR_INVALID_ARGUMENT && st <= FLARE_ERROR_NOT_SUPPORTED, full, st, 0);
    REQUIRE(flare_last_error()[0] != '\0', full, st, 0);
    REQUIRE(std::strlen(flare_last_error()) < 512, full, st, 0);
    // Every page size >= 1 and paged varlen run on the GPU kernels: no refusal names them.
    if (st == FLARE_ERROR_NOT_SUPPORTED) {
      REQUIRE(std::strstr(flare_last_error(), "page_block_size") == nullptr, full, st,
              full.page_block_size);
      REQUIRE(std::strstr(flare_last_error(), "block_table with cu_seqlens_q") == nullptr, full,
              st, 0);
    }
    return 0;
  }

  check_serving_accepted(full);
  const flare::FwdPlan plan = flare::plan_forward(full, dev, tuning);
  check_plan(full, plan, dev, tuning);
  check_serving_plan(full, plan);
  check_sm90_choices(full, plan.kernel_head_dim);
  // The same call without a workspace (flare_mha_fwd with workspace NULL).
  flare_mha_fwd_params bare = full;
  bare.workspace = nullptr;
  bare.workspace_size = 0;
  check_plan(bare, flare::plan_forward(bare, dev, tuning), dev, tuning);
  return 0;
}
