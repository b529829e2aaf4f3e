// flare-info's account of which kernels flare runs on a GPU, from the build's archs and head
// dims (flare_build_info) and the GPU's compute capability. Header-only so that the CPU tests
// check it (tests/cpu/test_kernel_family.cpp) without a GPU.
//
// It mirrors select_fwd_kernel in src/api/dispatch.cu (the library has no public query for
// it): compute capability 9.0 with sm90a built runs the Hopper wgmma kernels for head dims
// 64 / 128 / 256 (96 on the 128 kernel, 192 on the 256 kernel, when both are built) and the
// sm90a mma.sync build for the rest and for decode (<= 16 query rows); every other sm80+ device
// runs the sm80 mma.sync kernels when 80 is built (JIT-compiled from their PTX on compute
// capability 9.0 and newer). A change there needs the same change here.
#ifndef FLARE_TOOLS_KERNEL_FAMILY_H
#define FLARE_TOOLS_KERNEL_FAMILY_H

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace flare_info {

// The non-empty items of a ';'-separated list (flare_build_info's archs, head_dims).
inline std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> parts;
  std::istringstream in(s);
  for (std::string part; std::getline(in, part, ';');)
    if (!part.empty()) parts.push_back(part);
  return parts;
}

inline bool contains(const std::vector<std::string>& v, const std::string& x) {
  for (const std::string& e : v)
    if (e == x) return true;
  return false;
}

inline std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& e : v) out += (out.empty() ? "" : ",") + e;
  return out.empty() ? "none" : out;
}

// The head dim whose Hopper (wgmma) kernel serves head dim `hd`, or "" when none is built.
inline std::string hopper_kernel_for(const std::string& hd, const std::vector<std::string>& built) {
  std::string kernel;
  if (hd == "64" || hd == "128" || hd == "256") kernel = hd;
  if (hd == "96") kernel = "128";
  if (hd == "192") kernel = "256";
  return !kernel.empty() && contains(built, kernel) ? kernel : "";
}

// One line saying which kernels flare runs on a device of compute capability major.minor.
// hopper_off: FLARE_KERNEL_PATH=sm80 is in effect (only a tuning build reads it).
inline std::string kernel_family(int major, int minor, const std::vector<std::string>& archs,
                                 const std::vector<std::string>& head_dims, bool hopper_off) {
  char cc[32];
  std::snprintf(cc, sizeof cc, "%d.%d", major, minor);
  if (major < 8)
    return std::string("unsupported: compute capability ") + cc + "; flare needs 8.0 or newer";
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

}  // namespace flare_info

#endif  // FLARE_TOOLS_KERNEL_FAMILY_H
