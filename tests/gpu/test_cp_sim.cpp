// Context parallelism simulated on one GPU: R virtual ranks run the ring schedule (or the
// all-gather) with the compute code of the NCCL implementation (src/cp/cp_exec.h: the
// flare_mha_fwd calls of each step, the in-place merges, the K/V packing and unsharding),
// copies standing in for ncclSend/ncclRecv/ncclAllGather. Each rank's output rows, put back
// in sequence order, must match single-GPU attention over the whole sequence (flare and the
// float64 reference). The NCCL transport, its streams and events are NOT exercised here.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cp/cp_exec.h"
#include "flare/cp_schedule.hpp"
#include "gpu/gpu_test_util.h"
#include "reference/reference.h"

namespace {

using flare_test::DeviceBuffer;
namespace cp = flare::cp;

struct SimCase {
  int dtype;
  int world;
  bool causal;
  cp::Strategy strategy;
};

void run_sim_case(const SimCase& c) {
  const int batch = 2, heads = 4, heads_k = 2, d = 64, chunk = 24;
  const int R = c.world, rows = 2 * chunk, S = 2 * R * chunk;
  const int64_t qrow = int64_t(heads) * d, kvrow = int64_t(heads_k) * d;
  std::mt19937_64 rng(4242 + R * 17 + (c.causal ? 3 : 0) + c.dtype + int(c.strategy) * 101);
  const std::vector<uint16_t> q = flare_test::random_tensor(size_t(batch) * S * qrow, c.dtype, rng);
  const std::vector<uint16_t> k = flare_test::random_tensor(size_t(batch) * S * kvrow, c.dtype, rng);
  const std::vector<uint16_t> v = flare_test::random_tensor(size_t(batch) * S * kvrow, c.dtype, rng);

  // Single-GPU attention over the whole sequence: float64 / naive references and flare.
  flare_mha_fwd_params hp;
  flare_mha_fwd_params_init(&hp);
  hp.dtype = c.dtype;
  hp.batch = batch;
  hp.seqlen_q = hp.seqlen_k = S;
  hp.num_heads = heads;
  hp.num_heads_k = heads_k;
  hp.head_dim = d;
  hp.q_head_stride = hp.out_head_stride = d;
  hp.q_row_stride = hp.out_row_stride = qrow;
  hp.q_batch_stride = hp.out_batch_stride = S * qrow;
  hp.k_head_stride = hp.v_head_stride = d;
  hp.k_row_stride = hp.v_row_stride = kvrow;
  hp.k_batch_stride = hp.v_batch_stride = S * kvrow;
  hp.causal = c.causal ? 1 : 0;
  const size_t out_elems = size_t(batch) * S * qrow, lse_elems = size_t(batch) * heads * S;
  flare_mha_fwd_params rp = hp;
  rp.q = q.data();
  rp.k = k.data();
  rp.v = v.data();
  const flare_test::RefOutputs refs = flare_test::compute_reference(rp, out_elems, lse_elems);
  const std::vector<double>& ref = refs.out64;
  const std::vector<double>& ref_lse = refs.lse64;
  const double naive_lse_err = refs.lse_naive_err;
  const double naive_err = refs.out_naive_err, max_ref = refs.out_max_abs;

  flare_test::Stream stream;
  DeviceBuffer dq, dk, dv, dfull(out_elems * 2), ws;
  dq.upload(q);
  dk.upload(k);
  dv.upload(v);
  {
    flare_mha_fwd_params p = hp;
    p.q = dq.get();
    p.k = dk.get();
    p.v = dv.get();
    p.out = dfull.get();
    std::string err;
    ASSERT_EQ(flare_test::run_flare(p, ws, stream.get(), &err), FLARE_OK) << err;
  }
  const std::vector<uint16_t> full = dfull.download<uint16_t>();

  // The zig-zag shards of every virtual rank (built on the host from global rows).
  std::vector<DeviceBuffer> lq(R), lk(R), lv(R), lout(R), llse(R), step_out(R), lse_call(R),
      lse_step(R), kv_a(R), kv_b(R);
  std::vector<cp::detail::LocalAttention> la(R);
  const size_t shard_bytes = size_t(batch) * rows * kvrow * 2;  // K or V of one rank
  for (int r = 0; r < R; ++r) {
    std::vector<uint16_t> sq(size_t(batch) * rows * qrow), sk(size_t(batch) * rows * kvrow),
        sv(sk.size());
    for (int b = 0; b < batch; ++b)
      for (int i = 0; i < rows; ++i) {
        const int64_t g = cp::global_row(r, R, chunk, i);
        std::copy_n(&q[(b * S + g) * qrow], qrow, &sq[(size_t(b) * rows + i) * qrow]);
        std::copy_n(&k[(b * S + g) * kvrow], kvrow, &sk[(size_t(b) * rows + i) * kvrow]);
        std::copy_n(&v[(b * S + g) * kvrow], kvrow, &sv[(size_t(b) * rows + i) * kvrow]);
      }
    lq[r].upload(sq);
    lk[r].upload(sk);
    lv[r].upload(sv);
    lout[r].alloc(sq.size() * 2);
    CUDA_CHECK(cudaMemset(lout[r].get(), 0xFF, lout[r].bytes()));
    cp::detail::LocalAttention& a = la[r];
    a.dtype = c.dtype;
    a.batch = batch;
    a.chunk_rows = chunk;
    a.heads = heads;
    a.heads_k = heads_k;
    a.head_dim = d;
    a.q = lq[r].get();
    a.q_hs = a.o_hs = d;
    a.q_rs = a.o_rs = qrow;
    a.q_bs = a.o_bs = rows * qrow;
    a.out = lout[r].get();
    llse[r].alloc(a.lse_count() * 4);
    a.lse = llse[r].as<float>();
    step_out[r].alloc(size_t(a.out_span()) * 2);
    lse_call[r].alloc(a.lse_count() * 4);
    lse_step[r].alloc(a.lse_count() * 4);
    kv_a[r].alloc(2 * shard_bytes);
    kv_b[r].alloc(2 * shard_bytes);
    // Pack [K | V] of the rank, as the NCCL path does before the first send.
    cp::detail::pack_shard(kv_a[r].get(), lk[r].get(), rows * kvrow, batch, rows * kvrow * 2, 2,
                           stream.get());
    cp::detail::pack_shard(kv_a[r].as<char>() + shard_bytes, lv[r].get(), rows * kvrow, batch,
                           rows * kvrow * 2, 2, stream.get());
  }

  try {
    if (c.strategy == cp::Strategy::Ring) {
      std::vector<DeviceBuffer*> cur(R), nxt(R);
      for (int r = 0; r < R; ++r) {
        cur[r] = &kv_a[r];
        nxt[r] = &kv_b[r];
      }
      for (int t = 0; t < R; ++t) {
        for (int r = 0; r < R; ++r) {
          cp::detail::KvView kv;
          kv.k = cur[r]->get();
          kv.v = cur[r]->as<char>() + shard_bytes;
          kv.rows = rows;
          kv.batch_stride = rows * kvrow;
          cp::detail::RingScratch sc;
          sc.step_out = step_out[r].get();
          sc.lse_call = lse_call[r].as<float>();
          sc.lse_step = lse_step[r].as<float>();
          cp::detail::ring_step(la[r], t, cp::ring_step_calls(r, R, t, c.causal, chunk), kv, sc,
                                stream.get());
        }
        // "send to r + 1 / receive from r - 1": a copy into the next rank's other buffer.
        if (t + 1 < R) {
          for (int r = 0; r < R; ++r)
            CUDA_CHECK(cudaMemcpyAsync(nxt[(r + 1) % R]->get(), cur[r]->get(), 2 * shard_bytes,
                                       cudaMemcpyDeviceToDevice, stream.get()));
          std::swap(cur, nxt);
        }
      }
    } else {
      // "all-gather": every rank's packed shard side by side, then sequence order.
      DeviceBuffer gathered(2 * shard_bytes * R), seq(2 * shard_bytes * R);
      for (int r = 0; r < R; ++r)
        CUDA_CHECK(cudaMemcpyAsync(gathered.as<char>() + 2 * shard_bytes * r, kv_a[r].get(),
                                   2 * shard_bytes, cudaMemcpyDeviceToDevice, stream.get()));
      char* k_full = seq.as<char>();
      char* v_full = k_full + shard_bytes * R;
      cp::detail::unshard_gathered(gathered.get(), k_full, v_full, R, batch, chunk, kvrow, 2,
                                   stream.get());
      // The unsharded K must be the original K.
      CUDA_CHECK(cudaStreamSynchronize(stream.get()));
      std::vector<uint16_t> k_back(k.size());
      CUDA_CHECK(cudaMemcpy(k_back.data(), k_full, k.size() * 2, cudaMemcpyDeviceToHost));
      ASSERT_TRUE(k_back == k) << "unshard_gathered did not restore the sequence order";
      cp::detail::KvView kv;
      kv.k = k_full;
      kv.v = v_full;
      kv.rows = S;
      kv.batch_stride = S * kvrow;
      for (int r = 0; r < R; ++r)
        cp::detail::allgather_compute(la[r], cp::allgather_calls(r, R, c.causal, chunk), kv,
                                      lse_call[r].as<float>(), stream.get());
      CUDA_CHECK(cudaStreamSynchronize(stream.get()));
    }
  } catch (const flare::Error& e) {
    FAIL() << "flare error " << e.status() << ": " << e.what();
  }
  CUDA_CHECK(cudaStreamSynchronize(stream.get()));

  // Back to sequence order and compare.
  double err = 0, diff_full = 0, lse_excess = 0;
  int64_t nonfinite = 0;
  for (int r = 0; r < R; ++r) {
    const std::vector<uint16_t> o = lout[r].download<uint16_t>();
    const std::vector<float> l = llse[r].download<float>();
    for (int b = 0; b < batch; ++b)
      for (int i = 0; i < rows; ++i) {
        const int64_t g = cp::global_row(r, R, chunk, i);
        for (int64_t e = 0; e < qrow; ++e) {
          const double x = flare::ref::to_float(o[(size_t(b) * rows + i) * qrow + e], c.dtype);
          const size_t ge = size_t(b * S + g) * qrow + e;
          if (!std::isfinite(x)) {
            ++nonfinite;
            continue;
          }
          err = std::max(err, std::fabs(x - ref[ge]));
          diff_full = std::max(diff_full, std::fabs(x - flare::ref::to_float(full[ge], c.dtype)));
        }
        for (int h = 0; h < heads; ++h) {
          const double want = ref_lse[(size_t(b) * heads + h) * S + g];
          const double got = l[(size_t(b) * heads + h) * rows + i];
          lse_excess = std::max(lse_excess, std::fabs(got - want) - 1e-4 * std::fabs(want));
        }
      }
  }
  EXPECT_EQ(nonfinite, 0) << "unwritten or non-finite output elements";
  // Ring: each of the R - 1 in-place merges rounds the running output to the dtype once.
  const int roundings = c.strategy == cp::Strategy::Ring ? R : 1;
  const double bound = 2 * naive_err +
                       2 * roundings * (c.dtype == FLARE_DTYPE_FP16 ? 1.0 / 2048 : 1.0 / 256) *
                           max_ref +
                       1e-5;
  EXPECT_LE(err, bound) << "naive err " << naive_err << ", max |out| " << max_ref
                        << ", max |cp - flare single GPU| " << diff_full;
  EXPECT_LE(lse_excess, std::max(1e-3, 2 * naive_lse_err)) << "naive lse err " << naive_lse_err;
}

TEST(ContextParallelSim, MatchesSingleGpuAttention) {
  FLARE_REQUIRE_GPU();
  for (cp::Strategy strategy : {cp::Strategy::Ring, cp::Strategy::AllGather})
    for (int world : {1, 2, 3, 4, 8})
      for (bool causal : {true, false})
        for (int dtype : {FLARE_DTYPE_BF16, FLARE_DTYPE_FP16}) {
          if (world == 1 && strategy == cp::Strategy::AllGather) continue;
          SCOPED_TRACE(testing::Message() << cp::strategy_name(strategy) << " world=" << world
                                          << " causal=" << causal << " "
                                          << flare_test::dtype_name(dtype));
          run_sim_case({dtype, world, causal, strategy});
          if (HasFatalFailure()) return;
        }
}

}  // namespace
