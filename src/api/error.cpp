#include "api/error.h"

#include <cstdarg>
#include <cstdio>

namespace flare {
namespace {
thread_local char t_last_error[512] = "";
}

flare_status fail(flare_status status, const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vsnprintf(t_last_error, sizeof(t_last_error), format, args);
  va_end(args);
  return status;
}

void clear_error() { t_last_error[0] = '\0'; }

}  // namespace flare

extern "C" FLARE_API const char* flare_last_error(void) { return flare::t_last_error; }

extern "C" FLARE_API const char* flare_status_string(flare_status status) {
  switch (status) {
    case FLARE_OK: return "ok";
    case FLARE_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case FLARE_ERROR_MISALIGNED: return "misaligned pointer or stride";
    case FLARE_ERROR_UNSUPPORTED_DTYPE: return "unsupported dtype";
    case FLARE_ERROR_UNSUPPORTED_HEAD_DIM: return "unsupported head dimension";
    case FLARE_ERROR_NOT_SUPPORTED: return "feature or combination not supported";
    case FLARE_ERROR_ARCH_NOT_SUPPORTED: return "GPU architecture not supported";
    case FLARE_ERROR_WORKSPACE_TOO_SMALL: return "workspace too small";
    case FLARE_ERROR_CUDA: return "CUDA error";
    case FLARE_ERROR_NO_DEVICE: return "no CUDA driver or GPU found";
  }
  return "unknown status";
}

extern "C" FLARE_API void flare_mha_fwd_params_init(flare_mha_fwd_params* params) {
  if (!params) return;
  *params = flare_mha_fwd_params{};
  params->struct_size = sizeof(flare_mha_fwd_params);
  params->window_left = -1;
  params->window_right = -1;
}
