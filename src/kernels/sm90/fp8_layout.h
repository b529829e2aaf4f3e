// Layouts of the Hopper FP8 prefill kernel (fwd_fp8_sm90.cuh): plain index arithmetic, shared by
// the kernel and the CPU tests (tests/cpu/test_fp8_layout.cpp), which check it against the PTX
// ISA's fragment tables.
//
// Shared memory. Every operand of the e4m3 wgmma is K-major: Q [rows][d], K [keys][d] and V^T
// [dv][keys] as rows of bytes. A tile with `row_bytes`-byte K extent is stored as
// [row_bytes / atom][rows][atom] with atom = min(row_bytes, 128) bytes, swizzled: 16-byte chunk
// c of row r sits at chunk c ^ ((r * atom / 128) % (atom / 16)) (the 128-byte swizzle for
// 128-byte atoms, the 64-byte swizzle for 64-byte ones: the hardware XORs address bits [4, 4 +
// log2(atom / 16)) with bits [7, ...)). Atoms are 1024-byte aligned.
//
// P as the A operand of O += P V (k32, from registers). Per warp, the wgmma m64nNk32 8-bit A
// fragment (PTX ISA, "wgmma .m64nNk32 register fragment A", as mma.m16n8k32's): lane
// (g = lane / 4, t = lane % 4) holds four .b32 registers of four codes each; code i (0 .. 15,
// register i / 4, byte i % 4) is at row g + 8 ((i / 4) % 2) and column 4 t + i % 4 + 16 (i / 8).
// The fp32 S accumulator (m64nN, per warp 16 rows) holds at index 4 j + 2 r + e row g + 8 r,
// column 8 j + 2 t + e. Both rows of a code match the accumulator's; the columns do not.
// Instead of moving bytes between lanes, the kernel packs each lane's own probabilities and
// stores V^T with its keys permuted within every 32-key step: A column kappa of a step holds key
// fp8_p_key(kappa) of it, and V^T's column kappa holds that key's V row.
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace flare {
namespace sm90 {

// Bytes of a swizzle atom's row for a tile whose rows have row_bytes (64 or a multiple of 128).
FLARE_HD int fp8_atom_bytes(int row_bytes) { return row_bytes < 128 ? row_bytes : 128; }

// Byte offset of 16-byte chunk `chunk` (0 .. row_bytes / 16 - 1) of row `row` in a tile of
// `rows` rows of row_bytes (the layout above).
// Atoms are 128 or 64 bytes (8 or 4 chunks): shifts and masks, so that the 128-byte case compiles
// to the 16-bit kernels' swizzled_offset (wgmma_common.cuh) exactly.
FLARE_HD uint32_t k_major_tile_offset(int row, int chunk, int rows, int row_bytes) {
  const int atom = fp8_atom_bytes(row_bytes);
  const int log2_chunks = atom == 128 ? 3 : 2;  // chunks per atom row: 8 or 4
  const int mask = (1 << log2_chunks) - 1;
  const int swz = (atom == 128 ? row : row >> 1) & mask;  // ((row * atom) >> 7) % chunks
  return uint32_t((chunk >> log2_chunks) * rows * atom + row * atom +
                  (((chunk & mask) ^ swz) << 4));
}

// wgmma descriptor of a K-major tile (the layout above) starting at smem_addr: 8-row groups
// are 8 atom rows apart; layout type 1 = 128-byte swizzle, 2 = 64-byte swizzle (bits 62-63);
// the leading offset is unused by swizzled K-major layouts whose k step lies inside an atom row.
FLARE_HD uint64_t fp8_desc_k_major(uint32_t smem_addr, int row_bytes) {
  const int atom = fp8_atom_bytes(row_bytes);
  uint64_t d = 0;
  d |= uint64_t((smem_addr >> 4) & 0x3FFF);
  d |= uint64_t(1) << 16;
  d |= uint64_t(((8u * uint32_t(atom)) >> 4) & 0x3FFF) << 32;
  d |= uint64_t(atom == 128 ? 1 : 2) << 62;
  return d;
}

// Byte offset, from the tile's start, of the k32 step `ks` of a K-major tile of `rows` rows of
// row_bytes: its atom and its 32 bytes within the atom row.
FLARE_HD uint32_t fp8_k_step_offset(int ks, int rows, int row_bytes) {
  const int atom = fp8_atom_bytes(row_bytes);
  const int steps_per_atom = atom / 32;
  return uint32_t((ks / steps_per_atom) * rows * atom + (ks % steps_per_atom) * 32);
}

// The 8-bit A fragment (see above): row (0 .. 15 within the warp's 16) and column (0 .. 31
// within the k32 step) of lane `lane`'s register `reg` (0 .. 3), byte `byte` (0 .. 3).
FLARE_HD int fp8_a_row(int lane, int reg, int /*byte*/) { return lane / 4 + 8 * (reg % 2); }
FLARE_HD int fp8_a_col(int lane, int reg, int byte) { return 4 * (lane % 4) + byte + 16 * (reg / 2); }

// The fp32 accumulator of m64nN (per warp): row (0 .. 15) and column of lane `lane`'s index i.
FLARE_HD int acc_row(int lane, int i) { return lane / 4 + 8 * ((i / 2) % 2); }
FLARE_HD int acc_col(int lane, int i) { return 8 * (i / 4) + 2 * (lane % 4) + i % 2; }

// Which accumulator index of S goes into byte `byte` of register `reg` of k32 step `kk` of P:
// the lane's own values of n8 tiles 4 kk + 2 (reg / 2) and the next, row reg % 2, columns e = 0, 1.
FLARE_HD int fp8_p_acc_index(int kk, int reg, int byte) {
  const int j = 4 * kk + 2 * (reg / 2) + byte / 2;
  return 4 * j + 2 * (reg % 2) + byte % 2;
}

// The key (0 .. 31 within a 32-key step) that A column kappa of the step holds, and its inverse.
// Within each 16 columns, kappa = 4 a + 2 c + b holds key 2 a + b + 8 c.
FLARE_HD int fp8_p_key(int kappa) {
  const int k = kappa & 15;
  return (kappa & 16) + 2 * (k >> 2) + (k & 1) + 8 * ((k >> 1) & 1);
}
FLARE_HD int fp8_p_slot(int key) {
  const int k = key & 15;
  return (key & 16) + 4 * ((k >> 1) & 3) + 2 * (k >> 3) + (k & 1);
}

// Tiles of the FP8 prefill kernel: 128 query rows (two consumer warpgroups of 64), key blocks
// of 128 keys up to head dim 128 and of 64 at head dim 256 (its 128 O accumulators per thread
// leave room for 32 of S, not 64). V^T's rows hold a key block: 128 or 64 bytes.
constexpr int kSm90Fp8BlockM = 128;
FLARE_HD constexpr int sm90_fp8_block_n(int head_dim) { return head_dim <= 128 ? 128 : 64; }

// __byte_perm(x, y, s): byte i of the result is byte (s >> 4 i) & 7 of the 8 bytes y:x.
FLARE_HD uint32_t fp8_byte_perm(uint32_t x, uint32_t y, uint32_t s) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(x, y, s);
#else
  const uint64_t xy = (uint64_t(y) << 32) | x;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= uint32_t((xy >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
  return r;
#endif
}

// The 4 x 4 byte transpose of the V^T store: in[k] holds byte b of column b of key k
// (k, b < 4); out[b] holds byte k of key k of column b.
FLARE_HD void fp8_transpose_4x4(const uint32_t (&in)[4], uint32_t (&out)[4]) {
  const uint32_t lo01 = fp8_byte_perm(in[0], in[1], 0x5140);  // k0b0 k1b0 k0b1 k1b1
  const uint32_t hi01 = fp8_byte_perm(in[0], in[1], 0x7362);  // k0b2 k1b2 k0b3 k1b3
  const uint32_t lo23 = fp8_byte_perm(in[2], in[3], 0x5140);
  const uint32_t hi23 = fp8_byte_perm(in[2], in[3], 0x7362);
  out[0] = fp8_byte_perm(lo01, lo23, 0x5410);
  out[1] = fp8_byte_perm(lo01, lo23, 0x7632);
  out[2] = fp8_byte_perm(hi01, hi23, 0x5410);
  out[3] = fp8_byte_perm(hi01, hi23, 0x7632);
}

// The V^T store works on groups of four keys whose columns in V^T are adjacent (one 4-byte
// word of a V^T row): group `grp` (0 .. block_n / 4 - 1) holds keys fp8_vt_group_key(grp, k),
// k < 4, at V^T columns 4 grp + k. Within its 32-key step, group w = 4 h + a takes keys
// 16 h + {2 a, 2 a + 1, 2 a + 8, 2 a + 9}: the slots fp8_p_slot gives them.
FLARE_HD int fp8_vt_group_key(int grp, int k) {
  const int step = grp / 8, h = (grp % 8) / 4, a = grp % 4;
  return 32 * step + 16 * h + 2 * a + (k & 1) + 8 * (k >> 1);
}

// Byte offset of group grp's 4-byte word in row vt_row (a V column) of a V^T tile of head_dim
// rows of block_n bytes.
FLARE_HD uint32_t fp8_vt_word_offset(int grp, int vt_row, int head_dim, int block_n) {
  const int col = 4 * grp;
  return k_major_tile_offset(vt_row, col / 16, head_dim, block_n) + uint32_t(col % 16);
}

// The warp-specialised kernel's V^T store (transpose_v_fp8, fp8_ops_sm90.cuh): V's rows of a
// block in a staging tile (K-major, [block_n keys][head_dim bytes]) into a V^T stage ([head_dim
// rows][block_n bytes], keys in slot order) by ldmatrix and stmatrix, which move 8 x 8 matrices
// of 16-bit elements between shared memory and a warp's registers (PTX ISA: lane 8 m + r gives
// the address of row r of matrix m; lane 4 g + q holds elements 2q, 2q + 1 of row g, or with
// .trans elements (2q, g) and (2q + 1, g) of the matrix as stored).
//
// Op o moves 16 keys x 32 columns: 16-key group h = o / (head_dim / 32) (V^T slots 16 h ..
// 16 h + 15), 16-column chunks 2 c2 and 2 c2 + 1 (c2 = o % (head_dim / 32)).
// - ldmatrix.x4.trans, matrix m = 2 i + j: keys 16 h + 8 j .. + 7 (rows) of chunk 2 c2 + i. Lane
//   (g, q) receives, per matrix, bytes (key 2q, col 2g), (2q, 2g + 1), (2q + 1, 2g), (2q + 1, 2g + 1)
//   of the matrix's keys and chunk.
// - Per chunk i, byte_perm of matrices j = 0 and 1 with 0x6420 gives column 2g's keys 2q,
//   2q + 1, 8 + 2q, 9 + 2q, i.e. slots 4q .. 4q + 3 of the group (fp8_p_key); 0x7531 column
//   2g + 1's.
// - stmatrix.x4, matrix m = 2 i + s: row r is V^T row 16 (2 c2 + i) + 2 r + (s ^ (r >= 4)), its
//   16 bytes the group's slots; lane (g, q) gives word q of row g: its even column where
//   s ^ (g >= 4) is 0, else its odd one. (Mixing the parities within a matrix puts its eight
//   rows on eight distinct 16-byte bank groups under both swizzles.)
FLARE_HD constexpr int fp8_vt_ops(int head_dim, int block_n) {
  return (block_n / 16) * (head_dim / 32);
}

// Byte offset, in the staging tile, of the row that lane `lane` addresses for op o's ldmatrix.
FLARE_HD uint32_t fp8_vt_load_offset(int o, int lane, int head_dim, int block_n) {
  const int pairs = head_dim / 32, h = o / pairs, c2 = o % pairs, m = lane / 8;
  const int key = 16 * h + 8 * (m & 1) + lane % 8;
  return k_major_tile_offset(key, 2 * c2 + (m >> 1), block_n, head_dim);
}

// Byte offset, in the V^T tile, of the 16-byte row piece that lane `lane` addresses for op o's
// stmatrix.
FLARE_HD uint32_t fp8_vt_store_offset(int o, int lane, int head_dim, int block_n) {
  const int pairs = head_dim / 32, h = o / pairs, c2 = o % pairs, m = lane / 8, r = lane % 8;
  const int row = 16 * (2 * c2 + (m >> 1)) + 2 * r + ((m & 1) ^ (r >= 4 ? 1 : 0));
  return k_major_tile_offset(row, h, head_dim, block_n);
}

// The byte_perm selector that gives lane `lane` its word of stmatrix matrix 2 i + s (s = 0, 1)
// from the two ldmatrix matrices of chunk i.
FLARE_HD uint32_t fp8_vt_select(int lane, int s) {
  return (s ^ (lane / 4 >= 4 ? 1 : 0)) != 0 ? 0x7531u : 0x6420u;
}

}  // namespace sm90
}  // namespace flare
