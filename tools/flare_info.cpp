// flare-info: what this flare installation is and what it would do on this machine.
//
//   flare-info
//
// Prints the loaded library's version and build configuration (flare_version,
// flare_build_info), then every visible GPU (name, compute capability, SMs, memory) and the
// kernel family flare selects there for each head dimension of the build. Without a CUDA
// driver or GPU it says so in one line and exits 0: the build part is still useful there.
// Exit status 1 only when the header it was compiled with and the library it loaded disagree.
//
// The per-GPU choice is kernel_family (tools/kernel_family.h, tested in
// tests/cpu/test_kernel_family.cpp).
#include <cuda_runtime.h>
#include <flare/flare.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "kernel_family.h"

namespace {

// Value of `key` in flare_build_info's `key=value` lines ("" when absent).
std::string build_value(const char* key) {
  std::istringstream in(flare_build_info());
  const std::string prefix = std::string(key) + "=";
  for (std::string line; std::getline(in, line);)
    if (line.compare(0, prefix.size(), prefix) == 0) return line.substr(prefix.size());
  return "";
}

}  // namespace

int main() {
  std::printf("flare %s\n", flare_version());
  char header[64];
  std::snprintf(header, sizeof header, "%d.%d.%d", FLARE_VERSION_MAJOR, FLARE_VERSION_MINOR,
                FLARE_VERSION_PATCH);
  const bool mismatch = std::strcmp(header, flare_version()) != 0;
  if (mismatch)
    std::printf("WARNING: flare-info was compiled against flare.h %s but loaded library %s\n",
                header, flare_version());

  std::printf("build:\n");
  std::istringstream info(flare_build_info());
  for (std::string line; std::getline(info, line);) std::printf("  %s\n", line.c_str());

  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::printf("no CUDA driver/GPU found (%s)\n",
                err != cudaSuccess ? cudaGetErrorName(err) : "0 devices");
    return mismatch ? 1 : 0;
  }
  int driver = 0;
  cudaDriverGetVersion(&driver);
  std::printf("CUDA driver %d.%d, %d GPU%s\n", driver / 1000, driver % 1000 / 10, count,
              count == 1 ? "" : "s");

  const std::vector<std::string> archs = flare_info::split(build_value("archs"));
  const std::vector<std::string> head_dims = flare_info::split(build_value("head_dims"));
  // Only a tuning build (-DFLARE_TUNING=ON) lets the environment keep Hopper GPUs on the
  // mma.sync kernels; a default build reads no environment variable.
  const char* path = std::getenv("FLARE_KERNEL_PATH");
  const bool hopper_off = build_value("tuning") == "on" && path != nullptr &&
                          std::strcmp(path, "sm80") == 0;
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) {
      std::printf("GPU %d: properties unavailable\n", d);
      continue;
    }
    std::printf("GPU %d: %s, compute capability %d.%d, %d SMs, %.1f GiB\n", d, prop.name,
                prop.major, prop.minor, prop.multiProcessorCount,
                double(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
    const std::string family =
        flare_info::kernel_family(prop.major, prop.minor, archs, head_dims, hopper_off);
    std::printf("  flare runs: %s\n", family.c_str());
  }
  return mismatch ? 1 : 0;
}
