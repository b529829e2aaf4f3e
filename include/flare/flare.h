/* flare: exact attention forward for NVIDIA GPUs, C ABI.
 *
 * Usage:
 *   flare_mha_fwd_params p;
 *   flare_mha_fwd_params_init(&p);            // sets struct_size and defaults
 *   p.dtype = FLARE_DTYPE_BF16; p.q = ...;    // fill what you need
 *   size_t ws; flare_mha_fwd_workspace_size(&p, device, &ws);
 *   p.workspace = my_alloc(ws); p.workspace_size = ws;
 *   if (flare_mha_fwd(&p, stream) != FLARE_OK) puts(flare_last_error());
 *
 * Layouts (all strides in elements, 64-bit, the head dimension contiguous; tensor bases
 * aligned to their element size, any non-negative strides, head dims 1..512 — rows that are not
 * whole 16-byte chunks run a slower element-wise path, see "Serving fields"):
 *   q   [batch, seqlen_q, num_heads,   head_dim]   (varlen: [total_q, num_heads, head_dim])
 *   k   [batch, seqlen_k, num_heads_k, head_dim]   (varlen: [total_k, ...];
 *        paged: [num_pages, page_block_size, num_heads_k, head_dim])
 *   v   like k with head_dim_v (dv) in place of head_dim; k_new / v_new like k / v
 *   out like q with dv in place of head_dim; lse (fp32) [batch, num_heads, seqlen_q] or,
 *   varlen, [num_heads, total_q].  dv = head_dim_v, or head_dim when head_dim_v is 0.
 *
 * Score of query row i and key column j of one (batch, head h); the key positions j of a
 * sequence are 0-based over the keys it sees (after leftpad_k, through the pages when paged),
 * and query row i sits at the absolute key position a_i = i + seqlen_k - seqlen_q
 * (bottom-right alignment; seqlen_k is the sequence's own key count):
 *   s = scale * q_i.k_j                 (softcap == 0)
 *   s = softcap * tanh(scale * q_i.k_j / softcap)
 *   s -= alibi_slope * |a_i - j|        (when alibi_slopes)
 *   key j (0 <= j < seqlen_k) is visible when it passes the mask:
 *     causal: j <= a_i;  window: a_i - window_left <= j <= a_i + window_right (-1 = unbounded);
 *   or, with mm_prefix_ranges, when some range [start, end) of the sequence holds both j and
 *   a_i (start <= j < end and start <= a_i < end): a query inside a range sees the whole
 *   range, on top of the mask (bidirectional prefix / image spans).
 * Softmax over the visible keys V(i), with the optional per-head sink logit z = sink[h] (in
 * the units of s) joining the denominator only:
 *   lse = log(exp(z) + sum_{j in V(i)} exp(s_j))       (without sink: no exp(z) term)
 *   out = sum_{j in V(i)} exp(s_j - lse) v_j
 * A row that sees no key writes out = 0 and lse = z with a sink, -inf without.
 *
 * Errors: every call checks its arguments before it makes any CUDA call, so a bad argument gets
 * its own status and a message naming the field (flare_last_error) even on a machine without a
 * GPU; a machine without a CUDA driver or GPU gets FLARE_ERROR_NO_DEVICE.
 *
 * Devices: flare_mha_fwd and flare_merge_attention_states run on the STREAM's device: the
 * device a created stream belongs to (cudaStreamGetDevice), or the calling thread's current
 * device for the default streams (NULL, cudaStreamLegacy, cudaStreamPerThread) and for a
 * stream that is being captured into a CUDA graph (CUDA does not report a capturing stream's
 * device: capture on the current device's streams). The calling thread's current device is
 * the same after the call as before it. The query functions take the device ordinal
 * explicitly.
 *
 * Threads and streams: every function may be called from several threads at once, on the same
 * or different streams and devices. The error message is per thread (flare_last_error reads
 * the calling thread's). The facts of a device (compute capability, SM count, shared memory)
 * are read at its first use and cached for the process. Calls that run at the same time need
 * workspaces of their own: a call's workspace is in use until its kernels on its stream have
 * finished (the next call on the same stream may reuse it). A call holds no state between
 * calls apart from the cached device facts, so its launches may be captured into a CUDA graph
 * and replayed: each replay uses the workspace of the captured call.
 */
#ifndef FLARE_FLARE_H
#define FLARE_FLARE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define FLARE_API __declspec(dllexport)
#else
#define FLARE_API __attribute__((visibility("default")))
#endif

#define FLARE_VERSION_MAJOR 0
#define FLARE_VERSION_MINOR 1
#define FLARE_VERSION_PATCH 0

typedef enum flare_status {
  FLARE_OK = 0,
  FLARE_ERROR_INVALID_ARGUMENT = 1,    /* a value out of range, a missing pointer */
  FLARE_ERROR_MISALIGNED = 2,          /* a pointer off its element alignment (FP8: 16 bytes) */
  FLARE_ERROR_UNSUPPORTED_DTYPE = 3,
  FLARE_ERROR_UNSUPPORTED_HEAD_DIM = 4,
  FLARE_ERROR_NOT_SUPPORTED = 5,       /* a feature or combination flare does not offer (dropout) */
  FLARE_ERROR_ARCH_NOT_SUPPORTED = 6,  /* device older than sm80, or kernels not built for it */
  FLARE_ERROR_WORKSPACE_TOO_SMALL = 7,
  FLARE_ERROR_CUDA = 8,                /* a CUDA runtime call or launch failed */
  FLARE_ERROR_NO_DEVICE = 9            /* no CUDA driver or no GPU found */
} flare_status;

typedef enum flare_dtype {
  FLARE_DTYPE_FP16 = 0,
  FLARE_DTYPE_BF16 = 1,
  FLARE_DTYPE_FP32 = 2, /* flare_merge_attention_states only; flare_mha_fwd rejects it */
  FLARE_DTYPE_E4M3 = 3, /* float8_e4m3fn: flare_mha_fwd's kv_dtype / q_dtype only */
  FLARE_DTYPE_E5M2 = 4  /* float8_e5m2: flare_mha_fwd's kv_dtype only */
} flare_dtype;

/* Bumped when fields are added; the library reads only the first struct_size bytes, and a
 * field the caller's struct does not reach keeps the default of flare_mha_fwd_params_init (so a
 * caller compiled against an older header gets every later field as zero / unset). A
 * struct_size larger than the library's struct (a caller compiled against a newer header) is
 * accepted only when every byte past the library's struct is zero, i.e. no field the library
 * does not know is set. */
#define FLARE_MHA_FWD_PARAMS_VERSION 3

typedef struct flare_mha_fwd_params {
  /* sizeof(flare_mha_fwd_params) as the caller compiled it: set by flare_mha_fwd_params_init. */
  uint32_t struct_size;
  int32_t dtype; /* flare_dtype */

  const void* q;
  const void* k; /* K cache when cache_seqlens is given (written to when k_new is given) */
  const void* v; /* V cache when cache_seqlens is given (written to when v_new is given) */
  void* out;
  float* lse; /* optional */

  int32_t batch;
  int32_t seqlen_q;
  int32_t seqlen_k; /* KV cache: the capacity in rows per sequence (paged: pages per sequence
                       in block_table x page_block_size); appended rows must fit in it */
  int32_t num_heads;
  int32_t num_heads_k;
  int32_t head_dim; /* 1..512 */

  int64_t q_batch_stride, q_row_stride, q_head_stride;
  int64_t k_batch_stride, k_row_stride, k_head_stride; /* paged: batch stride = page stride */
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  int64_t out_batch_stride, out_row_stride, out_head_stride;
  /* out's (batch, row, head) entries must not overlap: sorted by stride, each stride of a
   * dimension of size > 1 must be at least the extent of the dimensions inside it (e.g.
   * out_row_stride >= (num_heads - 1) * out_head_stride + head_dim when heads are inner), or the
   * call fails naming the stride. Likewise the K/V cache when k_new is appended. The read-only
   * q, k, v may overlap (a zero stride broadcasts); out overlapping q, k or v is undefined. */

  float softmax_scale; /* 0 means 1/sqrt(head_dim) */
  int32_t causal;      /* same as window_right = 0 */
  int32_t window_left;  /* -1 = unbounded */
  int32_t window_right; /* -1 = unbounded */
  float softcap;        /* 0 = off */
  const float* alibi_slopes;  /* optional, [num_heads] or [batch, num_heads] */
  int64_t alibi_batch_stride; /* 0 when the slopes are shared by every batch */

  /* Variable length: q and k rows of sequence b are [cu_seqlens[b], cu_seqlens[b+1]).
   * Paged varlen (block_table set, no cache_seqlens): q as above; the keys of sequence b are
   * rows [0, len_k(b)) of its pages (block_table row b), len_k(b) = seqused_k[b] when given,
   * else cu_seqlens_k[b+1] - cu_seqlens_k[b]; cu_seqlens_k may then be null when seqused_k is
   * set. */
  const int32_t* cu_seqlens_q;
  const int32_t* cu_seqlens_k;
  const int32_t* seqused_k; /* optional: use only the first seqused_k[b] keys of sequence b */
  int32_t max_seqlen_q;
  int32_t max_seqlen_k;

  /* KV cache (decode). Keys of sequence b are rows [leftpad_k[b], cache_seqlens[b]) of its
   * cache, followed by the seqlen_new rows of k_new/v_new, which are first written into the
   * cache at rows [cache_seqlens[b], cache_seqlens[b] + seqlen_new). */
  const int32_t* cache_seqlens;
  const int32_t* cache_batch_idx; /* optional: cache row of sequence b */
  const int32_t* leftpad_k;       /* optional */
  const int32_t* block_table;     /* optional paged KV: [batch, max_pages], with cache_seqlens
                                     (KV cache) or cu_seqlens_q (paged varlen); row r of a
                                     sequence is row r % page_block_size of page
                                     block_table[b][r / page_block_size] */
  int64_t block_table_batch_stride;
  int32_t page_block_size; /* rows per page, >= 1 */
  int32_t num_pages; /* pages in the paged K/V pools (for validation) */
  const void* k_new;
  const void* v_new;
  int32_t seqlen_new;
  int64_t k_new_batch_stride, k_new_row_stride, k_new_head_stride;
  int64_t v_new_batch_stride, v_new_row_stride, v_new_head_stride;
  const void* rotary_cos; /* [cache positions, rotary_dim / 2], dtype of q */
  const void* rotary_sin;
  int32_t rotary_dim;
  int32_t rotary_interleaved; /* 1: pairs (0,1),(2,3)...; 0: pairs (i, i + rotary_dim/2) */
  int32_t rotary_max_positions; /* rows of rotary_cos/sin */

  int32_t num_splits; /* 0 = heuristic, 1 = no split, n = forced */
  /* Device memory of at least flare_mha_fwd_workspace_size bytes, 256-byte aligned, or NULL:
   * without a workspace the call runs without heuristic splits and, on Hopper, with one CTA
   * per tile instead of persistent CTAs, which may be slower; a forced num_splits > 1 or a
   * rotary KV-cache append then fails with FLARE_ERROR_WORKSPACE_TOO_SMALL. */
  void* workspace;
  size_t workspace_size;

  float p_dropout; /* must be 0: flare is an inference library */

  /* Serving fields. They start a new 8-byte group (4 bytes of padding follow p_dropout), so the
   * tail padding of an older, smaller struct is never read as one of them.
   * Every valid serving input runs on the GPU kernels. Head dims above 256 (the d512 instance,
   * its V columns in two parts) and "narrow" launches (a head dim that is not a multiple of 8,
   * or a tensor whose base or strides do not address whole 16-byte chunks, moved element by
   * element) run the mma.sync kernels on every GPU, Hopper included. */

  /* Optional per-head sink logit, fp32 [num_heads] (query heads), 4-byte aligned, in the units
   * of the scores s (after scale, softcap and ALiBi). It joins the softmax denominator and
   * nothing else (see the score rules above); lse includes it. With split-KV it is counted once.
   * flare_merge_attention_states knows nothing of sinks: when a caller splits one row's keys
   * over several calls, only one of them may pass the sink. -inf is the same as no sink. */
  const float* sink;

  /* Optional multimodal prefix ranges: int32 [batch, max_mm_prefix_ranges, 2], 4-byte aligned;
   * entry (b, r) is the [start, end) pair of key positions of sequence b, at
   * mm_prefix_ranges + b * mm_prefix_ranges_batch_stride + 2 * r. A query row whose absolute
   * position a_i lies in [start, end) also sees every key of [start, end) (see the score
   * rules; a_i may be negative when seqlen_q > seqlen_k, and only keys in [0, seqlen_k) are
   * ever visible). An entry with start >= end is empty: unused slots hold start == end. The
   * contents live on the device and are not validated. */
  const int32_t* mm_prefix_ranges;
  int64_t mm_prefix_ranges_batch_stride; /* int32 elements, >= 2 * max_mm_prefix_ranges */
  int32_t max_mm_prefix_ranges;          /* ranges per sequence, >= 0 */

  /* Head dim of v and out (and of the split-KV accumulators); 0 = head_dim. Accepted pairs
   * (head_dim, head_dim_v): every equal pair, and (192, 128). */
  int32_t head_dim_v;

  /* FP8 inputs. kv_dtype: 0 = k and v (the KV cache, with cache_seqlens) have `dtype`;
   * FLARE_DTYPE_E4M3 or FLARE_DTYPE_E5M2 = they hold 8-bit codes, and the value of a code c of
   * K head hk in sequence b is float(c) * k_descale[b * k_descale_batch_stride +
   * hk * k_descale_head_stride] (likewise v with v_descale). q_dtype: 0 = q has `dtype`;
   * FLARE_DTYPE_E4M3 = q holds e4m3 codes scaled by q_descale the same way (FP8 prefill; needs
   * kv_dtype FLARE_DTYPE_E4M3). `dtype` stays the type of out (fp16 / bf16) and of k_new / v_new,
   * which an append quantizes into an FP8 cache as the code nearest to x / descale (round to
   * nearest even, saturated to the format's largest finite value). The descale pointers are
   * device fp32 arrays, 4-byte aligned, indexed by batch entry b and K/V head hk (strides 0 and
   * 0: one factor per tensor; FlashAttention-3's shape [batch, num_heads_k]: batch stride
   * num_heads_k, head stride 1); each must be set exactly when its tensor is FP8. FP8 tensors
   * have 16-byte aligned bases and strides that are multiples of 16 elements, and head dims
   * that are multiples of 16.
   * FP8 K/V run in every call shape (KV cache with append / rotary / pages of any size,
   * varlen, padded batch) with every option, for head dims up to 256, when q, out, k_new and
   * v_new are 16-byte chunk addressable (16-byte aligned bases, strides multiples of 8
   * elements); otherwise FLARE_ERROR_NOT_SUPPORTED / FLARE_ERROR_UNSUPPORTED_HEAD_DIM. FP8 q
   * (FP8 prefill) is refused with FLARE_ERROR_NOT_SUPPORTED after validation, except in builds
   * with the Hopper FP8 prefill kernel (CMake FLARE_FP8_PREFILL), which run it on compute
   * capability 9.0 for head dims 48 to 256, head_dim_v = head_dim, unpaged K/V. */
  int32_t kv_dtype;
  int32_t q_dtype;
  const float* q_descale;
  int64_t q_descale_batch_stride, q_descale_head_stride;
  const float* k_descale;
  int64_t k_descale_batch_stride, k_descale_head_stride;
  const float* v_descale;
  int64_t v_descale_batch_stride, v_descale_head_stride;
} flare_mha_fwd_params;

/* Zeroes the struct, sets struct_size, window_left = window_right = -1. */
FLARE_API void flare_mha_fwd_params_init(flare_mha_fwd_params* params);

/* Bytes of workspace flare_mha_fwd needs for these params on `device` (0 is possible). The
 * params' workspace fields are ignored. */
FLARE_API flare_status flare_mha_fwd_workspace_size(const flare_mha_fwd_params* params, int device,
                                                    size_t* bytes);

/* FLARE_OK when flare_mha_fwd would accept these params on this device (no launch). */
FLARE_API flare_status flare_can_implement(const flare_mha_fwd_params* params, int device);

/* Runs attention on the stream's device (see "Devices" above). On error nothing is launched
 * or written. */
FLARE_API flare_status flare_mha_fwd(const flare_mha_fwd_params* params, void* cuda_stream);

/* A short constant text naming the status ("unknown status" for values not in flare_status). */
FLARE_API const char* flare_status_string(flare_status status);

/* The message of this thread's last failed call ("" when none). */
FLARE_API const char* flare_last_error(void);

/* The split count flare would use (after the heuristic) for these params on this device. */
FLARE_API flare_status flare_mha_fwd_num_splits(const flare_mha_fwd_params* params, int device,
                                                int* num_splits);

/* ---- Merging partial attention states ------------------------------------------------------
 *
 * Attention over a key set split into n disjoint parts: part s gave the normalised output o_s
 * and log-sum-exp lse_s of every query row. The attention over all keys is
 *   lse = log(sum_s exp(lse_s)),   out = sum_s exp(lse_s - lse) * o_s.
 * A part with lse_s = -inf saw no key: its o_s is never read (it may hold anything). A row
 * whose parts are all empty gets out = 0 and lse = -inf (like flare_mha_fwd).
 *
 * Layouts (strides in elements, 64-bit, the head dimension contiguous):
 *   part s, out  [batch, seqlen, num_heads, head_dim]   (all parts share the part strides)
 *   lse of part s, out_lse (fp32)  [batch, seqlen, num_heads], any strides
 *     (flare_mha_fwd's lse [batch, num_heads, seqlen] is batch stride num_heads * seqlen,
 *      head stride seqlen, row stride 1).
 * Parts come either as part_ptrs (a HOST array of num_parts device pointers, at most
 * FLARE_MERGE_MAX_PART_PTRS) or as one device pointer `parts` with part s at
 * parts + s * part_stride elements; likewise lse_ptrs or lse + s * lse_part_stride.
 * Alignment: the part and out base pointers and their strides address whole groups of 4
 * elements (8 bytes for fp16/bf16, 16 bytes for fp32); lse pointers are 4-byte aligned.
 * In place: out may be one of the parts (same address, dtype and strides) and out_lse that
 * part's lse (same address and strides); any other overlap of an output with an input is
 * undefined. The entries of out (and of out_lse) must not overlap each other (the rule of
 * flare_mha_fwd_params' out strides); struct_size follows flare_mha_fwd_params' rule. */
#define FLARE_MERGE_PARAMS_VERSION 1
#define FLARE_MERGE_MAX_PART_PTRS 64

typedef struct flare_merge_params {
  /* sizeof(flare_merge_params) as the caller compiled it: set by flare_merge_params_init. */
  uint32_t struct_size;
  int32_t num_parts;  /* n >= 1 */
  int32_t part_dtype; /* flare_dtype of the partial outputs: FP16, BF16 or FP32 */
  int32_t out_dtype;  /* flare_dtype of out: FP16, BF16 or FP32 */

  const void* const* part_ptrs; /* host array of num_parts device pointers, or null */
  const void* parts;            /* or: one device pointer ... */
  int64_t part_stride;          /* ... and the elements between parts */
  const float* const* lse_ptrs; /* host array of num_parts device pointers, or null */
  const float* lse;             /* or: one device pointer ... */
  int64_t lse_part_stride;      /* ... and the floats between parts */

  int32_t batch;
  int32_t seqlen;
  int32_t num_heads;
  int32_t head_dim; /* a multiple of 4 in [4, 512] */

  int64_t part_batch_stride, part_row_stride, part_head_stride;
  int64_t lse_batch_stride, lse_row_stride, lse_head_stride;

  void* out; /* out_dtype */
  int64_t out_batch_stride, out_row_stride, out_head_stride;
  float* out_lse; /* optional merged lse */
  int64_t out_lse_batch_stride, out_lse_row_stride, out_lse_head_stride;
} flare_merge_params;

/* Zeroes the struct and sets struct_size. */
FLARE_API void flare_merge_params_init(flare_merge_params* params);

/* Merges the parts into out (and out_lse) on the stream's device. On a validation error
 * nothing is launched or written. */
FLARE_API flare_status flare_merge_attention_states(const flare_merge_params* params,
                                                    void* cuda_stream);

/* ---- Library version and build configuration ------------------------------------------ */

/* "MAJOR.MINOR.PATCH" of the library that is running (FLARE_VERSION_* when it was built);
 * compare with the FLARE_VERSION_* macros to catch a header/library mismatch. Static storage,
 * never null. */
FLARE_API const char* flare_version(void);

/* The build configuration, one `key=value` per line (each ending in '\n'), keys in this order:
 *   version       MAJOR.MINOR.PATCH
 *   cuda_runtime  CUDA runtime version built against, MAJOR.MINOR (e.g. 13.0)
 *   archs         kernel architectures, ';'-separated (FLARE_ARCHS, e.g. 80;90a)
 *   dtypes        element types with kernels (FLARE_DTYPES, e.g. fp16;bf16)
 *   head_dims     head dimensions with kernels (FLARE_HEAD_DIMS, e.g. 32;64;96;128;192;256)
 *   tuning        on / off (the tuning build option)
 * Keys may be added in later versions; parse by key. Static storage, never null. */
FLARE_API const char* flare_build_info(void);

#ifdef __cplusplus
}
#endif

#endif /* FLARE_FLARE_H */
