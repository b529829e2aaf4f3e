// candle-flash-attn's run_mha, computed by flare. The contract (layouts, which arguments are
// honoured, the workspace, how a refused call is reported) is in flare_candle.h.
//
// A call goes: translate the arguments into flare_mha_fwd_params (refusing only argument
// combinations that have no flare reading; every feature, served or not, is flare's to
// answer), let flare validate and size the workspace (flare_mha_fwd_workspace_size validates
// before it touches the device), take the workspace from the stream-ordered allocator, run,
// and give the workspace back on the same stream.
#include "flare_candle.h"

#include <cuda_runtime.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

thread_local bool t_failed = false;
thread_local char t_error[512] = "";

// Records why the call is refused and prints it; the caller returns right after.
void refuse(const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vsnprintf(t_error, sizeof(t_error), format, args);
  va_end(args);
  t_failed = true;
  std::fprintf(stderr, "flare_candle: run_mha: %s\n", t_error);
}

void refuse_status(flare_status status, const char* what) {
  const char* message = flare_last_error();
  refuse("%s: %s (%s)", what, message && *message ? message : "no message",
         flare_status_string(status));
}

// candle passes sizes as uint32_t; flare's fields are int32_t.
bool to_int32(const char* name, uint32_t value, int32_t* out) {
  if (value > uint32_t(INT32_MAX)) {
    refuse("%s (%u) is out of range: flare takes sizes up to 2^31 - 1", name, value);
    return false;
  }
  *out = int32_t(value);
  return true;
}

// Workspace alignment flare requires (validate.cpp's kWorkspaceAlign).
constexpr size_t kWorkspaceAlign = 256;
// A stand-in device address for sizing calls: validation compares pointers, never reads them.
const int32_t* const kSizingPlaceholder = reinterpret_cast<const int32_t*>(uintptr_t(256));

}  // namespace

extern "C" FLARE_API const char* flare_candle_last_error(void) {
  return t_failed ? t_error : nullptr;
}

extern "C" FLARE_API void run_mha(
    const void* q_ptr, const void* k_ptr, const void* v_ptr, const void* o_ptr,
    const void* softmax_lse_ptr, const void* alibi_slopes_ptr, const int32_t* cu_seqlens_q_ptr,
    const int32_t* cu_seqlens_k_ptr, uint32_t q_batch_stride, uint32_t k_batch_stride,
    uint32_t v_batch_stride, uint32_t o_batch_stride, uint32_t alibi_slopes_batch_stride,
    uint32_t q_row_stride, uint32_t k_row_stride, uint32_t v_row_stride, uint32_t o_row_stride,
    uint32_t q_head_stride, uint32_t k_head_stride, uint32_t v_head_stride,
    uint32_t o_head_stride, uint32_t b, uint32_t h, uint32_t h_k, uint32_t d,
    uint32_t /*d_rounded*/, float softmax_scale, uint32_t seqlen_q, uint32_t seqlen_k,
    uint32_t /*seqlen_q_rounded*/, uint32_t /*seqlen_k_rounded*/, uint32_t /*total_q*/,
    int is_bf16, int is_causal, int unpadded_lse, int window_size_left, int window_size_right,
    float softcap, const int32_t* block_table_ptr, uint32_t block_table_batch_stride,
    int page_block_size, const int32_t* mm_prefix_ranges_ptr,
    uint32_t mm_prefix_range_batch_stride, int max_mm_prefix_ranges, void* stream_ptr) {
  t_failed = false;
  t_error[0] = '\0';

  // ---- candle's arguments that have no flare reading ----
  const bool varlen = cu_seqlens_q_ptr != nullptr || cu_seqlens_k_ptr != nullptr;
  if (varlen && (cu_seqlens_q_ptr == nullptr || cu_seqlens_k_ptr == nullptr)) {
    refuse("%s is null but %s is set: varlen needs both", cu_seqlens_q_ptr ? "cu_seqlens_k" : "cu_seqlens_q",
           cu_seqlens_q_ptr ? "cu_seqlens_q" : "cu_seqlens_k");
    return;
  }
  const bool paged = block_table_ptr != nullptr;
  if (softmax_lse_ptr != nullptr && (unpadded_lse != 0) != varlen) {
    refuse(varlen ? "unpadded_lse == 0 with cu_seqlens is not supported: flare writes the "
                    "variable-length lse as [h, total_q] (unpadded_lse = 1)"
                  : "unpadded_lse != 0 without cu_seqlens is not supported: flare writes the "
                    "lse of a padded batch as [b, h, seqlen_q] (unpadded_lse = 0)");
    return;
  }
  if (softmax_scale == 0.f) {
    refuse("softmax_scale 0 is not supported: flare reads 0 as 1/sqrt(d); pass the scale");
    return;
  }

  // ---- candle's arguments as flare params ----
  flare_mha_fwd_params p;
  flare_mha_fwd_params_init(&p);
  p.dtype = is_bf16 ? FLARE_DTYPE_BF16 : FLARE_DTYPE_FP16;
  p.q = q_ptr;
  p.k = k_ptr;
  p.v = v_ptr;
  p.out = const_cast<void*>(o_ptr);
  p.lse = static_cast<float*>(const_cast<void*>(softmax_lse_ptr));
  int32_t batch = 0, heads = 0, heads_k = 0, head_dim = 0, sq = 0, sk = 0;
  if (!to_int32("b", b, &batch) || !to_int32("h", h, &heads) || !to_int32("h_k", h_k, &heads_k) ||
      !to_int32("d", d, &head_dim) || !to_int32("seqlen_q", seqlen_q, &sq) ||
      !to_int32("seqlen_k", seqlen_k, &sk))
    return;
  p.batch = batch;
  p.num_heads = heads;
  p.num_heads_k = heads_k;
  p.head_dim = head_dim;
  // The batch strides of a varlen call are unused (rows come from cu_seqlens); candle passes 0.
  // Paged K/V pools keep theirs: it is the page stride.
  p.q_batch_stride = varlen ? 0 : q_batch_stride;
  p.k_batch_stride = varlen && !paged ? 0 : k_batch_stride;
  p.v_batch_stride = varlen && !paged ? 0 : v_batch_stride;
  p.out_batch_stride = varlen ? 0 : o_batch_stride;
  p.q_row_stride = q_row_stride;
  p.k_row_stride = k_row_stride;
  p.v_row_stride = v_row_stride;
  p.out_row_stride = o_row_stride;
  p.q_head_stride = q_head_stride;
  p.k_head_stride = k_head_stride;
  p.v_head_stride = v_head_stride;
  p.out_head_stride = o_head_stride;
  p.softmax_scale = softmax_scale;
  p.causal = is_causal != 0 ? 1 : 0;
  // FlashAttention-2 reads any negative window as unbounded, and softcap <= 0 (or NaN) as off.
  p.window_left = window_size_left < 0 ? -1 : window_size_left;
  p.window_right = window_size_right < 0 ? -1 : window_size_right;
  p.softcap = softcap > 0.f ? softcap : 0.f;
  p.alibi_slopes = static_cast<const float*>(alibi_slopes_ptr);
  p.alibi_batch_stride = alibi_slopes_ptr ? alibi_slopes_batch_stride : 0;
  // Multimodal prefix ranges as candle gives them (int32 [b, max, 2], batch stride in int32
  // elements); flare validates them and answers for what its kernels run.
  p.mm_prefix_ranges = mm_prefix_ranges_ptr;
  p.mm_prefix_ranges_batch_stride = mm_prefix_range_batch_stride;
  p.max_mm_prefix_ranges = max_mm_prefix_ranges;

  if (varlen) {
    p.cu_seqlens_q = cu_seqlens_q_ptr;
    p.cu_seqlens_k = cu_seqlens_k_ptr;
    p.max_seqlen_q = sq;
    p.max_seqlen_k = sk;
  } else {
    p.seqlen_q = sq;
    p.seqlen_k = sk;
  }

  // Paged K/V. candle does not pass the pool's page count: num_pages is the largest index a
  // block-table entry (int32) can name.
  //  - varlen: flare's paged varlen mode (block_table with cu_seqlens_q; the keys of sequence
  //    b are the first cu_seqlens_k[b+1] - cu_seqlens_k[b] rows of its pages), passed as it
  //    is for flare to validate and serve;
  //  - padded batch: flare's KV-cache path with every sequence holding seqlen_k keys
  //    (cache_seqlens[b] = seqlen_k, a device array run_mha fills) and a capacity of the pages
  //    those keys span.
  std::vector<int32_t> cache_seqlens;
  if (paged && varlen) {
    p.block_table = block_table_ptr;
    p.block_table_batch_stride = block_table_batch_stride;
    p.page_block_size = page_block_size;
    p.num_pages = INT32_MAX;
  } else if (paged) {
    if (page_block_size <= 0) {
      refuse("page_block_size (%d) must be > 0 with block_table", page_block_size);
      return;
    }
    if (sk < 1) {
      refuse("seqlen_k (%d) must be >= 1 with block_table", sk);
      return;
    }
    const int64_t pages = (int64_t(sk) + page_block_size - 1) / page_block_size;
    if (block_table_batch_stride < pages) {
      refuse("block_table_batch_stride (%u) is smaller than the %lld pages seqlen_k (%d) spans",
             block_table_batch_stride, (long long)pages, sk);
      return;
    }
    if (pages * page_block_size > INT32_MAX) {
      refuse("seqlen_k (%d) rounded up to whole pages of %d rows is out of range", sk,
             page_block_size);
      return;
    }
    p.seqlen_k = int32_t(pages * page_block_size);
    p.block_table = block_table_ptr;
    p.block_table_batch_stride = block_table_batch_stride;
    p.page_block_size = page_block_size;
    p.num_pages = INT32_MAX;
    p.cache_seqlens = kSizingPlaceholder;
    cache_seqlens.assign(size_t(batch), sk);
  }

  // ---- validate and size (no launch), then allocate ----
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    // No usable device: flare still validates first and then reports the device error.
    (void)cudaGetLastError();
    device = 0;
  }
  size_t workspace_bytes = 0;
  flare_status st = flare_mha_fwd_workspace_size(&p, device, &workspace_bytes);
  if (st != FLARE_OK) {
    refuse_status(st, "flare refused the call");
    return;
  }
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const size_t ws_aligned = (workspace_bytes + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
  const size_t seqlens_bytes = cache_seqlens.size() * sizeof(int32_t);
  // One allocation holds the workspace and the paged call's cache_seqlens. It is over-sized by
  // one alignment unit so the workspace can start on flare's 256-byte boundary whatever the
  // pool returns.
  void* allocation = nullptr;
  char* scratch = nullptr;
  if (ws_aligned + seqlens_bytes > 0) {
    const size_t bytes = ws_aligned + seqlens_bytes + kWorkspaceAlign;
    cudaError_t err = cudaMallocAsync(&allocation, bytes, stream);
    if (err != cudaSuccess && seqlens_bytes > 0) {
      (void)cudaGetLastError();
      refuse("cudaMallocAsync of %zu bytes (cache_seqlens of the paged call) failed: %s", bytes,
             cudaGetErrorString(err));
      return;
    }
    if (err != cudaSuccess) {
      // No workspace: flare's heuristic then does not split, and needs none.
      (void)cudaGetLastError();
      allocation = nullptr;
    } else {
      const uintptr_t base = reinterpret_cast<uintptr_t>(allocation);
      scratch = reinterpret_cast<char*>((base + kWorkspaceAlign - 1) / kWorkspaceAlign *
                                        kWorkspaceAlign);
    }
  }
  if (scratch != nullptr && workspace_bytes > 0) {
    p.workspace = scratch;
    p.workspace_size = workspace_bytes;
  }
  if (seqlens_bytes > 0) {
    int32_t* seqlens_dev = reinterpret_cast<int32_t*>(scratch + ws_aligned);
    // From pageable memory: the call returns once the data is staged, so the vector may go.
    cudaError_t err = cudaMemcpyAsync(seqlens_dev, cache_seqlens.data(), seqlens_bytes,
                                      cudaMemcpyHostToDevice, stream);
    if (err != cudaSuccess) {
      (void)cudaFreeAsync(allocation, stream);
      refuse("cudaMemcpyAsync of cache_seqlens failed: %s", cudaGetErrorString(err));
      return;
    }
    p.cache_seqlens = seqlens_dev;
  }

  st = flare_mha_fwd(&p, stream);
  if (allocation != nullptr) (void)cudaFreeAsync(allocation, stream);
  if (st != FLARE_OK) refuse_status(st, "flare_mha_fwd failed");
}
