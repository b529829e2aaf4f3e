#include "api/dispatch.h"

#include "common/tile_config.h"
#include "kernels/sm90/variant.h"

#include <cstdlib>
#include <cstring>

namespace flare {
namespace {

// Only instances that CMake generated (FLARE_ARCHS x FLARE_DTYPES x FLARE_HEAD_DIMS) exist.
template <int Arch, int Dtype>
FwdKernelFn for_head_dim(int head_dim) {
  switch (head_dim) {
#if FLARE_HAS_HDIM_32
    case 32: return &run_fwd_sm80<Arch, Dtype, 32>;
#endif
#if FLARE_HAS_HDIM_64
    case 64: return &run_fwd_sm80<Arch, Dtype, 64>;
#endif
#if FLARE_HAS_HDIM_96
    case 96: return &run_fwd_sm80<Arch, Dtype, 96>;
#endif
#if FLARE_HAS_HDIM_128
    case 128: return &run_fwd_sm80<Arch, Dtype, 128>;
#endif
#if FLARE_HAS_HDIM_192
    case 192: return &run_fwd_sm80<Arch, Dtype, 192>;
#endif
#if FLARE_HAS_HDIM_256
    case 256: return &run_fwd_sm80<Arch, Dtype, 256>;
#endif
    default: return nullptr;
  }
}

#if FLARE_HAS_ARCH_90
// Decode launches (<= 16 query rows per (batch, head), the planner's sm80_kernel_tile rule) go
// to the sm80 family's decode kernel of the padded head dim HeadDim, built for sm90a too; the
// rest to the wgmma kernel of sm90_kernel_head_dim(HeadDim): the d128 kernel for d96 and the
// d256 kernel for d192, with p.head_dim (96 / 192, or less) columns used and the rest
// zero-padded in shared memory.
template <int Dtype, int HeadDim>
int run_fwd_hopper(const FwdLaunch& launch, cudaStream_t stream) {
  if (sm80_use_decode_kernel(launch.max_seqlen_q))
    return run_fwd_sm80<90, Dtype, HeadDim>(launch, stream);
  return run_fwd_sm90<Dtype, sm90_kernel_head_dim(HeadDim)>(launch, stream);
}
#endif

// The Hopper kernels are built for head dims 64, 128 and 256 when sm90a is built (CMake: only
// those of FLARE_HEAD_DIMS); padded head dims 96 and 192 run on the 128 / 256 kernels when
// those exist (and their own decode instance does), else on the mma.sync family as before.
static_assert(sm90_kernel_head_dim(64) == 64 && sm90_kernel_head_dim(96) == 128 &&
                  sm90_kernel_head_dim(128) == 128 && sm90_kernel_head_dim(192) == 256 &&
                  sm90_kernel_head_dim(256) == 256 && sm90_kernel_head_dim(32) == 0,
              "the #if guards of sm90_for_head_dim name the Hopper instance each case needs");
template <int Dtype>
FwdKernelFn sm90_for_head_dim(int head_dim) {
  switch (head_dim) {
#if FLARE_HAS_ARCH_90 && FLARE_HAS_HDIM_64
    case 64: return &run_fwd_hopper<Dtype, 64>;
#endif
#if FLARE_HAS_ARCH_90 && FLARE_HAS_HDIM_96 && FLARE_HAS_HDIM_128
    case 96: return &run_fwd_hopper<Dtype, 96>;
#endif
#if FLARE_HAS_ARCH_90 && FLARE_HAS_HDIM_128
    case 128: return &run_fwd_hopper<Dtype, 128>;
#endif
#if FLARE_HAS_ARCH_90 && FLARE_HAS_HDIM_192 && FLARE_HAS_HDIM_256
    case 192: return &run_fwd_hopper<Dtype, 192>;
#endif
#if FLARE_HAS_ARCH_90 && FLARE_HAS_HDIM_256
    case 256: return &run_fwd_hopper<Dtype, 256>;
#endif
    default: (void)head_dim; return nullptr;
  }
}

FwdKernelFn sm90_kernel(int dtype, int head_dim) {
#if FLARE_HAS_FP16
  if (dtype == FLARE_DTYPE_FP16) return sm90_for_head_dim<FLARE_DTYPE_FP16>(head_dim);
#endif
#if FLARE_HAS_BF16
  if (dtype == FLARE_DTYPE_BF16) return sm90_for_head_dim<FLARE_DTYPE_BF16>(head_dim);
#endif
  return nullptr;
}

// FLARE_KERNEL_PATH=sm80 keeps Hopper GPUs on the mma.sync kernels (for comparison and as a
// fallback); read once.
bool hopper_path_disabled() {
  static const bool disabled = [] {
    const char* v = std::getenv("FLARE_KERNEL_PATH");
    return v != nullptr && std::strcmp(v, "sm80") == 0;
  }();
  return disabled;
}

template <int Arch>
FwdKernelFn for_dtype(int dtype, int head_dim) {
#if FLARE_HAS_FP16
  if (dtype == FLARE_DTYPE_FP16) return for_head_dim<Arch, FLARE_DTYPE_FP16>(head_dim);
#endif
#if FLARE_HAS_BF16
  if (dtype == FLARE_DTYPE_BF16) return for_head_dim<Arch, FLARE_DTYPE_BF16>(head_dim);
#endif
  (void)dtype;
  (void)head_dim;
  return nullptr;
}

}  // namespace

FwdKernelFn select_fwd_kernel(int cc_major, int dtype, int kernel_head_dim) {
  if (cc_major < 8) return nullptr;
#if FLARE_HAS_ARCH_90
  // sm_90a code runs on compute capability 9.0 only.
  if (cc_major == 9) {
    if (!hopper_path_disabled())
      if (FwdKernelFn fn = sm90_kernel(dtype, kernel_head_dim)) return fn;
    return for_dtype<90>(dtype, kernel_head_dim);
  }
#endif
#if FLARE_HAS_ARCH_80
  // sm_80 code (and its PTX, JIT-compiled on newer GPUs) serves every other sm80+ device.
  return for_dtype<80>(dtype, kernel_head_dim);
#else
  return nullptr;
#endif
}

}  // namespace flare
