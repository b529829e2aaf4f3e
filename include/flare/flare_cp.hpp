// flare context parallelism over NCCL (optional library flare_cp, built when NCCL is found).
//
// One long sequence is spread over the R ranks of an NCCL communicator (one GPU each). With
// zig-zag sharding (include/flare/cp_schedule.hpp) the sequence of S = 2 R c rows is cut into
// 2R chunks of c rows and rank r holds chunks r and 2R-1-r of Q, K and V, concatenated into
// 2c local rows; with a causal mask every rank then does the same work. Each rank gets the
// attention output (and lse) of its own 2c query rows over the whole sequence.
//
// Two strategies:
//   Ring       R steps; at step t rank r attends to the K/V shard of rank (r - t) mod R while
//              passing it on to rank r + 1 (grouped ncclSend/ncclRecv on an internal
//              communication stream, overlapped with the attention of the step on the
//              caller's stream). Each step's partial result is folded into the output with
//              flare_merge_attention_states. Per-pair masks: full, diagonal-causal or skipped.
//   AllGather  one ncclAllGather of every K/V shard, then each query chunk attends to the
//              key prefix it sees. Cheaper for short contexts (Auto picks it when the gathered
//              K/V fits in CpOptions::allgather_max_bytes).
//
// Keep NVLink SHARP off when creating the communicator (NCCL_NVLS_ENABLE=0 in the
// environment before ncclCommInitRank/ncclCommInitAll); see examples/context_parallel.cpp.
//
//   flare::cp::ContextParallelAttention cp(comm);           // current device = this rank's GPU
//   flare::cp::CpOptions opts;  opts.causal = true;
//   cp.forward(q, k, v, out, lse_or_nullptr, opts, stream);  // local shards, TensorViews
//
// Tested by CPU tests of the schedule (tests/cpu/test_cp_schedule.cpp), a single-GPU
// simulation of the schedule and compute with R virtual ranks (tests/gpu/test_cp_sim.cpp:
// copies instead of NCCL), and on two GPUs with NCCL by scripts/cp_check.sh (every output row
// against single-GPU attention; results in bench/results/2026-11-25-NVIDIA-H100-80GB-HBM3-x2/).
#ifndef FLARE_FLARE_CP_HPP
#define FLARE_FLARE_CP_HPP

#include <nccl.h>

#include <cstddef>
#include <memory>

#include "flare/cp_schedule.hpp"
#include "flare/flare.hpp"

namespace flare {
namespace cp {

struct CpOptions {
  bool causal = false;
  float softmax_scale = 0.f;  // 0: 1/sqrt(head_dim)
  float softcap = 0.f;        // 0: off
  Strategy strategy = Strategy::Auto;
  size_t allgather_max_bytes = size_t(64) << 20;  // Auto: all-gather up to this gathered K/V
};

// Context-parallel attention forward for one rank. Not thread-safe; one object per rank.
// Holds device scratch (grown on demand), a communication stream and events of the device
// current at construction.
class ContextParallelAttention {
 public:
  // comm: an initialised communicator of the context-parallel group (rank and size are read
  // from it). The current CUDA device must be this rank's device.
  explicit ContextParallelAttention(ncclComm_t comm);
  ~ContextParallelAttention();
  ContextParallelAttention(const ContextParallelAttention&) = delete;
  ContextParallelAttention& operator=(const ContextParallelAttention&) = delete;

  int rank() const;
  int world() const;

  // Local zig-zag shards of this rank, 2c rows each (chunks rank and 2*world-1-rank):
  //   q, out [batch, 2c, heads, d]      FP16/BF16, any strides (head dim contiguous)
  //   k, v   [batch, 2c, heads_k, d]    rows dense: row stride heads_k * d, head stride d
  //   lse    optional device fp32 [batch, heads, 2c] (dense), natural log
  // Every rank must call forward with the same shapes and options (the calls are
  // collective; drive each rank from its own process or thread, and do not wrap forward in
  // an outer ncclGroupStart/End: it issues one NCCL group per ring step). Work is queued on `stream` (a cudaStream_t); the call returns without
  // waiting. Returns the strategy used.
  Strategy forward(const TensorView& q, const TensorView& k, const TensorView& v,
                   const TensorView& out, float* lse, const CpOptions& options,
                   void* stream = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cp
}  // namespace flare

#endif  // FLARE_FLARE_CP_HPP
