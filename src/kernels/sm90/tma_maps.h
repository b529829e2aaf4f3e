// TMA tensor maps of the Q, K and V tensors of a forward launch (Hopper, warp-specialised kernel).
//
// Each tensor is described as a 4-D tensor {head_dim, rows, heads, batch} (innermost first) with
// the caller's strides, so one map serves contiguous, strided, GQA, varlen (batch extent 1,
// rows = packed tokens), cache_batch_idx and leftpad layouts: the kernel addresses a K/V tile by
// (column, k_row0 + first key, head_k, kv_batch), the same terms as kv_offset(), and a Q tile by
// (column, q_row0 + first row, head, batch or 0 for varlen), the same terms as q_offset(). Paged
// KV has no affine layout and keeps the cp.async loads (its Q may still go by TMA).
//
// Where the host knows a sequence's rows exactly (K/V: neither varlen nor a KV cache; Q: not
// varlen) the map's row extent is the sequence length, and the last, partial tile of a sequence
// goes by TMA too: the rows past it are out of bounds and zero-filled (still counted in the
// transaction bytes). Elsewhere the row/batch extents are generous (varlen token counts, cache
// capacity behind cache_batch_idx: rows past a sequence are another sequence's or unwritten
// cache), so the kernel copies only whole tiles by TMA and the partial one by cp.async with
// zero fill (rows_exact = 0).
// Along columns it is needed: the innermost extent is p.head_dim (V: v_head_dim(p)), and a
// kernel compiled for a wider head dim (d96 on the d128 kernel, d192 on d256) relies on the TMA
// unit zero-filling the columns past it (CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE; for d192 the fourth
// 64-column box lies wholly past it, for V of (192, 128) the third and fourth).
#pragma once
#include <cuda.h>  // CUtensorMap (types only: the encoder is reached through the runtime)

#include <cstdint>

#include "common/host_device.h"
#include "flare/flare.h"

namespace flare {

// Passed to the kernel as a __grid_constant__ parameter.
struct Sm90TensorMaps {
  CUtensorMap k;
  CUtensorMap v;
  CUtensorMap q;
  int kv_enabled;  // 0: the kernel loads every K/V tile with cp.async
  int q_enabled;   // 0: the kernel loads every Q tile with cp.async
  int kv_rows_exact;  // 1: K/V row extent = seqlen_k, partial tiles by TMA (kv_tma_rows_exact)
  int q_rows_exact;   // 1: Q row extent = seqlen_q, partial tiles by TMA (q_tma_rows_exact)
};

// Which copies the warp-specialised kernel's producer makes by TMA; the consumers apply the same
// rules (only cp.async data, written by the generic proxy, needs a proxy fence before wgmma reads
// it). A key block starting at row n0 (a query tile at row m0) goes by TMA when its map is
// enabled and the block lies inside the sequence, or the map's rows end with the sequence (the
// TMA unit zero-fills the rest); by cp.async otherwise. Paged K/V always goes by cp.async.
FLARE_HD bool sm90_kv_block_by_tma(const Sm90TensorMaps& maps, bool paged, int n0, int block_n,
                                   int seqlen_k) {
  return !paged && maps.kv_enabled && (maps.kv_rows_exact || n0 + block_n <= seqlen_k);
}
FLARE_HD bool sm90_q_tile_by_tma(const Sm90TensorMaps& maps, int m0, int block_m, int seqlen_q) {
  return maps.q_enabled && (maps.q_rows_exact || m0 + block_m <= seqlen_q);
}
// Whether every copy of a launch goes by TMA, whatever the block: one producer warp then issues
// them all (cp.async fills need the whole producer warpgroup).
FLARE_HD bool sm90_all_copies_by_tma(const Sm90TensorMaps& maps, bool paged) {
  return !paged && maps.kv_enabled && maps.kv_rows_exact && maps.q_enabled && maps.q_rows_exact;
}

// The 4-D view of one of Q / K / V: extents and byte strides (dims 1..3) as the encoder takes
// them, and the size of its elements (2: fp16 / bf16; 1: FP8 codes, encoded as bytes).
struct TmaTensorView {
  uint64_t dims[4];
  uint64_t strides_bytes[3];
  int elem_bytes;
};

// A map's box is one swizzle atom row of columns (the layout load_swizzled writes and the wgmma
// descriptors read: fp8_layout.h's k_major_tile_offset) x box_rows rows: 64 columns of a 16-bit
// type (128 bytes, the 128-byte swizzle); for FP8 codes 128 columns, or 64 where the kernel's
// rows are 64 bytes (d64: the 64-byte swizzle).
FLARE_HD constexpr int tma_box_cols(int kernel_head_dim, int elem_bytes) {
  return (kernel_head_dim * elem_bytes < 128 ? kernel_head_dim * elem_bytes : 128) / elem_bytes;
}

// Why a box of box_cols x box_rows elements of elem_bytes cannot be encoded (each box dimension
// 1..256 elements; the inner span a 128-byte or 64-byte swizzle row), or nullptr when it can.
const char* tma_box_unsupported_reason(int box_cols, int box_rows, int elem_bytes);

// Why a launch cannot use TMA for K/V, or nullptr when it can. Pure host logic (CPU-tested):
// paged KV, strides outside what the TMA unit accepts (multiples of 16 bytes below 2^40), or a
// zero stride that is really used (broadcast K/V across batch entries or heads).
const char* kv_tma_unsupported_reason(const flare_mha_fwd_params& p);

// The view of K (is_v = false) or V; valid only when kv_tma_unsupported_reason(p) is nullptr.
TmaTensorView kv_tma_view(const flare_mha_fwd_params& p, bool is_v);
// Whether the views' row extents are exactly the sequence lengths (K/V: seqlen_k, Q: seqlen_q),
// so that rows past a sequence are out of bounds and zero-filled by the TMA unit.
bool kv_tma_rows_exact(const flare_mha_fwd_params& p);
bool q_tma_rows_exact(const flare_mha_fwd_params& p);

// The same for Q (p.q as the launch sees it: the rotated copy when rotary applies, the packed
// GQA view of a decode launch): strides, and a zero extent (seqlen_q 0, non-varlen).
const char* q_tma_unsupported_reason(const flare_mha_fwd_params& p);
TmaTensorView q_tma_view(const flare_mha_fwd_params& p);

// Encode the maps (box: box_cols columns x box_rows rows, the swizzle of a box_cols row: 128 or
// 64 bytes). Return cudaSuccess, or the error that made the encoder unavailable / reject the
// view / the box (maps->kv_enabled or maps->q_enabled = 0 then). Each sets only its own maps and
// flag.
int make_kv_tensor_maps(const flare_mha_fwd_params& p, int box_cols, int box_rows,
                        Sm90TensorMaps* maps);
int make_q_tensor_map(const flare_mha_fwd_params& p, int box_cols, int box_rows,
                      Sm90TensorMaps* maps);

}  // namespace flare
