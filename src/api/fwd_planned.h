// One forward call validated and planned once, then launched over buffers allocated after the
// plan (the Python binding's path: its workspace comes from the caller's allocator, e.g. torch's
// stream-ordered caching allocator, which keeps the call capturable in a CUDA graph).
//
// plan_mha_fwd runs exactly the checks and the plan of flare_mha_fwd_workspace_size (validation
// without a workspace, then the plan with one present) for `device`; plan.workspace_bytes is
// the workspace the launch needs. launch_planned_mha_fwd then binds the buffers allocated since
// and launches as flare_mha_fwd does (append pass, tile counter reset, forward, split combine),
// on `device` made current for the call. Internal (not part of the C ABI).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "api/dispatch.h"
#include "flare/flare.h"
#include "plan/plan.h"

namespace flare {

struct PlannedFwd {
  flare_mha_fwd_params full;  // the validated params
  FwdPlan plan;
  FwdKernelFn kernel;
  int device;
};

// Memory allocated after planning. out / lse / cache_seqlens: null keeps the pointer the params
// were planned with; non-null replaces a stand-in, which must have had the same alignment (the
// binding's stand-ins are 256-byte aligned, as is memory from cudaMalloc or torch's allocator),
// since validation and the plan's narrow-load choice read pointer alignment. workspace: at least
// plan.workspace_bytes, aligned to kWorkspaceAlignment (null with size 0 when none is needed).
struct PlannedFwdBuffers {
  void* out = nullptr;
  float* lse = nullptr;
  const int32_t* cache_seqlens = nullptr;
  void* workspace = nullptr;
  size_t workspace_size = 0;
};

// Validation and plan: a status and flare_last_error as flare_mha_fwd_workspace_size gives
// them; nothing touches the device except the (cached) query of its facts.
flare_status plan_mha_fwd(const flare_mha_fwd_params* params, int device, PlannedFwd* call);

// The launch: MISALIGNED / WORKSPACE_TOO_SMALL for bad buffers, else flare_mha_fwd's statuses.
flare_status launch_planned_mha_fwd(PlannedFwd* call, const PlannedFwdBuffers& buffers,
                                    cudaStream_t stream);

}  // namespace flare
