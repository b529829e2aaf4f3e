// The mma.sync decode kernel (sm80 and newer): for launches whose (batch, head) pairs have at
// most 16 query rows (seqlen_q <= 16, or the packed query heads of one KV head), where the
// prefill kernel's 128-row tile would be mostly empty and its single K/V buffer keeps only one
// load in flight per CTA.
//
// One CTA: 16 query rows (one m16 tile) of one (batch, head, split), 4 warps. Every 64-key
// block of the CTA's range is divided among the warps, 16 keys each; each warp keeps its own
// online-softmax state (row max, row sum, O accumulators) over its keys of all blocks, and the
// four states are merged through shared memory at the end. A warp loads exactly the K/V rows it
// consumes, so the main loop needs no CTA barrier: a per-thread cp.async group wait and a
// __syncwarp order a stage. K and V of a block share one stage; kStages stages are in flight.
//
// Paged KV, pages of >= 16 rows: a warp's 16 rows lie in at most two pages, so each thread
// looks up the block table at most twice per block, in 32-bit math, and selects the page per
// row with one compare. Smaller pages (any size >= 1): lane r < 16 looks up row r of the
// warp's group once per block and the lanes that copy a chunk of row r take its page and
// in-page row by shuffle.
//
// V and O have v_head_dim(p) columns (at most p.head_dim): V's columns past it are zero-filled
// in shared memory, O's are never stored.
//
// FP8 K/V (the Fp8 instances, kv_dtype e4m3 / e5m2): the stages hold the 1-byte codes (more
// stages, as many bytes in flight), which the mma steps read straight into fp16 fragments
// (decode_fp8.cuh: both GEMMs in fp16, Q's fragments prepared once per CTA). The descale
// factors of the (batch entry, KV head) and the decoder's power of two fold into the softmax
// scale (K) and the output normalisation (V), Q's power of two multiplies each block's scores;
// the planner runs every FP8 K/V launch on this kernel, whatever its query rows.
#pragma once
#include <type_traits>

#include "common/query_tile.h"
#include "common/score_mods.h"
#include "common/serving_semantics.h"
#include "common/smem_swizzle.h"
#include "common/split.h"
#include "common/fp8_params.h"
#include "kernels/common/fp8_convert.cuh"
#include "kernels/sm80/decode_fp8.cuh"
#include "kernels/common/narrow_copy.cuh"
#include "kernels/common/online_softmax.cuh"
#include "kernels/element_type.cuh"

namespace flare {
namespace sm80 {

template <int HeadDim, bool Fp8 = false>
struct DecodeTraits {
  static constexpr TileConfig kTile = sm80_decode_tile_config(HeadDim, Fp8);
  static constexpr int kBlockM = kTile.block_m;  // 16
  static constexpr int kBlockN = kTile.block_n;  // 64
  static constexpr int kWarps = kTile.warps;     // 4
  static constexpr int kStages = kTile.stages;
  static constexpr int kCtasPerSm = kTile.ctas_per_sm;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kWarpKeys = kBlockN / kWarps;  // 16 keys of each block per warp
  static constexpr int kDTiles = HeadDim / 8;
  static constexpr int kKSteps = HeadDim / 16;
  static constexpr int kChunksPerRow = HeadDim / 8;  // 16-bit chunks of a Q / O / K / V row
  static constexpr int kRowBytes = (HeadDim + 8) * 2;  // Q rows (padded)
  static constexpr bool kKVSwizzled = sm80_decode_kv_swizzled(HeadDim);
  static constexpr int kKVRowBytes = sm80_decode_kv_row_bytes(HeadDim);  // 16-bit K/V rows
  // K/V as loaded into the stages: 16-byte chunks of 8 elements, or of 16 FP8 codes in rows of
  // HeadDim bytes (Fp8StageLayout).
  static constexpr int kKvChunkElems = Fp8 ? 16 : 8;
  static constexpr int kKvChunksPerRow = HeadDim / kKvChunkElems;
  static constexpr int kStageRowBytes = Fp8 ? HeadDim : kKVRowBytes;
  static constexpr int kSmemQ = kBlockM * kRowBytes;
  static constexpr int kSmemTile = kBlockN * kStageRowBytes;  // one K or V block
  static constexpr int kSmemStage = 2 * kSmemTile;
  // FP8: Q's fp16 fragments (fp8_prepare_q), after the stages.
  static constexpr int kSmemQFrag = Fp8 ? kKSteps * 32 * 16 : 0;
  static constexpr int kSmemBytes = kSmemQ + kStages * kSmemStage + kSmemQFrag;
  // Warp partials of the final merge, fp32, rows padded by 8 floats against bank conflicts.
  static constexpr int kPartRowFloats = HeadDim + 8;
  static constexpr int kSmemPartO = kWarps * kBlockM * kPartRowFloats * 4;
  static constexpr int kSmemPartML = kWarps * kBlockM * 2 * 4;
  // Q fragments stay in registers where the O accumulators leave room for them.
  static constexpr bool kQInRegs = HeadDim <= 128;
  static_assert(kBlockM == 16 && kWarpKeys == kSm80DecodeWarpKeys, "decode tile shape");
  static_assert(kSmemBytes == sm80_decode_smem_bytes(HeadDim, Fp8), "planner and kernel disagree");
  static_assert(kSmemPartO + kSmemPartML <= kSmemBytes - kSmemQ, "merge area fits the stages");
  static_assert((kWarpKeys * kKvChunksPerRow) % 32 == 0, "whole chunks per lane");
  static_assert(!kKVSwizzled || kChunksPerRow % 8 == 0, "the swizzle permutes 8-chunk lines");
  // Whole lines need 128-byte-aligned stages: Q (and each stage) a multiple of 128 bytes from
  // the dynamic shared-memory base (itself at the start of the CTA's window).
  static_assert(!kKVSwizzled || (kSmemQ % 128 == 0 && kSmemStage % 128 == 0), "stage alignment");

  // Byte offset of 16-byte chunk `chunk` in K/V row `row` of a stage (rows of a warp's group
  // start at multiples of 8, so row & 7 is the same within the group and within the tile).
  __device__ __forceinline__ static uint32_t kv_offset(int row, int chunk) {
    return uint32_t(smem_chunk_offset(kKVSwizzled, kKVRowBytes, row, chunk));
  }
  // Byte offset of loaded chunk `chunk` of K/V row `row` of a stage.
  __device__ __forceinline__ static uint32_t stage_offset(int row, int chunk) {
    if constexpr (Fp8) return Fp8StageLayout<HeadDim>::chunk_offset(row, chunk);
    else return kv_offset(row, chunk);
  }
  // An ldmatrix lane reads chunk 2 s + half of its row at step s; the swizzle only permutes the
  // low three chunk bits, so offset(s) = lane[s % 4] + 128 (s / 4): four registers per operand
  // and an immediate, instead of one live offset per step (d256 spilled with those).
  __device__ __forceinline__ static void ldmatrix_lane_offsets(int row, int half,
                                                               uint32_t (&lane)[4]) {
#pragma unroll
    for (int j = 0; j < 4; ++j) lane[j] = kv_offset(row, 2 * j + half);
  }
};

// Where a warp's 16-row key group lies when pages hold fewer than 16 rows.
struct SmallPageGroup {
  const int* table;    // the sequence's block-table row
  uint32_t page_size;  // rows per page, < 16
  int k_row0;          // first cache row of the sequence (leftpad)
  int n0;              // first key of the group
  int valid_rows;      // rows r < valid_rows exist
  int head_dim, head_dim_v;
  int64_t k_batch_stride, k_row_stride, v_batch_stride, v_row_stride;
};

// The group's K and V rows into the stage at dst. Lane r < 16 looks up row r (one table read,
// one division) and computes its K and V element offsets; the lanes copying row r's chunks take
// them by shuffle. Only the SmallPages instances of decode_kernel contain it: as a runtime
// branch of the main loop's loader it took registers from every decode launch (the aligned
// d192 / d256 instances spilled), and as a call the caller's registers spilled around it.
template <typename Tr, bool Narrow, typename KV>
__device__ __forceinline__ void load_group_small_pages(const SmallPageGroup g, const KV* k,
                                                    const KV* v, const KV* k_head,
                                                    const KV* v_head, uint32_t dst, int lane) {
  constexpr int kChunks = Tr::kKvChunksPerRow;
  constexpr int kLaneChunks = Tr::kWarpKeys * kChunks / 32;
  int64_t k_row_off = 0, v_row_off = 0;
  if (lane < g.valid_rows && lane < Tr::kWarpKeys) {
    const uint32_t row = uint32_t(g.k_row0 + g.n0 + lane);
    const uint32_t slot = row / g.page_size;
    const int page = g.table[slot];
    const uint32_t in_page = row - slot * g.page_size;
    k_row_off = int64_t(page) * g.k_batch_stride + int64_t(in_page) * g.k_row_stride;
    v_row_off = int64_t(page) * g.v_batch_stride + int64_t(in_page) * g.v_row_stride;
  }
#pragma unroll
  for (int i = 0; i < kLaneChunks; ++i) {
    const int c = lane + 32 * i;
    const int r = c / kChunks;
    const int col = (c % kChunks) * Tr::kKvChunkElems;
    const bool valid = r < g.valid_rows && col < g.head_dim;
    const bool valid_v = r < g.valid_rows && col < g.head_dim_v;
    const KV* ks = k_head + (__shfl_sync(0xffffffffu, k_row_off, r) + col);
    const KV* vs = v_head + (__shfl_sync(0xffffffffu, v_row_off, r) + col);
    const uint32_t d = dst + Tr::stage_offset(r, c % kChunks);
    if constexpr (Narrow) {
      const int n = r < g.valid_rows ? chunk_elements(col, g.head_dim) : 0;
      const int nv = r < g.valid_rows ? chunk_elements(col, g.head_dim_v) : 0;
      st_shared_16(d, narrow_load_elements(n ? ks : k, n));
      st_shared_16(d + Tr::kSmemTile, narrow_load_elements(nv ? vs : v, nv));
    } else {
      cp_async_16(d, valid ? ks : k, valid ? 16 : 0);
      cp_async_16(d + Tr::kSmemTile, valid_v ? vs : v, valid_v ? 16 : 0);
    }
  }
}

// Narrow (launch.narrow, common/narrow.h): K/V/Q loaded and O stored element by element. A
// template flag rather than the runtime branch of the prefill kernel: the decode main loop
// keeps O and Q in registers (d192: 250 of 255), and an element loader in the same loop made
// the fast path spill.
// SmallPages (sm80_decode_small_pages): paged K/V with pages of fewer than 16 rows, whose key
// groups span more than two pages (load_group_small_pages).
// Fp8: K/V hold FP8 codes (kv_dtype), see the top of this file; never Narrow (validation).
// E5m2: the codes are e5m2 (else e4m3).
template <int Arch, typename T, int HeadDim, bool Narrow = false, bool SmallPages = false,
          bool Fp8 = false, bool E5m2 = false>
__global__ void __launch_bounds__(DecodeTraits<HeadDim, Fp8>::kThreads,
                                  DecodeTraits<HeadDim, Fp8>::kCtasPerSm)
    decode_kernel(const __grid_constant__ FwdLaunch launch) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // The split combine, launched as a programmatic dependent (combine.cu), may be scheduled
  // from now on; it still waits for this grid to complete before reading (griddepcontrol.wait).
  if constexpr (Arch >= 90) asm volatile("griddepcontrol.launch_dependents;");
#endif
  static_assert(!(Fp8 && Narrow), "FP8 K/V launches are never narrow");
  using Tr = DecodeTraits<HeadDim, Fp8>;
  using KV = std::conditional_t<Fp8, uint8_t, T>;  // K/V elements in global memory
  using MmaT = std::conditional_t<Fp8, __half, T>;  // the mma steps' 16-bit type
  constexpr int kBlockM = Tr::kBlockM, kBlockN = Tr::kBlockN, kStages = Tr::kStages;
  constexpr int kDTiles = Tr::kDTiles, kKSteps = Tr::kKSteps, kRowBytes = Tr::kRowBytes;
  constexpr int kChunks = Tr::kChunksPerRow;
  constexpr int kKvChunks = Tr::kKvChunksPerRow, kKvChunkElems = Tr::kKvChunkElems;
  const flare_mha_fwd_params& p = launch.p;

  const int m_block = blockIdx.x;
  const int head = blockIdx.y;
  const int batch = blockIdx.z / launch.num_splits;
  const int split = blockIdx.z % launch.num_splits;
  QueryTile qt;
  if (!query_tile(p, batch, head, m_block, kBlockM, kBlockN, launch.num_splits, split, qt)) return;
  const SequenceInfo seq = qt.seq;
  const int m0 = qt.m0, head_k = qt.head_k;
  const int num_blocks = qt.range.end > qt.range.begin ? qt.range.end - qt.range.begin : 0;

  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t sQ = smem_addr(smem);
  const uint32_t sKV = sQ + Tr::kSmemQ;

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;

  const T* q = static_cast<const T*>(p.q);
  const KV* k = static_cast<const KV*>(p.k);
  const KV* v = static_cast<const KV*>(p.v);
  const int head_dim_v = v_head_dim(p);  // columns of V and O
  // FP8: S and O are computed on the decoded codes (values times Dec::kValueScale) and Q's
  // fp16 fragments (Q times 1 / q_factor); their factors scale the scores and the output.
  using Dec = Fp8ToHalf<E5m2, (Arch >= 89)>;
  const float k_factor = Fp8 ? k_descale(p, batch, head_k) / Dec::kValueScale : 1.f;
  const float v_factor = Fp8 ? v_descale(p, batch, head_k) / Dec::kValueScale : 1.f;

  // Softmax in log2 units, as in the prefill kernel.
  const bool has_softcap = p.softcap > 0.f;
  const float scale = p.softmax_scale * k_factor;
  const float unit = has_softcap ? 1.f : scale;
  const float unit_log2 = unit * 1.4426950408889634f;
  const float cap_in = has_softcap ? scale / p.softcap : 0.f;
  const float alibi = alibi_slope(p, batch, head) / unit;
  const int diagonal = qt.mask.diagonal();

  float acc_o[kDTiles][4];
#pragma unroll
  for (int dt = 0; dt < kDTiles; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc_o[dt][e] = 0.f;
  // This warp's online softmax of the thread's rows g and g + 8 over the warp's keys.
  OnlineSoftmax<2> softmax;
  softmax.init();

  if (num_blocks > 0) {
    auto q_row = [&](int r) -> int64_t {
      return m0 + r < seq.seqlen_q ? q_offset(p, seq, m0 + r, head) : -1;
    };
    load_tile<HeadDim, kBlockM, Tr::kThreads>(sQ, q, p.head_dim, Narrow, q_row);
    cp_async_commit();

    // K/V addressing of this (sequence, KV head). Unpaged rows are affine in the row index;
    // paged rows go through the block table of the sequence.
    const bool paged = is_paged(p);
    const int* table = paged ? p.block_table + int64_t(batch) * p.block_table_batch_stride : nullptr;
    const uint32_t page_size = paged ? uint32_t(p.page_block_size) : 1u;
    const int64_t k_head_off = paged ? int64_t(head_k) * p.k_head_stride : k_offset(p, seq, 0, head_k);
    const int64_t v_head_off = paged ? int64_t(head_k) * p.v_head_stride : v_offset(p, seq, 0, head_k);
    const int k_row0 = int(seq.k_row0);
    const int seqlen_k = seq.seqlen_k;
    // This lane's chunks of a warp's 16-row group: chunk c = lane + 32 i -> row c / kKvChunks.
    constexpr int kLaneChunks = Tr::kWarpKeys * kKvChunks / 32;
    const uint32_t warp_stage_off = uint32_t(warp * Tr::kWarpKeys * Tr::kStageRowBytes);

    // The pages of this warp's 16-row group of key block n_block (pages of >= 16 rows: at
    // most two, the second only where the group crosses a page end) and the group's first row
    // in the first page. Read a block ahead of the copies that use them (the main loop's
    // `ahead`): the table read's latency then overlaps a block's compute instead of standing in
    // front of the block's copies.
    struct GroupPages {
      int page0 = 0, page1 = 0, in0 = 0;
    };
    auto group_pages = [&](int n_block) {
      GroupPages pg;
      if constexpr (!SmallPages) {
        const int n0 = n_block * kBlockN + warp * Tr::kWarpKeys;
        if (paged && n_block < qt.range.end && n0 < seqlen_k) {
          const uint32_t first = uint32_t(k_row0 + n0);
          const uint32_t slot = first / page_size;
          pg.page0 = table[slot];
          pg.in0 = int(first - slot * page_size);
          const int last = min(seqlen_k - n0, Tr::kWarpKeys) - 1;
          if (pg.in0 + last >= int(page_size)) pg.page1 = table[slot + 1];
        }
      }
      return pg;
    };

    // Loads this warp's 16 rows of K and V of key block n_block (pages `pg`) into stage
    // `stage`.
    auto load_block = [&](int n_block, const GroupPages& pg, int stage) {
      const int n0 = n_block * kBlockN + warp * Tr::kWarpKeys;  // first key of the group
      const int valid_rows = seqlen_k - n0;                      // rows r < valid_rows exist
      const uint32_t dst = sKV + stage * Tr::kSmemStage + warp_stage_off;
      if constexpr (SmallPages) {
        load_group_small_pages<Tr, Narrow>(
            SmallPageGroup{table, page_size, k_row0, n0, valid_rows, p.head_dim, head_dim_v,
                           p.k_batch_stride, p.k_row_stride, p.v_batch_stride, p.v_row_stride},
            k, v, k + k_head_off, v + v_head_off, dst, lane);
        return;
      }
      // Pointers to row n0 (p0) and, for rows r >= switch_row, to the next page (p1), both
      // biased so that row r lives at p + r * row_stride.
      const KV* kp0 = k;
      const KV* vp0 = v;
      const KV* kp1 = k;
      const KV* vp1 = v;
      int switch_row = Tr::kWarpKeys;
      if (valid_rows > 0) {
        if (paged) {
          const int in0 = pg.in0;
          kp0 = k + (int64_t(pg.page0) * p.k_batch_stride + k_head_off + int64_t(in0) * p.k_row_stride);
          vp0 = v + (int64_t(pg.page0) * p.v_batch_stride + v_head_off + int64_t(in0) * p.v_row_stride);
          kp1 = kp0;
          vp1 = vp0;
          const int last = valid_rows < Tr::kWarpKeys ? valid_rows - 1 : Tr::kWarpKeys - 1;
          if (in0 + last >= int(page_size)) {
            switch_row = int(page_size) - in0;
            kp1 = k + (int64_t(pg.page1) * p.k_batch_stride + k_head_off -
                       int64_t(switch_row) * p.k_row_stride);
            vp1 = v + (int64_t(pg.page1) * p.v_batch_stride + v_head_off -
                       int64_t(switch_row) * p.v_row_stride);
          }
        } else {
          kp0 = k + (k_head_off + int64_t(n0) * p.k_row_stride);
          vp0 = v + (v_head_off + int64_t(n0) * p.v_row_stride);
          kp1 = kp0;
          vp1 = vp0;
        }
      }
      if constexpr (Narrow) {
        // Element by element (narrow_copy.cuh): the same chunks as the paths below, a K and a
        // V chunk in flight together; not unrolled (unrolled, the d64 / d128 instances spill).
#pragma unroll 1
        for (int i = 0; i < kLaneChunks; ++i) {
          const int c = lane + 32 * i;
          const int r = c / kKvChunks;
          const int col = (c % kKvChunks) * 8;
          const int n = r < valid_rows ? chunk_elements(col, p.head_dim) : 0;
          const int nv = r < valid_rows ? chunk_elements(col, head_dim_v) : 0;
          const bool second = r >= switch_row;
          const uint32_t d = dst + Tr::kv_offset(r, col / 8);
          const uint4 kx = narrow_load_elements(
              n ? (second ? kp1 : kp0) + (int64_t(r) * p.k_row_stride + col) : k, n);
          const uint4 vx = narrow_load_elements(
              nv ? (second ? vp1 : vp0) + (int64_t(r) * p.v_row_stride + col) : v, nv);
          st_shared_16(d, kx);
          st_shared_16(d + Tr::kSmemTile, vx);
        }
      } else if constexpr (32 % kKvChunks == 0) {
        // A lane keeps one column and steps 32 / kKvChunks rows per chunk: walk the rows with
        // pointers (no per-row 64-bit offsets for the compiler to keep live across blocks).
        constexpr int kRowStep = 32 / kKvChunks;
        const int r0 = lane / kKvChunks;
        const int col = (lane % kKvChunks) * kKvChunkElems;
        const bool col_ok = col < p.head_dim;
        const bool v_col_ok = col < head_dim_v;
        const int64_t k_off = int64_t(r0) * p.k_row_stride + col;
        const int64_t v_off = int64_t(r0) * p.v_row_stride + col;
        kp0 += k_off, kp1 += k_off, vp0 += v_off, vp1 += v_off;
        const int64_t k_step = int64_t(kRowStep) * p.k_row_stride;
        const int64_t v_step = int64_t(kRowStep) * p.v_row_stride;
#pragma unroll
        for (int i = 0; i < kLaneChunks; ++i) {
          const int r = r0 + i * kRowStep;
          const bool valid = r < valid_rows && col_ok;
          const bool valid_v = r < valid_rows && v_col_ok;
          const bool second = r >= switch_row;
          const uint32_t d = dst + Tr::stage_offset(r, lane % kKvChunks);
          cp_async_16(d, valid ? (second ? kp1 : kp0) : k, valid ? 16 : 0);
          cp_async_16(d + Tr::kSmemTile, valid_v ? (second ? vp1 : vp0) : v, valid_v ? 16 : 0);
          kp0 += k_step, kp1 += k_step, vp0 += v_step, vp1 += v_step;
        }
      } else {
#pragma unroll
        for (int i = 0; i < kLaneChunks; ++i) {
          const int c = lane + 32 * i;
          const int r = c / kKvChunks;
          const int col = (c % kKvChunks) * kKvChunkElems;
          const bool valid = r < valid_rows && col < p.head_dim;
          const bool valid_v = r < valid_rows && col < head_dim_v;
          const bool second = r >= switch_row;
          const KV* ks = (second ? kp1 : kp0) + (int64_t(r) * p.k_row_stride + col);
          const KV* vs = (second ? vp1 : vp0) + (int64_t(r) * p.v_row_stride + col);
          const uint32_t d = dst + Tr::stage_offset(r, c % kKvChunks);
          cp_async_16(d, valid ? ks : k, valid ? 16 : 0);
          cp_async_16(d + Tr::kSmemTile, valid_v ? vs : v, valid_v ? 16 : 0);
        }
      }
    };

    // Prologue: kStages - 1 blocks in flight (empty groups keep the group count uniform).
    // `ahead`: the pages of the next block to load.
    GroupPages ahead = group_pages(qt.range.begin);
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      const GroupPages pg = ahead;
      ahead = group_pages(qt.range.begin + s + 1);
      if (s < num_blocks) load_block(qt.range.begin + s, pg, s);
      cp_async_commit();
    }
    // Q is the oldest group: complete once at most kStages - 1 groups are pending.
    cp_async_wait<kStages - 1>();
    __syncthreads();

    const uint32_t q_lane =
        sQ + ((lane & 7) + ((lane >> 3) & 1) * 8) * kRowBytes + (lane >> 4) * 16;
    // ldmatrix row addresses: K (x4 = two n8 key tiles x two k8 halves) reads row
    // (lane & 7) + 8 (lane >> 4), chunk 2 ks + ((lane >> 3) & 1); V (x4.trans) reads row
    // (lane & 7) + 8 ((lane >> 3) & 1), chunk 2 dp + (lane >> 4).
    const int k_row = (lane & 7) + (lane >> 4) * 8, k_half = (lane >> 3) & 1;
    const int v_row = (lane & 7) + ((lane >> 3) & 1) * 8, v_half = lane >> 4;
    const uint32_t k_lane = sKV + warp_stage_off;
    const uint32_t v_lane = sKV + Tr::kSmemTile + warp_stage_off;
    uint32_t k_off[4], v_off[4];
    Tr::ldmatrix_lane_offsets(k_row, k_half, k_off);
    Tr::ldmatrix_lane_offsets(v_row, v_half, v_off);
    // FP8: Q's fp16 fragments after the stages; each block's scores are multiplied by Q's
    // factor (a power of two, exact).
    const uint32_t sQf = sKV + kStages * Tr::kSmemStage;
    float q_factor = 1.f;
    if constexpr (Fp8) {
      q_factor = fp8_prepare_q<T, HeadDim, kRowBytes, Tr::kThreads>(sQ, sQf, tid);
      __syncthreads();
    }
    uint32_t q_frag[Tr::kQInRegs ? kKSteps : 1][4];
    if constexpr (Tr::kQInRegs) {
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        if constexpr (Fp8)
          ld_shared_run<16>(sQf + uint32_t(ks * 32 + lane) * 16, q_frag[ks]);
        else
          ldmatrix_x4(q_lane + ks * 32, q_frag[ks][0], q_frag[ks][1], q_frag[ks][2],
                      q_frag[ks][3]);
      }
    }

    int stage = 0;
    for (int i = 0; i < num_blocks; ++i) {
      const int n_block = qt.range.begin + i;
      cp_async_wait<kStages - 2>();
      __syncwarp();  // this warp's rows of block i are visible; its reads of block i-1 are done
      {
        const int next = i + kStages - 1;
        int next_stage = stage + kStages - 1;
        if (next_stage >= kStages) next_stage -= kStages;
        if (next < num_blocks) {
          const GroupPages pg = ahead;
          ahead = group_pages(qt.range.begin + next + 1);
          load_block(qt.range.begin + next, pg, next_stage);
        }
        cp_async_commit();
      }
      const uint32_t stage_off = uint32_t(stage * Tr::kSmemStage);

      // S = Q K^T over this warp's 16 keys.
      float acc_s[2][4];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_s[nt][e] = 0.f;
      if constexpr (Fp8) {
        fp8_qk<HeadDim, Tr::kQInRegs, Dec>(acc_s, k_lane + stage_off, sQf, q_frag, lane);
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc_s[nt][e] *= q_factor;
      } else {
#pragma unroll
        for (int ks = 0; ks < kKSteps; ++ks) {
          uint32_t a[4];
          if constexpr (Tr::kQInRegs) {
#pragma unroll
            for (int j = 0; j < 4; ++j) a[j] = q_frag[ks][j];
          } else {
            ldmatrix_x4(q_lane + ks * 32, a[0], a[1], a[2], a[3]);
          }
          uint32_t b0, b1, b2, b3;
          ldmatrix_x4(k_lane + stage_off + k_off[ks % 4] + (ks / 4) * 128, b0, b1, b2, b3);
          mma_16816<T>(acc_s[0], a, b0, b1);
          mma_16816<T>(acc_s[1], a, b2, b3);
        }
      }

      const bool needs_mask = block_needs_mask(qt.mask, m0, m0 + kBlockM, n_block, kBlockN);
      if (has_softcap || alibi != 0.f || needs_mask) {
        const int block_col0 = n_block * kBlockN + warp * Tr::kWarpKeys + 2 * t;
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          const int row = m0 + g + hr * 8;
          int first = qt.mask.first_key(row), end = qt.mask.end_key(row);
          if (qt.prefix && needs_mask) row_keys(p, batch, qt.mask, row, first, end);
          modify_row_scores<2>([&](int nt, int e) -> float& { return acc_s[nt][2 * hr + e]; },
                               has_softcap, p.softcap, cap_in, alibi,
                               row + diagonal - block_col0, needs_mask, first - block_col0,
                               end - block_col0);
        }
      }

      // Online softmax of this warp's keys.
      float correction[2];
      softmax.update<4>([&](int r, int c) -> float& { return acc_s[c / 2][2 * r + c % 2]; },
                        unit_log2, correction);
      uint32_t p_frag[4];
      p_frag[0] = pack2<MmaT>(acc_s[0][0], acc_s[0][1]);
      p_frag[1] = pack2<MmaT>(acc_s[0][2], acc_s[0][3]);
      p_frag[2] = pack2<MmaT>(acc_s[1][0], acc_s[1][1]);
      p_frag[3] = pack2<MmaT>(acc_s[1][2], acc_s[1][3]);
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) OnlineSoftmax<2>::rescale_tile(acc_o[dt], correction, 0);
      // O += P V over this warp's 16 keys (one k16 step).
      if constexpr (Fp8) {
        fp8_pv<HeadDim, Dec>(acc_o, p_frag, v_lane + stage_off, lane);
      } else {
#pragma unroll
        for (int dp = 0; dp < kDTiles / 2; ++dp) {
          uint32_t b0, b1, b2, b3;
          ldmatrix_x4_trans(v_lane + stage_off + v_off[dp % 4] + (dp / 4) * 128, b0, b1, b2, b3);
          mma_16816<T>(acc_o[2 * dp], p_frag, b0, b1);
          mma_16816<T>(acc_o[2 * dp + 1], p_frag, b2, b3);
        }
      }
      stage = stage + 1 == kStages ? 0 : stage + 1;
    }
    cp_async_wait<0>();
  }

  // Merge the four warp states (OnlineSoftmax::merge_weight). Each warp publishes its row max
  // (log2 units), row sum and unnormalised O rows; then each thread finishes 8 columns of one
  // row.
  __syncthreads();  // every warp is done with the stages the partials overwrite
  float* part_o = reinterpret_cast<float*>(smem + Tr::kSmemQ);
  float* part_ml = part_o + Tr::kSmemPartO / 4;
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const float sum = softmax.total_sum(hr);
    const int r = g + hr * 8;
    if (t == 0) {
      const float mx = softmax.row_max[hr];
      part_ml[(warp * kBlockM + r) * 2] = mx == -INFINITY ? -INFINITY : mx * unit_log2;
      part_ml[(warp * kBlockM + r) * 2 + 1] = sum;
    }
    float* o_row = part_o + (warp * kBlockM + r) * Tr::kPartRowFloats;
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      if constexpr (Fp8) {  // O's columns back in order (decode_fp8.cuh)
        o_row[fp8_o_column<HeadDim>(dt, t, 0)] = acc_o[dt][2 * hr];
        o_row[fp8_o_column<HeadDim>(dt, t, 1)] = acc_o[dt][2 * hr + 1];
      } else {
        *reinterpret_cast<float2*>(o_row + dt * 8 + 2 * t) =
            make_float2(acc_o[dt][2 * hr], acc_o[dt][2 * hr + 1]);
      }
    }
  }
  __syncthreads();

  const bool split_mode = launch.num_splits > 1;
  const int64_t acc_row0 =
      ((int64_t(split) * p.batch + batch) * p.num_heads + head) * launch.max_seqlen_q;
  T* out = static_cast<T*>(p.out);
  for (int item = tid; item < kBlockM * kChunks; item += Tr::kThreads) {
    const int r = item / kChunks;
    const int col = (item % kChunks) * 8;
    const int row = m0 + r;
    if (row >= seq.seqlen_q) continue;
    float mw[Tr::kWarps];
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < Tr::kWarps; ++w) {
      mw[w] = part_ml[(w * kBlockM + r) * 2];
      mx = fmaxf(mx, mw[w]);
    }
    float sum = 0.f;
    float o[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = 0.f;
#pragma unroll
    for (int w = 0; w < Tr::kWarps; ++w) {
      const float wt = OnlineSoftmax<2>::merge_weight(mw[w], mx);
      sum += wt * part_ml[(w * kBlockM + r) * 2 + 1];
      const float* o_row = part_o + (w * kBlockM + r) * Tr::kPartRowFloats + col;
      const float4 lo = *reinterpret_cast<const float4*>(o_row);
      const float4 hi = *reinterpret_cast<const float4*>(o_row + 4);
      o[0] += wt * lo.x, o[1] += wt * lo.y, o[2] += wt * lo.z, o[3] += wt * lo.w;
      o[4] += wt * hi.x, o[5] += wt * hi.y, o[6] += wt * hi.z, o[7] += wt * hi.w;
    }
    const bool empty = !(sum > 0.f);  // no visible key in any warp's part
    float inv, lse;
    // The sink joins the merged denominator once, unless split (the combine adds it).
    if (!split_mode && p.sink != nullptr) {
      const float sink_log2 = row_sink_log2(p, launch.packed_gqa, head, row, true);
      OnlineSoftmax<2>::finish_with_sink(mx, sum, sink_log2, inv, lse);
    } else {
      OnlineSoftmax<2>::finish(mx, sum, inv, lse);
    }
    inv *= v_factor;
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] *= inv;
    if (split_mode) {
      const int64_t acc_row = acc_row0 + row;
      if (col == 0) launch.lse_accum[acc_row] = lse;
      if (empty || col >= head_dim_v) continue;  // the combine skips empty parts
      float* dst = launch.o_accum + acc_row * split_accum_row_floats(head_dim_v) + col;
      *reinterpret_cast<float4*>(dst) = make_float4(o[0], o[1], o[2], o[3]);
      *reinterpret_cast<float4*>(dst + 4) = make_float4(o[4], o[5], o[6], o[7]);
      continue;
    }
    if (col < head_dim_v) {
      uint4 packed;
      packed.x = pack2<T>(o[0], o[1]);
      packed.y = pack2<T>(o[2], o[3]);
      packed.z = pack2<T>(o[4], o[5]);
      packed.w = pack2<T>(o[6], o[7]);
      T* dst = out + out_offset(p, seq, row, head) + col;
      if constexpr (Narrow)
        narrow_store_chunk(dst, packed, chunk_elements(col, head_dim_v));
      else
        *reinterpret_cast<uint4*>(dst) = packed;
    }
    if (p.lse != nullptr && col == 0) p.lse[lse_offset(p, seq, row, head)] = lse;
  }
}

// One decode launch of `kernel` (a decode_kernel instance with traits Dr): grid of 16-row query
// blocks x heads x (batch * splits).
template <typename Dr>
int launch_decode(void (*kernel)(FwdLaunch), const FwdLaunch& launch, cudaStream_t stream) {
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Dr::kSmemBytes);
  if (err != cudaSuccess) return err;
  const int m_blocks = (launch.max_seqlen_q + Dr::kBlockM - 1) / Dr::kBlockM;
  const dim3 grid(m_blocks > 0 ? m_blocks : 1, launch.p.num_heads,
                  launch.p.batch * launch.num_splits);
  kernel<<<grid, Dr::kThreads, Dr::kSmemBytes, stream>>>(launch);
  return cudaGetLastError();
}

}  // namespace sm80

template <int Arch, int Dtype, int HeadDim>
int run_decode_fp8_sm80(const FwdLaunch& launch, cudaStream_t stream) {
  using T = typename ElementType<Dtype>::type;
  if (launch.family != FwdKernelFamily::kSm80DecodeFp8 || launch.narrow || launch.v_parts != 1)
    return cudaErrorInvalidConfiguration;
  if constexpr (!sm80_has_decode_kernel(HeadDim)) {
    return cudaErrorInvalidConfiguration;
  } else {
    using Dr = sm80::DecodeTraits<HeadDim, true>;
    static_assert(Dr::kSmemBytes == sm80_decode_smem_bytes(HeadDim, true),
                  "the planner's FP8 decode shared memory (tile_config.h) is the kernel's");
    const bool e5m2 = kv_element_dtype(launch.p) == FLARE_DTYPE_E5M2;
    return sm80::launch_decode<Dr>(
        launch.small_pages
            ? (e5m2 ? sm80::decode_kernel<Arch, T, HeadDim, false, true, true, true>
                    : sm80::decode_kernel<Arch, T, HeadDim, false, true, true, false>)
            : (e5m2 ? sm80::decode_kernel<Arch, T, HeadDim, false, false, true, true>
                    : sm80::decode_kernel<Arch, T, HeadDim, false, false, true, false>),
        launch, stream);
  }
}

}  // namespace flare
