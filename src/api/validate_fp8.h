// Host-side checks of the FP8 fields of flare_mha_fwd_params (flare.h, "FP8 inputs"), and the
// refusal of FP8 inputs that the GPU kernels do not run.
#pragma once
#include "flare/flare.h"

namespace flare {

// The rules of kv_dtype, q_dtype and the descale arrays; called by validate_params once the
// tensors, shapes, options, varlen and KV cache fields are checked.
flare_status validate_fp8_fields(const flare_mha_fwd_params& p);

// Valid FP8 params the GPU kernels do not run (a status and a message naming the field): FP8 q
// (FP8 prefill); FP8 K/V past head dim 256 (they run on the decode kernel, decode_kernel.cuh)
// or with a narrow q / out / k_new / v_new (common/narrow.h: the FP8 instances move 16-byte
// chunks only). validate_params' last check, so everything else is validated first.
flare_status fp8_kernel_support(const flare_mha_fwd_params& p);

}  // namespace flare
