// Epilogue (store) of the Hopper forward kernels, the all-threads and the warp-specialised one:
// one consumer thread's two query rows of the O accumulators (wgmma m64 layout: rows row_base
// and row_base + 8, columns col0 + 8 j + 2 t and col0 + 8 j + 2 t + 1 of every n8 tile j)
// normalised and written, with the LSE, to the output or to the split accumulators. Output rows
// have v_head_dim(p) columns; the accumulators' columns past it (zero V columns) are not stored.
// Columns: the O columns the thread holds (HeadDim, or the warpgroup's part where the
// warpgroups split O); the part holding column 0 writes the rows' LSE.
#pragma once
#include <cstdint>

#include "common/sequence.h"
#include "common/serving_semantics.h"
#include "common/split.h"
#include "kernels/fwd_launch.h"
#include "kernels/sm80/mma_sm80.cuh"
#include "kernels/sm90/softmax_sm90.cuh"

namespace flare {
namespace sm90 {

template <typename T, int HeadDim, int Columns = HeadDim>
__device__ __forceinline__ void store_output_rows(const FwdLaunch& launch, const SequenceInfo& seq,
                                                  const float (&acc_o)[Columns / 2],
                                                  const Sm90Softmax& softmax, float unit_log2,
                                                  int row_base, int t, int batch, int head,
                                                  int split, int col0 = 0) {
  constexpr int kOTiles = Columns / 8;
  const bool lse_writer = t == 0 && col0 == 0;
  static_assert(kOTiles % 2 == 0, "whole pairs of n8 tiles");
  const flare_mha_fwd_params& p = launch.p;
  // O's columns: head_dim_v on the kernel that runs (192, 128) (sm90_kernel_has_narrower_v;
  // the planner resolves head_dim_v, never 0 in a launch), else head_dim. Read from the
  // launch's constants where used, it holds no register across the stores.
  const int head_dim_v = sm90_kernel_has_narrower_v(HeadDim) ? p.head_dim_v : p.head_dim;
  // A row that saw no key gets O = 0 and LSE -inf, or the sink's logit: the sink joins the
  // denominator here unless the launch is split (the combine adds it once).
  float inv_sum[2], lse[2];
  if (launch.num_splits == 1 && p.sink != nullptr) {
    float sink_log2[2];
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int row = row_base + hr * 8;
      sink_log2[hr] = row_sink_log2(p, launch.packed_gqa, head, row, row < seq.seqlen_q);
    }
    softmax.finalize(unit_log2, sink_log2, inv_sum, lse);
  } else {
    softmax.finalize(unit_log2, inv_sum, lse);
  }
  if (launch.num_splits > 1) {
    const int64_t acc_row0 =
        ((int64_t(split) * p.batch + batch) * p.num_heads + head) * launch.max_seqlen_q;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int row = row_base + hr * 8;
      if (row >= seq.seqlen_q) continue;
      const int64_t acc_row = acc_row0 + row;
      if (lse_writer) launch.lse_accum[acc_row] = lse[hr];
      if (lse[hr] == -INFINITY) continue;  // the combine skips empty parts
      float* o = launch.o_accum + acc_row * split_accum_row_floats(head_dim_v);
#pragma unroll
      for (int j = 0; j < kOTiles; ++j) {
        const int col = col0 + j * 8 + 2 * t;
        if (col < head_dim_v)
          *reinterpret_cast<float2*>(o + col) = make_float2(acc_o[4 * j + 2 * hr] * inv_sum[hr],
                                                            acc_o[4 * j + 2 * hr + 1] * inv_sum[hr]);
      }
    }
    return;
  }
  // 8-byte stores: the two threads of a lane pair (t, t ^ 1) swap one word per pair of n8 tiles
  // (k, k + 1), so that the even thread holds columns 2t .. 2t + 3 of tile k and the odd one
  // columns 2t - 2 .. 2t + 1 of tile k + 1: a warp store covers 8 rows x 32 contiguous bytes
  // (whole sectors), for one shuffle and three selects per two words (docs/decisions.md).
  // Rows are at least 8-byte aligned (validated base and strides); a
  // padded head dim (a multiple of 8) ends on a chunk boundary. The shuffles need the whole
  // pair, so rows past the sequence take part and only skip the store.
  const bool upper = (t & 1) != 0;
  const int chunk0 = 2 * (t & ~1) + (upper ? 8 : 0);  // this thread's chunk within a tile pair
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int row = row_base + hr * 8;
    const bool row_ok = row < seq.seqlen_q;
    T* o = static_cast<T*>(p.out) + (row_ok ? out_offset(p, seq, row, head) : 0);
#pragma unroll
    for (int j = 0; j < kOTiles; j += 2) {
      const uint32_t w0 = sm80::pack2<T>(acc_o[4 * j + 2 * hr] * inv_sum[hr],
                                         acc_o[4 * j + 2 * hr + 1] * inv_sum[hr]);
      const uint32_t w1 = sm80::pack2<T>(acc_o[4 * (j + 1) + 2 * hr] * inv_sum[hr],
                                         acc_o[4 * (j + 1) + 2 * hr + 1] * inv_sum[hr]);
      const uint32_t got = __shfl_xor_sync(0xffffffffu, upper ? w0 : w1, 1);
      const int col = col0 + j * 8 + chunk0;
      if (row_ok && col < head_dim_v)
        *reinterpret_cast<uint2*>(o + col) = upper ? make_uint2(got, w1) : make_uint2(w0, got);
    }
    if (row_ok && p.lse != nullptr && lse_writer) p.lse[lse_offset(p, seq, row, head)] = lse[hr];
  }
}

}  // namespace sm90
}  // namespace flare
