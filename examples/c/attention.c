/* flare from C: causal bf16 attention through the C ABI, checked against a CPU reference.
 *
 * Build against an installed flare (see examples/README.md):
 *   cc attention.c -o attention $(pkg-config --cflags --libs flare) \
 *      -I/usr/local/cuda/include -L/usr/local/cuda/lib64 -lcudart -lm
 * Without a GPU it prints a skip message and exits 0. */
#include <cuda_runtime.h>
#include <flare/flare.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 1, S = 128, H = 4, HK = 2, D = 64 }; /* 4 query heads share 2 K/V heads (GQA) */

static float bf16_to_float(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static uint16_t float_to_bf16(float f) { /* round to nearest even */
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

/* Causal softmax(q k^T / sqrt(D)) v of query row i, head h, in double; layout [1, S, heads, D]. */
static void reference_row(const uint16_t* q, const uint16_t* k, const uint16_t* v, int i, int h,
                          double* out) {
  const int hk = h / (H / HK);
  double p[S], max = -INFINITY, sum = 0.0;
  for (int j = 0; j <= i; ++j) { /* causal: row i sees keys 0..i (seqlen_q == seqlen_k) */
    double s = 0.0;
    for (int d = 0; d < D; ++d)
      s += (double)bf16_to_float(q[(i * H + h) * D + d]) * bf16_to_float(k[(j * HK + hk) * D + d]);
    p[j] = s / sqrt((double)D);
    if (p[j] > max) max = p[j];
  }
  for (int j = 0; j <= i; ++j) sum += (p[j] = exp(p[j] - max));
  for (int d = 0; d < D; ++d) {
    double acc = 0.0;
    for (int j = 0; j <= i; ++j) acc += p[j] * bf16_to_float(v[(j * HK + hk) * D + d]);
    out[d] = acc / sum;
  }
}

/* Returns 1 from main with the CUDA error when a CUDA call fails. */
#define CUDA_OK(call)                                                  \
  do {                                                                 \
    const cudaError_t e_ = (call);                                     \
    if (e_ != cudaSuccess) {                                           \
      fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_));      \
      return 1;                                                        \
    }                                                                  \
  } while (0)

int main(void) {
  int devices = 0;
  printf("flare %s\n", flare_version());
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    printf("SKIP: no CUDA driver/GPU found; the attention example needs one\n");
    return 0;
  }
  const size_t nq = (size_t)B * S * H * D, nkv = (size_t)B * S * HK * D;
  uint16_t *q = malloc(nq * 2), *k = malloc(nkv * 2), *v = malloc(nkv * 2), *out = malloc(nq * 2);
  srand(1);
  for (size_t i = 0; i < nq; ++i) q[i] = float_to_bf16((float)rand() / RAND_MAX * 2.0f - 1.0f);
  for (size_t i = 0; i < nkv; ++i) k[i] = float_to_bf16((float)rand() / RAND_MAX * 2.0f - 1.0f);
  for (size_t i = 0; i < nkv; ++i) v[i] = float_to_bf16((float)rand() / RAND_MAX * 2.0f - 1.0f);

  void *dq, *dk, *dv, *dout, *ws = NULL;
  CUDA_OK(cudaMalloc(&dq, nq * 2)); CUDA_OK(cudaMalloc(&dk, nkv * 2));
  CUDA_OK(cudaMalloc(&dv, nkv * 2)); CUDA_OK(cudaMalloc(&dout, nq * 2));
  CUDA_OK(cudaMemcpy(dq, q, nq * 2, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dk, k, nkv * 2, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dv, v, nkv * 2, cudaMemcpyHostToDevice));

  /* Parameters: init sets struct_size and defaults; strides are in elements. */
  flare_mha_fwd_params p;
  flare_mha_fwd_params_init(&p);
  p.dtype = FLARE_DTYPE_BF16;
  p.q = dq; p.k = dk; p.v = dv; p.out = dout;
  p.batch = B; p.seqlen_q = S; p.seqlen_k = S; p.num_heads = H; p.num_heads_k = HK; p.head_dim = D;
  p.q_batch_stride = (int64_t)S * H * D; p.q_row_stride = H * D; p.q_head_stride = D;
  p.k_batch_stride = (int64_t)S * HK * D; p.k_row_stride = HK * D; p.k_head_stride = D;
  p.v_batch_stride = p.k_batch_stride; p.v_row_stride = p.k_row_stride; p.v_head_stride = D;
  p.out_batch_stride = p.q_batch_stride; p.out_row_stride = p.q_row_stride; p.out_head_stride = D;
  p.causal = 1;

  size_t ws_bytes = 0; /* some shapes split the keys and need scratch memory */
  if (flare_mha_fwd_workspace_size(&p, 0, &ws_bytes) != FLARE_OK) {
    fprintf(stderr, "flare_mha_fwd_workspace_size: %s\n", flare_last_error());
    return 1;
  }
  if (ws_bytes) CUDA_OK(cudaMalloc(&ws, ws_bytes));
  p.workspace = ws; p.workspace_size = ws_bytes;
  const flare_status st = flare_mha_fwd(&p, NULL); /* default stream */
  if (st != FLARE_OK) {
    fprintf(stderr, "flare_mha_fwd: %s: %s\n", flare_status_string(st), flare_last_error());
    return 1;
  }
  CUDA_OK(cudaMemcpy(out, dout, nq * 2, cudaMemcpyDeviceToHost)); /* synchronises */

  double max_err = 0.0, ref[D];
  for (int i = 0; i < S; ++i)
    for (int h = 0; h < H; ++h) {
      reference_row(q, k, v, i, h, ref);
      for (int d = 0; d < D; ++d) {
        const double err = fabs(bf16_to_float(out[(i * H + h) * D + d]) - ref[d]);
        if (isnan(err) || err > max_err) max_err = err; /* a NaN sticks and fails */
      }
    }
  const double tol = 1.0 / 64; /* a few bf16 roundings of values below 1 */
  printf("causal bf16 attention, %d rows x %d heads x d%d: max |error| %.2e (%s, tolerance %.1e)\n",
         S, H, D, max_err, max_err <= tol ? "ok" : "FAILED", tol);
  cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); cudaFree(ws);
  free(q); free(k); free(v); free(out);
  return max_err <= tol ? 0 : 1;
}
