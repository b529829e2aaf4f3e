/* flare_candle: candle-flash-attn's FFI entry point `run_mha`, served by flare.
 *
 * run_mha has exactly the signature of candle-flash-attn's src/ffi.rs, so a candle build links
 * this library instead of compiling FlashAttention-2 kernels (docs/candle.md). Semantics follow
 * candle's callers:
 *   - layouts: q/o [b, seqlen_q, h, d], k/v [b, seqlen_k, h_k, d] with the given strides in
 *     elements (the head dimension contiguous); varlen (cu_seqlens_q and cu_seqlens_k given):
 *     q/o [total_q, h, d], k/v [total_k, h_k, d], b is the number of sequences, seqlen_q /
 *     seqlen_k are the longest sequences, the batch strides are ignored (except the page
 *     strides of paged K/V, below);
 *   - softmax_lse (fp32, optional): [b, h, seqlen_q] when unpadded_lse == 0 (padded batch),
 *     [h, total_q] when unpadded_lse == 1 (varlen);
 *   - window_size_left / right: -1 is unbounded; is_causal is window_size_right = 0;
 *   - softcap > 0: scores are softcap * tanh(softmax_scale * q.k / softcap);
 *   - alibi_slopes (fp32, optional): [h] or, with a batch stride, [b, h];
 *   - d_rounded, seqlen_q_rounded, seqlen_k_rounded: ignored (flare needs no padded buffers);
 *   - block_table with page_block_size: paged K/V pools [pages, page_block_size, h_k, d]
 *     (k/v batch strides are the page strides); for a padded batch every sequence has seqlen_k
 *     keys, with varlen sequence b has cu_seqlens_k[b+1] - cu_seqlens_k[b] (flare's paged
 *     varlen mode);
 *   - mm_prefix_ranges (int32 [b, max_mm_prefix_ranges, 2] [start, end) key positions,
 *     mm_prefix_range_batch_stride int32 elements between sequences): flare's
 *     mm_prefix_ranges fields;
 *   - what flare does not run yet (today paged varlen, multimodal prefix ranges, head dims
 *     beyond 256) is refused by flare itself, with its message (see Errors);
 *   - stream_ptr: the cudaStream_t to run on (NULL: the default stream).
 *
 * Workspace: candle passes none. run_mha sizes the split-KV workspace flare wants for the call
 * (flare_mha_fwd_workspace_size) and takes it from the stream-ordered allocator
 * (cudaMallocAsync / cudaFreeAsync on stream_ptr), so the memory is reused across calls by the
 * device's memory pool and is never shared between streams. If that allocation fails, the call
 * runs without splitting (flare's heuristic never splits without a workspace): slower on
 * long-key decode shapes, same result.
 *
 * Errors: run_mha returns void. A call flare cannot serve (bad arguments, an unsupported
 * feature, a CUDA failure) writes nothing and launches nothing, prints one line
 * "flare_candle: run_mha: <reason>" on stderr and records the reason (for a refusal by flare:
 * flare's message and status string), which flare_candle_last_error() returns (per thread)
 * until the next run_mha call; after a call that succeeded it returns NULL. */
#ifndef FLARE_CANDLE_H
#define FLARE_CANDLE_H

#include <flare/flare.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

FLARE_API void run_mha(const void* q_ptr, const void* k_ptr, const void* v_ptr, const void* o_ptr,
                       const void* softmax_lse_ptr, const void* alibi_slopes_ptr,
                       const int32_t* cu_seqlens_q_ptr, const int32_t* cu_seqlens_k_ptr,
                       uint32_t q_batch_stride, uint32_t k_batch_stride, uint32_t v_batch_stride,
                       uint32_t o_batch_stride, uint32_t alibi_slopes_batch_stride,
                       uint32_t q_row_stride, uint32_t k_row_stride, uint32_t v_row_stride,
                       uint32_t o_row_stride, uint32_t q_head_stride, uint32_t k_head_stride,
                       uint32_t v_head_stride, uint32_t o_head_stride, uint32_t b, uint32_t h,
                       uint32_t h_k, uint32_t d, uint32_t d_rounded, float softmax_scale,
                       uint32_t seqlen_q, uint32_t seqlen_k, uint32_t seqlen_q_rounded,
                       uint32_t seqlen_k_rounded, uint32_t total_q, int is_bf16, int is_causal,
                       int unpadded_lse, int window_size_left, int window_size_right,
                       float softcap, const int32_t* block_table_ptr,
                       uint32_t block_table_batch_stride, int page_block_size,
                       const int32_t* mm_prefix_ranges_ptr, uint32_t mm_prefix_range_batch_stride,
                       int max_mm_prefix_ranges, void* stream_ptr);

/* The reason the calling thread's last run_mha call was refused, or NULL if it succeeded (or
 * none was made). */
FLARE_API const char* flare_candle_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* FLARE_CANDLE_H */
