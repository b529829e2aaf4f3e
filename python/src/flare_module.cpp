// flare._flare: the nanobind extension behind the `flare` Python package.
//
// It takes any DLPack-capable CUDA array (torch, cupy, jax, ...) without copying, fills
// flare_mha_fwd_params from the arrays' shapes and strides, allocates the workspace
// stream-ordered (cudaMallocAsync / cudaFreeAsync on the call's stream), and launches.
// Results go into caller-given arrays (out=, lse=) or into fresh cudaMalloc'd buffers that
// are returned as DLPack-capable nanobind ndarrays owning their memory.
//
// The FlashAttention-2 style signatures, defaults, the stream choice and the conversion of
// results back to the caller's framework live in python/flare/_interface.py; the functions
// here are the private core (_fwd, _varlen_fwd, _kvcache_fwd, _merge).
#include <flare/flare.h>

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

// A flare status as a Python exception carrying flare_last_error().
void check_status(flare_status status) {
  if (status == FLARE_OK) return;
  const char* detail = flare_last_error();
  std::string message = std::string("flare: ") + flare_status_string(status);
  if (detail && *detail) message += ": " + std::string(detail);
  switch (status) {
    case FLARE_ERROR_INVALID_ARGUMENT:
    case FLARE_ERROR_MISALIGNED:
    case FLARE_ERROR_UNSUPPORTED_DTYPE:
    case FLARE_ERROR_UNSUPPORTED_HEAD_DIM:
      raise(PyExc_ValueError, message);
    case FLARE_ERROR_NOT_SUPPORTED:
      raise(PyExc_NotImplementedError, message);
    default:  // ARCH_NOT_SUPPORTED, WORKSPACE_TOO_SMALL, CUDA
      raise(PyExc_RuntimeError, message);
  }
}

void check_cuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  raise(PyExc_RuntimeError, std::string("flare: ") + what + " failed: " + cudaGetErrorName(err) +
                                " (" + cudaGetErrorString(err) + ")");
}

// ---------------------------------------------------------------- array views

enum class Kind { Half, Float32, Int32 };

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
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
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
  if (v.ndim > kMaxDims) value_error(std::string(name) + " has " + std::to_string(v.ndim) + " dimensions; at most 6 are expected");
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
                std::to_string(a.device_type()) + (a.device_type() == nb::device::cpu::value ? " (CPU)" : ""));
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
View component(const View& packed, int dim, int index, const char* name) {
  View v = packed;
  v.name = name;
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

void expect_contiguous_last(const View& v) {
  if (v.ndim > 0 && v.shape[v.ndim - 1] > 1 && v.stride[v.ndim - 1] != 1)
    value_error(std::string(v.name) + " must be contiguous in its last dimension (stride 1), got stride " +
                std::to_string(v.stride[v.ndim - 1]));
}

std::string dtype_text(nb::dlpack::dtype t) {
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

// fp16 / bf16 element type of q.
flare_dtype half_dtype(const View& v) {
  if (is(v.dtype, nb::dlpack::dtype_code::Float, 16)) return FLARE_DTYPE_FP16;
  if (is(v.dtype, nb::dlpack::dtype_code::Bfloat, 16)) return FLARE_DTYPE_BF16;
  value_error(std::string(v.name) + " must be float16 or bfloat16, got " + dtype_text(v.dtype));
}

void expect_same_dtype(const View& v, const View& ref) {
  if (v.dtype.code != ref.dtype.code || v.dtype.bits != ref.dtype.bits || v.dtype.lanes != ref.dtype.lanes)
    value_error(std::string(v.name) + " must have the dtype of " + ref.name + " (" +
                dtype_text(ref.dtype) + "), got " + dtype_text(v.dtype));
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

// A 1-D int32 array of `length` entries, contiguous.
void expect_int_vector(const View& v, int64_t length, const std::string& what) {
  expect_ndim(v, 1, "");
  expect_kind(v, Kind::Int32);
  expect_dim(v, 0, length, what);
  expect_contiguous_last(v);
}

// Strides of a [batch, rows, heads, d] (4-D) or [rows, heads, d] (3-D) view; a dimension of
// extent 1 gets stride 0 (its stride is never used, and producers set arbitrary ones).
void strides_of(const View& v, int64_t& batch, int64_t& row, int64_t& head) {
  auto s = [&](int d) { return v.shape[d] == 1 ? 0 : v.stride[d]; };
  if (v.ndim == 4) {
    batch = s(0);
    row = s(1);
    head = s(2);
  } else {
    batch = 0;
    row = s(0);
    head = s(1);
  }
}

int to_int(const View& v, int d) {
  if (v.shape[d] > INT32_MAX) value_error(dim_name(v, d) + " is too large");
  return static_cast<int>(v.shape[d]);
}

// ---------------------------------------------------------------- device memory

// Restores the current CUDA device on scope exit.
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
nb::ndarray<> new_array(int device, nb::dlpack::dtype dtype, std::vector<size_t> shape) {
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

View view_of(const nb::ndarray<>& a, const char* name) {
  View v;
  fill_view(v, a, name);
  v.keep_rw = a;
  return v;
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
    base_ = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(raw_) + kAlign - 1) / kAlign * kAlign);
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

// ---------------------------------------------------------------- shared option handling

struct Common {
  float softmax_scale;
  bool causal;
  int window_left, window_right;
  float softcap;
};

void apply_common(flare_mha_fwd_params& p, const Common& c) {
  p.softmax_scale = c.softmax_scale;
  p.causal = c.causal ? 1 : 0;
  p.window_left = c.window_left;
  p.window_right = c.window_right;
  p.softcap = c.softcap;
}

void apply_alibi(flare_mha_fwd_params& p, const View& alibi, int batch, int heads) {
  if (!alibi.defined()) return;
  expect_kind(alibi, Kind::Float32);
  expect_contiguous_last(alibi);
  if (alibi.ndim == 1) {
    expect_dim(alibi, 0, heads, "the number of query heads");
    p.alibi_batch_stride = 0;
  } else if (alibi.ndim == 2) {
    expect_dim(alibi, 0, batch, "the batch size");
    expect_dim(alibi, 1, heads, "the number of query heads");
    p.alibi_batch_stride = alibi.shape[0] == 1 ? 0 : alibi.stride[0];
  } else {
    value_error("alibi_slopes must have shape (nheads,) or (batch_size, nheads), got " +
                shape_text(alibi));
  }
  p.alibi_slopes = reinterpret_cast<const float*>(alibi.data);
}

// q, k, v, out checks common to every mode: ranks, dtypes, heads, head dim.
flare_dtype check_qkv(const View& q, const View& k, const View& v, int ndim, const char* layout,
                      const char* k_layout) {
  expect_ndim(q, ndim, layout);
  expect_ndim(k, ndim, k_layout);
  expect_ndim(v, ndim, k_layout);
  const flare_dtype dt = half_dtype(q);
  expect_same_dtype(k, q);
  expect_same_dtype(v, q);
  expect_contiguous_last(q);
  expect_contiguous_last(k);
  expect_contiguous_last(v);
  const int hd = ndim - 1, hh = ndim - 2;
  expect_dim(k, hd, q.shape[hd], dim_name(q, hd) + " (head dim)");
  expect_dim(v, hd, q.shape[hd], dim_name(q, hd) + " (head dim)");
  expect_dim(v, hh, k.shape[hh], dim_name(k, hh) + " (nheads_k)");
  if (k.shape[hh] == 0 || q.shape[hh] % k.shape[hh] != 0)
    value_error("the number of query heads (" + std::to_string(q.shape[hh]) +
                ") must be a multiple of the number of key/value heads (" +
                std::to_string(k.shape[hh]) + ")");
  expect_device(k, q.device);
  expect_device(v, q.device);
  return dt;
}

// Checks a caller's out= or allocates it; returns the view the kernel writes.
View output_view(nb::handle out_h, const View& q, std::vector<size_t> shape, nb::object& fresh) {
  View out = as_view("out", out_h, true);
  if (out.defined()) {
    expect_ndim(out, static_cast<int>(shape.size()), "(the shape of q)");
    for (size_t d = 0; d < shape.size(); ++d)
      expect_dim(out, static_cast<int>(d), static_cast<int64_t>(shape[d]), "the same extent of q");
    expect_same_dtype(out, q);
    expect_contiguous_last(out);
    expect_device(out, q.device);
    return out;
  }
  nb::ndarray<> a = new_array(q.device, q.dtype, shape);
  fresh = nb::cast(a);
  return view_of(a, "out");
}

// Checks a caller's lse= or allocates one (when wanted); returns a null pointer when unwanted.
float* lse_pointer(nb::handle lse_h, bool want, const View& q, std::vector<size_t> shape,
                   nb::object& fresh) {
  View lse = as_view("lse", lse_h, true);
  if (lse.defined()) {
    expect_ndim(lse, static_cast<int>(shape.size()), "");
    for (size_t d = 0; d < shape.size(); ++d)
      expect_dim(lse, static_cast<int>(d), static_cast<int64_t>(shape[d]), "the expected extent");
    expect_kind(lse, Kind::Float32);
    // The kernels write lse densely.
    int64_t step = 1;
    for (int d = lse.ndim - 1; d >= 0; --d) {
      if (lse.shape[d] > 1 && lse.stride[d] != step) value_error("lse must be contiguous");
      step *= lse.shape[d];
    }
    expect_device(lse, q.device);
    return reinterpret_cast<float*>(lse.data);
  }
  if (!want) return nullptr;
  nb::ndarray<> a = new_array(q.device, nb::dtype<float>(), shape);
  fresh = nb::cast(a);
  return static_cast<float*>(a.data());
}

// Workspace query, allocation and launch on the stream.
void launch(flare_mha_fwd_params& p, int device, uintptr_t stream_handle,
            const std::vector<int32_t>& upload, const int32_t** upload_target) {
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  size_t ws = 0;
  check_status(flare_mha_fwd_workspace_size(&p, device, &ws));
  const size_t ws_rounded = round_up(ws, Scratch::kAlign);
  const size_t upload_bytes = upload.size() * sizeof(int32_t);
  Scratch scratch(stream, ws_rounded + upload_bytes);
  if (ws) {
    p.workspace = scratch.at(0);
    p.workspace_size = ws;
  }
  if (upload_bytes) {
    // From pageable memory: returns once the data is staged, so `upload` may die after.
    check_cuda(cudaMemcpyAsync(scratch.at(ws_rounded), upload.data(), upload_bytes,
                               cudaMemcpyHostToDevice, stream),
               "cudaMemcpyAsync (cache_seqlens)");
    *upload_target = reinterpret_cast<const int32_t*>(scratch.at(ws_rounded));
  }
  flare_status st;
  {
    nb::gil_scoped_release release;
    st = flare_mha_fwd(&p, stream);
  }
  check_status(st);
}

nb::tuple result(nb::object out, nb::object lse) { return nb::make_tuple(out, lse); }

// Params with the dtype and the tensor pointers set; shapes, strides and options are the
// caller's (they differ between the dense, varlen and KV-cache layouts).
flare_mha_fwd_params base_params(flare_dtype dt, const View& q, const View& k, const View& v,
                                 const View& out, float* lse) {
  flare_mha_fwd_params p;
  flare_mha_fwd_params_init(&p);
  p.dtype = dt;
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.out = out.data;
  p.lse = lse;
  return p;
}

// ---------------------------------------------------------------- entry points

// Packing: 0 separate q, k, v; 1 q holds qkv (..., 3, h, d); 2 k holds kv (..., 2, hk, d).
void unpack(int packing, nb::handle q_h, nb::handle k_h, nb::handle v_h, View& q, View& k,
            View& v, int ndim) {
  if (packing == 1) {
    View qkv = as_view("qkv", q_h, false);
    expect_ndim(qkv, ndim + 1, ndim == 4 ? "(batch_size, seqlen, 3, nheads, headdim)"
                                         : "(total, 3, nheads, headdim)");
    expect_dim(qkv, ndim - 2, 3, "3 (q, k, v)");
    q = component(qkv, ndim - 2, 0, "qkv");
    k = component(qkv, ndim - 2, 1, "qkv");
    v = component(qkv, ndim - 2, 2, "qkv");
  } else if (packing == 2) {
    q = as_view("q", q_h, false);
    View kv = as_view("kv", k_h, false);
    expect_ndim(kv, ndim + 1, ndim == 4 ? "(batch_size, seqlen_k, 2, nheads_k, headdim)"
                                        : "(total_k, 2, nheads_k, headdim)");
    expect_dim(kv, ndim - 2, 2, "2 (k, v)");
    k = component(kv, ndim - 2, 0, "kv");
    v = component(kv, ndim - 2, 1, "kv");
  } else {
    q = as_view("q", q_h, false);
    k = as_view("k", k_h, false);
    v = as_view("v", v_h, false);
  }
  if (!q.defined()) value_error("q is required");
  if (!k.defined()) value_error("k is required");
  if (!v.defined()) value_error("v is required");
}

nb::tuple fwd(nb::handle q_h, nb::handle k_h, nb::handle v_h, int packing, nb::handle out_h,
              nb::handle lse_h, bool want_lse, float softmax_scale, bool causal, int window_left,
              int window_right, float softcap, nb::handle alibi_h, uintptr_t stream) {
  View q, k, v;
  unpack(packing, q_h, k_h, v_h, q, k, v, 4);
  const flare_dtype dt = check_qkv(q, k, v, 4, "(batch_size, seqlen_q, nheads, headdim)",
                                   "(batch_size, seqlen_k, nheads_k, headdim)");
  expect_dim(k, 0, q.shape[0], dim_name(q, 0) + " (batch_size)");
  expect_dim(v, 1, k.shape[1], dim_name(k, 1) + " (seqlen_k)");
  View alibi = as_view("alibi_slopes", alibi_h, false);
  expect_device(alibi, q.device);
  DeviceGuard guard(q.device);

  nb::object out_obj = nb::none(), lse_obj = nb::none();
  const size_t b = q.shape[0], sq = q.shape[1], h = q.shape[2], d = q.shape[3];
  View out = output_view(out_h, q, {b, sq, h, d}, out_obj);
  float* lse = lse_pointer(lse_h, want_lse, q, {b, h, sq}, lse_obj);

  flare_mha_fwd_params p = base_params(dt, q, k, v, out, lse);
  p.batch = to_int(q, 0);
  p.seqlen_q = to_int(q, 1);
  p.seqlen_k = to_int(k, 1);
  p.num_heads = to_int(q, 2);
  p.num_heads_k = to_int(k, 2);
  p.head_dim = to_int(q, 3);
  strides_of(q, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
  strides_of(k, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
  strides_of(v, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
  strides_of(out, p.out_batch_stride, p.out_row_stride, p.out_head_stride);
  apply_common(p, {softmax_scale, causal, window_left, window_right, softcap});
  apply_alibi(p, alibi, p.batch, p.num_heads);
  launch(p, q.device, stream, {}, nullptr);
  return result(out_obj, lse_obj);
}

nb::tuple varlen_fwd(nb::handle q_h, nb::handle k_h, nb::handle v_h, int packing,
                     nb::handle cu_q_h, nb::handle cu_k_h, int max_seqlen_q, int max_seqlen_k,
                     nb::handle out_h, nb::handle lse_h, bool want_lse, float softmax_scale,
                     bool causal, int window_left, int window_right, float softcap,
                     nb::handle alibi_h, uintptr_t stream) {
  View q, k, v;
  unpack(packing, q_h, k_h, v_h, q, k, v, 3);
  const flare_dtype dt = check_qkv(q, k, v, 3, "(total_q, nheads, headdim)",
                                   "(total_k, nheads_k, headdim)");
  expect_dim(v, 0, k.shape[0], dim_name(k, 0) + " (total_k)");
  View cu_q = as_view("cu_seqlens_q", cu_q_h, false);
  View cu_k = as_view("cu_seqlens_k", cu_k_h, false);
  if (!cu_q.defined()) value_error("cu_seqlens_q is required");
  if (!cu_k.defined()) value_error("cu_seqlens_k is required");
  expect_ndim(cu_q, 1, "(batch_size + 1,)");
  if (cu_q.shape[0] < 2) value_error("cu_seqlens_q must hold batch_size + 1 >= 2 entries, got shape " + shape_text(cu_q));
  expect_int_vector(cu_q, cu_q.shape[0], "");
  expect_int_vector(cu_k, cu_q.shape[0], "cu_seqlens_q.shape[0] (batch_size + 1)");
  expect_device(cu_q, q.device);
  expect_device(cu_k, q.device);
  if (max_seqlen_q < 1) value_error("max_seqlen_q (" + std::to_string(max_seqlen_q) + ") must be >= 1");
  if (max_seqlen_k < 0) value_error("max_seqlen_k (" + std::to_string(max_seqlen_k) + ") must be >= 0");
  View alibi = as_view("alibi_slopes", alibi_h, false);
  expect_device(alibi, q.device);
  DeviceGuard guard(q.device);

  nb::object out_obj = nb::none(), lse_obj = nb::none();
  const size_t tq = q.shape[0], h = q.shape[1], d = q.shape[2];
  View out = output_view(out_h, q, {tq, h, d}, out_obj);
  float* lse = lse_pointer(lse_h, want_lse, q, {h, tq}, lse_obj);

  flare_mha_fwd_params p = base_params(dt, q, k, v, out, lse);
  p.batch = static_cast<int>(cu_q.shape[0] - 1);
  p.num_heads = to_int(q, 1);
  p.num_heads_k = to_int(k, 1);
  p.head_dim = to_int(q, 2);
  p.cu_seqlens_q = reinterpret_cast<const int32_t*>(cu_q.data);
  p.cu_seqlens_k = reinterpret_cast<const int32_t*>(cu_k.data);
  p.max_seqlen_q = max_seqlen_q;
  p.max_seqlen_k = max_seqlen_k;
  p.seqlen_q = max_seqlen_q;
  p.seqlen_k = max_seqlen_k;
  strides_of(q, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
  strides_of(k, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
  strides_of(v, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
  strides_of(out, p.out_batch_stride, p.out_row_stride, p.out_head_stride);
  apply_common(p, {softmax_scale, causal, window_left, window_right, softcap});
  apply_alibi(p, alibi, p.batch, p.num_heads);
  launch(p, q.device, stream, {}, nullptr);
  return result(out_obj, lse_obj);
}

nb::tuple kvcache_fwd(nb::handle q_h, nb::handle kc_h, nb::handle vc_h, nb::handle k_h,
                      nb::handle v_h, nb::handle cos_h, nb::handle sin_h,
                      nb::handle cache_seqlens_h, nb::handle batch_idx_h, nb::handle leftpad_h,
                      nb::handle block_table_h, nb::handle out_h, nb::handle lse_h,
                      bool want_lse, float softmax_scale, bool causal, int window_left,
                      int window_right, float softcap, bool rotary_interleaved,
                      nb::handle alibi_h, int num_splits, uintptr_t stream) {
  View q = as_view("q", q_h, false);
  if (!q.defined()) value_error("q is required");
  const bool appending = !k_h.is_none() || !v_h.is_none();
  View kc = as_view("k_cache", kc_h, appending);
  View vc = as_view("v_cache", vc_h, appending);
  if (!kc.defined()) value_error("k_cache is required");
  if (!vc.defined()) value_error("v_cache is required");
  const flare_dtype dt =
      check_qkv(q, kc, vc, 4, "(batch_size, seqlen_q, nheads, headdim)",
                "(batch_size_cache, seqlen_cache, nheads_k, headdim) or, paged, "
                "(num_blocks, page_block_size, nheads_k, headdim)");
  expect_same_dtype(vc, kc);
  for (int d = 0; d < 2; ++d) expect_dim(vc, d, kc.shape[d], dim_name(kc, d));
  const int64_t batch = q.shape[0];

  View k = as_view("k", k_h, false), v = as_view("v", v_h, false);
  if (k.defined() != v.defined()) value_error(k.defined() ? "v is required when k is given" : "k is required when v is given");
  if (k.defined()) {
    expect_ndim(k, 4, "(batch_size, seqlen_new, nheads_k, headdim)");
    expect_ndim(v, 4, "(batch_size, seqlen_new, nheads_k, headdim)");
    expect_same_dtype(k, q);
    expect_same_dtype(v, q);
    expect_contiguous_last(k);
    expect_contiguous_last(v);
    expect_dim(k, 0, batch, dim_name(q, 0) + " (batch_size)");
    expect_dim(k, 2, kc.shape[2], dim_name(kc, 2) + " (nheads_k)");
    expect_dim(k, 3, q.shape[3], dim_name(q, 3) + " (headdim)");
    for (int d = 0; d < 4; ++d) expect_dim(v, d, k.shape[d], dim_name(k, d));
    expect_device(k, q.device);
    expect_device(v, q.device);
  }

  View cos = as_view("rotary_cos", cos_h, false), sin = as_view("rotary_sin", sin_h, false);
  if (cos.defined() != sin.defined()) value_error(cos.defined() ? "rotary_sin is required when rotary_cos is given" : "rotary_cos is required when rotary_sin is given");
  if (cos.defined()) {
    if (!k.defined()) value_error("rotary_cos / rotary_sin need the new keys k and v (the rotary embedding is applied to q and to the appended keys)");
    for (View* t : {&cos, &sin}) {
      expect_ndim(*t, 2, "(seqlen_ro, rotary_dim / 2)");
      expect_same_dtype(*t, q);
      expect_device(*t, q.device);
      if (t->stride[1] != 1 || (t->shape[0] > 1 && t->stride[0] != t->shape[1]))
        value_error(std::string(t->name) + " must be contiguous (dense rows of rotary_dim / 2)");
    }
    for (int d = 0; d < 2; ++d) expect_dim(sin, d, cos.shape[d], dim_name(cos, d));
    if (2 * cos.shape[1] > q.shape[3])
      value_error("rotary_dim (2 * rotary_cos.shape[1] = " + std::to_string(2 * cos.shape[1]) +
                  ") must be <= headdim (" + std::to_string(q.shape[3]) + ")");
  }

  View block_table = as_view("block_table", block_table_h, false);
  View batch_idx = as_view("cache_batch_idx", batch_idx_h, false);
  View leftpad = as_view("cache_leftpad", leftpad_h, false);
  if (block_table.defined()) {
    expect_ndim(block_table, 2, "(batch_size, max_num_blocks_per_seq)");
    expect_kind(block_table, Kind::Int32);
    expect_contiguous_last(block_table);
    expect_dim(block_table, 0, batch, dim_name(q, 0) + " (batch_size)");
    expect_device(block_table, q.device);
    if (batch_idx.defined()) value_error("cache_batch_idx cannot be combined with block_table");
  }
  if (batch_idx.defined()) {
    expect_int_vector(batch_idx, batch, dim_name(q, 0) + " (batch_size)");
    expect_device(batch_idx, q.device);
  } else if (!block_table.defined()) {
    expect_dim(kc, 0, batch, dim_name(q, 0) + " (batch_size; or pass cache_batch_idx)");
  }
  if (leftpad.defined()) {
    expect_int_vector(leftpad, batch, dim_name(q, 0) + " (batch_size)");
    expect_device(leftpad, q.device);
  }

  // The capacity in rows per sequence.
  int64_t capacity = kc.shape[1];
  if (block_table.defined()) capacity = block_table.shape[1] * kc.shape[1];
  if (capacity > INT32_MAX) value_error("the KV cache capacity is too large");

  // cache_seqlens: an int32 array, a Python int (uploaded), or None (the whole cache).
  std::vector<int32_t> upload;
  View cache_seqlens;
  if (cache_seqlens_h.is_none() || PyLong_Check(cache_seqlens_h.ptr())) {
    int64_t n = capacity;
    if (!cache_seqlens_h.is_none()) {
      n = nb::cast<int64_t>(cache_seqlens_h);
    } else if (k.defined()) {
      value_error("cache_seqlens is required when k and v are appended to the cache");
    }
    if (n < 0 || n > capacity)
      value_error("cache_seqlens (" + std::to_string(n) + ") must be in [0, " +
                  std::to_string(capacity) + "] (the cache capacity)");
    upload.assign(static_cast<size_t>(batch), static_cast<int32_t>(n));
  } else {
    cache_seqlens = as_view("cache_seqlens", cache_seqlens_h, false);
    expect_int_vector(cache_seqlens, batch, dim_name(q, 0) + " (batch_size)");
    expect_device(cache_seqlens, q.device);
  }

  View alibi = as_view("alibi_slopes", alibi_h, false);
  expect_device(alibi, q.device);
  DeviceGuard guard(q.device);

  nb::object out_obj = nb::none(), lse_obj = nb::none();
  const size_t b = q.shape[0], sq = q.shape[1], h = q.shape[2], d = q.shape[3];
  View out = output_view(out_h, q, {b, sq, h, d}, out_obj);
  float* lse = lse_pointer(lse_h, want_lse, q, {b, h, sq}, lse_obj);

  flare_mha_fwd_params p = base_params(dt, q, kc, vc, out, lse);
  p.batch = to_int(q, 0);
  p.seqlen_q = to_int(q, 1);
  p.seqlen_k = static_cast<int>(capacity);
  p.num_heads = to_int(q, 2);
  p.num_heads_k = to_int(kc, 2);
  p.head_dim = to_int(q, 3);
  strides_of(q, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
  strides_of(out, p.out_batch_stride, p.out_row_stride, p.out_head_stride);
  // The cache's batch (or page) stride is used even when that extent is 1.
  p.k_batch_stride = kc.stride[0];
  p.k_row_stride = kc.shape[1] == 1 ? 0 : kc.stride[1];
  p.k_head_stride = kc.shape[2] == 1 ? 0 : kc.stride[2];
  p.v_batch_stride = vc.stride[0];
  p.v_row_stride = vc.shape[1] == 1 ? 0 : vc.stride[1];
  p.v_head_stride = vc.shape[2] == 1 ? 0 : vc.stride[2];
  if (cache_seqlens.defined()) p.cache_seqlens = reinterpret_cast<const int32_t*>(cache_seqlens.data);
  p.cache_batch_idx = reinterpret_cast<const int32_t*>(batch_idx.data);
  p.leftpad_k = reinterpret_cast<const int32_t*>(leftpad.data);
  if (block_table.defined()) {
    p.block_table = reinterpret_cast<const int32_t*>(block_table.data);
    p.block_table_batch_stride = block_table.shape[0] == 1 ? block_table.shape[1] : block_table.stride[0];
    p.page_block_size = to_int(kc, 1);
    p.num_pages = to_int(kc, 0);
  }
  if (k.defined()) {
    p.k_new = k.data;
    p.v_new = v.data;
    p.seqlen_new = to_int(k, 1);
    strides_of(k, p.k_new_batch_stride, p.k_new_row_stride, p.k_new_head_stride);
    strides_of(v, p.v_new_batch_stride, p.v_new_row_stride, p.v_new_head_stride);
  }
  if (cos.defined()) {
    p.rotary_cos = cos.data;
    p.rotary_sin = sin.data;
    p.rotary_dim = static_cast<int>(2 * cos.shape[1]);
    p.rotary_max_positions = to_int(cos, 0);
    p.rotary_interleaved = rotary_interleaved ? 1 : 0;
  }
  p.num_splits = num_splits;
  apply_common(p, {softmax_scale, causal, window_left, window_right, softcap});
  apply_alibi(p, alibi, p.batch, p.num_heads);
  if (!upload.empty()) {
    // Placeholder so validation sees a KV cache; replaced by the uploaded copy before launch.
    p.cache_seqlens = reinterpret_cast<const int32_t*>(uintptr_t(256));
  }
  launch(p, q.device, stream, upload, upload.empty() ? nullptr : &p.cache_seqlens);
  return result(out_obj, lse_obj);
}

// ---------------------------------------------------------------- merging attention states

// fp16 / bf16 / fp32 element type of a merge part or output.
flare_dtype merge_dtype(const View& v) {
  if (is(v.dtype, nb::dlpack::dtype_code::Float, 16)) return FLARE_DTYPE_FP16;
  if (is(v.dtype, nb::dlpack::dtype_code::Bfloat, 16)) return FLARE_DTYPE_BF16;
  if (is(v.dtype, nb::dlpack::dtype_code::Float, 32)) return FLARE_DTYPE_FP32;
  value_error(std::string(v.name) + " must be float16, bfloat16 or float32, got " +
              dtype_text(v.dtype));
}

// Strides of a [batch, heads, seqlen] lse view in the merge params' order (batch, row, head);
// a dimension of extent 1 gets stride 0, as in strides_of.
void lse_strides_of(const View& v, int64_t& batch, int64_t& row, int64_t& head) {
  auto s = [&](int d) { return v.shape[d] == 1 ? 0 : v.stride[d]; };
  batch = s(0);
  head = s(1);
  row = s(2);
}

// An fp32 [batch, nheads, seqlen] lse view: rank, dtype, extents, device.
void check_merge_lse(const View& l, const View& part0) {
  expect_ndim(l, 3, "(batch_size, nheads, seqlen), flare's lse layout");
  expect_kind(l, Kind::Float32);
  expect_dim(l, 0, part0.shape[0], dim_name(part0, 0) + " (batch_size)");
  expect_dim(l, 1, part0.shape[2], dim_name(part0, 2) + " (nheads)");
  expect_dim(l, 2, part0.shape[1], dim_name(part0, 1) + " (seqlen)");
  if (l.device != part0.device)
    value_error(std::string(l.name) + " is on CUDA device " + std::to_string(l.device) +
                " but " + part0.name + " is on device " + std::to_string(part0.device));
}

std::string strides_text(int64_t b, int64_t r, int64_t h) {
  return "(" + std::to_string(b) + ", " + std::to_string(r) + ", " + std::to_string(h) + ")";
}

// merge_attention_states: parts and lses are Python lists (the wrapper makes them so).
nb::tuple merge(nb::list parts_h, nb::list lses_h, nb::handle out_h, nb::handle out_lse_h,
                uintptr_t stream_handle) {
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
  std::vector<const void*> part_ptrs(n);
  std::vector<const float*> lse_ptrs(n);
  flare_dtype part_dt = FLARE_DTYPE_FP16;
  int64_t pb = 0, pr = 0, ph = 0, lb = 0, lr = 0, lh = 0;
  for (size_t s = 0; s < n; ++s) {
    part_names[s] = "outs[" + std::to_string(s) + "]";
    lse_names[s] = "lses[" + std::to_string(s) + "]";
    View& p = parts[s] = as_view(part_names[s].c_str(), parts_h[s], false);
    if (!p.defined()) value_error(part_names[s] + " is None; every part must be an array");
    View& l = lses[s] = as_view(lse_names[s].c_str(), lses_h[s], false);
    if (!l.defined()) value_error(lse_names[s] + " is None; every part needs its lse");
    expect_ndim(p, 4, "(batch_size, seqlen, nheads, headdim)");
    expect_contiguous_last(p);
    const View& p0 = parts[0];
    if (s == 0) {
      part_dt = merge_dtype(p);
    } else {
      expect_same_dtype(p, p0);
      for (int d = 0; d < 4; ++d) expect_dim(p, d, p0.shape[d], dim_name(p0, d));
      if (p.device != p0.device)
        value_error(part_names[s] + " is on CUDA device " + std::to_string(p.device) +
                    " but outs[0] is on device " + std::to_string(p0.device));
    }
    check_merge_lse(l, p0);
    // The C API takes one set of part strides and one set of lse strides for all parts.
    int64_t b, r, h;
    strides_of(p, b, r, h);
    if (s == 0) {
      pb = b, pr = r, ph = h;
    } else if (b != pb || r != pr || h != ph) {
      value_error(part_names[s] + " has strides " + strides_text(b, r, h) +
                  " (batch, seqlen, nheads) but outs[0] has " + strides_text(pb, pr, ph) +
                  ": all parts must share their strides");
    }
    lse_strides_of(l, b, r, h);
    if (s == 0) {
      lb = b, lr = r, lh = h;
    } else if (b != lb || r != lr || h != lh) {
      value_error(lse_names[s] + " has strides " + strides_text(b, h, r) +
                  " (batch, nheads, seqlen) but lses[0] has " + strides_text(lb, lh, lr) +
                  ": all lses must share their strides");
    }
    part_ptrs[s] = p.data;
    lse_ptrs[s] = reinterpret_cast<const float*>(l.data);
  }
  const View& p0 = parts[0];
  const int device = p0.device;

  View out = as_view("out", out_h, true);
  flare_dtype out_dt = part_dt;
  if (out.defined()) {
    expect_ndim(out, 4, "(batch_size, seqlen, nheads, headdim), the shape of the parts");
    for (int d = 0; d < 4; ++d) expect_dim(out, d, p0.shape[d], "the same extent of outs[0]");
    out_dt = merge_dtype(out);
    expect_contiguous_last(out);
    if (out.device != device)
      value_error("out is on CUDA device " + std::to_string(out.device) +
                  " but outs[0] is on device " + std::to_string(device));
  }
  View out_lse = as_view("out_lse", out_lse_h, true);
  if (out_lse.defined()) check_merge_lse(out_lse, p0);

  DeviceGuard guard(device);
  nb::object out_obj = nb::none(), lse_obj = nb::none();
  const size_t b = p0.shape[0], sq = p0.shape[1], h = p0.shape[2], d = p0.shape[3];
  if (!out.defined()) {
    nb::ndarray<> a = new_array(device, p0.dtype, {b, sq, h, d});
    out_obj = nb::cast(a);
    out = view_of(a, "out");
  }
  if (!out_lse.defined()) {
    nb::ndarray<> a = new_array(device, nb::dtype<float>(), {b, h, sq});
    lse_obj = nb::cast(a);
    out_lse = view_of(a, "out_lse");
  }
  // Nothing to merge (and the C API asks for extents >= 1): empty results.
  if (b == 0 || sq == 0 || h == 0) return result(out_obj, lse_obj);

  flare_merge_params p;
  flare_merge_params_init(&p);
  p.num_parts = static_cast<int32_t>(n);
  p.part_dtype = part_dt;
  p.out_dtype = out_dt;
  p.part_ptrs = part_ptrs.data();
  p.lse_ptrs = lse_ptrs.data();
  p.batch = to_int(p0, 0);
  p.seqlen = to_int(p0, 1);
  p.num_heads = to_int(p0, 2);
  p.head_dim = to_int(p0, 3);
  p.part_batch_stride = pb;
  p.part_row_stride = pr;
  p.part_head_stride = ph;
  p.lse_batch_stride = lb;
  p.lse_row_stride = lr;
  p.lse_head_stride = lh;
  p.out = out.data;
  strides_of(out, p.out_batch_stride, p.out_row_stride, p.out_head_stride);
  p.out_lse = reinterpret_cast<float*>(out_lse.data);
  lse_strides_of(out_lse, p.out_lse_batch_stride, p.out_lse_row_stride, p.out_lse_head_stride);
  flare_status st;
  {
    nb::gil_scoped_release release;
    st = flare_merge_attention_states(&p, reinterpret_cast<cudaStream_t>(stream_handle));
  }
  check_status(st);
  return result(out_obj, lse_obj);
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
        "window_right"_a, "softcap"_a, "alibi_slopes"_a.none(), "stream"_a);
  m.def("_varlen_fwd", &varlen_fwd, "q"_a.none(), "k"_a.none(), "v"_a.none(), "packing"_a,
        "cu_seqlens_q"_a.none(), "cu_seqlens_k"_a.none(), "max_seqlen_q"_a, "max_seqlen_k"_a,
        "out"_a.none(), "lse"_a.none(), "want_lse"_a, "softmax_scale"_a, "causal"_a,
        "window_left"_a, "window_right"_a, "softcap"_a, "alibi_slopes"_a.none(), "stream"_a);
  m.def("_kvcache_fwd", &kvcache_fwd, "q"_a.none(), "k_cache"_a.none(), "v_cache"_a.none(),
        "k"_a.none(), "v"_a.none(), "rotary_cos"_a.none(), "rotary_sin"_a.none(),
        "cache_seqlens"_a.none(), "cache_batch_idx"_a.none(), "cache_leftpad"_a.none(),
        "block_table"_a.none(), "out"_a.none(), "lse"_a.none(), "want_lse"_a,
        "softmax_scale"_a, "causal"_a, "window_left"_a, "window_right"_a, "softcap"_a,
        "rotary_interleaved"_a, "alibi_slopes"_a.none(), "num_splits"_a, "stream"_a);
  m.def("_merge", &merge, "outs"_a, "lses"_a, "out"_a.none(), "out_lse"_a.none(), "stream"_a);
  m.attr("MERGE_MAX_PART_PTRS") = FLARE_MERGE_MAX_PART_PTRS;
}
