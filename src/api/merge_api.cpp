// flare_merge_attention_states: read and validate the params (no CUDA call before that), then
// launch the merge kernel (the device code shared with the split-KV combine) on the stream's
// device. Nothing is launched unless every check has passed.
#include <cuda_runtime.h>

#include "api/device.h"
#include "api/error.h"
#include "api/merge_validate.h"
#include "kernels/merge_launch.h"

using namespace flare;

extern "C" FLARE_API flare_status flare_merge_attention_states(const flare_merge_params* params,
                                                               void* cuda_stream) {
  flare_merge_params full;
  flare_status st = read_merge_params(params, &full);
  if (st != FLARE_OK) return st;
  st = validate_merge_params(&full);
  if (st != FLARE_OK) return st;
  cudaStream_t stream = static_cast<cudaStream_t>(cuda_stream);
  int device = 0;
  st = stream_device(stream, &device);
  if (st != FLARE_OK) return st;
  ScopedDevice on_device;
  st = on_device.enter(device);
  if (st != FLARE_OK) return st;
  const cudaError_t err = static_cast<cudaError_t>(run_merge_states(full, stream));
  if (err != cudaSuccess) return cuda_fail(err, "merge kernel");
  clear_error();
  return FLARE_OK;
}
