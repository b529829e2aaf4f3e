// flare from C++ (<flare/flare.hpp>): causal bf16 attention with grouped K/V heads and the
// log-sum-exp, checked against a CPU reference. Errors arrive as flare::Error exceptions.
// Build: see examples/CMakeLists.txt (find_package(flare), target flare::flare).
// Without a GPU it prints a skip message and exits 0.
#include <cuda_runtime.h>
#include <flare/flare.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

float bf16_to_float(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t float_to_bf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// A device buffer that frees itself.
struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    if (bytes) cuda_check(cudaMalloc(&ptr, bytes), "cudaMalloc");
  }
  ~DeviceBuffer() { cudaFree(ptr); }
};

}  // namespace

int main() try {
  std::printf("flare %s\n", flare::version().c_str());
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA driver/GPU found; the attention example needs one\n");
    return 0;
  }
  const int b = 2, s = 96, h = 8, hk = 2, d = 64;  // 8 query heads over 2 K/V heads
  std::vector<uint16_t> q(size_t(b) * s * h * d), k(size_t(b) * s * hk * d), v(k.size());
  std::vector<uint16_t> out(q.size());
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  for (auto* t : {&q, &k, &v}) for (auto& x : *t) x = float_to_bf16(uni(rng));

  DeviceBuffer dq(q.size() * 2), dk(k.size() * 2), dv(v.size() * 2), dout(out.size() * 2);
  DeviceBuffer dlse(size_t(b) * h * s * sizeof(float));
  cuda_check(cudaMemcpy(dq.ptr, q.data(), q.size() * 2, cudaMemcpyHostToDevice), "cudaMemcpy");
  cuda_check(cudaMemcpy(dk.ptr, k.data(), k.size() * 2, cudaMemcpyHostToDevice), "cudaMemcpy");
  cuda_check(cudaMemcpy(dv.ptr, v.data(), v.size() * 2, cudaMemcpyHostToDevice), "cudaMemcpy");

  // Views in the FlashAttention-2 layout [batch, seqlen, heads, head_dim], contiguous.
  using flare::DType;
  const auto Q = flare::contiguous(dq.ptr, DType::BF16, {b, s, h, d});
  const auto K = flare::contiguous(dk.ptr, DType::BF16, {b, s, hk, d});
  const auto V = flare::contiguous(dv.ptr, DType::BF16, {b, s, hk, d});
  const auto O = flare::contiguous(dout.ptr, DType::BF16, {b, s, h, d});
  flare::FlashAttnOptions opts;
  opts.causal = true;
  opts.lse = static_cast<float*>(dlse.ptr);  // [batch, heads, seqlen], fp32

  const size_t ws_bytes = flare::workspace_size(flare::make_params(Q, K, V, O, opts), /*device=*/0);
  DeviceBuffer ws(ws_bytes);
  flare::Workspace workspace{ws.ptr, ws_bytes};
  flare::flash_attn(Q, K, V, O, opts, /*stream=*/nullptr, &workspace);
  std::vector<float> lse(size_t(b) * h * s);
  // cudaMemcpy waits for the attention on the default stream.
  cuda_check(cudaMemcpy(out.data(), dout.ptr, out.size() * 2, cudaMemcpyDeviceToHost), "out");
  cuda_check(cudaMemcpy(lse.data(), dlse.ptr, lse.size() * 4, cudaMemcpyDeviceToHost), "lse");

  // Reference in double: row i of head hh sees keys 0..i (causal, seqlen_q == seqlen_k).
  double max_err = 0, max_lse_err = 0;
  std::vector<double> p(s), ref(d);
  for (int bb = 0; bb < b; ++bb)
    for (int i = 0; i < s; ++i)
      for (int hh = 0; hh < h; ++hh) {
        const int kh = hh / (h / hk);
        auto at = [&](const std::vector<uint16_t>& t, int heads, int row, int head, int c) {
          return double(bf16_to_float(t[((size_t(bb) * s + row) * heads + head) * d + c]));
        };
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j <= i; ++j) {
          double dot = 0;
          for (int c = 0; c < d; ++c) dot += at(q, h, i, hh, c) * at(k, hk, j, kh, c);
          p[j] = dot / std::sqrt(double(d));
          mx = std::max(mx, p[j]);
        }
        for (int j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - mx));
        const double lse_err = std::fabs(lse[(size_t(bb) * h + hh) * s + i] - (mx + std::log(sum)));
        if (std::isnan(lse_err) || lse_err > max_lse_err) max_lse_err = lse_err;
        for (int c = 0; c < d; ++c) {
          double acc = 0;
          for (int j = 0; j <= i; ++j) acc += p[j] * at(v, hk, j, kh, c);
          const double err = std::fabs(at(out, h, i, hh, c) - acc / sum);
          if (std::isnan(err) || err > max_err) max_err = err;  // a NaN sticks and fails
        }
      }
  const double tol = 1.0 / 64;  // a few bf16 roundings of values below 1
  const bool ok = max_err <= tol && max_lse_err <= 1e-3;
  std::printf("causal bf16 GQA attention %dx%dx%dx%d: max |error| out %.2e, lse %.2e (%s)\n", b, s,
              h, d, max_err, max_lse_err, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
} catch (const flare::Error& e) {
  std::fprintf(stderr, "flare error (%s): %s\n", flare_status_string(e.status()), e.what());
  return 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
