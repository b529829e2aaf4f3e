// The producer of the warp-specialised Hopper kernel: for each tile it fills the Q buffer and
// one K/V stage per key block (pipeline.cuh), by TMA where the tensor maps allow (tma_maps.h)
// and by cp.async otherwise, in the order the consumers read them: key blocks from the last to
// the first.
//
// Producer threads: one warp when every copy of the launch goes by TMA (one thread issues each
// copy; more warps would only repeat the bookkeeping and the barrier arrivals on the consumers'
// issue slots), four warps otherwise (the cp.async fills need them all). Every producer thread
// arrives once on each full barrier it fills, whoever made the copies.
#pragma once
#include <cstdint>
#include <type_traits>

#include "common/block_range.h"
#include "common/prefix_ranges.h"
#include "common/sequence.h"
#include "common/split.h"
#include "kernels/fwd_launch.h"
#include "kernels/sm90/fp8_ops_sm90.cuh"
#include "kernels/sm90/fwd_kernel_sm90.cuh"
#include "kernels/sm90/pipeline.cuh"
#include "kernels/sm90/tile_scheduler.cuh"
#include "kernels/sm90/tma_maps.h"

namespace flare {
namespace sm90 {

// What a fill loads into a stage.
enum Sm90Fill { kFillK, kFillV, kFillKV };

// Producer state of one thread: how many K/V stage fills and Q fills it has made (the ring use
// counters of pipeline.cuh). DynamicTiles: the consumers learn their tiles from the producer:
// every tile with query rows takes the Q buffer (one without key blocks takes it without data,
// so that the consumers write its empty output: zero rows and LSE -inf), and a final -1 takes
// it once more; q_fills counts these publications too.
template <typename T, typename Tr, bool Paged, bool DynamicTiles>
struct Sm90Producer {
  static constexpr int kHeadDim = Tr::kHeadDim, kBlockM = Tr::kBlockM, kBlockN = Tr::kBlockN;
  // Elements of q, k and v: T, or e4m3 codes (Tr::kFp8).
  using In = std::conditional_t<Tr::kFp8, uint8_t, T>;
  // Named barrier of the producer threads (the kernel's: ids 1 .. kConsumerWGs are the
  // consumers' turns).
  static constexpr int kBarrier = 1 + Tr::kConsumerWGs;
  // Paged fills: the rows' pages, looked up once per fill (PagedFillRows).
  struct NoPagedRows {};
  using PagedRows =
      std::conditional_t<Paged, PagedFillRows<kHeadDim, kBlockN, 128>, NoPagedRows>;

  const FwdLaunch& launch;
  const Sm90TensorMaps& maps;
  const Sm90WsSmem<Tr>& smem;
  Sm90PublishedTile* published;  // DynamicTiles: the tile the Q buffer holds
  int m_units;       // groups of Tr::kClusterM query blocks per head (sm90_cta_tile)
  int heads_per_kv;  // query heads per K/V head
  int rank;          // this CTA's rank in its cluster (0 without one)
  int it = 0;       // K/V stage fills so far (over all tiles)
  int q_fills = 0;  // Q fills so far

  // DynamicTiles: the Q buffer, once the consumers released its previous use, published with
  // the tile it holds and its key blocks (m_block -1: none, the consumers stop). Thread 0 writes
  // the tile before its own arrival on full (a release, counted besides the producer threads'
  // data arrivals); the caller still makes the data arrivals.
  __device__ __forceinline__ void publish(const Sm90Tile& at, const BlockRange& range,
                                          bool prefix) {
    smem.q_ring.producer_acquire(q_fills);
    ++q_fills;
    if (threadIdx.x == 0) {
      published->at = at;
      published->range = range;
      published->prefix = prefix;
      mbarrier_arrive(smem.q_ring.full(0));  // release: orders the tile before the consumers' wait
    }
  }

  // The Q tile of query rows [m0, m0 + kBlockM) of `head` into the Q buffer. By TMA when the
  // tile lies inside the sequence (or the map's rows end with it); other partial tiles by
  // cp.async, which zero-fills the rows past the sequence.
  __device__ __forceinline__ void load_q(const SequenceInfo& seq, int m0, int head,
                                         int batch) const {
    const flare_mha_fwd_params& p = launch.p;
    if (sm90_q_tile_by_tma(maps, m0, kBlockM, seq.seqlen_q)) {
      if (threadIdx.x == 0) {
        const uint32_t bar = smem.q_ring.full(0);
        mbarrier_arrive_expect_tx(bar, Tr::kSmemQ);
        const int row = int(seq.q_row0) + m0;
        const int q_batch = is_varlen(p) ? 0 : batch;  // q_offset's terms
        // Tr::kBoxes boxes of Tr::kBoxCols columns, box a filling the tile's [rows][kAtomBytes]
        // slab a (the swizzled K-major layout, fp8_layout.h); the same for K and V below.
#pragma unroll
        for (int a = 0; a < Tr::kBoxes; ++a)
          tma_load_4d(smem.q + a * kBlockM * Tr::kAtomBytes, &maps.q, a * Tr::kBoxCols, row,
                      head, q_batch, bar);
      } else {
        mbarrier_arrive(smem.q_ring.full(0));
      }
    } else {
      const In* q = static_cast<const In*>(p.q);
      if constexpr (Tr::kFp8) {  // (TileRows: see load_swizzled)
        load_swizzled<kHeadDim, kBlockM, 128>(
            smem.q, q, p.head_dim,
            TileRows{q_offset(p, seq, m0, head), p.q_row_stride, seq.seqlen_q - m0});
      } else {
        load_swizzled<kHeadDim, kBlockM, 128>(smem.q, q, p.head_dim, [&](int r) -> int64_t {
          return m0 + r < seq.seqlen_q ? q_offset(p, seq, m0 + r, head) : -1;
        });
      }
      cp_async_mbarrier_arrive(smem.q_ring.full(0));
    }
  }

  // Loads tile `tile`: Q and its key blocks, from the last to the first (with a cluster: the
  // blocks of all its CTAs' rows, each CTA copying its share of every stage into all of them).
  // Tiles past the sequence are skipped (a cluster's when all of its tiles are); DynamicTiles:
  // tiles without key blocks are published without data.
  __device__ __forceinline__ void load(int tile) {
    const flare_mha_fwd_params& p = launch.p;
    const Sm90Tile at =
        sm90_cta_tile<Tr::kClusterM>(tile, m_units, p.num_heads, launch.num_splits, rank);
    const int head = at.head, batch = at.batch, split = at.split;
    const SequenceInfo seq = sequence_info(p, batch);
    const int m0 = at.m_block * kBlockM;
    const int c0 = m0 - rank * kBlockM;  // the cluster's first row
    if (c0 >= seq.seqlen_q) return;
    const int head_k = head / heads_per_kv;
    const MaskSpec mask = sequence_mask(p, seq);
    const TileKeys keys =
        tile_key_blocks(p, batch, mask, c0, c0 + Tr::kClusterM * kBlockM, kBlockN);
    BlockRange range = keys.range;
    if (launch.num_splits > 1) range = split_block_range(range, launch.num_splits, split);
    const int num_blocks = range.end - range.begin;
    if (num_blocks <= 0) {
      if constexpr (DynamicTiles) {
        publish(at, range, keys.prefix);
        mbarrier_arrive(smem.q_ring.full(0));
      }
      return;
    }
    const In* k = static_cast<const In*>(p.k);
    const In* v = static_cast<const In*>(p.v);
    const int64_t k_base = Paged ? 0 : k_offset(p, seq, 0, head_k);
    const int64_t v_base = Paged ? 0 : v_offset(p, seq, 0, head_k);
    // Fill `fill` (over all tiles) of K, V or both (kWhich: kFillK, kFillV, kFillKV) with key
    // block `n_block`, once the consumers released that stage's previous use. Both share the K
    // ring; V alone has its own (Tr::kSeparateKV).
    auto fill_stage = [&](auto which, int fill, int n_block) {
      constexpr int kWhich = decltype(which)::value;
      constexpr bool kWithK = kWhich != kFillV, kWithV = kWhich != kFillK;
      const auto& ring = kWithK ? smem.k_ring : smem.v_ring;
      const int s = ring.stage(fill);
      const int n0 = n_block * kBlockN;
      // Paged: this lane's block-table read goes out before the stage wait, which hides it;
      // K and V of the block share it.
      [[maybe_unused]] PagedRows paged_rows;
      if constexpr (Paged) paged_rows.template lookup<kWithK, kWithV>(p, seq, n0, head_k);
      ring.producer_acquire(fill);
      const uint32_t bar = ring.full(s);
      if constexpr (Tr::kClusterM > 1) {
        // A cluster's blocks all go by TMA (the launcher's rule): thread 0 expects the whole
        // stage on this CTA's barrier and copies its share of the boxes into every
        // CTA of the cluster; the others' shares complete on this barrier too.
        if (threadIdx.x == 0) {
          mbarrier_arrive_expect_tx(bar, (kWithK + kWithV) * Tr::kSmemKV);
          const int row = int(seq.k_row0) + n0;
          constexpr int kBoxes = Tr::kBoxes / Tr::kClusterM;
          constexpr uint16_t kAllCtas = uint16_t((1u << Tr::kClusterM) - 1);
#pragma unroll
          for (int b = 0; b < kBoxes; ++b) {
            const int a = rank * kBoxes + b;
            if (kWithK)
              tma_load_4d_multicast(smem.k_stage(s) + a * kBlockN * Tr::kAtomBytes, &maps.k,
                                    a * Tr::kBoxCols, row, head_k, seq.kv_batch, bar, kAllCtas);
            if (kWithV)
              tma_load_4d_multicast(smem.v_stage(s) + a * kBlockN * Tr::kAtomBytes, &maps.v,
                                    a * Tr::kBoxCols, row, head_k, seq.kv_batch, bar, kAllCtas);
          }
        } else {
          mbarrier_arrive(bar);
        }
        return;
      }
      if constexpr (!Paged) {
        // By TMA (sm90_kv_block_by_tma): one thread copies the block.
        if (sm90_kv_block_by_tma(maps, Paged, n0, kBlockN, seq.seqlen_k)) {
          if (threadIdx.x == 0) {
            mbarrier_arrive_expect_tx(bar, (kWithK + kWithV) * Tr::kSmemKV);
            const int row = int(seq.k_row0) + n0;
#pragma unroll
            for (int a = 0; a < Tr::kBoxes; ++a) {  // K's and V's boxes a in turn
              const int slab = a * kBlockN * Tr::kAtomBytes, col = a * Tr::kBoxCols;
              if (kWithK)
                tma_load_4d(smem.k_stage(s) + slab, &maps.k, col, row, head_k, seq.kv_batch, bar);
              if (kWithV)
                tma_load_4d(smem.v_stage(s) + slab, &maps.v, col, row, head_k, seq.kv_batch, bar);
            }
          } else {
            mbarrier_arrive(bar);
          }
          return;
        }
      }
      if constexpr (Paged) {
        paged_rows.template load<kWithK, kWithV>(p, smem.k_stage(s), smem.v_stage(s), k, v, n0,
                                                 seq.seqlen_k);
      } else {
        if constexpr (Tr::kFp8) {  // K only: V's rows go through the staging tiles (TileRows:
                                   // see load_swizzled)
          if (kWithK)
            load_swizzled<kHeadDim, kBlockN, 128>(
                smem.k_stage(s), k, p.head_dim,
                TileRows{k_base + n0 * p.k_row_stride, p.k_row_stride, seq.seqlen_k - n0});
        } else {
          if (kWithK)
            load_swizzled<kHeadDim, kBlockN, 128>(smem.k_stage(s), k, p.head_dim,
                                                  [&](int r) -> int64_t {
                                                    if (n0 + r >= seq.seqlen_k) return -1;
                                                    return k_base + (n0 + r) * p.k_row_stride;
                                                  });
          if (kWithV)
            load_swizzled<kHeadDim, kBlockN, 128>(smem.v_stage(s), v, sm90_v_columns<kHeadDim>(p),
                                                  [&](int r) -> int64_t {
                                                    if (n0 + r >= seq.seqlen_k) return -1;
                                                    return v_base + (n0 + r) * p.v_row_stride;
                                                  });
        }
      }
      cp_async_mbarrier_arrive(bar);
    };
    using FillK = std::integral_constant<int, kFillK>;
    using FillV = std::integral_constant<int, kFillV>;
    using FillKV = std::integral_constant<int, kFillKV>;
    auto block_of = [&](int i) { return range.end - 1 - i; };  // blocks run from the last
    if constexpr (Tr::kFp8) {
      load_fp8(at, seq, m0, range, keys.prefix, block_of, num_blocks, fill_stage, v, v_base);
      return;
    }
    // Separate K and V: K_0, Q, then K_i before V_(i-1) (the consumers issue QK^T_i with
    // P V_(i-1)), V last. K_0 goes first so that it loads while the producer waits for the Q
    // buffer; K_i does not wait behind V_(i-1)'s stage, which is freed one softmax later.
    if constexpr (Tr::kSeparateKV) fill_stage(FillK{}, it, block_of(0));
    // The Q buffer: the last QK^T of the tile that used it before must be done with it.
    if constexpr (DynamicTiles) {
      publish(at, range, keys.prefix);  // the same wait, and the tile
    } else {
      smem.q_ring.producer_acquire(q_fills);
      ++q_fills;
    }
    load_q(seq, m0, head, batch);
    if constexpr (Tr::kSeparateKV) {
      for (int i = 1; i < num_blocks; ++i) {
        fill_stage(FillK{}, it + i, block_of(i));
        fill_stage(FillV{}, it + i - 1, block_of(i - 1));
      }
      fill_stage(FillV{}, it + num_blocks - 1, block_of(num_blocks - 1));
    } else {
      for (int i = 0; i < num_blocks; ++i)
        fill_stage(FillKV{}, it + i, block_of(i));
    }
    it += num_blocks;
  }

  // Tr::kFp8: the tile's fills in the order the consumers take them, K_0, Q, then K_i before
  // V_(i-1). K and Q by the generic fills (TMA where the maps allow, else cp.async). V block j's
  // rows land in staging tile u % 2 (u = it + j, the staging tiles' use), one block ahead of
  // its transposed store, completing on that tile's full barrier as a ring's stage does (TMA:
  // thread 0's expected bytes; cp.async: every thread's arrival once its copies land). The
  // threads wait on it, store the rows transposed into V stage it + j (fp8_ops_sm90.cuh) and
  // arrive on that stage's full barrier. One producers' barrier per key block, before each
  // staging fill: every thread is done reading staging tile u % 2 (use u - 2's store, of this
  // tile or the last) before use u fills it.
  template <typename BlockOf, typename FillStage>
  __device__ __forceinline__ void load_fp8(const Sm90Tile& at, const SequenceInfo& seq, int m0,
                                           const BlockRange& range, bool prefix,
                                           BlockOf block_of, int num_blocks,
                                           FillStage& fill_stage, const In* v, int64_t v_base) {
    const flare_mha_fwd_params& p = launch.p;
    using FillK = std::integral_constant<int, kFillK>;
    auto stage_v = [&](int j) {
      named_barrier_sync(kBarrier, 128);
      const int u = it + j;
      const uint32_t dst = smem.v_staging(u % Tr::kVStaging);
      const uint32_t bar = smem.staging_full(u % Tr::kVStaging);
      const int n0 = block_of(j) * kBlockN;
      if (sm90_kv_block_by_tma(maps, false, n0, kBlockN, seq.seqlen_k)) {
        if (threadIdx.x == 0) {
          mbarrier_arrive_expect_tx(bar, Tr::kSmemKV);
          const int row = int(seq.k_row0) + n0, head_k = at.head / heads_per_kv;
#pragma unroll
          for (int a = 0; a < Tr::kBoxes; ++a)
            tma_load_4d(dst + a * kBlockN * Tr::kAtomBytes, &maps.v, a * Tr::kBoxCols, row,
                        head_k, seq.kv_batch, bar);
        } else {
          mbarrier_arrive(bar);
        }
        return;
      }
      load_swizzled<kHeadDim, kBlockN, 128>(
          dst, v, p.head_dim,
          TileRows{v_base + n0 * p.v_row_stride, p.v_row_stride, seq.seqlen_k - n0});
      cp_async_mbarrier_arrive(bar);
    };
    auto store_vt = [&](int j) {
      const int u = it + j;
      mbarrier_wait(smem.staging_full(u % Tr::kVStaging), (u / Tr::kVStaging) & 1);
      const auto& ring = smem.v_ring;
      const int s = ring.stage(u);
      ring.producer_acquire(u);
      transpose_v_fp8<kHeadDim, kBlockN>(smem.v_staging(u % Tr::kVStaging), smem.v_stage(s),
                                         int(threadIdx.x) / 32, int(threadIdx.x) % 32);
      // The stores are generic-proxy writes that wgmma (the async proxy) reads: fenced here as
      // well as after the consumers' wait (wait_kv), the writer-side fence being CUTLASS's and
      // FlashAttention-3's pattern for such stores.
      fence_proxy_async();
      mbarrier_arrive(ring.full(s));
    };
    fill_stage(FillK{}, it, block_of(0));
    stage_v(0);
    if constexpr (DynamicTiles) {
      publish(at, range, prefix);
    } else {
      smem.q_ring.producer_acquire(q_fills);
      ++q_fills;
    }
    load_q(seq, m0, at.head, at.batch);
    for (int i = 1; i < num_blocks; ++i) {
      fill_stage(FillK{}, it + i, block_of(i));
      stage_v(i);
      store_vt(i - 1);
    }
    store_vt(num_blocks - 1);
    it += num_blocks;
  }

  // After the last tile. DynamicTiles: -1 through the Q buffer (no data) stops the consumers.
  __device__ __forceinline__ void finish() {
    if constexpr (DynamicTiles) {
      publish(Sm90Tile{-1, 0, 0, 0}, BlockRange{0, 0}, false);
      mbarrier_arrive(smem.q_ring.full(0));
    }
    sm80::cp_async_wait<0>();
  }
};

}  // namespace sm90
}  // namespace flare
