// Hopper all-threads forward kernel (sm90a): every warpgroup both loads and computes (no
// producer warpgroup); the planner runs it where the warp-specialised kernel has no instance
// (paged d256/d192). Two warpgroups of 64 query rows each share K/V tiles in 128-byte-swizzled
// shared memory.
// S = Q K^T takes both operands from shared memory; O += P V takes P from registers (the S
// accumulators, rounded to 16 bits) and V, MN-major, from shared memory.
//
// K and V have two stages each, loaded with cp.async by all threads: while a block's softmax and
// P V run, the next block's K and V are in flight. Features (masks, ALiBi, softcap, varlen,
// paged KV, split-KV) are runtime values, as in the sm80 kernel.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/block_range.h"
#include "common/paged_rows.h"
#include "common/query_tile.h"
#include "common/score_mods.h"
#include "common/sequence.h"
#include "common/split.h"
#include "kernels/element_type.cuh"
#include "kernels/fwd_launch.h"
#include "kernels/sm80/mma_sm80.cuh"
#include "kernels/sm90/epilogue_sm90.cuh"
#include "kernels/sm90/fp8_layout.h"
#include "kernels/sm90/softmax_sm90.cuh"
#include "kernels/sm90/tile_scheduler.cuh"
#include "kernels/sm90/wgmma_common.cuh"
#include "kernels/sm90/wgmma_ops.cuh"

namespace flare {

namespace sm90 {

template <int HeadDim>
struct Sm90Traits {
  static constexpr int kWarpgroups = 2;
  static constexpr int kThreads = kWarpgroups * 128;
  static constexpr int kBlockM = 64 * kWarpgroups;
  static constexpr int kBlockN = HeadDim <= 128 ? 128 : 64;
  static constexpr int kStages = 2;
  static constexpr int kChunks = HeadDim / 8;  // 16-byte chunks per row
  static constexpr int kSmemQ = kBlockM * HeadDim * 2;
  static constexpr int kSmemKV = kBlockN * HeadDim * 2;  // one K or V stage
  static constexpr int kSmemBytes = kSmemQ + 2 * kStages * kSmemKV + 1024;  // + alignment slack
  static_assert(HeadDim % 64 == 0, "the swizzled layout holds whole 64-element atoms");
};

// cp.async of `Rows` rows of HeadDim elements (16-bit, or 8-bit FP8 codes) into a swizzled
// K-major tile (k_major_tile_offset: the 128-byte swizzle; 64-byte rows, FP8 d64, the 64-byte
// one); row_offset(r) < 0 marks a missing row (zero-filled), and chunks past head_dim (padded
// head dims) are zero-filled too.
template <int HeadDim, int Rows, int Threads, typename T, typename RowOffset>
__device__ __forceinline__ void load_swizzled(uint32_t smem, const T* base, int head_dim,
                                              RowOffset row_offset) {
  constexpr int kElems = 16 / int(sizeof(T));  // elements per 16-byte chunk
  constexpr int kChunks = HeadDim / kElems;
  auto copy = [&](int row, int chunk) {
    const int64_t off = row_offset(row);
    const bool valid = off >= 0 && chunk * kElems < head_dim;
    const T* src = valid ? base + off + chunk * kElems : base;
    sm80::cp_async_16(smem + k_major_tile_offset(row, chunk, Rows, HeadDim * int(sizeof(T))), src,
                      valid ? 16 : 0);
  };
  if constexpr (Threads % kChunks == 0) {
    // Each thread keeps one chunk column over rows kRowsPerPass apart.
    constexpr int kRowsPerPass = Threads / kChunks;
    static_assert(Rows % kRowsPerPass == 0, "load split");
    const int chunk = threadIdx.x % kChunks;
    const int row0 = threadIdx.x / kChunks;
#pragma unroll
    for (int i = 0; i < Rows / kRowsPerPass; ++i) copy(row0 + i * kRowsPerPass, chunk);
  } else {
    // Rows of a chunk count that does not divide the threads (d192: 24): (row, chunk) pairs
    // taken in turn, not unrolled (the d192 producer's 24 registers hold no precomputed copies).
    static_assert((Rows * kChunks) % Threads == 0, "load split");
#pragma unroll 1
    for (int i = 0; i < Rows * kChunks / Threads; ++i) {
      const int item = int(threadIdx.x) + i * Threads;
      copy(item / kChunks, item % kChunks);
    }
  }
}

// The rows of one tile load from a tensor: tile row r starts at element first + r * stride, and
// rows from `valid` on lie past the sequence (zero-filled; valid may be <= 0).
struct TileRows {
  int64_t first;
  int64_t stride;
  int valid;
};

// load_swizzled of rows given as TileRows, each thread walking its rows with one pointer step
// per row: about a third of the instructions of a row offset computed and tested per row, for
// one more 64-bit register. The FP8 kernels' loaders take it (their producer has 96
// registers); the 16-bit producers (24 or 56) keep the row offsets, with which they spill less.
template <int HeadDim, int Rows, int Threads, typename T>
__device__ __forceinline__ void load_swizzled(uint32_t smem, const T* base, int head_dim,
                                              const TileRows& rows) {
  constexpr int kElems = 16 / int(sizeof(T));  // elements per 16-byte chunk
  constexpr int kChunks = HeadDim / kElems;
  constexpr int kRowsPerPass = Threads / kChunks;
  static_assert(Threads % kChunks == 0 && Rows % kRowsPerPass == 0, "one chunk column per thread");
  const int chunk = threadIdx.x % kChunks;
  const int row0 = threadIdx.x / kChunks;
  const bool chunk_ok = chunk * kElems < head_dim;
  const T* src = base + rows.first + row0 * rows.stride + chunk * kElems;
  const int64_t step = kRowsPerPass * rows.stride;
#pragma unroll
  for (int i = 0; i < Rows / kRowsPerPass; ++i, src += step) {
    const int row = row0 + i * kRowsPerPass;
    const bool valid = chunk_ok && row < rows.valid;
    sm80::cp_async_16(smem + k_major_tile_offset(row, chunk, Rows, HeadDim * int(sizeof(T))),
                      valid ? src : base, valid ? 16 : 0);
  }
}

// Columns of V's rows that the loaders copy (the rest zero-filled): head_dim_v on the kernel
// that runs (192, 128) (sm90_kernel_has_narrower_v; the planner resolves head_dim_v, never 0),
// else head_dim, K's own limit.
template <int HeadDim>
__device__ __forceinline__ int sm90_v_columns(const flare_mha_fwd_params& p) {
  if constexpr (sm90_kernel_has_narrower_v(HeadDim)) return p.head_dim_v;
  else return p.head_dim;
}

// Paged K/V rows of one load_swizzled fill: where a thread's rows are (kv_offset's address)
// without a table read and a division per row. Each lane looks up one row its warp copies
// (common/paged_rows.h: one table read, one 32-bit division, the row's K and V offsets) and the
// lanes copying that row take its offsets by shuffle, so a page of any size >= 1 costs the
// same. The lookup can be issued early (before a stage wait) so that its latency hides behind
// the wait.
template <int HeadDim, int Rows, int Threads>
struct PagedFillRows {
  static constexpr int kChunks = HeadDim / 8;
  using Lanes = PagedLaneRows<kChunks, Threads, Rows>;
  static constexpr int kRowsPerPass = Lanes::kRowsPerPass;
  static constexpr int kPasses = Lanes::kPasses;
  static_assert(Lanes::kApplies, "one looked-up row per lane");

  // Element offsets of this lane's looked-up row in k and v (its page, its row in the page,
  // the K/V head): 0 for no row (never used then).
  int64_t k_off = 0, v_off = 0;

  // Looks up this lane's row of the fill of key rows [n0, n0 + Rows) of head_k, in K (WithK)
  // and / or V (WithV).
  template <bool WithK, bool WithV>
  __device__ __forceinline__ void lookup(const flare_mha_fwd_params& p, const SequenceInfo& seq,
                                         int n0, int head_k) {
    const int row = Lanes::lookup_row(threadIdx.x / 32, threadIdx.x % 32);
    if (row >= 0 && n0 + row < seq.seqlen_k) {
      const uint32_t page_size = uint32_t(p.page_block_size);
      const uint32_t r = uint32_t(seq.k_row0) + uint32_t(n0 + row);
      const uint32_t slot = r / page_size;
      const int page = p.block_table[int64_t(seq.batch) * p.block_table_batch_stride + slot];
      const uint32_t in_page = r - slot * page_size;
      if constexpr (WithK)
        k_off = int64_t(page) * p.k_batch_stride + int64_t(in_page) * p.k_row_stride +
                int64_t(head_k) * p.k_head_stride;
      if constexpr (WithV)
        v_off = int64_t(page) * p.v_batch_stride + int64_t(in_page) * p.v_row_stride +
                int64_t(head_k) * p.v_head_stride;
    }
  }

  // Key rows [n0, n0 + Rows) of K (WithK) into the swizzled tile at smem_k and of V (WithV)
  // into the one at smem_v, rows past the sequence zero-filled: load_swizzled's layout; the
  // lookup above with the same WithK / WithV. A pass's rows are kRowsPerPass (a multiple of 8)
  // below the previous ones, so the swizzle of a thread's chunk is the same in every pass and
  // its shared-memory offsets are immediates.
  template <bool WithK, bool WithV, typename T>
  __device__ __forceinline__ void load(const flare_mha_fwd_params& p, uint32_t smem_k,
                                       uint32_t smem_v, const T* k, const T* v, int n0,
                                       int seqlen_k) const {
    static_assert(kRowsPerPass % 8 == 0, "the same swizzle in every pass");
    const int chunk = threadIdx.x % kChunks;
    const int row0 = Lanes::copied_row(threadIdx.x, 0);
    const uint32_t dst0 = swizzled_offset(row0, chunk, Rows);
    const bool col_ok = chunk * 8 < p.head_dim;
    const bool v_col_ok = chunk * 8 < sm90_v_columns<HeadDim>(p);
    const T* k0 = k + chunk * 8;
    const T* v0 = v + chunk * 8;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int holder = Lanes::holder(threadIdx.x, i);
      const bool row_ok = n0 + row0 + i * kRowsPerPass < seqlen_k;
      const bool valid = col_ok && row_ok;
      const uint32_t dst = dst0 + uint32_t(i * kRowsPerPass * 128);
      if constexpr (WithK) {
        const T* from = k0 + __shfl_sync(0xffffffffu, k_off, holder);
        sm80::cp_async_16(smem_k + dst, valid ? from : k, valid ? 16 : 0);
      }
      if constexpr (WithV) {
        const T* from = v0 + __shfl_sync(0xffffffffu, v_off, holder);
        const bool valid_v = v_col_ok && row_ok;
        sm80::cp_async_16(smem_v + dst, valid_v ? from : v, valid_v ? 16 : 0);
      }
    }
  }
};

// Key rows [n0, n0 + Rows) of K (IsV false) or V into a swizzled tile by cp.async, the rows
// past the sequence and the columns past head_dim (K) or v_head_dim (V) zero-filled. Unpaged
// rows are affine in the key: `base` is key 0's element offset (k_offset / v_offset); paged rows
// go through the block table (PagedFillRows).
template <int HeadDim, int Rows, int Threads, bool Paged, bool IsV, typename T>
__device__ __forceinline__ void load_kv_rows(uint32_t smem, const T* src,
                                             const flare_mha_fwd_params& p,
                                             const SequenceInfo& seq, int n0, int head_k,
                                             int64_t base) {
  if constexpr (Paged) {
    PagedFillRows<HeadDim, Rows, Threads> rows;
    rows.template lookup<!IsV, IsV>(p, seq, n0, head_k);
    rows.template load<!IsV, IsV>(p, smem, smem, src, src, n0, seq.seqlen_k);
    return;
  }
  load_swizzled<HeadDim, Rows, Threads>(smem, src, IsV ? sm90_v_columns<HeadDim>(p) : p.head_dim,
                                        [&](int r) -> int64_t {
    if (n0 + r >= seq.seqlen_k) return -1;
    return base + (n0 + r) * (IsV ? p.v_row_stride : p.k_row_stride);
  });
}

// One tile per CTA of a 3-D grid (SingleTileScheduler::grid_tile). Paged is a template flag:
// the per-row block-table lookup would otherwise sit, branched, in every row address of every
// tile load.
template <typename T, int HeadDim, bool Paged>
__global__ void __launch_bounds__(Sm90Traits<HeadDim>::kThreads, 1)
    fwd_kernel_sm90(const __grid_constant__ FwdLaunch launch) {
  using Tr = Sm90Traits<HeadDim>;
  constexpr int kBlockM = Tr::kBlockM, kBlockN = Tr::kBlockN, kThreads = Tr::kThreads;
  constexpr int kSTiles = kBlockN / 8;   // n8 column tiles of S per thread
  const flare_mha_fwd_params& p = launch.p;

  const Sm90Tile at = SingleTileScheduler::grid_tile(launch.num_splits);
  const int m_block = at.m_block, head = at.head, batch = at.batch, split = at.split;
  QueryTile qt;
  if (!query_tile(p, batch, head, m_block, kBlockM, kBlockN, launch.num_splits, split, qt)) return;
  const SequenceInfo seq = qt.seq;
  const int m0 = qt.m0, head_k = qt.head_k;

  extern __shared__ unsigned char smem_raw[];
  const uint32_t smem_base = (sm80::smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t sQ = smem_base;
  const uint32_t sK0 = sQ + Tr::kSmemQ;
  const uint32_t sV0 = sK0 + Tr::kStages * Tr::kSmemKV;

  const int tid = threadIdx.x;
  // Consumer warpgroup: query rows [64 wg, 64 wg + 64). Broadcast from lane 0 so the compiler
  // knows it is warp-uniform: descriptors built from it then stay in uniform registers, and
  // the wgmmas of a stage are not serialised around their computation.
  const int wg = __shfl_sync(0xffffffffu, tid / 128, 0);
  const int warp_in_wg = (tid % 128) / 32;   // each warp owns 16 of those rows
  const int lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int row_base = m0 + wg * 64 + warp_in_wg * 16 + g;  // + 8 for the second row

  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);

  float acc_o[HeadDim / 2];
#pragma unroll
  for (int i = 0; i < HeadDim / 2; ++i) acc_o[i] = 0.f;
  Sm90Softmax softmax;
  softmax.init();

  const ScoreUnits units = score_units(p, batch, head);
  const bool has_softcap = units.has_softcap;
  const float unit_log2 = units.unit_log2, cap_in = units.cap_in, alibi = units.alibi;
  const int diagonal = qt.mask.diagonal();

  // Turns the raw scores of one key block into probabilities, in place, and the factor that
  // rescales what was accumulated before it.
  // pv_in_flight (a constant at each call): whether a P V wgmma runs meanwhile (see
  // modify_wgmma_block_scores).
  auto softmax_block = [&](float (&acc_s)[kBlockN / 2], int n_block, float (&correction)[2],
                           bool pv_in_flight) {
    const bool needs_mask = block_needs_mask(qt.mask, m0, m0 + kBlockM, n_block, kBlockN);
    modify_wgmma_block_scores<kSTiles>(
        acc_s, qt.mask, diagonal, row_base, n_block * kBlockN + 2 * t, pv_in_flight,
        has_softcap, p.softcap, cap_in, alibi, needs_mask, [&](int row, int& first, int& end) {
          if (qt.prefix) row_keys(p, batch, qt.mask, row, first, end);
        });
    softmax_block_update<kBlockN>(acc_s, softmax, unit_log2, correction);
  };

  if (qt.range.end > qt.range.begin) {
    load_swizzled<HeadDim, kBlockM, kThreads>(sQ, q, p.head_dim, [&](int r) -> int64_t {
      return m0 + r < seq.seqlen_q ? q_offset(p, seq, m0 + r, head) : -1;
    });
    const int64_t k_base = Paged ? 0 : k_offset(p, seq, 0, head_k);
    const int64_t v_base = Paged ? 0 : v_offset(p, seq, 0, head_k);
    auto load_k = [&](int n_block, int stage) {
      load_kv_rows<HeadDim, kBlockN, kThreads, Paged, false>(
          sK0 + stage * Tr::kSmemKV, k, p, seq, n_block * kBlockN, head_k, k_base);
    };
    auto load_v = [&](int n_block, int stage) {
      load_kv_rows<HeadDim, kBlockN, kThreads, Paged, true>(
          sV0 + stage * Tr::kSmemKV, v, p, seq, n_block * kBlockN, head_k, v_base);
    };
    // Blocks are visited from last to first: block i of the walk is range.end - 1 - i. K of
    // block i and V of block i go to stage i % 2. Software pipeline (after FlashAttention-3's
    // intra-warpgroup overlap): iteration i issues S_i = Q K_i^T and O += P_{i-1} V_{i-1}
    // back to back, then runs the softmax of S_i while P V is still on the tensor cores;
    // meanwhile K_{i+1} and V_i stream in.
    const int num_blocks = qt.range.end - qt.range.begin;
    auto block_of = [&](int i) { return qt.range.end - 1 - i; };
    load_k(block_of(0), 0);
    sm80::cp_async_commit();  // group: Q, K_0
    if (num_blocks > 1) load_k(block_of(1), 1);
    load_v(block_of(0), 0);
    sm80::cp_async_commit();  // group: K_1, V_0
    sm80::cp_async_wait<1>();
    fence_proxy_async();
    __syncthreads();

    uint32_t p_cur[kBlockN / 16][4];
    {
      float acc_s[kBlockN / 2];
      float correction[2];
      wgmma_fence();
      issue_qk<T, HeadDim, kBlockM, kBlockN>(acc_s, sQ, sK0, wg);
      wgmma_wait<0>();
      fence_registers(acc_s);
      softmax_block(acc_s, block_of(0), correction, false);
      pack_probabilities<T, kBlockN>(acc_s, p_cur);
    }
    for (int i = 1; i < num_blocks; ++i) {
      sm80::cp_async_wait<0>();  // K_i and V_{i-1} have landed
      fence_proxy_async();
      __syncthreads();  // ... for every thread, and every GEMM of iteration i-1 has completed
      if (i + 1 < num_blocks) load_k(block_of(i + 1), (i + 1) & 1);
      load_v(block_of(i), i & 1);
      sm80::cp_async_commit();

      float acc_s[kBlockN / 2];
      fence_registers(p_cur);
      fence_registers(acc_o);
      wgmma_fence();
      issue_qk<T, HeadDim, kBlockM, kBlockN>(acc_s, sQ, sK0 + (i & 1) * Tr::kSmemKV, wg);
      issue_pv<T, HeadDim, kBlockN>(acc_o, p_cur, sV0 + ((i - 1) & 1) * Tr::kSmemKV);
      wgmma_wait<1>();  // S_i is ready; P V may still run
      fence_registers(acc_s);
      float correction[2];
      // The probabilities stay in acc_s until P V(i-1) is done with p_cur.
      softmax_block(acc_s, block_of(i), correction, true);
      softmax_before_wait(softmax);
      wgmma_wait<0>();
      // P V read p_cur asynchronously: keep its registers alive (and unshared with the softmax
      // temporaries) until the wait, or ptxas has to serialise every wgmma.
      fence_registers(p_cur);
      fence_registers(acc_o);
      rescale_o<HeadDim>(acc_o, correction);
      pack_probabilities<T, kBlockN>(acc_s, p_cur);
    }
    // The last block's P V.
    sm80::cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();
    fence_registers(p_cur);
    fence_registers(acc_o);
    wgmma_fence();
    issue_pv<T, HeadDim, kBlockN>(acc_o, p_cur, sV0 + ((num_blocks - 1) & 1) * Tr::kSmemKV);
    wgmma_wait<0>();
    fence_registers(acc_o);
  }

  store_output_rows<T, HeadDim>(launch, seq, acc_o, softmax, unit_log2, row_base, t,
                                 batch, head, split);
}

}  // namespace sm90
}  // namespace flare
