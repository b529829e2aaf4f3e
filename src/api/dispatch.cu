#include "api/dispatch.h"

#include "common/tile_config.h"
#include "kernels/sm90/variant.h"

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
#if FLARE_HAS_HDIM_512
    case 512: return &run_fwd_sm80<Arch, Dtype, 512>;
#endif
    default: return nullptr;
  }
}

// The FP8 K/V decode instances (head dims up to 256 of FLARE_HEAD_DIMS).
template <int Arch, int Dtype>
FwdKernelFn fp8_for_head_dim(int head_dim) {
  switch (head_dim) {
#if FLARE_HAS_HDIM_32
    case 32: return &run_decode_fp8_sm80<Arch, Dtype, 32>;
#endif
#if FLARE_HAS_HDIM_64
    case 64: return &run_decode_fp8_sm80<Arch, Dtype, 64>;
#endif
#if FLARE_HAS_HDIM_96
    case 96: return &run_decode_fp8_sm80<Arch, Dtype, 96>;
#endif
#if FLARE_HAS_HDIM_128
    case 128: return &run_decode_fp8_sm80<Arch, Dtype, 128>;
#endif
#if FLARE_HAS_HDIM_192
    case 192: return &run_decode_fp8_sm80<Arch, Dtype, 192>;
#endif
#if FLARE_HAS_HDIM_256
    case 256: return &run_decode_fp8_sm80<Arch, Dtype, 256>;
#endif
    default: (void)head_dim; return nullptr;
  }
}

// The Hopper instances (sm90a builds, head dims 64, 128, 192, 256 and 512 of FLARE_HEAD_DIMS).
template <int Dtype>
FwdKernelFn sm90_for_head_dim(int head_dim) {
  switch (head_dim) {
#if FLARE_HAS_ARCH_90 && FLARE_HAS_HDIM_64
    case 64: return &run_fwd_sm90<Dtype, 64>;
#endif
#if FLARE_HAS_ARCH_90 && FLARE_HAS_HDIM_128
    case 128: return &run_fwd_sm90<Dtype, 128>;
#endif
#if FLARE_HAS_ARCH_90 && FLARE_HAS_HDIM_192
    case 192: return &run_fwd_sm90<Dtype, 192>;
#endif
#if FLARE_HAS_ARCH_90 && FLARE_HAS_HDIM_256
    case 256: return &run_fwd_sm90<Dtype, 256>;
#endif
#if FLARE_HAS_ARCH_90 && FLARE_HAS_HDIM_512
    case 512: return &run_fwd_sm90<Dtype, 512>;
#endif
    default: (void)head_dim; return nullptr;
  }
}

// The Hopper FP8 prefill instances (FLARE_FP8_PREFILL builds: sm90a, head dims 64, 128, 256 of
// FLARE_HEAD_DIMS).
template <int Dtype>
FwdKernelFn sm90_fp8_prefill_for_head_dim(int head_dim) {
  switch (head_dim) {
#if FLARE_FP8_PREFILL && FLARE_HAS_ARCH_90 && FLARE_HAS_HDIM_64
    case 64: return &run_fwd_fp8_sm90<Dtype, 64>;
#endif
#if FLARE_FP8_PREFILL && FLARE_HAS_ARCH_90 && FLARE_HAS_HDIM_128
    case 128: return &run_fwd_fp8_sm90<Dtype, 128>;
#endif
#if FLARE_FP8_PREFILL && FLARE_HAS_ARCH_90 && FLARE_HAS_HDIM_256
    case 256: return &run_fwd_fp8_sm90<Dtype, 256>;
#endif
    default: (void)head_dim; return nullptr;
  }
}

FwdKernelFn sm90_fp8_prefill_kernel(int dtype, int head_dim) {
#if FLARE_HAS_FP16
  if (dtype == FLARE_DTYPE_FP16) return sm90_fp8_prefill_for_head_dim<FLARE_DTYPE_FP16>(head_dim);
#endif
#if FLARE_HAS_BF16
  if (dtype == FLARE_DTYPE_BF16) return sm90_fp8_prefill_for_head_dim<FLARE_DTYPE_BF16>(head_dim);
#endif
  return nullptr;
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

template <int Arch>
FwdKernelFn for_dtype(int dtype, int head_dim, bool fp8_kv) {
#if FLARE_HAS_FP16
  if (dtype == FLARE_DTYPE_FP16)
    return fp8_kv ? fp8_for_head_dim<Arch, FLARE_DTYPE_FP16>(head_dim)
                  : for_head_dim<Arch, FLARE_DTYPE_FP16>(head_dim);
#endif
#if FLARE_HAS_BF16
  if (dtype == FLARE_DTYPE_BF16)
    return fp8_kv ? fp8_for_head_dim<Arch, FLARE_DTYPE_BF16>(head_dim)
                  : for_head_dim<Arch, FLARE_DTYPE_BF16>(head_dim);
#endif
  (void)dtype;
  (void)head_dim;
  (void)fp8_kv;
  return nullptr;
}

}  // namespace

KernelSet compiled_kernels() {
  KernelSet set;
  for (int dtype : {FLARE_DTYPE_FP16, FLARE_DTYPE_BF16}) {
    for (int d : {64, 128, 256, 512, 192}) {
      const int i = KernelSet::sm90_index(d);
      set.sm90[dtype][i] = sm90_kernel(dtype, d) != nullptr;
      set.sm90_fp8_prefill[dtype][i] = sm90_fp8_prefill_kernel(dtype, d) != nullptr;
    }
  }
  return set;
}

FwdKernelFn select_fwd_kernel(int cc_major, const FwdPlan& plan) {
  const int dtype = plan.p.dtype;
  switch (plan.family) {
    case FwdKernelFamily::kSm90WarpSpecialized:
    case FwdKernelFamily::kSm90AllThreads:
      return sm90_kernel(dtype, plan.sm90_head_dim);
    case FwdKernelFamily::kSm90Fp8Prefill:
      // sm_90a code runs on compute capability 9.0 only.
      return cc_major == 9 ? sm90_fp8_prefill_kernel(dtype, plan.sm90_head_dim) : nullptr;
    case FwdKernelFamily::kSm80Prefill:
    case FwdKernelFamily::kSm80Decode:
    case FwdKernelFamily::kSm80DecodeFp8: {
      const bool fp8 = plan.family == FwdKernelFamily::kSm80DecodeFp8;
#if FLARE_HAS_ARCH_90
      // sm_90a code runs on compute capability 9.0 only.
      if (cc_major == 9) return for_dtype<90>(dtype, plan.kernel_head_dim, fp8);
#endif
#if FLARE_HAS_ARCH_80
      // sm_80 code (and its PTX, JIT-compiled on newer GPUs) serves every other sm80+ device.
      if (cc_major >= 8) return for_dtype<80>(dtype, plan.kernel_head_dim, fp8);
#endif
      (void)fp8;
      return nullptr;
    }
    case FwdKernelFamily::kNone:
      break;
  }
  (void)cc_major;
  return nullptr;
}

}  // namespace flare
