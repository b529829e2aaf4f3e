// Encodes the K/V tensor maps through cudaGetDriverEntryPointByVersion: the library reaches
// the driver's cuTensorMapEncodeTiled without linking libcuda.
#include <cuda_runtime.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled_v12000

#include "kernels/sm90/tma_maps.h"

namespace flare {

int make_kv_tensor_maps(const flare_mha_fwd_params& p, int box_rows, KvTensorMaps* maps) {
  maps->enabled = 0;
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
  if (encode == nullptr) return int(cudaErrorNotSupported);
  const CUtensorMapDataType type =
      p.dtype == FLARE_DTYPE_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  const cuuint32_t box[4] = {64, cuuint32_t(box_rows), 1, 1};
  const cuuint32_t unit[4] = {1, 1, 1, 1};
  for (int is_v = 0; is_v < 2; ++is_v) {
    const TmaTensorView t = kv_tma_view(p, is_v != 0);
    CUtensorMap* map = is_v ? &maps->v : &maps->k;
    // K/V tiles are re-read by every query tile of a head: promote whole 256-byte L2 sectors.
    const CUresult r = encode(map, type, 4, const_cast<void*>(is_v ? p.v : p.k), t.dims,
                              t.strides_bytes, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
                              CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) return int(cudaErrorInvalidValue);
  }
  maps->enabled = 1;
  return int(cudaSuccess);
}

}  // namespace flare
