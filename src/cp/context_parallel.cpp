// flare::cp::ContextParallelAttention: the NCCL side of context parallelism (ring exchange or
// all-gather of the K/V shards); the compute is src/cp/cp_exec.h, shared with the
// single-GPU simulation test.
//
// Ring, on rank r (compute = the caller's stream, comm = an internal stream):
//   pack the local K/V into kv[0] (compute); ready -> comm
//   step t: comm: [wait computed[nxt] (t >= 1)] send kv[cur] to r+1, recv kv[nxt] from r-1
//                 (one NCCL group); record received[nxt]
//           compute: the step's calls on kv[cur], merged into out; record computed[cur];
//                    wait received[nxt] before step t+1
//   end: compute waits for the comm stream (kv buffers are reused by the next call).
// kv[nxt] is overwritten only after the compute that read it (step t-1) is done, and read
// only after it was received: two buffers suffice.
#include "flare/flare_cp.hpp"

#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "cp/cp_exec.h"

namespace flare {
namespace cp {
namespace {

void nccl_ok(ncclResult_t r, const char* what) {
  if (r != ncclSuccess)
    throw Error(FLARE_ERROR_CUDA, std::string(what) + " failed: " + ncclGetErrorString(r));
}

// A device allocation that only grows.
struct Scratch {
  void* ptr = nullptr;
  size_t bytes = 0;
  void* get(size_t need) {
    if (need > bytes) {
      // Queued work of an earlier call may still use the old buffer.
      if (ptr) {
        detail::cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
        detail::cuda_ok(cudaFree(ptr), "cudaFree");
      }
      ptr = nullptr;
      bytes = 0;
      detail::cuda_ok(cudaMalloc(&ptr, need), "cudaMalloc(context-parallel scratch)");
      bytes = need;
    }
    return ptr;
  }
  ~Scratch() {
    if (ptr) cudaFree(ptr);
  }
};

size_t align_up(size_t x) { return (x + 255) & ~size_t(255); }

}  // namespace

struct ContextParallelAttention::Impl {
  ncclComm_t comm = nullptr;
  int rank = 0, world = 1, device = 0;
  cudaStream_t comm_stream = nullptr;
  cudaEvent_t ready = nullptr, comm_done = nullptr;
  cudaEvent_t computed[2] = {nullptr, nullptr}, received[2] = {nullptr, nullptr};
  Scratch kv[2], out_scratch, lse_scratch, gathered, seq_kv;
};

ContextParallelAttention::ContextParallelAttention(ncclComm_t comm) : impl_(new Impl) {
  Impl& m = *impl_;
  if (comm == nullptr) throw Error(FLARE_ERROR_INVALID_ARGUMENT, "comm is null");
  m.comm = comm;
  nccl_ok(ncclCommUserRank(comm, &m.rank), "ncclCommUserRank");
  nccl_ok(ncclCommCount(comm, &m.world), "ncclCommCount");
  detail::cuda_ok(cudaGetDevice(&m.device), "cudaGetDevice");
  detail::cuda_ok(cudaStreamCreateWithFlags(&m.comm_stream, cudaStreamNonBlocking),
                  "cudaStreamCreateWithFlags");
  for (cudaEvent_t* e : {&m.ready, &m.comm_done, &m.computed[0], &m.computed[1], &m.received[0],
                         &m.received[1]})
    detail::cuda_ok(cudaEventCreateWithFlags(e, cudaEventDisableTiming), "cudaEventCreate");
}

ContextParallelAttention::~ContextParallelAttention() {
  Impl& m = *impl_;
  if (m.comm_stream) cudaStreamSynchronize(m.comm_stream);
  cudaDeviceSynchronize();  // scratch may still be in use by queued work
  for (cudaEvent_t e : {m.ready, m.comm_done, m.computed[0], m.computed[1], m.received[0],
                        m.received[1]})
    if (e) cudaEventDestroy(e);
  if (m.comm_stream) cudaStreamDestroy(m.comm_stream);
}

int ContextParallelAttention::rank() const { return impl_->rank; }
int ContextParallelAttention::world() const { return impl_->world; }

Strategy ContextParallelAttention::forward(const TensorView& q, const TensorView& k,
                                           const TensorView& v, const TensorView& out, float* lse,
                                           const CpOptions& options, void* stream_ptr) {
  using namespace flare::detail;
  Impl& m = *impl_;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);

  // ---- shapes (the library validates the attention calls again) ----
  const Heads h = check_qkvo(q, k, v, out, 4);
  expect_dim("k", k, 0, q.size(0), "q.shape[0]");
  expect_dim("k", k, 1, q.size(1), "q.shape[1] (every shard holds the same rows of Q and K/V)");
  if (q.dtype == DType::FP32) invalid("context-parallel attention takes fp16 or bf16");
  const int batch = to_int("q", 0, q.size(0));
  const int rows = to_int("q", 1, q.size(1));
  if (rows < 2 || rows % 2 != 0)
    invalid("q.shape[1] (" + std::to_string(rows) +
            ") must be even: the two zig-zag chunks of this rank");
  for (const TensorView* t : {&k, &v}) {
    const char* name = t == &k ? "k" : "v";
    if (t->stride[2] != h.head_dim || t->stride[1] != int64_t(h.heads_k) * h.head_dim)
      invalid(std::string(name) + " rows must be dense (row stride heads_k * d, head stride d)");
    if (batch > 1 && t->stride[0] < int64_t(rows) * h.heads_k * h.head_dim)
      invalid(std::string(name) + ".stride[0] is smaller than a batch entry");
  }
  if (options.softcap < 0.f) invalid("softcap must be >= 0");

  detail::LocalAttention la;
  la.dtype = static_cast<int>(q.dtype);
  la.batch = batch;
  la.chunk_rows = rows / 2;
  la.heads = h.heads;
  la.heads_k = h.heads_k;
  la.head_dim = h.head_dim;
  la.softmax_scale = options.softmax_scale;
  la.softcap = options.softcap;
  la.q = q.data;
  strides4(q, la.q_bs, la.q_rs, la.q_hs);
  la.out = out.data;
  strides4(out, la.o_bs, la.o_rs, la.o_hs);

  const size_t esize = la.esize();
  const int64_t row_elems = int64_t(h.heads_k) * h.head_dim;
  const size_t shard_bytes = size_t(batch) * rows * row_elems * esize;  // K or V
  const Strategy strategy =
      choose_strategy(options.strategy, m.world, 2 * shard_bytes, options.allgather_max_bytes);

  // lse: the caller's, or scratch; plus the per-call and per-step lse buffers.
  const size_t lse_bytes = align_up(la.lse_count() * sizeof(float));
  char* lse_base = static_cast<char*>(m.lse_scratch.get(3 * lse_bytes));
  la.lse = lse ? lse : reinterpret_cast<float*>(lse_base);
  float* lse_call = reinterpret_cast<float*>(lse_base + lse_bytes);
  float* lse_step = reinterpret_cast<float*>(lse_base + 2 * lse_bytes);

  if (strategy == Strategy::AllGather) {
    // Pack, gather all shards ([K_g | V_g] per rank), put them in sequence order, attend.
    char* g = static_cast<char*>(m.gathered.get(2 * shard_bytes * size_t(m.world)));
    char* mine = g + 2 * shard_bytes * size_t(m.rank);
    detail::pack_shard(mine, k.data, k.stride[0], batch, shard_bytes / batch, esize, stream);
    detail::pack_shard(mine + shard_bytes, v.data, v.stride[0], batch, shard_bytes / batch,
                       esize, stream);
    nccl_ok(ncclAllGather(mine, g, 2 * shard_bytes, ncclChar, m.comm, stream), "ncclAllGather");
    char* seq = static_cast<char*>(m.seq_kv.get(2 * shard_bytes * size_t(m.world)));
    char* k_full = seq;
    char* v_full = seq + shard_bytes * size_t(m.world);
    detail::unshard_gathered(g, k_full, v_full, m.world, batch, la.chunk_rows, row_elems, esize,
                             stream);
    detail::KvView kv;
    kv.k = k_full;
    kv.v = v_full;
    kv.rows = rows * m.world;
    kv.batch_stride = int64_t(kv.rows) * row_elems;
    detail::allgather_compute(
        la, allgather_calls(m.rank, m.world, options.causal, la.chunk_rows), kv, lse_call,
        stream);
    return strategy;
  }

  // ---- ring ----
  detail::RingScratch sc;
  sc.step_out = m.out_scratch.get(size_t(la.out_span()) * esize);
  sc.lse_call = lse_call;
  sc.lse_step = lse_step;
  char* kv_buf[2] = {static_cast<char*>(m.kv[0].get(2 * shard_bytes)),
                     static_cast<char*>(m.kv[1].get(2 * shard_bytes))};
  // The previous call's comm work (reading/writing kv) must be over before kv[0] is packed.
  detail::cuda_ok(cudaStreamWaitEvent(stream, m.comm_done, 0), "cudaStreamWaitEvent");
  detail::pack_shard(kv_buf[0], k.data, k.stride[0], batch, shard_bytes / batch, esize, stream);
  detail::pack_shard(kv_buf[0] + shard_bytes, v.data, v.stride[0], batch, shard_bytes / batch,
                     esize, stream);
  detail::cuda_ok(cudaEventRecord(m.ready, stream), "cudaEventRecord");
  detail::cuda_ok(cudaStreamWaitEvent(m.comm_stream, m.ready, 0), "cudaStreamWaitEvent");

  const int next = (m.rank + 1) % m.world, prev = (m.rank - 1 + m.world) % m.world;
  for (int t = 0; t < m.world; ++t) {
    const int cur = t & 1, nxt = cur ^ 1;
    if (t + 1 < m.world) {
      if (t >= 1)
        detail::cuda_ok(cudaStreamWaitEvent(m.comm_stream, m.computed[nxt], 0),
                        "cudaStreamWaitEvent");
      nccl_ok(ncclGroupStart(), "ncclGroupStart");
      nccl_ok(ncclSend(kv_buf[cur], 2 * shard_bytes, ncclChar, next, m.comm, m.comm_stream),
              "ncclSend");
      nccl_ok(ncclRecv(kv_buf[nxt], 2 * shard_bytes, ncclChar, prev, m.comm, m.comm_stream),
              "ncclRecv");
      nccl_ok(ncclGroupEnd(), "ncclGroupEnd");
      detail::cuda_ok(cudaEventRecord(m.received[nxt], m.comm_stream), "cudaEventRecord");
    }
    detail::KvView kv;
    kv.k = kv_buf[cur];
    kv.v = kv_buf[cur] + shard_bytes;
    kv.rows = rows;
    kv.batch_stride = int64_t(rows) * row_elems;
    detail::ring_step(la, t, ring_step_calls(m.rank, m.world, t, options.causal, la.chunk_rows),
                      kv, sc, stream);
    detail::cuda_ok(cudaEventRecord(m.computed[cur], stream), "cudaEventRecord");
    if (t + 1 < m.world)
      detail::cuda_ok(cudaStreamWaitEvent(stream, m.received[nxt], 0), "cudaStreamWaitEvent");
  }
  detail::cuda_ok(cudaEventRecord(m.comm_done, m.comm_stream), "cudaEventRecord");
  detail::cuda_ok(cudaStreamWaitEvent(stream, m.comm_done, 0), "cudaStreamWaitEvent");
  return strategy;
}

}  // namespace cp
}  // namespace flare
