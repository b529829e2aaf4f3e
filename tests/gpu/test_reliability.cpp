// Reliability tests of the whole forward path through the C ABI (run: --gtest_filter='Reliab*'):
//
//   ReliabExtremes      scores near overflow (q, k ~ N(0, 30^2), softmax_scale 1: logits ~ 1e4),
//                       softcap over huge logits, rows that see no key (a window past every key,
//                       seqlen_k = 0, seqused_k = 0, empty varlen sequences), seqlen_k = 1,
//                       seqlen_q = 1 over 512k keys (fp32 GPU reference), 1 and 128 heads,
//                       batch 1024 of tiny sequences (padded, varlen, and 1024 x forced splits:
//                       the grid's batch x splits limit), a K/V tensor of more than 2^31
//                       elements (64-bit offsets: the second batch entry starts past element
//                       2^31 and the gap is poisoned with NaN, so a truncated offset shows).
//   ReliabStrides       strides / bases that are legal for a strided tensor but break the
//                       16-byte rule: rejected with FLARE_ERROR_MISALIGNED, nothing written.
//   ReliabDeterminism   plain, split-KV, varlen and paged (+ append) calls: 100 runs over 4
//                       streams, out and lse bit-identical to the first run (and correct).
//   ReliabGraphCapture  the determinism cases captured into a CUDA graph and replayed: equal to
//                       the eager run bit for bit.
//   ReliabConcurrency   12 host threads, each with its own stream and shape, call flare_mha_fwd
//                       at once; each checks its output and that flare_last_error() is
//                       thread-local (its own bad call's message, unchanged by the others).
//
// Only head dims that pad to 64 or 128 are used, so a build with FLARE_HEAD_DIMS="64;128" runs
// every case.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gpu/gpu_reference.h"
#include "gpu/gpu_test_util.h"

namespace flare_test {
namespace {

// ---------------------------------------------------------------------------------------------
// A dense problem (padded batch or varlen), q/k value scales selectable.
struct Spec {
  int dtype = FLARE_DTYPE_BF16;
  int d = 64;
  int batch = 1, sq = 64, sk = 64, h = 2, hk = 2;
  bool causal = false;
  int wl = -1, wr = -1;
  float softcap = 0.f, scale = 0.f;
  float qk_std = 1.f;  // stddev of q and k
  int splits = 1;
  bool lse = true;
  std::vector<int> q_lens, k_lens;  // non-empty: varlen
  std::vector<int> seqused;         // non-empty: seqused_k
  uint64_t seed = 1;
};

std::string describe(const Spec& s) {
  std::ostringstream os;
  os << dtype_name(s.dtype) << " d" << s.d << " b" << s.batch << " sq" << s.sq << " sk" << s.sk
     << " h" << s.h << "x" << s.hk << (s.causal ? " causal" : "") << " win" << s.wl << "," << s.wr
     << " softcap" << s.softcap << " scale" << s.scale << " qk_std" << s.qk_std << " splits"
     << s.splits << (s.q_lens.empty() ? "" : " varlen") << (s.seqused.empty() ? "" : " seqused");
  return os.str();
}

HostProblem build(const Spec& s) {
  std::mt19937_64 rng(mix_seed(base_seed(), 0xAE11AB00ull + s.seed));
  HostProblem hp;
  flare_mha_fwd_params& p = hp.tmpl;
  flare_mha_fwd_params_init(&p);
  p.dtype = s.dtype;
  p.head_dim = s.d;
  p.num_heads = s.h;
  p.num_heads_k = s.hk;
  p.causal = s.causal;
  p.window_left = s.wl;
  p.window_right = s.wr;
  p.softcap = s.softcap;
  p.softmax_scale = s.scale;
  p.num_splits = s.splits;
  int nb, rows_q, rows_k, total_q;
  if (!s.q_lens.empty()) {
    p.batch = int(s.q_lens.size());
    hp.cu_q = prefix_sums(s.q_lens);
    hp.cu_k = prefix_sums(s.k_lens);
    p.max_seqlen_q = std::max(1, *std::max_element(s.q_lens.begin(), s.q_lens.end()));
    p.max_seqlen_k = *std::max_element(s.k_lens.begin(), s.k_lens.end());
    p.seqlen_q = p.max_seqlen_q, p.seqlen_k = p.max_seqlen_k;
    nb = 1, rows_q = std::max(1, hp.cu_q.back()), rows_k = std::max(1, hp.cu_k.back());
    total_q = hp.cu_q.back();
  } else {
    p.batch = s.batch, p.seqlen_q = s.sq, p.seqlen_k = s.sk;
    nb = s.batch, rows_q = s.sq, rows_k = std::max(1, s.sk);  // seqlen_k 0: a 1-row dummy
    total_q = s.batch * s.sq;
  }
  if (!s.seqused.empty()) hp.seqused_k.assign(s.seqused.begin(), s.seqused.end());
  const Strides sq = make_strides(kContiguous, nb, rows_q, s.h, s.d);
  const Strides sk = make_strides(kContiguous, nb, rows_k, s.hk, s.d);
  hp.buf[kBufQ] = random_tensor(sq.elems, s.dtype, rng, s.qk_std);
  hp.buf[kBufK] = random_tensor(sk.elems, s.dtype, rng, s.qk_std);
  hp.buf[kBufV] = random_tensor(sk.elems, s.dtype, rng);
  hp.q = {kBufQ, 0}, hp.k = {kBufK, 0}, hp.v = {kBufV, 0};
  p.q_batch_stride = sq.batch, p.q_row_stride = sq.row, p.q_head_stride = sq.head;
  p.k_batch_stride = sk.batch, p.k_row_stride = sk.row, p.k_head_stride = sk.head;
  p.v_batch_stride = sk.batch, p.v_row_stride = sk.row, p.v_head_stride = sk.head;
  p.out_batch_stride = sq.batch, p.out_row_stride = sq.row, p.out_head_stride = sq.head;
  hp.out_elems = sq.elems;
  hp.ref_lse_elems = size_t(s.h) * std::max(total_q, 0);
  hp.lse_elems = s.lse ? hp.ref_lse_elems : 0;
  return hp;
}

// Runs flare once and checks against the CPU references (check_output's bound), or, when
// `abs_tol` > 0, against the float64 reference alone with that absolute tolerance (used where
// the naive low-precision reference itself overflows: its scores are rounded to the dtype).
void run_and_check(const Spec& s, double abs_tol = 0) {
  const HostProblem hp = build(s);
  const RefOutputs ref = compute_reference(host_params(hp), hp);
  Stream stream;
  DeviceProblem dp(hp);
  std::string error;
  if (run_flare(dp.params(hp), dp.workspace, stream.get(), &error) != FLARE_OK) {
    report_failure(describe(s), error);
    return;
  }
  const std::vector<uint16_t> out = dp.out.download<uint16_t>();
  const std::vector<float> lse = dp.lse.download<float>();
  if (abs_tol <= 0) {
    const Verdict v = check_output(host_params(hp), out, lse, ref);
    if (!v.ok) report_failure(describe(s), v.summary());
    return;
  }
  size_t bad = 0, lse_bad = 0;
  double worst = 0, lse_worst = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double g = flare::ref::to_float(out[i], s.dtype), r = ref.out64[i];
    if (std::isnan(r)) continue;  // not a real element (the reference leaves gaps NaN)
    const double e = std::fabs(g - r);
    if (!std::isfinite(g) || e > abs_tol * std::max(1.0, std::fabs(r))) ++bad;
    if (std::isfinite(g)) worst = std::max(worst, e);
  }
  for (size_t i = 0; i < lse.size(); ++i) {
    const double r = ref.lse64[i], g = lse[i];
    if (std::isinf(r)) {
      lse_bad += !(std::isinf(g) && g < 0);
      continue;
    }
    const double e = std::fabs(g - r);
    if (!std::isfinite(g) || e > 1e-3 + 2e-6 * std::fabs(r)) ++lse_bad;
    if (std::isfinite(g)) lse_worst = std::max(lse_worst, e);
  }
  if (bad || lse_bad) {
    std::ostringstream os;
    os << bad << " outputs off by more than " << abs_tol << " (worst " << worst << "), "
       << lse_bad << " lse mismatches (worst " << lse_worst << ")";
    report_failure(describe(s), os.str());
  }
}

const int kDtypes[] = {FLARE_DTYPE_FP16, FLARE_DTYPE_BF16};

// ---------------------------------------------------------------------------------------------
TEST(ReliabExtremes, ScoresNearOverflow) {
  FLARE_REQUIRE_GPU();
  // |q.k| reaches ~4e4 (fp16's max is 65504): exp() of the raw logits overflows fp32 long
  // before, so only a correct running max keeps the softmax finite. The softmax is then
  // (nearly) one-hot: out ~ one row of v, so a 1-ulp-of-v tolerance applies.
  for (int dt : kDtypes)
    for (int splits : {1, 5}) {
      Spec s;
      s.dtype = dt, s.d = 128, s.batch = 2, s.sq = 130, s.sk = 700, s.h = 4, s.hk = 2;
      s.scale = 1.f, s.qk_std = 30.f, s.splits = splits, s.seed = 10 + splits + dt;
      run_and_check(s, 1.6e-2);
      s.causal = true, s.seed += 100;
      run_and_check(s, 1.6e-2);
    }
}

TEST(ReliabExtremes, SoftcapHugeLogits) {
  FLARE_REQUIRE_GPU();
  for (int dt : kDtypes)
    for (float cap : {1.f, 30.f}) {
      Spec s;
      s.dtype = dt, s.d = 64, s.batch = 2, s.sq = 96, s.sk = 333, s.h = 2, s.hk = 1;
      s.scale = 1.f, s.qk_std = 30.f, s.softcap = cap, s.splits = dt == FLARE_DTYPE_FP16 ? 3 : 1;
      s.seed = 20 + int(cap) + dt;
      run_and_check(s);
    }
}

TEST(ReliabExtremes, AllMaskedRows) {
  FLARE_REQUIRE_GPU();
  for (int dt : kDtypes) {
    {  // Window (0, 0) with seqlen_q >> seqlen_k: rows 0..239 see no key, 240.. one key each.
      Spec s;
      s.dtype = dt, s.sq = 256, s.sk = 16, s.wl = 0, s.wr = 0, s.seed = 30 + dt;
      run_and_check(s);
      s.splits = 0;
      run_and_check(s);
    }
    {  // Causal with seqlen_q > seqlen_k: the first rows see nothing.
      Spec s;
      s.dtype = dt, s.sq = 200, s.sk = 70, s.causal = true, s.splits = 3, s.seed = 32 + dt;
      run_and_check(s);
    }
    {  // seqlen_k = 0: every row is empty.
      Spec s;
      s.dtype = dt, s.batch = 3, s.sq = 40, s.sk = 0, s.seed = 34 + dt;
      run_and_check(s);
    }
    {  // seqused_k = 0 for every sequence.
      Spec s;
      s.dtype = dt, s.batch = 3, s.sq = 33, s.sk = 300, s.seqused = {0, 0, 0}, s.seed = 36 + dt;
      run_and_check(s);
      s.splits = 4;
      run_and_check(s);
    }
    {  // Varlen with empty q and empty k sequences.
      Spec s;
      s.dtype = dt, s.q_lens = {0, 5, 17, 0, 130}, s.k_lens = {9, 0, 0, 0, 64}, s.seed = 38 + dt;
      run_and_check(s);
      s.splits = 2;
      run_and_check(s);
    }
  }
}

TEST(ReliabExtremes, SeqlenK1) {
  FLARE_REQUIRE_GPU();
  for (int dt : kDtypes)
    for (int sq : {1, 77})
      for (bool causal : {false, true}) {
        Spec s;
        s.dtype = dt, s.d = 128, s.batch = 2, s.sq = sq, s.sk = 1, s.h = 4, s.hk = 1;
        s.causal = causal, s.splits = 0, s.seed = 40 + sq + causal + dt;
        run_and_check(s);
      }
}

TEST(ReliabExtremes, HeadCounts1And128) {
  FLARE_REQUIRE_GPU();
  Spec a;
  a.d = 64, a.sq = 300, a.sk = 300, a.h = 1, a.hk = 1, a.causal = true, a.seed = 50;
  run_and_check(a);
  Spec b;
  b.d = 128, b.dtype = FLARE_DTYPE_FP16, b.sq = 64, b.sk = 200, b.h = 128, b.hk = 128, b.seed = 51;
  run_and_check(b);
  Spec c;  // decode: 128 query heads packed over 8 KV heads
  c.d = 128, c.sq = 1, c.sk = 1000, c.h = 128, c.hk = 8, c.splits = 0, c.seed = 52;
  run_and_check(c);
  c.h = 128, c.hk = 1, c.seed = 53;
  run_and_check(c);
}

TEST(ReliabExtremes, Batch1024Tiny) {
  FLARE_REQUIRE_GPU();
  Spec a;
  a.batch = 1024, a.sq = 3, a.sk = 5, a.h = 2, a.hk = 1, a.splits = 0, a.seed = 60;
  run_and_check(a);
  Spec b;  // varlen: 1024 sequences of 0..8 rows
  std::mt19937 rng(61);
  for (int i = 0; i < 1024; ++i) {
    b.q_lens.push_back(int(rng() % 9));
    b.k_lens.push_back(int(rng() % 9));
  }
  b.dtype = FLARE_DTYPE_FP16, b.h = 2, b.hk = 2, b.causal = true, b.seed = 61;
  run_and_check(b);
  // 1024 x 64 forced splits would need a grid z of 65536 (> 65535): the planner lowers it.
  Spec c;
  c.d = 64, c.batch = 1024, c.sq = 1, c.sk = 4096, c.h = 1, c.hk = 1, c.splits = 64, c.seed = 62;
  run_and_check(c);
}

TEST(ReliabExtremes, DecodeOver512kKeys) {
  FLARE_REQUIRE_GPU();
  const int sk = 512 * 1024, h = 8, hk = 1, d = 128, dtype = FLARE_DTYPE_BF16;
  const size_t kv_elems = size_t(sk) * hk * d, q_elems = size_t(h) * d;
  Stream stream;
  DeviceBuffer q(q_elems * 2), k(kv_elems * 2), v(kv_elems * 2), out(q_elems * 2), lse(h * 4);
  DeviceBuffer ref_out(q_elems * 4), ref_lse(h * 4);
  const uint64_t seed = mix_seed(base_seed(), 0x512C);
  CUDA_CHECK(gpu_fill_normal(q.get(), q_elems, dtype, seed, stream.get()));
  CUDA_CHECK(gpu_fill_normal(k.get(), kv_elems, dtype, seed + 1, stream.get()));
  CUDA_CHECK(gpu_fill_normal(v.get(), kv_elems, dtype, seed + 2, stream.get()));
  for (int splits : {0, 1, 128}) {
    CUDA_CHECK(gpu_fill_u16(out.get(), q_elems, kPoison16, stream.get()));
    CUDA_CHECK(gpu_fill_f32(lse.as<float>(), h, poison_f32(), stream.get()));
    flare_mha_fwd_params p;
    flare_mha_fwd_params_init(&p);
    p.dtype = dtype;
    p.q = q.get(), p.k = k.get(), p.v = v.get(), p.out = out.get(), p.lse = lse.as<float>();
    p.batch = 1, p.seqlen_q = 1, p.seqlen_k = sk, p.num_heads = h, p.num_heads_k = hk;
    p.head_dim = d;
    p.q_row_stride = p.out_row_stride = int64_t(h) * d;
    p.q_head_stride = p.out_head_stride = d;
    p.q_batch_stride = p.out_batch_stride = int64_t(h) * d;
    p.k_row_stride = p.v_row_stride = int64_t(hk) * d;
    p.k_head_stride = p.v_head_stride = d;
    p.k_batch_stride = p.v_batch_stride = int64_t(sk) * hk * d;
    p.num_splits = splits;
    DeviceBuffer ws;
    std::string error;
    ASSERT_EQ(run_flare(p, ws, stream.get(), &error), FLARE_OK) << error;

    GpuRefArgs a;
    a.dtype = dtype, a.q = q.get(), a.k = k.get(), a.v = v.get();
    a.out = ref_out.as<float>(), a.lse = ref_lse.as<float>();
    a.batch = 1, a.seqlen_q = 1, a.seqlen_k = sk, a.num_heads = h, a.num_heads_k = hk;
    a.head_dim = d;
    a.q_batch_stride = p.q_batch_stride, a.q_row_stride = p.q_row_stride, a.q_head_stride = d;
    a.k_batch_stride = a.v_batch_stride = p.k_batch_stride;
    a.k_row_stride = a.v_row_stride = p.k_row_stride;
    a.k_head_stride = a.v_head_stride = d;
    CUDA_CHECK(gpu_reference_attention(a, stream.get()));
    CUDA_CHECK(cudaStreamSynchronize(stream.get()));
    GpuDiffStats st;
    CUDA_CHECK(gpu_diff_stats(out.get(), dtype, ref_out.as<float>(), q_elems, &st, stream.get()));
    const double rel = std::sqrt(st.diff_sq / std::max(st.ref_sq, 1e-300));
    std::printf("ReliabExtremes 512k keys, splits %d (resolved %d): rel_l2=%.3e max_abs=%.3e\n",
                splits, resolved_splits([&] {
                  flare_mha_fwd_params r = p;
                  r.workspace = ws.get(), r.workspace_size = ws.bytes();
                  return r;
                }()),
                rel, st.max_abs);
    EXPECT_EQ(st.nonfinite, 0u) << "splits " << splits;
    // The output averages 512k values: |ref| ~ 1/sqrt(512k)-ish, so relative error is loose.
    EXPECT_LT(rel, 2e-2) << "splits " << splits;
    const std::vector<float> got = lse.download<float>(), want = ref_lse.download<float>();
    for (int i = 0; i < h; ++i)
      EXPECT_NEAR(got[i], want[i], 1e-3 + 1e-5 * std::fabs(want[i])) << "head " << i;
  }
}

// K and V of batch 2 with a batch stride of 2^31 + 4096 elements: each spans more than 2^31
// elements (8.6 GB for both). The gap between the two entries is NaN, so any 32-bit
// truncation of an element offset reads NaN (or a wrong row) and fails the comparison.
TEST(ReliabExtremes, KvBeyond2Pow31Elements) {
  FLARE_REQUIRE_GPU();
  Spec s;
  s.dtype = FLARE_DTYPE_BF16, s.d = 128, s.batch = 2, s.sq = 64, s.sk = 512, s.h = 4, s.hk = 2;
  s.causal = true, s.seed = 70;
  const HostProblem hp = build(s);
  const RefOutputs ref = compute_reference(host_params(hp), hp);
  const int64_t dense_batch = hp.tmpl.k_batch_stride;  // elements of one batch entry
  const int64_t big = (int64_t(1) << 31) + 4096;
  const size_t elems = size_t(big) + size_t(dense_batch);
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  if (free_b < 2 * elems * 2 + (size_t(1) << 30)) GTEST_SKIP() << "needs ~8.6 GB of free memory";
  Stream stream;
  DeviceProblem dp(hp);
  DeviceBuffer kbig(elems * 2), vbig(elems * 2);
  CUDA_CHECK(gpu_fill_u16(kbig.get(), elems, kPoison16, stream.get()));
  CUDA_CHECK(gpu_fill_u16(vbig.get(), elems, kPoison16, stream.get()));
  CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  for (int b = 0; b < 2; ++b) {
    const size_t bytes = size_t(dense_batch) * 2;
    CUDA_CHECK(cudaMemcpy(kbig.as<char>() + size_t(b) * big * 2,
                          hp.buf[kBufK].data() + size_t(b) * dense_batch, bytes,
                          cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(vbig.as<char>() + size_t(b) * big * 2,
                          hp.buf[kBufV].data() + size_t(b) * dense_batch, bytes,
                          cudaMemcpyHostToDevice));
  }
  CUDA_CHECK(cudaDeviceSynchronize());  // pageable copies may still be landing (see copy_from)
  for (int splits : {1, 4}) {
    dp.poison();
    flare_mha_fwd_params p = dp.params(hp);
    p.k = kbig.get(), p.v = vbig.get();
    p.k_batch_stride = p.v_batch_stride = big;
    p.num_splits = splits;
    std::string error;
    ASSERT_EQ(run_flare(p, dp.workspace, stream.get(), &error), FLARE_OK) << error;
    const Verdict v = check_output(host_params(hp), dp.out.download<uint16_t>(),
                                   dp.lse.download<float>(), ref);
    if (!v.ok) report_failure(describe(s) + " k/v batch stride 2^31+4096", v.summary());
  }
}

// ---------------------------------------------------------------------------------------------
// Bases and strides a strided-tensor library may produce that flare cannot read: a base off
// its element alignment (an odd byte address) and a negative stride. (Any element-aligned base
// and non-negative stride is valid: rows that are not whole 16-byte chunks run as narrow
// launches, tested against the reference in test_serving.cpp and test_decode.cpp.)
TEST(ReliabStrides, ElementMisalignedRejectedNeverMisread) {
  FLARE_REQUIRE_GPU();
  Spec s;
  s.d = 64, s.batch = 2, s.sq = 40, s.sk = 80, s.h = 2, s.hk = 2, s.seed = 80;
  const HostProblem hp = build(s);
  Stream stream;
  DeviceProblem dp(hp);
  const flare_mha_fwd_params base = dp.params(hp);
  int cases = 0;
  auto expect_rejected = [&](const char* what, flare_mha_fwd_params p, flare_status want) {
    ++cases;
    dp.poison();
    const flare_status st = flare_mha_fwd(&p, stream.get());
    const std::string msg = flare_last_error();
    CUDA_CHECK(cudaStreamSynchronize(stream.get()));
    EXPECT_EQ(st, want) << what << ": " << msg;
    EXPECT_FALSE(msg.empty()) << what;
    size_t written = 0;
    for (uint16_t x : dp.out.download<uint16_t>()) written += x != kPoison16;
    for (float x : dp.lse.download<float>()) written += !is_poison_f32(x);
    EXPECT_EQ(written, 0u) << what << ": rejected call wrote " << written << " elements";
  };
  const char* names[] = {"q", "k", "v", "out"};
  for (int t = 0; t < 4; ++t)
    for (int dim = 0; dim < 3; ++dim) {
      flare_mha_fwd_params p = base;
      int64_t* st[4][3] = {{&p.q_batch_stride, &p.q_row_stride, &p.q_head_stride},
                           {&p.k_batch_stride, &p.k_row_stride, &p.k_head_stride},
                           {&p.v_batch_stride, &p.v_row_stride, &p.v_head_stride},
                           {&p.out_batch_stride, &p.out_row_stride, &p.out_head_stride}};
      *st[t][dim] = -*st[t][dim] - 8;
      std::string what = std::string(names[t]) + " stride " + std::to_string(dim) + " negative";
      expect_rejected(what.c_str(), p, FLARE_ERROR_INVALID_ARGUMENT);
    }
  for (int t = 0; t < 4; ++t)
    for (int bytes : {1, 3}) {
      flare_mha_fwd_params p = base;
      const void** ptrs[4] = {&p.q, &p.k, &p.v, const_cast<const void**>(&p.out)};
      *ptrs[t] = static_cast<const char*>(*ptrs[t]) + bytes;
      std::string what = std::string(names[t]) + " base +" + std::to_string(bytes) + " bytes";
      expect_rejected(what.c_str(), p, FLARE_ERROR_MISALIGNED);
    }
  std::printf("ReliabStrides: %d unreadable variants rejected\n", cases);
}

// ---------------------------------------------------------------------------------------------
// Determinism: 100 runs spread over 4 streams, out and lse identical to the first run.
struct DetCase {
  std::string name;
  HostProblem hp;
  bool kv_cache = false;  // the reference needs the appended cache
};

HostProblem build_paged(bool append) {
  std::mt19937_64 rng(mix_seed(base_seed(), append ? 0xDE7A : 0xDE7B));
  HostProblem hp;
  flare_mha_fwd_params& p = hp.tmpl;
  flare_mha_fwd_params_init(&p);
  const int batch = 3, sq = append ? 2 : 1, h = 8, hk = 2, d = 128, page = 64, max_pages = 12;
  const int dtype = FLARE_DTYPE_BF16, num_pages = batch * max_pages + 2;
  p.dtype = dtype, p.head_dim = d, p.batch = batch, p.seqlen_q = sq;
  p.num_heads = h, p.num_heads_k = hk, p.num_splits = 0, p.causal = append;
  const Strides sq_s = make_strides(kContiguous, batch, sq, h, d);
  hp.buf[kBufQ] = random_tensor(sq_s.elems, dtype, rng);
  hp.q = {kBufQ, 0};
  p.q_batch_stride = sq_s.batch, p.q_row_stride = sq_s.row, p.q_head_stride = sq_s.head;
  p.out_batch_stride = sq_s.batch, p.out_row_stride = sq_s.row, p.out_head_stride = sq_s.head;
  hp.out_elems = sq_s.elems;
  hp.ref_lse_elems = hp.lse_elems = size_t(batch) * h * sq;
  const Strides sc = make_strides(kContiguous, num_pages, page, hk, d);
  hp.buf[kBufK] = random_tensor(sc.elems, dtype, rng);
  hp.buf[kBufV] = random_tensor(sc.elems, dtype, rng);
  hp.k = {kBufK, 0}, hp.v = {kBufV, 0};
  p.k_batch_stride = sc.batch, p.k_row_stride = sc.row, p.k_head_stride = sc.head;
  p.v_batch_stride = sc.batch, p.v_row_stride = sc.row, p.v_head_stride = sc.head;
  std::vector<int32_t> perm(num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  hp.block_table.assign(perm.begin(), perm.begin() + batch * max_pages);
  p.block_table_batch_stride = max_pages;
  p.page_block_size = page;
  p.num_pages = num_pages;
  p.seqlen_k = page * max_pages;
  hp.cache_seqlens = {700, 1, 766};
  if (append) {
    const Strides sn = make_strides(kContiguous, batch, sq, hk, d);
    hp.buf[kBufKNew] = random_tensor(sn.elems, dtype, rng);
    hp.buf[kBufVNew] = random_tensor(sn.elems, dtype, rng);
    hp.k_new = {kBufKNew, 0}, hp.v_new = {kBufVNew, 0};
    p.seqlen_new = sq;
    p.k_new_batch_stride = sn.batch, p.k_new_row_stride = sn.row, p.k_new_head_stride = sn.head;
    p.v_new_batch_stride = sn.batch, p.v_new_row_stride = sn.row, p.v_new_head_stride = sn.head;
  }
  return hp;
}

std::vector<DetCase> det_cases() {
  std::vector<DetCase> v;
  Spec plain;
  plain.d = 128, plain.batch = 2, plain.sq = 300, plain.sk = 777, plain.h = 4, plain.hk = 2;
  plain.causal = true, plain.seed = 90;
  v.push_back({"plain", build(plain)});
  // Enough query tiles (8 per head x 8 heads x 2) for the Hopper path's persistent CTAs with
  // tickets from the workspace's tile counter.
  Spec many;
  many.d = 128, many.batch = 2, many.sq = 1024, many.sk = 1024, many.h = 8, many.hk = 2;
  many.causal = true, many.seed = 94;
  v.push_back({"prefill_many_tiles", build(many)});
  Spec split = plain;
  split.splits = 7, split.sq = 17, split.seed = 91;
  v.push_back({"split7", build(split)});
  Spec heur;
  heur.d = 64, heur.sq = 1, heur.sk = 5000, heur.h = 16, heur.hk = 2, heur.splits = 0;
  heur.seed = 92;
  v.push_back({"split_heuristic_decode", build(heur)});
  Spec var;
  var.dtype = FLARE_DTYPE_FP16, var.d = 64, var.q_lens = {64, 1, 0, 255}, var.k_lens = {128, 300, 5, 255};
  var.splits = 3, var.seed = 93;
  v.push_back({"varlen_split3", build(var)});
  v.push_back({"paged", build_paged(false), true});
  v.push_back({"paged_append", build_paged(true), true});
  return v;
}

TEST(ReliabDeterminism, HundredRunsFourStreams) {
  FLARE_REQUIRE_GPU();
  const int kRuns = 100;
  for (DetCase& c : det_cases()) {
    // Correctness once (the cache cases against the appended host cache).
    flare_mha_fwd_params host = host_params(c.hp);
    std::vector<uint16_t> k_after = c.hp.buf[kBufK], v_after = c.hp.buf[kBufV];
    if (c.kv_cache) {
      flare::ref::append_kv(host, k_after.data(), v_after.data());
      host.k = k_after.data(), host.v = v_after.data();
    }
    const RefOutputs ref = compute_reference(host, c.hp);
    Stream streams[4];
    DeviceProblem dp(c.hp);
    const flare_mha_fwd_params p = dp.params(c.hp);
    std::vector<uint16_t> out0;
    std::vector<float> lse0;
    int differ = 0, first_diff = -1;
    for (int run = 0; run < kRuns; ++run) {
      dp.poison();
      std::string error;
      ASSERT_EQ(run_flare(p, dp.workspace, streams[run % 4].get(), &error), FLARE_OK)
          << c.name << ": " << error;
      std::vector<uint16_t> out = dp.out.download<uint16_t>();
      std::vector<float> lse = dp.lse.download<float>();
      if (run == 0) {
        const Verdict v = check_output(host_params(c.hp), out, lse, ref);
        if (!v.ok) report_failure("determinism case " + c.name, v.summary());
        out0 = std::move(out), lse0 = std::move(lse);
        continue;
      }
      const bool same = out == out0 && lse.size() == lse0.size() &&
                        std::memcmp(lse.data(), lse0.data(), lse.size() * sizeof(float)) == 0;
      if (!same) {
        ++differ;
        if (first_diff < 0) first_diff = run;
      }
    }
    EXPECT_EQ(differ, 0) << c.name << ": " << differ << " of " << kRuns - 1
                         << " runs differ from run 0 (first: run " << first_diff << ")";
    std::printf("ReliabDeterminism %s: %d runs on 4 streams, %d differ, splits %d\n",
                c.name.c_str(), kRuns, differ, [&] {
                  flare_mha_fwd_params r = p;
                  r.workspace = dp.workspace.get(), r.workspace_size = dp.workspace.bytes();
                  return resolved_splits(r);
                }());
  }
}

// ---------------------------------------------------------------------------------------------
// CUDA graphs: inference engines capture decode steps. Each determinism case is captured on a
// stream (flare_mha_fwd must make no call that breaks a capture), the graph is replayed 100
// times over poisoned outputs, and every replay must equal the eager run bit for bit. This
// covers the Hopper kernels' persistent CTAs taking tickets from the workspace's tile counter
// (the captured memset zeroes it before every replay) and the split combine's programmatic
// dependent launch (a programmatic edge in the graph). The eager and replay times of the same
// call are printed, not asserted.
TEST(ReliabGraphCapture, ReplayEqualsEagerRun) {
  FLARE_REQUIRE_GPU();
  for (DetCase& c : det_cases()) {
    Stream stream;
    DeviceProblem dp(c.hp);
    flare_mha_fwd_params p = dp.params(c.hp);
    dp.poison();
    std::string error;
    ASSERT_EQ(run_flare(p, dp.workspace, stream.get(), &error), FLARE_OK) << c.name << ": " << error;
    const std::vector<uint16_t> out0 = dp.out.download<uint16_t>();
    const std::vector<float> lse0 = dp.lse.download<float>();

    // run_flare sized the workspace; the captured call uses it as is.
    size_t bytes = 0;
    ASSERT_EQ(flare_mha_fwd_workspace_size(&p, g_device, &bytes), FLARE_OK);
    p.workspace = bytes > 0 ? dp.workspace.get() : nullptr;
    p.workspace_size = bytes > 0 ? dp.workspace.bytes() : 0;
    cudaGraph_t graph = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
    const flare_status st = flare_mha_fwd(&p, stream.get());
    const cudaError_t end = cudaStreamEndCapture(stream.get(), &graph);
    ASSERT_EQ(st, FLARE_OK) << c.name << ": captured flare_mha_fwd: " << flare_last_error();
    ASSERT_EQ(end, cudaSuccess) << c.name << ": " << cudaGetErrorString(end);
    cudaGraphExec_t exec = nullptr;
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    constexpr int kReplays = 100;
    int differ = 0;
    for (int replay = 0; replay < kReplays; ++replay) {
      dp.poison();
      CUDA_CHECK(cudaGraphLaunch(exec, stream.get()));
      CUDA_CHECK(cudaStreamSynchronize(stream.get()));
      const std::vector<uint16_t> out = dp.out.download<uint16_t>();
      const std::vector<float> lse = dp.lse.download<float>();
      if (out != out0 || lse.size() != lse0.size() ||
          std::memcmp(lse.data(), lse0.data(), lse.size() * sizeof(float)) != 0)
        ++differ;
    }
    // Back-to-back timing of the same call, eager and replayed (no poison in between).
    cudaEvent_t t0, t1;
    CUDA_CHECK(cudaEventCreate(&t0));
    CUDA_CHECK(cudaEventCreate(&t1));
    auto time_ms = [&](auto&& launch_once) {
      for (int i = 0; i < 5; ++i) launch_once();
      CUDA_CHECK(cudaEventRecord(t0, stream.get()));
      for (int i = 0; i < kReplays; ++i) launch_once();
      CUDA_CHECK(cudaEventRecord(t1, stream.get()));
      CUDA_CHECK(cudaEventSynchronize(t1));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
      return ms / kReplays;
    };
    const float eager_ms = time_ms([&] { ASSERT_EQ(flare_mha_fwd(&p, stream.get()), FLARE_OK); });
    const float graph_ms = time_ms([&] { CUDA_CHECK(cudaGraphLaunch(exec, stream.get())); });
    CUDA_CHECK(cudaEventDestroy(t0));
    CUDA_CHECK(cudaEventDestroy(t1));
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
    EXPECT_EQ(differ, 0) << c.name << ": " << differ << " of " << kReplays
                         << " graph replays differ from the eager run";
    std::printf("ReliabGraphCapture %s: %d replays, %d differ; per call eager %.1f us, replay "
                "%.1f us\n",
                c.name.c_str(), kReplays, differ, 1000 * eager_ms, 1000 * graph_ms);
  }
}

// ---------------------------------------------------------------------------------------------
// Concurrency: host threads with their own streams and shapes, all calling at once.
TEST(ReliabConcurrency, ThreadsOwnStreamsAndErrors) {
  FLARE_REQUIRE_GPU();
  const int kThreads = 12, kIters = 20;
  std::vector<Spec> specs(kThreads);
  std::vector<HostProblem> hps(kThreads);
  std::vector<RefOutputs> refs(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    Spec& s = specs[t];
    s.dtype = kDtypes[t % 2];
    s.d = (t % 3 == 0) ? 128 : (t % 3 == 1) ? 64 : 48;
    s.batch = 1 + t % 3, s.sq = 1 + 37 * t, s.sk = 64 + 91 * t;
    s.h = 2 * (1 + t % 4), s.hk = (t % 2) ? 2 : s.h;
    s.causal = t % 4 == 1, s.splits = t % 5 == 0 ? 0 : 1 + t % 4;
    s.seed = 1000 + t;
    hps[t] = build(s);
  }
  {
    std::vector<std::thread> pool;
    for (int t = 0; t < kThreads; ++t)
      pool.emplace_back([&, t] { refs[t] = compute_reference(host_params(hps[t]), hps[t]); });
    for (auto& th : pool) th.join();
  }
  std::vector<std::unique_ptr<DeviceProblem>> dps;
  std::vector<std::unique_ptr<Stream>> streams;
  std::vector<flare_mha_fwd_params> params(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    dps.emplace_back(new DeviceProblem(hps[t]));
    streams.emplace_back(new Stream());
    flare_mha_fwd_params p = dps[t]->params(hps[t]);
    size_t bytes = 0;
    ASSERT_EQ(flare_mha_fwd_workspace_size(&p, g_device, &bytes), FLARE_OK) << flare_last_error();
    dps[t]->workspace.alloc(bytes);
    p.workspace = bytes ? dps[t]->workspace.get() : nullptr;
    p.workspace_size = bytes;
    params[t] = p;
  }
  std::vector<std::string> problems(kThreads);
  std::atomic<int> arrived{0};  // start line: every thread calls at once
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t)
    pool.emplace_back([&, t] {
      std::string& err = problems[t];
      // Each thread's bad call names its own value: num_splits 200 + t.
      flare_mha_fwd_params bad = params[t];
      bad.num_splits = 200 + t;
      const std::string mine = "num_splits (" + std::to_string(200 + t) + ")";
      cudaSetDevice(g_device);
      arrived.fetch_add(1);
      while (arrived.load() < kThreads) std::this_thread::yield();
      for (int it = 0; it < kIters && err.empty(); ++it) {
        if (flare_mha_fwd(&bad, streams[t]->get()) != FLARE_ERROR_INVALID_ARGUMENT)
          err = "bad call not rejected";
        const std::string m1 = flare_last_error();
        std::this_thread::yield();
        const std::string m2 = flare_last_error();
        if (m1.find(mine) == std::string::npos || m1 != m2)
          err = "iteration " + std::to_string(it) + ": own message '" + m1 + "' then '" + m2 +
                "', expected it to name " + mine;
        const flare_status st = flare_mha_fwd(&params[t], streams[t]->get());
        if (st != FLARE_OK) err = std::string("good call failed: ") + flare_last_error();
        else if (flare_last_error()[0] != '\0')
          err = std::string("message left after a successful call: ") + flare_last_error();
      }
      if (cudaStreamSynchronize(streams[t]->get()) != cudaSuccess) err += " | stream sync failed";
    });
  for (auto& th : pool) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_TRUE(problems[t].empty()) << "thread " << t << " (" << describe(specs[t])
                                     << "): " << problems[t];
    const Verdict v = check_output(host_params(hps[t]), dps[t]->out.download<uint16_t>(),
                                   dps[t]->lse.download<float>(), refs[t]);
    if (!v.ok) report_failure("thread " + std::to_string(t) + " " + describe(specs[t]), v.summary());
  }
  std::printf("ReliabConcurrency: %d threads x %d (bad + good) calls\n", kThreads, kIters);
}

}  // namespace
}  // namespace flare_test
