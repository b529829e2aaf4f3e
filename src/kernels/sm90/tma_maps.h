// TMA tensor maps of the K and V tensors of a forward launch (Hopper, warp-specialised kernel).
//
// K and V are described as 4-D tensors {head_dim, rows, heads_k, batch} (innermost first) with
// the caller's strides, so one map serves contiguous, strided, GQA, varlen (batch extent 1,
// rows = packed tokens), cache_batch_idx and leftpad layouts: the kernel addresses a tile by
// (column, k_row0 + first key, head_k, kv_batch), the same terms as kv_offset(). Paged KV has no
// affine layout and keeps the cp.async loads.
//
// The kernel copies only whole tiles whose keys all lie inside the sequence; the last, partial
// tile of a sequence is loaded by cp.async with zero fill. Bounds checking by the TMA unit is
// therefore never needed along rows, and the row/batch extents may be generous where the host
// cannot know them (varlen token counts, cache capacity behind cache_batch_idx). Along columns
// it is needed: the innermost extent is p.head_dim, and a kernel compiled for a wider head dim
// (d96 on the d128 kernel, d192 on d256) relies on the TMA unit zero-filling the columns past it
// (CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE; for d192 the fourth 64-column box lies wholly past it).
#pragma once
#include <cuda.h>  // CUtensorMap (types only: the encoder is reached through the runtime)

#include <cstdint>

#include "flare/flare.h"

namespace flare {

// Passed to the kernel as a __grid_constant__ parameter.
struct KvTensorMaps {
  CUtensorMap k;
  CUtensorMap v;
  int enabled;  // 0: the kernel loads every tile with cp.async
};

// The 4-D view of one of K / V: extents and byte strides (dims 1..3) as the encoder takes them.
struct TmaTensorView {
  uint64_t dims[4];
  uint64_t strides_bytes[3];
};

// Why a launch cannot use TMA for K/V, or nullptr when it can. Pure host logic (CPU-tested):
// paged KV, strides outside what the TMA unit accepts (multiples of 16 bytes below 2^40), or a
// zero stride that is really used (broadcast K/V across batch entries or heads).
const char* kv_tma_unsupported_reason(const flare_mha_fwd_params& p);

// The view of K (is_v = false) or V; valid only when kv_tma_unsupported_reason(p) is nullptr.
TmaTensorView kv_tma_view(const flare_mha_fwd_params& p, bool is_v);

// Encodes both maps (box: 64 columns x box_rows rows, 128-byte swizzle). Returns cudaSuccess,
// or the error that made the encoder unavailable / reject the view (maps->enabled = 0 then).
int make_kv_tensor_maps(const flare_mha_fwd_params& p, int box_rows, KvTensorMaps* maps);

}  // namespace flare
