// The compute side of context parallelism, shared by the NCCL implementation
// (src/cp/context_parallel.cpp) and the single-GPU simulation test (tests/gpu/test_cp_sim.cpp):
// running the calls of a schedule step with flare_mha_fwd, folding each step's partial result
// into the running output with flare_merge_attention_states (in place), and the K/V copies
// (packing a shard, putting gathered shards in sequence order). No NCCL here.
//
// Errors throw flare::Error (the library's status and message, or FLARE_ERROR_CUDA).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "flare/cp_schedule.hpp"
#include "flare/flare.hpp"

namespace flare {
namespace cp {
namespace detail {

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw Error(FLARE_ERROR_CUDA, std::string(what) + " failed: " + cudaGetErrorName(e) + " (" +
                                      cudaGetErrorString(e) + ")");
}

inline size_t element_bytes(int dtype) { return dtype == FLARE_DTYPE_FP32 ? 4 : 2; }

// One rank's local problem: its 2c query rows and the running result.
struct LocalAttention {
  int dtype = FLARE_DTYPE_BF16;
  int batch = 0, chunk_rows = 0, heads = 0, heads_k = 0, head_dim = 0;
  float softmax_scale = 0.f, softcap = 0.f;
  const void* q = nullptr;  // [batch, 2c, heads, d]
  int64_t q_bs = 0, q_rs = 0, q_hs = 0;
  void* out = nullptr;  // [batch, 2c, heads, d]: the running (then final) output
  int64_t o_bs = 0, o_rs = 0, o_hs = 0;
  float* lse = nullptr;  // [batch, heads, 2c] dense: the running (then final) lse

  int rows() const { return 2 * chunk_rows; }
  size_t esize() const { return element_bytes(dtype); }
  // Elements the output spans (for a scratch copy with the same strides).
  int64_t out_span() const {
    return (batch - 1) * o_bs + (rows() - 1) * o_rs + (heads - 1) * o_hs + head_dim;
  }
  size_t lse_count() const { return size_t(batch) * heads * rows(); }
};

// K/V rows [batch, rows, heads_k, d] with dense rows (row stride heads_k * d, head stride d).
struct KvView {
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t batch_stride = 0;  // elements
  int rows = 0;
};

// Scratch of the ring: one step's partial output (the strides of la.out) and lse.
struct RingScratch {
  void* step_out = nullptr;   // la.out_span() elements
  float* lse_call = nullptr;  // la.lse_count() floats: a call's dense [batch, heads, q_rows]
  float* lse_step = nullptr;  // la.lse_count() floats: [batch, heads, 2c]
};

// Runs one call: query rows of the call against its key rows of kv; writes output rows into
// out_base (la.out's strides, row 0 = local row 0) and the dense lse [batch, heads, q_rows].
inline void run_call(const LocalAttention& la, const CpCall& call, const KvView& kv,
                     void* out_base, float* lse_dense, cudaStream_t stream) {
  const size_t e = la.esize();
  const int64_t kv_row = int64_t(la.heads_k) * la.head_dim;
  flare_mha_fwd_params p;
  flare_mha_fwd_params_init(&p);
  p.dtype = la.dtype;
  p.q = static_cast<const char*>(la.q) + call.q_begin * la.q_rs * e;
  p.k = static_cast<const char*>(kv.k) + call.kv_begin * kv_row * e;
  p.v = static_cast<const char*>(kv.v) + call.kv_begin * kv_row * e;
  p.out = static_cast<char*>(out_base) + call.q_begin * la.o_rs * e;
  p.lse = lse_dense;
  p.batch = la.batch;
  p.seqlen_q = call.q_rows;
  p.seqlen_k = call.kv_rows;
  p.num_heads = la.heads;
  p.num_heads_k = la.heads_k;
  p.head_dim = la.head_dim;
  p.q_batch_stride = la.q_bs;
  p.q_row_stride = la.q_rs;
  p.q_head_stride = la.q_hs;
  p.k_batch_stride = p.v_batch_stride = kv.batch_stride;
  p.k_row_stride = p.v_row_stride = kv_row;
  p.k_head_stride = p.v_head_stride = la.head_dim;
  p.out_batch_stride = la.o_bs;
  p.out_row_stride = la.o_rs;
  p.out_head_stride = la.o_hs;
  p.softmax_scale = la.softmax_scale;
  p.softcap = la.softcap;
  p.causal = call.causal ? 1 : 0;
  check(flare_mha_fwd(&p, stream));  // no workspace: flare does not split the keys
}

// Copies a call's dense lse [batch, heads, q_rows] into rows [q_begin, q_begin + q_rows) of a
// dense [batch, heads, 2c] lse.
inline void place_lse(const LocalAttention& la, const CpCall& call, const float* lse_dense,
                      float* lse_rows, cudaStream_t stream) {
  cuda_ok(cudaMemcpy2DAsync(lse_rows + call.q_begin, sizeof(float) * la.rows(), lse_dense,
                            sizeof(float) * call.q_rows, sizeof(float) * call.q_rows,
                            size_t(la.batch) * la.heads, cudaMemcpyDeviceToDevice, stream),
          "cudaMemcpy2DAsync(lse)");
}

// Runs a call whose output goes straight to la.out / la.lse.
inline void run_call_into_output(const LocalAttention& la, const CpCall& call, const KvView& kv,
                                 float* lse_call, cudaStream_t stream) {
  if (call.q_begin == 0 && call.q_rows == la.rows()) {
    run_call(la, call, kv, la.out, la.lse, stream);  // the dense layouts coincide
  } else {
    run_call(la, call, kv, la.out, lse_call, stream);
    place_lse(la, call, lse_call, la.lse, stream);
  }
}

// Folds rows [q_begin, q_begin + q_rows) of a step's partial (step_out, lse_step) into the
// running output and lse, in place.
inline void merge_rows(const LocalAttention& la, const CpCall& call, const RingScratch& sc,
                       cudaStream_t stream) {
  const size_t e = la.esize();
  const int64_t off = call.q_begin * la.o_rs;
  const void* parts[2] = {static_cast<char*>(la.out) + off * e,
                          static_cast<char*>(sc.step_out) + off * e};
  const float* lses[2] = {la.lse + call.q_begin, sc.lse_step + call.q_begin};
  flare_merge_params m;
  flare_merge_params_init(&m);
  m.num_parts = 2;
  m.part_dtype = m.out_dtype = la.dtype;
  m.part_ptrs = parts;
  m.lse_ptrs = lses;
  m.batch = la.batch;
  m.seqlen = call.q_rows;
  m.num_heads = la.heads;
  m.head_dim = la.head_dim;
  m.part_batch_stride = m.out_batch_stride = la.o_bs;
  m.part_row_stride = m.out_row_stride = la.o_rs;
  m.part_head_stride = m.out_head_stride = la.o_hs;
  m.lse_batch_stride = m.out_lse_batch_stride = int64_t(la.heads) * la.rows();
  m.lse_head_stride = m.out_lse_head_stride = la.rows();
  m.lse_row_stride = m.out_lse_row_stride = 1;
  m.out = static_cast<char*>(la.out) + off * e;  // in place: part 0
  m.out_lse = la.lse + call.q_begin;
  check(flare_merge_attention_states(&m, stream));
}

// One ring step: step 0 writes the output directly (the schedule covers every local row at
// step 0); later steps compute into the scratch and merge into the running result.
inline void ring_step(const LocalAttention& la, int step, const std::vector<CpCall>& calls,
                      const KvView& kv, const RingScratch& sc, cudaStream_t stream) {
  for (const CpCall& call : calls) {
    if (step == 0) {
      run_call_into_output(la, call, kv, sc.lse_call, stream);
      continue;
    }
    if (call.q_begin == 0 && call.q_rows == la.rows()) {
      run_call(la, call, kv, sc.step_out, sc.lse_step, stream);
    } else {
      run_call(la, call, kv, sc.step_out, sc.lse_call, stream);
      place_lse(la, call, sc.lse_call, sc.lse_step, stream);
    }
    merge_rows(la, call, sc, stream);
  }
}

// All-gather compute: the calls against the whole sequence's K/V (in sequence order); every
// call writes its own query rows, so no merge is needed.
inline void allgather_compute(const LocalAttention& la, const std::vector<CpCall>& calls,
                              const KvView& kv_full, float* lse_call, cudaStream_t stream) {
  for (const CpCall& call : calls) run_call_into_output(la, call, kv_full, lse_call, stream);
}

// Copies `rows` dense rows per batch entry of a [batch, rows, heads_k, d] tensor (batch
// stride src_batch_stride elements) into a contiguous buffer.
inline void pack_shard(void* dst, const void* src, int64_t src_batch_stride, int batch,
                       size_t row_bytes_total, size_t esize, cudaStream_t stream) {
  const size_t spitch = batch > 1 ? size_t(src_batch_stride) * esize : row_bytes_total;
  cuda_ok(cudaMemcpy2DAsync(dst, row_bytes_total, src, spitch, row_bytes_total, size_t(batch),
                            cudaMemcpyDeviceToDevice, stream),
          "cudaMemcpy2DAsync(pack K/V shard)");
}

// Gathered shards -> sequence order. `gathered` holds world blocks, block g = [K_g | V_g],
// each a contiguous [batch, 2c, heads_k, d] shard of rank g; k_full / v_full are contiguous
// [batch, 2 * world * c, heads_k, d].
inline void unshard_gathered(const void* gathered, void* k_full, void* v_full, int world,
                             int batch, int chunk_rows, int64_t row_elems, size_t esize,
                             cudaStream_t stream) {
  const size_t chunk_bytes = size_t(chunk_rows) * row_elems * esize;
  const size_t shard_bytes = size_t(batch) * 2 * chunk_bytes;
  const size_t seq_pitch = size_t(2) * world * chunk_bytes;
  for (int g = 0; g < world; ++g)
    for (int h = 0; h < 2; ++h) {
      const int chunk = zigzag_chunk(g, world, h);
      for (int t = 0; t < 2; ++t) {
        const char* src = static_cast<const char*>(gathered) + (2 * g + t) * shard_bytes +
                          h * chunk_bytes;
        char* dst = static_cast<char*>(t == 0 ? k_full : v_full) + chunk * chunk_bytes;
        cuda_ok(cudaMemcpy2DAsync(dst, seq_pitch, src, 2 * chunk_bytes, chunk_bytes,
                                  size_t(batch), cudaMemcpyDeviceToDevice, stream),
                "cudaMemcpy2DAsync(unshard K/V)");
      }
    }
}

}  // namespace detail
}  // namespace cp
}  // namespace flare
