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

// p as a variable-length batch of `batch` sequences: packed rows (seqlen and batch-stride fields
// 0, ignored), cu_seqlens_q / cu_seqlens_k at 0x600000 / 0x600100, the longest sequences given.
inline flare_mha_fwd_params as_varlen(flare_mha_fwd_params p, int batch, int max_seqlen_q,
                                      int max_seqlen_k) {
  p.batch = batch;
  p.seqlen_q = p.seqlen_k = 0;
  p.q_batch_stride = p.out_batch_stride = p.k_batch_stride = p.v_batch_stride = 0;
  p.cu_seqlens_q = fake_ptr<const int32_t>(0x600000);
  p.cu_seqlens_k = fake_ptr<const int32_t>(0x600100);
  p.max_seqlen_q = max_seqlen_q;
  p.max_seqlen_k = max_seqlen_k;
  return p;
}

// p (dense) as decode over a paged KV cache: `batch` single-query sequences over seqlen_k keys,
// K/V pools of num_pages pages of page_block_size rows (batch stride = page stride), block
// table [batch, pages_per_seq] at 0x700200, cache_seqlens at 0x700000.
inline flare_mha_fwd_params as_paged_decode(flare_mha_fwd_params p, int batch, int seqlen_k,
                                            int page_block_size, int pages_per_seq,
                                            int num_pages) {
  p.batch = batch;
  p.seqlen_q = 1;
  p.seqlen_k = seqlen_k;
  p.q_batch_stride = p.out_batch_stride = int64_t{p.num_heads} * p.head_dim;
  p.k_batch_stride = p.v_batch_stride = int64_t{page_block_size} * p.num_heads_k * p.head_dim;
  p.cache_seqlens = fake_ptr<const int32_t>(0x700000);
  p.block_table = fake_ptr<const int32_t>(0x700200);
  p.block_table_batch_stride = pages_per_seq;
  p.page_block_size = page_block_size;
  p.num_pages = num_pages;
  return p;
}

// num_parts bf16 parts [batch, seqlen, num_heads, head_dim], contiguous and stacked with
// part_stride, at 0x100000; their lse [part][batch, num_heads, seqlen] at 0x200000; bf16 out of
// the parts' layout at 0x300000; no merged lse.
inline flare_merge_params merge_params(int num_parts, int batch, int seqlen, int num_heads,
                                       int head_dim) {
  flare_merge_params p;
  flare_merge_params_init(&p);
  p.num_parts = num_parts;
  p.part_dtype = p.out_dtype = FLARE_DTYPE_BF16;
  p.parts = fake_ptr(0x100000);
  p.part_stride = int64_t{batch} * seqlen * num_heads * head_dim;
  p.lse = fake_ptr<const float>(0x200000);
  p.lse_part_stride = int64_t{batch} * num_heads * seqlen;
  p.batch = batch;
  p.seqlen = seqlen;
  p.num_heads = num_heads;
  p.head_dim = head_dim;
  p.part_head_stride = p.out_head_stride = head_dim;
  p.part_row_stride = p.out_row_stride = int64_t{num_heads} * head_dim;
  p.part_batch_stride = p.out_batch_stride = int64_t{seqlen} * num_heads * head_dim;
  p.lse_row_stride = 1;
  p.lse_head_stride = seqlen;
  p.lse_batch_stride = int64_t{num_heads} * seqlen;
  p.out = fake_ptr(0x300000);
  return p;
}

}  // namespace flare_test
