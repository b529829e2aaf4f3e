// flare demo: runs causal bf16 attention on the GPU through the C ABI and checks a few rows
// against a direct computation; says clearly when no GPU is present.
#include <cuda_runtime.h>
#include <flare/flare.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

float bf16_to_float(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);  // round to nearest even
  return uint16_t(u >> 16);
}

#define CHECK_CUDA(call)                                                              \
  do {                                                                                \
    cudaError_t e_ = (call);                                                          \
    if (e_ != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(e_));          \
      return 1;                                                                       \
    }                                                                                 \
  } while (0)

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("flare demo: no CUDA GPU found on this machine; nothing to run.\n");
    return 0;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const int batch = 2, seqlen = 1000, heads = 8, heads_k = 2, dim = 128;
  const size_t q_elems = size_t(batch) * seqlen * heads * dim;
  const size_t kv_elems = size_t(batch) * seqlen * heads_k * dim;
  std::vector<uint16_t> q(q_elems), k(kv_elems), v(kv_elems), out(q_elems);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (auto& x : q) x = float_to_bf16(normal(rng));
  for (auto& x : k) x = float_to_bf16(normal(rng));
  for (auto& x : v) x = float_to_bf16(normal(rng));

  void *dq, *dk, *dv, *dout;
  CHECK_CUDA(cudaMalloc(&dq, q_elems * 2));
  CHECK_CUDA(cudaMalloc(&dk, kv_elems * 2));
  CHECK_CUDA(cudaMalloc(&dv, kv_elems * 2));
  CHECK_CUDA(cudaMalloc(&dout, q_elems * 2));
  CHECK_CUDA(cudaMemcpy(dq, q.data(), q_elems * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dk, k.data(), kv_elems * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dv, v.data(), kv_elems * 2, cudaMemcpyHostToDevice));

  flare_mha_fwd_params p;
  flare_mha_fwd_params_init(&p);
  p.dtype = FLARE_DTYPE_BF16;
  p.q = dq; p.k = dk; p.v = dv; p.out = dout;
  p.batch = batch; p.seqlen_q = seqlen; p.seqlen_k = seqlen;
  p.num_heads = heads; p.num_heads_k = heads_k; p.head_dim = dim;
  p.q_batch_stride = int64_t(seqlen) * heads * dim; p.q_row_stride = heads * dim; p.q_head_stride = dim;
  p.k_batch_stride = int64_t(seqlen) * heads_k * dim; p.k_row_stride = heads_k * dim; p.k_head_stride = dim;
  p.v_batch_stride = p.k_batch_stride; p.v_row_stride = p.k_row_stride; p.v_head_stride = dim;
  p.out_batch_stride = p.q_batch_stride; p.out_row_stride = p.q_row_stride; p.out_head_stride = dim;
  p.causal = 1;

  size_t ws_bytes = 0;
  if (flare_mha_fwd_workspace_size(&p, 0, &ws_bytes) != FLARE_OK) {
    std::fprintf(stderr, "workspace query failed: %s\n", flare_last_error());
    return 1;
  }
  void* ws = nullptr;
  if (ws_bytes) CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
  p.workspace = ws;
  p.workspace_size = ws_bytes;
  flare_status st = flare_mha_fwd(&p, nullptr);
  if (st != FLARE_OK) {
    std::fprintf(stderr, "flare_mha_fwd: %s: %s\n", flare_status_string(st), flare_last_error());
    return 1;
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  CHECK_CUDA(cudaMemcpy(out.data(), dout, q_elems * 2, cudaMemcpyDeviceToHost));

  // Check a few rows of batch 1, head 5 against a direct float computation.
  double max_err = 0;
  const int b = 1, h = 5, hk = h / (heads / heads_k);
  const float scale = 1.f / std::sqrt(float(dim));
  for (int i : {0, 1, 17, 500, seqlen - 1}) {
    std::vector<double> s(i + 1);
    double mx = -1e30, sum = 0;
    for (int j = 0; j <= i; ++j) {
      double dot = 0;
      for (int d = 0; d < dim; ++d)
        dot += bf16_to_float(q[((size_t(b) * seqlen + i) * heads + h) * dim + d]) *
               bf16_to_float(k[((size_t(b) * seqlen + j) * heads_k + hk) * dim + d]);
      s[j] = dot * scale;
      mx = std::max(mx, s[j]);
    }
    for (int j = 0; j <= i; ++j) sum += (s[j] = std::exp(s[j] - mx));
    for (int d = 0; d < dim; ++d) {
      double o = 0;
      for (int j = 0; j <= i; ++j)
        o += s[j] / sum * bf16_to_float(v[((size_t(b) * seqlen + j) * heads_k + hk) * dim + d]);
      const double got = bf16_to_float(out[((size_t(b) * seqlen + i) * heads + h) * dim + d]);
      max_err = std::max(max_err, std::fabs(got - o));
    }
  }
  std::printf("flare demo on %s: causal bf16 attention, batch %d, seqlen %d, %d heads (%d KV "
              "heads), head_dim %d; max abs error on sampled rows %.3g -> %s\n",
              prop.name, batch, seqlen, heads, heads_k, dim, max_err,
              max_err < 2e-2 ? "OK" : "MISMATCH");
  cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); if (ws) cudaFree(ws);
  return max_err < 2e-2 ? 0 : 1;
}
