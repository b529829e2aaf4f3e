// run_fwd_sm90: launches the Hopper kernel variant the plan chose (launch.family, launch.sm90;
// plan/plan.h), building the Q and K/V tensor maps where TMA applies. Reads no device attribute
// and no environment. Included by the generated fwd_sm90_wgmma_<dtype>_hdim<d>.cu translation
// units.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/sm90/fwd_kernel_sm90.cuh"
#include "kernels/sm90/fwd_kernel_sm90_ws.cuh"
#include "kernels/sm90/tma_maps.h"
#include "kernels/sm90/variant.h"
#include "kernels/sm90/ws_tensor_maps.h"

namespace flare {

namespace sm90 {

// The warp-specialised instance with BlockN-key blocks and ConsumerWGs consumer warpgroups
// (tensor maps built for its tiles): one CTA per tile or, when the variant is persistent, one
// per SM (launch.num_sms) taking tiles by tickets of launch.tile_counter. A BlockN other than
// the head dim's default (sm90_long_block_n) or three consumer warpgroups have a persistent
// instance only, which is all launch_ws sends them.
// ClusterM > 1: clusters of ClusterM CTAs sharing their K/V stages (Sm90WsTraits), one tile per
// CTA; where the K/V blocks cannot all go by TMA (the tensor maps could not be made, or their
// rows are not exact), the instance without clusters runs the launch instead.
template <typename T, int HeadDim, int BlockN = sm90_default_block_n(HeadDim), int ConsumerWGs = 2,
          int ClusterM = 1>
int launch_ws_kernel(const FwdLaunch& launch, cudaStream_t stream) {
  using Tr = Sm90WsTraits<HeadDim, BlockN, ConsumerWGs, ClusterM>;
  static_assert(Tr::kBlockM == sm90_ws_block_m(HeadDim, ConsumerWGs) && Tr::kBlockN == BlockN,
                "the planner's tile table (variant.h) and the instance agree");
  // The planner counted splits and tiles with this instance's tile.
  if (launch.block_m != Tr::kBlockM || launch.block_n != Tr::kBlockN)
    return cudaErrorInvalidConfiguration;
  const Sm90Variant& variant = launch.sm90;
  Sm90TensorMaps maps{};
  const int maps_err =
      make_ws_tensor_maps(launch.p, variant, Tr::kBoxCols, Tr::kBlockM, Tr::kBlockN, &maps);
  if (maps_err != 0) return maps_err;
  if constexpr (ClusterM > 1) {
    if (variant.persistent || is_paged(launch.p)) return cudaErrorInvalidConfiguration;
    if (!maps.kv_enabled || !maps.kv_rows_exact)
      return launch_ws_kernel<T, HeadDim, BlockN, ConsumerWGs, 1>(launch, stream);
    auto kernel = fwd_kernel_sm90_ws<T, HeadDim, false, false, BlockN, ConsumerWGs, ClusterM>;
    cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes);
    if (err != cudaSuccess) return err;
    const int m_blocks = (launch.max_seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM;
    const int64_t m_units = (m_blocks + ClusterM - 1) / ClusterM;
    const int64_t ctas =
        ClusterM * m_units * launch.p.num_heads * launch.p.batch * launch.num_splits;
    if (ctas > INT32_MAX) return cudaErrorInvalidConfiguration;
    cudaLaunchAttribute cluster{};
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = ClusterM;
    cluster.val.clusterDim.y = 1;
    cluster.val.clusterDim.z = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(unsigned(ctas));
    config.blockDim = dim3(Tr::kThreads);
    config.dynamicSmemBytes = Tr::kSmemBytes;
    config.stream = stream;
    config.attrs = &cluster;
    config.numAttrs = 1;
    return cudaLaunchKernelEx(&config, kernel, launch, maps, variant.pingpong ? 1 : 0, m_blocks);
  }
  constexpr bool kDefaultBlock = BlockN == sm90_default_block_n(HeadDim) && ConsumerWGs == 2;
  const bool persistent = variant.persistent;
  if (persistent && launch.tile_counter == nullptr) return cudaErrorInvalidConfiguration;
  auto kernel = fwd_kernel_sm90_ws<T, HeadDim, false, true, BlockN, ConsumerWGs>;
  if (is_paged(launch.p)) {
    // Paged KV has instances (persistent and one CTA per tile) for d64 / d128 with the default
    // key block and two consumer warpgroups only: the planner keeps paged d256 on the
    // all-threads kernel and paged launches on the default tile.
    if constexpr (HeadDim <= 128 && kDefaultBlock) {
      kernel = persistent ? fwd_kernel_sm90_ws<T, HeadDim, true, true>
                          : fwd_kernel_sm90_ws<T, HeadDim, true, false>;
    } else {
      return cudaErrorInvalidConfiguration;
    }
  } else if (!persistent) {
    if constexpr (kDefaultBlock)
      kernel = fwd_kernel_sm90_ws<T, HeadDim, false, false>;
    else
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
  if (persistent) ctas = ctas < launch.num_sms ? ctas : launch.num_sms;  // one CTA per SM
  // A persistent launch takes its tiles by tickets of launch.tile_counter, which
  // flare_mha_fwd zeroed on the stream right before this launch.
  kernel<<<ctas, Tr::kThreads, Tr::kSmemBytes, stream>>>(launch, maps, variant.pingpong ? 1 : 0,
                                                           m_blocks);
  return cudaGetLastError();
}

// The warp-specialised kernel: the instance with the variant's consumer warpgroups, key block
// and cluster (three warpgroups or the long block only when persistent; clusters at d512 only,
// one tile per CTA).
template <typename T, int HeadDim>
int launch_ws(const FwdLaunch& launch, cudaStream_t stream) {
  const Sm90Variant& variant = launch.sm90;
  if constexpr (sm90_ws_splits_o(HeadDim)) {
    if (variant.cluster_m == 2)
      return launch_ws_kernel<T, HeadDim, sm90_default_block_n(HeadDim), 2, 2>(launch, stream);
  }
  if constexpr (sm90_max_consumer_wgs(HeadDim) >= 3) {
    if (variant.consumer_wgs == 3)
      return launch_ws_kernel<T, HeadDim, sm90_default_block_n(HeadDim), 3>(launch, stream);
  }
  constexpr int kLongN = sm90_long_block_n(HeadDim);
  if constexpr (kLongN > 0) {
    if (variant.block_n == kLongN) return launch_ws_kernel<T, HeadDim, kLongN>(launch, stream);
  }
  return launch_ws_kernel<T, HeadDim>(launch, stream);
}

// The all-threads kernel: one CTA per tile, a 3-D grid (query block, head, batch x split).
template <typename T, int HeadDim>
int launch_all_threads(const FwdLaunch& launch, cudaStream_t stream) {
  using Tr = Sm90Traits<HeadDim>;
  static_assert(Tr::kBlockM == kSm90AllThreadsBlockM &&
                    Tr::kBlockN == sm90_all_threads_block_n(HeadDim),
                "the planner's tile table (variant.h) and the instance agree");
  if (launch.block_m != Tr::kBlockM || launch.block_n != Tr::kBlockN)
    return cudaErrorInvalidConfiguration;
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
  switch (launch.family) {
    case FwdKernelFamily::kSm90WarpSpecialized: return sm90::launch_ws<T, HeadDim>(launch, stream);
    case FwdKernelFamily::kSm90AllThreads:
      // d192 and d512 run warp-specialised only (sm90_d192_applies, sm90_d512_applies).
      if constexpr (!sm90_has_all_threads_kernel(HeadDim)) return cudaErrorInvalidConfiguration;
      else return sm90::launch_all_threads<T, HeadDim>(launch, stream);
    default: return cudaErrorInvalidConfiguration;
  }
}

}  // namespace flare
