// run_fwd_sm90: picks the Hopper kernel variant for a launch (kernels/sm90/variant.h), builds
// the Q and K/V tensor maps when TMA applies, and launches. Included by the generated
// fwd_sm90_wgmma_<dtype>_hdim<d>.cu translation units.
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "kernels/sm90/fwd_kernel_sm90.cuh"
#include "kernels/sm90/fwd_kernel_sm90_ws.cuh"
#include "kernels/sm90/tma_maps.h"
#include "kernels/sm90/variant.h"

namespace flare {

namespace sm90 {

// The next slot of this translation unit's ring of tile counters (fwd_kernel_sm90_ws.cuh), one
// per dynamic-tiles launch, round robin.
static std::atomic<unsigned int> g_sm90_next_tile_counter_slot{0};

// Whether a dynamic-tiles launch may go to `stream`: not while it is being captured (a graph
// would replay the captured counter slot while later launches take it round robin), nor when
// the capture status cannot be read. Those launches run one CTA per tile instead.
inline bool dynamic_tiles_allowed(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(stream, &status) == cudaSuccess &&
         status == cudaStreamCaptureStatusNone;
}

// The Q and K/V tensor maps of a launch whose instance has block_m-row query tiles and
// block_n-key blocks, where the variant and the launch allow TMA.
inline int make_ws_tensor_maps(const flare_mha_fwd_params& p, const Sm90Variant& variant,
                               int block_m, int block_n, Sm90TensorMaps* maps) {
  if (variant.tma != TmaMode::kOff && kv_tma_unsupported_reason(p) == nullptr) {
    const int err = make_kv_tensor_maps(p, block_n, maps);
    // FLARE_SM90_TMA=require: a launch that qualifies must not fall back silently.
    if (err != 0 && variant.tma == TmaMode::kRequire) return err;
  }
  if (variant.tma_q != TmaMode::kOff && q_tma_unsupported_reason(p) == nullptr) {
    const int err = make_q_tensor_map(p, block_m, maps);
    if (err != 0 && variant.tma_q == TmaMode::kRequire) return err;
  }
  return 0;
}

// The warp-specialised kernel with QBuffers Q buffers, BlockN-key blocks and ConsumerWGs
// consumer warpgroups (tensor maps built for its tiles): one CTA per tile or, when persistent,
// one per SM, walking the tiles by static striding or (dynamic_tiles, unpaged persistent
// launches only) by tickets of an atomic counter. A BlockN other than the head dim's default
// (sm90_long_block_n) or three consumer warpgroups have the dynamic-tiles instance only, which
// is all launch_ws sends them.
template <typename T, int HeadDim, int QBuffers, int BlockN = sm90_default_block_n(HeadDim),
          int ConsumerWGs = 2>
int launch_ws_kernel(const FwdLaunch& launch, const Sm90Variant& variant, bool persistent,
                     bool dynamic_tiles, cudaStream_t stream) {
  using Tr = Sm90WsTraits<HeadDim, QBuffers, BlockN, ConsumerWGs>;
  Sm90TensorMaps maps{};
  const int maps_err = make_ws_tensor_maps(launch.p, variant, Tr::kBlockM, Tr::kBlockN, &maps);
  if (maps_err != 0) return maps_err;
  constexpr bool kDefaultBlock = BlockN == sm90_default_block_n(HeadDim) && ConsumerWGs == 2;
  auto kernel =
      fwd_kernel_sm90_ws<T, HeadDim, false, QBuffers, !kDefaultBlock, BlockN, ConsumerWGs>;
  int sched_slot = 0;
  if (is_paged(launch.p)) {
    // Paged KV has instances for d64 / d128 with one Q buffer only: variant.cpp keeps paged
    // d256 on the all-threads kernel and paged launches at one Q buffer and static striding.
    if constexpr (HeadDim <= 128 && QBuffers == 1 && kDefaultBlock)
      kernel = fwd_kernel_sm90_ws<T, HeadDim, true, 1>;
    else
      return cudaErrorInvalidConfiguration;
  } else if (persistent && dynamic_tiles) {
    if (dynamic_tiles_allowed(stream)) {
      kernel = fwd_kernel_sm90_ws<T, HeadDim, false, QBuffers, true, BlockN, ConsumerWGs>;
      sched_slot = int(g_sm90_next_tile_counter_slot.fetch_add(1, std::memory_order_relaxed) %
                       kSm90TileCounterSlots);
    } else if (kDefaultBlock) {
      persistent = false;  // captured: one CTA per tile (the hardware balances), not striding
    } else {
      return cudaErrorInvalidConfiguration;
    }
  } else if (!kDefaultBlock) {
    return cudaErrorInvalidConfiguration;
  }
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes);
  if (err != cudaSuccess) return err;
  const int m_blocks = (launch.max_seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM;
  const int64_t tiles =
      int64_t(m_blocks) * launch.p.num_heads * launch.p.batch * launch.num_splits;
  if (tiles > INT32_MAX) return cudaErrorInvalidConfiguration;
  int ctas = int(tiles);
  if (persistent) {
    int device = 0, sms = 0;
    err = cudaGetDevice(&device);
    if (err == cudaSuccess)
      err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err != cudaSuccess) return err;
    ctas = ctas < sms ? ctas : sms;  // one CTA per SM (its shared memory allows no more)
  }
  kernel<<<ctas, Tr::kThreads, Tr::kSmemBytes, stream>>>(launch, maps, variant.pingpong ? 1 : 0,
                                                           m_blocks, sched_slot);
  return cudaGetLastError();
}

// The warp-specialised kernel: the instance with the variant's consumer warpgroups and key
// block (three warpgroups or the long block only with dynamic tiles outside stream capture), Q
// buffers (2 only for persistent, unpaged launches of d64 / d128) and tile scheduler (dynamic
// only for persistent, unpaged launches outside stream capture).
template <typename T, int HeadDim>
int launch_ws(const FwdLaunch& launch, const Sm90Variant& variant, cudaStream_t stream) {
  constexpr int kLongN = sm90_long_block_n(HeadDim);
  const bool dynamic_only_ok =
      variant.dynamic_tiles && !is_paged(launch.p) && dynamic_tiles_allowed(stream);
  const bool two_q = variant.q_buffers == 2 && variant.persistent && !is_paged(launch.p);
  if constexpr (sm90_max_consumer_wgs(HeadDim) >= 3) {
    if (variant.consumer_wgs == 3 && dynamic_only_ok)
      return launch_ws_kernel<T, HeadDim, 1, sm90_default_block_n(HeadDim), 3>(launch, variant,
                                                                              true, true, stream);
  }
  if constexpr (kLongN > 0) {
    if (variant.block_n == kLongN && dynamic_only_ok)
      return two_q ? launch_ws_kernel<T, HeadDim, 2, kLongN>(launch, variant, true, true, stream)
                   : launch_ws_kernel<T, HeadDim, 1, kLongN>(launch, variant, true, true, stream);
  }
  if constexpr (sm90_max_q_buffers(HeadDim) >= 2) {
    if (two_q)
      return launch_ws_kernel<T, HeadDim, 2>(launch, variant, true, variant.dynamic_tiles, stream);
  }
  return launch_ws_kernel<T, HeadDim, 1>(launch, variant, variant.persistent,
                                         variant.dynamic_tiles, stream);
}

// The all-threads kernel: one CTA per (query block, head, batch x split).
template <typename T, int HeadDim>
int launch_all_threads(const FwdLaunch& launch, cudaStream_t stream) {
  using Tr = Sm90Traits<HeadDim>;
  auto kernel = is_paged(launch.p) ? fwd_kernel_sm90<T, HeadDim, true>
                                   : fwd_kernel_sm90<T, HeadDim, false>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes);
  if (err != cudaSuccess) return err;
  const int m_blocks = (launch.max_seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM;
  const dim3 grid(m_blocks, launch.p.num_heads, launch.p.batch * launch.num_splits);
  kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(launch);
  return cudaGetLastError();
}

}  // namespace sm90

template <int Dtype, int HeadDim>
int run_fwd_sm90(const FwdLaunch& launch, cudaStream_t stream) {
  using T = typename ElementType<Dtype>::type;
  const Sm90Variant variant = choose_sm90_variant(launch.p, HeadDim, sm90_overrides_from_env());
  return variant.warp_specialized ? sm90::launch_ws<T, HeadDim>(launch, variant, stream)
                                  : sm90::launch_all_threads<T, HeadDim>(launch, stream);
}

}  // namespace flare
