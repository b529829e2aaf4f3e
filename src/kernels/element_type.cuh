// The CUDA element type of a flare_dtype.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "flare/flare.h"

namespace flare {

template <int Dtype>
struct ElementType;
template <>
struct ElementType<FLARE_DTYPE_FP16> {
  using type = __half;
};
template <>
struct ElementType<FLARE_DTYPE_BF16> {
  using type = __nv_bfloat16;
};

}  // namespace flare
