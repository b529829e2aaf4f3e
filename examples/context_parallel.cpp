// Context-parallel attention over NCCL: one process, one thread per visible GPU
// (communicators from ncclCommInitAll), each GPU a rank holding the zig-zag shard of one long
// causal sequence. The result of every rank is compared with single-GPU attention over the
// whole sequence on GPU 0.
//
//   ./flare_cp_example [seqlen_per_rank=4096] [strategy=auto|ring|allgather]
//
// NVLink SHARP stays off (NCCL_NVLS_ENABLE=0 is set before the communicators are created).
#include <cuda_runtime.h>
#include <nccl.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
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

int main(int argc, char** argv) {
  const int rows_per_rank = argc > 1 ? std::atoi(argv[1]) : 4096;
  const std::string strat = argc > 2 ? argv[2] : "auto";
  flare::cp::CpOptions opts;
  opts.causal = true;
  opts.strategy = strat == "ring"        ? flare::cp::Strategy::Ring
                  : strat == "allgather" ? flare::cp::Strategy::AllGather
                                         : flare::cp::Strategy::Auto;

  setenv("NCCL_NVLS_ENABLE", "0", 1);  // before any communicator is created
  int world = 0;
  CHECK_CUDA(cudaGetDeviceCount(&world));
  if (world < 1 || rows_per_rank < 2 || rows_per_rank % 2) {
    std::fprintf(stderr, "need >= 1 GPU and an even seqlen_per_rank\n");
    return 1;
  }
  const int batch = 1, heads = 16, heads_k = 4, d = 128, c = rows_per_rank / 2;
  const int S = world * rows_per_rank;
  const int64_t qrow = int64_t(heads) * d, kvrow = int64_t(heads_k) * d;
  std::printf("context parallel: %d GPUs, seqlen %d (%d per rank), causal, bf16\n", world, S,
              rows_per_rank);

  std::vector<ncclComm_t> comms(world);
  std::vector<int> devs(world);
  for (int r = 0; r < world; ++r) devs[r] = r;
  CHECK_NCCL(ncclCommInitAll(comms.data(), world, devs.data()));

  // The whole sequence on the host.
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint16_t> q(size_t(S) * qrow), k(size_t(S) * kvrow), v(size_t(S) * kvrow);
  for (auto& x : q) x = to_bf16(nd(rng));
  for (auto& x : k) x = to_bf16(nd(rng));
  for (auto& x : v) x = to_bf16(nd(rng));

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
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        CHECK_CUDA(cudaSetDevice(r));
        Rank& R = ranks[r];
        used[r] = R.cp->forward(flare::contiguous(R.q, bf16, {batch, rows_per_rank, heads, d}),
                                flare::contiguous(R.k, bf16, {batch, rows_per_rank, heads_k, d}),
                                flare::contiguous(R.v, bf16, {batch, rows_per_rank, heads_k, d}),
                                flare::contiguous(R.out, bf16, {batch, rows_per_rank, heads, d}),
                                nullptr, opts, R.stream);
        CHECK_CUDA(cudaStreamSynchronize(R.stream));
      } catch (const flare::Error& e) {
        errors[r] = e.what();
      }
    });
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < world; ++r)
    if (!errors[r].empty()) {
      std::fprintf(stderr, "rank %d: flare: %s\n", r, errors[r].c_str());
      return 1;
    }
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
  fo.causal = true;
  flare::flash_attn(flare::contiguous(dq, bf16, {batch, S, heads, d}),
                    flare::contiguous(dk, bf16, {batch, S, heads_k, d}),
                    flare::contiguous(dv, bf16, {batch, S, heads_k, d}),
                    flare::contiguous(dout, bf16, {batch, S, heads, d}), fo);
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
