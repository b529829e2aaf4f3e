// Shared machinery of the GPU test suite (header-only):
//   - CUDA error checking that fails the running test with the CUDA error string,
//   - RAII device buffers and streams,
//   - a problem description (HostProblem) from which BOTH the host params (for the CPU
//     reference) and the device params (for flare) are bound, so the two can never disagree,
//   - output poisoning, the run helper for flare_mha_fwd, and the comparison against the
//     float64 / naive-low-precision CPU references,
//   - a prefetcher that computes the CPU references of upcoming test cases on all host cores
//     while the current case runs on the GPU.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/sequence.h"
#include "common/serving_semantics.h"
#include "flare/flare.h"
#include "reference/reference.h"

namespace flare_test {

// ---------------------------------------------------------------------------------------------
// Global state, defined in gpu_test_main.cpp.
extern bool g_has_device;  // false: every GPU test skips
extern int g_device;       // the CUDA device the tests run on

// Skips the current test when no CUDA device is present.
#define FLARE_REQUIRE_GPU()                                                          \
  do {                                                                               \
    if (!::flare_test::g_has_device) GTEST_SKIP() << "no CUDA device: GPU test skipped"; \
  } while (0)

// Skips the current test (visibly, with flare's message) when flare has no kernel for the call:
// - none of its head dim fits the shared memory per block of the device or of a
//   FLARE_SMEM_LIMIT_KB emulation (NOT_SUPPORTED): the d512 kernel needs 114 KB, over the 99 KB
//   of sm86/sm89/sm120. Every head dim fits an H100 or an A100, so there this never skips
//   (tests/cpu/test_planning.cpp pins it);
// - the build lacks the kernel's architecture, dtype or head dim (ARCH_NOT_SUPPORTED, "not in
//   this build"): a restricted FLARE_ARCHS / FLARE_DTYPES / FLARE_HEAD_DIMS. A full build never
//   skips this way.
// Nothing is written or launched by either refusal.
#define FLARE_SKIP_IF_NO_KERNEL(params)                                                      \
  do {                                                                                       \
    const flare_status flare_skip_status_ =                                                  \
        flare_can_implement(&(params), ::flare_test::g_device);                              \
    const std::string flare_skip_error_ = flare_last_error();                                \
    if ((flare_skip_status_ == FLARE_ERROR_NOT_SUPPORTED &&                                  \
         flare_skip_error_.find("bytes of shared memory per block") != std::string::npos) || \
        (flare_skip_status_ == FLARE_ERROR_ARCH_NOT_SUPPORTED &&                             \
         flare_skip_error_.find("not in this build") != std::string::npos))                  \
      GTEST_SKIP() << flare_skip_error_;                                                     \
  } while (0)

// FLARE_TEST_QUICK=1 shrinks the sweeps (a smoke run of a few seconds of reference work).
inline bool quick_mode() {
  static const bool quick = [] {
    const char* e = std::getenv("FLARE_TEST_QUICK");
    return e != nullptr && *e != '\0' && std::strcmp(e, "0") != 0;
  }();
  return quick;
}

// FLARE_TEST_SEED changes every generated tensor; the default keeps runs reproducible.
inline uint64_t base_seed() {
  static const uint64_t seed = [] {
    const char* e = std::getenv("FLARE_TEST_SEED");
    return e ? std::strtoull(e, nullptr, 0) : 0x5EEDF1A3E2024ull;
  }();
  return seed;
}

inline uint64_t mix_seed(uint64_t a, uint64_t b) {
  // splitmix64 finaliser over a combination of the two values.
  uint64_t z = a + 0x9E3779B97F4A7C15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline int host_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 2 : static_cast<int>(n);
}

inline const char* dtype_name(int dtype) {
  return dtype == FLARE_DTYPE_FP16 ? "fp16" : dtype == FLARE_DTYPE_BF16 ? "bf16" : "dtype?";
}

// ---------------------------------------------------------------------------------------------
// CUDA error checking. A failing call records a gtest failure naming the expression and the
// CUDA error string, then throws so the test body stops (gtest reports the exception too).
struct CudaFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void cuda_check(cudaError_t e, const char* expr, const char* file, int line) {
  if (e == cudaSuccess) return;
  const std::string msg = std::string(expr) + " failed: " + cudaGetErrorName(e) + " (" +
                          cudaGetErrorString(e) + ")";
  ADD_FAILURE_AT(file, line) << msg;
  throw CudaFailure(msg);
}

#define CUDA_CHECK(expr) ::flare_test::cuda_check((expr), #expr, __FILE__, __LINE__)

// ---------------------------------------------------------------------------------------------
// RAII device memory.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) { alloc(bytes); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = o.ptr_;
      bytes_ = o.bytes_;
      o.ptr_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }

  void alloc(size_t bytes) {
    release();
    if (bytes > 0) CUDA_CHECK(cudaMalloc(&ptr_, bytes));
    bytes_ = bytes;
  }
  void release() {
    if (ptr_ != nullptr) {
      const cudaError_t e = cudaFree(ptr_);
      if (e != cudaSuccess) ADD_FAILURE() << "cudaFree failed: " << cudaGetErrorString(e);
    }
    ptr_ = nullptr;
    bytes_ = 0;
  }

  void* get() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

  // Allocates exactly the vector's size and copies it (an empty vector leaves a null buffer).
  template <class T>
  void upload(const std::vector<T>& host) {
    alloc(host.size() * sizeof(T));
    copy_from(host);
  }
  // Copies into the existing allocation (sizes must match).
  template <class T>
  void copy_from(const std::vector<T>& host) {
    if (host.size() * sizeof(T) != bytes_) {
      ADD_FAILURE() << "DeviceBuffer::copy_from size mismatch";
      throw CudaFailure("size mismatch");
    }
    if (bytes_ > 0) {
      CUDA_CHECK(cudaMemcpy(ptr_, host.data(), bytes_, cudaMemcpyHostToDevice));
      // From pageable memory, cudaMemcpy may return before the DMA has landed, and the tests
      // launch on non-blocking streams, which do not wait for the legacy stream: without this
      // wait a late poison copy can overwrite a finished output (read as an unwritten row).
      CUDA_CHECK(cudaDeviceSynchronize());
    }
  }
  template <class T>
  std::vector<T> download() const {
    std::vector<T> host(bytes_ / sizeof(T));
    if (bytes_ > 0) CUDA_CHECK(cudaMemcpy(host.data(), ptr_, bytes_, cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class Stream {
 public:
  Stream() { CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~Stream() {
    if (s_) cudaStreamDestroy(s_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Host tensors.
constexpr uint16_t kPoison16 = 0x7FFF;  // a NaN in fp16 and in bf16

inline float poison_f32() {
  // A quiet NaN with a recognisable payload.
  const uint32_t bits = 0x7FC0DEADu;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline bool is_poison_f32(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits == 0x7FC0DEADu;
}

// Values ~ N(0, stddev^2), rounded to the dtype.
inline void fill_normal(std::vector<uint16_t>& v, int dtype, std::mt19937_64& rng,
                        float stddev = 1.f) {
  std::normal_distribution<float> nd(0.f, stddev);
  for (auto& x : v) x = flare::ref::from_float(nd(rng), dtype);
}

inline std::vector<uint16_t> random_tensor(size_t n, int dtype, std::mt19937_64& rng,
                                           float stddev = 1.f) {
  std::vector<uint16_t> v(n);
  fill_normal(v, dtype, rng, stddev);
  return v;
}

// Distance in units in the last place between two finite 16-bit floats of the same format
// (fp16 and bf16 both order like sign-magnitude integers).
inline int ulp_distance16(uint16_t a, uint16_t b) {
  auto ordered = [](uint16_t x) -> int {
    return (x & 0x8000) ? -static_cast<int>(x & 0x7FFF) : static_cast<int>(x);
  };
  return std::abs(ordered(a) - ordered(b));
}

// Element strides of a [batch, rows, heads, head_dim]-shaped tensor in one of the layouts the
// tests exercise.
enum Layout { kContiguous = 0, kPackedQKV = 1, kPaddedStrides = 2, kHeadMajor = 3 };

inline const char* layout_name(int layout) {
  switch (layout) {
    case kPackedQKV: return "packedqkv";
    case kPaddedStrides: return "padded";
    case kHeadMajor: return "headmajor";
    default: return "contig";
  }
}

struct Strides {
  int64_t batch = 0, row = 0, head = 0;
  size_t elems = 0;  // elements the tensor spans
};

inline Strides make_strides(int layout, int nbatch, int rows, int heads, int head_dim) {
  Strides s;
  switch (layout) {
    case kPaddedStrides:
      // Every stride padded by a multiple of 8 elements: 16-byte alignment is kept while no
      // dimension is dense. The gaps are poisoned in outputs and must stay untouched.
      s.head = head_dim + 8;
      s.row = heads * s.head + 16;
      s.batch = rows * s.row + 32;
      break;
    case kHeadMajor:
      s.row = head_dim;
      s.head = int64_t(rows) * head_dim;
      s.batch = int64_t(heads) * rows * head_dim;
      break;
    default:
      s.head = head_dim;
      s.row = int64_t(heads) * head_dim;
      s.batch = int64_t(rows) * s.row;
      break;
  }
  s.elems = size_t(nbatch) * size_t(s.batch);
  return s;
}

// ---------------------------------------------------------------------------------------------
// A problem: every scalar of the params plus the host data. bind() turns it into params whose
// pointers point either at the host vectors (for the CPU reference) or at device copies (for
// flare): one description, two bindings. Tensors are 16-bit bit patterns, except FP8 K/V
// (kv_dtype): byte codes packed two to a uint16_t (their TensorRef offsets count 16-bit units).
enum BufId { kBufQ, kBufK, kBufV, kBufKNew, kBufVNew, kBufCos, kBufSin, kNumBufs };

struct TensorRef {
  int buf = -1;        // -1: the pointer stays null
  int64_t offset = 0;  // elements from the start of the buffer
};

struct HostProblem {
  flare_mha_fwd_params tmpl;  // scalars and strides; every pointer null
  std::vector<uint16_t> buf[kNumBufs];
  TensorRef q, k, v, k_new, v_new, rotary_cos, rotary_sin;
  std::vector<float> alibi;
  std::vector<float> sink;           // [num_heads] or empty (serving_problem.h builds them)
  // FP8 K/V descale factors, indexed with tmpl's k/v_descale strides, or empty (null).
  std::vector<float> k_descale, v_descale;
  std::vector<int32_t> mm_ranges;    // [batch, max_mm_prefix_ranges, 2] or empty
  std::vector<int32_t> cu_q, cu_k, seqused_k, cache_seqlens, cache_batch_idx, leftpad_k,
      block_table;
  size_t out_elems = 0;      // elements of the output buffer (covers every stride gap)
  size_t lse_elems = 0;      // elements of the lse buffer; 0: the case requests no lse
  size_t ref_lse_elems = 0;  // lse layout size (the reference always produces lse)

  HostProblem() { std::memset(&tmpl, 0, sizeof tmpl); }
};

struct Bases {
  void* buf[kNumBufs] = {};
  const float* alibi = nullptr;
  const float* sink = nullptr;
  const float* k_descale = nullptr;
  const float* v_descale = nullptr;
  const int32_t* mm_ranges = nullptr;
  const int32_t* cu_q = nullptr;
  const int32_t* cu_k = nullptr;
  const int32_t* seqused_k = nullptr;
  const int32_t* cache_seqlens = nullptr;
  const int32_t* cache_batch_idx = nullptr;
  const int32_t* leftpad_k = nullptr;
  const int32_t* block_table = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
};

inline flare_mha_fwd_params bind(const HostProblem& hp, const Bases& b) {
  flare_mha_fwd_params p = hp.tmpl;
  auto at = [&](const TensorRef& r) -> void* {
    if (r.buf < 0 || b.buf[r.buf] == nullptr) return nullptr;
    return static_cast<uint16_t*>(b.buf[r.buf]) + r.offset;
  };
  p.q = at(hp.q);
  p.k = at(hp.k);
  p.v = at(hp.v);
  p.k_new = at(hp.k_new);
  p.v_new = at(hp.v_new);
  p.rotary_cos = at(hp.rotary_cos);
  p.rotary_sin = at(hp.rotary_sin);
  p.alibi_slopes = b.alibi;
  p.sink = b.sink;
  p.k_descale = b.k_descale;
  p.v_descale = b.v_descale;
  p.mm_prefix_ranges = b.mm_ranges;
  p.cu_seqlens_q = b.cu_q;
  p.cu_seqlens_k = b.cu_k;
  p.seqused_k = b.seqused_k;
  p.cache_seqlens = b.cache_seqlens;
  p.cache_batch_idx = b.cache_batch_idx;
  p.leftpad_k = b.leftpad_k;
  p.block_table = b.block_table;
  p.out = b.out;
  p.lse = b.lse;
  return p;
}

template <class T>
T* host_ptr(const std::vector<T>& v) {
  return v.empty() ? nullptr : const_cast<T*>(v.data());
}

// Host binding (out/lse are left null: the reference takes its own output arrays).
inline Bases host_bases(const HostProblem& hp) {
  Bases b;
  for (int i = 0; i < kNumBufs; ++i) b.buf[i] = host_ptr(hp.buf[i]);
  b.alibi = host_ptr(hp.alibi);
  b.sink = host_ptr(hp.sink);
  b.k_descale = host_ptr(hp.k_descale);
  b.v_descale = host_ptr(hp.v_descale);
  b.mm_ranges = host_ptr(hp.mm_ranges);
  b.cu_q = host_ptr(hp.cu_q);
  b.cu_k = host_ptr(hp.cu_k);
  b.seqused_k = host_ptr(hp.seqused_k);
  b.cache_seqlens = host_ptr(hp.cache_seqlens);
  b.cache_batch_idx = host_ptr(hp.cache_batch_idx);
  b.leftpad_k = host_ptr(hp.leftpad_k);
  b.block_table = host_ptr(hp.block_table);
  return b;
}

inline flare_mha_fwd_params host_params(const HostProblem& hp) { return bind(hp, host_bases(hp)); }

// Device copies of a problem plus the poisoned output buffers and the workspace.
struct DeviceProblem {
  DeviceBuffer buf[kNumBufs];
  DeviceBuffer alibi, sink, k_descale, v_descale, mm_ranges, cu_q, cu_k, seqused_k, cache_seqlens, cache_batch_idx,
      leftpad_k, block_table;
  DeviceBuffer out, lse, workspace;

  explicit DeviceProblem(const HostProblem& hp) {
    for (int i = 0; i < kNumBufs; ++i) buf[i].upload(hp.buf[i]);
    alibi.upload(hp.alibi);
    sink.upload(hp.sink);
    k_descale.upload(hp.k_descale);
    v_descale.upload(hp.v_descale);
    mm_ranges.upload(hp.mm_ranges);
    cu_q.upload(hp.cu_q);
    cu_k.upload(hp.cu_k);
    seqused_k.upload(hp.seqused_k);
    cache_seqlens.upload(hp.cache_seqlens);
    cache_batch_idx.upload(hp.cache_batch_idx);
    leftpad_k.upload(hp.leftpad_k);
    block_table.upload(hp.block_table);
    out.alloc(hp.out_elems * sizeof(uint16_t));
    lse.alloc(hp.lse_elems * sizeof(float));
    poison();
  }

  // Fills out with the 16-bit NaN pattern and lse with a NaN: anything the kernel does not
  // write stays detectably unwritten.
  void poison() {
    out.copy_from(std::vector<uint16_t>(out.bytes() / sizeof(uint16_t), kPoison16));
    lse.copy_from(std::vector<float>(lse.bytes() / sizeof(float), poison_f32()));
  }

  // Whether out and lse still hold poison() everywhere (a refused call wrote nothing); the
  // failure names the first element written.
  ::testing::AssertionResult still_poisoned() const {
    const std::vector<uint16_t> o = out.download<uint16_t>();
    for (size_t i = 0; i < o.size(); ++i)
      if (o[i] != kPoison16) return ::testing::AssertionFailure() << "out[" << i << "] written";
    const std::vector<float> l = lse.download<float>();
    for (size_t i = 0; i < l.size(); ++i)
      if (!is_poison_f32(l[i])) return ::testing::AssertionFailure() << "lse[" << i << "] written";
    return ::testing::AssertionSuccess();
  }

  Bases bases() const {
    Bases b;
    for (int i = 0; i < kNumBufs; ++i) b.buf[i] = buf[i].get();
    b.alibi = alibi.as<const float>();
    b.sink = sink.as<const float>();
    b.k_descale = k_descale.as<const float>();
    b.v_descale = v_descale.as<const float>();
    b.mm_ranges = mm_ranges.as<const int32_t>();
    b.cu_q = cu_q.as<const int32_t>();
    b.cu_k = cu_k.as<const int32_t>();
    b.seqused_k = seqused_k.as<const int32_t>();
    b.cache_seqlens = cache_seqlens.as<const int32_t>();
    b.cache_batch_idx = cache_batch_idx.as<const int32_t>();
    b.leftpad_k = leftpad_k.as<const int32_t>();
    b.block_table = block_table.as<const int32_t>();
    b.out = out.get();
    b.lse = lse.as<float>();
    return b;
  }
  flare_mha_fwd_params params(const HostProblem& hp) const { return bind(hp, bases()); }
};

// A call flare refuses with `status`: flare_mha_fwd (and, with every_entry, the workspace-size
// and can-implement entry points too) return it, flare_last_error() contains each of
// `messages`, and out / lse still hold their poison (nothing written, nothing launched).
inline void expect_refused(const std::string& name, const flare_mha_fwd_params& p,
                           const DeviceProblem& dp, cudaStream_t stream, flare_status status,
                           const std::vector<const char*>& messages, bool every_entry = false) {
  if (every_entry) {
    size_t bytes = 0;
    EXPECT_EQ(flare_mha_fwd_workspace_size(&p, g_device, &bytes), status)
        << name << ": " << flare_last_error();
    EXPECT_EQ(flare_can_implement(&p, g_device), status) << name << ": " << flare_last_error();
  }
  const flare_status st = flare_mha_fwd(&p, stream);
  EXPECT_EQ(st, status) << name << ": " << flare_status_string(st) << ": " << flare_last_error();
  const std::string msg = flare_last_error();
  for (const char* m : messages)
    EXPECT_NE(msg.find(m), std::string::npos)
        << name << ": \"" << msg << "\" lacks \"" << m << "\"";
  CUDA_CHECK(cudaDeviceSynchronize());
  ASSERT_TRUE(dp.still_poisoned()) << name;
}

// ---------------------------------------------------------------------------------------------
// Running flare through the C ABI: workspace query, allocation, launch on `stream`, sync.
// Returns the status; on failure *error holds the status string and flare_last_error().
inline flare_status run_flare(flare_mha_fwd_params p, DeviceBuffer& workspace, cudaStream_t stream,
                              std::string* error) {
  size_t bytes = 0;
  flare_status st = flare_mha_fwd_workspace_size(&p, g_device, &bytes);
  if (st != FLARE_OK) {
    *error = std::string("flare_mha_fwd_workspace_size: ") + flare_status_string(st) + ": " +
             flare_last_error();
    return st;
  }
  if (workspace.bytes() < bytes) workspace.alloc(bytes);
  p.workspace = bytes > 0 ? workspace.get() : nullptr;
  p.workspace_size = bytes > 0 ? workspace.bytes() : 0;
  st = flare_mha_fwd(&p, stream);
  if (st != FLARE_OK) {
    *error = std::string("flare_mha_fwd: ") + flare_status_string(st) + ": " + flare_last_error();
    return st;
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));
  CUDA_CHECK(cudaGetLastError());
  return FLARE_OK;
}

// The split count flare resolves for these (device-bound) params, -1 on error.
inline int resolved_splits(const flare_mha_fwd_params& p) {
  int n = -1;
  if (flare_mha_fwd_num_splits(&p, g_device, &n) != FLARE_OK) return -1;
  return n;
}

// ---------------------------------------------------------------------------------------------
// CPU references.
struct RefOutputs {
  std::vector<double> out64;  // Float64 reference, laid out like the GPU output
  std::vector<double> out_lp; // NaiveLowPrecision reference, rounded to the dtype
  std::vector<double> lse64;  // Float64 log-sum-exp, laid out like the GPU lse
  double lse_naive_err = 0;   // max |naive lse - float64 lse| over finite entries
  double out_naive_err = 0;   // max |out_lp - out64| over every element (NaN gaps ignored)
  double out_max_abs = 0;     // max |out64| over every element (NaN gaps ignored)
};

// `p` must be bound to host data (for a KV cache: k/v = the caches after ref::append_kv);
// out_elems / lse_elems: the extents of its output and lse.
inline RefOutputs compute_reference(const flare_mha_fwd_params& p, size_t out_elems,
                                    size_t lse_elems) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  RefOutputs r;
  r.out64.assign(out_elems, nan);
  r.out_lp.assign(out_elems, nan);
  r.lse64.assign(lse_elems, nan);
  flare::ref::attention_forward(p, flare::ref::Precision::Float64, r.out64.data(), r.lse64.data());
  std::vector<double> lse_lp(lse_elems, nan);
  flare::ref::attention_forward(p, flare::ref::Precision::NaiveLowPrecision, r.out_lp.data(),
                                lse_lp.data());
  for (size_t i = 0; i < lse_lp.size(); ++i)
    if (std::isfinite(lse_lp[i]) && std::isfinite(r.lse64[i]))
      r.lse_naive_err = std::max(r.lse_naive_err, std::fabs(lse_lp[i] - r.lse64[i]));
  // flare stores its output in the dtype; the naive reference is compared at the same storage
  // precision (rounding an already rounded value is a no-op).
  for (double& x : r.out_lp)
    if (!std::isnan(x)) x = flare::ref::to_float(flare::ref::from_double(x, p.dtype), p.dtype);
  for (size_t e = 0; e < out_elems; ++e) {
    r.out_naive_err = std::max(r.out_naive_err, std::fabs(r.out_lp[e] - r.out64[e]));
    r.out_max_abs = std::max(r.out_max_abs, std::fabs(r.out64[e]));
  }
  return r;
}

inline RefOutputs compute_reference(const flare_mha_fwd_params& p, const HostProblem& hp) {
  return compute_reference(p, hp.out_elems, hp.ref_lse_elems);
}

// Cumulative sequence lengths {0, l0, l0 + l1, ...} of a varlen batch.
inline std::vector<int32_t> prefix_sums(const std::vector<int>& lens) {
  std::vector<int32_t> cu(lens.size() + 1, 0);
  for (size_t i = 0; i < lens.size(); ++i) cu[i + 1] = cu[i] + lens[i];
  return cu;
}

inline size_t ref_lse_size(const flare_mha_fwd_params& p, int total_q) {
  return flare::is_varlen(p) ? size_t(p.num_heads) * total_q
                             : size_t(p.batch) * p.num_heads * p.seqlen_q;
}

// ---------------------------------------------------------------------------------------------
// Comparison.
//   out:  max|flare - f64| <= 2 * max|naive_lowp - f64| + 1e-5 over every element (head_dim_v
//         of them) of every real row; every such element written (no NaN left from the poison),
//         finite; rows that see no key exactly 0; elements outside real rows (stride gaps)
//         still poisoned.
//   lse:  |flare - f64| <= max(1e-3, 2 x naive lse error) + 1e-4 |f64|; a row that sees no key
//         exactly its sink logit (-inf without sinks); entries outside real rows still
//         poisoned.
struct Verdict {
  bool ok = true;
  double max_err = 0, naive_err = 0, bound = 0, lse_err = 0;
  int64_t nonfinite = 0, stray = 0, empty_row_nonzero = 0, lse_bad = 0, lse_stray = 0;
  std::string where;  // location/values of the worst or first problem

  std::string summary() const {
    std::ostringstream os;
    os << "err=" << max_err << " bound=" << bound << " naive_err=" << naive_err
       << " lse_err=" << lse_err << " unwritten/nonfinite=" << nonfinite << " stray=" << stray
       << " empty_row_nonzero=" << empty_row_nonzero << " lse_bad=" << lse_bad
       << " lse_stray=" << lse_stray;
    if (!where.empty()) os << " | " << where;
    return os.str();
  }
};

inline double error_bound(double naive_err) { return 2.0 * naive_err + 1e-5; }

// `hp` is the host binding (its varlen/cache arrays locate the rows).
inline Verdict check_output(const flare_mha_fwd_params& hp, const std::vector<uint16_t>& out,
                            const std::vector<float>& lse, const RefOutputs& ref) {
  Verdict v;
  const int dtype = hp.dtype;
  std::vector<char> real(out.size(), 0), lse_real(lse.size(), 0);
  std::string first_bad;
  auto note = [&](const std::string& s) {
    if (first_bad.empty()) first_bad = s;
  };
  int wb = -1, wrow = -1, wh = -1, wt = -1;
  double wgot = 0, wref = 0;
  const int dv = flare::v_head_dim(hp);
  for (int b = 0; b < hp.batch; ++b) {
    const flare::SequenceInfo s = flare::sequence_info(hp, b);
    const flare::MaskSpec mask = flare::sequence_mask(hp, s);
    for (int row = 0; row < s.seqlen_q; ++row) {
      // The mask's keys are one interval; only a row the mask leaves empty scans for range keys.
      bool sees_a_key = mask.first_key(row) < mask.end_key(row);
      for (int j = 0; j < s.seqlen_k && !sees_a_key; ++j)
        sees_a_key = flare::key_visible(hp, s, mask, row, j);
      const bool empty_row = !sees_a_key;
      for (int h = 0; h < hp.num_heads; ++h) {
        const int64_t lo = flare::lse_offset(hp, s, row, h);
        const double rl = ref.lse64[lo];
        const int64_t base = flare::out_offset(hp, s, row, h);
        for (int t = 0; t < dv; ++t) {
          const int64_t idx = base + t;
          if (idx < 0 || size_t(idx) >= out.size()) {
            ++v.nonfinite;
            note("output offset out of range");
            continue;
          }
          real[idx] = 1;
          const float g = flare::ref::to_float(out[idx], dtype);
          if (!std::isfinite(g)) {
            ++v.nonfinite;
            std::ostringstream os;
            os << "first unwritten/nonfinite: b=" << b << " row=" << row << " head=" << h
               << " t=" << t << " bits=0x" << std::hex << out[idx];
            note(os.str());
            continue;
          }
          const double e = std::fabs(double(g) - ref.out64[idx]);
          if (e > v.max_err) {
            v.max_err = e;
            wb = b, wrow = row, wh = h, wt = t, wgot = g, wref = ref.out64[idx];
          }
          v.naive_err = std::max(v.naive_err, std::fabs(ref.out_lp[idx] - ref.out64[idx]));
          if (empty_row && g != 0.f) ++v.empty_row_nonzero;
        }
        if (!lse.empty()) {
          if (lo < 0 || size_t(lo) >= lse.size()) {
            ++v.lse_bad;
            continue;
          }
          lse_real[lo] = 1;
          const float g = lse[lo];
          bool bad;
          if (empty_row) {
            // The reference's lse of such a row is the sink logit (-inf without): exactly
            // without a sink; with one, the kernels' log2-unit round trip (sink x log2 e, then
            // x ln 2) may move it by a few float ulps.
            const float sink = float(flare::sink_logit(hp, h));
            bad = std::isinf(sink) ? !(g == sink)
                                   : !(std::fabs(double(g) - sink) <=
                                       4.0 * FLT_EPSILON * std::max(1.0, std::fabs(double(sink))));
          } else {
            const double e = std::fabs(double(g) - rl);
            // The output rule applied to the LSE: at most twice the naive implementation's
            // error (inputs such as a rotated q are rounded to the dtype there too), and never
            // tighter than 1e-3.
            const double bound = std::max(1e-3, 2 * ref.lse_naive_err) + 1e-4 * std::fabs(rl);
            bad = !std::isfinite(g) || e > bound;
            if (std::isfinite(g)) v.lse_err = std::max(v.lse_err, e);
          }
          if (bad) {
            if (v.lse_bad == 0) {
              std::ostringstream os;
              os << "first lse mismatch: b=" << b << " row=" << row << " head=" << h
                 << " got=" << g << " ref=" << rl;
              note(os.str());
            }
            ++v.lse_bad;
          }
        }
      }
    }
  }
  for (size_t i = 0; i < out.size(); ++i)
    if (!real[i] && out[i] != kPoison16) ++v.stray;
  for (size_t i = 0; i < lse.size(); ++i)
    if (!lse_real[i] && !is_poison_f32(lse[i])) ++v.lse_stray;

  v.bound = error_bound(v.naive_err);
  v.ok = v.max_err <= v.bound && v.nonfinite == 0 && v.stray == 0 && v.empty_row_nonzero == 0 &&
         v.lse_bad == 0 && v.lse_stray == 0;
  std::ostringstream os;
  if (wb >= 0)
    os << "worst: b=" << wb << " row=" << wrow << " head=" << wh << " t=" << wt
       << " got=" << wgot << " ref=" << wref;
  if (!first_bad.empty()) os << (wb >= 0 ? "; " : "") << first_bad;
  v.where = os.str();
  return v;
}

// Prints the one-line summary of a failing case and records the gtest failure.
inline void report_failure(const std::string& case_desc, const std::string& what) {
  std::printf("[ FLARE FAIL ] %s | %s\n", case_desc.c_str(), what.c_str());
  std::fflush(stdout);
  ADD_FAILURE() << case_desc << " | " << what;
}

// Max |a - b| over two outputs (bit patterns of the dtype), only where `mask` is set.
inline double max_abs_diff16(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b,
                             int dtype) {
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (a[i] == kPoison16 && b[i] == kPoison16) continue;
    const double x = flare::ref::to_float(a[i], dtype), y = flare::ref::to_float(b[i], dtype);
    if (std::isnan(x) != std::isnan(y)) return std::numeric_limits<double>::infinity();
    if (!std::isnan(x)) m = std::max(m, std::fabs(x - y));
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// Reference prefetching. The CPU reference dominates the suite's run time and is single
// threaded per case, so the references of the next `window` cases (in gtest's run order) are
// computed on worker threads while the GPU part of the current case runs. Results are handed
// out once (take) and freed by the caller.
template <class Result>
class Prefetcher {
 public:
  using Job = std::function<Result()>;

  bool ready() const { return ready_; }

  // jobs[i] computes the result of case i; run_order lists the case ids in the order the tests
  // will ask for them (ids missing from it are computed on demand).
  void init(std::vector<Job> jobs, const std::vector<size_t>& run_order, size_t window) {
    jobs_ = std::move(jobs);
    futures_.clear();
    futures_.resize(jobs_.size());
    launched_.assign(jobs_.size(), 0);
    order_ = run_order;
    pos_.clear();
    for (size_t i = 0; i < order_.size(); ++i) pos_[order_[i]] = i;
    window_ = std::max<size_t>(1, window);
    ready_ = true;
  }

  Result take(size_t id) {
    auto it = pos_.find(id);
    if (it != pos_.end()) {
      const size_t end = std::min(order_.size(), it->second + window_);
      for (size_t k = it->second; k < end; ++k) launch(order_[k]);
    }
    launch(id);
    return futures_.at(id).get();
  }

 private:
  void launch(size_t id) {
    if (id >= jobs_.size() || launched_[id]) return;
    launched_[id] = 1;
    futures_[id] = std::async(std::launch::async, jobs_[id]);
  }

  bool ready_ = false;
  std::vector<Job> jobs_;
  std::vector<std::future<Result>> futures_;
  std::vector<char> launched_;
  std::vector<size_t> order_;
  std::map<size_t, size_t> pos_;
  size_t window_ = 1;
};

// The printed parameters (value_param) of the tests gtest will run, in order, over every test
// suite whose name is `suite` or ends with "/suite".
inline std::vector<std::string> planned_params(const std::string& suite) {
  std::vector<std::string> out;
  const ::testing::UnitTest* ut = ::testing::UnitTest::GetInstance();
  for (int i = 0; i < ut->total_test_suite_count(); ++i) {
    const ::testing::TestSuite* ts = ut->GetTestSuite(i);
    const std::string name = ts->name();
    const bool match = name == suite || (name.size() > suite.size() + 1 &&
                                         name.compare(name.size() - suite.size() - 1,
                                                      std::string::npos, "/" + suite) == 0);
    if (!match) continue;
    for (int j = 0; j < ts->total_test_count(); ++j) {
      const ::testing::TestInfo* ti = ts->GetTestInfo(j);
      if (ti->should_run() && ti->value_param() != nullptr) out.push_back(ti->value_param());
    }
  }
  return out;
}

}  // namespace flare_test
