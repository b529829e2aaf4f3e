// The consumer mainloop of the warp-specialised Hopper kernel: one consumer warpgroup's 64
// query rows of a tile against the tile's key blocks, from the last block to the first.
//
// Software pipeline (per warpgroup): iteration i issues S_i = Q K_i^T and O += P_(i-1) V_(i-1)
// back to back, waits for S_i only, runs the softmax of S_i while P V is still on the tensor
// cores (its probabilities stay in S_i's fp32 registers), then waits for P V, rescales O and
// packs P_i into the A fragments that P V(i-1) has released. Stages are taken and released
// through the rings of pipeline.cuh in the producer's order.
//
// Ping-pong (Sm90PingPong): the consumer warpgroups take turns issuing their GEMMs, so that one's
// softmax runs while the tensor cores work through the others' GEMMs.
//
// Split O (d512, Tr::kSplitO): the two consumer warpgroups share the tile's 64 rows. Warpgroup w
// computes the partial S_w over head dims [256 w, 256 w + 256) only (Q's and K's 64-column atoms
// 4w .. 4w + 3), so neither repeats the other's QK^T; once its S_w is ready it stores it to its
// exchange buffer, both meet at a named barrier, and each adds the other's partial: S = S_own +
// S_other, the same two values in both warpgroups, hence the same S bit for bit (IEEE addition
// commutes), the same softmax and P. Each then accumulates P V for its 256 of O's columns. The
// masks and score modifications run on the whole S, after the exchange. No ping-pong there
// (Tr::kTurns): each softmax waits for both QK^T halves anyway.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/block_range.h"
#include "common/prefix_ranges.h"
#include "common/score_mods.h"
#include "common/sequence.h"
#include "kernels/fwd_launch.h"
#include "common/fp8_params.h"
#include "kernels/common/shared_access.cuh"
#include "kernels/sm90/fp8_ops_sm90.cuh"
#include "kernels/sm90/pipeline.cuh"
#include "kernels/sm90/softmax_sm90.cuh"
#include "kernels/sm90/tile_scheduler.cuh"
#include "kernels/sm90/tma_maps.h"
#include "kernels/sm90/wgmma_common.cuh"

namespace flare {
namespace sm90 {

// Turn-taking of the consumer warpgroups' GEMM issue: named barrier 1 + w is warpgroup w's turn.
// Per tile each warpgroup has num_blocks + 1 issue turns, in the order A0 B0 A1 B1 ... (A0 B0 C0
// A1 ... with three) over the whole CTA, tile boundaries included: the last warpgroup's last
// turn of a tile hands over to A's first turn of the next, so A's next QK^T is issued while the
// others still write their output. The last warpgroup opens A's very first turn (start); A takes
// its final hand-over after the last tile (finish), so every barrier sees as many arrivals as
// waits. Each barrier counts 256 threads: the warpgroup that hands over and the one that waits.
template <int ConsumerWGs>
struct Sm90PingPong {
  int on;  // nonzero: take turns
  int wg, my_turn, next_turn;

  __device__ __forceinline__ Sm90PingPong(int on_, int wg_)
      : on(on_), wg(wg_), my_turn(1 + wg_),
        next_turn(ConsumerWGs == 2 ? 2 - wg_ : wg_ + 2 > ConsumerWGs ? 1 : wg_ + 2) {}
  __device__ __forceinline__ void start() const {
    if (on && wg == ConsumerWGs - 1) named_barrier_arrive(1, 256);
  }
  __device__ __forceinline__ void begin_turn() const {
    if (on) named_barrier_sync(my_turn, 256);
  }
  __device__ __forceinline__ void end_turn() const {
    if (on) named_barrier_arrive(next_turn, 256);
  }
  __device__ __forceinline__ void finish() const {
    if (on && wg == 0) named_barrier_sync(1, 256);
  }
};

// One consumer thread's mainloop state. A warpgroup owns query rows [64 wg, 64 wg + 64) of the
// tile (split O: rows [0, 64), QK^T's head dims [kQkDims wg, kQkDims wg + kQkDims) and O's
// columns [kOColumns wg, kOColumns wg + kOColumns)), a warp 16 of them, a thread rows g and
// g + 8 of its warp's (wgmma accumulator layout).
template <typename T, typename Tr, bool Paged, bool DynamicTiles>
struct Sm90Mainloop {
  static constexpr int kHeadDim = Tr::kHeadDim, kBlockM = Tr::kBlockM, kBlockN = Tr::kBlockN;
  static constexpr int kOColumns = Tr::kOColumns;  // O columns this warpgroup accumulates
  // k steps of P V: k16 with 16-bit P, k32 with e4m3 P (Tr::kFp8).
  static constexpr int kPSteps = Tr::kFp8 ? kBlockN / 32 : kBlockN / 16;
  static constexpr int kSTiles = kBlockN / 8;  // n8 column tiles of S per thread

  const FwdLaunch& launch;
  const Sm90TensorMaps& maps;
  const Sm90WsSmem<Tr>& smem;
  const Sm90PublishedTile* published;  // DynamicTiles: the tile the Q buffer holds
  int wg, warp_in_wg, g, t;
  Sm90PingPong<Tr::kConsumerWGs> turns;
  ScoreUnits units;  // + each tile's ALiBi slope
  int it = 0;      // K/V stage uses so far, in the producer's order
  int q_uses = 0;  // Q buffer uses so far, in the producer's order
  int x_parity = 0;  // split O: the exchange buffers of the next S exchange
  float tile_unit_log2 = 0.f;  // FP8: the last tile's score units, its descales folded in

  // tid: the thread's index among the consumer threads. The warpgroup is broadcast from lane 0
  // so that the compiler knows it is warp-uniform: descriptors built from it then stay in
  // uniform registers, and the wgmmas of a stage are not serialised around their computation.
  __device__ __forceinline__ Sm90Mainloop(const FwdLaunch& launch_, const Sm90TensorMaps& maps_,
                                          const Sm90WsSmem<Tr>& smem_,
                                          const Sm90PublishedTile* published_, int tid,
                                          int pingpong)
      : launch(launch_), maps(maps_), smem(smem_), published(published_),
        wg(__shfl_sync(0xffffffffu, tid / 128, 0)), warp_in_wg((tid % 128) / 32),
        g(tid % 32 / 4), t(tid % 32 % 4), turns(pingpong, wg),
        units(launch_score_units(launch_.p)) {}

  // This warpgroup's 64-row group of the tile (0 for every warpgroup when they split O).
  // (Where the warpgroups do not split O, the kernels use neither this nor o_column0: with
  // them, even constant, ptxas spilled 40 more of the d256 consumers' registers.)
  __device__ __forceinline__ int row_group() const {
    if constexpr (Tr::kSplitO) return 0;
    else return wg;
  }
  // First of this thread's two rows of the tile at m0 (the second is + 8).
  __device__ __forceinline__ int row_base(int m0) const {
    return m0 + row_group() * 64 + warp_in_wg * 16 + g;
  }
  // First of O's columns this warpgroup accumulates.
  __device__ __forceinline__ int o_column0() const {
    if constexpr (Tr::kSplitO) return wg * kOColumns;
    else return 0;
  }

  // DynamicTiles: the next tile and its key blocks, as published with the Q buffer (after its
  // full wait: they are written before the producer's release arrival); false at the final -1.
  // Every lane reads the same words; redux.sync puts each in a uniform register, so that the
  // compiler knows it (and what derives from it: num_blocks, hence `it` and the stage
  // addresses) is warp-uniform. With __shfl_sync they lived in per-thread registers: spills
  // around the tile loop and an R2UR between the wgmmas.
  __device__ __forceinline__ bool receive(Sm90Tile& at, BlockRange& range, bool& prefix) const {
    smem.q_ring.consumer_wait(q_uses);
    const Sm90PublishedTile& pub = *published;
    at.m_block = __reduce_max_sync(0xffffffffu, pub.at.m_block);
    if (at.m_block < 0) return false;
    at.head = __reduce_max_sync(0xffffffffu, pub.at.head);
    at.batch = __reduce_max_sync(0xffffffffu, pub.at.batch);
    at.split = __reduce_max_sync(0xffffffffu, pub.at.split);
    range.begin = __reduce_max_sync(0xffffffffu, pub.range.begin);
    range.end = __reduce_max_sync(0xffffffffu, pub.range.end);
    prefix = __reduce_max_sync(0xffffffffu, pub.prefix) != 0;
    return true;
  }

  // This warpgroup's rows of the tile at (m0, at) against key blocks `range`, accumulated into
  // O (unnormalised) and the online-softmax state, which are then handed to
  // epilogue(acc_o, softmax). prefix: the tile's TileKeys::prefix (masked blocks widen each
  // row's keys by its prefix ranges).
  template <typename Epilogue>
  __device__ __forceinline__ void mma(const Sm90Tile& at, const SequenceInfo& seq,
                                      const MaskSpec& mask, int m0, const BlockRange& range,
                                      bool prefix, Epilogue&& epilogue) {
    const flare_mha_fwd_params& p = launch.p;
    const int num_blocks = range.end - range.begin;
    const int row0 = row_base(m0);
    uint32_t sQ = smem.q;
    // Split O: this warpgroup's half of the head dims, whole 64-column atoms of Q (and of K:
    // stage_k).
    if constexpr (Tr::kSplitO) sQ += uint32_t(wg * (Tr::kQkDims / 64)) * (kBlockM * 128);
    float acc_o[kOColumns / 2];
#pragma unroll
    for (int i = 0; i < kOColumns / 2; ++i) acc_o[i] = 0.f;
    Sm90Softmax softmax;
    softmax.init();

    const bool has_softcap = units.has_softcap;
    float unit_log2 = units.unit_log2, cap_in = units.cap_in;
    float alibi = alibi_in_units(p, at.batch, at.head);
    const int diagonal = mask.diagonal();
    // FP8: the scores are products of codes; q_descale * k_descale of the tile's (batch, K/V
    // head) moves into the units (with softcap into cap_in alone), v_descale into O at the end.
    [[maybe_unused]] int head_k = 0;
    if constexpr (Tr::kFp8) {
      head_k = at.head / (p.num_heads / p.num_heads_k);
      const float qk = q_descale(p, at.batch, head_k) * k_descale(p, at.batch, head_k);
      if (has_softcap) {
        cap_in *= qk;
      } else {
        unit_log2 *= qk;
        alibi /= qk;
      }
      tile_unit_log2 = unit_log2;
    }

    // Softcap, ALiBi and the mask on the raw scores of one key block. pv_in_flight (a constant
    // at each call): whether a P V wgmma runs meanwhile (see modify_wgmma_block_scores).
    auto modify_block_scores = [&](float (&acc_s)[kBlockN / 2], int n_block, bool pv_in_flight) {
      const bool needs_mask = block_needs_mask(mask, m0, m0 + kBlockM, n_block, kBlockN);
      modify_wgmma_block_scores<kSTiles>(
          acc_s, mask, diagonal, row0, n_block * kBlockN + 2 * t, pv_in_flight, has_softcap,
          p.softcap, cap_in, alibi, needs_mask, [&](int row, int& first, int& end) {
            if (prefix) row_keys(p, at.batch, mask, row, first, end);
          });
    };
    // Turns the raw scores of one key block into probabilities, in place, and the factor that
    // rescales what was accumulated before it.
    auto softmax_block = [&](float (&acc_s)[kBlockN / 2], int n_block, float (&correction)[2],
                             bool pv_in_flight) {
      modify_block_scores(acc_s, n_block, pv_in_flight);
      softmax_block_update<kBlockN>(acc_s, softmax, unit_log2, correction);
    };
    // The probabilities as the A fragments of P V: 16-bit, or e4m3 (Tr::kFp8).
    auto pack_block = [&](const float (&acc_s)[kBlockN / 2], uint32_t (&p_frag)[kPSteps][4]) {
      if constexpr (Tr::kFp8) pack_probabilities_e4m3<kBlockN>(acc_s, p_frag);
      else pack_probabilities<T, kBlockN>(acc_s, p_frag);
    };

    // Split O: S = this warpgroup's partial + the other's. Thread i of either warpgroup holds the
    // same (row, key) positions of S: it stores its partial as float4 j at [j][i] of its
    // warpgroup's buffer (a warp's 16-byte stores fill 512 contiguous bytes: no bank conflict),
    // and after the barrier that both warpgroups pass once both partials are stored, it adds
    // the other warpgroup's thread i's. Consecutive exchanges use the buffers of alternate
    // parity: a warpgroup stores exchange e's partial only after passing the barrier of
    // exchange e - 1, at which the other arrives after its reads of exchange e - 2 (the
    // buffer's previous use). Both warpgroups run the same blocks (they share their rows, and
    // Tr::kOwnBlocks gives both the same range), hence the same exchanges.
    auto exchange_s = [&](float (&acc_s)[kBlockN / 2]) {
      if constexpr (Tr::kSplitO) {
        const uint32_t slot = uint32_t(warp_in_wg * 32 + g * 4 + t) * 16;  // thread i's
        const uint32_t own = smem.exchange(wg, x_parity) + slot;
        const uint32_t other = smem.exchange(wg ^ 1, x_parity) + slot;
#pragma unroll
        for (int j = 0; j < kBlockN / 8; ++j)
          st_shared_16(own + j * 128 * 16,
                       make_uint4(__float_as_uint(acc_s[4 * j]), __float_as_uint(acc_s[4 * j + 1]),
                                  __float_as_uint(acc_s[4 * j + 2]),
                                  __float_as_uint(acc_s[4 * j + 3])));
        named_barrier_sync(Tr::kExchangeBarrier, 256);
#pragma unroll
        for (int j = 0; j < kBlockN / 8; ++j) {
          const uint4 x = ld_shared_16(other + j * 128 * 16);
          acc_s[4 * j] = acc_s[4 * j] + __uint_as_float(x.x);
          acc_s[4 * j + 1] = acc_s[4 * j + 1] + __uint_as_float(x.y);
          acc_s[4 * j + 2] = acc_s[4 * j + 2] + __uint_as_float(x.z);
          acc_s[4 * j + 3] = acc_s[4 * j + 3] + __uint_as_float(x.w);
        }
        x_parity ^= 1;
      }
    };

    if (num_blocks > 0) {
    const auto& k_ring = smem.k_ring;
    const auto& v_ring = smem.v_ring;
    auto block_of = [&](int i) { return range.end - 1 - i; };
    // Block i's K (V) is use it + i of the K (V) ring. cp.async copies are generic-proxy
    // writes: a proxy fence orders them before this thread's wgmma reads.
    auto wait_kv = [&](const auto& ring, int i) {
      ring.consumer_wait(it + i);
      fence_proxy_async();
    };
    // Without kSeparateKV, the K ring covers K and V: the stage is released after P V.
    auto wait_k = [&](int i) { wait_kv(k_ring, i); };
    auto wait_v = [&](int i) {
      if constexpr (Tr::kSeparateKV) wait_kv(v_ring, i);
    };
    auto stage_k = [&](int i) {
      const uint32_t stage = smem.k_stage(k_ring.stage(it + i));
      if constexpr (Tr::kSplitO)
        return stage + uint32_t(wg * (Tr::kQkDims / 64)) * (kBlockN * 128);
      else
        return stage;
    };
    // This warpgroup's columns of block i's V: whole 64-column atoms of the stage.
    auto stage_v = [&](int i) {
      const uint32_t stage = smem.v_stage(k_ring.stage(it + i));
      if constexpr (Tr::kSplitO)
        return stage + uint32_t(o_column0() / 64) * (kBlockN * 128);
      else
        return stage;
    };
    auto release_k = [&](int i) {
      if constexpr (Tr::kSeparateKV) k_ring.consumer_release(it + i);
    };
    auto release_v = [&](int i) {
      if constexpr (Tr::kSeparateKV) v_ring.consumer_release(it + i);
      else k_ring.consumer_release(it + i);
    };
    auto release_q = [&] { smem.q_ring.consumer_release(q_uses); };
    if constexpr (!DynamicTiles) smem.q_ring.consumer_wait(q_uses);
    // This warpgroup's blocks, in processing order: i0 .. i1 of the tile's 0 .. num_blocks - 1.
    // Tr::kOwnBlocks: a causal or windowed tile's blocks that no row of this warpgroup sees are
    // skipped: the warpgroup still waits for and releases their stages and takes their
    // ping-pong turns, so that every barrier sees the counts it expects.
    int i0 = 0, i1 = 0;
    bool has_blocks = true;
    auto skip_block = [&](int j) {
      k_ring.consumer_wait(it + j);
      if constexpr (Tr::kSeparateKV) v_ring.consumer_wait(it + j);
      release_k(j);
      release_v(j);
      turns.begin_turn();
      turns.end_turn();
    };
    if constexpr (Tr::kOwnBlocks) {
      const int own_m0 = m0 + 64 * row_group();
      BlockRange own = tile_key_blocks(p, at.batch, mask, own_m0, own_m0 + 64, kBlockN).range;
      // A cluster's tile may lie wholly past the sequence beside one that does not: no block.
      if constexpr (Tr::kClusterM > 1) {
        if (own_m0 >= seq.seqlen_q) own = BlockRange{0, 0};
      }
      const int own_begin = own.begin > range.begin ? own.begin : range.begin;
      const int own_end = own.end < range.end ? own.end : range.end;
      has_blocks = own_end > own_begin;
      i0 = has_blocks ? range.end - own_end : num_blocks;
      i1 = has_blocks ? range.end - 1 - own_begin : num_blocks - 1;
      for (int j = 0; j < i0; ++j) skip_block(j);
    }
    // (Written per case so that the two-warpgroup kernels without kOwnBlocks keep the plain
    // loop bounds.)
    const int i_end = Tr::kOwnBlocks ? i1 + 1 : num_blocks;
    auto last = [&] { return Tr::kOwnBlocks ? i1 : num_blocks - 1; };
    auto is_last = [&](int i) { return Tr::kOwnBlocks ? i == i1 : i == num_blocks - 1; };
    if (has_blocks) {
      // Block i0's K and the Q tile: no proxy fence when both came by TMA (async proxy); the
      // fence would also wait for the previous tile's output stores.
      k_ring.consumer_wait(it + i0);
      if (!sm90_kv_block_by_tma(maps, Paged, block_of(i0) * kBlockN, kBlockN, seq.seqlen_k) ||
          !sm90_q_tile_by_tma(maps, m0, kBlockM, seq.seqlen_q))
        fence_proxy_async();
      uint32_t p_cur[kPSteps][4];
      {
        float acc_s[kBlockN / 2];
        float correction[2];
        turns.begin_turn();
        wgmma_fence();
        if constexpr (Tr::kFp8)
          issue_qk_fp8<kHeadDim, kBlockM, kBlockN>(acc_s, sQ, stage_k(i0), row_group());
        else
          issue_qk<T, Tr::kQkDims, kBlockM, kBlockN>(acc_s, sQ, stage_k(i0), row_group());
        turns.end_turn();
        wgmma_wait<0>();
        fence_registers(acc_s);
        release_k(i0);
        if (is_last(i0)) release_q();  // Q's last QK^T is done
        exchange_s(acc_s);
        softmax_block(acc_s, block_of(i0), correction, false);
        pack_block(acc_s, p_cur);
      }
      for (int i = i0 + 1; i < i_end; ++i) {
        wait_k(i);
        wait_v(i - 1);
        float acc_s[kBlockN / 2];
        fence_registers(p_cur);
        fence_registers(acc_o);
        turns.begin_turn();
        wgmma_fence();
        if constexpr (Tr::kFp8) {
          issue_qk_fp8<kHeadDim, kBlockM, kBlockN>(acc_s, sQ, stage_k(i), row_group());
          issue_pv_fp8<kOColumns, kBlockN>(acc_o, p_cur, stage_v(i - 1));
        } else {
          issue_qk<T, Tr::kQkDims, kBlockM, kBlockN>(acc_s, sQ, stage_k(i), row_group());
          issue_pv<T, kOColumns, kBlockN>(acc_o, p_cur, stage_v(i - 1));
        }
        turns.end_turn();
        wgmma_wait<1>();  // S_i is ready; P V may still run
        fence_registers(acc_s);
        release_k(i);
        if (is_last(i)) release_q();  // Q's last QK^T is done
        exchange_s(acc_s);
        float correction[2];
        // The probabilities stay in acc_s until P V(i-1) is done with p_cur. (Packed into a
        // second set of fragments during the softmax instead, they left too few registers:
        // ptxas serialised every wgmma.)
        softmax_block(acc_s, block_of(i), correction, true);
        softmax_before_wait(softmax);
        wgmma_wait<0>();
        // P V read p_cur asynchronously: keep its registers alive (and unshared with the
        // softmax temporaries) until the wait, or ptxas has to serialise every wgmma.
        fence_registers(p_cur);
        fence_registers(acc_o);
        release_v(i - 1);
        rescale_o<kOColumns>(acc_o, correction);
        pack_block(acc_s, p_cur);
      }
      // The last block's P V.
      wait_v(last());
      fence_registers(p_cur);
      fence_registers(acc_o);
      turns.begin_turn();
      wgmma_fence();
      if constexpr (Tr::kFp8)
        issue_pv_fp8<kOColumns, kBlockN>(acc_o, p_cur, stage_v(last()));
      else
        issue_pv<T, kOColumns, kBlockN>(acc_o, p_cur, stage_v(last()));
      turns.end_turn();
      wgmma_wait<0>();
      fence_registers(acc_o);
      release_v(last());
    } else {
      // No block of this tile for this warpgroup: the turn of its final P V, and Q released.
      turns.begin_turn();
      turns.end_turn();
      release_q();
    }
    if constexpr (Tr::kOwnBlocks) {
      for (int j = i1 + 1; j < num_blocks; ++j) skip_block(j);
    }
    it += num_blocks;
    ++q_uses;
    } else if constexpr (DynamicTiles) {
      // A published tile without key blocks: its Q buffer holds no data, release it at once.
      smem.q_ring.consumer_release(q_uses);
      ++q_uses;
    }
    if constexpr (Tr::kFp8) {
      const float vd = v_descale(p, at.batch, head_k);  // O's V codes times v_descale
#pragma unroll
      for (int i = 0; i < kOColumns / 2; ++i) acc_o[i] *= vd;
    }
    epilogue(acc_o, softmax);
  }
};

}  // namespace sm90
}  // namespace flare
