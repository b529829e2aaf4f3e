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
// The per-GPU choice mirrors select_fwd_kernel in src/api/dispatch.cu (the library has no
// public query for it): compute capability 9.0 with sm90a built runs the Hopper wgmma kernels
// for head dims 64 / 128 / 256 (96 on the 128 kernel, 192 on the 256 kernel, when both are
// built) and the sm90a mma.sync build for the rest and for decode (<= 16 query rows); every
// other sm80+ device runs the sm80 mma.sync kernels when 80 is built (JIT-compiled from their
// PTX on compute capability 9.0 and newer).
#include <cuda_runtime.h>
#include <flare/flare.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace {

// Value of `key` in flare_build_info's `key=value` lines ("" when absent).
std::string build_value(const char* key) {
  std::istringstream in(flare_build_info());
  const std::string prefix = std::string(key) + "=";
  for (std::string line; std::getline(in, line);)
    if (line.compare(0, prefix.size(), prefix) == 0) return line.substr(prefix.size());
  return "";
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> parts;
  std::istringstream in(s);
  for (std::string part; std::getline(in, part, ';');)
    if (!part.empty()) parts.push_back(part);
  return parts;
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
  for (const std::string& e : v)
    if (e == x) return true;
  return false;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& e : v) out += (out.empty() ? "" : ",") + e;
  return out.empty() ? "none" : out;
}

// The head dim whose Hopper (wgmma) kernel serves head dim `hd`, or "" when none is built.
std::string hopper_kernel_for(const std::string& hd, const std::vector<std::string>& built) {
  std::string kernel;
  if (hd == "64" || hd == "128" || hd == "256") kernel = hd;
  if (hd == "96") kernel = "128";
  if (hd == "192") kernel = "256";
  return !kernel.empty() && contains(built, kernel) ? kernel : "";
}

// One line saying which kernels flare runs on a device of compute capability major.minor.
std::string kernel_family(int major, int minor, const std::vector<std::string>& archs,
                          const std::vector<std::string>& head_dims) {
  char cc[32];
  std::snprintf(cc, sizeof cc, "%d.%d", major, minor);
  if (major < 8)
    return std::string("unsupported: compute capability ") + cc + "; flare needs 8.0 or newer";
  const char* path = std::getenv("FLARE_KERNEL_PATH");
  const bool hopper_off = path != nullptr && std::strcmp(path, "sm80") == 0;
  if (major == 9 && contains(archs, "90a")) {
    if (hopper_off)
      return "mma.sync kernels (sm90a build) for every head dim: FLARE_KERNEL_PATH=sm80 is set";
    std::vector<std::string> wgmma, mma;
    for (const std::string& hd : head_dims)
      (hopper_kernel_for(hd, head_dims).empty() ? mma : wgmma).push_back(hd);
    std::string line = "Hopper wgmma kernels (sm90a) for head dims " + join(wgmma);
    if (!mma.empty()) line += "; mma.sync (sm90a build) for head dims " + join(mma);
    return line + "; decode (<= 16 query rows) on mma.sync";
  }
  if (contains(archs, "80"))
    return std::string("mma.sync kernels (sm80 build") +
           (major == 8 ? "" : ", JIT-compiled from PTX for this GPU") + ") for head dims " +
           join(head_dims);
  return std::string("unsupported: no kernels for compute capability ") + cc +
         " in this build (archs " + join(archs) + "; sm90a code runs on 9.0 only)";
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

  const std::vector<std::string> archs = split(build_value("archs"));
  const std::vector<std::string> head_dims = split(build_value("head_dims"));
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) {
      std::printf("GPU %d: properties unavailable\n", d);
      continue;
    }
    std::printf("GPU %d: %s, compute capability %d.%d, %d SMs, %.1f GiB\n", d, prop.name,
                prop.major, prop.minor, prop.multiProcessorCount,
                double(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
    std::printf("  flare runs: %s\n",
                kernel_family(prop.major, prop.minor, archs, head_dims).c_str());
  }
  return mismatch ? 1 : 0;
}
