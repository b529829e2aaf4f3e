// Hopper forward kernel, warp-specialised (sm90a). Warpgroup 0 produces: it loads each tile's
// Q and K/V blocks into shared memory (producer_sm90.cuh) and hands them over through mbarrier
// rings (pipeline.cuh). Warpgroups 1 .. ConsumerWGs consume: each runs the tile's key blocks for
// its 64 query rows (mainloop_sm90.cuh: S = QK^T, online softmax, O += PV, optionally taking
// turns with the others) and writes its rows (epilogue_sm90.cuh). Tiles come one per CTA or,
// for persistent CTAs, from the launch's ticket counter (tile_scheduler.cuh).
// Head dim 512 (split O): the two consumer warpgroups share one 64-row tile. Each computes the
// partial S of its half of the head dims, the two exchange their partials through shared memory
// and each adds the other's, so both hold the same S and softmax; each then accumulates P V for
// its half of O's columns (O of 64 x 512 fp32 would not fit one warpgroup's registers).
#pragma once
#include <type_traits>

#include "kernels/sm90/epilogue_sm90.cuh"
#include "kernels/sm90/mainloop_sm90.cuh"
#include "kernels/sm90/pipeline.cuh"
#include "kernels/sm90/producer_sm90.cuh"
#include "kernels/sm90/tile_scheduler.cuh"
#include "kernels/sm90/tma_maps.h"
#include "kernels/sm90/variant.h"

namespace flare {
namespace sm90 {

// BlockN: keys per main-loop block (variant.h): sm90_default_block_n (d256: 80-key blocks, so
// that two stages of 40 KB K + 40 KB V fit beside the 64 KB Q tile), or sm90_long_block_n for
// long rows (d64: 192, with three stages; d128: 176, with two).
// ConsumerWGs: 2, or 3 (sm90_max_consumer_wgs: d64, 192-row tiles, 160 registers per consumer
// thread), each owning 64 query rows of the tile; at d512 two that share
// the tile's 64 rows and split QK^T's head dims and O's columns (sm90_ws_splits_o).
// ClusterM: CTAs per cluster (1, or 2: consecutive query tiles of one head that share every
// K/V stage, each CTA's producer copying its half of a stage into both by TMA multicast: half
// the K/V reads from L2 per tile; pipeline.cuh).
// Fp8: q, k, v hold e4m3 codes (the FP8 prefill, fwd_fp8_sm90.cuh): 1-byte tiles, e4m3 wgmma,
// V stored transposed by the producer threads from a staging tile, which Q, K and V's rows
// reach by TMA or cp.async as the 16-bit kernels' tiles do.
template <int HeadDim, int BlockN = sm90_default_block_n(HeadDim), int ConsumerWGs = 2,
          int ClusterM = 1, bool Fp8 = false>
struct Sm90WsTraits {
  static constexpr int kHeadDim = HeadDim;
  static constexpr int kConsumerWGs = ConsumerWGs;
  static constexpr int kClusterM = ClusterM;
  static constexpr bool kFp8 = Fp8;
  static constexpr int kElemBytes = Fp8 ? 1 : 2;  // of q, k and v
  static_assert(!Fp8 || (ConsumerWGs == 2 && ClusterM == 1 && BlockN % 32 == 0),
                "FP8: two consumer warpgroups, no clusters, k32 steps of P V");
  static_assert(ClusterM == 1 || (HeadDim / 64) % ClusterM == 0, "whole TMA boxes per CTA");
  static constexpr int kConsumerThreads = 128 * ConsumerWGs;
  static constexpr int kBlockM = sm90_ws_block_m(HeadDim, ConsumerWGs), kBlockN = BlockN;
  // Split O: consumer warpgroup wg computes the partial S = Q K^T of the 64 rows over head
  // dims [wg * kQkDims, wg * kQkDims + kQkDims), the two exchange partials through shared memory
  // (kSmemExchange) and each adds the other's, then both run the same softmax and each
  // accumulates P V for kOColumns of V's columns, starting at column wg * kOColumns.
  static constexpr bool kSplitO = sm90_ws_splits_o(HeadDim);
  static constexpr int kOColumns = kSplitO ? HeadDim / ConsumerWGs : HeadDim;
  static constexpr int kQkDims = kSplitO ? HeadDim / ConsumerWGs : HeadDim;
  static_assert(!kSplitO || (ConsumerWGs == 2 && kOColumns % 64 == 0 && kQkDims % 64 == 0),
                "O and QK^T split in 64-column atoms");
  // Ping-pong (Sm90PingPong) where the variant asks for it; never with split O, where the
  // exchange makes each warpgroup's softmax wait for the other's QK^T (sm90_ws_takes_turns).
  static constexpr bool kTurns = sm90_ws_takes_turns(HeadDim);
  // Named barriers: 1 .. ConsumerWGs are the consumers' turns (Sm90PingPong), 1 + ConsumerWGs
  // the producer threads' (producer_sm90.cuh, tile_scheduler.cuh), 2 + ConsumerWGs the split-O
  // exchange of the two consumer warpgroups.
  static constexpr int kExchangeBarrier = 2 + ConsumerWGs;
  static constexpr int kThreads = 128 + kConsumerThreads;
  // Each consumer warpgroup runs only the key blocks its own 64 rows see: with three
  // warpgroups (a 192-row tile's diagonal spans two 128-key blocks) and at d256 (80-key blocks
  // end inside a 128-row tile's diagonal). Elsewhere a block boundary falls on a warpgroup's
  // rows only when the causal diagonal is offset (seqlen_q != seqlen_k), or with the long
  // blocks, which the planner takes for rows without a causal edge, and the per-tile range
  // arithmetic is left out.
  // (Split O: the warpgroups share their rows, hence their blocks. A cluster's CTAs run the
  // blocks of all its tiles, each computing those its own rows see.)
  static constexpr bool kOwnBlocks =
      ClusterM > 1 || (!kSplitO && (ConsumerWGs > 2 || HeadDim > 128));
  static constexpr int kStages = Fp8                ? 3
                                 : HeadDim <= 64    ? (BlockN > 128 ? 3 : 4)
                                 : HeadDim <= 128   ? (BlockN > 128 ? 2 : 3)
                                                    : 2;
  // TMA boxes (tma_maps.h): kBoxCols columns, one swizzle atom row of kAtomBytes; kBoxes per
  // row of the head dim, each filling the tile's next [rows][kAtomBytes] slab.
  static constexpr int kBoxCols = tma_box_cols(HeadDim, kElemBytes);
  static constexpr int kAtomBytes = kBoxCols * kElemBytes;
  static constexpr int kBoxes = HeadDim / kBoxCols;
  static constexpr int kSmemQ = kBlockM * HeadDim * kElemBytes;   // the Q tile
  static constexpr int kSmemKV = kBlockN * HeadDim * kElemBytes;  // one K or V (V^T) stage
  // Split O: the partial S exchange, one buffer per consumer warpgroup and parity (consecutive
  // exchanges alternate, so one named barrier per key block suffices): kBlockM x kBlockN fp32
  // each, 4 x 8 KB at d512.
  static constexpr int kSmemExchangeBuffer = kSplitO ? kBlockM * kBlockN * 4 : 0;
  static constexpr int kSmemExchange = 2 * ConsumerWGs * kSmemExchangeBuffer;
  // Two stages (d128's long block, d192 / d256 / d512): K and V of a stage have barriers of
  // their own, so K's slot is refilled once its QK^T is done while V's still waits for the
  // softmax and P V. With three or four stages one barrier pair covers K and V of a stage
  // (docs/decisions.md). FP8: V^T lands by the producer threads' own stores, after K: barriers
  // of their own.
  static constexpr bool kSeparateKV = Fp8 || kStages == 2;
  // FP8: V's rows land in one of two staging tiles of the producer's own, from which the
  // producer threads store them transposed into a V stage (producer_sm90.cuh).
  static constexpr int kVStaging = Fp8 ? 2 : 0;
  // full/empty of Q, of each K (and V) stage, of each V stage, full of each V staging tile
  // (pipeline.cuh's layout)
  static constexpr int kBarriers = 2 + 4 * kStages + kVStaging;
  static constexpr int kSmemBytes =
      kSmemQ + (2 * kStages + kVStaging) * kSmemKV + kSmemExchange + 8 * kBarriers + 1024;
  // 128 producer + 256 consumer threads within the 64K registers of the SM. Head dim 256
  // needs 240 per consumer (128 O accumulators): its producer then has 24, enough for TMA
  // issue; the cp.async fallback spills there, so paged KV stays on the all-threads kernel (on
  // the mma.sync kernel at d512, which has 128 O accumulators per consumer too).
  // Three consumer warpgroups: 160 each, the producer 24. FP8: the producer's cp.async fills
  // (the d256 Q tile's 16 copies per thread) and V^T stores need more than TMA issue, the
  // consumers' S and P are smaller (1-byte P fragments; 64-key blocks at d256): 96 and 200,
  // the split without spills on either side (sm_90a, nvcc 13).
  static constexpr int kProducerRegs = Fp8 ? 96 : ConsumerWGs > 2 || HeadDim > 128 ? 24 : 56;
  static constexpr int kConsumerRegs =
      Fp8 ? 200 : ConsumerWGs > 2 ? 160 : HeadDim <= 128 ? 224 : 240;
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per CTA");
  // TMA boxes are kBoxCols columns x kBlockM (Q) or kBlockN (K/V) rows: at most 256 rows.
  static_assert(kBlockM <= 256 && kBlockN <= 256 && HeadDim % kBoxCols == 0, "TMA box");
  static_assert(Fp8 || (kBoxCols == 64 && kAtomBytes == 128), "16-bit: 128-byte atoms");
  // Within what the launch bounds give the CTA (the compiler's per-thread cap, a multiple of
  // 8, times the threads): 168 x 384 with two consumer warpgroups, 128 x 512 with three.
  static_assert(128 * kProducerRegs + kConsumerThreads * kConsumerRegs <=
                    kThreads * ((65536 / kThreads) & ~7),
                "register file");
};

// The producer gives registers to the consumers (setmaxnreg). No CTA barrier after the
// barrier initialisation: the consumer warpgroups drift apart, so one's softmax runs under the
// others' GEMMs. DynamicTiles: persistent CTAs (paged too); the producer takes the
// tiles from the ticket counter and publishes each to the consumers with the Q buffer.
// Otherwise one tile per CTA, which producer and consumers decode alike; or, with ClusterM > 1
// (launched in clusters of ClusterM CTAs; unpaged, every K/V block by TMA), one tile per CTA of
// a cluster whose CTAs share the K/V stages of all their tiles' key blocks.
template <typename T, int HeadDim, bool Paged, bool DynamicTiles = false,
          int BlockN = sm90_default_block_n(HeadDim), int ConsumerWGs = 2, int ClusterM = 1,
          bool Fp8 = false>
__global__ void __launch_bounds__(128 + 128 * ConsumerWGs, 1)
    fwd_kernel_sm90_ws(const __grid_constant__ FwdLaunch launch,
                       const __grid_constant__ Sm90TensorMaps maps, int pingpong, int m_blocks) {
  using Tr = Sm90WsTraits<HeadDim, BlockN, ConsumerWGs, ClusterM, Fp8>;
  static_assert(ClusterM == 1 || (!Paged && !DynamicTiles), "clusters: TMA K/V, static tiles");
  static_assert(!Fp8 || !Paged, "FP8: unpaged");
  using Scheduler =
      std::conditional_t<DynamicTiles, DynamicTileScheduler, StaticTileScheduler<ClusterM>>;
  constexpr bool kCluster = ClusterM > 1;
  const flare_mha_fwd_params& p = launch.p;
  // Tile ids count groups of ClusterM query blocks (sm90_cta_tile).
  const int m_units = (m_blocks + ClusterM - 1) / ClusterM;
  const int num_tiles = m_units * p.num_heads * p.batch * launch.num_splits;
  const int heads_per_kv = p.num_heads / p.num_heads_k;
  const int rank = kCluster ? int(cluster_cta_rank()) : 0;
  // Named barrier of the producer threads (Sm90WsTraits lists the kernel's named barriers).
  constexpr int kProducerBarrier = 1 + Tr::kConsumerWGs;
  __shared__ Sm90PublishedTile s_tile;  // DynamicTiles: the tile the Q buffer holds
  __shared__ typename Scheduler::SharedStorage s_sched;
  static_assert(Tr::kSmemBytes + sizeof(s_tile) + sizeof(s_sched) <= 227 * 1024,
                "shared memory per CTA");
  extern __shared__ unsigned char smem_raw[];
  const Sm90WsSmem<Tr> smem(smem_raw);

  // One producer warp when every copy goes by TMA, four otherwise (producer_sm90.cuh); FP8:
  // four, whose stores transpose V.
  const int producer_threads = !Fp8 && sm90_all_copies_by_tma(maps, Paged) ? 32 : 128;
  // DynamicTiles: the Q buffer's full barrier also counts thread 0's tile publication.
  if (threadIdx.x == 0) {
    smem.init_barriers(producer_threads, producer_threads + DynamicTiles);
    if constexpr (kCluster) fence_mbarrier_init_cluster();
  }
  // A cluster's CTAs arrive on each other's barriers and copy into each other's stages: every
  // barrier of the cluster is initialised before any of that, and no CTA exits before the
  // others are done with it (the cluster_sync at each role's end).
  if constexpr (kCluster) cluster_sync();
  else __syncthreads();

  const int role = __shfl_sync(0xffffffffu, int(threadIdx.x) / 128, 0);
  if (role == 0) {
    setmaxnreg_dec<Tr::kProducerRegs>();
    if (int(threadIdx.x) >= producer_threads) {  // idle producer warps
      if constexpr (kCluster) cluster_sync();
      return;
    }
    Sm90Producer<T, Tr, Paged, DynamicTiles> producer{launch, maps, smem, &s_tile, m_units,
                                                      heads_per_kv, rank};
    Scheduler sched(launch, num_tiles, s_sched, producer_threads, kProducerBarrier);
    for (int tile = sched.initial_work(); sched.is_valid(tile); tile = sched.next_work(tile))
      producer.load(tile);
    producer.finish();
    if constexpr (kCluster) cluster_sync();
  } else {  // the other branch of the same if, so that setmaxnreg applies to it
    setmaxnreg_inc<Tr::kConsumerRegs>();
    Sm90Mainloop<T, Tr, Paged, DynamicTiles> mainloop(launch, maps, smem, &s_tile,
                                                      int(threadIdx.x) - 128,
                                                      Tr::kTurns ? pingpong : 0);
    mainloop.turns.start();
    // The producer's tiles in its order: one (the CTA's, or its cluster's), or the published
    // ones up to the -1.
    for (int tile = int(blockIdx.x) / ClusterM; DynamicTiles || tile < num_tiles;
         tile += int(gridDim.x) / ClusterM) {
      Sm90Tile at;
      BlockRange range;
      bool prefix = false;
      if constexpr (DynamicTiles) {
        if (!mainloop.receive(at, range, prefix)) break;
      } else {
        at = sm90_cta_tile<ClusterM>(tile, m_units, p.num_heads, launch.num_splits, rank);
      }
      const SequenceInfo seq = sequence_info(p, at.batch);
      const int m0 = at.m_block * Tr::kBlockM;
      const MaskSpec mask = sequence_mask(p, seq);
      if constexpr (!DynamicTiles) {
        // The key blocks of the cluster's rows (this CTA's alone when ClusterM is 1).
        const int c0 = m0 - rank * Tr::kBlockM;
        if (c0 >= seq.seqlen_q) continue;
        const TileKeys keys =
            tile_key_blocks(p, at.batch, mask, c0, c0 + ClusterM * Tr::kBlockM, Tr::kBlockN);
        range = keys.range;
        prefix = keys.prefix;
        if (launch.num_splits > 1) range = split_block_range(range, launch.num_splits, at.split);
      }
      // S = QK^T, softmax, O += PV over the tile's key blocks; then the epilogue stores the rows.
      mainloop.mma(at, seq, mask, m0, range, prefix,
                   [&](const auto& acc_o, const Sm90Softmax& softmax) {
                     int col0 = 0;  // (a literal where O is not split: see o_column0)
                     if constexpr (Tr::kSplitO) col0 = mainloop.o_column0();
                     // FP8: the tile's units, the descales of its (batch, K/V head) folded in.
                     float unit_log2 = mainloop.units.unit_log2;
                     if constexpr (Tr::kFp8) unit_log2 = mainloop.tile_unit_log2;
                     store_output_rows<T, HeadDim, Tr::kOColumns>(
                         launch, seq, acc_o, softmax, unit_log2, mainloop.row_base(m0),
                         mainloop.t, at.batch, at.head, at.split, col0);
                   });
    }
    mainloop.turns.finish();  // the last warpgroup's final hand-over
    if constexpr (kCluster) cluster_sync();
  }
}

}  // namespace sm90
}  // namespace flare
