// The C ABI before any device: every entry point checks its arguments before its first CUDA
// call, so each bad input gets its own status and a message naming the field on any machine,
// and none gets FLARE_ERROR_CUDA or FLARE_ERROR_NO_DEVICE. A valid input on a machine without
// a driver or GPU gets FLARE_ERROR_NO_DEVICE ("no CUDA driver/GPU found"). Linked against
// flare_static; runs on the GPU-less CI machine and on GPU machines (where the NO_DEVICE
// expectations are replaced by queries that launch nothing).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "flare/flare.h"
#include "valid_params.h"

namespace {

using flare_test::fake_ptr;

// Dense fp16 q/out [2, 128, 8, 64], k/v [2, 256, 2, 64], fake device addresses (validation
// compares pointers and never dereferences them).
flare_mha_fwd_params valid_params() {
  return flare_test::dense_fp16_params(2, 128, 256, 8, 2, 64);
}

// Whether this machine has a usable CUDA device (then valid inputs are not run through
// flare_mha_fwd here: their fake addresses would be launched on).
bool has_device() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  cudaGetLastError();
  return err == cudaSuccess && count > 0;
}

// A newer caller's struct (one more field).
struct NewerParams {
  flare_mha_fwd_params base;
  int64_t future_field;
};

struct BadInput {
  const char* name;
  std::function<void(flare_mha_fwd_params&)> mutate;  // on valid_params()
  flare_status status;
  const char* message;  // must appear in flare_last_error()
};

std::vector<BadInput> bad_inputs() {
  using P = flare_mha_fwd_params;
  return {
      {"struct_size_zero", [](P& p) { p.struct_size = 0; }, FLARE_ERROR_INVALID_ARGUMENT,
       "struct_size (0) is too small"},
      {"dtype_fp32", [](P& p) { p.dtype = FLARE_DTYPE_FP32; }, FLARE_ERROR_UNSUPPORTED_DTYPE,
       "dtype (2) is not supported"},
      {"head_dim_513", [](P& p) { p.head_dim = 513; }, FLARE_ERROR_UNSUPPORTED_HEAD_DIM,
       "head_dim (513) is not supported"},
      {"head_dim_264", [](P& p) { p.head_dim = 264; }, FLARE_ERROR_UNSUPPORTED_HEAD_DIM,
       "head_dim (264) is not supported"},
      {"q_misaligned", [](P& p) { p.q = fake_ptr(0x100005); }, FLARE_ERROR_MISALIGNED,
       "is not 2-byte aligned"},
      {"k_row_stride_negative", [](P& p) { p.k_row_stride = -130; },
       FLARE_ERROR_INVALID_ARGUMENT, "k_row_stride (-130) must be >= 0"},
      {"out_null", [](P& p) { p.out = nullptr; }, FLARE_ERROR_INVALID_ARGUMENT, "out is null"},
      {"out_rows_overlap", [](P& p) { p.out_row_stride = 64; }, FLARE_ERROR_INVALID_ARGUMENT,
       "out_row_stride (64) makes the rows of out overlap"},
      {"out_heads_overlap", [](P& p) { p.out_head_stride = 0; }, FLARE_ERROR_INVALID_ARGUMENT,
       "out_head_stride (0) makes the heads of out overlap"},
      {"dropout", [](P& p) { p.p_dropout = 0.1f; }, FLARE_ERROR_NOT_SUPPORTED,
       "p_dropout (0.1) is not supported"},
      {"batch_zero", [](P& p) { p.batch = 0; }, FLARE_ERROR_INVALID_ARGUMENT,
       "batch (0) must be >= 1"},
      {"heads_not_multiple", [](P& p) { p.num_heads = 6; p.num_heads_k = 4; },
       FLARE_ERROR_INVALID_ARGUMENT, "num_heads (6) is not a multiple of num_heads_k (4)"},
      {"causal_2", [](P& p) { p.causal = 2; }, FLARE_ERROR_INVALID_ARGUMENT, "causal (2)"},
      {"num_splits_200", [](P& p) { p.num_splits = 200; }, FLARE_ERROR_INVALID_ARGUMENT,
       "num_splits (200) must be in [0, 128]"},
      {"workspace_misaligned",
       [](P& p) { p.workspace = fake_ptr(0x900010); p.workspace_size = 4096; },
       FLARE_ERROR_MISALIGNED, "workspace"},
  };
}

// Each of the four params-taking entry points, on `p` (a device ordinal of 0 where one is
// taken). flare_mha_fwd_workspace_size ignores the workspace fields.
struct EntryPoint {
  const char* name;
  std::function<flare_status(const flare_mha_fwd_params*)> call;
  bool reads_workspace;
};

std::vector<EntryPoint> entry_points() {
  return {
      {"flare_mha_fwd", [](const flare_mha_fwd_params* p) { return flare_mha_fwd(p, nullptr); },
       true},
      {"flare_mha_fwd_workspace_size",
       [](const flare_mha_fwd_params* p) {
         size_t bytes = 0;
         return flare_mha_fwd_workspace_size(p, 0, &bytes);
       },
       false},
      {"flare_can_implement", [](const flare_mha_fwd_params* p) { return flare_can_implement(p, 0); },
       true},
      {"flare_mha_fwd_num_splits",
       [](const flare_mha_fwd_params* p) {
         int splits = 0;
         return flare_mha_fwd_num_splits(p, 0, &splits);
       },
       true},
  };
}

void expect_rejected(flare_status got, flare_status want, const char* message,
                     const std::string& where) {
  EXPECT_EQ(got, want) << where << ": " << flare_last_error();
  EXPECT_NE(got, FLARE_ERROR_CUDA) << where;
  EXPECT_NE(got, FLARE_ERROR_NO_DEVICE) << where;
  EXPECT_NE(std::string(flare_last_error()).find(message), std::string::npos)
      << where << ": \"" << flare_last_error() << "\" lacks \"" << message << "\"";
}

TEST(ApiBeforeDevice, NullParams) {
  for (const EntryPoint& e : entry_points())
    expect_rejected(e.call(nullptr), FLARE_ERROR_INVALID_ARGUMENT, "params is null", e.name);
  expect_rejected(flare_merge_attention_states(nullptr, nullptr), FLARE_ERROR_INVALID_ARGUMENT,
                  "params is null", "flare_merge_attention_states");
}

TEST(ApiBeforeDevice, NullOutputs) {
  const flare_mha_fwd_params p = valid_params();
  expect_rejected(flare_mha_fwd_workspace_size(&p, 0, nullptr), FLARE_ERROR_INVALID_ARGUMENT,
                  "bytes is null", "workspace_size");
  expect_rejected(flare_mha_fwd_num_splits(&p, 0, nullptr), FLARE_ERROR_INVALID_ARGUMENT,
                  "num_splits is null", "num_splits");
}

TEST(ApiBeforeDevice, BadInputTable) {
  for (const BadInput& b : bad_inputs())
    for (const EntryPoint& e : entry_points()) {
      flare_mha_fwd_params p = valid_params();
      b.mutate(p);
      if (!e.reads_workspace && p.workspace != valid_params().workspace) continue;
      expect_rejected(e.call(&p), b.status, b.message, std::string(b.name) + " / " + e.name);
    }
}

TEST(ApiBeforeDevice, StructSizeLargerWithUnknownFieldSet) {
  NewerParams newer{};
  newer.base = valid_params();
  newer.base.struct_size = sizeof(NewerParams);
  newer.future_field = 1;
  const std::string expected = "struct_size (" + std::to_string(sizeof(NewerParams)) + ") is larger";
  for (const EntryPoint& e : entry_points())
    expect_rejected(e.call(&newer.base), FLARE_ERROR_INVALID_ARGUMENT, expected.c_str(), e.name);
}

TEST(ApiBeforeDevice, NegativeDeviceOrdinal) {
  const flare_mha_fwd_params p = valid_params();
  size_t bytes = 0;
  expect_rejected(flare_mha_fwd_workspace_size(&p, -1, &bytes), FLARE_ERROR_INVALID_ARGUMENT,
                  "device (-1) must be >= 0", "workspace_size");
  expect_rejected(flare_can_implement(&p, -1), FLARE_ERROR_INVALID_ARGUMENT,
                  "device (-1) must be >= 0", "can_implement");
}

TEST(ApiBeforeDevice, MergeBadInputs) {
  flare_merge_params m;
  flare_merge_params_init(&m);  // num_parts 0
  expect_rejected(flare_merge_attention_states(&m, nullptr), FLARE_ERROR_INVALID_ARGUMENT,
                  "num_parts (0)", "merge num_parts");
  struct Newer {
    flare_merge_params base;
    int64_t future_field;
  } newer{};
  flare_merge_params_init(&newer.base);
  newer.base.struct_size = sizeof(Newer);
  newer.future_field = 3;
  expect_rejected(flare_merge_attention_states(&newer.base, nullptr),
                  FLARE_ERROR_INVALID_ARGUMENT, "is larger than", "merge struct_size");
}

// Valid inputs pass every check; without a driver or GPU the first CUDA call reports
// FLARE_ERROR_NO_DEVICE with a message naming the CUDA error.
TEST(ApiBeforeDevice, ValidInputWithoutDeviceIsNoDevice) {
  flare_mha_fwd_params p = valid_params();
  p.k_batch_stride = p.v_batch_stride = 0;  // overlapping read-only inputs are accepted
  if (has_device()) {
    // A GPU machine: the queries plan without launching anything.
    size_t bytes = 0;
    const flare_status st = flare_mha_fwd_workspace_size(&p, 0, &bytes);
    EXPECT_TRUE(st == FLARE_OK || st == FLARE_ERROR_ARCH_NOT_SUPPORTED) << flare_last_error();
    GTEST_SKIP() << "a CUDA device is present: the no-device path is not reachable here";
  }
  for (const EntryPoint& e : entry_points()) {
    const flare_status st = e.call(&p);
    std::printf("%s: %s: %s\n", e.name, flare_status_string(st), flare_last_error());
    EXPECT_EQ(st, FLARE_ERROR_NO_DEVICE) << e.name << ": " << flare_last_error();
    EXPECT_NE(std::string(flare_last_error()).find("no CUDA driver/GPU found ("), std::string::npos)
        << e.name << ": " << flare_last_error();
    EXPECT_NE(std::string(flare_last_error()).find("cudaError"), std::string::npos)
        << e.name << ": " << flare_last_error();
  }
  // The merge: two bf16 parts [1, 4, 2, 64] stacked, contiguous out and lse.
  flare_merge_params m = flare_test::merge_params(2, 1, 4, 2, 64);
  const flare_status st = flare_merge_attention_states(&m, nullptr);
  std::printf("flare_merge_attention_states: %s: %s\n", flare_status_string(st), flare_last_error());
  EXPECT_EQ(st, FLARE_ERROR_NO_DEVICE) << flare_last_error();
  EXPECT_STREQ(flare_status_string(FLARE_ERROR_NO_DEVICE), "no CUDA driver or GPU found");
}

}  // namespace
