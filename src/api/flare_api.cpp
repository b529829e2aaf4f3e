// The C entry points: read and validate the params (no CUDA call before that), read the
// device's facts, plan, check the workspace, then launch (append pass, forward, split combine).
// Nothing is launched or written unless every check has passed.
#include <cuda_runtime.h>

#include <cstdint>

#include "api/device.h"
#include "api/dispatch.h"
#include "api/error.h"
#include "api/fwd_planned.h"
#include "api/validate.h"
#include "common/fp8_params.h"
#include "common/sequence.h"
#include "common/tile_config.h"
#include "plan/plan.h"
#include "plan/tuning.h"

namespace flare {
namespace {

// The validated params of a call: its first step, before any CUDA call.
flare_status read_and_validate(const flare_mha_fwd_params* params, flare_mha_fwd_params* full) {
  const flare_status st = read_params(params, full);
  return st != FLARE_OK ? st : validate_params(full);
}

// Reads the device and builds the plan of validated params; on success also returns the
// kernel that carries it out.
flare_status plan_call(const flare_mha_fwd_params& full, int device, FwdPlan* plan,
                       FwdKernelFn* kernel) {
  DeviceInfo info;
  flare_status st = device_info(device, &info);
  if (st != FLARE_OK) return st;
  if (info.cc_major < 8)
    return fail(FLARE_ERROR_ARCH_NOT_SUPPORTED,
                "device %d has compute capability %d.%d; flare needs sm80 or newer", device,
                info.cc_major, info.cc_minor);
  static const KernelSet kernels = compiled_kernels();
  *plan = plan_forward(full, info, current_tuning(), kernels);
  if (plan->family == FwdKernelFamily::kNone && has_fp8_q(full))
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "q_dtype e4m3, head_dim %d: no FP8 prefill kernel for this call (the Hopper FP8 "
                "kernel needs compute capability 9.0, a FLARE_FP8_PREFILL build with the head "
                "dim, unpaged K/V); device %d has compute capability %d.%d",
                full.head_dim, device, info.cc_major, info.cc_minor);
  if (plan->family == FwdKernelFamily::kNone && has_fp8_kv(full))
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "kv_dtype %d, head_dim %d: the FP8 decode kernel (kernel head dim %d) needs %d "
                "bytes of shared memory per block; device %d allows %d",
                full.kv_dtype, full.head_dim, plan->kernel_head_dim,
                sm80_decode_smem_bytes(plan->kernel_head_dim, true), device, info.smem_optin);
  if (plan->family == FwdKernelFamily::kNone)
    return fail(FLARE_ERROR_NOT_SUPPORTED,
                "head_dim %d (kernel head dim %d) needs %d bytes of shared memory per block on "
                "this GPU's kernels; device %d allows %d: not supported on this device yet",
                full.head_dim, plan->kernel_head_dim,
                sm80_prefill_min_smem_bytes(plan->kernel_head_dim), device, info.smem_optin);
  if (plan->workspace_bytes == kWorkspaceUnsatisfiable)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "the workspace of this call (num_splits %d, batch %d, heads %d, max_seqlen_q %d, "
                "head_dim %d) overflows size_t: lower num_splits",
                plan->num_splits, full.batch, full.num_heads, plan->max_seqlen_q, full.head_dim);
  *kernel = select_fwd_kernel(info.cc_major, *plan);
  if (*kernel == nullptr)
    return fail(FLARE_ERROR_ARCH_NOT_SUPPORTED,
                "no kernel for compute capability %d.%d, dtype %d, head_dim %d (kernel head dim "
                "%d): not in this build's FLARE_ARCHS / FLARE_DTYPES / FLARE_HEAD_DIMS",
                info.cc_major, info.cc_minor, full.dtype, full.head_dim, plan->kernel_head_dim);
  return FLARE_OK;
}

// The query entry points' common part: the caller's params read and validated, then planned
// for `device` (the plan's kernel is not needed there).
flare_status validate_and_plan(const flare_mha_fwd_params* params, int device,
                               flare_mha_fwd_params* full, FwdPlan* plan) {
  flare_status st = read_and_validate(params, full);
  if (st != FLARE_OK) return st;
  FwdKernelFn kernel;
  return plan_call(*full, device, plan, &kernel);
}

flare_status check_workspace(const flare_mha_fwd_params& full, const FwdPlan& plan) {
  if (plan.workspace_bytes > full.workspace_size)
    return fail(FLARE_ERROR_WORKSPACE_TOO_SMALL,
                "workspace_size (%zu) is smaller than the %zu bytes this call needs "
                "(flare_mha_fwd_workspace_size tells)",
                full.workspace_size, plan.workspace_bytes);
  return FLARE_OK;
}

// The launch description of a plan over the caller's workspace.
FwdLaunch make_launch(const FwdPlan& plan, char* workspace) {
  FwdLaunch launch{};
  launch.p = plan.p;
  launch.num_splits = plan.num_splits;
  launch.max_seqlen_q = plan.max_seqlen_q;
  if (plan.o_accum_offset != kNoRegion)
    launch.o_accum = reinterpret_cast<float*>(workspace + plan.o_accum_offset);
  if (plan.lse_accum_offset != kNoRegion)
    launch.lse_accum = reinterpret_cast<float*>(workspace + plan.lse_accum_offset);
  if (plan.q_rot_offset != kNoRegion) launch.p.q = workspace + plan.q_rot_offset;
  launch.family = plan.family;
  launch.block_m = plan.tile.block_m;
  launch.block_n = plan.tile.block_n;
  launch.kernel_head_dim_v = plan.kernel_head_dim_v;
  launch.v_parts = plan.v_parts;
  launch.sm80_swizzled = plan.sm80_swizzled;
  launch.narrow = plan.narrow;
  launch.small_pages = plan.small_pages;
  launch.sm90 = plan.sm90;
  launch.num_sms = plan.num_sms;
  launch.combine_pdl = plan.combine_pdl;
  launch.packed_gqa = plan.packed_gqa;
  if (plan.tile_counter_offset != kNoRegion)
    launch.tile_counter = reinterpret_cast<unsigned int*>(workspace + plan.tile_counter_offset);
  return launch;
}

// Carries out a checked plan on `device` (made current for the call): the append pass, the
// tile counter's reset, the forward kernel, the split combine.
flare_status launch_plan(const flare_mha_fwd_params& full, const FwdPlan& plan, FwdKernelFn kernel,
                         int device, cudaStream_t stream) {
  // Launches go to the current device: the call's device is made current while it launches.
  ScopedDevice on_device;
  flare_status st = on_device.enter(device);
  if (st != FLARE_OK) return st;
  const FwdLaunch launch = make_launch(plan, static_cast<char*>(full.workspace));
  cudaError_t err;
  if (is_kv_cache(full) && full.k_new != nullptr) {
    err = static_cast<cudaError_t>(
        run_append_kv(full, plan.rotate_q ? const_cast<void*>(launch.p.q) : nullptr, stream));
    if (err != cudaSuccess) return cuda_fail(err, "KV cache append kernel");
  }
  if (launch.tile_counter != nullptr) {
    err = cudaMemsetAsync(launch.tile_counter, 0, kSm90TileCounterBytes, stream);
    if (err != cudaSuccess) return cuda_fail(err, "cudaMemsetAsync(tile counter)");
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

}  // namespace
}  // namespace flare

using namespace flare;

extern "C" FLARE_API flare_status flare_mha_fwd_workspace_size(const flare_mha_fwd_params* params,
                                                               int device, size_t* bytes) {
  if (bytes == nullptr) return fail(FLARE_ERROR_INVALID_ARGUMENT, "bytes is null");
  // The size is what the plan needs with a workspace present, whatever the workspace fields
  // hold now (plan_mha_fwd).
  PlannedFwd call;
  const flare_status st = plan_mha_fwd(params, device, &call);
  if (st != FLARE_OK) return st;
  *bytes = call.plan.workspace_bytes;
  return FLARE_OK;
}

extern "C" FLARE_API flare_status flare_mha_fwd_num_splits(const flare_mha_fwd_params* params,
                                                           int device, int* num_splits) {
  if (num_splits == nullptr) return fail(FLARE_ERROR_INVALID_ARGUMENT, "num_splits is null");
  flare_mha_fwd_params full;
  FwdPlan plan;
  const flare_status st = validate_and_plan(params, device, &full, &plan);
  if (st != FLARE_OK) return st;
  *num_splits = plan.num_splits;
  clear_error();
  return FLARE_OK;
}

extern "C" FLARE_API flare_status flare_can_implement(const flare_mha_fwd_params* params,
                                                      int device) {
  flare_mha_fwd_params full;
  FwdPlan plan;
  flare_status st = validate_and_plan(params, device, &full, &plan);
  if (st != FLARE_OK) return st;
  st = check_workspace(full, plan);
  if (st != FLARE_OK) return st;
  clear_error();
  return FLARE_OK;
}

extern "C" FLARE_API flare_status flare_mha_fwd(const flare_mha_fwd_params* params,
                                                void* cuda_stream) {
  flare_mha_fwd_params full;
  flare_status st = read_and_validate(params, &full);
  if (st != FLARE_OK) return st;
  cudaStream_t stream = static_cast<cudaStream_t>(cuda_stream);
  int device = 0;
  st = stream_device(stream, &device);
  if (st != FLARE_OK) return st;
  FwdPlan plan;
  FwdKernelFn kernel;
  st = plan_call(full, device, &plan, &kernel);
  if (st != FLARE_OK) return st;
  st = check_workspace(full, plan);
  if (st != FLARE_OK) return st;
  return launch_plan(full, plan, kernel, device, stream);
}

namespace flare {

flare_status plan_mha_fwd(const flare_mha_fwd_params* params, int device, PlannedFwd* call) {
  if (call == nullptr) return fail(FLARE_ERROR_INVALID_ARGUMENT, "call is null");
  // Validated without a workspace, planned with one present (heuristic splits, persistent
  // tiles): an aligned placeholder address stands for it.
  flare_status st = read_params(params, &call->full);
  if (st != FLARE_OK) return st;
  call->full.workspace = nullptr;
  call->full.workspace_size = 0;
  st = validate_params(&call->full);
  if (st != FLARE_OK) return st;
  call->full.workspace = reinterpret_cast<void*>(uintptr_t(kWorkspaceAlignment));
  st = plan_call(call->full, device, &call->plan, &call->kernel);
  if (st != FLARE_OK) return st;
  call->device = device;
  clear_error();
  return FLARE_OK;
}

flare_status launch_planned_mha_fwd(PlannedFwd* call, const PlannedFwdBuffers& buffers,
                                    cudaStream_t stream) {
  if (call == nullptr) return fail(FLARE_ERROR_INVALID_ARGUMENT, "call is null");
  flare_mha_fwd_params& full = call->full;
  flare_mha_fwd_params& kp = call->plan.p;
  if (reinterpret_cast<uintptr_t>(buffers.workspace) % kWorkspaceAlignment != 0)
    return fail(FLARE_ERROR_MISALIGNED, "workspace (%p) must be aligned to %zu bytes",
                buffers.workspace, kWorkspaceAlignment);
  if (buffers.workspace == nullptr && buffers.workspace_size > 0)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "workspace is null but workspace_size (%zu) is > 0",
                buffers.workspace_size);
  for (flare_mha_fwd_params* p : {&full, &kp}) {
    if (buffers.out) p->out = buffers.out;
    if (buffers.lse) p->lse = buffers.lse;
    if (buffers.cache_seqlens) p->cache_seqlens = buffers.cache_seqlens;
    p->workspace = buffers.workspace;
    p->workspace_size = buffers.workspace_size;
  }
  const flare_status st = check_workspace(full, call->plan);
  if (st != FLARE_OK) return st;
  return launch_plan(full, call->plan, call->kernel, call->device, stream);
}

}  // namespace flare
