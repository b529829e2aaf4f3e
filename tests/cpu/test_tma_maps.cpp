// The host logic of the Hopper Q/K/V tensor maps (src/kernels/sm90/tma_maps.h): which launches
// may load Q or K/V by TMA, the 4-D view {head_dim, rows, heads, batch} handed to the encoder,
// and the box limits.
#include <gtest/gtest.h>

#include <climits>
#include <cstdint>
#include <string>

#include "common/sequence.h"
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

// Q of dense(): [batch, seqlen_q, heads, head_dim], contiguous (seqlen_q = seqlen_k there).
flare_mha_fwd_params with_dense_q(flare_mha_fwd_params p) {
  p.q_head_stride = p.head_dim;
  p.q_row_stride = int64_t(p.num_heads) * p.head_dim;
  p.q_batch_stride = int64_t(p.seqlen_q) * p.q_row_stride;
  return p;
}

std::string q_reason(const flare_mha_fwd_params& p) {
  const char* r = flare::q_tma_unsupported_reason(p);
  return r ? r : "";
}

// Byte offset of element (col, row, head, batch) of a view, as the TMA unit computes it.
uint64_t view_offset(const flare::TmaTensorView& t, int64_t col, int64_t row, int64_t head,
                     int64_t batch) {
  return uint64_t(col) * 2 + uint64_t(row) * t.strides_bytes[0] +
         uint64_t(head) * t.strides_bytes[1] + uint64_t(batch) * t.strides_bytes[2];
}

std::string box_reason(int cols, int rows) {
  const char* r = flare::tma_box_unsupported_reason(cols, rows, 2);
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

// (head_dim, head_dim_v) = (192, 128): V's view is 128 columns wide (the d256 kernel's V
// columns past it are zero-filled by the TMA unit), K's stays 192.
TEST(TmaMaps, VViewHasTheVHeadDim) {
  flare_mha_fwd_params p = dense(2, 777, 1, 192);
  p.head_dim_v = 128;
  p.v_head_stride = 128;
  p.v_row_stride = 128;
  p.v_batch_stride = 777 * 128;
  EXPECT_EQ(reason(p), "");
  EXPECT_EQ(flare::kv_tma_view(p, false).dims[0], 192u);
  const flare::TmaTensorView v = flare::kv_tma_view(p, true);
  EXPECT_EQ(v.dims[0], 128u);
  EXPECT_EQ(v.strides_bytes[0], 128u * 2);
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

// The kernel loads a sequence's partial last tile by TMA only where the view's rows end exactly
// with the sequence (the TMA unit zero-fills the rest); open extents keep cp.async for it.
TEST(TmaMaps, RowsExactOnlyWhereTheExtentIsTheSequenceLength) {
  flare_mha_fwd_params p = with_dense_q(dense(2, 1000, 2, 256));
  EXPECT_TRUE(flare::kv_tma_rows_exact(p));
  EXPECT_TRUE(flare::q_tma_rows_exact(p));
  EXPECT_EQ(flare::kv_tma_view(p, false).dims[1], uint64_t(p.seqlen_k));
  EXPECT_EQ(flare::kv_tma_view(p, true).dims[1], uint64_t(p.seqlen_k));
  EXPECT_EQ(flare::q_tma_view(p).dims[1], uint64_t(p.seqlen_q));

  int cu[3] = {0, 5, 9};
  flare_mha_fwd_params varlen = p;
  varlen.cu_seqlens_q = varlen.cu_seqlens_k = cu;
  EXPECT_FALSE(flare::kv_tma_rows_exact(varlen));
  EXPECT_FALSE(flare::q_tma_rows_exact(varlen));
  EXPECT_EQ(flare::kv_tma_view(varlen, false).dims[1], uint64_t(INT_MAX));
  EXPECT_EQ(flare::q_tma_view(varlen).dims[1], uint64_t(INT_MAX));

  // KV cache: rows past cache_seqlens are unwritten cache (and leftpad shifts the rows), but Q
  // keeps its exact extent.
  int cache_seqlens[2] = {3, 7};
  flare_mha_fwd_params cache = p;
  cache.cache_seqlens = cache_seqlens;
  EXPECT_FALSE(flare::kv_tma_rows_exact(cache));
  EXPECT_TRUE(flare::q_tma_rows_exact(cache));
  EXPECT_EQ(flare::kv_tma_view(cache, false).dims[1], uint64_t(INT_MAX));
}

// The producer's copy rules (and the consumers' fence rule built on them): whole blocks by TMA
// whenever the map is enabled, a sequence's partial last block only where the rows are exact,
// paged K/V never; one producer warp exactly when every copy goes by TMA.
TEST(TmaMaps, WhichCopiesGoByTma) {
  for (int kv_enabled = 0; kv_enabled < 2; ++kv_enabled)
    for (int q_enabled = 0; q_enabled < 2; ++q_enabled)
      for (int kv_exact = 0; kv_exact < 2; ++kv_exact)
        for (int q_exact = 0; q_exact < 2; ++q_exact)
          for (int paged = 0; paged < 2; ++paged) {
            flare::Sm90TensorMaps maps{};
            maps.kv_enabled = kv_enabled;
            maps.q_enabled = q_enabled;
            maps.kv_rows_exact = kv_exact;
            maps.q_rows_exact = q_exact;
            const int seqlen = 1000, block = 128;  // the last block (896) is partial
            bool all_kv = true, all_q = true;
            for (int n0 = 0; n0 < seqlen; n0 += block) {
              const bool whole = n0 + block <= seqlen;
              const bool kv = flare::sm90_kv_block_by_tma(maps, paged, n0, block, seqlen);
              const bool q = flare::sm90_q_tile_by_tma(maps, n0, block, seqlen);
              EXPECT_EQ(kv, !paged && kv_enabled && (whole || kv_exact)) << n0;
              EXPECT_EQ(q, q_enabled && (whole || q_exact)) << n0;
              all_kv = all_kv && kv;
              all_q = all_q && q;
            }
            // The all-TMA rule holds for every length, not just this one: it must imply both.
            const bool all = flare::sm90_all_copies_by_tma(maps, paged);
            EXPECT_EQ(all, !paged && kv_enabled && kv_exact && q_enabled && q_exact);
            if (all) EXPECT_TRUE(all_kv && all_q);
          }
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

// The kernels' boxes: one swizzle atom row of columns (16-bit: 64 columns, 128 bytes; FP8
// codes: 128 columns, or 64 for the 64-byte rows of d64) x 128 (Q, K/V of d64/d128) or 64 (K/V
// of d256) rows. The encoder's limits: every box dimension 1..256 elements.
TEST(TmaMaps, BoxLimits) {
  for (int d : {64, 128, 256, 512}) EXPECT_EQ(flare::tma_box_cols(d, 2), 64) << d;
  EXPECT_EQ(flare::tma_box_cols(64, 1), 64);  // 64-byte rows: the 64-byte swizzle
  for (int d : {128, 256}) EXPECT_EQ(flare::tma_box_cols(d, 1), 128) << d;
  const int cols16 = flare::tma_box_cols(128, 2);
  for (int rows : {1, 64, 128, 256}) EXPECT_EQ(box_reason(cols16, rows), "") << rows;
  for (int rows : {0, -1, 257, 512})
    EXPECT_NE(box_reason(cols16, rows).find("box dimension"), std::string::npos) << rows;
  EXPECT_NE(box_reason(128, 128).find("swizzle"), std::string::npos);  // 256-byte rows
  EXPECT_NE(box_reason(4, 128).find("16 bytes"), std::string::npos);   // 8-byte rows
  EXPECT_NE(box_reason(0, 128).find("box dimension"), std::string::npos);
  EXPECT_NE(box_reason(16, 128).find("neither"), std::string::npos);   // 32-byte rows
  // FP8 codes: 128- and 64-byte rows.
  for (int cols : {128, 64}) EXPECT_EQ(flare::tma_box_unsupported_reason(cols, 128, 1), nullptr);
  EXPECT_NE(flare::tma_box_unsupported_reason(32, 128, 1), nullptr);
}

// FP8 prefill (q, k and v in e4m3): the views count 1-byte elements, so byte strides are the
// element strides, and a row of 16 codes is already a legal stride.
TEST(TmaMaps, Fp8ViewsCountBytes) {
  flare_mha_fwd_params p = with_dense_q(dense(2, 1000, 4, 128));
  p.q_dtype = p.kv_dtype = FLARE_DTYPE_E4M3;
  EXPECT_EQ(reason(p), "");
  EXPECT_EQ(q_reason(p), "");
  for (int is_v = 0; is_v < 2; ++is_v) {
    const flare::TmaTensorView t = flare::kv_tma_view(p, is_v != 0);
    EXPECT_EQ(t.elem_bytes, 1);
    EXPECT_EQ(t.dims[0], 128u);
    EXPECT_EQ(t.strides_bytes[0], 4u * 128);
    EXPECT_EQ(t.strides_bytes[1], 128u);
    EXPECT_EQ(t.strides_bytes[2], 1000u * 4 * 128);
  }
  const flare::TmaTensorView q = flare::q_tma_view(p);
  EXPECT_EQ(q.elem_bytes, 1);
  EXPECT_EQ(q.strides_bytes[0], 4u * 128);
  // 16-bit tensors keep 2-byte elements.
  EXPECT_EQ(flare::kv_tma_view(dense(2, 1000, 4, 128), false).elem_bytes, 2);
  EXPECT_EQ(flare::kv_tma_view(dense(2, 1000, 4, 128), false).strides_bytes[1], 256u);
  // One MQA head of d16 codes: 16-byte rows are legal; d8 codes (8 bytes) are not.
  flare_mha_fwd_params narrow = with_dense_q(dense(1, 64, 1, 16));
  narrow.q_dtype = narrow.kv_dtype = FLARE_DTYPE_E4M3;
  EXPECT_EQ(reason(narrow), "");
  narrow = with_dense_q(dense(1, 64, 1, 8));
  narrow.q_dtype = narrow.kv_dtype = FLARE_DTYPE_E4M3;
  EXPECT_NE(reason(narrow).find("row stride"), std::string::npos);
}

TEST(TmaMaps, QDenseLayoutView) {
  flare_mha_fwd_params p = dense(3, 1000, 4, 128);
  p.num_heads = 8;  // GQA: Q has its own head count and strides
  p = with_dense_q(p);
  EXPECT_EQ(q_reason(p), "");
  const flare::TmaTensorView t = flare::q_tma_view(p);
  EXPECT_EQ(t.dims[0], 128u);
  EXPECT_EQ(t.dims[1], 1000u);
  EXPECT_EQ(t.dims[2], 8u);
  EXPECT_EQ(t.dims[3], 3u);
  EXPECT_EQ(t.strides_bytes[0], 8u * 128 * 2);
  EXPECT_EQ(t.strides_bytes[1], 128u * 2);
  EXPECT_EQ(t.strides_bytes[2], 1000u * 8 * 128 * 2);
}

// The kernel addresses a Q tile by (column, q_row0 + m0, head, batch or 0 for varlen): the view
// must put every row where q_offset() does, for padded-batch, varlen and KV-cache launches.
TEST(TmaMaps, QViewAgreesWithQOffset) {
  flare_mha_fwd_params dense_p = with_dense_q(dense(3, 300, 2, 64));
  dense_p.q_row_stride = 2 * 64 + 64;  // padded rows, strided heads and batch entries
  dense_p.q_head_stride = 96;
  dense_p.q_batch_stride = 300 * dense_p.q_row_stride + 8;

  int cu[4] = {0, 130, 131, 400};
  flare_mha_fwd_params varlen = with_dense_q(dense(3, 400, 2, 64));
  varlen.cu_seqlens_q = cu;
  varlen.cu_seqlens_k = cu;
  varlen.q_batch_stride = 0;  // unused for varlen

  int cache_seqlens[3] = {10, 20, 30}, batch_idx[3] = {2, 0, 1};
  flare_mha_fwd_params cache = with_dense_q(dense(3, 7, 2, 64));
  cache.cache_seqlens = cache_seqlens;
  cache.cache_batch_idx = batch_idx;

  for (const flare_mha_fwd_params* p : {&dense_p, &varlen, &cache}) {
    ASSERT_EQ(q_reason(*p), "");
    const flare::TmaTensorView t = flare::q_tma_view(*p);
    for (int b = 0; b < p->batch; ++b) {
      const flare::SequenceInfo seq = flare::sequence_info(*p, b);
      const int q_batch = flare::is_varlen(*p) ? 0 : b;
      for (int row = 0; row < seq.seqlen_q; row += 3)
        for (int head = 0; head < p->num_heads; ++head) {
          const uint64_t want = uint64_t(flare::q_offset(*p, seq, row, head)) * 2 + 2 * 8;
          EXPECT_EQ(view_offset(t, 8, seq.q_row0 + row, head, q_batch), want)
              << b << " " << row << " " << head;
          EXPECT_LT(uint64_t(seq.q_row0 + row), t.dims[1]);
          EXPECT_LT(uint64_t(q_batch), t.dims[3]);
        }
    }
  }
  // Varlen: the packed token count is on the device, so the rows are open; one batch entry.
  EXPECT_EQ(flare::q_tma_view(varlen).dims[1], uint64_t(INT_MAX));
  EXPECT_EQ(flare::q_tma_view(varlen).dims[3], 1u);
  // A KV cache changes nothing for Q: its rows and batch entries are the launch's own.
  EXPECT_EQ(flare::q_tma_view(cache).dims[1], 7u);
  EXPECT_EQ(flare::q_tma_view(cache).dims[3], 3u);
}

TEST(TmaMaps, QPaddedHeadDimsKeepTheirOwnExtent) {
  for (int d : {40, 80, 96, 136, 192}) {
    const flare_mha_fwd_params p = with_dense_q(dense(2, 777, 1, d));
    EXPECT_EQ(q_reason(p), "") << d;
    const flare::TmaTensorView t = flare::q_tma_view(p);
    EXPECT_EQ(t.dims[0], uint64_t(d)) << d;
    EXPECT_EQ(t.strides_bytes[0], uint64_t(d) * 2) << d;
    EXPECT_EQ(t.dims[2], 1u) << d;  // one head: unused dimension, the row stride
    EXPECT_EQ(t.strides_bytes[1], t.strides_bytes[0]) << d;
  }
}

TEST(TmaMaps, QRejectsWhatTheTmaUnitCannotAddress) {
  // Paged KV does not concern Q.
  int table[4] = {0, 1, 2, 3};
  flare_mha_fwd_params p = with_dense_q(dense(2, 128, 2, 64));
  p.block_table = table;
  EXPECT_EQ(q_reason(p), "");

  p = with_dense_q(dense(2, 128, 2, 64));
  p.seqlen_q = 0;
  EXPECT_NE(q_reason(p).find("seqlen_q"), std::string::npos);

  p = with_dense_q(dense(2, 128, 2, 64));
  p.q_head_stride = 0;  // query heads broadcast
  EXPECT_NE(q_reason(p).find("head stride"), std::string::npos);
  p.num_heads = p.num_heads_k = 1;  // never stepped with one head
  EXPECT_EQ(q_reason(p), "");

  p = with_dense_q(dense(2, 128, 2, 64));
  p.q_batch_stride = 0;  // batch broadcast
  EXPECT_NE(q_reason(p).find("batch stride"), std::string::npos);
  p.batch = 1;
  EXPECT_EQ(q_reason(p), "");

  p = with_dense_q(dense(2, 128, 2, 64));
  p.q_row_stride = 2 * 64 + 4;  // 264 bytes: not a multiple of 16
  EXPECT_NE(q_reason(p).find("row stride"), std::string::npos);

  // Q's strides only: K/V problems leave Q eligible, and the other way round.
  p = with_dense_q(dense(2, 128, 2, 64));
  p.k_head_stride = 0;
  EXPECT_EQ(q_reason(p), "");
  EXPECT_NE(reason(p), "");
  p = with_dense_q(dense(2, 128, 2, 64));
  p.q_head_stride = 0;
  EXPECT_EQ(reason(p), "");
}

}  // namespace
