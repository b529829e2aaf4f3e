// GPU tests of FP8 prefill (issue 21 part 2, docs/notes/fp8.md; FLARE_FP8_PREFILL builds only):
// q, k and v in e4m3 codes with per-tensor or per-(batch, K/V head) descale factors, out fp16 /
// bf16, LSE fp32, on the Hopper FP8 kernel the plan picks (fwd_fp8_sm90.cuh: the warp-
// specialised one, persistent or not, its copies by cp.async or with FLARE_SM90_TMA=1 by TMA, or
// with FLARE_SM90_WS=0 the all-threads one; device_check's step fp8_prefill runs the four): head
// dims 64 / 128 / 256 (and 80 and 192 on the next kernel
// up), non-causal, causal (square and offset diagonals), sliding windows, softcap, ALiBi, sinks,
// GQA and MHA, varlen with odd and empty sequences, padded batches, padded strides, more tiles
// than SMs and more key blocks than stages.
//
// Each case (serving_problem.h builds K and V: values N(0, sigma^2) per (b, hk) quantized with
// quantize_fp8, garbage codes in rows no sequence owns; q is built here the same way with its
// own descales) runs on poisoned outputs and is compared with the float64 CPU reference on the
// dequantized inputs (code x descale). The rule is the project's: error <= 2x the naive
// implementation's error + 1e-5 (gpu_test_util.h), where the naive model of FP8 prefill rounds
// the unnormalised probabilities to e4m3 before P V (reference.h), as the kernel does; every
// element written, no NaN, stride gaps untouched, LSE checked.
//
// On a device without the kernel (compute capability other than 9.0, or a head dim / dtype
// this build lacks) flare refuses FP8 q with FLARE_ERROR_NOT_SUPPORTED: the cases skip, saying
// so.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/fp8_params.h"
#include "gpu/gpu_test_util.h"
#include "gpu/serving_problem.h"

namespace flare_test {
namespace {

struct Fp8PrefillCase {
  ServingCase c;  // kv_dtype e4m3, descale set; mode kVarlen or kBatch
};

void PrintTo(const Fp8PrefillCase& pc, std::ostream* os) { *os << pc.c.name; }

// The problem with q replaced by e4m3 codes: q values N(0, sigma^2) per (b, hk) of its query
// heads, q_descale per `c.descale` (slots and NaN gaps like k's), codes quantize_fp8(value,
// q_descale) in the rows the sequences own and garbage codes elsewhere. Strides are whole
// 16-byte chunks of codes (padded: one chunk more, and gaps between rows / batch entries).
struct Fp8PrefillProblem {
  HostProblem hp;  // its params hold q_descale's strides
  std::vector<float> q_descale;
};

// An FP8 prefill problem on the device: the DeviceProblem and q's descales, bound by params().
struct Fp8PrefillDevice {
  DeviceProblem dp;
  DeviceBuffer q_descale;
  explicit Fp8PrefillDevice(const Fp8PrefillProblem& pr) : dp(pr.hp) {
    q_descale.upload(pr.q_descale);
  }
  flare_mha_fwd_params params(const Fp8PrefillProblem& pr) const {
    flare_mha_fwd_params p = dp.params(pr.hp);
    p.q_descale = q_descale.as<const float>();
    return p;
  }
};

Fp8PrefillProblem build_fp8_prefill(const ServingCase& c) {
  Fp8PrefillProblem pr;
  pr.hp = build_serving_problem(c);
  HostProblem& hp = pr.hp;
  flare_mha_fwd_params& p = hp.tmpl;
  std::mt19937_64 rng(mix_seed(base_seed(), c.seed ^ 0x9E3779B97F4A7C15ull));
  const int h = c.num_heads, hk = c.num_heads_k, d = c.head_dim;
  const bool batched = c.mode != KvMode::kVarlen;
  const int max_q = *std::max_element(c.q_lens.begin(), c.q_lens.end());
  const int total_q = std::accumulate(c.q_lens.begin(), c.q_lens.end(), 0);
  const int nq = batched ? p.batch : 1, rows_q = batched ? max_q : total_q;
  const Strides sq = serving_strides(c.padded, nq, rows_q, h, d, false, 0, 1);
  hp.buf[kBufQ] = fp8_garbage(sq.elems, FLARE_DTYPE_E4M3, rng);
  p.q_batch_stride = sq.batch, p.q_row_stride = sq.row, p.q_head_stride = sq.head;
  p.q_dtype = FLARE_DTYPE_E4M3;

  std::uniform_real_distribution<float> log_sigma(std::log(0.5f), std::log(2.f));
  std::vector<float> sigma(size_t(p.batch) * hk);
  for (float& x : sigma) x = std::exp(log_sigma(rng));
  pr.q_descale = make_descale(c.descale, c.padded, p.batch, hk, sigma,
                              fp8_typical_code(FLARE_DTYPE_E4M3), rng, &p.q_descale_batch_stride,
                              &p.q_descale_head_stride);

  flare_mha_fwd_params hostp = host_params(hp);
  hostp.q_descale = pr.q_descale.data();
  std::normal_distribution<float> nd(0.f, 1.f);
  uint8_t* qb = fp8_bytes(hp.buf[kBufQ]);
  for (int b = 0; b < p.batch; ++b) {
    const flare::SequenceInfo s = flare::sequence_info(hostp, b);
    for (int i = 0; i < s.seqlen_q; ++i)
      for (int head = 0; head < h; ++head) {
        const int kh = head / (h / hk);
        const float qd = flare::q_descale(hostp, b, kh);
        uint8_t* row = qb + flare::q_offset(hostp, s, i, head);
        for (int e = 0; e < d; ++e)
          row[e] = flare::quantize_fp8(nd(rng) * sigma[size_t(b) * hk + kh], qd, FLARE_DTYPE_E4M3);
      }
  }
  return pr;
}

std::string case_name(const ServingCase& c, size_t index) {
  std::ostringstream os;
  char idx[8];
  std::snprintf(idx, sizeof idx, "%03zu", index);
  os << "fp8pre" << idx << "_" << (c.descale == Descale::kPerTensor ? "pt" : "ph") << "_"
     << dtype_name(c.dtype) << "_d" << c.head_dim << "_h" << c.num_heads << "x" << c.num_heads_k
     << (c.mode == KvMode::kBatch ? "_batch" : "_varlen");
  int max_q = 0, max_k = 0;
  for (int q : c.q_lens) max_q = std::max(max_q, q);
  for (int k : c.k_lens) max_k = std::max(max_k, k);
  os << "_q" << max_q << "_k" << max_k;
  if (c.causal) os << "_causal";
  if (c.window_left >= 0 || c.window_right >= 0)
    os << "_win" << (c.window_left < 0 ? std::string("n") : std::to_string(c.window_left)) << "_"
       << (c.window_right < 0 ? std::string("n") : std::to_string(c.window_right));
  if (c.softcap > 0) os << "_softcap" << int(c.softcap);
  if (c.alibi) os << "_alibi";
  if (c.sink) os << "_sink";
  if (c.padded) os << "_padded";
  os << (c.lse ? "_lse" : "_nolse");
  return os.str();
}

std::vector<Fp8PrefillCase> fp8_prefill_cases() {
  std::vector<Fp8PrefillCase> out;
  uint64_t seed = 0xF8F000;
  auto add = [&](ServingCase c) {
    c.kv_dtype = FLARE_DTYPE_E4M3;
    c.num_splits = 1;
    c.seed = ++seed;
    c.name = case_name(c, out.size());
    out.push_back({c});
  };
  // 1. Every (head dim, dtype, descale) with a mask cycle: none, causal, window, softcap,
  //    causal + softcap; GQA 8 / 2; varlen with a one-row, an empty, a block-straddling and a
  //    long odd sequence (more key blocks than stages).
  const int head_dims[] = {64, 128, 256};
  const int dtypes[] = {FLARE_DTYPE_BF16, FLARE_DTYPE_FP16};
  const Descale descales[] = {Descale::kPerTensor, Descale::kPerHead};
  int i = 0;
  for (int d : head_dims)
    for (int dt : dtypes)
      for (Descale ds : descales) {
        ServingCase c;
        c.mode = KvMode::kVarlen;
        c.dtype = dt, c.head_dim = d, c.descale = ds;
        c.num_heads = 8, c.num_heads_k = 2;
        c.q_lens = {1, 0, 129, 203}, c.k_lens = {1, 9, 129, 333};
        switch (i % 5) {
          case 0: break;
          case 1: c.causal = true; break;
          case 2: c.window_left = 70, c.window_right = 5; break;
          case 3: c.softcap = 30.f; break;
          case 4: c.causal = true, c.softcap = 15.f; break;
        }
        c.padded = i % 3 == 2;
        c.lse = i % 4 != 3;
        add(c);
        ++i;
      }
  // 2. Padded batches: MHA, causal with an offset diagonal (seqlen_q < seqlen_k), non-causal
  //    with more query rows than keys, odd sizes.
  for (int d : head_dims) {
    ServingCase c;
    c.mode = KvMode::kBatch;
    c.dtype = d == 128 ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
    c.head_dim = d, c.descale = d == 64 ? Descale::kPerHead : Descale::kPerTensor;
    c.num_heads = 4, c.num_heads_k = 4;
    c.q_lens = {77, 77}, c.k_lens = {300, 300};
    c.causal = true;
    add(c);
    c.q_lens = {150, 150}, c.k_lens = {65, 65};
    c.causal = false;
    c.padded = true;
    add(c);
  }
  // 2b. More tiles than an H100 has SMs (persistent CTAs take second tiles: the producer's
  //     staging-tile parity, cp.async groups and Q buffer carry over from one tile to the next)
  //     and more key blocks than stages (the K / V rings wrap), at every head dim.
  for (int d : head_dims) {
    ServingCase c;
    c.mode = KvMode::kBatch;
    c.dtype = d == 64 ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
    c.head_dim = d, c.descale = Descale::kPerHead;
    c.num_heads = 16, c.num_heads_k = 4;
    c.q_lens = {600, 600}, c.k_lens = {700, 700};  // 5 x 16 x 2 = 160 tiles, 6 or 11 blocks
    c.causal = d != 128;
    add(c);
  }
  // 3. Head dims between the kernels' (80 on the d128 kernel, 192 on the d256 kernel), ALiBi,
  //    sinks, a causal window.
  {
    ServingCase c;
    c.mode = KvMode::kVarlen;
    c.dtype = FLARE_DTYPE_BF16, c.descale = Descale::kPerHead;
    c.num_heads = 6, c.num_heads_k = 2;
    c.q_lens = {33, 140}, c.k_lens = {33, 260};
    c.head_dim = 80, c.causal = true;
    add(c);
    c.head_dim = 192, c.causal = false, c.alibi = true;
    add(c);
    c.head_dim = 128, c.alibi = false, c.sink = true, c.causal = true;
    add(c);
    c.head_dim = 64, c.sink = false, c.causal = true, c.window_left = 40, c.window_right = 0;
    add(c);
  }
  return out;
}

// Skips a case this build or device has no FP8 prefill kernel for (the planner's refusal).
#define FP8_PREFILL_SKIP_IF_NO_KERNEL(name, params)                                          \
  do {                                                                                       \
    if (flare_can_implement(&(params), g_device) == FLARE_ERROR_NOT_SUPPORTED &&             \
        std::string(flare_last_error()).find("no FP8 prefill kernel") != std::string::npos) \
      GTEST_SKIP() << (name) << ": " << flare_last_error();                                  \
  } while (0)

class Fp8PrefillSweep : public ::testing::TestWithParam<Fp8PrefillCase> {};

TEST_P(Fp8PrefillSweep, MatchesReference) {
  FLARE_REQUIRE_GPU();
  const ServingCase& c = GetParam().c;
  const Fp8PrefillProblem pr = build_fp8_prefill(c);
  Fp8PrefillDevice dev(pr);
  DeviceProblem& dp = dev.dp;
  flare_mha_fwd_params p = dev.params(pr);
  FP8_PREFILL_SKIP_IF_NO_KERNEL(c.name, p);
  Stream stream;
  std::string error;
  ASSERT_EQ(run_flare(p, dp.workspace, stream.get(), &error), FLARE_OK) << c.name << ": " << error;
  const std::vector<uint16_t> out = dp.out.download<uint16_t>();
  const std::vector<float> lse = dp.lse.download<float>();

  flare_mha_fwd_params hostp = host_params(pr.hp);
  hostp.q_descale = pr.q_descale.data();
  const RefOutputs ref = compute_reference(hostp, pr.hp);
  const Verdict v = check_output(hostp, out, lse, ref);
  if (!v.ok) report_failure(c.name, v.summary());
  // The inputs are untouched.
  EXPECT_EQ(dp.buf[kBufQ].download<uint16_t>(), pr.hp.buf[kBufQ]) << c.name << ": q written";
  EXPECT_EQ(dp.buf[kBufK].download<uint16_t>(), pr.hp.buf[kBufK]) << c.name << ": K written";
  EXPECT_EQ(dp.buf[kBufV].download<uint16_t>(), pr.hp.buf[kBufV]) << c.name << ": V written";
}

INSTANTIATE_TEST_SUITE_P(Fp8Prefill, Fp8PrefillSweep, ::testing::ValuesIn(fp8_prefill_cases()),
                         [](const ::testing::TestParamInfo<Fp8PrefillCase>& info) {
                           return info.param.c.name;
                         });

// Whether this build's `key=` line of flare_build_info lists `item` (';'-separated).
bool build_lists(const std::string& key, const std::string& item) {
  const std::string info = "\n" + std::string(flare_build_info());
  const size_t at = info.find("\n" + key + "=");
  if (at == std::string::npos) return false;
  const size_t begin = at + key.size() + 2, end = info.find('\n', begin);
  const std::string list = ";" + info.substr(begin, end == std::string::npos ? end : end - begin) + ";";
  return list.find(";" + item + ";") != std::string::npos;
}

// The kernel is reached: on a compute capability 9.0 device of a build with the d128 bf16
// kernel, a valid FP8 prefill call is accepted (the sweep's skips would otherwise hide a
// planner that never picks it).
TEST(Fp8Prefill, AcceptedOnHopper) {
  FLARE_REQUIRE_GPU();
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, g_device));
  if (prop.major != 9 || prop.minor != 0) GTEST_SKIP() << "not a compute capability 9.0 device";
  if (!build_lists("head_dims", "128") || !build_lists("dtypes", "bf16"))
    GTEST_SKIP() << "no d128 bf16 kernels in this build: " << flare_build_info();
  ServingCase c;
  c.mode = KvMode::kVarlen;
  c.kv_dtype = FLARE_DTYPE_E4M3, c.descale = Descale::kPerTensor;
  c.dtype = FLARE_DTYPE_BF16, c.head_dim = 128, c.num_heads = 4, c.num_heads_k = 2;
  c.q_lens = {64}, c.k_lens = {64};
  c.seed = 0xF8F0FF;
  const Fp8PrefillProblem pr = build_fp8_prefill(c);
  const Fp8PrefillDevice dev(pr);
  flare_mha_fwd_params p = dev.params(pr);
  EXPECT_EQ(flare_can_implement(&p, g_device), FLARE_OK) << flare_last_error();
}

// What the FP8 prefill kernel does not take is refused before anything runs, with the field
// named: paged K/V, head_dim_v other than head_dim (the (192, 128) pair), an FP8 output type.
// Nothing is written.
TEST(Fp8Prefill, RefusedWithoutWriting) {
  FLARE_REQUIRE_GPU();
  struct Row {
    const char* name;
    int page_size, head_dim, head_dim_v;
    bool fp8_out;
    flare_status status;
    const char* message;
  };
  const Row rows[] = {
      {"paged", 16, 128, 0, false, FLARE_ERROR_NOT_SUPPORTED, "block_table with q_dtype e4m3"},
      {"head_dim_v_128_under_192", 0, 192, 128, false, FLARE_ERROR_NOT_SUPPORTED,
       "head_dim_v 128 with q_dtype e4m3"},
      {"fp8_out", 0, 128, 0, true, FLARE_ERROR_UNSUPPORTED_DTYPE, "dtype (3) is not supported"},
  };
  Stream stream;
  for (const Row& row : rows) {
    ServingCase c;
    c.mode = KvMode::kVarlen;
    c.kv_dtype = FLARE_DTYPE_E4M3, c.descale = Descale::kPerHead;
    c.dtype = FLARE_DTYPE_BF16, c.head_dim = row.head_dim, c.head_dim_v = row.head_dim_v;
    c.num_heads = 4, c.num_heads_k = 2;
    c.q_lens = {20, 7}, c.k_lens = {40, 70};
    c.page_size = row.page_size;
    c.seed = 0xF8FBAD;
    c.name = row.name;
    const Fp8PrefillProblem pr = build_fp8_prefill(c);
    Fp8PrefillDevice dev(pr);
    DeviceProblem& dp = dev.dp;
    flare_mha_fwd_params p = dev.params(pr);
    if (row.fp8_out) p.dtype = FLARE_DTYPE_E4M3;
    EXPECT_EQ(flare_can_implement(&p, g_device), row.status) << row.name << ": " << flare_last_error();
    expect_refused(row.name, p, dp, stream.get(), row.status, {row.message});
  }
}

}  // namespace
}  // namespace flare_test
