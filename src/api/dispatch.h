// Picks the compiled kernel instance that carries out a plan.
#pragma once
#include "kernels/fwd_launch.h"
#include "plan/plan.h"

namespace flare {

using FwdKernelFn = int (*)(const FwdLaunch&, cudaStream_t);

// The Hopper instances this build compiled (from FLARE_ARCHS / FLARE_DTYPES / FLARE_HEAD_DIMS).
KernelSet compiled_kernels();

// The launcher of the plan's family and head dim on a device of compute capability cc_major.x;
// nullptr when this build has no such instance.
FwdKernelFn select_fwd_kernel(int cc_major, const FwdPlan& plan);

}  // namespace flare
