// The mma.sync forward kernel (sm80 and newer): one CTA computes a block_m x head_dim tile of
// the output for one (batch, head, split), walking its key blocks from last to first with an
// online softmax. Q stays in shared memory. K and V are loaded with cp.async into one K and one
// V buffer: V[n] streams in during S = QK^T, K[n-1] during softmax + PV, so each load has about
// half an iteration to land.
// Keys per iteration (template BlockN): the planner's tile, and for d64/d96/d128 also a wide
// step of 128/64/64 keys: up to 128 O + 64 S fp32 accumulators per thread, so it keeps its
// CTA-uniform values (sequence, mask, K/V source, alibi/softcap) in shared memory (FwdCtaState)
// and issues the next K load after the softmax, where the fp32 scores are dead. Q is read from
// shared memory with ldmatrix at every k16 step of QK^T.
//
// Features are runtime values read from the launch (masks, alibi, softcap, varlen, paged KV,
// splits): they are uniform per CTA, so the branches cost little, and one kernel per
// (arch, dtype, head dim) keeps each translation unit small.
//
// V and O have v_head_dim(p) columns (at most p.head_dim). A CTA loads V rows and computes O
// columns of its instance's V width (FwdTraits::kHeadDimV = sm80_kernel_head_dim_v(HeadDim)):
// the head dim itself up to 256, 256 at d512, where the grid runs launch.v_parts CTAs per query
// block, part j computing O columns [256 j, 256 j + 256) over the same S = Q K^T (only part 0
// writes the LSE). V columns past v_head_dim(p) are zero in shared memory and never stored.
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "common/block_range.h"
#include "common/query_tile.h"
#include "common/score_mods.h"
#include "common/sequence.h"
#include "common/serving_semantics.h"
#include "common/smem_swizzle.h"
#include "common/split.h"
#include "common/tile_config.h"
#include "kernels/common/narrow_copy.cuh"
#include "kernels/common/online_softmax.cuh"
#include "kernels/element_type.cuh"
#include "kernels/fwd_launch.h"
#include "kernels/sm80/mma_sm80.cuh"

namespace flare {
namespace sm80 {

// Where a CTA's K/V rows are: what the K/V loads need besides the launch parameters.
struct KvSource {
  const int* table;    // paged: the batch entry's block table row, else null
  int64_t k_base;      // element offset of key row 0 of head_k in k (paged: within a page)
  int64_t v_base;      // same in v
  uint32_t k_row0;     // paged: first cache row of the sequence (leftpad)
  uint32_t page_size;  // paged: rows per page, else 1
  int seqlen_k;
  bool paged;
};

// CTA-uniform values that the wide-step kernel keeps in shared memory instead of in
// registers across the main loop: written once by thread 0 behind a barrier, re-read (one
// broadcast LDS each) where an iteration or the epilogue needs them. Beside 128 O + 64 S fp32
// accumulators per thread, the registers they would take spill (docs/decisions.md).
struct FwdCtaState {
  SequenceInfo seq;
  KvSource kv;
  MaskSpec mask;
  float alibi;   // ALiBi slope in the units of x (0: off)
  float cap_in;  // softcap: scale / softcap (0: off)
  int head;
  int split;
  bool prefix;   // QueryTile::prefix: masked blocks take each row's keys from row_keys
};

// BlockN: keys per main-loop step, also the unit of the split ranges (key_block_range /
// split_block_range use the kernel's own kBlockN). The default is the planner's tile
// (sm80_tile_config). d64/d96/d128 also compile the wide step sm80_wide_block_n (128 / 64 keys,
// the default there; FLARE_SM80_WIDE=0 for the tile's step), which keeps its CTA-uniform state
// in shared memory.
// Swizzled (the default for head dims that are multiples of 64; FLARE_SM80_SWIZZLE=0 for padded
// rows): unpadded rows with XOR-swizzled chunks (common/smem_swizzle.h) instead of rows padded
// by 16 bytes, so each cp.async 8-lane group fills one aligned 128-byte line (padded rows split
// the requests; docs/decisions.md).
template <int HeadDim, int BlockN = sm80_tile_config(HeadDim).block_n, bool Swizzled = false>
struct FwdTraits {
  static constexpr TileConfig kTile = sm80_tile_config(HeadDim);
  static constexpr int kBlockM = kTile.block_m;
  static constexpr int kBlockN = BlockN;
  static constexpr int kWarps = kTile.warps;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kWarpRows = kBlockM / kWarps;  // query rows owned by one warp
  static constexpr int kMTiles = kWarpRows / 16;      // m16 tiles per warp
  static constexpr int kNTiles = kBlockN / 8;         // n8 tiles of S per warp
  // V rows and O columns of one CTA (sm80_kernel_head_dim_v); narrower than HeadDim at d512,
  // whose grid runs launch.v_parts column parts.
  static constexpr int kHeadDimV = sm80_kernel_head_dim_v(HeadDim);
  static constexpr bool kSplitV = kHeadDimV < HeadDim;
  static constexpr int kDTiles = kHeadDimV / 8;       // n8 tiles of O per warp
  static constexpr int kKSteps = HeadDim / 16;        // k16 steps of QK^T
  // Padded rows (16 extra bytes): the 8 row addresses of an ldmatrix then fall in 8 distinct
  // 16-byte bank groups for every head dim we compile (row bytes = 16 mod 128 or 80 mod 128);
  // swizzled rows get the same property from the chunk permutation.
  static constexpr bool kSwizzled = Swizzled;
  static constexpr int kRowBytes = smem_row_bytes(HeadDim, Swizzled);     // Q and K rows
  static constexpr int kRowBytesV = smem_row_bytes(kHeadDimV, Swizzled);  // V rows
  static constexpr int kChunksPerRow = HeadDim / 8;    // 16-byte chunks of a Q / K row
  static constexpr int kChunksPerRowV = kHeadDimV / 8; // of a V row and of an O row
  static constexpr int kSmemQ = kBlockM * kRowBytes;
  static constexpr int kSmemKV = kBlockN * kRowBytes;  // one K buffer
  static constexpr int kSmemV = kBlockN * kRowBytesV;  // one V buffer
  // Swizzled: the buffers start at a 128-byte boundary of the shared window (up to 112 bytes
  // of padding before Q; the smem size includes 128 bytes for it).
  static constexpr int kAlignSlack = Swizzled ? 128 : 0;
  // The wide step keeps FwdCtaState in shared memory, after the K/V buffers.
  static constexpr bool kStateInSmem = BlockN != kTile.block_n;
  static constexpr int kSmemState = kStateInSmem ? int((sizeof(FwdCtaState) + 15) / 16 * 16) : 0;
  // Byte offset of the state (Q + `stages` K buffers + `stages` V buffers before it).
  static constexpr int state_offset(int stages) { return kSmemQ + stages * (kSmemKV + kSmemV); }
  static constexpr int smem_bytes(int stages) {
    return state_offset(stages) + kSmemState + kAlignSlack;
  }
  static_assert(kWarpRows % 16 == 0 && kDTiles % 2 == 0 && kNTiles % 2 == 0, "tile shape");
  static_assert(kThreads >= kChunksPerRow, "a pass loads at least one row");
  static_assert(!kSplitV || BlockN == kTile.block_n, "column parts have no wide step");
  static_assert(BlockN == kTile.block_n || BlockN == sm80_wide_block_n(HeadDim),
                "the planner's tile or the wide step");
  static_assert(!Swizzled || HeadDim % 64 == 0, "swizzled rows are whole 128-byte lines");
};

// Byte offset of element `col` (a multiple of 8) of row `row` in a head_dim-wide tile.
template <int HeadDim, bool Swizzled>
__device__ __forceinline__ uint32_t tile_element_offset(int row, int col) {
  return Swizzled ? smem_chunk_offset(true, smem_row_bytes(HeadDim, true), row, col / 8)
                  : (row * (HeadDim + 8) + col) * 2;
}

// Copies `Rows` rows of a head_dim-wide tile into padded (or swizzled: Swizzled, see FwdTraits)
// shared memory with cp.async. Each
// pass covers Threads / chunks-per-row whole rows, so a thread keeps one column for all its
// rows. Row r lives at element offset row_offset(r), or does not exist (row_offset < 0): it is
// zero-filled, as are the columns past head_dim of a padded head dim.
// `narrow` (the launch's, CTA-uniform): the same chunks element by element (narrow_copy.cuh),
// for rows that are not 16-byte addressable or a head dim that ends inside a chunk.
template <int HeadDim, int Rows, int Threads, bool Swizzled = false, typename T,
          typename RowOffset>
__device__ __forceinline__ void load_tile(uint32_t smem, const T* base, int head_dim, bool narrow,
                                          RowOffset row_offset) {
  constexpr int kChunks = HeadDim / 8;
  constexpr int kRowsPerPass = Threads / kChunks;
  constexpr int kPasses = (Rows + kRowsPerPass - 1) / kRowsPerPass;
  const int col = (threadIdx.x % kChunks) * 8;
  const int row0 = threadIdx.x / kChunks;
  if (row0 >= kRowsPerPass) return;
  if (narrow) {
    // Not unrolled: one chunk's eight loads live at a time, so this path adds no registers to
    // the kernel's allocation (the fast path's loop stays as it was).
    const int n_col = chunk_elements(col, head_dim);
#pragma unroll 1
    for (int i = 0; i < kPasses; ++i) {
      const int row = row0 + i * kRowsPerPass;
      if (Rows % kRowsPerPass != 0 && row >= Rows) break;
      const int64_t off = row_offset(row);
      narrow_load_chunk(smem + tile_element_offset<HeadDim, Swizzled>(row, col),
                        base + (off >= 0 ? off + col : 0), off >= 0 ? n_col : 0);
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    const int row = row0 + i * kRowsPerPass;
    if (Rows % kRowsPerPass != 0 && row >= Rows) break;
    const int64_t off = row_offset(row);
    const bool valid = off >= 0 && col < head_dim;
    const T* src = valid ? base + off + col : base;
    cp_async_16(smem + tile_element_offset<HeadDim, Swizzled>(row, col), src, valid ? 16 : 0);
  }
}

// load_tile for rows that are affine in the row index (row r at row0_ptr + r * row_stride),
// rows r >= valid_rows zero-filled. A thread walks its rows with one pointer, so the compiler
// has no per-row 64-bit offsets to hoist out of the main loop (they cost 2 registers per row).
// `narrow`: element by element, as in load_tile.
template <int HeadDim, int Rows, int Threads, bool Swizzled = false, typename T>
__device__ __forceinline__ void load_tile_affine(uint32_t smem, const T* row0_ptr,
                                                 int64_t row_stride, int valid_rows,
                                                 int head_dim, bool narrow, const T* fallback) {
  constexpr int kChunks = HeadDim / 8;
  constexpr int kRowsPerPass = Threads / kChunks;
  constexpr int kPasses = (Rows + kRowsPerPass - 1) / kRowsPerPass;
  const int col = (threadIdx.x % kChunks) * 8;
  const int row0 = threadIdx.x / kChunks;
  if (row0 >= kRowsPerPass) return;
  const T* src = row0_ptr + (int64_t(row0) * row_stride + col);
  const int64_t step = int64_t(kRowsPerPass) * row_stride;
  if (narrow) {
    // Not unrolled: one chunk's eight loads live at a time, so this path adds no registers to
    // the kernel's allocation (the fast path's loop stays as it was).
    const int n_col = chunk_elements(col, head_dim);
#pragma unroll 1
    for (int i = 0; i < kPasses; ++i) {
      const int row = row0 + i * kRowsPerPass;
      if (Rows % kRowsPerPass != 0 && row >= Rows) break;
      const bool valid = row < valid_rows;
      narrow_load_chunk(smem + tile_element_offset<HeadDim, Swizzled>(row, col),
                        valid ? src : fallback, valid ? n_col : 0);
      src += step;
    }
    return;
  }
  const bool col_ok = col < head_dim;
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    const int row = row0 + i * kRowsPerPass;
    if (Rows % kRowsPerPass != 0 && row >= Rows) break;
    const bool valid = row < valid_rows && col_ok;
    cp_async_16(smem + tile_element_offset<HeadDim, Swizzled>(row, col), valid ? src : fallback,
                valid ? 16 : 0);
    src += step;
  }
}

template <int Arch, typename T, int HeadDim, int BlockN, bool Swizzled = false>
__global__ void __launch_bounds__(FwdTraits<HeadDim, BlockN, Swizzled>::kThreads)
    fwd_kernel(const __grid_constant__ FwdLaunch launch) {
  using Tr = FwdTraits<HeadDim, BlockN, Swizzled>;
  constexpr int kBlockM = Tr::kBlockM, kBlockN = Tr::kBlockN, kThreads = Tr::kThreads;
  constexpr int kMTiles = Tr::kMTiles, kNTiles = Tr::kNTiles, kDTiles = Tr::kDTiles;
  constexpr int kRowBytes = Tr::kRowBytes;
  constexpr int kStages = 1;  // one K and one V buffer
  constexpr bool kStateInSmem = Tr::kStateInSmem;
  const flare_mha_fwd_params& p = launch.p;

  // Heavier (later) query blocks first: with a causal mask they have the most key blocks. The
  // V column parts of a query block are adjacent in x (they read the same K rows).
  const int m_block = Tr::kSplitV ? int(gridDim.x - 1 - blockIdx.x) / launch.v_parts
                                  : int(gridDim.x - 1 - blockIdx.x);
  const int v_part = Tr::kSplitV ? int(blockIdx.x) % launch.v_parts : 0;
  const int head = blockIdx.y;
  const int batch = blockIdx.z / launch.num_splits;
  const int split = blockIdx.z % launch.num_splits;
  QueryTile qt;
  if (!query_tile(p, batch, head, m_block, kBlockM, kBlockN, launch.num_splits, split, qt)) return;
  const SequenceInfo seq = qt.seq;
  const int m0 = qt.m0, head_k = qt.head_k;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  // Swizzled: every buffer (and row) starts on a 128-byte boundary of the shared window.
  unsigned char* const smem =
      smem_raw + (Swizzled ? (128u - (smem_addr(smem_raw) & 127u)) & 127u : 0u);
  const uint32_t sQ = smem_addr(smem);
  const uint32_t sK = sQ + Tr::kSmemQ;  // the K buffer
  const uint32_t sV = sK + Tr::kSmemKV;  // the V buffer (kHeadDimV columns a row)

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;  // mma fragment row group / column pair
  const int warp_row0 = warp * Tr::kWarpRows;

  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  // This CTA's V columns: [v_col0, v_col0 + kHeadDimV) of V and O, of which
  // v_head_dim(p) - v_col0 exist (recomputed from the launch where used, not held across the
  // main loop).
  const int v_col0 = v_part * Tr::kHeadDimV;
  const T* v = static_cast<const T*>(p.v) + v_col0;

  const bool split_mode = launch.num_splits > 1;
  const int64_t acc_row0 =
      ((int64_t(split) * p.batch + batch) * p.num_heads + head) * launch.max_seqlen_q;

  // O and the online softmax of this thread's rows: row 2 mt + hr is row g + 8 hr of m16 tile
  // mt of the warp.
  float acc_o[kMTiles][kDTiles][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[mt][dt][e] = 0.f;
  OnlineSoftmax<2 * kMTiles> softmax;
  softmax.init();

  // Softmax works in log2 units: p = exp2(x * unit_log2 - max * unit_log2). Without softcap x is
  // the raw q.k and unit = scale; with softcap x is already the capped score and unit = 1.
  const bool has_softcap = p.softcap > 0.f;
  const float unit = has_softcap ? 1.f : p.softmax_scale;
  const float unit_log2 = unit * 1.4426950408889634f;
  const float cap_in = has_softcap ? p.softmax_scale / p.softcap : 0.f;
  // ALiBi bias in the same units as x, so it is scaled with it.
  const float alibi = alibi_slope(p, batch, head) / unit;
  const int diagonal = qt.mask.diagonal();

  // Wide step: the CTA-uniform values go to shared memory once; the loop and the epilogue read
  // them from there. The barrier makes thread 0's stores visible (it runs for empty ranges too:
  // the epilogue reads the state); `kv` is stored below and first read after the loop's top
  // barrier.
  FwdCtaState* const state = reinterpret_cast<FwdCtaState*>(smem + Tr::state_offset(kStages));
  if constexpr (kStateInSmem) {
    if (tid == 0) {
      state->seq = seq;
      state->mask = qt.mask;
      state->alibi = alibi;
      state->cap_in = cap_in;
      state->head = head;
      state->split = split;
      state->prefix = qt.prefix;
    }
    __syncthreads();
  }

  if (qt.range.end > qt.range.begin) {
    auto q_row = [&](int r) -> int64_t {
      return m0 + r < seq.seqlen_q ? q_offset(p, seq, m0 + r, head) : -1;
    };
    load_tile<HeadDim, kBlockM, kThreads, Swizzled>(sQ, q, p.head_dim, launch.narrow, q_row);
    cp_async_commit();
    // Unpaged K/V rows are affine in the row index; paged rows go through the block table.
    // Paged rows: 32-bit page / in-page split (cache rows fit in 32 bits), one table read.
    KvSource kv_regs;
    kv_regs.paged = is_paged(p);
    kv_regs.table =
        kv_regs.paged ? p.block_table + int64_t(batch) * p.block_table_batch_stride : nullptr;
    kv_regs.page_size = kv_regs.paged ? uint32_t(p.page_block_size) : 1u;
    kv_regs.k_row0 = uint32_t(seq.k_row0);
    kv_regs.seqlen_k = seq.seqlen_k;
    kv_regs.k_base =
        kv_regs.paged ? int64_t(head_k) * p.k_head_stride : k_offset(p, seq, 0, head_k);
    kv_regs.v_base =
        kv_regs.paged ? int64_t(head_k) * p.v_head_stride : v_offset(p, seq, 0, head_k);
    if constexpr (kStateInSmem) {
      if (tid == 0) state->kv = kv_regs;
    }
    // The loads in the loop take their copy here: from shared memory (wide step) or the
    // registers above.
    auto kv_now = [&]() -> KvSource {
      if constexpr (kStateInSmem) return state->kv;
      else return kv_regs;
    };
    // Block-table entry `slot`. The wide step's table pointer comes from shared memory, which
    // hides that it points to global memory: __ldg keeps the load a global one (the table is
    // read-only for the launch).
    auto page_of = [](const KvSource& kv, uint32_t slot) -> int {
      if constexpr (kStateInSmem) return __ldg(kv.table + slot);
      else return kv.table[slot];
    };
    // Key block n_block of K or V into dst: the two differ only in tensor, base, strides and
    // width (Width: the tile's columns, of which `cols` exist).
    auto load_kv = [&](auto width, uint32_t dst, const T* src, int64_t base, int64_t row_stride,
                       int64_t batch_stride, int cols, int n_block, const KvSource& kv) {
      constexpr int Width = decltype(width)::value;
      const int n0 = n_block * kBlockN;
      if (!kv.paged) {
        load_tile_affine<Width, kBlockN, kThreads, Swizzled>(
            dst, src + (base + int64_t(n0) * row_stride), row_stride, kv.seqlen_k - n0, cols,
            launch.narrow, src);
        return;
      }
      load_tile<Width, kBlockN, kThreads, Swizzled>(dst, src, cols, launch.narrow,
                                                    [&](int r) -> int64_t {
        if (n0 + r >= kv.seqlen_k) return -1;
        const uint32_t kv_row = kv.k_row0 + uint32_t(n0 + r);
        const uint32_t slot = kv_row / kv.page_size;
        return int64_t(page_of(kv, slot)) * batch_stride +
               int64_t(kv_row - slot * kv.page_size) * row_stride + base;
      });
    };
    auto load_k = [&](int n_block, const KvSource& kv) {
      load_kv(std::integral_constant<int, HeadDim>{}, sK, k, kv.k_base, p.k_row_stride,
              p.k_batch_stride, p.head_dim, n_block, kv);
    };
    auto load_v = [&](int n_block, const KvSource& kv) {
      load_kv(std::integral_constant<int, Tr::kHeadDimV>{}, sV, v, kv.v_base, p.v_row_stride,
              p.v_batch_stride, v_head_dim(p) - v_col0, n_block, kv);
    };
    // Commit groups, in issue order: Q, K[end-1], and in the loop one V and one K group per
    // iteration (empty when there is no block to load). Every wait drains all groups.
    load_k(qt.range.end - 1, kv_regs);
    cp_async_commit();

    // Per-lane ldmatrix addresses (see the fragment layouts of mma.m16n8k16): Q and V read row
    // (lane & 7) + 8 ((lane >> 3) & 1), chunk 2 s + (lane >> 4); K reads row
    // (lane & 7) + 8 (lane >> 4), chunk 2 s + ((lane >> 3) & 1). Step s: ldm(lane, s).
    // (The padded rows' expressions are written out separately: docs/decisions.md.)
    const int qv_row = (lane & 7) + ((lane >> 3) & 1) * 8, qv_half = lane >> 4;
    const int k_row = (lane & 7) + (lane >> 4) * 8, k_half = (lane >> 3) & 1;
    const uint32_t q_lane =
        Swizzled ? ldmatrix_lane_address(true, sQ + uint32_t((warp_row0 + qv_row) * kRowBytes),
                                         qv_row, qv_half)
                 : sQ + (warp_row0 + (lane & 7) + ((lane >> 3) & 1) * 8) * kRowBytes +
                       (lane >> 4) * 16;
    const uint32_t k_lane =
        Swizzled ? ldmatrix_lane_address(true, sK + uint32_t(k_row * kRowBytes), k_row, k_half)
                 : sK + ((lane & 7) + (lane >> 4) * 8) * kRowBytes + ((lane >> 3) & 1) * 16;
    constexpr int kRowBytesV = Tr::kRowBytesV;
    const uint32_t v_lane =
        Swizzled ? ldmatrix_lane_address(true, sV + uint32_t(qv_row * kRowBytesV), qv_row, qv_half)
                 : sV + ((lane & 7) + ((lane >> 3) & 1) * 8) * kRowBytesV + (lane >> 4) * 16;
    // Address of step s (k16 chunk pair) of tile `tile` (16 rows each) from a lane address. Tiles
    // are 16 x kRowBytes apart, a multiple of 128 when swizzled: added after the step's XOR,
    // they stay immediates. ldm_v: the same in V's rows.
    auto ldm = [](uint32_t lane_address, int tile, int s) -> uint32_t {
      if constexpr (Swizzled)
        return ldmatrix_step_address(true, lane_address, s) + uint32_t(tile * 16 * kRowBytes);
      else
        return lane_address + tile * 16 * kRowBytes + s * 32;
    };
    auto ldm_v = [](uint32_t lane_address, int tile, int s) -> uint32_t {
      if constexpr (Swizzled)
        return ldmatrix_step_address(true, lane_address, s) + uint32_t(tile * 16 * kRowBytesV);
      else
        return lane_address + tile * 16 * kRowBytesV + s * 32;
    };

    // Middle of an iteration: V[n] visible to all, and every warp is done with K[n] (its QK^T
    // precedes the barrier), so K[n-1] may overwrite it. The wide step calls this after the
    // softmax, where the fp32 scores are dead and the load's address math has registers to
    // spare (it spills with the load before the softmax); the planner's step before it. After
    // the softmax, K[n-1] has the P V of this iteration to land in, as V[n] has the QK^T.
    auto wait_v_load_next_k = [&](int n_block) {
      cp_async_wait<0>();
      __syncthreads();
      const int next = n_block - 1;
      if (next >= qt.range.begin) load_k(next, kv_now());
      cp_async_commit();
    };

    for (int n_block = qt.range.end - 1; n_block >= qt.range.begin; --n_block) {
      // Top: K[n] visible to all, and every warp is done with the PV of iteration n+1, so the V
      // buffer it read may be overwritten with V[n].
      cp_async_wait<0>();
      __syncthreads();
      load_v(n_block, kv_now());
      cp_async_commit();
      const uint32_t k_stage = k_lane;
      const uint32_t v_stage = v_lane;

      // S = Q K^T for this warp's rows.
      float acc_s[kMTiles][kNTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc_s[mt][nt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < Tr::kKSteps; ++ks) {
        uint32_t a[kMTiles][4];
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt)
          ldmatrix_x4(ldm(q_lane, mt, ks), a[mt][0], a[mt][1], a[mt][2], a[mt][3]);
#pragma unroll
        for (int np = 0; np < kNTiles / 2; ++np) {
          uint32_t b0, b1, b2, b3;
          ldmatrix_x4(ldm(k_stage, np, ks), b0, b1, b2, b3);
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) {
            mma_16816<T>(acc_s[mt][2 * np], a[mt], b0, b1);
            mma_16816<T>(acc_s[mt][2 * np + 1], a[mt], b2, b3);
          }
        }
      }

      // Softcap, ALiBi, mask (the mask only on blocks that cross a boundary). The wide step
      // reads its CTA-uniform values back from shared memory here.
      {
        MaskSpec mask_n = qt.mask;
        float alibi_n = alibi, cap_in_n = cap_in;
        bool prefix_n = qt.prefix;
        if constexpr (kStateInSmem) {
          mask_n = state->mask;
          alibi_n = state->alibi;
          cap_in_n = state->cap_in;
          prefix_n = state->prefix;
        }
        const int diagonal_n = kStateInSmem ? mask_n.diagonal() : diagonal;
        const bool needs_mask = block_needs_mask(mask_n, m0, m0 + kBlockM, n_block, kBlockN);
        if (has_softcap || alibi_n != 0.f || needs_mask) {
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
            for (int hr = 0; hr < 2; ++hr) {
              const int row = m0 + warp_row0 + mt * 16 + g + hr * 8;
              // Visible keys of a row form [first, end) (prefix ranges widen it: row_keys);
              // columns are relative to this block.
              const int block_col0 = n_block * kBlockN + 2 * t;
              int first = mask_n.first_key(row), end = mask_n.end_key(row);
              if (prefix_n && needs_mask)
                row_keys(p, kStateInSmem ? state->seq.batch : seq.batch, mask_n, row, first, end);
              modify_row_scores<kNTiles>(
                  [&](int nt, int e) -> float& { return acc_s[mt][nt][2 * hr + e]; },
                  has_softcap, p.softcap, cap_in_n, alibi_n, row + diagonal_n - block_col0,
                  needs_mask, first - block_col0, end - block_col0);
            }
        }
      }

      if constexpr (!kStateInSmem) wait_v_load_next_k(n_block);

      // Online softmax: new row max and the rescale factor of what was accumulated; then the
      // probabilities, packed to 16 bits at once (they are the A operand of P V) so the fp32
      // scores die early and the accumulators keep their registers.
      float correction[2 * kMTiles];
      softmax.update<2 * kNTiles>(
          [&](int r, int c) -> float& { return acc_s[r / 2][c / 2][2 * (r % 2) + c % 2]; },
          unit_log2, correction);
      // The S accumulators of two adjacent n8 tiles form the A fragment of one k16 step of PV.
      uint32_t p_frag[kNTiles / 2][kMTiles][4];
#pragma unroll
      for (int kk = 0; kk < kNTiles / 2; ++kk)
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          p_frag[kk][mt][0] = pack2<T>(acc_s[mt][2 * kk][0], acc_s[mt][2 * kk][1]);
          p_frag[kk][mt][1] = pack2<T>(acc_s[mt][2 * kk][2], acc_s[mt][2 * kk][3]);
          p_frag[kk][mt][2] = pack2<T>(acc_s[mt][2 * kk + 1][0], acc_s[mt][2 * kk + 1][1]);
          p_frag[kk][mt][3] = pack2<T>(acc_s[mt][2 * kk + 1][2], acc_s[mt][2 * kk + 1][3]);
        }
      if constexpr (kStateInSmem) wait_v_load_next_k(n_block);
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int dt = 0; dt < kDTiles; ++dt)
          OnlineSoftmax<2 * kMTiles>::rescale_tile(acc_o[mt][dt], correction, mt);

      // O += P V.
#pragma unroll
      for (int kk = 0; kk < kNTiles / 2; ++kk) {
#pragma unroll
        for (int dp = 0; dp < kDTiles / 2; ++dp) {
          uint32_t b0, b1, b2, b3;
          ldmatrix_x4_trans(ldm_v(v_stage, kk, dp), b0, b1, b2, b3);
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) {
            mma_16816<T>(acc_o[mt][2 * dp], p_frag[kk][mt], b0, b1);
            mma_16816<T>(acc_o[mt][2 * dp + 1], p_frag[kk][mt], b2, b3);
          }
        }
      }
    }
  }

  // Epilogue: finish the row sums across the quad, normalise, write O and the LSE (row
  // 2 mt + hr of inv_sum and lse).
  // Where the rows go (wide step: the sequence, head and split read back from shared memory).
  SequenceInfo seq_o = seq;
  int head_o = head, split_o = split;
  if constexpr (kStateInSmem) {
    seq_o = state->seq;
    head_o = state->head;
    split_o = state->split;
  }
  // The sink joins the denominator here, unless split (the combine adds it once).
  float inv_sum[2 * kMTiles], lse[2 * kMTiles];
  if (!split_mode && p.sink != nullptr) {
    float sink_log2[2 * kMTiles];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int row = m0 + warp_row0 + mt * 16 + g + hr * 8;
        sink_log2[2 * mt + hr] =
            row_sink_log2(p, launch.packed_gqa, head_o, row, row < seq_o.seqlen_q);
      }
    softmax.finalize(unit_log2, sink_log2, inv_sum, lse);
  } else {
    softmax.finalize(unit_log2, inv_sum, lse);
  }
  const int v_cols = v_head_dim(p) - v_col0;  // O columns of this CTA that exist

  if (split_mode) {
    // Normalised fp32 partials straight to the workspace; the combine kernel merges them.
    const int64_t acc_row0_o =
        kStateInSmem ? ((int64_t(split_o) * p.batch + seq_o.batch) * p.num_heads + head_o) *
                           launch.max_seqlen_q
                     : acc_row0;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int row = m0 + warp_row0 + mt * 16 + g + hr * 8;
        if (row >= seq_o.seqlen_q) continue;
        const int64_t acc_row = acc_row0_o + row;
        if (t == 0 && v_part == 0) launch.lse_accum[acc_row] = lse[2 * mt + hr];
        if (lse[2 * mt + hr] == -INFINITY) continue;  // the combine skips empty parts
        // Whole chunks of the padded row (columns past v_head_dim hold zeros: V's columns there
        // are zero-filled), so the combine's 4-float reads never see unwritten floats.
        const int accum_cols = split_accum_row_floats(v_head_dim(p));
        float* o = launch.o_accum + acc_row * accum_cols + v_col0;
#pragma unroll
        for (int dt = 0; dt < kDTiles; ++dt) {
          const int col = dt * 8 + 2 * t;
          if (col < accum_cols - v_col0)
            *reinterpret_cast<float2*>(o + col) =
                make_float2(acc_o[mt][dt][2 * hr] * inv_sum[2 * mt + hr],
                            acc_o[mt][dt][2 * hr + 1] * inv_sum[2 * mt + hr]);
        }
      }
    return;
  }

  // Stage this warp's rows in its own rows of the Q buffer (only this warp read them; O rows
  // are at most as wide as Q rows), then store 16-byte chunks so each row goes out in full
  // sectors (narrow: element by element).
  __syncwarp();
  unsigned char* staged = smem + warp_row0 * kRowBytes;
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int r = mt * 16 + g + hr * 8;
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        const int col = dt * 8 + 2 * t;
        if constexpr (Swizzled) {
          *reinterpret_cast<uint32_t*>(staged + smem_chunk_offset(true, kRowBytes, r, col / 8) +
                                       (col % 8) * 2) =
              pack2<T>(acc_o[mt][dt][2 * hr] * inv_sum[2 * mt + hr],
                       acc_o[mt][dt][2 * hr + 1] * inv_sum[2 * mt + hr]);
        } else {
          *reinterpret_cast<uint32_t*>(staged + r * kRowBytes + col * 2) =
              pack2<T>(acc_o[mt][dt][2 * hr] * inv_sum[2 * mt + hr],
                       acc_o[mt][dt][2 * hr + 1] * inv_sum[2 * mt + hr]);
        }
      }
    }
  __syncwarp();
  T* out = static_cast<T*>(p.out);
  constexpr int kChunks = Tr::kWarpRows * Tr::kChunksPerRowV;
#pragma unroll
  for (int c = lane; c < kChunks; c += 32) {
    const int r = c / Tr::kChunksPerRowV;
    const int col = (c % Tr::kChunksPerRowV) * 8;
    const int row = m0 + warp_row0 + r;
    if (row < seq_o.seqlen_q && col < v_cols) {
      const uint4 chunk =
          Swizzled ? *reinterpret_cast<const uint4*>(
                         staged + smem_chunk_offset(true, kRowBytes, r, col / 8))
                   : *reinterpret_cast<const uint4*>(staged + r * kRowBytes + col * 2);
      T* dst = out + out_offset(p, seq_o, row, head_o) + v_col0 + col;
      if (launch.narrow)
        narrow_store_chunk(dst, chunk, chunk_elements(col, v_cols));
      else
        *reinterpret_cast<uint4*>(dst) = chunk;
    }
  }
  if (p.lse != nullptr && t == 0 && v_part == 0) {
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int row = m0 + warp_row0 + mt * 16 + g + hr * 8;
        if (row < seq_o.seqlen_q) p.lse[lse_offset(p, seq_o, row, head_o)] = lse[2 * mt + hr];
      }
  }
}

}  // namespace sm80
}  // namespace flare

#include "kernels/sm80/decode_kernel.cuh"
#include "plan/plan.h"  // the planner's shared-memory table the launcher checks against

namespace flare {
namespace sm80 {

// One prefill launch of `kernel` (a fwd_kernel instance with traits Tr): grid of m blocks x
// heads x (batch * splits).
template <typename Tr>
int launch_fwd(void (*kernel)(FwdLaunch), int smem, const FwdLaunch& launch,
               cudaStream_t stream) {
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  const int m_blocks = (launch.max_seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM;
  // x: m blocks x V column parts (one part unless the instance splits V, FwdTraits::kSplitV).
  const int parts = Tr::kSplitV ? launch.v_parts : 1;
  const dim3 grid(m_blocks * parts, launch.p.num_heads, launch.p.batch * launch.num_splits);
  kernel<<<grid, Tr::kThreads, smem, stream>>>(launch);
  return cudaGetLastError();
}

}  // namespace sm80

template <int Arch, int Dtype, int HeadDim>
int run_fwd_sm80(const FwdLaunch& launch, cudaStream_t stream) {
  using T = typename ElementType<Dtype>::type;
  // The plan's V width is the instance's (sm80_kernel_head_dim_v), and only the d512 instance
  // runs several V column parts.
  if (launch.kernel_head_dim_v != sm80_kernel_head_dim_v(HeadDim) || launch.v_parts < 1 ||
      (launch.v_parts > 1 && !sm80::FwdTraits<HeadDim>::kSplitV))
    return cudaErrorInvalidConfiguration;
  if (launch.family == FwdKernelFamily::kSm80Decode) {
    // d512 has no decode kernel (sm80_has_decode_kernel): the planner never picks it there.
    if constexpr (!sm80_has_decode_kernel(HeadDim)) {
      return cudaErrorInvalidConfiguration;
    } else {
      using Dr = sm80::DecodeTraits<HeadDim>;
      static_assert(Dr::kBlockM == sm80_decode_tile_config(HeadDim).block_m &&
                        Dr::kSmemBytes == sm80_decode_smem_bytes(HeadDim),
                    "the planner's decode tile and shared memory (tile_config.h) are the kernel's");
      // The narrow instance moves elements one by one (decode_kernel's Narrow); the SmallPages
      // one takes pages of fewer than 16 rows.
      const bool small = launch.small_pages;
      auto kernel = launch.narrow ? (small ? sm80::decode_kernel<Arch, T, HeadDim, true, true>
                                           : sm80::decode_kernel<Arch, T, HeadDim, true, false>)
                                  : (small ? sm80::decode_kernel<Arch, T, HeadDim, false, true>
                                           : sm80::decode_kernel<Arch, T, HeadDim, false, false>);
      return sm80::launch_decode<Dr>(kernel, launch, stream);
    }
  }
  if (launch.family != FwdKernelFamily::kSm80Prefill) return cudaErrorInvalidConfiguration;
  // The prefill instance of the plan's key step (the tile's, or the wide step) and row layout
  // (padded, or swizzled where the head dim is a multiple of 64).
  using Tr = sm80::FwdTraits<HeadDim>;
  constexpr int kBlockM = Tr::kBlockM, kTileN = Tr::kBlockN;
  constexpr int kWideN = sm80_wide_block_n(HeadDim);
  constexpr bool kCanSwizzle = HeadDim % 64 == 0;
  static_assert(!Tr::kSplitV || (Tr::kHeadDimV == kSm80MaxHeadDimV &&
                                  Tr::smem_bytes(1) <= 163 * 1024 && Tr::kTile.ctas_per_sm == 1),
                "the d512 tile computes 256 O columns, fits the A100's 163 KB, and the planner "
                "counts one CTA per SM");
  static_assert(Tr::smem_bytes(1) == sm80_prefill_min_smem_bytes(HeadDim) &&
                    Tr::smem_bytes(1) == sm80_prefill_smem_bytes(HeadDim, kBlockM, kTileN, false, false),
                "flare_api's shared-memory check and the smallest prefill variant agree");
  if (launch.block_m != kBlockM || (launch.sm80_swizzled && !kCanSwizzle))
    return cudaErrorInvalidConfiguration;
  if constexpr (kWideN != 0) {
    if (launch.block_n == kWideN) {
      using Tw = sm80::FwdTraits<HeadDim, kWideN>;
      // The planner's CTA slots (ctas_per_sm = 2) hold for its shared memory on A100 (164 KB
      // per SM) and H100 (228 KB), 1 KB reserved per CTA; registers (<= 255 x 128) allow 2.
      static_assert(2 * (Tw::smem_bytes(1) + 1024) <= 164 * 1024 && Tw::kTile.ctas_per_sm == 2,
                    "the wide step keeps the planner's two CTAs per SM");
      static_assert(Tw::smem_bytes(1) <= sm80_prefill_smem_bytes(HeadDim, kBlockM, kWideN, true, false),
                    "the planner's shared-memory bound of the wide step holds");
      if constexpr (kCanSwizzle) {
        using Ts = sm80::FwdTraits<HeadDim, kWideN, true>;
        static_assert(2 * (Ts::smem_bytes(1) + 1024) <= 164 * 1024, "two CTAs per SM");
        static_assert(Ts::smem_bytes(1) <= sm80_prefill_smem_bytes(HeadDim, kBlockM, kWideN, true, true),
                      "the planner's shared-memory bound of the wide swizzled step holds");
        if (launch.sm80_swizzled)
          return sm80::launch_fwd<Ts>(sm80::fwd_kernel<Arch, T, HeadDim, kWideN, true>,
                                      Ts::smem_bytes(1), launch, stream);
      }
      return sm80::launch_fwd<Tw>(sm80::fwd_kernel<Arch, T, HeadDim, kWideN>,
                                  Tw::smem_bytes(1), launch, stream);
    }
  }
  if (launch.block_n != kTileN) return cudaErrorInvalidConfiguration;
  if constexpr (kCanSwizzle) {
    using Ts = sm80::FwdTraits<HeadDim, kTileN, true>;
    static_assert(Ts::smem_bytes(1) == sm80_prefill_smem_bytes(HeadDim, kBlockM, kTileN, false, true),
                  "the planner's shared memory of the swizzled step is the kernel's");
    if (launch.sm80_swizzled)
      return sm80::launch_fwd<Ts>(sm80::fwd_kernel<Arch, T, HeadDim, kTileN, true>,
                                  Ts::smem_bytes(1), launch, stream);
  }
  return sm80::launch_fwd<Tr>(sm80::fwd_kernel<Arch, T, HeadDim, kTileN>,
                              Tr::smem_bytes(1), launch, stream);
}

}  // namespace flare
