// The device side of a call: which device it runs on, that device's facts (read once per
// device and cached), and CUDA errors turned into statuses and messages.
#pragma once
#include <cuda_runtime.h>

#include "flare/flare.h"
#include "plan/plan.h"

namespace flare {

// FLARE_ERROR_NO_DEVICE for the errors of a machine without a usable driver or GPU, else
// FLARE_ERROR_CUDA; the message names `what` and the CUDA error.
flare_status cuda_fail(cudaError_t err, const char* what);

// The facts of `device` (compute capability, SMs, opt-in shared memory per block), queried at
// the first call for that ordinal and cached; thread-safe.
flare_status device_info(int device, DeviceInfo* info);

// The device a stream belongs to: cudaStreamGetDevice for a created stream, the calling
// thread's current device for the legacy and per-thread default streams (null, cudaStreamLegacy,
// cudaStreamPerThread) and for a stream that is being captured.
flare_status stream_device(cudaStream_t stream, int* device);

// Makes `device` current for the calling thread while it lives (launches and function
// attributes apply to the current device), and restores the previous one.
class ScopedDevice {
 public:
  ScopedDevice() = default;
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  ~ScopedDevice();
  flare_status enter(int device);

 private:
  int previous_ = -1;
};

}  // namespace flare
