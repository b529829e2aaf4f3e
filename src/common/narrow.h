// "Narrow" launches: tensors the kernels cannot move in 16-byte chunks. The fast loaders
// (cp.async, TMA) and stores (uint4 / uint2 / float2) address 8 fp16/bf16 elements at a time,
// which needs every row of every tensor they touch to start on a 16-byte boundary and the head
// dims to be whole chunks. A launch is narrow when that fails anywhere:
//   - head_dim (or head_dim_v) is not a multiple of 8 elements, or
//   - the base of q, k, v, out (and k_new, v_new when appended) is not 16-byte aligned, or
//   - one of their strides is not a multiple of 8 elements (a stride of 0 is a multiple).
// Validation accepts any element-aligned (2-byte) base and any non-negative stride
// (api/validate.cpp); a narrow launch then moves elements one by one (2-byte loads into
// registers, st.shared into the same shared-memory layout the fast path fills, element
// stores), the same kernels and the same shared-memory tiles otherwise.
//
// The planner decides it once (FwdPlan::narrow, FwdLaunch::narrow); the append pass, which runs
// before the plan's kernels and sees only the params, asks the same function.
#pragma once
#include <cstdint>

#include "common/serving_semantics.h"
#include "flare/flare.h"

namespace flare {

constexpr int kChunkElements = 8;  // one 16-byte chunk of fp16/bf16

inline bool chunk_addressable(const void* base, int64_t bs, int64_t rs, int64_t hs) {
  return reinterpret_cast<uintptr_t>(base) % 16 == 0 && bs % kChunkElements == 0 &&
         rs % kChunkElements == 0 && hs % kChunkElements == 0;
}

// True when some tensor of the call cannot be moved in 16-byte chunks (see above).
inline bool is_narrow(const flare_mha_fwd_params& p) {
  if (p.head_dim % kChunkElements != 0 || v_head_dim(p) % kChunkElements != 0) return true;
  if (!chunk_addressable(p.q, p.q_batch_stride, p.q_row_stride, p.q_head_stride) ||
      !chunk_addressable(p.k, p.k_batch_stride, p.k_row_stride, p.k_head_stride) ||
      !chunk_addressable(p.v, p.v_batch_stride, p.v_row_stride, p.v_head_stride) ||
      !chunk_addressable(p.out, p.out_batch_stride, p.out_row_stride, p.out_head_stride))
    return true;
  if (p.k_new && !chunk_addressable(p.k_new, p.k_new_batch_stride, p.k_new_row_stride,
                                    p.k_new_head_stride))
    return true;
  if (p.v_new && !chunk_addressable(p.v_new, p.v_new_batch_stride, p.v_new_row_stride,
                                    p.v_new_head_stride))
    return true;
  return false;
}

}  // namespace flare
