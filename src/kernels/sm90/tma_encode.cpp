// Encodes the Q/K/V tensor maps through cudaGetDriverEntryPointByVersion: the library reaches
// the driver's cuTensorMapEncodeTiled without linking libcuda.
#include <cuda_runtime.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled_v12000

#include "common/fp8_params.h"
#include "kernels/sm90/tma_maps.h"

namespace flare {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      fn = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// One map: box box_cols x box_rows, the swizzle of its row (128 or 64 bytes), out-of-bounds
// columns zero-filled. FP8 codes are encoded as bytes (the copy moves them as they are).
int encode_map(PFN_cuTensorMapEncodeTiled_v12000 encode, int dtype, const void* base,
               const TmaTensorView& t, int box_cols, int box_rows, CUtensorMap* map) {
  const CUtensorMapDataType type = t.elem_bytes == 1         ? CU_TENSOR_MAP_DATA_TYPE_UINT8
                                   : dtype == FLARE_DTYPE_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                               : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  const CUtensorMapSwizzle swizzle =
      box_cols * t.elem_bytes == 64 ? CU_TENSOR_MAP_SWIZZLE_64B : CU_TENSOR_MAP_SWIZZLE_128B;
  const cuuint32_t box[4] = {cuuint32_t(box_cols), cuuint32_t(box_rows), 1, 1};
  const cuuint32_t unit[4] = {1, 1, 1, 1};
  // K/V tiles are re-read by every query tile of a head: promote whole 256-byte L2 sectors (Q,
  // read once, takes the same setting; it only widens the L2 fills of a contiguous box).
  const CUresult r = encode(map, type, 4, const_cast<void*>(base), t.dims, t.strides_bytes, box,
                            unit, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? int(cudaSuccess) : int(cudaErrorInvalidValue);
}

}  // namespace

int make_kv_tensor_maps(const flare_mha_fwd_params& p, int box_cols, int box_rows,
                        Sm90TensorMaps* maps) {
  maps->kv_enabled = 0;
  maps->kv_rows_exact = 0;
  const int kv_dtype = kv_element_dtype(p);
  if (tma_box_unsupported_reason(box_cols, box_rows, element_bytes(kv_dtype)) != nullptr)
    return int(cudaErrorInvalidValue);
  const PFN_cuTensorMapEncodeTiled_v12000 encode = encoder();
  if (encode == nullptr) return int(cudaErrorNotSupported);
  for (int is_v = 0; is_v < 2; ++is_v) {
    const int err = encode_map(encode, kv_dtype, is_v ? p.v : p.k, kv_tma_view(p, is_v != 0),
                               box_cols, box_rows, is_v ? &maps->v : &maps->k);
    if (err != int(cudaSuccess)) return err;
  }
  maps->kv_enabled = 1;
  maps->kv_rows_exact = kv_tma_rows_exact(p) ? 1 : 0;
  return int(cudaSuccess);
}

int make_q_tensor_map(const flare_mha_fwd_params& p, int box_cols, int box_rows,
                      Sm90TensorMaps* maps) {
  maps->q_enabled = 0;
  maps->q_rows_exact = 0;
  const int q_dtype = q_element_dtype(p);
  if (tma_box_unsupported_reason(box_cols, box_rows, element_bytes(q_dtype)) != nullptr)
    return int(cudaErrorInvalidValue);
  const PFN_cuTensorMapEncodeTiled_v12000 encode = encoder();
  if (encode == nullptr) return int(cudaErrorNotSupported);
  const int err = encode_map(encode, q_dtype, p.q, q_tma_view(p), box_cols, box_rows, &maps->q);
  if (err != int(cudaSuccess)) return err;
  maps->q_enabled = 1;
  maps->q_rows_exact = q_tma_rows_exact(p) ? 1 : 0;
  return int(cudaSuccess);
}

}  // namespace flare
