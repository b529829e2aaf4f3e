// GPU tests of FP8 K/V (issue 21, docs/notes/fp8.md) through the C ABI: K and V (the caches) in
// e4m3 or e5m2 codes with per-tensor or per-(batch, K/V head) descale factors, q and out in fp16
// or bf16, on every call shape: KV-cache decode with append (rotary, cache_batch_idx, leftpad),
// contiguous and paged caches (pages of 1, 3, 16, 48 and 256 rows), chunked prefill over a
// cache, varlen over contiguous and paged K/V, padded batches; split-KV forced and heuristic;
// causal, window, ALiBi, softcap, sinks, prefix ranges, GQA (MQA packing 32 rows included),
// LSE; head dims 32 / 64 / 80 / 96 / 128 / 192 / 256 and the (192, 128) pair.
//
// Each case (serving_problem.h builds it: values N(0, sigma^2) per (b, hk) quantized with
// quantize_fp8, random positive descales, garbage codes in rows no sequence owns) runs on
// poisoned outputs and is compared with the float64 CPU reference on the dequantized inputs
// (code x descale) under the bf16 / fp16 rule (gpu_test_util.h: error <= 2x the naive
// low-precision error + 1e-5, every element written, no NaN, stride gaps untouched, LSE). The
// naive model reads FP8 K/V as their exact dequantized values and rounds scores, probabilities
// and the output to the dtype, like the naive model of 16-bit K/V: docs/notes/fp8.md, "the bf16
// accuracy rule applies unchanged". The caches after an append are compared BYTE FOR BYTE with
// the reference's: the appended rows hold quantize_fp8(rotated value, descale of (b, hk)), and
// every other byte is as it was.
//
// Bad FP8 input gets its specific status and a message naming the field, and writes nothing.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "common/fp8_params.h"
#include "common/tile_config.h"
#include "gpu/gpu_test_util.h"
#include "gpu/serving_problem.h"

namespace flare_test {
namespace {

constexpr int kFormats[] = {FLARE_DTYPE_E4M3, FLARE_DTYPE_E5M2};
constexpr Descale kDescales[] = {Descale::kPerTensor, Descale::kPerHead};
constexpr int kDtypes[] = {FLARE_DTYPE_FP16, FLARE_DTYPE_BF16};
constexpr int kHeadDims[] = {64, 128, 256};
constexpr int kSplits[] = {1, 3, 0};  // forced unsplit, forced 3, the heuristic

const char* format_name(int kv_dtype) {
  return kv_dtype == FLARE_DTYPE_E4M3 ? "e4m3" : kv_dtype == FLARE_DTYPE_E5M2 ? "e5m2" : "nofp8";
}
const char* descale_name(Descale d) {
  return d == Descale::kPerTensor ? "pt" : d == Descale::kPerHead ? "ph" : "nodesc";
}

// A gtest-safe name from the case's fields, unique through the running index.
std::string make_name(const ServingCase& c, const char* group, size_t index) {
  std::ostringstream os;
  char idx[8];
  std::snprintf(idx, sizeof idx, "%03zu", index);
  os << group << idx << "_" << format_name(c.kv_dtype) << "_" << descale_name(c.descale) << "_"
     << dtype_name(c.dtype) << "_d" << c.head_dim
     << (c.head_dim_v != 0 ? "v" + std::to_string(c.head_dim_v) : std::string()) << "_h"
     << c.num_heads << "x" << c.num_heads_k
     << (c.mode == KvMode::kKvCache ? "_kv" : c.mode == KvMode::kBatch ? "_batch" : "_varlen");
  int max_q = 0;
  for (int q : c.q_lens) max_q = std::max(max_q, q);
  os << "_q" << max_q;
  if (c.page_size > 0) os << "_page" << c.page_size;
  if (c.seqused_only) os << "_seqused";
  if (c.seqlen_new > 0) os << "_new" << c.seqlen_new;
  if (c.rotary_dim > 0) os << "_rot" << (c.rotary_interleaved ? "I" : "H") << c.rotary_dim;
  if (c.cache_batch_idx) os << "_bidx";
  if (!c.leftpad.empty()) os << "_lpad";
  if (c.causal) os << "_causal";
  if (c.window_left >= 0 || c.window_right >= 0)
    os << "_win" << (c.window_left < 0 ? std::string("n") : std::to_string(c.window_left)) << "_"
       << (c.window_right < 0 ? std::string("n") : std::to_string(c.window_right));
  if (c.alibi) os << "_alibi";
  if (c.softcap > 0) os << "_softcap" << int(c.softcap);
  if (c.sink) os << "_sink";
  if (c.max_ranges > 0) os << "_ranges" << c.max_ranges;
  if (c.padded) os << "_padded";
  os << (c.lse ? "_lse" : "_nolse");
  os << "_sp" << (c.num_splits == 0 ? std::string("H") : std::to_string(c.num_splits));
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// The sweep. Small problems (a few hundred keys, at most 40 query rows a sequence): the CPU
// reference of the whole sweep is well under a second of work.
std::vector<ServingCase> fp8_cases() {
  std::vector<ServingCase> out;
  uint64_t seed = 0xF8000;
  auto add = [&](ServingCase c, const char* group) {
    c.seed = ++seed;
    c.name = make_name(c, group, out.size());
    out.push_back(std::move(c));
  };

  // 1. KV-cache decode over a contiguous cache, every (format, descale, dtype, head dim): GQA
  //    8 / 2, an append of 1 row (one query row) or 3 (3 causal query rows), rotary off /
  //    interleaved over the whole head / half-mode over half of it, cache_batch_idx and leftpad
  //    off / on / both, splits forced 1 or 3 or the heuristic's. Sequence 0 has an empty cache
  //    (its keys are the appended rows only).
  int i = 0;
  for (int fmt : kFormats)
    for (Descale ds : kDescales)
      for (int dt : kDtypes)
        for (int d : kHeadDims) {
          ServingCase c;
          c.mode = KvMode::kKvCache;
          c.kv_dtype = fmt, c.descale = ds, c.dtype = dt, c.head_dim = d;
          c.num_heads = 8, c.num_heads_k = 2;
          c.seqlen_new = i % 2 ? 3 : 1;
          c.q_lens.assign(3, c.seqlen_new);
          c.k_lens = {c.seqlen_new, 77, 300};
          c.causal = c.seqlen_new > 1;
          switch ((i / 2) % 3) {
            case 0: break;
            case 1: c.rotary_dim = d, c.rotary_interleaved = true; break;
            case 2: c.rotary_dim = d / 2, c.rotary_interleaved = false; break;
          }
          if (i % 4 == 1 || i % 4 == 3) c.cache_batch_idx = true;
          if (i % 4 >= 2) c.leftpad = {0, 5, 17};
          c.num_splits = kSplits[(i / 3) % 3];
          c.padded = i % 5 == 4;
          add(c, "dec");
          ++i;
        }

  // 2. Paged caches, every page size of the issue, both formats: decode (one row appended, or
  //    none) and 3 causal rows appended with rotary and leftpad; fill levels at a page boundary
  //    + 1 and across many pages.
  int n = 0;
  for (int page : {1, 3, 16, 48, 256})
    for (int fmt : kFormats)
      for (int mode = 0; mode < 2; ++mode, ++n) {
        ServingCase c;
        c.mode = KvMode::kKvCache;
        c.kv_dtype = fmt;
        c.descale = (n / 2) % 2 ? Descale::kPerHead : Descale::kPerTensor;
        c.dtype = kDtypes[(n / 4) % 2];
        c.head_dim = kHeadDims[n % 3];
        c.num_heads = 8, c.num_heads_k = 2;
        c.page_size = page;
        c.num_splits = kSplits[(n / 2) % 3];
        if (mode == 0) {
          c.seqlen_new = n % 3 == 2 ? 0 : 1;
          c.q_lens = {1, 1, 1};
          c.k_lens = {1, page + 1, 300};
        } else {
          c.seqlen_new = 3;
          c.q_lens = {3, 3, 3};
          c.k_lens = {3, page + 1, 300};
          c.causal = true;
          c.rotary_dim = c.head_dim / 2, c.rotary_interleaved = n % 4 == 1;
          c.leftpad = {0, 2, 7};
        }
        c.padded = page == 48;
        add(c, "page");
      }

  // 3. Chunked prefill (more than 16 query rows a sequence: 40 new rows over 300 cached) over
  //    FP8 K/V: varlen over contiguous K/V, paged pages of 16 and of 3 (key counts from
  //    seqused_k), and KV caches appended 40 rows at a time, contiguous and paged.
  n = 0;
  for (int fmt : kFormats)
    for (int shape = 0; shape < 5; ++shape, ++n) {
      ServingCase c;
      c.kv_dtype = fmt;
      c.descale = n % 2 ? Descale::kPerHead : Descale::kPerTensor;
      c.dtype = kDtypes[(n / 2) % 2];
      c.head_dim = kHeadDims[n % 3];
      c.num_heads = 8, c.num_heads_k = 2;
      c.causal = true;
      c.num_splits = kSplits[(n + 1) % 3];
      if (shape < 3) {
        c.mode = KvMode::kVarlen;
        c.q_lens = {40, 1, 0, 17}, c.k_lens = {340, 65, 9, 17};
        c.page_size = shape == 1 ? 16 : shape == 2 ? 3 : 0;
        c.seqused_only = shape == 2;
      } else {
        c.mode = KvMode::kKvCache;
        c.seqlen_new = 40;
        c.q_lens = {40, 40}, c.k_lens = {340, 40};
        c.page_size = shape == 4 ? 48 : 0;
        if (shape == 3) c.rotary_dim = c.head_dim, c.rotary_interleaved = fmt == FLARE_DTYPE_E5M2;
      }
      add(c, "chunk");
    }

  // 4. Masks and the other features, on both formats: windows, ALiBi + softcap, sinks (with
  //    GQA 16 / 2 packing), prefix ranges, on decode, varlen, chunked and padded-batch shapes.
  using Setup = std::function<void(ServingCase&)>;
  const std::vector<Setup> features = {
      [](ServingCase& c) {  // decode, sliding window
        c.mode = KvMode::kKvCache, c.head_dim = 128;
        c.q_lens = {1, 1, 1}, c.k_lens = {1, 77, 300}, c.seqlen_new = 1;
        c.window_left = 64, c.window_right = 0, c.num_splits = 3;
      },
      [](ServingCase& c) {  // decode, 2 causal rows, ALiBi + softcap, pages of 16
        c.mode = KvMode::kKvCache, c.head_dim = 64, c.page_size = 16;
        c.q_lens = {2, 2}, c.k_lens = {50, 290}, c.seqlen_new = 2;
        c.causal = true, c.alibi = true, c.softcap = 30.f, c.num_splits = 1;
      },
      [](ServingCase& c) {  // decode, sinks, GQA packing 16 / 2, pages of 48, heuristic splits
        c.mode = KvMode::kKvCache, c.head_dim = 128, c.page_size = 48;
        c.num_heads = 16, c.num_heads_k = 2;
        c.q_lens = {1, 1, 1}, c.k_lens = {1, 100, 333}, c.seqlen_new = 1;
        c.sink = true, c.num_splits = 0;
      },
      [](ServingCase& c) {  // decode, prefix ranges + sinks, causal, split 3
        c.mode = KvMode::kKvCache, c.head_dim = 256;
        c.q_lens = {1, 1}, c.k_lens = {77, 300}, c.seqlen_new = 1;
        c.causal = true, c.sink = true, c.num_splits = 3, c.max_ranges = 2;
        c.ranges = {{{10, 60}}, {{0, 30}, {50, 70}}};
      },
      [](ServingCase& c) {  // varlen, causal + window + ALiBi
        c.head_dim = 128;
        c.q_lens = {40, 1, 17}, c.k_lens = {340, 65, 17};
        c.causal = true, c.window_left = 50, c.window_right = 0, c.alibi = true;
        c.num_splits = 0;
      },
      [](ServingCase& c) {  // paged varlen (16), softcap + sinks, split 3
        c.head_dim = 64, c.page_size = 16;
        c.q_lens = {40, 3}, c.k_lens = {300, 50};
        c.causal = true, c.softcap = 20.f, c.sink = true, c.num_splits = 3;
      },
      [](ServingCase& c) {  // paged varlen (3), prefix ranges + sinks + a two-sided window
        c.head_dim = 128, c.page_size = 3;
        c.q_lens = {40, 1}, c.k_lens = {300, 50};
        c.window_left = 30, c.window_right = 5, c.sink = true, c.max_ranges = 2;
        c.ranges = {{{0, 100}, {250, 280}}, {{10, 20}}};
        c.num_splits = 1;
      },
      [](ServingCase& c) {  // chunked prefill into a cache, window + prefix ranges
        c.mode = KvMode::kKvCache, c.head_dim = 64;
        c.q_lens = {40, 40}, c.k_lens = {340, 60}, c.seqlen_new = 40;
        c.causal = true, c.window_left = 100, c.window_right = 0, c.max_ranges = 1;
        c.ranges = {{{0, 64}}, {}};
        c.num_splits = 3;
      },
      [](ServingCase& c) {  // padded batch, causal + softcap, heuristic splits
        c.mode = KvMode::kBatch, c.head_dim = 128;
        c.q_lens = {33, 33}, c.k_lens = {130, 130};
        c.causal = true, c.softcap = 15.f, c.num_splits = 0;
      },
      [](ServingCase& c) {  // padded batch of decode rows, ALiBi + window, split 2, d256
        c.mode = KvMode::kBatch, c.head_dim = 256;
        c.q_lens = {1, 1, 1}, c.k_lens = {200, 200, 200};
        c.alibi = true, c.window_left = 80, c.window_right = 0, c.num_splits = 2;
        c.padded = true;
      },
  };
  n = 0;
  for (const Setup& setup : features)
    for (int fmt : kFormats) {
      ServingCase c;
      c.kv_dtype = fmt;
      c.descale = n % 2 ? Descale::kPerTensor : Descale::kPerHead;
      c.dtype = kDtypes[(n / 2 + n) % 2];
      c.num_heads = 8, c.num_heads_k = 2;
      setup(c);
      add(c, "feat");
      ++n;
    }

  // 5. The other kernel head dims and their loaders: d32 and d96 (16-bit copies in padded
  //    rows; d96 and d192 the loader for rows of a chunk count that does not divide 32), d80
  //    on the d96 kernel (K's columns past the head dim zero-filled), (192, 128) (V's columns
  //    past 128 zero, split accumulators 128 wide), and MQA decode packing 32 query heads into
  //    two 16-row blocks: a decode with an append and a split each.
  struct Dims {
    int d, dv, heads, heads_k;
  };
  const Dims dims[] = {{32, 0, 8, 2},   {80, 0, 8, 2},   {96, 0, 8, 2},
                       {192, 0, 8, 2},  {192, 128, 8, 2}, {128, 0, 32, 1}};
  n = 0;
  for (const Dims& dm : dims)
    for (int variant = 0; variant < 2; ++variant, ++n) {
      ServingCase c;
      c.mode = KvMode::kKvCache;
      c.kv_dtype = kFormats[n % 2];
      c.descale = (n / 2) % 2 ? Descale::kPerTensor : Descale::kPerHead;
      c.dtype = kDtypes[(n / 3) % 2];
      c.head_dim = dm.d, c.head_dim_v = dm.dv;
      c.num_heads = dm.heads, c.num_heads_k = dm.heads_k;
      c.seqlen_new = 1;
      c.q_lens = {1, 1, 1}, c.k_lens = {1, 77, 300};
      if (variant == 0) {
        c.num_splits = 1;
        c.rotary_dim = dm.dv == 0 ? dm.d / 2 : 0;
      } else {
        c.num_splits = 3;
        c.page_size = 16;
        c.padded = true;
      }
      add(c, "dims");
    }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The build's configuration: the ';'-separated entries of flare_build_info's line `key=`.
std::vector<std::string> build_entries(const std::string& key) {
  const std::string info = flare_build_info();
  std::vector<std::string> out;
  const size_t at = ("\n" + info).find("\n" + key + "=");
  if (at == std::string::npos) return out;
  const size_t begin = at + key.size() + 1, end = info.find('\n', begin);
  std::stringstream ss(info.substr(begin, end == std::string::npos ? end : end - begin));
  for (std::string item; std::getline(ss, item, ';');) out.push_back(item);
  return out;
}

bool build_has(const std::string& key, const std::string& item) {
  for (const std::string& e : build_entries(key))
    if (e == item) return true;
  return false;
}

std::vector<uint8_t> as_bytes(const std::vector<uint16_t>& v) {
  std::vector<uint8_t> b(v.size() * 2);
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Byte-for-byte comparison of a downloaded FP8 cache (`got`) with the reference's (`want`: the
// cache after ref::append_kv; `before`: as uploaded). The rows the append writes (`width` codes
// of each (b, new row, hk)) are reported apart from every other byte, which must be unchanged.
// Empty when they agree.
std::string check_fp8_cache(const char* which, const flare_mha_fwd_params& hp, bool is_k,
                            const std::vector<uint8_t>& before, const std::vector<uint8_t>& want,
                            const std::vector<uint8_t>& got) {
  if (got.size() != want.size() || before.size() != want.size())
    return std::string(which) + " cache: size mismatch";
  const int width = is_k ? hp.head_dim : flare::v_head_dim(hp);
  std::vector<char> appended(want.size(), 0);
  int64_t appended_bad = 0, appended_total = 0, appended_changed = 0, other_bad = 0;
  int64_t one_step = 0;  // appended mismatches to the neighbouring code (a rounding difference)
  // Codes ordered like their values: sign-magnitude to a signed integer.
  auto ordered = [](uint8_t x) { return (x & 0x80) ? -int(x & 0x7f) : int(x); };
  std::ostringstream first;
  for (int b = 0; b < hp.batch && hp.k_new; ++b) {
    const flare::SequenceInfo s = flare::sequence_info(hp, b);
    for (int t = 0; t < hp.seqlen_new; ++t)
      for (int h = 0; h < hp.num_heads_k; ++h) {
        const int64_t base = is_k ? flare::k_offset(hp, s, s.cache_len + t, h)
                                  : flare::v_offset(hp, s, s.cache_len + t, h);
        for (int e = 0; e < width; ++e) {
          const size_t at = size_t(base + e);
          appended[at] = 1;
          ++appended_total;
          appended_changed += want[at] != before[at];
          if (got[at] == want[at]) continue;
          one_step += std::abs(ordered(got[at]) - ordered(want[at])) == 1;
          if (appended_bad++ == 0)
            first << " first appended mismatch: b=" << b << " new row " << t << " hk=" << h
                  << " e=" << e << " got code 0x" << std::hex << int(got[at]) << " want 0x"
                  << int(want[at]) << std::dec << ";";
        }
      }
  }
  for (size_t i = 0; i < got.size(); ++i)
    if (!appended[i] && got[i] != want[i] && other_bad++ == 0)
      first << " first changed byte outside the appended rows: " << i << ";";
  std::ostringstream os;
  // The reference's append must have changed the cache (else the comparison proves nothing).
  if (appended_total > 0 && appended_changed == 0)
    os << which << " cache: the reference append left every appended byte as it was; ";
  if (appended_bad > 0 || other_bad > 0)
    os << which << " cache: " << appended_bad << " of " << appended_total
       << " appended codes differ from quantize_fp8's (" << one_step
       << " by one code: the value before quantization differs, e.g. an FMA-contracted rotation), "
       << other_bad << " bytes outside the appended rows changed;" << first.str();
  return os.str();
}

class Fp8Sweep : public ::testing::TestWithParam<ServingCase> {};

TEST_P(Fp8Sweep, MatchesReference) {
  FLARE_REQUIRE_GPU();
  const ServingCase& c = GetParam();
  const HostProblem hp = build_serving_problem(c);
  DeviceProblem dp(hp);
  const flare_mha_fwd_params p = dp.params(hp);
  FLARE_SKIP_IF_NO_KERNEL(p);
  Stream stream;
  std::string error;
  ASSERT_EQ(run_flare(p, dp.workspace, stream.get(), &error), FLARE_OK) << c.name << ": " << error;
  const std::vector<uint16_t> out = dp.out.download<uint16_t>();
  const std::vector<float> lse = dp.lse.download<float>();

  const ServingReference ref = serving_reference(hp);
  const flare_mha_fwd_params before = host_params(hp);
  HostProblem appended = hp;
  if (!ref.k_after.empty()) {
    appended.buf[kBufK] = ref.k_after;
    appended.buf[kBufV] = ref.v_after;
  }
  const std::string k_msg =
      check_fp8_cache("K", before, true, as_bytes(hp.buf[kBufK]), as_bytes(appended.buf[kBufK]),
                      dp.buf[kBufK].download<uint8_t>());
  if (!k_msg.empty()) report_failure(c.name, k_msg);
  const std::string v_msg =
      check_fp8_cache("V", before, false, as_bytes(hp.buf[kBufV]), as_bytes(appended.buf[kBufV]),
                      dp.buf[kBufV].download<uint8_t>());
  if (!v_msg.empty()) report_failure(c.name, v_msg);

  const Verdict v = check_output(host_params(appended), out, lse, ref.ref);
  if (!v.ok) report_failure(c.name, v.summary());
}

INSTANTIATE_TEST_SUITE_P(Fp8, Fp8Sweep, ::testing::ValuesIn(fp8_cases()),
                         [](const ::testing::TestParamInfo<ServingCase>& info) {
                           return info.param.name;
                         });

// ---------------------------------------------------------------------------------------------
// Bad FP8 input: the specific status from every entry point, a message naming the field, and
// nothing written (out and lse still poisoned, the caches as uploaded). These stay errors
// whatever the kernels implement (FP8 q: until an FP8 prefill path exists).
enum BadBase {
  kDecodeE4m3,  // FP8 KV cache (e4m3, per-head factors) with a one-row append, d64
  kVarlenE4m3,  // FP8 varlen prefill shape (e4m3, per-tensor factor), no append, d64
  kDecodeD72,   // FP8 KV cache with append at head_dim 72 (a multiple of 8, not of 16)
  kVarlenBf16,  // bf16 K/V with descale arrays (per tensor)
};

ServingCase bad_base(BadBase which) {
  ServingCase c;
  c.name = "bad_base";
  c.head_dim = 64, c.num_heads = 4, c.num_heads_k = 2;
  c.seed = 0xBADF8 + uint64_t(which);
  switch (which) {
    case kDecodeE4m3:
    case kDecodeD72:
      c.mode = KvMode::kKvCache;
      c.kv_dtype = FLARE_DTYPE_E4M3, c.descale = Descale::kPerHead;
      c.q_lens = {1, 1}, c.k_lens = {20, 70}, c.seqlen_new = 1;
      if (which == kDecodeD72) c.head_dim = 72;
      break;
    case kVarlenE4m3:
    case kVarlenBf16:
      c.q_lens = {20, 5}, c.k_lens = {40, 5}, c.causal = true;
      c.kv_dtype = which == kVarlenE4m3 ? FLARE_DTYPE_E4M3 : 0;
      c.descale = Descale::kPerTensor;
      break;
  }
  return c;
}

struct Fp8Bad {
  const char* name;
  BadBase base;
  std::function<void(flare_mha_fwd_params&)> mutate;
  flare_status status;
  std::vector<const char*> message;  // each must appear in flare_last_error()
};

const float* shifted(const float* p, int bytes) {
  return reinterpret_cast<const float*>(reinterpret_cast<const char*>(p) + bytes);
}

std::vector<Fp8Bad> fp8_bad_rows() {
  using P = flare_mha_fwd_params;
  return {
      {"k_descale_null", kDecodeE4m3, [](P& p) { p.k_descale = nullptr; },
       FLARE_ERROR_INVALID_ARGUMENT, {"k_descale is null"}},
      {"v_descale_null", kVarlenE4m3, [](P& p) { p.v_descale = nullptr; },
       FLARE_ERROR_INVALID_ARGUMENT, {"v_descale is null"}},
      {"descales_for_bf16_kv", kVarlenBf16, [](P&) {}, FLARE_ERROR_INVALID_ARGUMENT,
       {"k_descale is set", "not FP8"}},
      {"v_descale_for_bf16_kv", kVarlenBf16, [](P& p) { p.k_descale = nullptr; },
       FLARE_ERROR_INVALID_ARGUMENT, {"v_descale is set", "not FP8"}},
      {"q_descale_for_bf16_q", kDecodeE4m3,
       [](P& p) {
         p.q_descale = p.k_descale;
         p.q_descale_batch_stride = p.k_descale_batch_stride;
         p.q_descale_head_stride = p.k_descale_head_stride;
       },
       FLARE_ERROR_INVALID_ARGUMENT, {"q_descale is set", "not FP8"}},
      {"head_dim_72", kDecodeD72, [](P&) {}, FLARE_ERROR_UNSUPPORTED_HEAD_DIM,
       {"head_dim (72)", "multiples of 16"}},
      {"k_row_stride_not_16", kDecodeE4m3, [](P& p) { p.k_row_stride += 8; },
       FLARE_ERROR_MISALIGNED, {"k_row_stride (", "multiple of 16"}},
      {"v_head_stride_not_16", kVarlenE4m3, [](P& p) { p.v_head_stride += 8; },
       FLARE_ERROR_MISALIGNED, {"v_head_stride (72)", "multiple of 16"}},
      {"v_base_not_16_aligned", kDecodeE4m3,
       [](P& p) { p.v = static_cast<const char*>(p.v) + 8; }, FLARE_ERROR_MISALIGNED,
       {"v (", "16-byte aligned"}},
      {"k_descale_misaligned", kDecodeE4m3, [](P& p) { p.k_descale = shifted(p.k_descale, 2); },
       FLARE_ERROR_MISALIGNED, {"k_descale ("}},
      {"k_descale_negative_stride", kDecodeE4m3, [](P& p) { p.k_descale_head_stride = -1; },
       FLARE_ERROR_INVALID_ARGUMENT, {"k_descale strides"}},
      {"kv_dtype_unknown", kDecodeE4m3, [](P& p) { p.kv_dtype = 99; },
       FLARE_ERROR_UNSUPPORTED_DTYPE, {"kv_dtype (99)"}},
#if !FLARE_FP8_PREFILL  // else the Hopper FP8 prefill kernel takes it (test_fp8_prefill.cpp)
      {"q_dtype_e4m3_prefill", kVarlenE4m3,
       [](P& p) {
         p.q_dtype = FLARE_DTYPE_E4M3;
         p.q_descale = p.k_descale;
       },
       FLARE_ERROR_NOT_SUPPORTED, {"q_dtype"}},
#endif
      {"q_dtype_e4m3_with_append", kDecodeE4m3,
       [](P& p) {
         p.q_dtype = FLARE_DTYPE_E4M3;
         p.q_descale = p.k_descale;
       },
       FLARE_ERROR_NOT_SUPPORTED, {"k_new with q_dtype e4m3"}},
      {"q_dtype_e5m2", kVarlenE4m3, [](P& p) { p.q_dtype = FLARE_DTYPE_E5M2; },
       FLARE_ERROR_UNSUPPORTED_DTYPE, {"q_dtype (4)"}},
      {"q_e4m3_over_e5m2_kv", kVarlenE4m3,
       [](P& p) {
         p.kv_dtype = FLARE_DTYPE_E5M2;
         p.q_dtype = FLARE_DTYPE_E4M3;
         p.q_descale = p.k_descale;
       },
       FLARE_ERROR_UNSUPPORTED_DTYPE, {"q_dtype e4m3 needs kv_dtype e4m3"}},
  };
}

TEST(Fp8BadInput, RejectedWithoutWriting) {
  FLARE_REQUIRE_GPU();
  Stream stream;
  // Controls: the valid FP8 bases are accepted as built (so each refusal below is the
  // mutation's), where this build has d64 kernels.
  for (BadBase b : {kDecodeE4m3, kVarlenE4m3}) {
    if (!build_has("head_dims", "64") || !build_has("dtypes", "bf16")) break;
    const HostProblem hp = build_serving_problem(bad_base(b));
    DeviceProblem dp(hp);
    const flare_mha_fwd_params p = dp.params(hp);
    EXPECT_EQ(flare_can_implement(&p, g_device), FLARE_OK)
        << "valid FP8 base " << int(b) << ": " << flare_last_error();
  }
  for (const Fp8Bad& row : fp8_bad_rows()) {
    const HostProblem hp = build_serving_problem(bad_base(row.base));
    DeviceProblem dp(hp);
    flare_mha_fwd_params p = dp.params(hp);
    row.mutate(p);
    expect_refused(row.name, p, dp, stream.get(), row.status, row.message, true);
    EXPECT_EQ(dp.buf[kBufK].download<uint16_t>(), hp.buf[kBufK]) << row.name << ": K written";
    EXPECT_EQ(dp.buf[kBufV].download<uint16_t>(), hp.buf[kBufV]) << row.name << ": V written";
  }
}

}  // namespace
}  // namespace flare_test
