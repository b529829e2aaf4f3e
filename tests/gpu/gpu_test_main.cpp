// Entry point of flare_tests_gpu. Without a CUDA device every test skips and the run succeeds,
// so the suite can sit in a CPU-only CI job; with one it prints the device and runs.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "gpu/gpu_test_util.h"

namespace flare_test {
bool g_has_device = false;
int g_device = 0;
}  // namespace flare_test

// Exit status that ctest's SKIP_RETURN_CODE maps to "Skipped".
constexpr int kSkipReturnCode = 77;

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);

  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear the sticky-free error of the failed query
    std::printf("flare_tests_gpu: no CUDA device found -- GPU tests SKIPPED (%s)\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
    std::fflush(stdout);
    flare_test::g_has_device = false;
    // ctest reports the test as skipped (SKIP_RETURN_CODE), visibly, instead of passed.
    const int result = RUN_ALL_TESTS();
    return result != 0 ? result : kSkipReturnCode;
  } else {
    flare_test::g_device = 0;
    cudaDeviceProp prop{};
    if (cudaSetDevice(flare_test::g_device) != cudaSuccess ||
        cudaGetDeviceProperties(&prop, flare_test::g_device) != cudaSuccess) {
      std::printf("flare_tests_gpu: could not open CUDA device 0 -- GPU tests SKIPPED\n");
      flare_test::g_has_device = false;
    } else {
      flare_test::g_has_device = true;
      std::printf("flare_tests_gpu: device 0 of %d: %s (sm_%d%d, %d SMs, %.1f GiB)\n", count,
                  prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                  double(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
    }
    std::printf("flare_tests_gpu: %d host threads for the CPU reference, %s sweep, seed 0x%llx\n",
                flare_test::host_threads(), flare_test::quick_mode() ? "QUICK" : "full",
                static_cast<unsigned long long>(flare_test::base_seed()));
    std::fflush(stdout);
  }
  return RUN_ALL_TESTS();
}
