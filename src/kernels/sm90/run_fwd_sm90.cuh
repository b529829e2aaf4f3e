// run_fwd_sm90: picks the Hopper kernel variant for a launch (kernels/sm90/variant.h), builds
// the K/V tensor maps when TMA applies, and launches. Included by the generated
// fwd_sm90_wgmma_<dtype>_hdim<d>.cu translation units.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/sm90/fwd_kernel_sm90.cuh"
#include "kernels/sm90/fwd_kernel_sm90_ws.cuh"
#include "kernels/sm90/tma_maps.h"
#include "kernels/sm90/variant.h"

namespace flare {

namespace sm90 {

// The warp-specialised kernel: K/V tensor maps when TMA applies, one CTA per tile or, when
// persistent, one per SM.
template <typename T, int HeadDim>
int launch_ws(const FwdLaunch& launch, const Sm90Variant& variant, cudaStream_t stream) {
  using Tr = Sm90WsTraits<HeadDim>;
  KvTensorMaps maps{};
  if (variant.tma != TmaMode::kOff && kv_tma_unsupported_reason(launch.p) == nullptr) {
    const int err = make_kv_tensor_maps(launch.p, Tr::kBlockN, &maps);
    // FLARE_SM90_TMA=require: a launch that qualifies must not fall back silently.
    if (err != 0 && variant.tma == TmaMode::kRequire) return err;
  }
  auto kernel = fwd_kernel_sm90_ws<T, HeadDim, false>;
  if constexpr (HeadDim <= 128)  // paged head dim 256 never gets here (variant.cpp)
    if (is_paged(launch.p)) kernel = fwd_kernel_sm90_ws<T, HeadDim, true>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes);
  if (err != cudaSuccess) return err;
  const int m_blocks = (launch.max_seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM;
  const int64_t tiles =
      int64_t(m_blocks) * launch.p.num_heads * launch.p.batch * launch.num_splits;
  if (tiles > INT32_MAX) return cudaErrorInvalidConfiguration;
  int ctas = int(tiles);
  if (variant.persistent) {
    int device = 0, sms = 0;
    err = cudaGetDevice(&device);
    if (err == cudaSuccess)
      err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err != cudaSuccess) return err;
    ctas = ctas < sms ? ctas : sms;  // one CTA per SM (its shared memory allows no more)
  }
  kernel<<<ctas, Tr::kThreads, Tr::kSmemBytes, stream>>>(launch, maps, variant.pingpong ? 1 : 0,
                                                           m_blocks);
  return cudaGetLastError();
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
