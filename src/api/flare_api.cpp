// The C entry points: validate, plan, check the workspace, then launch (append pass, forward,
// split combine). Nothing is launched or written unless every check has passed.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>

#include "api/dispatch.h"
#include "api/error.h"
#include "api/validate.h"
#include "common/sequence.h"
#include "common/tile_config.h"
#include "plan/plan.h"

namespace flare {
namespace {

struct DeviceInfo {
  int cc_major = 0;
  int num_sms = 0;
  int smem_optin = 0;  // shared memory a block may opt in to, bytes
};

// FLARE_SMEM_LIMIT_KB (read once; a testing hook) lowers the opt-in shared memory flare assumes,
// so a large-memory GPU can run the fallbacks of 99 KB parts (sm86/sm89/sm120) on the mma.sync
// kernels (FLARE_KERNEL_PATH=sm80 on Hopper). 0: the device's own limit.
int smem_limit_override() {
  static const int bytes = [] {
    const char* v = std::getenv("FLARE_SMEM_LIMIT_KB");
    const int kb = v != nullptr ? std::atoi(v) : 0;
    return kb > 0 ? kb * 1024 : 0;
  }();
  return bytes;
}

flare_status cuda_fail(cudaError_t err, const char* what) {
  return fail(FLARE_ERROR_CUDA, "%s failed: %s (%s)", what, cudaGetErrorName(err),
              cudaGetErrorString(err));
}

flare_status query_device(int device, DeviceInfo* info) {
  cudaError_t err = cudaDeviceGetAttribute(&info->cc_major, cudaDevAttrComputeCapabilityMajor, device);
  if (err != cudaSuccess) return cuda_fail(err, "cudaDeviceGetAttribute(compute capability)");
  err = cudaDeviceGetAttribute(&info->num_sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return cuda_fail(err, "cudaDeviceGetAttribute(multiprocessor count)");
  err = cudaDeviceGetAttribute(&info->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) return cuda_fail(err, "cudaDeviceGetAttribute(shared memory per block)");
  const int cap = smem_limit_override();
  if (cap > 0 && cap < info->smem_optin) info->smem_optin = cap;
  return FLARE_OK;
}

// Validates, reads the device and builds the plan; on success also returns the kernel and the
// device's opt-in shared memory per block.
flare_status prepare(const flare_mha_fwd_params* params, int device, flare_mha_fwd_params* full,
                     FwdPlan* plan, FwdKernelFn* kernel, int* smem_optin = nullptr) {
  flare_status st = read_params(params, full);
  if (st != FLARE_OK) return st;
  st = validate_params(full);
  if (st != FLARE_OK) return st;
  DeviceInfo info;
  st = query_device(device, &info);
  if (st != FLARE_OK) return st;
  if (info.cc_major < 8)
    return fail(FLARE_ERROR_ARCH_NOT_SUPPORTED,
                "device %d has compute capability %d.x; flare needs sm80 or newer", device,
                info.cc_major);
  *plan = plan_forward(*full, info.num_sms);
  // The heuristic never asks for memory the caller did not offer: no workspace, no split.
  if (full->num_splits == 0 && full->workspace == nullptr && plan->num_splits > 1) {
    flare_mha_fwd_params no_split = *full;
    no_split.num_splits = 1;
    *plan = plan_forward(no_split, info.num_sms);
  }
  if (plan->workspace_bytes == kWorkspaceUnsatisfiable)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "the workspace of this call (num_splits %d, batch %d, heads %d, max_seqlen_q %d, "
                "head_dim %d) overflows size_t: lower num_splits",
                plan->num_splits, full->batch, full->num_heads, plan->max_seqlen_q,
                full->head_dim);
  *kernel = select_fwd_kernel(info.cc_major, full->dtype, plan->kernel_head_dim);
  if (*kernel == nullptr)
    return fail(FLARE_ERROR_ARCH_NOT_SUPPORTED,
                "no kernel for compute capability %d.x, dtype %d, head_dim %d (kernel head dim "
                "%d): not in this build's FLARE_ARCHS / FLARE_DTYPES / FLARE_HEAD_DIMS",
                info.cc_major, full->dtype, full->head_dim, plan->kernel_head_dim);
  // Every kernel of the Hopper path fits its 227 KB; the smallest mma.sync variant of every head
  // dim fits 99 KB (sm86/sm89/sm120). A device with less is refused here, before anything is
  // written.
  if (info.cc_major != 9 &&
      sm80_fitting_kernel(plan->kernel_head_dim, plan->max_seqlen_q, info.smem_optin) ==
          Sm80Kernel::kNone)
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "head_dim %d (kernel head dim %d) needs %d bytes of shared memory per block on "
                "this GPU's kernels; device %d allows %d: not supported on this device yet",
                full->head_dim, plan->kernel_head_dim,
                sm80_prefill_min_smem_bytes(plan->kernel_head_dim), device, info.smem_optin);
  if (smem_optin) *smem_optin = info.smem_optin;
  return FLARE_OK;
}

}  // namespace
}  // namespace flare

using namespace flare;

extern "C" FLARE_API flare_status flare_mha_fwd_workspace_size(const flare_mha_fwd_params* params,
                                                               int device, size_t* bytes) {
  if (bytes == nullptr) return fail(FLARE_ERROR_INVALID_ARGUMENT, "bytes is null");
  flare_mha_fwd_params full;
  FwdPlan plan;
  FwdKernelFn kernel;
  // The size is what the heuristic would use with a workspace present.
  flare_mha_fwd_params probe;
  flare_status st = read_params(params, &probe);
  if (st != FLARE_OK) return st;
  probe.workspace = reinterpret_cast<void*>(uintptr_t(kWorkspaceAlignment));
  probe.workspace_size = 0;
  st = prepare(&probe, device, &full, &plan, &kernel);
  if (st != FLARE_OK) return st;
  *bytes = plan.workspace_bytes;
  clear_error();
  return FLARE_OK;
}

extern "C" FLARE_API flare_status flare_mha_fwd_num_splits(const flare_mha_fwd_params* params,
                                                           int device, int* num_splits) {
  if (num_splits == nullptr) return fail(FLARE_ERROR_INVALID_ARGUMENT, "num_splits is null");
  flare_mha_fwd_params full;
  FwdPlan plan;
  FwdKernelFn kernel;
  flare_status st = prepare(params, device, &full, &plan, &kernel);
  if (st != FLARE_OK) return st;
  *num_splits = plan.num_splits;
  clear_error();
  return FLARE_OK;
}

extern "C" FLARE_API flare_status flare_can_implement(const flare_mha_fwd_params* params,
                                                      int device) {
  flare_mha_fwd_params full;
  FwdPlan plan;
  FwdKernelFn kernel;
  flare_status st = prepare(params, device, &full, &plan, &kernel);
  if (st != FLARE_OK) return st;
  if (plan.workspace_bytes > full.workspace_size)
    return fail(FLARE_ERROR_WORKSPACE_TOO_SMALL,
                "workspace_size (%zu) is smaller than the %zu bytes this call needs",
                full.workspace_size, plan.workspace_bytes);
  clear_error();
  return FLARE_OK;
}

extern "C" FLARE_API flare_status flare_mha_fwd(const flare_mha_fwd_params* params,
                                                void* cuda_stream) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return cuda_fail(err, "cudaGetDevice");
  flare_mha_fwd_params full;
  FwdPlan plan;
  FwdKernelFn kernel;
  int smem_optin = 0;
  flare_status st = prepare(params, device, &full, &plan, &kernel, &smem_optin);
  if (st != FLARE_OK) return st;
  if (plan.workspace_bytes > full.workspace_size)
    return fail(FLARE_ERROR_WORKSPACE_TOO_SMALL,
                "workspace_size (%zu) is smaller than the %zu bytes this call needs "
                "(flare_mha_fwd_workspace_size tells)",
                full.workspace_size, plan.workspace_bytes);

  cudaStream_t stream = static_cast<cudaStream_t>(cuda_stream);
  char* workspace = static_cast<char*>(full.workspace);
  FwdLaunch launch{};
  launch.p = plan.p;
  launch.num_splits = plan.num_splits;
  launch.max_seqlen_q = plan.max_seqlen_q;
  launch.smem_optin = smem_optin;
  if (plan.num_splits > 1) {
    launch.o_accum = reinterpret_cast<float*>(workspace + plan.o_accum_offset);
    launch.lse_accum = reinterpret_cast<float*>(workspace + plan.lse_accum_offset);
  }

  if (is_kv_cache(full) && full.k_new != nullptr) {
    void* q_rotated = plan.rotate_q ? workspace + plan.q_rot_offset : nullptr;
    err = static_cast<cudaError_t>(run_append_kv(full, q_rotated, stream));
    if (err != cudaSuccess) return cuda_fail(err, "KV cache append kernel");
    if (q_rotated) launch.p.q = q_rotated;
  }
  err = static_cast<cudaError_t>(kernel(launch, stream));
  if (err != cudaSuccess) return cuda_fail(err, "forward kernel");
  if (plan.num_splits > 1) {
    err = static_cast<cudaError_t>(run_split_combine(launch, stream));
    if (err != cudaSuccess) return cuda_fail(err, "split-KV combine kernel");
  }
  clear_error();
  return FLARE_OK;
}
