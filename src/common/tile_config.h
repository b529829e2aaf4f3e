// Tile shapes of the mma.sync forward kernels per head dimension: shared by the kernels and by
// the planner (split heuristic, workspace), so both agree on block counts and CTA slots.
#pragma once
#include "host_device.h"
#include "smem_swizzle.h"

namespace flare {

struct TileConfig {
  int block_m;      // query rows per CTA
  int block_n;      // key rows per main-loop step (also the unit of the split ranges)
  int warps;        // prefill: each warp owns block_m / warps query rows;
                    // decode: each warp owns block_n / warps keys of every key block
  int stages;       // K/V shared-memory buffers in flight (prefill: one K and one V buffer)
  int ctas_per_sm;  // resident CTAs per SM the kernel is built for (the planner's slots)
};

// Prefill kernel. Rows per warp: 32 where the accumulators fit in registers (d <= 128), else 16.
// d = 96 / 128 step 32 keys at a time: with 64 the S accumulators (64 registers) on top of the
// 128 O accumulators spilled (255 registers, LDL/STL in the main loop); 32 keys fit without
// spills and measured faster on H100 (d128 non-causal +1..4%, causal s=512 +18%) than that
// spilling version. The spill-free 64-key step below (sm80_wide_block_n) is what d96/d128 run by
// default now; this 32-key tile is the planner's unit and FLARE_SM80_WIDE=0's kernel.
// d = 192 / 256: 64 x 64 tiles of 4 warps, two CTAs per SM (96 KB each with swizzled rows), so
// one CTA's prologue and epilogue run under the other's loop; 128 x 64 tiles of 8 warps (one
// CTA per SM, 131 KB) issued 20-35% more instructions and ran 16-31% longer than FA2's 64 x 64
// at 512 keys (Nsight Compute, sixth session). They also fit the 99 KB of sm86/sm89/sm120.
// d = 512: 64 x 32 tiles of 4 warps, each CTA computing 256 of the 512 O columns
// (sm80_kernel_head_dim_v): Q and K rows are 1 KB, so a 64-key step would need 160 KB (one CTA
// per SM, and barely the A100's 163 KB); 32 keys take 112 KB swizzled, two CTAs per SM on H100
// (228 KB) and one on A100. The planner counts one.
FLARE_HD constexpr TileConfig sm80_tile_config(int head_dim) {
  return head_dim <= 64    ? TileConfig{128, 64, 4, 1, 2}
         : head_dim <= 128 ? TileConfig{128, 32, 4, 1, 2}
         : head_dim <= 256 ? TileConfig{64, 64, 4, 1, 2}
                           : TileConfig{64, 32, 4, 1, 1};
}

// The widest O one mma.sync CTA accumulates: 256 columns (16 rows x 256 fp32 per warp are 128
// registers per thread; 512 columns would leave none for S and the addresses).
constexpr int kSm80MaxHeadDimV = 256;

// V columns (and O columns) one CTA of the mma.sync kernel compiled for `kernel_head_dim`
// computes: the head dim itself up to 256; the d512 kernel computes 256, and the grid runs
// v_column_parts CTAs per (query block, head, split), part j on O columns
// [j * 256, j * 256 + 256). Every part computes the same S = Q K^T.
FLARE_HD constexpr int sm80_kernel_head_dim_v(int kernel_head_dim) {
  return kernel_head_dim < kSm80MaxHeadDimV ? kernel_head_dim : kSm80MaxHeadDimV;
}

// CTAs per (query block, head, split) that cover `head_dim_v` O columns with a kernel computing
// `kernel_head_dim_v` of them each.
FLARE_HD constexpr int v_column_parts(int head_dim_v, int kernel_head_dim_v) {
  return (head_dim_v + kernel_head_dim_v - 1) / kernel_head_dim_v;
}

// A second, wider prefill step (0 = none): d = 96 / 128 step 64 keys (FA2's 128 x 64 tile),
// d = 64 steps 128 keys (FA2's 128 x 128 tile for d64). Q is re-read from shared memory at every
// k16 step. What spilled at d128 with 64 keys was ~20 CTA-uniform values (sequence, mask, K/V
// source, softcap/ALiBi, epilogue offsets) held in registers across the loop next to 128 O + 64
// S accumulators, and the next-K address math before the softmax; the wide kernel keeps those
// values in shared memory and loads K after the softmax: no spills (d64 at 128 keys: 255
// registers, no spills either). The default (H100: +7..17% at d128, +16% at d96, d64 below,
// docs/notes/sm80-kernel.md steps 6 and 7); FLARE_SM80_WIDE=0 selects the planner's step. The
// planner keeps counting the blocks of sm80_tile_config: the kernel derives its ranges from its
// own block size, so only how evenly a split count divides the keys depends on it (a split may
// get no block).
FLARE_HD constexpr int sm80_wide_block_n(int head_dim) {
  return head_dim <= 32 ? 0 : head_dim <= 64 ? 128 : head_dim <= 128 ? 64 : 0;
}

// Whether a launch runs the wide step (where one is compiled). d64's 128-key step loses to its
// 64-key step when rows see few keys through a causal or window mask (H100, bf16, one A/B
// call, two rounds: causal 512 -18%, 1024 -12%, 2048 +2..4%, 4096..16k +6..9%, non-causal
// +4..9% at every length); the 64-key step of d96/d128 was faster on every measured shape
// (causal 512 +18%). max_keys: seqlen_k, or max_seqlen_k of a varlen batch (the KV cache
// capacity for a cache launch). A sliding window over long keys takes the wide step although
// its rows see few keys: not measured.
FLARE_HD constexpr bool sm80_wide_step_pays(int head_dim, bool causal_or_window, int max_keys) {
  return head_dim > 64 || !causal_or_window || max_keys >= 2048;
}

// Decode kernel: few query rows (seqlen_q, or the packed query heads of one KV head), so one
// m16 tile of rows per CTA; the 4 warps split every 64-key block (16 keys each) and merge their
// partial softmax states at the end. A multi-stage cp.async pipeline keeps several K/V blocks in
// flight per CTA. Stages are chosen so that 2 CTAs fit on an SM up to d = 192.
constexpr int kSm80DecodeMaxRows = 16;

// Keys of a decode key block that one warp loads (16 consecutive rows). Pages of fewer rows
// make such a group span more than two pages: those launches run the decode kernel's
// SmallPages instance (decode_kernel.cuh, load_group_small_pages).
constexpr int kSm80DecodeWarpKeys = 16;
FLARE_HD constexpr bool sm80_decode_small_pages(bool paged, int page_block_size) {
  return paged && page_block_size < kSm80DecodeWarpKeys;
}

// FP8 K/V (decode_kernel's Fp8 instances): stages hold the 1-byte codes, which the mma steps
// read straight into fragments (decode_fp8.cuh), and Q's fp16 fragments sit in a region of
// their own. A stage holds half the bytes of a 16-bit one, so FP8 keeps more of them to have as
// many bytes in flight: five up to d128 (two blocks more than 16-bit), three at d192, two at
// d256, each within the 99 KB of sm86/sm89/sm120 (d128: 90 KB, two CTAs per H100 SM).
FLARE_HD constexpr int sm80_decode_stages(int head_dim, bool fp8 = false) {
  return fp8 ? (head_dim <= 128 ? 5 : head_dim <= 192 ? 3 : 2) : head_dim <= 128 ? 3 : 2;
}

// K/V rows of the decode stages: where a row is a whole number of 128-byte lines (head_dim a
// multiple of 64) its 16-byte chunks are XOR-swizzled by the row (smem_swizzle.h) and the rows
// are unpadded, so each 8-lane group of a cp.async writes one aligned 128-byte line of shared
// memory; elsewhere (d = 32, 96) rows are padded by 8 elements against ldmatrix bank
// conflicts. Padded 272-byte rows at d = 128 measured 1.34x cuDNN's L2 sector lookups for the
// same DRAM bytes and 86.5% vs 91% DRAM activity (docs/notes/sm80-kernel.md, step 7).
FLARE_HD constexpr bool sm80_decode_kv_swizzled(int head_dim) { return head_dim % 64 == 0; }
FLARE_HD constexpr int sm80_decode_kv_row_bytes(int head_dim) {
  return smem_row_bytes(head_dim, sm80_decode_kv_swizzled(head_dim));
}

// Shared memory of the decode kernel: Q (16 rows padded by 8 elements) + stages x (K + V)
// blocks of 64 rows (2-byte elements; FP8: rows of head_dim codes, plus Q's fp16 fragments,
// 16 x head_dim 2-byte values).
FLARE_HD constexpr int sm80_decode_smem_bytes(int head_dim, bool fp8 = false) {
  return kSm80DecodeMaxRows * (head_dim + 8) * 2 +
         sm80_decode_stages(head_dim, fp8) * 2 * 64 *
             (fp8 ? head_dim : sm80_decode_kv_row_bytes(head_dim)) +
         (fp8 ? kSm80DecodeMaxRows * head_dim * 2 : 0);
}

// Whether the decode kernel is compiled for `head_dim`: up to 256. At d512 its stages of 64-key
// K (1 KB rows) and V blocks would take 209 KB with two stages (over the A100's 163 KB), and its
// warps' 16 x 512 O accumulators do not fit in registers: d512 decode runs on the prefill kernel.
FLARE_HD constexpr bool sm80_has_decode_kernel(int head_dim) { return head_dim <= 256; }

FLARE_HD constexpr int sm80_decode_ctas_per_sm(int head_dim, bool fp8 = false) {
  // 228 KiB of shared memory per SM (sm80/sm90), 1 KiB of it reserved per CTA.
  return 233472 / (sm80_decode_smem_bytes(head_dim, fp8) + 1024) > 4
             ? 4
             : 233472 / (sm80_decode_smem_bytes(head_dim, fp8) + 1024);
}

FLARE_HD constexpr TileConfig sm80_decode_tile_config(int head_dim, bool fp8 = false) {
  return TileConfig{kSm80DecodeMaxRows, 64, 4, sm80_decode_stages(head_dim, fp8),
                    sm80_decode_ctas_per_sm(head_dim, fp8)};
}

// CTA slots per SM that the split heuristic counts for the decode kernel: one, although 2-4
// of its CTAs fit. It is bandwidth-bound; at batch 1 (d128, 8 KV heads, bf16, H100) 16 forced
// splits beat the 29 chosen over two slots per SM by 4-6% at 32k/128k keys and tied at 8k
// (docs/notes/sm80-kernel.md, step 7).
FLARE_HD constexpr int sm80_decode_split_slots_per_sm() { return 1; }

// The kernel a launch runs: decode when every (batch, head) has at most 16 query rows.
FLARE_HD constexpr bool sm80_use_decode_kernel(int max_seqlen_q) {
  return max_seqlen_q <= kSm80DecodeMaxRows;
}
FLARE_HD constexpr TileConfig sm80_kernel_tile(int head_dim, int max_seqlen_q) {
  return sm80_use_decode_kernel(max_seqlen_q) && sm80_has_decode_kernel(head_dim)
             ? sm80_decode_tile_config(head_dim)
             : sm80_tile_config(head_dim);
}

// Shared memory per block of the mma.sync kernels, against the device's opt-in limit: 227 KB on
// H100 and 163 KB on A100 hold every variant, the 99 KB of sm86/sm89/sm120 the prefill kernel
// of every head dim up to 256 (d256 padded: exactly 99 KB; d512 needs 114 KB) but not every
// decode kernel. Prefill: the
// planner's single-buffer step, the smallest prefill variant (the launcher takes the wide or
// the pipelined step only where it fits too). Decode: its own stages. Q and K rows are
// head_dim wide, V rows sm80_kernel_head_dim_v wide.
FLARE_HD constexpr int sm80_prefill_min_smem_bytes(int head_dim) {
  const TileConfig tile = sm80_tile_config(head_dim);
  return (tile.block_m + tile.block_n) * smem_row_bytes(head_dim, false) +
         tile.block_n * smem_row_bytes(sm80_kernel_head_dim_v(head_dim), false);
}

// Whether `bytes` of shared memory per block fit a device's opt-in limit (0: no known limit).
FLARE_HD constexpr bool smem_fits(int bytes, int smem_optin) {
  return smem_optin <= 0 || bytes <= smem_optin;
}

// The mma.sync kernel a launch runs within `smem_optin` bytes per block (0: no known limit):
// the decode kernel where the launch has its shape (decode_shape: at most 16 query rows per
// (batch, head), or the planner's packed GQA decode rows) and it fits, else the prefill kernel
// (which takes any launch, decode shapes included) where it fits, else none (the launch is
// refused before anything is written; no GPU of sm80 or newer offers that little).
enum class Sm80Kernel { kDecode, kPrefill, kNone };
FLARE_HD constexpr Sm80Kernel sm80_fitting_kernel(int head_dim, bool decode_shape,
                                                  int smem_optin) {
  return decode_shape && sm80_has_decode_kernel(head_dim) &&
                 smem_fits(sm80_decode_smem_bytes(head_dim), smem_optin)
             ? Sm80Kernel::kDecode
         : smem_fits(sm80_prefill_min_smem_bytes(head_dim), smem_optin) ? Sm80Kernel::kPrefill
                                                                        : Sm80Kernel::kNone;
}

// Head dimensions with compiled kernels (32, 64, 96, 128, 192, 256, 512); others are padded up
// to the next one (257..512 run on the d512 kernel, its columns past head_dim zero-filled).
FLARE_HD constexpr int padded_head_dim(int head_dim) {
  return head_dim <= 32 ? 32 : head_dim <= 64 ? 64 : head_dim <= 96 ? 96
       : head_dim <= 128 ? 128 : head_dim <= 192 ? 192 : head_dim <= 256 ? 256 : 512;
}

}  // namespace flare
