// Host-side checks of the FP8 fields of flare_mha_fwd_params (flare.h, "FP8 inputs"), and the
// refusal of FP8 inputs that the GPU kernels do not run yet.
#pragma once
#include "flare/flare.h"

namespace flare {

// The rules of kv_dtype, q_dtype and the descale arrays; called by validate_params once the
// tensors, shapes, options, varlen and KV cache fields are checked.
flare_status validate_fp8_fields(const flare_mha_fwd_params& p);

// Valid FP8 params the GPU kernels cannot run yet (FLARE_ERROR_NOT_SUPPORTED naming the
// field); validate_params' last check, so everything else about such a call is validated first.
flare_status fp8_not_yet_supported(const flare_mha_fwd_params& p);

}  // namespace flare
