// Hopper forward kernel, warp-specialised (sm90a): a producer warpgroup fills the Q buffer and
// a ring of K/V stages (TMA where the tensor maps allow, tma_maps.h; cp.async otherwise)
// published by mbarriers; two (or at d64 three) consumer warpgroups run the wgmma steps of
// softmax_sm90.cuh, optionally taking turns (ping-pong), over tiles assigned one per CTA or
// taken by persistent CTAs from a ticket counter (tile_scheduler.cuh).
#pragma once
#include <type_traits>

#include "kernels/sm90/fwd_kernel_sm90.cuh"
#include "kernels/sm90/tile_scheduler.cuh"
#include "kernels/sm90/tma_maps.h"
#include "kernels/sm90/variant.h"

namespace flare {
namespace sm90 {

// BlockN: keys per main-loop block (variant.h): sm90_default_block_n (d256: 80-key blocks, two
// stages of 40 KB K + 40 KB V beside the 64 KB Q, so the per-block softmax and rescale cost is
// spread over 25% more keys than with 64), or sm90_long_block_n for long rows (d64: 192, with
// three stages).
// ConsumerWGs: 2, or 3 (sm90_max_consumer_wgs: d64, 192-row tiles, P single-buffered to fit 160
// registers per consumer thread), each owning 64 query rows of the tile.
template <int HeadDim, int BlockN = sm90_default_block_n(HeadDim), int ConsumerWGs = 2>
struct Sm90WsTraits {
  static constexpr int kConsumerWGs = ConsumerWGs;
  static constexpr int kConsumerThreads = 128 * ConsumerWGs;
  static constexpr int kBlockM = 64 * ConsumerWGs, kBlockN = BlockN;
  static constexpr int kThreads = 128 + kConsumerThreads;
  static constexpr int kQBuffers = 1;
  // With two consumer warpgroups, P is double-buffered: block i's fragments are packed during
  // its softmax while P V(i-1) still reads the previous ones. Three warpgroups have 160
  // registers each: block i's probabilities stay in the fp32 scores until P V(i-1) is done.
  static constexpr bool kSingleP = ConsumerWGs > 2;
  // Each consumer warpgroup runs only the key blocks its own 64 rows see (v22): with three
  // warpgroups (a 192-row tile's diagonal spans two 128-key blocks) and at d256 (80-key blocks
  // end inside a 128-row tile's diagonal). Elsewhere a block boundary falls on a warpgroup's
  // rows only when the causal diagonal is offset (seqlen_q != seqlen_k), and the per-tile range
  // arithmetic is left out.
  static constexpr bool kOwnBlocks = ConsumerWGs > 2 || HeadDim > 128;
  static constexpr int kStages = BlockN > 128 ? 3 : HeadDim <= 64 ? 4 : HeadDim <= 128 ? 3 : 2;
  static constexpr int kSmemQ = kBlockM * HeadDim * 2;   // the Q buffer
  static constexpr int kSmemKV = kBlockN * HeadDim * 2;  // one K or V stage
  // Head dim 256 (two stages): K and V of a stage have barriers of their own, so K's slot is
  // refilled once its QK^T is done while V's still waits for the softmax and P V: +18..33% from
  // 1k keys. d64/d128 (3-4 stages) measured 2-5% slower with the extra waits and arrivals, so
  // one barrier pair covers K and V of a stage there.
  static constexpr bool kSeparateKV = HeadDim > 128;
  // full/empty[Q buffer], full/empty[K (and V) stage], full/empty[V stage]
  static constexpr int kBarriers = 2 * kQBuffers + (kSeparateKV ? 4 : 2) * kStages;
  static constexpr int kSmemBytes =
      kQBuffers * kSmemQ + 2 * kStages * kSmemKV + 8 * kBarriers + 1024;
  // 128 producer + 256 consumer threads within the 64K registers of the SM. Head dim 256
  // needs 240 per consumer (128 O accumulators): its producer then has 24, enough for TMA
  // issue; the cp.async fallback spills there, so paged KV stays on the all-threads kernel.
  // Three consumer warpgroups: 160 each, the producer 24.
  static constexpr int kProducerRegs = ConsumerWGs > 2 || HeadDim > 128 ? 24 : 56;
  static constexpr int kConsumerRegs = ConsumerWGs > 2 ? 160 : HeadDim <= 128 ? 224 : 240;
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per CTA");
  // TMA boxes are 64 columns x kBlockM (Q) or kBlockN (K/V) rows: at most 256 rows.
  static_assert(kBlockM <= 256 && kBlockN <= 256 && HeadDim % kTmaBoxCols == 0, "TMA box");
  // Within what the launch bounds give the CTA (the compiler's per-thread cap, a multiple of
  // 8, times the threads): 168 x 384 with two consumer warpgroups, 128 x 512 with three.
  static_assert(128 * kProducerRegs + kConsumerThreads * kConsumerRegs <=
                    kThreads * ((65536 / kThreads) & ~7),
                "register file");
};

// What a producer fill loads into a stage (fwd_kernel_sm90_ws).
enum Sm90Fill { kFillK, kFillV, kFillKV };

// Warp-specialised variant: warpgroup 0 produces (TMA or cp.async of Q into its buffer and of
// K/V into a ring of stages, each published by an mbarrier that completes when the copies land),
// warpgroups 1 .. ConsumerWGs consume and release a stage (a Q buffer) through a second
// mbarrier once its GEMMs (its last QK^T) are done; with kSeparateKV (d256) K and V of a stage
// have barrier pairs of their own, K released after its QK^T, V after its P V. No CTA barrier in the loop,
// so the consumers drift apart and one's softmax runs under the other's GEMMs; the producer
// gives registers to the consumers (setmaxnreg).
// DynamicTiles: persistent CTAs; the producer takes each next tile from the launch's ticket
// counter and tells the consumers which tile each Q buffer holds (see the producer);
// instantiated for unpaged launches only. Otherwise one tile per CTA.
template <typename T, int HeadDim, bool Paged, bool DynamicTiles = false,
          int BlockN = sm90_default_block_n(HeadDim), int ConsumerWGs = 2>
__global__ void __launch_bounds__(128 + 128 * ConsumerWGs, 1)
    fwd_kernel_sm90_ws(const __grid_constant__ FwdLaunch launch,
                       const __grid_constant__ Sm90TensorMaps maps, int pingpong, int m_blocks) {
  using Tr = Sm90WsTraits<HeadDim, BlockN, ConsumerWGs>;
  constexpr int QBuffers = Tr::kQBuffers;
  using Scheduler = std::conditional_t<DynamicTiles, DynamicTileScheduler, SingleTileScheduler>;
  constexpr int kBlockM = Tr::kBlockM, kBlockN = Tr::kBlockN;
  constexpr int kSTiles = kBlockN / 8;   // n8 column tiles of S per thread
  const flare_mha_fwd_params& p = launch.p;

  // Tiles in the scheduler's order (tile_scheduler.cuh); persistent CTAs load the next tile
  // while the current one's epilogue runs.
  const int num_tiles = m_blocks * p.num_heads * p.batch * launch.num_splits;
  const int heads_per_kv = p.num_heads / p.num_heads_k;
  // DynamicTiles: the tile whose Q buffer b holds (Sm90PublishedTile), written by producer
  // thread 0 before its own arrival on full_q(b) (a release, counted besides the producer
  // threads' data arrivals), read by the consumers after their full_q(b) wait; and the
  // scheduler's shared words. Unreferenced without DynamicTiles.
  // Named barrier of the producer threads (1 .. kConsumerWGs are the consumers' ping-pong).
  constexpr int kProducerBarrier = 1 + Tr::kConsumerWGs;
  __shared__ Sm90PublishedTile s_q_tile[QBuffers];
  __shared__ typename Scheduler::SharedStorage s_sched;
  static_assert(!DynamicTiles || Tr::kSmemBytes + sizeof(s_q_tile) + sizeof(s_sched) <= 227 * 1024,
                "shared memory per CTA");

  extern __shared__ unsigned char smem_raw[];
  const uint32_t smem_base = (sm80::smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t sQ0 = smem_base;  // Q buffer b at sQ0 + b * kSmemQ
  const uint32_t sK0 = sQ0 + Tr::kQBuffers * Tr::kSmemQ;
  const uint32_t sV0 = sK0 + Tr::kStages * Tr::kSmemKV;
  const uint32_t bar0 = sV0 + Tr::kStages * Tr::kSmemKV;
  auto full_q = [&](int b) { return bar0 + 8 * b; };
  auto empty_q = [&](int b) { return bar0 + 8 * (Tr::kQBuffers + b); };
  auto full_k = [&](int s) { return bar0 + 8 * (2 * Tr::kQBuffers + s); };
  auto full_v = [&](int s) { return bar0 + 8 * (2 * Tr::kQBuffers + Tr::kStages + s); };
  auto empty_k = [&](int s) { return bar0 + 8 * (2 * Tr::kQBuffers + 2 * Tr::kStages + s); };
  auto empty_v = [&](int s) { return bar0 + 8 * (2 * Tr::kQBuffers + 3 * Tr::kStages + s); };
  // Producer threads: one warp when every Q tile and K/V block goes by TMA (no paging, maps
  // whose rows end with the sequences): one thread issues each copy, and three more warps would
  // only repeat the tile bookkeeping and the barrier arrivals on the consumers' issue slots.
  // Four warps otherwise: the cp.async fills need them all.
  const bool tma_only = sm90_all_copies_by_tma(maps, Paged);
  const int producer_threads = tma_only ? 32 : 128;
  if (threadIdx.x == 0) {
    for (int b = 0; b < Tr::kQBuffers; ++b) {
      // One arrival per producer thread (+ TMA bytes); DynamicTiles: + thread 0's tile id.
      mbarrier_init(full_q(b), producer_threads + (DynamicTiles ? 1 : 0));
      // Every consumer thread is done with Q's last QK^T.
      mbarrier_init(empty_q(b), Tr::kConsumerThreads);
    }
    for (int s = 0; s < Tr::kStages; ++s) {
      mbarrier_init(full_k(s), producer_threads);  // one arrival per producer thread (+ TMA bytes)
      mbarrier_init(empty_k(s), Tr::kConsumerThreads);  // every consumer thread releases
      if (Tr::kSeparateKV) {
        mbarrier_init(full_v(s), producer_threads);
        mbarrier_init(empty_v(s), Tr::kConsumerThreads);
      }
    }
  }
  __syncthreads();
  const int role = __shfl_sync(0xffffffffu, int(threadIdx.x) / 128, 0);
  if (role == 0) {
    // Producer.
    setmaxnreg_dec<Tr::kProducerRegs>();
    if (int(threadIdx.x) >= producer_threads) return;  // idle producer warps (tma_only)
    int it = 0;       // K/V stage fills so far (over all tiles): stage it % kStages
    int q_fills = 0;  // Q fills so far (tiles with key blocks): buffer q_fills % kQBuffers
    // DynamicTiles. The consumers learn the tiles through the Q buffers: every tile with query
    // rows takes one (those without key blocks take it without data, so that the consumers
    // write their empty output), and a final -1 takes the next one. q_fills then counts these
    // publications, as the consumers' q_uses does.
    Scheduler sched(launch, num_tiles, s_sched, producer_threads, kProducerBarrier);
    // DynamicTiles: the next Q buffer in the ring (after the consumers released its previous
    // use), published with the tile it holds and its key blocks (m_block -1: none, the
    // consumers stop). The caller still makes the data arrivals (one per producer thread).
    auto publish_q_buffer = [&](const Sm90Tile& at, const BlockRange& range) -> int {
      const int qb = q_fills % Tr::kQBuffers;
      if (q_fills >= Tr::kQBuffers)
        mbarrier_wait(empty_q(qb), (q_fills / Tr::kQBuffers - 1) & 1);
      ++q_fills;
      if (threadIdx.x == 0) {
        s_q_tile[qb].at = at;
        s_q_tile[qb].range = range;
        mbarrier_arrive(full_q(qb));  // release: orders the tile id before the consumers' wait
      }
      return qb;
    };
    for (int tile = sched.initial_work(); sched.is_valid(tile); tile = sched.next_work(tile)) {
      const Sm90Tile at = sm90_tile(tile, m_blocks, p.num_heads, launch.num_splits);
      const int m_block = at.m_block, head = at.head, batch = at.batch, split = at.split;
      const SequenceInfo seq = sequence_info(p, batch);
      const int m0 = m_block * kBlockM;
      if (m0 >= seq.seqlen_q) continue;
      const int head_k = head / heads_per_kv;
      const MaskSpec mask = sequence_mask(p, seq);
      BlockRange range = key_block_range(mask, m0, m0 + kBlockM, kBlockN);
      if (launch.num_splits > 1) range = split_block_range(range, launch.num_splits, split);
      const int num_blocks = range.end - range.begin;
      if (num_blocks <= 0) {
        // DynamicTiles: a Q buffer without data, for the tile id (the consumers write its empty
        // output: zero rows and LSE -inf, or LSE -inf of an empty split).
        if constexpr (DynamicTiles) mbarrier_arrive(full_q(publish_q_buffer(at, range)));
        continue;
      }
      const T* k = static_cast<const T*>(p.k);
      const T* v = static_cast<const T*>(p.v);
      const int64_t k_base = Paged ? 0 : k_offset(p, seq, 0, head_k);
      const int64_t v_base = Paged ? 0 : v_offset(p, seq, 0, head_k);
      // Fill `fill` (over all tiles: stage fill % kStages) of K, V or both (Which: kFillK,
      // kFillV, kFillKV) with key block `n_block`, once the consumers released that stage's
      // previous use. Both share the K barriers; V alone has its own (kSeparateKV).
      auto fill_stage = [&](auto which, int fill, int n_block) {
        constexpr int kWhich = decltype(which)::value;
        constexpr bool kWithK = kWhich != kFillV, kWithV = kWhich != kFillK;
        const int s = fill % Tr::kStages;
        if (fill >= Tr::kStages)
          mbarrier_wait(kWithK ? empty_k(s) : empty_v(s), ((fill / Tr::kStages) + 1) & 1);
        const uint32_t bar = kWithK ? full_k(s) : full_v(s);
        const int n0 = n_block * kBlockN;
        if constexpr (!Paged) {
          // By TMA (sm90_kv_block_by_tma): one thread copies the block (the other producer
          // threads still arrive: the barrier counts one arrival per producer thread).
          if (sm90_kv_block_by_tma(maps, Paged, n0, kBlockN, seq.seqlen_k)) {
            if (threadIdx.x == 0) {
              mbarrier_arrive_expect_tx(bar, (kWithK + kWithV) * Tr::kSmemKV);
              const int row = int(seq.k_row0) + n0;
#pragma unroll
              for (int a = 0; a < HeadDim / 64; ++a) {
                if (kWithK)
                  tma_load_4d(sK0 + s * Tr::kSmemKV + a * kBlockN * 128, &maps.k, a * 64, row,
                              head_k, seq.kv_batch, bar);
                if (kWithV)
                  tma_load_4d(sV0 + s * Tr::kSmemKV + a * kBlockN * 128, &maps.v, a * 64, row,
                              head_k, seq.kv_batch, bar);
              }
            } else {
              mbarrier_arrive(bar);
            }
            return;
          }
        }
        if (kWithK)
          load_swizzled<HeadDim, kBlockN, 128>(
              sK0 + s * Tr::kSmemKV, k, p.head_dim, [&](int r) -> int64_t {
                if (n0 + r >= seq.seqlen_k) return -1;
                if constexpr (Paged) return k_offset(p, seq, n0 + r, head_k);
                return k_base + (n0 + r) * p.k_row_stride;
              });
        if (kWithV)
          load_swizzled<HeadDim, kBlockN, 128>(
              sV0 + s * Tr::kSmemKV, v, p.head_dim, [&](int r) -> int64_t {
                if (n0 + r >= seq.seqlen_k) return -1;
                if constexpr (Paged) return v_offset(p, seq, n0 + r, head_k);
                return v_base + (n0 + r) * p.v_row_stride;
              });
        cp_async_mbarrier_arrive(bar);
      };
      using FillK = std::integral_constant<int, kFillK>;
      using FillV = std::integral_constant<int, kFillV>;
      using FillKV = std::integral_constant<int, kFillKV>;
      auto block_of = [&](int i) { return range.end - 1 - i; };  // blocks run from the last
      // Separate K and V: K_0, Q, then K_i before V_(i-1) (the consumers issue QK^T_i with
      // P V_(i-1)), V last. K_0 goes first so that it loads while the producer waits for the Q
      // buffer; K_i does not wait behind V_(i-1)'s stage, which is freed one softmax later.
      if constexpr (Tr::kSeparateKV) fill_stage(FillK{}, it, block_of(0));
      // This tile's Q buffer: the QK^T GEMMs of the tile that used it kQBuffers fills ago must
      // be done with it before it is overwritten (with two buffers, that tile is the one before
      // the consumers' current tile, so the wait is normally already satisfied).
      int qb = q_fills % Tr::kQBuffers;
      if constexpr (DynamicTiles) qb = publish_q_buffer(at, range);  // the same wait, and the tile
      const uint32_t sQ = sQ0 + qb * Tr::kSmemQ;
      if constexpr (!DynamicTiles) {
        if (q_fills >= Tr::kQBuffers)
          mbarrier_wait(empty_q(qb), (q_fills / Tr::kQBuffers - 1) & 1);
        ++q_fills;
      }
      if (sm90_q_tile_by_tma(maps, m0, kBlockM, seq.seqlen_q)) {
        // One thread copies the query tile by TMA (the other producer threads still arrive: the
        // barrier counts one arrival per producer thread). Other partial tiles keep cp.async, which
        // zero-fills the rows past the sequence.
        if (threadIdx.x == 0) {
          const uint32_t bar = full_q(qb);
          mbarrier_arrive_expect_tx(bar, Tr::kSmemQ);
          const int row = int(seq.q_row0) + m0;
          const int q_batch = is_varlen(p) ? 0 : batch;  // q_offset's terms
#pragma unroll
          for (int a = 0; a < HeadDim / 64; ++a)
            tma_load_4d(sQ + a * kBlockM * 128, &maps.q, a * 64, row, head, q_batch, bar);
        } else {
          mbarrier_arrive(full_q(qb));
        }
      } else {
        load_swizzled<HeadDim, kBlockM, 128>(sQ, static_cast<const T*>(p.q), p.head_dim,
                                             [&](int r) -> int64_t {
                                               return m0 + r < seq.seqlen_q
                                                          ? q_offset(p, seq, m0 + r, head)
                                                          : -1;
                                             });
        cp_async_mbarrier_arrive(full_q(qb));
      }
      if constexpr (Tr::kSeparateKV) {
        for (int i = 1; i < num_blocks; ++i) {
          fill_stage(FillK{}, it + i, block_of(i));
          fill_stage(FillV{}, it + i - 1, block_of(i - 1));
        }
        fill_stage(FillV{}, it + num_blocks - 1, block_of(num_blocks - 1));
      } else {
        for (int i = 0; i < num_blocks; ++i) fill_stage(FillKV{}, it + i, block_of(i));
      }
      it += num_blocks;
    }
    if constexpr (DynamicTiles) {
      // No more tiles: -1 through the next Q buffer (no data) stops the consumers.
      mbarrier_arrive(full_q(publish_q_buffer(Sm90Tile{-1, 0, 0, 0}, BlockRange{0, 0})));
    }
    sm80::cp_async_wait<0>();
  } else {  // consumers: the other branch of the same if, so setmaxnreg applies to it
  setmaxnreg_inc<Tr::kConsumerRegs>();

  const int tid = threadIdx.x - 128;
  // Consumer warpgroup: query rows [64 wg, 64 wg + 64). Broadcast from lane 0 so the compiler
  // knows it is warp-uniform: descriptors built from it then stay in uniform registers, and
  // the wgmmas of a stage are not serialised around their computation.
  const int wg = __shfl_sync(0xffffffffu, tid / 128, 0);
  const int warp_in_wg = (tid % 128) / 32;   // each warp owns 16 of those rows
  const int lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  int it = 0;      // K/V stage uses so far, in the producer's order
  int q_uses = 0;  // Q buffer uses so far (tiles with key blocks), in the producer's order
  // Ping-pong: the consumer warpgroups take turns issuing their GEMMs (named barrier 1 + w is
  // warpgroup w's turn), so one's softmax runs while the tensor cores work through the others'
  // GEMMs. Per tile each warpgroup has num_blocks + 1 issue turns, in the order A0 B0 A1 B1 ...
  // (A0 B0 C0 A1 ... with three) over the whole CTA, tile boundaries included: the last
  // warpgroup's last turn of a tile hands over to A's first turn of the next, so A's next QK^T
  // is issued while the others still write their output (a hand-over renewed per tile would
  // leave the tensor cores idle during the epilogues). The last warpgroup opens A's very first
  // turn; A takes its final hand-over after the last tile, so every barrier sees as many
  // arrivals as waits.
  const int my_turn = 1 + wg;
  const int next_turn = Tr::kConsumerWGs == 2 ? 2 - wg : wg + 2 > Tr::kConsumerWGs ? 1 : wg + 2;
  const ScoreUnits units = launch_score_units(p);  // + each tile's ALiBi slope
  if (pingpong && wg == Tr::kConsumerWGs - 1) named_barrier_arrive(1, 256);
  // DynamicTiles: every Q buffer the producer publishes, tiles without key blocks included,
  // counts as a use; the loop ends at the published -1.
  // One tile (SingleTileScheduler: blockIdx.x), or the published ones until the -1.
  for (int tile = blockIdx.x; DynamicTiles || tile < num_tiles; tile += gridDim.x) {
  Sm90Tile at;
  BlockRange range;
  if constexpr (DynamicTiles) {
    // The next tile and its key blocks are the ones the next Q buffer was published with (wait
    // first: they are written before the producer's release arrival). Every lane reads the same
    // words; redux.sync puts each in a uniform register, so that the compiler knows it (and
    // what derives from it: num_blocks, hence `it` and the stage addresses) is warp-uniform.
    // With __shfl_sync instead, the tile decode, `it` and the stage addresses lived in
    // per-thread registers: consumer spills around the tile loop and an R2UR between the wgmmas.
    const int qb = q_uses % Tr::kQBuffers;
    mbarrier_wait(full_q(qb), (q_uses / Tr::kQBuffers) & 1);
    const Sm90PublishedTile& pub = s_q_tile[qb];
    at.m_block = __reduce_max_sync(0xffffffffu, pub.at.m_block);
    if (at.m_block < 0) break;
    at.head = __reduce_max_sync(0xffffffffu, pub.at.head);
    at.batch = __reduce_max_sync(0xffffffffu, pub.at.batch);
    at.split = __reduce_max_sync(0xffffffffu, pub.at.split);
    range.begin = __reduce_max_sync(0xffffffffu, pub.range.begin);
    range.end = __reduce_max_sync(0xffffffffu, pub.range.end);
  } else {
    at = sm90_tile(tile, m_blocks, p.num_heads, launch.num_splits);
  }
  const int m_block = at.m_block, head = at.head, batch = at.batch, split = at.split;
  const SequenceInfo seq = sequence_info(p, batch);
  const int m0 = m_block * kBlockM;
  const MaskSpec mask = sequence_mask(p, seq);
  if constexpr (!DynamicTiles) {
    if (m0 >= seq.seqlen_q) continue;
    range = key_block_range(mask, m0, m0 + kBlockM, kBlockN);
    if (launch.num_splits > 1) range = split_block_range(range, launch.num_splits, split);
  }
  const int num_blocks = range.end - range.begin;
  const int row_base = m0 + wg * 64 + warp_in_wg * 16 + g;  // + 8 for the second row
  // This tile's Q buffer (used only when it has key blocks: the producer fills one exactly for
  // those tiles; DynamicTiles: the one waited for above). With two buffers, broadcast from
  // lane 0 so the compiler knows it is warp-uniform and the QK^T descriptors built from it stay
  // in uniform registers.
  const int qb = q_uses % Tr::kQBuffers;
  uint32_t sQ = sQ0;
  if constexpr (Tr::kQBuffers > 1) sQ = __shfl_sync(0xffffffffu, sQ0 + qb * Tr::kSmemQ, 0);

  float acc_o[HeadDim / 2];
#pragma unroll
  for (int i = 0; i < HeadDim / 2; ++i) acc_o[i] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};

  const bool has_softcap = units.has_softcap;
  const float unit_log2 = units.unit_log2, cap_in = units.cap_in;
  const float alibi = alibi_in_units(p, batch, head);
  const int diagonal = mask.diagonal();

  // Softcap, ALiBi and the mask on the raw scores of one key block. pv_in_flight (a constant at
  // each call): whether a P V wgmma runs meanwhile (see modify_wgmma_block_scores).
  auto modify_block_scores = [&](float (&acc_s)[kBlockN / 2], int n_block, bool pv_in_flight) {
    const bool needs_mask = block_needs_mask(mask, m0, m0 + kBlockM, n_block, kBlockN);
    modify_wgmma_block_scores<kSTiles>(acc_s, mask, diagonal, row_base, n_block * kBlockN + 2 * t,
                                       pv_in_flight, has_softcap, p.softcap, cap_in, alibi,
                                       needs_mask);
  };
  // Turns the raw scores of one key block into probabilities (16-bit A fragments of P V) and
  // the factor that rescales what was accumulated before it.
  auto softmax_block = [&](float (&acc_s)[kBlockN / 2], int n_block, uint32_t (&p_frag)[kBlockN / 16][4],
                           float (&correction)[2], bool pv_in_flight) {
    modify_block_scores(acc_s, n_block, pv_in_flight);
    softmax_block_step<T, kBlockN>(acc_s, row_max, row_sum, unit_log2, p_frag, correction);
  };

  if (num_blocks > 0) {
    auto block_of = [&](int i) { return range.end - 1 - i; };
    // Block i's K (V) is in stage (it + i) % kStages of the K (V) ring. cp.async copies are
    // generic-proxy writes: a proxy fence orders them before this thread's wgmma reads.
    auto wait_full = [&](uint32_t full_bar, int i) {
      mbarrier_wait(full_bar, ((it + i) / Tr::kStages) & 1);
    };
    auto wait_kv = [&](uint32_t full_bar, int i) {
      wait_full(full_bar, i);
      fence_proxy_async();
    };
    // Without kSeparateKV, the K barriers cover K and V: the stage is released after P V.
    auto wait_k = [&](int i) { wait_kv(full_k((it + i) % Tr::kStages), i); };
    auto wait_v = [&](int i) {
      if constexpr (Tr::kSeparateKV) wait_kv(full_v((it + i) % Tr::kStages), i);
    };
    auto stage_k = [&](int i) { return sK0 + ((it + i) % Tr::kStages) * Tr::kSmemKV; };
    auto stage_v = [&](int i) { return sV0 + ((it + i) % Tr::kStages) * Tr::kSmemKV; };
    auto release_k = [&](int i) {
      if constexpr (Tr::kSeparateKV) mbarrier_arrive(empty_k((it + i) % Tr::kStages));
    };
    auto release_v = [&](int i) {
      const int s = (it + i) % Tr::kStages;
      mbarrier_arrive(Tr::kSeparateKV ? empty_v(s) : empty_k(s));
    };
    auto turn_begin = [&] {
      if (pingpong) named_barrier_sync(my_turn, 256);
    };
    auto turn_end = [&] {
      if (pingpong) named_barrier_arrive(next_turn, 256);
    };
    if constexpr (!DynamicTiles) mbarrier_wait(full_q(qb), (q_uses / Tr::kQBuffers) & 1);
    // This warpgroup's blocks, in processing order: i0 .. i1 of the tile's 0 .. num_blocks - 1.
    // kOwnBlocks: a causal or windowed tile's blocks that no row of this warpgroup sees are
    // skipped (v22): the warpgroup still waits for and releases their stages and takes their
    // ping-pong turns, so that every barrier sees the counts it expects.
    int i0 = 0, i1 = 0;
    bool has_blocks = true;
    auto skip_block = [&](int j) {
      wait_full(full_k((it + j) % Tr::kStages), j);
      if constexpr (Tr::kSeparateKV) wait_full(full_v((it + j) % Tr::kStages), j);
      release_k(j);
      release_v(j);
      turn_begin();
      turn_end();
    };
    if constexpr (Tr::kOwnBlocks) {
      const BlockRange own = key_block_range(mask, m0 + 64 * wg, m0 + 64 * wg + 64, kBlockN);
      const int own_begin = own.begin > range.begin ? own.begin : range.begin;
      const int own_end = own.end < range.end ? own.end : range.end;
      has_blocks = own_end > own_begin;
      i0 = has_blocks ? range.end - own_end : num_blocks;
      i1 = has_blocks ? range.end - 1 - own_begin : num_blocks - 1;
      for (int j = 0; j < i0; ++j) skip_block(j);
    }
    // (Written per case so that the d64/d128 two-warpgroup kernels compile as before.)
    const int i_end = Tr::kOwnBlocks ? i1 + 1 : num_blocks;
    auto last = [&] { return Tr::kOwnBlocks ? i1 : num_blocks - 1; };
    auto is_last = [&](int i) { return Tr::kOwnBlocks ? i == i1 : i == num_blocks - 1; };
    if (has_blocks) {
    // Block i0's K and the Q tile: no fence when both came by TMA (async proxy). Its MEMBAR
    // would also wait for the previous tile's output stores: skipping it measured +8% at d256
    // causal 512. The fences inside the loop stay: skipping them too (a test per block)
    // measured 3-5% slower on long rows (docs/notes/sm90-kernel.md, v17).
    wait_full(full_k((it + i0) % Tr::kStages), i0);
    if (!sm90_kv_block_by_tma(maps, Paged, block_of(i0) * kBlockN, kBlockN, seq.seqlen_k) ||
        !sm90_q_tile_by_tma(maps, m0, kBlockM, seq.seqlen_q))
      fence_proxy_async();
    uint32_t p_cur[kBlockN / 16][4];
    {
      float acc_s[kBlockN / 2];
      float correction[2];
      turn_begin();
      wgmma_fence();
      issue_qk<T, HeadDim, kBlockM, kBlockN>(acc_s, sQ, stage_k(i0), wg);
      turn_end();
      wgmma_wait<0>();
      fence_registers(acc_s);
      release_k(i0);
      if (is_last(i0)) mbarrier_arrive(empty_q(qb));  // Q's last QK^T is done
      softmax_block(acc_s, block_of(i0), p_cur, correction, false);
    }
    for (int i = i0 + 1; i < i_end; ++i) {
      wait_k(i);
      wait_v(i - 1);
      float acc_s[kBlockN / 2];
      fence_registers(p_cur);
      fence_registers(acc_o);
      turn_begin();
      wgmma_fence();
      issue_qk<T, HeadDim, kBlockM, kBlockN>(acc_s, sQ, stage_k(i), wg);
      issue_pv<T, HeadDim, kBlockN>(acc_o, p_cur, stage_v(i - 1));
      turn_end();
      wgmma_wait<1>();  // S_i is ready; P V may still run
      fence_registers(acc_s);
      release_k(i);
      if (is_last(i)) mbarrier_arrive(empty_q(qb));  // Q's last QK^T is done
      float correction[2];
      uint32_t p_next[kBlockN / 16][4];  // kSingleP: unused (the probabilities stay in acc_s
                                         // until P V(i-1) is done with p_cur)
      if constexpr (Tr::kSingleP) {
        modify_block_scores(acc_s, block_of(i), true);
        softmax_block_update<kBlockN>(acc_s, row_max, row_sum, unit_log2, correction);
      } else {
        softmax_block(acc_s, block_of(i), p_next, correction, true);
      }
      wgmma_wait<0>();
      fence_registers(p_cur);
      fence_registers(acc_o);
      release_v(i - 1);
      rescale_o<HeadDim>(acc_o, correction);
      if constexpr (Tr::kSingleP) {
        pack_probabilities<T, kBlockN>(acc_s, p_cur);
      } else {
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk)
#pragma unroll
          for (int r = 0; r < 4; ++r) p_cur[kk][r] = p_next[kk][r];
      }
    }
    wait_v(last());
    fence_registers(p_cur);
    fence_registers(acc_o);
    turn_begin();
    wgmma_fence();
    issue_pv<T, HeadDim, kBlockN>(acc_o, p_cur, stage_v(last()));
    turn_end();
    wgmma_wait<0>();
    fence_registers(acc_o);
    release_v(last());
    } else {
      // No block of this tile for this warpgroup: the turn of its final P V, and Q released.
      turn_begin();
      turn_end();
      mbarrier_arrive(empty_q(qb));
    }
    if constexpr (Tr::kOwnBlocks) {
      for (int j = i1 + 1; j < num_blocks; ++j) skip_block(j);
    }
    it += num_blocks;
    ++q_uses;
  } else if constexpr (DynamicTiles) {
    // A published tile without key blocks: its Q buffer holds no data, release it at once.
    mbarrier_arrive(empty_q(qb));
    ++q_uses;
  }

  store_output_rows<T, HeadDim>(launch, seq, acc_o, row_max, row_sum, unit_log2, row_base, t,
                                 batch, head, split);
  }  // tiles
  if (pingpong && wg == 0) named_barrier_sync(1, 256);  // the last warpgroup's final hand-over
  }  // consumers
}

}  // namespace sm90
}  // namespace flare
