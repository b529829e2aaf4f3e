// Entry point of flare_tests_gpu. Without a CUDA device every test skips and the run succeeds,
// so the suite can sit in a CPU-only CI job; with one it prints the device and runs.
// The library reads no environment: the FLARE_* tuning variables (FLARE_KERNEL_PATH=sm80,
// FLARE_SMEM_LIMIT_KB, FLARE_SM80_*, FLARE_SM90_*, FLARE_COMBINE_PDL; plan/tuning.h) are read
// here and handed to the library through its internal set_tuning.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <execinfo.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "gpu/gpu_test_util.h"
#include "plan/tuning.h"

namespace flare_test {
bool g_has_device = false;
int g_device = 0;
}  // namespace flare_test

// Exit status that ctest's SKIP_RETURN_CODE maps to "Skipped".
constexpr int kSkipReturnCode = 77;

namespace {

// A test process must never end silently in the middle of a test: if anything calls exit()
// (or std::terminate) while a test runs, say which test and print the call stack (the test
// binaries are linked with exported symbols so the frames carry names).
std::string g_running_test;

void print_stack() {
  void* frames[64];
  const int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
}

void report_exit_during_test() {
  if (g_running_test.empty()) return;
  std::fflush(stdout);
  std::fprintf(stderr, "flare_tests_gpu: exit() called during test %s; call stack:\n",
               g_running_test.c_str());
  print_stack();
}

[[noreturn]] void report_terminate() {
  std::fflush(stdout);
  std::fprintf(stderr, "flare_tests_gpu: std::terminate during test '%s'; call stack:\n",
               g_running_test.c_str());
  print_stack();
  std::abort();
}

class RunningTestTracker : public ::testing::EmptyTestEventListener {
  void OnTestStart(const ::testing::TestInfo& t) override {
    g_running_test = std::string(t.test_suite_name()) + "." + t.name();
  }
  void OnTestEnd(const ::testing::TestInfo&) override { g_running_test.clear(); }
};

// Without a device: runs the tests (each skips itself) with gtest's per-test printer removed and
// prints one summary line instead, `<binary>: no CUDA device found -- N GPU tests SKIPPED
// (<reason>)`, plus the name of any test that failed anyway. The same line goes to the file named
// by FLARE_GPU_SKIP_REPORT when set (ctest sets it; CTestCustom prints the reports at the end).
// Returns the exit status: kSkipReturnCode when nothing failed.
int run_without_device(const char* argv0, const char* reason) {
  ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
  delete listeners.Release(listeners.default_result_printer());
  const int result = RUN_ALL_TESTS();
  const ::testing::UnitTest& unit = *::testing::UnitTest::GetInstance();
  const char* slash = std::strrchr(argv0, '/');
  char line[512];
  std::snprintf(line, sizeof line, "%s: no CUDA device found -- %d GPU tests SKIPPED (%s)",
                slash ? slash + 1 : argv0, unit.skipped_test_count(), reason);
  std::printf("%s\n", line);
  for (int i = 0; i < unit.total_test_suite_count(); ++i) {
    const ::testing::TestSuite& suite = *unit.GetTestSuite(i);
    for (int j = 0; j < suite.total_test_count(); ++j)
      if (suite.GetTestInfo(j)->result()->Failed())
        std::printf("FAILED without a device: %s.%s\n", suite.name(), suite.GetTestInfo(j)->name());
  }
  std::fflush(stdout);
  if (const char* report = std::getenv("FLARE_GPU_SKIP_REPORT")) {
    if (std::FILE* f = std::fopen(report, "w")) {
      std::fprintf(f, "%s\n", line);
      std::fclose(f);
    }
  }
  return result != 0 ? result : kSkipReturnCode;
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::UnitTest::GetInstance()->listeners().Append(new RunningTestTracker);
  std::atexit(report_exit_during_test);
  std::set_terminate(report_terminate);
  const flare::Tuning tuning = flare::tuning_from_env();
  flare::set_tuning(tuning);
  std::printf("flare_tests_gpu: tuning: %s\n", flare::describe(tuning).c_str());

  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear the sticky-free error of the failed query
    flare_test::g_has_device = false;
    // ctest reports the test as skipped (SKIP_RETURN_CODE), visibly, instead of passed.
    return run_without_device(argv[0],
                              e != cudaSuccess ? cudaGetErrorName(e) : "device count is 0");
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
