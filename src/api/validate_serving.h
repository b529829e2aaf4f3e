// Host-side checks of the serving fields of flare_mha_fwd_params (flare.h): head dims
// (head_dim, head_dim_v), attention sinks, multimodal prefix ranges and paged KV (KV cache or
// paged varlen), and the list of what the GPU kernels do not implement yet.
#pragma once
#include "flare/flare.h"

namespace flare {

// The rules of the serving fields; called by validate_params once shapes, options, varlen and
// the KV cache are checked (a failure records a message naming the field).
flare_status validate_serving_fields(const flare_mha_fwd_params& p);

// Valid params the GPU kernels cannot run yet: each line names one feature and goes away when
// its kernels land. Called after every validation rule of the serving fields.
flare_status serving_features_not_yet_supported(const flare_mha_fwd_params& p);

// validate_serving_fields, then serving_features_not_yet_supported: validate_params' one call.
flare_status check_serving_params(const flare_mha_fwd_params& p);

}  // namespace flare
