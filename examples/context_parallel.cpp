// Context-parallel attention over NCCL: one process, one thread per visible GPU
// (communicators from ncclCommInitAll), each GPU a rank holding the zig-zag shard of one long
// sequence. Checks every rank's output rows against single-GPU attention over the whole
// sequence on GPU 0, then times both (median of the timed runs, CUDA events) and prints one
// RESULT line: the tokens/s of one GPU and of all of them.
//
//   ./flare_cp_example [seqlen_per_rank=4096] [strategy=auto|ring|allgather]
//                      [mask=causal|full] [timed_runs=10]
//
// Exit status: 0 when the outputs agree (max |difference| < 0.05 in bf16) or when there is no
// GPU (it says so), 2 when not, 1 on an error. NVLink SHARP stays off (NCCL_NVLS_ENABLE=0 is
// set before the communicators exist).
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <flare/cp_schedule.hpp>
#include <flare/flare.hpp>
#include <flare/flare_cp.hpp>

#define CHECK_CUDA(x)                                                              \
  do {                                                                             \
    cudaError_t e_ = (x);                                                          \
    if (e_ != cudaSuccess) {                                                       \
      std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_));                \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)
#define CHECK_NCCL(x)                                                              \
  do {                                                                             \
    ncclResult_t r_ = (x);                                                         \
    if (r_ != ncclSuccess) {                                                       \
      std::fprintf(stderr, "%s: %s\n", #x, ncclGetErrorString(r_));                \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

static uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}
static float from_bf16(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Fast reproducible inputs (a splitmix hash per element, uniform in [-1.7, 1.7)): the host
// fills hundreds of millions of elements for the long sequences.
static float hashed_uniform(uint64_t i) {
  uint64_t z = i * 0x9E3779B97F4A7C15ull + 0x1234567ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float(z >> 40) / float(1 << 24) * 2.f - 1.f) * 1.7f;
}

static float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.f : v[v.size() / 2];
}

int main(int argc, char** argv) {
  const int rows_per_rank = argc > 1 ? std::atoi(argv[1]) : 4096;
  const std::string strat = argc > 2 ? argv[2] : "auto";
  const std::string mask = argc > 3 ? argv[3] : "causal";
  const int timed_runs = argc > 4 ? std::atoi(argv[4]) : 10;
  if (mask != "causal" && mask != "full") {
    std::fprintf(stderr, "mask must be causal or full\n");
    return 1;
  }
  flare::cp::CpOptions opts;
  opts.causal = mask == "causal";
  opts.strategy = strat == "ring"        ? flare::cp::Strategy::Ring
                  : strat == "allgather" ? flare::cp::Strategy::AllGather
                                         : flare::cp::Strategy::Auto;

  setenv("NCCL_NVLS_ENABLE", "0", 1);  // before any communicator is created
  int world = 0;
  if (cudaGetDeviceCount(&world) != cudaSuccess || world == 0) {
    std::printf("SKIP: no CUDA driver/GPU found; the context-parallel example needs one or more\n");
    return 0;
  }
  if (rows_per_rank < 2 || rows_per_rank % 2) {
    std::fprintf(stderr, "seqlen_per_rank must be even and >= 2\n");
    return 1;
  }
  const int batch = 1, heads = 16, heads_k = 4, d = 128, c = rows_per_rank / 2;
  const int S = world * rows_per_rank;
  const int64_t qrow = int64_t(heads) * d, kvrow = int64_t(heads_k) * d;
  std::printf("context parallel: %d GPUs, seqlen %d (%d per rank), %s, bf16, %d/%d heads, d %d\n",
              world, S, rows_per_rank, mask.c_str(), heads, heads_k, d);

  std::vector<ncclComm_t> comms(world);
  std::vector<int> devs(world);
  for (int r = 0; r < world; ++r) devs[r] = r;
  CHECK_NCCL(ncclCommInitAll(comms.data(), world, devs.data()));

  // The whole sequence on the host.
  std::vector<uint16_t> q(size_t(S) * qrow), k(size_t(S) * kvrow), v(size_t(S) * kvrow);
  for (size_t i = 0; i < q.size(); ++i) q[i] = to_bf16(hashed_uniform(3 * i));
  for (size_t i = 0; i < k.size(); ++i) k[i] = to_bf16(hashed_uniform(3 * i + 1));
  for (size_t i = 0; i < v.size(); ++i) v[i] = to_bf16(hashed_uniform(3 * i + 2));

  // Each rank: its zig-zag shard (chunks r and 2R-1-r), a stream, a CP object.
  struct Rank {
    void *q, *k, *v, *out;
    cudaStream_t stream;
    flare::cp::ContextParallelAttention* cp;
  };
  std::vector<Rank> ranks(world);
  for (int r = 0; r < world; ++r) {
    CHECK_CUDA(cudaSetDevice(r));
    Rank& R = ranks[r];
    std::vector<uint16_t> sq(size_t(rows_per_rank) * qrow), sk(size_t(rows_per_rank) * kvrow),
        sv(sk.size());
    for (int i = 0; i < rows_per_rank; ++i) {
      const int64_t g = flare::cp::global_row(r, world, c, i);
      std::memcpy(&sq[i * qrow], &q[g * qrow], qrow * 2);
      std::memcpy(&sk[i * kvrow], &k[g * kvrow], kvrow * 2);
      std::memcpy(&sv[i * kvrow], &v[g * kvrow], kvrow * 2);
    }
    CHECK_CUDA(cudaMalloc(&R.q, sq.size() * 2));
    CHECK_CUDA(cudaMalloc(&R.k, sk.size() * 2));
    CHECK_CUDA(cudaMalloc(&R.v, sv.size() * 2));
    CHECK_CUDA(cudaMalloc(&R.out, sq.size() * 2));
    CHECK_CUDA(cudaMemcpy(R.q, sq.data(), sq.size() * 2, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(R.k, sk.data(), sk.size() * 2, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(R.v, sv.data(), sv.size() * 2, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaStreamCreate(&R.stream));
    R.cp = new flare::cp::ContextParallelAttention(comms[r]);
  }

  // One thread per rank (forward issues its own NCCL groups per ring step, so it must not be
  // wrapped in an outer ncclGroupStart/End; one process per GPU works the same way).
  const flare::DType bf16 = flare::DType::BF16;
  std::vector<flare::cp::Strategy> used(world, flare::cp::Strategy::Auto);
  std::vector<std::string> errors(world);
  // runs forward `runs` times on every rank; rank_ms[r] gets each run's time on its stream.
  std::vector<std::vector<float>> rank_ms(world);
  auto run_all = [&](int runs) {
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r)
      threads.emplace_back([&, r] {
        try {
          CHECK_CUDA(cudaSetDevice(r));
          Rank& R = ranks[r];
          cudaEvent_t start, stop;
          CHECK_CUDA(cudaEventCreate(&start));
          CHECK_CUDA(cudaEventCreate(&stop));
          rank_ms[r].clear();
          for (int it = 0; it < runs; ++it) {
            CHECK_CUDA(cudaEventRecord(start, R.stream));
            used[r] = R.cp->forward(
                flare::contiguous(R.q, bf16, {batch, rows_per_rank, heads, d}),
                flare::contiguous(R.k, bf16, {batch, rows_per_rank, heads_k, d}),
                flare::contiguous(R.v, bf16, {batch, rows_per_rank, heads_k, d}),
                flare::contiguous(R.out, bf16, {batch, rows_per_rank, heads, d}), nullptr, opts,
                R.stream);
            CHECK_CUDA(cudaEventRecord(stop, R.stream));
            CHECK_CUDA(cudaEventSynchronize(stop));
            float ms = 0.f;
            CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
            rank_ms[r].push_back(ms);
          }
          CHECK_CUDA(cudaEventDestroy(start));
          CHECK_CUDA(cudaEventDestroy(stop));
        } catch (const flare::Error& e) {
          errors[r] = e.what();
        }
      });
    for (std::thread& t : threads) t.join();
    for (int r = 0; r < world; ++r)
      if (!errors[r].empty()) {
        std::fprintf(stderr, "rank %d: flare: %s\n", r, errors[r].c_str());
        return false;
      }
    return true;
  };
  if (!run_all(1)) return 1;
  std::printf("strategy: %s\n", flare::cp::strategy_name(used[0]));

  // Single-GPU attention over the whole sequence on GPU 0, for comparison.
  CHECK_CUDA(cudaSetDevice(0));
  void *dq, *dk, *dv, *dout;
  CHECK_CUDA(cudaMalloc(&dq, q.size() * 2));
  CHECK_CUDA(cudaMalloc(&dk, k.size() * 2));
  CHECK_CUDA(cudaMalloc(&dv, v.size() * 2));
  CHECK_CUDA(cudaMalloc(&dout, q.size() * 2));
  CHECK_CUDA(cudaMemcpy(dq, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dk, k.data(), k.size() * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dv, v.data(), v.size() * 2, cudaMemcpyHostToDevice));
  flare::FlashAttnOptions fo;
  fo.causal = opts.causal;
  auto single = [&] {
    flare::flash_attn(flare::contiguous(dq, bf16, {batch, S, heads, d}),
                      flare::contiguous(dk, bf16, {batch, S, heads_k, d}),
                      flare::contiguous(dv, bf16, {batch, S, heads_k, d}),
                      flare::contiguous(dout, bf16, {batch, S, heads, d}), fo);
  };
  single();
  std::vector<uint16_t> full(q.size());
  CHECK_CUDA(cudaMemcpy(full.data(), dout, full.size() * 2, cudaMemcpyDeviceToHost));

  double max_diff = 0;
  for (int r = 0; r < world; ++r) {
    std::vector<uint16_t> o(size_t(rows_per_rank) * qrow);
    CHECK_CUDA(cudaSetDevice(r));
    CHECK_CUDA(cudaMemcpy(o.data(), ranks[r].out, o.size() * 2, cudaMemcpyDeviceToHost));
    for (int i = 0; i < rows_per_rank; ++i) {
      const int64_t g = flare::cp::global_row(r, world, c, i);
      for (int64_t e = 0; e < qrow; ++e)
        max_diff = std::fmax(max_diff, std::fabs(from_bf16(o[i * qrow + e]) -
                                                 from_bf16(full[g * qrow + e])));
    }
  }
  std::printf("max |context parallel - single GPU| = %.3g\n", max_diff);

  // Timing: warm-up, then the median of `timed_runs` runs (the slowest rank's median for CP).
  float cp_ms = 0.f, single_ms = 0.f;
  if (timed_runs > 0) {
    if (!run_all(2) || !run_all(timed_runs)) return 1;
    for (int r = 0; r < world; ++r) cp_ms = std::max(cp_ms, median(rank_ms[r]));
    CHECK_CUDA(cudaSetDevice(0));
    cudaEvent_t start, stop;
    CHECK_CUDA(cudaEventCreate(&start));
    CHECK_CUDA(cudaEventCreate(&stop));
    std::vector<float> ms(timed_runs);
    single();
    for (int it = 0; it < timed_runs; ++it) {
      CHECK_CUDA(cudaEventRecord(start, nullptr));
      single();
      CHECK_CUDA(cudaEventRecord(stop, nullptr));
      CHECK_CUDA(cudaEventSynchronize(stop));
      CHECK_CUDA(cudaEventElapsedTime(&ms[it], start, stop));
    }
    single_ms = median(ms);
    CHECK_CUDA(cudaEventDestroy(start));
    CHECK_CUDA(cudaEventDestroy(stop));
  }
  const double tokens = double(batch) * S;
  std::printf("RESULT world=%d seqlen=%d mask=%s strategy=%s single_ms=%.3f cp_ms=%.3f "
              "tokens_per_s_1gpu=%.0f tokens_per_s_cp=%.0f speedup=%.2f max_diff=%.3g\n",
              world, S, mask.c_str(), flare::cp::strategy_name(used[0]), single_ms, cp_ms,
              single_ms > 0 ? tokens / (single_ms * 1e-3) : 0.0,
              cp_ms > 0 ? tokens / (cp_ms * 1e-3) : 0.0, cp_ms > 0 ? single_ms / cp_ms : 0.0,
              max_diff);

  for (int r = 0; r < world; ++r) {
    CHECK_CUDA(cudaSetDevice(r));
    delete ranks[r].cp;
    cudaFree(ranks[r].q);
    cudaFree(ranks[r].k);
    cudaFree(ranks[r].v);
    cudaFree(ranks[r].out);
    cudaStreamDestroy(ranks[r].stream);
    ncclCommDestroy(comms[r]);
  }
  return max_diff < 0.05 ? 0 : 2;
}
