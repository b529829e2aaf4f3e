// Picks the compiled kernel instance for a device architecture, dtype and head dimension.
#pragma once
#include "kernels/fwd_launch.h"

namespace flare {

using FwdKernelFn = int (*)(const FwdLaunch&, cudaStream_t);

// nullptr when this build has no instance for (cc_major, dtype, kernel_head_dim).
FwdKernelFn select_fwd_kernel(int cc_major, int dtype, int kernel_head_dim);

}  // namespace flare
