// The host logic of the Hopper K/V tensor maps (src/kernels/sm90/tma_maps.h): which launches
// may load K/V by TMA, and the 4-D view {head_dim, rows, heads_k, batch} handed to the encoder.
#include <gtest/gtest.h>

#include <climits>
#include <cstdint>
#include <string>

#include "flare/flare.h"
#include "kernels/sm90/tma_maps.h"

namespace {

// [batch, seqlen_k, heads_k, head_dim] K and V, contiguous.
flare_mha_fwd_params dense(int batch, int seqlen_k, int heads_k, int d) {
  flare_mha_fwd_params p;
  flare_mha_fwd_params_init(&p);
  p.dtype = FLARE_DTYPE_BF16;
  p.batch = batch;
  p.seqlen_q = p.seqlen_k = seqlen_k;
  p.num_heads = p.num_heads_k = heads_k;
  p.head_dim = d;
  p.k_head_stride = p.v_head_stride = d;
  p.k_row_stride = p.v_row_stride = int64_t(heads_k) * d;
  p.k_batch_stride = p.v_batch_stride = int64_t(seqlen_k) * heads_k * d;
  return p;
}

std::string reason(const flare_mha_fwd_params& p) {
  const char* r = flare::kv_tma_unsupported_reason(p);
  return r ? r : "";
}

TEST(TmaMaps, DenseLayoutView) {
  const flare_mha_fwd_params p = dense(3, 1000, 4, 128);
  EXPECT_EQ(reason(p), "");
  const flare::TmaTensorView t = flare::kv_tma_view(p, false);
  EXPECT_EQ(t.dims[0], 128u);
  EXPECT_EQ(t.dims[1], 1000u);
  EXPECT_EQ(t.dims[2], 4u);
  EXPECT_EQ(t.dims[3], 3u);
  EXPECT_EQ(t.strides_bytes[0], 4u * 128 * 2);
  EXPECT_EQ(t.strides_bytes[1], 128u * 2);
  EXPECT_EQ(t.strides_bytes[2], 1000u * 4 * 128 * 2);
}

// Head dims 96 and 192 run on the d128 / d256 Hopper kernels: the view's innermost extent stays
// p.head_dim, so the TMA unit zero-fills the kernel's columns past it (one MQA head: the row
// stride is the row itself, 192 / 384 bytes for d96 / d192, a multiple of 16 as TMA needs).
TEST(TmaMaps, PaddedHeadDimsKeepTheirOwnExtent) {
  for (int d : {40, 80, 96, 136, 192}) {
    const flare_mha_fwd_params p = dense(2, 777, 1, d);
    EXPECT_EQ(reason(p), "") << d;
    for (bool is_v : {false, true}) {
      const flare::TmaTensorView t = flare::kv_tma_view(p, is_v);
      EXPECT_EQ(t.dims[0], uint64_t(d)) << d;
      EXPECT_EQ(t.strides_bytes[0], uint64_t(d) * 2) << d;
    }
  }
}

TEST(TmaMaps, VUsesItsOwnStrides) {
  flare_mha_fwd_params p = dense(2, 64, 2, 64);
  p.v_row_stride = 3 * 64;  // V padded differently from K
  p.v_head_stride = 72;
  p.v_batch_stride = 64 * 3 * 64 + 8;
  EXPECT_EQ(reason(p), "");
  const flare::TmaTensorView t = flare::kv_tma_view(p, true);
  EXPECT_EQ(t.strides_bytes[0], 3u * 64 * 2);
  EXPECT_EQ(t.strides_bytes[1], 72u * 2);
  EXPECT_EQ(t.strides_bytes[2], (64u * 3 * 64 + 8) * 2);
}

TEST(TmaMaps, UnusedDimensionsGetExtentOneAndALegalStride) {
  flare_mha_fwd_params p = dense(1, 256, 1, 64);  // MQA, one batch entry
  p.k_head_stride = p.v_head_stride = 0;            // legal: never stepped
  p.k_batch_stride = p.v_batch_stride = 0;
  EXPECT_EQ(reason(p), "");
  const flare::TmaTensorView t = flare::kv_tma_view(p, false);
  EXPECT_EQ(t.dims[2], 1u);
  EXPECT_EQ(t.dims[3], 1u);
  EXPECT_EQ(t.strides_bytes[1], t.strides_bytes[0]);
  EXPECT_EQ(t.strides_bytes[2], t.strides_bytes[0]);
}

TEST(TmaMaps, VarlenAndKvCacheOpenTheExtentsTheHostCannotKnow) {
  int cu[3] = {0, 5, 9};
  flare_mha_fwd_params p = dense(2, 9, 2, 128);
  p.cu_seqlens_q = cu;
  p.cu_seqlens_k = cu;
  p.k_batch_stride = p.v_batch_stride = 0;  // unused for varlen
  EXPECT_EQ(reason(p), "");
  flare::TmaTensorView t = flare::kv_tma_view(p, false);
  EXPECT_EQ(t.dims[1], uint64_t(INT_MAX));
  EXPECT_EQ(t.dims[3], 1u);

  int cache_seqlens[2] = {3, 7}, batch_idx[2] = {5, 1};
  flare_mha_fwd_params c = dense(2, 512, 2, 64);
  c.cache_seqlens = cache_seqlens;
  c.cache_batch_idx = batch_idx;
  EXPECT_EQ(reason(c), "");
  t = flare::kv_tma_view(c, false);
  EXPECT_EQ(t.dims[1], uint64_t(INT_MAX));
  EXPECT_EQ(t.dims[3], uint64_t(INT_MAX));
}

TEST(TmaMaps, RejectsWhatTheTmaUnitCannotAddress) {
  int table[4] = {0, 1, 2, 3};
  flare_mha_fwd_params p = dense(2, 128, 2, 64);
  p.block_table = table;
  EXPECT_NE(reason(p).find("paged"), std::string::npos);

  p = dense(2, 128, 2, 64);
  p.seqlen_k = 0;  // no keys: a zero extent cannot be encoded
  EXPECT_NE(reason(p).find("seqlen_k"), std::string::npos);

  p = dense(2, 128, 2, 64);
  p.k_head_stride = 0;  // heads broadcast: a zero stride the kernel steps
  EXPECT_NE(reason(p).find("head stride"), std::string::npos);

  p = dense(2, 128, 2, 64);
  p.v_batch_stride = 0;  // batch broadcast
  EXPECT_NE(reason(p).find("batch stride"), std::string::npos);

  p = dense(2, 128, 2, 64);
  p.k_row_stride = int64_t(1) << 39;  // 2^40 bytes
  EXPECT_NE(reason(p).find("row stride"), std::string::npos);
}

}  // namespace
