// Every rule a kernel relies on, checked on the host before anything is launched.
#pragma once
#include "flare/flare.h"

namespace flare {

// Checks params (not the workspace, which depends on the plan). On failure records a message
// naming the offending field and its value (flare_last_error) and returns the status.
flare_status validate_params(const flare_mha_fwd_params* params);

// Copies the caller's struct (which may be older/smaller: struct_size) into a full one.
flare_status read_params(const flare_mha_fwd_params* params, flare_mha_fwd_params* full);

}  // namespace flare
