#include "api/device.h"

#include <atomic>
#include <mutex>

#include "api/error.h"

namespace flare {
namespace {

bool is_no_device_error(cudaError_t err) {
  switch (err) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInitializationError:
    case cudaErrorStubLibrary:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
      return true;
    default:
      return false;
  }
}

// Device facts of ordinals below kCachedDevices are cached: ready[d] is set (release) after
// info[d] is written under the mutex, and read (acquire) before info[d] is.
constexpr int kCachedDevices = 64;
std::atomic<bool> g_ready[kCachedDevices];
DeviceInfo g_info[kCachedDevices];
std::mutex g_info_mutex;

flare_status query_device(int device, DeviceInfo* info) {
  cudaError_t err = cudaDeviceGetAttribute(&info->cc_major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaErrorInvalidDevice) {
    cudaGetLastError();
    int count = 0;
    const cudaError_t count_err = cudaGetDeviceCount(&count);
    cudaGetLastError();
    if (count_err != cudaSuccess) return cuda_fail(count_err, "cudaGetDeviceCount");
    if (count == 0) return cuda_fail(cudaErrorNoDevice, "cudaDeviceGetAttribute(compute capability)");
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "device (%d) is not a CUDA device ordinal: %d devices",
                device, count);
  }
  if (err != cudaSuccess) return cuda_fail(err, "cudaDeviceGetAttribute(compute capability)");
  err = cudaDeviceGetAttribute(&info->cc_minor, cudaDevAttrComputeCapabilityMinor, device);
  if (err != cudaSuccess) return cuda_fail(err, "cudaDeviceGetAttribute(compute capability)");
  err = cudaDeviceGetAttribute(&info->num_sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return cuda_fail(err, "cudaDeviceGetAttribute(multiprocessor count)");
  err = cudaDeviceGetAttribute(&info->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) return cuda_fail(err, "cudaDeviceGetAttribute(shared memory per block)");
  return FLARE_OK;
}

}  // namespace

flare_status cuda_fail(cudaError_t err, const char* what) {
  cudaGetLastError();  // a failed runtime call must not poison the caller's next error check
  if (is_no_device_error(err))
    return fail(FLARE_ERROR_NO_DEVICE, "no CUDA driver/GPU found (%s failed: %s: %s)", what,
                cudaGetErrorName(err), cudaGetErrorString(err));
  return fail(FLARE_ERROR_CUDA, "%s failed: %s (%s)", what, cudaGetErrorName(err),
              cudaGetErrorString(err));
}

flare_status device_info(int device, DeviceInfo* info) {
  if (device < 0)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "device (%d) must be >= 0", device);
  const bool cacheable = device < kCachedDevices;
  if (cacheable && g_ready[device].load(std::memory_order_acquire)) {
    *info = g_info[device];
    return FLARE_OK;
  }
  DeviceInfo fresh;
  const flare_status st = query_device(device, &fresh);
  if (st != FLARE_OK) return st;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(g_info_mutex);
    if (!g_ready[device].load(std::memory_order_relaxed)) {
      g_info[device] = fresh;
      g_ready[device].store(true, std::memory_order_release);
    }
  }
  *info = fresh;
  return FLARE_OK;
}

flare_status stream_device(cudaStream_t stream, int* device) {
  bool current = stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread;
  if (!current) {
    // A stream that is being captured into a graph does not answer cudaStreamGetDevice
    // (cudaErrorStreamCaptureUnsupported, also under the relaxed capture mode): a captured call
    // runs on the calling thread's current device (flare.h says so).
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    const cudaError_t err = cudaStreamIsCapturing(stream, &capture);
    if (err != cudaSuccess) return cuda_fail(err, "cudaStreamIsCapturing");
    current = capture != cudaStreamCaptureStatusNone;
  }
  const cudaError_t err = current ? cudaGetDevice(device) : cudaStreamGetDevice(stream, device);
  return err == cudaSuccess ? FLARE_OK
                            : cuda_fail(err, current ? "cudaGetDevice" : "cudaStreamGetDevice");
}

ScopedDevice::~ScopedDevice() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

flare_status ScopedDevice::enter(int device) {
  int current = 0;
  cudaError_t err = cudaGetDevice(&current);
  if (err != cudaSuccess) return cuda_fail(err, "cudaGetDevice");
  if (current == device) return FLARE_OK;
  err = cudaSetDevice(device);
  if (err != cudaSuccess) return cuda_fail(err, "cudaSetDevice");
  previous_ = current;
  return FLARE_OK;
}

}  // namespace flare
