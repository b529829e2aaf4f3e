// flare._flare: the nanobind extension behind the `flare` Python package.
//
// It takes any DLPack-capable CUDA array (torch, cupy, jax, ...) without copying and turns it
// into a flare::TensorView named after its Python argument; the params are built by the C++ API
// (flare::make_params*, flare::make_merge_params in <flare/flare.hpp>), which checks how the
// views relate (ranks, shapes, dtypes, heads). What that API cannot see is checked here: that an
// argument is a CUDA array of an accepted dtype on q's device, and the arrays the C API takes as
// bare pointers (cu_seqlens, cache_seqlens, block_table, alibi_slopes, learnable_sink,
// mm_prefix_ranges, lse). Head dims are passed through as they come (the library takes any it
// accepts; nothing is padded or copied), and out takes v's head dim (head_dim_v).
//
// Order of a call (every argument check before any CUDA call):
//   1. the checks above and the C++ API's, on host data only;
//   2. flare::plan_mha_fwd (api/fwd_planned.h): flare_mha_fwd_workspace_size's validation of
//      every rule, before it reads the device, and the plan, once per call; fresh outputs and
//      an int cache_seqlens are represented by aligned placeholder pointers here;
//   3. only then the device: a missing driver or GPU is reported as such (require_device), the
//      outputs are allocated (cudaMalloc), the workspace comes from the wrapper's allocator
//      (torch's caching allocator for torch inputs) or stream-ordered cudaMallocAsync, and
//      flare::launch_planned_mha_fwd launches the plan.
// A call never synchronises the host (but for Scratch's fallback on a device without memory
// pools) and never copies from host memory (an int cache_seqlens is a device-side fill), so a
// call on a capturing stream is captured whole into the CUDA graph.
// Results go into caller-given arrays (out=, lse=) or into fresh cudaMalloc'd buffers returned as
// DLPack-capable nanobind ndarrays owning their memory.
//
// FP8 inputs (flare.h, "FP8 inputs"): k / v (and k_cache / v_cache) may hold float8_e4m3fn or
// float8_e5m2 codes, q float8_e4m3fn codes (FP8 prefill), each with its float32 descale array
// (q_descale, k_descale, v_descale: one factor per tensor, or FlashAttention-3's (batch,
// nheads_k)). They come through DLPack as they are: DLPack 1.1's type codes kDLFloat8_e4m3fn
// (10) and kDLFloat8_e5m2 (12), which torch exports for its float8 tensors and nanobind passes
// through untouched (an ndarray<> without a dtype constraint). A producer that cannot export
// float8 (older torch) is handled by the Python wrapper, which passes a uint8 view of the same
// memory and names the FP8 type in `fp8_codes` (retype_fp8 below): no copy, no device work.
//
// The FlashAttention-2 style signatures, defaults, the stream choice and the conversion of
// results back to the caller's framework live in python/flare/_interface.py; the functions
// here are the private core (_fwd, _varlen_fwd, _kvcache_fwd, _merge).
#include <flare/flare.h>
#include <flare/flare.hpp>

#include "api/fwd_planned.h"     // flare_static's forward validated and planned once per call
#include "api/merge_validate.h"  // flare_static's host checks: merge validation before CUDA

#include <cuda.h>  // CUresult, CUdeviceptr, CUstream: cuMemsetD32Async through the entry point

#include <cuda_runtime.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace nb = nanobind;

namespace {

#ifndef FLARE_PY_ARCHS
#define FLARE_PY_ARCHS ""
#endif
#ifndef FLARE_PY_HEAD_DIMS
#define FLARE_PY_HEAD_DIMS ""
#endif
#ifndef FLARE_PY_DTYPES
#define FLARE_PY_DTYPES ""
#endif

// ---------------------------------------------------------------- errors

[[noreturn]] void raise(PyObject* type, const std::string& message) {
  PyErr_SetString(type, message.c_str());
  throw nb::python_error();
}

[[noreturn]] void value_error(const std::string& message) { raise(PyExc_ValueError, message); }

// Statuses that describe the arguments (ValueError / NotImplementedError), not the machine.
bool is_argument_status(flare_status status) {
  switch (status) {
    case FLARE_ERROR_INVALID_ARGUMENT:
    case FLARE_ERROR_MISALIGNED:
    case FLARE_ERROR_UNSUPPORTED_DTYPE:
    case FLARE_ERROR_UNSUPPORTED_HEAD_DIM:
    case FLARE_ERROR_NOT_SUPPORTED:
      return true;
    default:
      return false;
  }
}

const char* const kNoDeviceText = "no CUDA driver/GPU found";

// A flare status as a Python exception carrying flare_last_error().
void check_status(flare_status status) {
  if (status == FLARE_OK) return;
  const char* detail = flare_last_error();
  std::string message = std::string("flare: ") + flare_status_string(status);
  if (detail && *detail) message += ": " + std::string(detail);
  if (status == FLARE_ERROR_NO_DEVICE)
    raise(PyExc_RuntimeError, std::string("flare: ") + kNoDeviceText +
                                  (detail && *detail ? " (" + std::string(detail) + ")" : ""));
  if (status == FLARE_ERROR_NOT_SUPPORTED) raise(PyExc_NotImplementedError, message);
  if (is_argument_status(status)) raise(PyExc_ValueError, message);
  raise(PyExc_RuntimeError, message);  // ARCH_NOT_SUPPORTED, WORKSPACE_TOO_SMALL, CUDA
}

void check_cuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  raise(PyExc_RuntimeError, std::string("flare: ") + what + " failed: " + cudaGetErrorName(err) +
                                " (" + cudaGetErrorString(err) + ")");
}

// Raises RuntimeError("no CUDA driver/GPU found") when the CUDA runtime sees no device, and a
// RuntimeError naming `device` when it is not one of the visible ones. The first CUDA call of
// every entry point, after all argument checks.
void require_device(int device) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();
    raise(PyExc_RuntimeError,
          std::string("flare: ") + kNoDeviceText + " (cudaGetDeviceCount: " +
              (err != cudaSuccess ? std::string(cudaGetErrorName(err)) + ", " +
                                        cudaGetErrorString(err)
                                  : std::string("0 devices")) +
              ")");
  }
  if (device < 0 || device >= count)
    raise(PyExc_RuntimeError, "flare: the arrays are on CUDA device " + std::to_string(device) +
                                  " but the CUDA runtime sees " + std::to_string(count) +
                                  (count == 1 ? " device" : " devices") +
                                  " (CUDA_VISIBLE_DEVICES?)");
}

// Runs a flare.hpp params builder, turning its flare::Error into the matching Python exception.
template <typename Build>
auto build(Build&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const flare::Error& e) {
    const flare_status st = e.status();
    raise(st == FLARE_ERROR_NOT_SUPPORTED ? PyExc_NotImplementedError
          : is_argument_status(st)        ? PyExc_ValueError
                                          : PyExc_RuntimeError,
          e.what());
  }
}

// ---------------------------------------------------------------- array views

enum class Kind { Float32, Int32 };

constexpr int kMaxDims = 6;

// A CUDA array taken from a DLPack producer: pointer, dtype, shape, strides (elements).
struct View {
  nb::ndarray<nb::ro> keep_ro;  // keeps the producer's buffer alive for the call
  nb::ndarray<> keep_rw;
  const char* name = "";
  char* data = nullptr;
  nb::dlpack::dtype dtype{};
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  std::array<int64_t, kMaxDims> stride{};
  int device = 0;

  bool defined() const { return data != nullptr || ndim > 0; }
  size_t itemsize() const { return (dtype.bits + 7) / 8; }
};

std::string type_of(nb::handle h) { return nb::cast<std::string>(nb::type_name(h.type())); }

std::string shape_text(const View& v) {
  std::string s = "(";
  for (int i = 0; i < v.ndim; ++i) s += (i ? ", " : "") + std::to_string(v.shape[i]);
  return s + (v.ndim == 1 ? ",)" : ")");
}

template <typename Array>
void fill_view(View& v, const Array& a, const char* name) {
  v.name = name;
  v.ndim = static_cast<int>(a.ndim());
  if (v.ndim > kMaxDims)
    value_error(std::string(name) + " has " + std::to_string(v.ndim) +
                " dimensions; at most 6 are expected");
  v.data = static_cast<char*>(const_cast<void*>(static_cast<const void*>(a.data())));
  v.dtype = a.dtype();
  v.device = a.device_id();
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = static_cast<int64_t>(a.shape(i));
    v.stride[i] = a.stride(i);
  }
  if (a.device_type() != nb::device::cuda::value)
    value_error(std::string(name) +
                " must be a CUDA array (a CUDA torch tensor, cupy or jax array, or any "
                "DLPack producer on a CUDA device); got an array on DLPack device type " +
                std::to_string(a.device_type()) +
                (a.device_type() == nb::device::cpu::value ? " (CPU)" : ""));
}

// `name` as a CUDA array view; None gives an undefined view. writable: the array is written.
View as_view(const char* name, nb::handle h, bool writable) {
  View v;
  v.name = name;
  if (h.is_none()) return v;
  try {
    if (writable) {
      v.keep_rw = nb::cast<nb::ndarray<>>(h, false);
      fill_view(v, v.keep_rw, name);
    } else {
      v.keep_ro = nb::cast<nb::ndarray<nb::ro>>(h, false);
      fill_view(v, v.keep_ro, name);
    }
  } catch (const nb::cast_error&) {
    value_error(std::string(name) + " must be a " + (writable ? "writable " : "") +
                "CUDA array supporting DLPack (torch, cupy, jax, ...); got " + type_of(h));
  }
  return v;
}

// Removes dimension `dim` of a packed array, keeping entry `index` (qkv[:, :, 1] etc.).
View component(const View& packed, int dim, int index) {
  View v = packed;
  v.data = packed.data + index * packed.stride[dim] * static_cast<int64_t>(packed.itemsize());
  for (int i = dim; i + 1 < packed.ndim; ++i) {
    v.shape[i] = packed.shape[i + 1];
    v.stride[i] = packed.stride[i + 1];
  }
  v.ndim = packed.ndim - 1;
  return v;
}

std::string dim_name(const View& v, int d) {
  return std::string(v.name) + ".shape[" + std::to_string(d) + "]";
}

void expect_ndim(const View& v, int ndim, const char* layout) {
  if (v.ndim != ndim)
    value_error(std::string(v.name) + " must have " + std::to_string(ndim) + " dimensions " +
                layout + ", got shape " + shape_text(v));
}

void expect_dim(const View& v, int d, int64_t expected, const std::string& what) {
  if (v.shape[d] != expected)
    value_error(dim_name(v, d) + " is " + std::to_string(v.shape[d]) + " but must equal " +
                what + " (" + std::to_string(expected) + ")");
}

// DLPack 1.1's codes of the two FP8 formats flare reads (by number: older nanobind releases
// have no names for them).
constexpr uint8_t kDLFloat8E4M3FN = 10;
constexpr uint8_t kDLFloat8E5M2 = 12;

std::string dtype_text(nb::dlpack::dtype t) {
  if (t.bits == 8 && t.lanes == 1 && t.code == kDLFloat8E4M3FN) return "float8_e4m3fn";
  if (t.bits == 8 && t.lanes == 1 && t.code == kDLFloat8E5M2) return "float8_e5m2";
  if (t.code >= 7 && t.code <= 14)
    return "a float8 type of DLPack code " + std::to_string(t.code) +
           " (flare reads float8_e4m3fn and float8_e5m2)";
  const char* code = "?";
  switch (static_cast<nb::dlpack::dtype_code>(t.code)) {
    case nb::dlpack::dtype_code::Int: code = "int"; break;
    case nb::dlpack::dtype_code::UInt: code = "uint"; break;
    case nb::dlpack::dtype_code::Float: code = "float"; break;
    case nb::dlpack::dtype_code::Bfloat: code = "bfloat"; break;
    case nb::dlpack::dtype_code::Complex: code = "complex"; break;
    case nb::dlpack::dtype_code::Bool: code = "bool"; break;
    default: break;
  }
  return std::string(code) + std::to_string(t.bits);
}

bool is(nb::dlpack::dtype t, nb::dlpack::dtype_code code, int bits) {
  return t.code == static_cast<uint8_t>(code) && t.bits == bits && t.lanes == 1;
}

// The flare dtype of an array: float16 / bfloat16, and float32 where `allow_fp32` (merge).
flare::DType dtype_of(const View& v, bool allow_fp32) {
  if (is(v.dtype, nb::dlpack::dtype_code::Float, 16)) return flare::DType::FP16;
  if (is(v.dtype, nb::dlpack::dtype_code::Bfloat, 16)) return flare::DType::BF16;
  if (allow_fp32 && is(v.dtype, nb::dlpack::dtype_code::Float, 32)) return flare::DType::FP32;
  value_error(std::string(v.name) + (allow_fp32 ? " must be float16, bfloat16 or float32, got "
                                                : " must be float16 or bfloat16, got ") +
              dtype_text(v.dtype));
}

// The FP8 type of an array (E4M3 / E5M2), or FP16 when it holds no FP8 codes.
flare::DType fp8_type_of(const View& v) {
  if (v.dtype.bits == 8 && v.dtype.lanes == 1) {
    if (v.dtype.code == kDLFloat8E4M3FN) return flare::DType::E4M3;
    if (v.dtype.code == kDLFloat8E5M2) return flare::DType::E5M2;
  }
  return flare::DType::FP16;
}

bool is_fp8(const View& v) { return flare::is_fp8(fp8_type_of(v)); }

// The flare dtype of an attention input that may hold FP8 codes: float16 / bfloat16, or
// float8_e4m3fn / float8_e5m2.
flare::DType attn_dtype_of(const View& v) {
  if (is_fp8(v)) return fp8_type_of(v);
  if (is(v.dtype, nb::dlpack::dtype_code::Float, 16) ||
      is(v.dtype, nb::dlpack::dtype_code::Bfloat, 16))
    return dtype_of(v, false);
  value_error(std::string(v.name) +
              " must be float16, bfloat16, float8_e4m3fn or float8_e5m2, got " +
              dtype_text(v.dtype));
}

// The Python wrapper's stand-in for a float8 tensor its framework cannot export through
// DLPack: a uint8 view of the same memory, with the DLPack code of its FP8 type (0: none).
void retype_fp8(View& v, int code) {
  if (code == 0 || !v.defined()) return;
  if (code != kDLFloat8E4M3FN && code != kDLFloat8E5M2)
    value_error(std::string(v.name) + ": unknown FP8 type code " + std::to_string(code));
  if (!is(v.dtype, nb::dlpack::dtype_code::UInt, 8))
    value_error(std::string(v.name) + " must be a uint8 view of FP8 codes, got " +
                dtype_text(v.dtype));
  v.dtype = nb::dlpack::dtype{static_cast<uint8_t>(code), 8, 1};
}

// The DLPack type of fresh outputs of flare dtype `dtype` (fp16 / bf16).
nb::dlpack::dtype dlpack_type(int32_t dtype) {
  const auto code = dtype == FLARE_DTYPE_BF16 ? nb::dlpack::dtype_code::Bfloat
                                              : nb::dlpack::dtype_code::Float;
  return nb::dlpack::dtype{static_cast<uint8_t>(code), 16, 1};
}

void expect_kind(const View& v, Kind kind) {
  if (kind == Kind::Float32 && !is(v.dtype, nb::dlpack::dtype_code::Float, 32))
    value_error(std::string(v.name) + " must be float32, got " + dtype_text(v.dtype));
  if (kind == Kind::Int32 && !is(v.dtype, nb::dlpack::dtype_code::Int, 32))
    value_error(std::string(v.name) + " must be int32, got " + dtype_text(v.dtype));
}

void expect_device(const View& v, int device) {
  if (v.defined() && v.device != device)
    value_error(std::string(v.name) + " is on CUDA device " + std::to_string(v.device) +
                " but q is on device " + std::to_string(device));
}

void expect_contiguous_last(const View& v) {
  if (v.ndim > 0 && v.shape[v.ndim - 1] > 1 && v.stride[v.ndim - 1] != 1)
    value_error(std::string(v.name) +
                " must be contiguous in its last dimension (stride 1), got stride " +
                std::to_string(v.stride[v.ndim - 1]));
}

// A 1-D int32 array of `length` entries, contiguous (the C API takes it as a bare pointer).
void expect_int_vector(const View& v, int64_t length, const std::string& what) {
  expect_ndim(v, 1, "");
  expect_kind(v, Kind::Int32);
  expect_dim(v, 0, length, what);
  expect_contiguous_last(v);
}

// The view as the C++ API's TensorView, named after the Python argument. A dimension of
// extent 1 gets the stride a dense array of this shape would have: its stride is never used
// for addressing and producers set arbitrary ones (which the alignment rules would refuse).
// keep_leading_stride: dimension 0 keeps its stride even at extent 1 (a KV cache's batch or
// page stride, which the library reads whatever the extent), except an FP8 one that is not a
// multiple of 16 elements: producers that report stride 1 for extent-1 dimensions in DLPack
// (older torch releases) would fail the FP8 16-element rule, and with one entry the dense
// stride addresses the same memory.
flare::TensorView tensor_of(const View& v, flare::DType dtype, bool keep_leading_stride = false) {
  if (v.ndim < 1 || v.ndim > 4)
    value_error(std::string(v.name) + " must have 1 to 4 dimensions, got shape " + shape_text(v));
  flare::TensorView t;
  t.data = v.data;
  t.dtype = dtype;
  t.rank = v.ndim;
  t.name = v.name;
  int64_t dense = 1;
  for (int d = v.ndim - 1; d >= 0; --d) {
    t.shape[d] = v.shape[d];
    const bool fp8_misfit = flare::is_fp8(dtype) && v.stride[d] % 16 != 0;
    const bool keep = v.shape[d] != 1 || (d == 0 && keep_leading_stride && !fp8_misfit);
    t.stride[d] = keep ? v.stride[d] : dense;
    dense *= v.shape[d];
  }
  return t;
}

// ---------------------------------------------------------------- device memory

// Sets the current CUDA device for the call and restores the previous one on scope exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
    changed_ = previous_ != device;
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
  bool changed_ = false;
};

struct OwnedBuffer {
  void* ptr;
  int device;
};

// A fresh cudaMalloc'd array returned to Python; the capsule frees it with the array.
nb::ndarray<> new_array(int device, nb::dlpack::dtype dtype, const std::vector<size_t>& shape) {
  size_t count = 1;
  for (size_t s : shape) count *= s;
  const size_t bytes = count * ((dtype.bits + 7) / 8);
  void* ptr = nullptr;
  check_cuda(cudaMalloc(&ptr, bytes ? bytes : 1), "cudaMalloc (output array)");
  auto* owned = new OwnedBuffer{ptr, device};
  nb::capsule owner(owned, [](void* p) noexcept {
    auto* b = static_cast<OwnedBuffer*>(p);
    int previous = 0;
    if (cudaGetDevice(&previous) == cudaSuccess) {
      cudaSetDevice(b->device);
      cudaFree(b->ptr);  // errors (e.g. at interpreter exit) are ignored
      cudaSetDevice(previous);
    }
    delete b;
  });
  return nb::ndarray<>(ptr, shape.size(), shape.data(), owner, nullptr, dtype,
                       nb::device::cuda::value, device);
}

// Stream-ordered scratch memory for one call: the workspace plus small uploads.
class Scratch {
 public:
  Scratch(cudaStream_t stream, size_t bytes) : stream_(stream) {
    if (bytes == 0) return;
    cudaError_t err = cudaMallocAsync(&raw_, bytes + kAlign, stream);
    if (err == cudaErrorNotSupported) {  // no memory pools: plain allocation, synchronous free
      cudaGetLastError();
      async_ = false;
      err = cudaMalloc(&raw_, bytes + kAlign);
    }
    check_cuda(err, async_ ? "cudaMallocAsync (workspace)" : "cudaMalloc (workspace)");
    base_ = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(raw_) + kAlign - 1) / kAlign *
                                    kAlign);
  }
  ~Scratch() {
    if (!raw_) return;
    if (async_) {
      cudaFreeAsync(raw_, stream_);
    } else {
      cudaStreamSynchronize(stream_);
      cudaFree(raw_);
    }
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  char* at(size_t offset) const { return base_ + offset; }

  static constexpr size_t kAlign = 256;

 private:
  cudaStream_t stream_;
  void* raw_ = nullptr;
  char* base_ = nullptr;
  bool async_ = true;
};

size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// Stands in for memory allocated only after validation (fresh outputs, uploaded
// cache_seqlens): aligned like cudaMalloc's memory, never dereferenced.
void* placeholder() { return reinterpret_cast<void*>(uintptr_t(Scratch::kAlign)); }

// ---------------------------------------------------------------- outputs

// out= and lse= of one attention call: the caller's arrays, or fresh ones allocated by
// allocate() once every check has passed (until then the params hold placeholders).
struct Outputs {
  View out, lse;
  bool want_lse = false;
  nb::object out_obj = nb::none(), lse_obj = nb::none();

  // The shape of a fresh out: q's with v's head dim dv last.
  static std::vector<size_t> fresh_shape(const View& q, int64_t dv) {
    std::vector<size_t> shape(q.shape.begin(), q.shape.begin() + q.ndim);
    shape.back() = static_cast<size_t>(dv);
    return shape;
  }

  // The out view the params are built from: the caller's, or a dense placeholder shaped like q
  // with v's head dim dv.
  flare::TensorView out_tensor(const View& q, int64_t dv, flare::DType dt) const {
    if (out.defined()) return tensor_of(out, dtype_of(out, false));
    View fresh = q;
    fresh.name = "out";
    fresh.data = static_cast<char*>(placeholder());
    fresh.shape[q.ndim - 1] = dv;
    int64_t dense = 1;
    for (int d = q.ndim - 1; d >= 0; --d) {
      fresh.stride[d] = dense;
      dense *= fresh.shape[d];
    }
    return tensor_of(fresh, dt);
  }

  // Checks a caller's lse= against `shape` (float32, dense: the kernels write it densely) and
  // returns the pointer the params take: the caller's, a placeholder, or null (not wanted).
  float* lse_pointer(const std::vector<int64_t>& shape, int device) const {
    if (lse.defined()) {
      expect_ndim(lse, static_cast<int>(shape.size()), "");
      for (size_t d = 0; d < shape.size(); ++d)
        expect_dim(lse, static_cast<int>(d), shape[d], "the expected extent");
      expect_kind(lse, Kind::Float32);
      int64_t step = 1;
      for (int d = lse.ndim - 1; d >= 0; --d) {
        if (lse.shape[d] > 1 && lse.stride[d] != step) value_error("lse must be contiguous");
        step *= lse.shape[d];
      }
      expect_device(lse, device);
      return reinterpret_cast<float*>(lse.data);
    }
    return want_lse ? static_cast<float*>(placeholder()) : nullptr;
  }

  // Allocates the fresh outputs (after validation, with the device current) into p.
  void allocate(flare_mha_fwd_params& p, const View& q, const std::vector<int64_t>& lse_shape) {
    if (!out.defined()) {
      const int64_t dv = p.head_dim_v ? p.head_dim_v : p.head_dim;
      nb::ndarray<> a = new_array(q.device, dlpack_type(p.dtype), fresh_shape(q, dv));
      out_obj = nb::cast(a);
      p.out = a.data();
    }
    if (!lse.defined() && want_lse) {
      nb::ndarray<> a = new_array(q.device, nb::dtype<float>(),
                                  std::vector<size_t>(lse_shape.begin(), lse_shape.end()));
      lse_obj = nb::cast(a);
      p.lse = static_cast<float*>(a.data());
    }
  }
};

Outputs outputs(nb::handle out_h, nb::handle lse_h, bool want_lse, const View& q) {
  Outputs o;
  o.out = as_view("out", out_h, true);
  o.lse = as_view("lse", lse_h, true);
  o.want_lse = want_lse || o.lse.defined();
  expect_device(o.out, q.device);
  return o;
}

// The head dim of v (and out): its last extent.
int64_t v_head_dim(const View& v) { return v.ndim > 0 ? v.shape[v.ndim - 1] : 0; }

nb::tuple result(const Outputs& o) { return nb::make_tuple(o.out_obj, o.lse_obj); }

// ---------------------------------------------------------------- options

flare::FlashAttnOptions options(float softmax_scale, bool causal, int window_left,
                                int window_right, float softcap) {
  flare::FlashAttnOptions o;
  o.softmax_scale = softmax_scale;
  o.causal = causal;
  o.window_left = window_left;
  o.window_right = window_right;
  o.softcap = softcap;
  return o;
}

// alibi_slopes: float32 (nheads,) or (batch_size, nheads), contiguous rows (a bare pointer and
// a batch stride in the C API).
void apply_alibi(flare::FlashAttnOptions& o, nb::handle alibi_h, const View& q, int64_t batch,
                 int64_t heads) {
  View alibi = as_view("alibi_slopes", alibi_h, false);
  if (!alibi.defined()) return;
  expect_device(alibi, q.device);
  expect_kind(alibi, Kind::Float32);
  expect_contiguous_last(alibi);
  if (alibi.ndim == 1) {
    expect_dim(alibi, 0, heads, "the number of query heads");
    o.alibi_batch_stride = 0;
  } else if (alibi.ndim == 2) {
    expect_dim(alibi, 0, batch, "the batch size");
    expect_dim(alibi, 1, heads, "the number of query heads");
    o.alibi_batch_stride = alibi.shape[0] == 1 ? 0 : alibi.stride[0];
  } else {
    value_error("alibi_slopes must have shape (nheads,) or (batch_size, nheads), got " +
                shape_text(alibi));
  }
  o.alibi_slopes = reinterpret_cast<const float*>(alibi.data);
}

// learnable_sink: float32 (nheads,), one sink logit per query head, contiguous.
void apply_sink(flare::FlashAttnOptions& o, nb::handle sink_h, const View& q, int64_t heads) {
  View sink = as_view("learnable_sink", sink_h, false);
  if (!sink.defined()) return;
  expect_device(sink, q.device);
  expect_ndim(sink, 1, "(nheads,)");
  expect_kind(sink, Kind::Float32);
  expect_dim(sink, 0, heads, "the number of query heads");
  expect_contiguous_last(sink);
  o.sink = reinterpret_cast<const float*>(sink.data);
}

// mm_prefix_ranges: int32 (batch_size, max_ranges, 2) of [start, end) key positions, each
// sequence's pairs dense (the C API reads pair r of sequence b at b * batch_stride + 2 * r).
void apply_ranges(flare::FlashAttnOptions& o, nb::handle ranges_h, const View& q, int64_t batch) {
  View ranges = as_view("mm_prefix_ranges", ranges_h, false);
  if (!ranges.defined()) return;
  expect_device(ranges, q.device);
  expect_ndim(ranges, 3, "(batch_size, max_ranges, 2)");
  expect_kind(ranges, Kind::Int32);
  expect_dim(ranges, 0, batch, "the batch size");
  expect_dim(ranges, 2, 2, "2 (start, end)");
  if (ranges.shape[1] > INT32_MAX / 2) value_error("mm_prefix_ranges.shape[1] is too large");
  if (ranges.shape[1] == 0) return;  // no range per sequence: nothing to pass
  if (ranges.stride[2] != 1 || (ranges.shape[1] > 1 && ranges.stride[1] != 2))
    value_error("mm_prefix_ranges must hold each sequence's (start, end) pairs densely (strides "
                "(*, 2, 1)), got strides (" + std::to_string(ranges.stride[0]) + ", " +
                std::to_string(ranges.stride[1]) + ", " + std::to_string(ranges.stride[2]) + ")");
  o.mm_prefix_ranges = reinterpret_cast<const int32_t*>(ranges.data);
  o.max_mm_prefix_ranges = static_cast<int>(ranges.shape[1]);
  o.mm_prefix_ranges_batch_stride = ranges.shape[0] > 1 ? ranges.stride[0] : 0;
}

// The array options (alibi_slopes, learnable_sink, mm_prefix_ranges) once p knows its batch and
// heads: checked here, then mapped onto p by the C++ API like every other option.
void apply_array_options(flare_mha_fwd_params& p, flare::FlashAttnOptions& o, nb::handle alibi_h,
                         nb::handle sink_h, nb::handle ranges_h, const View& q) {
  apply_alibi(o, alibi_h, q, p.batch, p.num_heads);
  apply_sink(o, sink_h, q, p.num_heads);
  apply_ranges(o, ranges_h, q, p.batch);
  flare::detail::apply_options(p, o);
}

// ---------------------------------------------------------------- FP8 descale factors

// One descale argument and the tensor whose codes it scales, in the Python names.
struct DescaleArg {
  const char* name;    // "k_descale", ...
  nb::handle handle;   // the array, or None
  const View* tensor;  // k, k_cache, ...
};

// descale as the C++ API's Descale: a float32 CUDA array on q's device, set exactly when its
// tensor holds FP8 codes, holding one factor for the whole tensor (shape () or (1,): strides
// 0, 0) or one per (batch entry, K/V head) (shape (batch, heads_k), FlashAttention-3's, any
// strides, passed as element strides; a dimension of extent 1 gets stride 0). The strides'
// range and the pointer's alignment are the library's rules (checked when it validates).
flare::Descale descale_of(const DescaleArg& arg, int64_t batch, int64_t heads_k, const View& q) {
  const View& t = *arg.tensor;
  View d = as_view(arg.name, arg.handle, false);
  const bool fp8 = is_fp8(t);
  if (fp8 && !d.defined())
    value_error(std::string(arg.name) + " is required: " + t.name + " is " +
                dtype_text(t.dtype) + ", whose values are code x descale (float32, shape (" +
                std::to_string(batch) + ", " + std::to_string(heads_k) +
                ") = (batch_size, nheads_k), or one element for the whole tensor)");
  if (!fp8 && d.defined())
    value_error(std::string(arg.name) + " is given but " + t.name + " is " + dtype_text(t.dtype) +
                ": descale factors belong to float8_e4m3fn / float8_e5m2 tensors");
  flare::Descale out;
  if (!d.defined()) return out;
  expect_device(d, q.device);
  expect_kind(d, Kind::Float32);
  const bool one = d.ndim == 0 || (d.ndim == 1 && d.shape[0] == 1);
  const bool per_head = d.ndim == 2 && d.shape[0] == batch && d.shape[1] == heads_k;
  if (!one && !per_head)
    value_error(std::string(arg.name) + " must have shape (batch_size, nheads_k) = (" +
                std::to_string(batch) + ", " + std::to_string(heads_k) +
                ") or hold one element (shape () or (1,)), got shape " + shape_text(d));
  out.data = reinterpret_cast<const float*>(d.data);
  if (per_head) {
    out.batch_stride = batch > 1 ? d.stride[0] : 0;
    out.head_stride = heads_k > 1 ? d.stride[1] : 0;
  }
  return out;
}

// The descale arrays of a call once p knows its batch and K/V heads, into the options (which
// apply_array_options maps onto p). q_descale.tensor is null where FP8 q is not taken.
void apply_descales(flare_mha_fwd_params& p, flare::FlashAttnOptions& o,
                    const DescaleArg& q_descale, const DescaleArg& k_descale,
                    const DescaleArg& v_descale, const View& q) {
  if (q_descale.tensor) o.q_descale = descale_of(q_descale, p.batch, p.num_heads_k, q);
  o.k_descale = descale_of(k_descale, p.batch, p.num_heads_k, q);
  o.v_descale = descale_of(v_descale, p.batch, p.num_heads_k, q);
}

// block_table: int32 (batch_size, max_num_blocks_per_seq), rows contiguous.
const int32_t* block_table_of(const View& block_table, int64_t batch, const std::string& batch_what,
                              int& max_pages, int64_t& batch_stride) {
  expect_ndim(block_table, 2, "(batch_size, max_num_blocks_per_seq)");
  expect_kind(block_table, Kind::Int32);
  expect_contiguous_last(block_table);
  expect_dim(block_table, 0, batch, batch_what);
  if (block_table.shape[1] > INT32_MAX) value_error("block_table.shape[1] is too large");
  max_pages = static_cast<int>(block_table.shape[1]);
  batch_stride = block_table.shape[0] == 1 ? 0 : block_table.stride[0];
  return reinterpret_cast<const int32_t*>(block_table.data);
}

// ---------------------------------------------------------------- launch

// cache_seqlens given as a Python int (or None: the whole cache): `count` entries of `value`,
// written on the device after validation.
struct SeqlensFill {
  size_t count = 0;
  int32_t value = 0;
};

// cuMemsetD32Async, reached through the runtime's driver entry point (no link against libcuda):
// a 4-byte fill is a memset node under stream capture, where a copy from pageable host memory
// cannot be captured. Null when the driver does not give it.
using MemsetD32Fn = CUresult (*)(CUdeviceptr, unsigned int, size_t, CUstream);
MemsetD32Fn memset_d32() {
  static const MemsetD32Fn fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuMemsetD32Async", &f, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return MemsetD32Fn(nullptr);
    }
    return reinterpret_cast<MemsetD32Fn>(f);
  }();
  return fn;
}

void fill_seqlens(int32_t* dst, const SeqlensFill& fill, cudaStream_t stream) {
  if (MemsetD32Fn fn = memset_d32()) {
    const CUresult r = fn(reinterpret_cast<CUdeviceptr>(dst), static_cast<unsigned int>(fill.value),
                          fill.count, reinterpret_cast<CUstream>(stream));
    if (r != CUDA_SUCCESS)
      raise(PyExc_RuntimeError, "flare: cuMemsetD32Async (cache_seqlens) failed: CUresult " +
                                    std::to_string(static_cast<int>(r)));
    return;
  }
  // From pageable memory: returns once the data is staged, so `values` may die after.
  const std::vector<int32_t> values(fill.count, fill.value);
  check_cuda(cudaMemcpyAsync(dst, values.data(), fill.count * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream),
             "cudaMemcpyAsync (cache_seqlens)");
}

// Validates and plans p once (flare's every rule, before any CUDA call), then reports a missing
// device, then allocates the fresh outputs, the workspace and the cache_seqlens fill, and
// launches on the call's stream.
//
// The workspace (with the fill behind it) comes from `alloc` when given: a Python callable
// taking a byte count and returning (owner, address), the owner kept alive until the launch is
// enqueued. The wrapper passes torch's caching allocator on the call's stream for torch inputs:
// stream-ordered, and replayed from the graph's pool under CUDA-graph capture. Without it, the
// workspace is stream-ordered cudaMallocAsync memory on the call's stream (Scratch).
void launch(flare_mha_fwd_params& p, const View& q, Outputs& outs,
            const std::vector<int64_t>& lse_shape, uintptr_t stream_handle, nb::handle alloc,
            const SeqlensFill& fill = {}) {
  const int device = q.device;
  flare::PlannedFwd call;
  const flare_status st = flare::plan_mha_fwd(&p, device, &call);
  if (st != FLARE_OK && !is_argument_status(st)) require_device(device);
  check_status(st);

  DeviceGuard guard(device);
  outs.allocate(p, q, lse_shape);
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const size_t ws = call.plan.workspace_bytes;
  const size_t ws_rounded = round_up(ws, Scratch::kAlign);
  const size_t fill_bytes = fill.count * sizeof(int32_t);
  const size_t total = ws_rounded + fill_bytes;
  const bool from_alloc = total > 0 && !alloc.is_none();
  Scratch scratch(stream, from_alloc ? 0 : total);
  nb::object owner;
  char* base = nullptr;
  if (from_alloc) {
    // Room to align the caller's memory up to Scratch::kAlign (torch's blocks already are).
    nb::object r = alloc(total + Scratch::kAlign);
    uintptr_t address = 0;
    try {
      auto pair = nb::cast<std::tuple<nb::object, uintptr_t>>(r);
      owner = std::get<0>(pair);
      address = std::get<1>(pair);
    } catch (const nb::cast_error&) {
      raise(PyExc_RuntimeError, "flare: the workspace allocator must return (owner, address)");
    }
    base = reinterpret_cast<char*>(round_up(address, Scratch::kAlign));
  } else if (total > 0) {
    base = scratch.at(0);
  }
  flare::PlannedFwdBuffers buffers;
  buffers.out = p.out;
  buffers.lse = p.lse;
  if (ws) {
    buffers.workspace = base;
    buffers.workspace_size = ws;
  }
  if (fill_bytes) {
    auto* seqlens = reinterpret_cast<int32_t*>(base + ws_rounded);
    fill_seqlens(seqlens, fill, stream);
    buffers.cache_seqlens = seqlens;
  }
  flare_status run;
  {
    nb::gil_scoped_release release;
    run = flare::launch_planned_mha_fwd(&call, buffers, stream);
  }
  check_status(run);
}

// ---------------------------------------------------------------- entry points

// Packing: 0 separate q, k, v; 1 q holds qkv (..., 3, h, d); 2 k holds kv (..., 2, hk, d).
void unpack(int packing, nb::handle q_h, nb::handle k_h, nb::handle v_h, View& q, View& k,
            View& v, int ndim) {
  if (packing == 1) {
    View qkv = as_view("qkv", q_h, false);
    if (!qkv.defined()) value_error("qkv is required");
    expect_ndim(qkv, ndim + 1, ndim == 4 ? "(batch_size, seqlen, 3, nheads, headdim)"
                                         : "(total, 3, nheads, headdim)");
    expect_dim(qkv, ndim - 2, 3, "3 (q, k, v)");
    q = component(qkv, ndim - 2, 0);
    k = component(qkv, ndim - 2, 1);
    v = component(qkv, ndim - 2, 2);
  } else if (packing == 2) {
    q = as_view("q", q_h, false);
    View kv = as_view("kv", k_h, false);
    if (!kv.defined()) value_error("kv is required");
    expect_ndim(kv, ndim + 1, ndim == 4 ? "(batch_size, seqlen_k, 2, nheads_k, headdim)"
                                        : "(total_k, 2, nheads_k, headdim)");
    expect_dim(kv, ndim - 2, 2, "2 (k, v)");
    k = component(kv, ndim - 2, 0);
    v = component(kv, ndim - 2, 1);
  } else {
    q = as_view("q", q_h, false);
    k = as_view("k", k_h, false);
    v = as_view("v", v_h, false);
  }
  if (!q.defined()) value_error("q is required");
  if (!k.defined()) value_error("k is required");
  if (!v.defined()) value_error("v is required");
}

// q, k, v as TensorViews, all on q's device. k and v may hold FP8 codes; q too where fp8_q
// (flash_attn_func / flash_attn_varlen_func: FP8 prefill, e4m3). dtype: out's type, which is
// q's unless q is FP8, then that of out= or bfloat16 for a fresh out. The C++ API checks how the
// types relate (v's against k's, k's against out's when not FP8).
struct Qkv {
  flare::TensorView q, k, v;
  flare::DType dtype;
};

Qkv qkv_tensors(const View& q, const View& k, const View& v, const View& out,
                bool keep_kv_leading, bool fp8_q) {
  Qkv t;
  flare::DType q_type;
  if (fp8_q && is_fp8(q)) {
    q_type = fp8_type_of(q);
    if (q_type != flare::DType::E4M3)
      value_error(std::string(q.name) + " is " + dtype_text(q.dtype) +
                  ": an FP8 q must be float8_e4m3fn (FP8 prefill reads e4m3 q, k and v)");
    if (fp8_type_of(k) != flare::DType::E4M3)
      value_error(std::string(q.name) + " is float8_e4m3fn but " + k.name + " is " +
                  dtype_text(k.dtype) + ": FP8 prefill reads float8_e4m3fn q, k and v");
    t.dtype = out.defined() ? dtype_of(out, false) : flare::DType::BF16;
  } else {
    q_type = t.dtype = dtype_of(q, false);
  }
  expect_device(k, q.device);
  expect_device(v, q.device);
  t.q = tensor_of(q, q_type);
  t.k = tensor_of(k, attn_dtype_of(k), keep_kv_leading);
  t.v = tensor_of(v, attn_dtype_of(v), keep_kv_leading);
  return t;
}

// FP8 arrays reach the packed functions only by mistake: they take no descale factors.
void refuse_packed_fp8(int packing, const View& q, const View& k, const View& v) {
  if (packing == 0) return;
  for (const View* x : {&q, &k, &v})
    if (is_fp8(*x))
      value_error(std::string(x->name) + " is " + dtype_text(x->dtype) +
                  ": the packed functions take float16 / bfloat16; pass FP8 q / k / v separately "
                  "to flash_attn_func or flash_attn_varlen_func with their descale factors");
}

nb::tuple fwd(nb::handle q_h, nb::handle k_h, nb::handle v_h, int packing, nb::handle out_h,
              nb::handle lse_h, bool want_lse, float softmax_scale, bool causal, int window_left,
              int window_right, float softcap, nb::handle alibi_h, nb::handle sink_h,
              nb::handle ranges_h, nb::handle q_descale_h, nb::handle k_descale_h,
              nb::handle v_descale_h, std::tuple<int, int, int> fp8_codes,
              nb::handle workspace_alloc, uintptr_t stream) {
  View q, k, v;
  unpack(packing, q_h, k_h, v_h, q, k, v, 4);
  retype_fp8(q, std::get<0>(fp8_codes));
  retype_fp8(k, std::get<1>(fp8_codes));
  retype_fp8(v, std::get<2>(fp8_codes));
  refuse_packed_fp8(packing, q, k, v);
  Outputs outs = outputs(out_h, lse_h, want_lse, q);
  const Qkv t = qkv_tensors(q, k, v, outs.out, /*keep_kv_leading=*/false, /*fp8_q=*/true);
  flare::FlashAttnOptions o = options(softmax_scale, causal, window_left, window_right, softcap);
  flare_mha_fwd_params p = build([&] {
    return flare::make_params(t.q, t.k, t.v, outs.out_tensor(q, v_head_dim(v), t.dtype), o);
  });
  apply_descales(p, o, {"q_descale", q_descale_h, &q}, {"k_descale", k_descale_h, &k},
                 {"v_descale", v_descale_h, &v}, q);
  apply_array_options(p, o, alibi_h, sink_h, ranges_h, q);
  const std::vector<int64_t> lse_shape{p.batch, p.num_heads, p.seqlen_q};
  p.lse = outs.lse_pointer(lse_shape, q.device);
  launch(p, q, outs, lse_shape, stream, workspace_alloc);
  return result(outs);
}

nb::tuple varlen_fwd(nb::handle q_h, nb::handle k_h, nb::handle v_h, int packing,
                     nb::handle cu_q_h, nb::handle cu_k_h, int max_seqlen_q, int max_seqlen_k,
                     nb::handle out_h, nb::handle lse_h, bool want_lse, float softmax_scale,
                     bool causal, int window_left, int window_right, float softcap,
                     nb::handle alibi_h, nb::handle block_table_h, nb::handle sink_h,
                     nb::handle ranges_h, nb::handle q_descale_h, nb::handle k_descale_h,
                     nb::handle v_descale_h, std::tuple<int, int, int> fp8_codes,
                     nb::handle workspace_alloc, uintptr_t stream) {
  View q, k, v;
  unpack(packing, q_h, k_h, v_h, q, k, v, 3);
  retype_fp8(q, std::get<0>(fp8_codes));
  retype_fp8(k, std::get<1>(fp8_codes));
  retype_fp8(v, std::get<2>(fp8_codes));
  refuse_packed_fp8(packing, q, k, v);
  Outputs outs = outputs(out_h, lse_h, want_lse, q);
  // Paged (block_table): k and v are page pools whose page stride is used at any extent.
  View block_table = as_view("block_table", block_table_h, false);
  const Qkv t = qkv_tensors(q, k, v, outs.out, /*keep_kv_leading=*/block_table.defined(),
                            /*fp8_q=*/true);
  View cu_q = as_view("cu_seqlens_q", cu_q_h, false);
  View cu_k = as_view("cu_seqlens_k", cu_k_h, false);
  if (!cu_q.defined()) value_error("cu_seqlens_q is required");
  if (!cu_k.defined()) value_error("cu_seqlens_k is required");
  expect_ndim(cu_q, 1, "(batch_size + 1,)");
  if (cu_q.shape[0] < 2)
    value_error("cu_seqlens_q must hold batch_size + 1 >= 2 entries, got shape " +
                shape_text(cu_q));
  expect_int_vector(cu_q, cu_q.shape[0], "");
  expect_int_vector(cu_k, cu_q.shape[0], "cu_seqlens_q.shape[0] (batch_size + 1)");
  expect_device(cu_q, q.device);
  expect_device(cu_k, q.device);
  if (cu_q.shape[0] - 1 > INT32_MAX) value_error("cu_seqlens_q is too long");
  flare::FlashAttnOptions o = options(softmax_scale, causal, window_left, window_right, softcap);
  flare::VarlenArgs varlen;
  varlen.cu_seqlens_q = reinterpret_cast<const int32_t*>(cu_q.data);
  varlen.cu_seqlens_k = reinterpret_cast<const int32_t*>(cu_k.data);
  varlen.batch = static_cast<int>(cu_q.shape[0] - 1);
  varlen.max_seqlen_q = max_seqlen_q;
  varlen.max_seqlen_k = max_seqlen_k;
  if (block_table.defined()) {
    expect_device(block_table, q.device);
    varlen.block_table =
        block_table_of(block_table, varlen.batch, "cu_seqlens_q.shape[0] - 1 (batch_size)",
                       varlen.max_pages_per_seq, varlen.block_table_batch_stride);
  }
  flare_mha_fwd_params p = build([&] {
    return flare::make_params_varlen(t.q, t.k, t.v, outs.out_tensor(q, v_head_dim(v), t.dtype),
                                     varlen, o);
  });
  p.seqlen_q = max_seqlen_q;
  p.seqlen_k = max_seqlen_k;
  apply_descales(p, o, {"q_descale", q_descale_h, &q}, {"k_descale", k_descale_h, &k},
                 {"v_descale", v_descale_h, &v}, q);
  apply_array_options(p, o, alibi_h, sink_h, ranges_h, q);
  const std::vector<int64_t> lse_shape{p.num_heads, q.shape[0]};
  p.lse = outs.lse_pointer(lse_shape, q.device);
  launch(p, q, outs, lse_shape, stream, workspace_alloc);
  return result(outs);
}

nb::tuple kvcache_fwd(nb::handle q_h, nb::handle kc_h, nb::handle vc_h, nb::handle k_h,
                      nb::handle v_h, nb::handle cos_h, nb::handle sin_h,
                      nb::handle cache_seqlens_h, nb::handle batch_idx_h, nb::handle leftpad_h,
                      nb::handle block_table_h, nb::handle out_h, nb::handle lse_h,
                      bool want_lse, float softmax_scale, bool causal, int window_left,
                      int window_right, float softcap, bool rotary_interleaved,
                      nb::handle alibi_h, nb::handle sink_h, nb::handle ranges_h, int num_splits,
                      nb::handle k_descale_h, nb::handle v_descale_h,
                      std::tuple<int, int, int> fp8_codes, nb::handle workspace_alloc,
                      uintptr_t stream) {
  View q = as_view("q", q_h, false);
  if (!q.defined()) value_error("q is required");
  const bool appending = !k_h.is_none() || !v_h.is_none();
  View kc = as_view("k_cache", kc_h, appending);
  View vc = as_view("v_cache", vc_h, appending);
  if (!kc.defined()) value_error("k_cache is required");
  if (!vc.defined()) value_error("v_cache is required");
  retype_fp8(q, std::get<0>(fp8_codes));
  retype_fp8(kc, std::get<1>(fp8_codes));
  retype_fp8(vc, std::get<2>(fp8_codes));
  Outputs outs = outputs(out_h, lse_h, want_lse, q);
  // The cache's batch (or page) stride is used even when that extent is 1. q (and k, v, out)
  // stay float16 / bfloat16: only the caches may hold FP8 codes.
  const Qkv t = qkv_tensors(q, kc, vc, outs.out, /*keep_kv_leading=*/true, /*fp8_q=*/false);

  flare::KvCacheOptions kv;
  View k = as_view("k", k_h, false), v = as_view("v", v_h, false);
  for (View* n : {&k, &v}) {
    if (!n->defined()) continue;
    expect_device(*n, q.device);
    (n == &k ? kv.k_new : kv.v_new) = tensor_of(*n, dtype_of(*n, false));
  }
  kv.k_new.name = "k";
  kv.v_new.name = "v";
  View cos = as_view("rotary_cos", cos_h, false), sin = as_view("rotary_sin", sin_h, false);
  for (View* r : {&cos, &sin}) {
    if (!r->defined()) continue;
    expect_device(*r, q.device);
    (r == &cos ? kv.rotary_cos : kv.rotary_sin) = tensor_of(*r, dtype_of(*r, false));
  }
  kv.rotary_cos.name = "rotary_cos";
  kv.rotary_sin.name = "rotary_sin";
  kv.rotary_interleaved = rotary_interleaved;
  if (cos.defined() && !k.defined())
    value_error("rotary_cos / rotary_sin need the new keys k and v (the rotary embedding is "
                "applied to q and to the appended keys)");

  const int64_t batch = q.shape[0];
  View block_table = as_view("block_table", block_table_h, false);
  View batch_idx = as_view("cache_batch_idx", batch_idx_h, false);
  View leftpad = as_view("cache_leftpad", leftpad_h, false);
  if (block_table.defined()) {
    kv.block_table = block_table_of(block_table, batch, dim_name(q, 0) + " (batch_size)",
                                    kv.max_pages_per_seq, kv.block_table_batch_stride);
    expect_device(block_table, q.device);
    if (batch_idx.defined()) value_error("cache_batch_idx cannot be combined with block_table");
  }
  if (batch_idx.defined()) {
    expect_int_vector(batch_idx, batch, dim_name(q, 0) + " (batch_size)");
    expect_device(batch_idx, q.device);
    kv.cache_batch_idx = reinterpret_cast<const int32_t*>(batch_idx.data);
  }
  if (leftpad.defined()) {
    expect_int_vector(leftpad, batch, dim_name(q, 0) + " (batch_size)");
    expect_device(leftpad, q.device);
    kv.leftpad_k = reinterpret_cast<const int32_t*>(leftpad.data);
  }

  // cache_seqlens: an int32 array, or a Python int / None (the whole cache) uploaded after
  // validation; a placeholder stands in for the upload until then.
  SeqlensFill fill;
  bool upload_seqlens = cache_seqlens_h.is_none() || PyLong_Check(cache_seqlens_h.ptr());
  if (!upload_seqlens) {
    View cache_seqlens = as_view("cache_seqlens", cache_seqlens_h, false);
    expect_int_vector(cache_seqlens, batch, dim_name(q, 0) + " (batch_size)");
    expect_device(cache_seqlens, q.device);
    kv.cache_seqlens = reinterpret_cast<const int32_t*>(cache_seqlens.data);
  } else {
    if (cache_seqlens_h.is_none() && k.defined())
      value_error("cache_seqlens is required when k and v are appended to the cache");
    kv.cache_seqlens = static_cast<const int32_t*>(placeholder());
  }

  flare::FlashAttnOptions o = options(softmax_scale, causal, window_left, window_right, softcap);
  o.num_splits = num_splits;
  flare_mha_fwd_params p = build([&] {
    return flare::make_params_kvcache(t.q, t.k, t.v, outs.out_tensor(q, v_head_dim(vc), t.dtype),
                                      kv, o);
  });
  if (upload_seqlens) {
    // p.seqlen_k is the capacity per sequence (paged: pages per sequence x page size).
    int64_t n = p.seqlen_k;
    if (!cache_seqlens_h.is_none()) {
      try {
        n = nb::cast<int64_t>(cache_seqlens_h);
      } catch (const nb::cast_error&) {
        value_error("cache_seqlens does not fit in 64 bits");
      }
    }
    if (n < 0 || n > p.seqlen_k)
      value_error("cache_seqlens (" + std::to_string(n) + ") must be in [0, " +
                  std::to_string(p.seqlen_k) + "] (the cache capacity)");
    fill.count = static_cast<size_t>(batch);
    fill.value = static_cast<int32_t>(n);
  }
  apply_descales(p, o, {"q_descale", nb::none(), nullptr}, {"k_descale", k_descale_h, &kc},
                 {"v_descale", v_descale_h, &vc}, q);
  apply_array_options(p, o, alibi_h, sink_h, ranges_h, q);
  const std::vector<int64_t> lse_shape{p.batch, p.num_heads, p.seqlen_q};
  p.lse = outs.lse_pointer(lse_shape, q.device);
  launch(p, q, outs, lse_shape, stream, workspace_alloc, fill);
  return result(outs);
}

// ---------------------------------------------------------------- merging attention states

// merge_attention_states: parts and lses are Python lists (the wrapper makes them so).
nb::tuple merge(nb::list parts_h, nb::list lses_h, nb::handle out_h, nb::handle out_lse_h,
                uintptr_t stream_handle) {
  // The list lengths first, in the Python argument names (before any array is converted).
  const size_t n = parts_h.size();
  if (n == 0) value_error("merge_attention_states needs at least one part: outs is empty");
  if (lses_h.size() != n)
    value_error("merge_attention_states: outs has " + std::to_string(n) +
                (n == 1 ? " part" : " parts") + " but lses has " +
                std::to_string(lses_h.size()) + (lses_h.size() == 1 ? " entry" : " entries") +
                "; give one lse per part");
  if (n > FLARE_MERGE_MAX_PART_PTRS)
    value_error("merge_attention_states takes at most " +
                std::to_string(FLARE_MERGE_MAX_PART_PTRS) +
                " parts (FLARE_MERGE_MAX_PART_PTRS), got " + std::to_string(n) +
                "; merge them in groups of at most " + std::to_string(FLARE_MERGE_MAX_PART_PTRS) +
                " and then merge the groups' results with their merged lses");

  // Names outlive the views that point at them (the vectors are never resized).
  std::vector<std::string> part_names(n), lse_names(n);
  std::vector<View> parts(n), lses(n);
  std::vector<flare::TensorView> part_t(n), lse_t(n);
  for (size_t s = 0; s < n; ++s) {
    part_names[s] = "outs[" + std::to_string(s) + "]";
    lse_names[s] = "lses[" + std::to_string(s) + "]";
    View& p = parts[s] = as_view(part_names[s].c_str(), parts_h[s], false);
    if (!p.defined()) value_error(part_names[s] + " is None; every part must be an array");
    View& l = lses[s] = as_view(lse_names[s].c_str(), lses_h[s], false);
    if (!l.defined()) value_error(lse_names[s] + " is None; every part needs its lse");
    for (const View* x : {&p, &l})
      if (x->device != parts[0].device)
        value_error(std::string(x->name) + " is on CUDA device " + std::to_string(x->device) +
                    " but outs[0] is on device " + std::to_string(parts[0].device));
    part_t[s] = tensor_of(p, dtype_of(p, true));
    if (!is(l.dtype, nb::dlpack::dtype_code::Float, 32))
      value_error(lse_names[s] + " must be float32, got " + dtype_text(l.dtype));
    lse_t[s] = tensor_of(l, flare::DType::FP32);
  }
  const View& p0 = parts[0];
  const int device = p0.device;

  // out / out_lse: the caller's, or dense placeholders allocated after validation.
  View out = as_view("out", out_h, true);
  View out_lse = as_view("out_lse", out_lse_h, true);
  for (const View* x : {&out, &out_lse})
    if (x->defined() && x->device != device)
      value_error(std::string(x->name) + " is on CUDA device " + std::to_string(x->device) +
                  " but outs[0] is on device " + std::to_string(device));
  flare::TensorView out_t, out_lse_t;
  if (out.defined()) {
    out_t = tensor_of(out, dtype_of(out, true));
  } else {
    View fresh = p0;
    fresh.name = "out";
    out_t = tensor_of(fresh, part_t[0].dtype);
    int64_t dense = 1;
    for (int d = out_t.rank - 1; d >= 0; --d) {
      out_t.stride[d] = dense;
      dense *= out_t.shape[d];
    }
    out_t.data = placeholder();
  }
  if (out_lse.defined()) {
    if (!is(out_lse.dtype, nb::dlpack::dtype_code::Float, 32))
      value_error("out_lse must be float32, got " + dtype_text(out_lse.dtype));
    out_lse_t = tensor_of(out_lse, flare::DType::FP32);
  }
  std::vector<const void*> part_ptrs;
  std::vector<const float*> lse_ptrs;
  flare_merge_params p = build([&] {
    return flare::make_merge_params(part_t, lse_t, out_t, out_lse_t, part_ptrs, lse_ptrs);
  });

  // Every remaining rule (alignment, head dim, strides) before any CUDA call: the out placeholder
  // and, without out_lse, a null out_lse stand for the dense arrays allocated below. An empty
  // merge (some extent 0) has nothing to check or run.
  if (p0.shape[0] != 0 && p0.shape[1] != 0 && p0.shape[2] != 0)
    check_status(flare::validate_merge_params(&p));
  require_device(device);
  DeviceGuard guard(device);
  nb::object out_obj = nb::none(), lse_obj = nb::none();
  const size_t b = p0.shape[0], sq = p0.shape[1], h = p0.shape[2], d = p0.shape[3];
  if (!out.defined()) {
    nb::ndarray<> a = new_array(device, p0.dtype, {b, sq, h, d});
    out_obj = nb::cast(a);
    p.out = a.data();
  }
  if (!out_lse.defined()) {
    nb::ndarray<> a = new_array(device, nb::dtype<float>(), {b, h, sq});
    lse_obj = nb::cast(a);
    p.out_lse = static_cast<float*>(a.data());
    p.out_lse_batch_stride = static_cast<int64_t>(h * sq);
    p.out_lse_head_stride = static_cast<int64_t>(sq);
    p.out_lse_row_stride = 1;
  }
  // Nothing to merge (and the C API asks for extents >= 1): empty results.
  if (b == 0 || sq == 0 || h == 0) return nb::make_tuple(out_obj, lse_obj);
  flare_status st;
  {
    nb::gil_scoped_release release;
    st = flare_merge_attention_states(&p, reinterpret_cast<cudaStream_t>(stream_handle));
  }
  check_status(st);
  return nb::make_tuple(out_obj, lse_obj);
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace

NB_MODULE(_flare, m) {
  m.doc() = "flare: exact attention forward for NVIDIA GPUs (private core; use the `flare` package)";
  m.attr("__version__") = std::to_string(FLARE_VERSION_MAJOR) + "." +
                          std::to_string(FLARE_VERSION_MINOR) + "." +
                          std::to_string(FLARE_VERSION_PATCH);
  nb::dict config;
  config["archs"] = FLARE_PY_ARCHS;
  config["head_dims"] = FLARE_PY_HEAD_DIMS;
  config["dtypes"] = FLARE_PY_DTYPES;
  m.attr("build_config") = config;

  m.def("cuda_device_count", &cuda_device_count,
        "Number of CUDA devices the CUDA runtime sees (0 when there is no usable driver).");

  using namespace nb::literals;
  m.def("_fwd", &fwd, "q"_a.none(), "k"_a.none(), "v"_a.none(), "packing"_a, "out"_a.none(),
        "lse"_a.none(), "want_lse"_a, "softmax_scale"_a, "causal"_a, "window_left"_a,
        "window_right"_a, "softcap"_a, "alibi_slopes"_a.none(), "learnable_sink"_a.none(),
        "mm_prefix_ranges"_a.none(), "q_descale"_a.none(), "k_descale"_a.none(),
        "v_descale"_a.none(), "fp8_codes"_a, "workspace_alloc"_a.none(), "stream"_a);
  m.def("_varlen_fwd", &varlen_fwd, "q"_a.none(), "k"_a.none(), "v"_a.none(), "packing"_a,
        "cu_seqlens_q"_a.none(), "cu_seqlens_k"_a.none(), "max_seqlen_q"_a, "max_seqlen_k"_a,
        "out"_a.none(), "lse"_a.none(), "want_lse"_a, "softmax_scale"_a, "causal"_a,
        "window_left"_a, "window_right"_a, "softcap"_a, "alibi_slopes"_a.none(),
        "block_table"_a.none(), "learnable_sink"_a.none(), "mm_prefix_ranges"_a.none(),
        "q_descale"_a.none(), "k_descale"_a.none(), "v_descale"_a.none(), "fp8_codes"_a,
        "workspace_alloc"_a.none(), "stream"_a);
  m.def("_kvcache_fwd", &kvcache_fwd, "q"_a.none(), "k_cache"_a.none(), "v_cache"_a.none(),
        "k"_a.none(), "v"_a.none(), "rotary_cos"_a.none(), "rotary_sin"_a.none(),
        "cache_seqlens"_a.none(), "cache_batch_idx"_a.none(), "cache_leftpad"_a.none(),
        "block_table"_a.none(), "out"_a.none(), "lse"_a.none(), "want_lse"_a,
        "softmax_scale"_a, "causal"_a, "window_left"_a, "window_right"_a, "softcap"_a,
        "rotary_interleaved"_a, "alibi_slopes"_a.none(), "learnable_sink"_a.none(),
        "mm_prefix_ranges"_a.none(), "num_splits"_a, "k_descale"_a.none(),
        "v_descale"_a.none(), "fp8_codes"_a, "workspace_alloc"_a.none(), "stream"_a);
  m.def("_merge", &merge, "outs"_a, "lses"_a, "out"_a.none(), "out_lse"_a.none(), "stream"_a);
  m.attr("MERGE_MAX_PART_PTRS") = FLARE_MERGE_MAX_PART_PTRS;
  // DLPack codes of the FP8 types (fp8_codes): the wrapper's uint8 views name theirs with them.
  m.attr("DLPACK_FLOAT8_E4M3FN") = kDLFloat8E4M3FN;
  m.attr("DLPACK_FLOAT8_E5M2") = kDLFloat8E5M2;
}
