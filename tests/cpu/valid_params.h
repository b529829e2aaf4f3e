// Valid params for the CPU-side validation tests. Validation compares pointers and never
// dereferences them, so the tensors are fake, suitably aligned addresses.
#pragma once

#include <cstdint>

#include "flare/flare.h"

namespace flare_test {

// An address that is never dereferenced, as a typed pointer.
template <typename T = void>
T* fake_ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// Dense fp16 batch, all contiguous: q/out [batch, seqlen_q, num_heads, head_dim], k/v
// [batch, seqlen_k, num_heads_k, head_dim]; q, k, v, out at 0x100000..0x400000, no lse.
inline flare_mha_fwd_params dense_fp16_params(int batch, int seqlen_q, int seqlen_k,
                                              int num_heads, int num_heads_k, int head_dim) {
  flare_mha_fwd_params p;
  flare_mha_fwd_params_init(&p);
  p.dtype = FLARE_DTYPE_FP16;
  p.q = fake_ptr(0x100000);
  p.k = fake_ptr(0x200000);
  p.v = fake_ptr(0x300000);
  p.out = fake_ptr(0x400000);
  p.batch = batch;
  p.seqlen_q = seqlen_q;
  p.seqlen_k = seqlen_k;
  p.num_heads = num_heads;
  p.num_heads_k = num_heads_k;
  p.head_dim = head_dim;
  p.q_head_stride = p.out_head_stride = head_dim;
  p.q_row_stride = p.out_row_stride = int64_t{num_heads} * head_dim;
  p.q_batch_stride = p.out_batch_stride = int64_t{seqlen_q} * num_heads * head_dim;
  p.k_head_stride = p.v_head_stride = head_dim;
  p.k_row_stride = p.v_row_stride = int64_t{num_heads_k} * head_dim;
  p.k_batch_stride = p.v_batch_stride = int64_t{seqlen_k} * num_heads_k * head_dim;
  return p;
}

}  // namespace flare_test
