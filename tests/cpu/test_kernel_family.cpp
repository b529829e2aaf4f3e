// flare-info's per-GPU account (tools/kernel_family.h) against the selection rules of
// select_fwd_kernel (src/api/dispatch.cu), for the GPU generations and build sets that matter.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernel_family.h"

namespace {

using flare_info::kernel_family;
using flare_info::split;

const std::vector<std::string> kAllArchs = {"80", "90a"};
const std::vector<std::string> kAllDims = split("32;64;96;128;192;256");

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(KernelFamily, SplitDropsEmptyItems) {
  EXPECT_EQ(split("80;90a"), (std::vector<std::string>{"80", "90a"}));
  EXPECT_EQ(split(";64;;128;"), (std::vector<std::string>{"64", "128"}));
  EXPECT_TRUE(split("").empty());
}

TEST(KernelFamily, HopperWithSm90aBuilt) {
  const std::string line = kernel_family(9, 0, kAllArchs, kAllDims, false);
  // 96 runs on the 128 kernel and 192 on the 256 kernel; 32 has no wgmma kernel.
  EXPECT_TRUE(has(line, "Hopper wgmma kernels (sm90a) for head dims 64,96,128,192,256")) << line;
  EXPECT_TRUE(has(line, "mma.sync (sm90a build) for head dims 32")) << line;
  EXPECT_TRUE(has(line, "decode")) << line;
}

TEST(KernelFamily, HopperPaddedDimsNeedTheirKernel) {
  // 96 without 128 and 192 without 256 stay on mma.sync.
  const std::string line = kernel_family(9, 0, {"90a"}, split("96;192"), false);
  EXPECT_TRUE(has(line, "wgmma kernels (sm90a) for head dims none")) << line;
  EXPECT_TRUE(has(line, "mma.sync (sm90a build) for head dims 96,192")) << line;
}

TEST(KernelFamily, HopperPathSwitchedOff) {
  const std::string line = kernel_family(9, 0, kAllArchs, kAllDims, true);
  EXPECT_TRUE(has(line, "mma.sync kernels (sm90a build) for every head dim")) << line;
  EXPECT_FALSE(has(line, "wgmma")) << line;
}

TEST(KernelFamily, HopperWithoutSm90aUsesSm80Ptx) {
  const std::string line = kernel_family(9, 0, {"80"}, split("64"), false);
  EXPECT_TRUE(has(line, "mma.sync kernels (sm80 build, JIT-compiled from PTX")) << line;
}

TEST(KernelFamily, AmpereAndAdaRunSm80) {
  for (int minor : {0, 6, 9}) {
    const std::string line = kernel_family(8, minor, kAllArchs, kAllDims, false);
    EXPECT_EQ(line, "mma.sync kernels (sm80 build) for head dims 32,64,96,128,192,256");
  }
}

TEST(KernelFamily, NewerThanHopperRunsSm80Ptx) {
  const std::string line = kernel_family(12, 0, kAllArchs, split("128"), false);
  EXPECT_EQ(line, "mma.sync kernels (sm80 build, JIT-compiled from PTX for this GPU) for head "
                  "dims 128");
}

TEST(KernelFamily, Unsupported) {
  EXPECT_TRUE(has(kernel_family(7, 5, kAllArchs, kAllDims, false), "flare needs 8.0 or newer"));
  // sm90a code runs on 9.0 only: an sm86 GPU with a 90a-only build has no kernel.
  const std::string line = kernel_family(8, 6, {"90a"}, kAllDims, false);
  EXPECT_TRUE(has(line, "unsupported: no kernels for compute capability 8.6")) << line;
}

}  // namespace
