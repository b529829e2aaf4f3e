// Hopper FP8 prefill kernel (sm90a): q, k and v hold e4m3 codes (flare.h, "FP8 inputs"), out is
// fp16 / bf16 (T), the LSE fp32. Both GEMMs are e4m3 wgmma with fp32 accumulators:
//   S = Q K^T: Q and K, K-major as they are stored (rows of head-dim bytes), from shared memory;
//   O += P V: P from registers (the probabilities rounded to e4m3), V^T from shared memory.
// The 8-bit wgmma takes both operands K-major only, so V is stored transposed: the loading
// threads read V rows into registers, transpose 4 x 4 byte blocks (prmt) and store V^T [dv][keys]
// with the keys of every 32-key step permuted so that each lane packs P from its own S
// accumulators (fp8_layout.h: the layouts and the permutation, checked on the CPU).
//
// Two kernels run it (run_fwd_fp8_sm90 takes the variant's):
//  - the warp-specialised kernel's FP8 instances (fwd_kernel_sm90_ws.cuh, Sm90WsTraits::kFp8):
//    a producer warpgroup loads Q and K by cp.async and V's rows into a staging tile, from which
//    its threads store V^T (producer_sm90.cuh, load_fp8); two consumer warpgroups run the
//    mainloop with the e4m3 steps of fp8_ops_sm90.cuh, taking turns (ping-pong). The default.
//  - the all-threads kernel below (fwd_kernel_sm90.cuh's structure): one CTA per 128-row query
//    tile, two warpgroups that both load and compute, two stages of K (cp.async) and V^T, key
//    blocks from the last to the first, S_i = Q K_i^T issued with P_(i-1) V_(i-1) and the
//    softmax of S_i under P V. Simpler, for checking the layouts apart from the pipeline
//    (Sm90Overrides::warp_specialized = 0).
// Features of both: causal, window, softcap, ALiBi, sinks, GQA, varlen, contiguous KV caches; no
// paging, no split (the planner sends neither here); one CTA per tile.
//
// Scales: the scores are q codes . k codes; q_descale * k_descale of the tile's (batch, K/V head)
// folds into the softmax units (ScoreUnits), v_descale into O before the epilogue. P is
// exp2(s - max) in (0, 1] rounded to e4m3 (round to nearest even, saturating); the row sums
// stay in fp32 from the unrounded values, as in the reference's naive FP8 model.
#pragma once
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/block_range.h"
#include "common/fp8_params.h"
#include "common/query_tile.h"
#include "common/score_mods.h"
#include "common/sequence.h"
#include "kernels/element_type.cuh"
#include "kernels/fwd_launch.h"
#include "kernels/sm80/mma_sm80.cuh"
#include "kernels/sm90/epilogue_sm90.cuh"
#include "kernels/sm90/fwd_kernel_sm90.cuh"  // load_swizzled
#include "kernels/sm90/fwd_kernel_sm90_ws.cuh"
#include "kernels/sm90/fp8_layout.h"
#include "kernels/sm90/fp8_ops_sm90.cuh"
#include "kernels/sm90/softmax_sm90.cuh"
#include "kernels/sm90/tile_scheduler.cuh"
#include "kernels/sm90/wgmma_common.cuh"
#include "kernels/sm90/wgmma_desc.h"
#include "kernels/sm90/wgmma_ops.cuh"
#include "kernels/sm90/ws_tensor_maps.h"

namespace flare {
namespace sm90 {

template <int HeadDim>
struct Sm90Fp8Traits {
  static constexpr int kThreads = 256;  // two warpgroups
  static constexpr int kBlockM = kSm90Fp8BlockM, kBlockN = sm90_fp8_block_n(HeadDim);
  static constexpr int kStages = 2;
  static constexpr int kSmemQ = kBlockM * HeadDim;   // bytes
  static constexpr int kSmemK = kBlockN * HeadDim;   // one K stage
  static constexpr int kSmemVt = HeadDim * kBlockN;  // one V^T stage
  static constexpr int kSmemBytes = kSmemQ + kStages * (kSmemK + kSmemVt) + 1024;  // + alignment
  // The V^T store's work items: groups of four keys x 16-byte column chunks of V.
  static constexpr int kVtItems = (kBlockN / 4) * (HeadDim / 16);
  static constexpr int kVtItemsPerThread = (kVtItems + kThreads - 1) / kThreads;
  static_assert(kBlockM == 2 * 64 && kBlockN % 32 == 0 && HeadDim % 64 == 0, "tile");
  static_assert(kSmemQ % 1024 == 0 && kSmemK % 1024 == 0 && kSmemVt % 1024 == 0,
                "every tile starts on a swizzle-pattern boundary");
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per CTA");
};

// One CTA per tile of a 3-D grid (SingleTileScheduler::grid_tile), num_splits 1.
template <typename T, int HeadDim>
__global__ void __launch_bounds__(Sm90Fp8Traits<HeadDim>::kThreads, 1)
    fwd_fp8_kernel_sm90(const __grid_constant__ FwdLaunch launch) {
  using Tr = Sm90Fp8Traits<HeadDim>;
  constexpr int kBlockM = Tr::kBlockM, kBlockN = Tr::kBlockN, kThreads = Tr::kThreads;
  constexpr int kSTiles = kBlockN / 8;  // n8 column tiles of S per thread
  const flare_mha_fwd_params& p = launch.p;

  const Sm90Tile at = SingleTileScheduler::grid_tile(1);
  const int m_block = at.m_block, head = at.head, batch = at.batch;
  QueryTile qt;
  if (!query_tile(p, batch, head, m_block, kBlockM, kBlockN, 1, 0, qt)) return;
  const SequenceInfo seq = qt.seq;
  const int m0 = qt.m0, head_k = qt.head_k;

  extern __shared__ unsigned char smem_raw[];
  const uint32_t smem_base = (sm80::smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t sQ = smem_base;
  const uint32_t sK0 = sQ + Tr::kSmemQ;
  const uint32_t sVt0 = sK0 + Tr::kStages * Tr::kSmemK;

  const int tid = threadIdx.x;
  // Warpgroup: query rows [64 wg, 64 wg + 64), broadcast from lane 0 (warp-uniform: the
  // descriptors built from it stay in uniform registers).
  const int wg = __shfl_sync(0xffffffffu, tid / 128, 0);
  const int warp_in_wg = (tid % 128) / 32;
  const int t = tid % 4;
  const int row_base = m0 + wg * 64 + warp_in_wg * 16 + (tid % 32) / 4;  // + 8: second row

  const uint8_t* q = static_cast<const uint8_t*>(p.q);
  const uint8_t* k = static_cast<const uint8_t*>(p.k);
  const uint8_t* v = static_cast<const uint8_t*>(p.v);

  float acc_o[HeadDim / 2];
#pragma unroll
  for (int i = 0; i < HeadDim / 2; ++i) acc_o[i] = 0.f;
  Sm90Softmax softmax;
  softmax.init();

  // The scores are products of codes: q_descale * k_descale moves into the units. Without
  // softcap the score unit is the softmax scale (ALiBi is in that unit); with softcap the
  // scaled score only enters through cap_in.
  ScoreUnits units = score_units(p, batch, head);
  const float qk_descale = q_descale(p, batch, head_k) * k_descale(p, batch, head_k);
  if (units.has_softcap) {
    units.cap_in *= qk_descale;
  } else {
    units.unit_log2 *= qk_descale;
    units.alibi /= qk_descale;
  }
  const bool has_softcap = units.has_softcap;
  const float unit_log2 = units.unit_log2, cap_in = units.cap_in, alibi = units.alibi;
  const int diagonal = qt.mask.diagonal();

  // Raw scores of one key block -> probabilities (in place) and the rescale factor of O.
  auto softmax_block = [&](float (&acc_s)[kBlockN / 2], int n_block, float (&correction)[2],
                           bool pv_in_flight) {
    const bool needs_mask = block_needs_mask(qt.mask, m0, m0 + kBlockM, n_block, kBlockN);
    modify_wgmma_block_scores<kSTiles>(
        acc_s, qt.mask, diagonal, row_base, n_block * kBlockN + 2 * t, pv_in_flight, has_softcap,
        p.softcap, cap_in, alibi, needs_mask, [&](int row, int& first, int& end) {
          if (qt.prefix) row_keys(p, batch, qt.mask, row, first, end);
        });
    softmax_block_update<kBlockN>(acc_s, softmax, unit_log2, correction);
  };

  if (qt.range.end > qt.range.begin) {
    load_swizzled<HeadDim, kBlockM, kThreads>(
        sQ, q, p.head_dim, TileRows{q_offset(p, seq, m0, head), p.q_row_stride, seq.seqlen_q - m0});
    const int64_t k_base = k_offset(p, seq, 0, head_k);
    const int64_t v_base = v_offset(p, seq, 0, head_k);
    auto load_k = [&](int n_block, int stage) {
      const int n0 = n_block * kBlockN;
      load_swizzled<HeadDim, kBlockN, kThreads>(
          sK0 + stage * Tr::kSmemK, k, p.head_dim,
          TileRows{k_base + n0 * p.k_row_stride, p.k_row_stride, seq.seqlen_k - n0});
    };
    Fp8VtBlock<HeadDim, kBlockN, kThreads> vt;
    auto fetch_v = [&](int n_block) {
      vt.fetch(v, v_base, p.v_row_stride, n_block * kBlockN, seq.seqlen_k, v_head_dim(p));
    };
    auto stage_vt = [&](int stage) { return sVt0 + stage * Tr::kSmemVt; };
    // Block i of the walk is range.end - 1 - i; its K and V^T go to stage i % 2.
    const int num_blocks = qt.range.end - qt.range.begin;
    auto block_of = [&](int i) { return qt.range.end - 1 - i; };
    load_k(block_of(0), 0);
    sm80::cp_async_commit();  // group: Q, K_0
    if (num_blocks > 1) load_k(block_of(1), 1);
    sm80::cp_async_commit();  // group: K_1
    fetch_v(block_of(0));
    vt.store(stage_vt(0));
    sm80::cp_async_wait<1>();
    fence_proxy_async();  // this thread's cp.async and st.shared before the wgmma reads
    __syncthreads();

    uint32_t p_cur[kBlockN / 32][4];
    {
      float acc_s[kBlockN / 2];
      float correction[2];
      wgmma_fence();
      issue_qk_fp8<HeadDim, kBlockM, kBlockN>(acc_s, sQ, sK0, wg);
      wgmma_wait<0>();
      fence_registers(acc_s);
      softmax_block(acc_s, block_of(0), correction, false);
      pack_probabilities_e4m3<kBlockN>(acc_s, p_cur);
    }
    for (int i = 1; i < num_blocks; ++i) {
      sm80::cp_async_wait<0>();  // K_i has landed
      fence_proxy_async();
      __syncthreads();  // ... for every thread, V^T_(i-1) is stored, the GEMMs of i-1 are done
      if (i + 1 < num_blocks) load_k(block_of(i + 1), (i + 1) & 1);
      sm80::cp_async_commit();
      fetch_v(block_of(i));  // in flight under the GEMMs and the softmax

      float acc_s[kBlockN / 2];
      fence_registers(p_cur);
      fence_registers(acc_o);
      wgmma_fence();
      issue_qk_fp8<HeadDim, kBlockM, kBlockN>(acc_s, sQ, sK0 + (i & 1) * Tr::kSmemK, wg);
      issue_pv_fp8<HeadDim, kBlockN>(acc_o, p_cur, stage_vt((i - 1) & 1));
      wgmma_wait<1>();  // S_i is ready; P V may still run
      fence_registers(acc_s);
      float correction[2];
      softmax_block(acc_s, block_of(i), correction, true);
      softmax_before_wait(softmax);
      // V^T stage i % 2 was last read by P V(i-2), which every thread finished before this
      // iteration's barrier.
      vt.store(stage_vt(i & 1));
      fence_proxy_async();
      wgmma_wait<0>();
      // P V read p_cur asynchronously: keep its registers alive until the wait.
      fence_registers(p_cur);
      fence_registers(acc_o);
      rescale_o<HeadDim>(acc_o, correction);
      pack_probabilities_e4m3<kBlockN>(acc_s, p_cur);
    }
    // The last block's P V.
    sm80::cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();
    fence_registers(p_cur);
    fence_registers(acc_o);
    wgmma_fence();
    issue_pv_fp8<HeadDim, kBlockN>(acc_o, p_cur, stage_vt((num_blocks - 1) & 1));
    wgmma_wait<0>();
    fence_registers(acc_o);
    // O's V codes times v_descale.
    const float vd = v_descale(p, batch, head_k);
#pragma unroll
    for (int i = 0; i < HeadDim / 2; ++i) acc_o[i] *= vd;
  }

  store_output_rows<T, HeadDim>(launch, seq, acc_o, softmax, unit_log2, row_base, t, batch, head,
                                0);
}

}  // namespace sm90

// The launcher (family kSm90Fp8Prefill): one CTA per (query block, head, batch entry), the
// warp-specialised kernel's FP8 instance or, where the variant says so, the all-threads kernel
// above.
template <int Dtype, int HeadDim>
int run_fwd_fp8_sm90(const FwdLaunch& launch, cudaStream_t stream) {
  using T = typename ElementType<Dtype>::type;
  using Tr = sm90::Sm90Fp8Traits<HeadDim>;
  if (launch.family != FwdKernelFamily::kSm90Fp8Prefill || launch.block_m != Tr::kBlockM ||
      launch.block_n != Tr::kBlockN || launch.num_splits != 1 || is_paged(launch.p))
    return cudaErrorInvalidConfiguration;
  if (launch.sm90.warp_specialized) {
    // One CTA per tile, or persistent CTAs (one per SM) taking tiles by tickets of
    // launch.tile_counter, which flare_mha_fwd zeroed on the stream before this launch.
    using Ws = sm90::Sm90WsTraits<HeadDim, Tr::kBlockN, 2, 1, true>;
    static_assert(Ws::kBlockM == Tr::kBlockM, "the planner's FP8 tile");
    const bool persistent = launch.sm90.persistent;
    if (persistent && launch.tile_counter == nullptr) return cudaErrorInvalidConfiguration;
    auto kernel = persistent
                      ? sm90::fwd_kernel_sm90_ws<T, HeadDim, false, true, Tr::kBlockN, 2, 1, true>
                      : sm90::fwd_kernel_sm90_ws<T, HeadDim, false, false, Tr::kBlockN, 2, 1, true>;
    cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Ws::kSmemBytes);
    if (err != cudaSuccess) return err;
    const int m_blocks = (launch.max_seqlen_q + Ws::kBlockM - 1) / Ws::kBlockM;
    const int64_t tiles = int64_t(m_blocks) * launch.p.num_heads * launch.p.batch;
    if (tiles > INT32_MAX) return cudaErrorInvalidConfiguration;
    int ctas = int(tiles);
    if (persistent) ctas = ctas < launch.num_sms ? ctas : launch.num_sms;
    // Q, K and V's staging rows by TMA where the variant and the launch allow it (else, and
    // for the blocks that cannot, by cp.async); V^T by the producer threads' stores.
    Sm90TensorMaps maps{};
    const int maps_err = sm90::make_ws_tensor_maps(launch.p, launch.sm90, Ws::kBoxCols,
                                                   Ws::kBlockM, Ws::kBlockN, &maps);
    if (maps_err != 0) return maps_err;
    kernel<<<ctas, Ws::kThreads, Ws::kSmemBytes, stream>>>(
        launch, maps, launch.sm90.pingpong ? 1 : 0, m_blocks);
    return cudaGetLastError();
  }
  auto kernel = sm90::fwd_fp8_kernel_sm90<T, HeadDim>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes);
  if (err != cudaSuccess) return err;
  const int m_blocks = (launch.max_seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM;
  const dim3 grid(m_blocks, launch.p.num_heads, launch.p.batch);
  kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(launch);
  return cudaGetLastError();
}

}  // namespace flare
