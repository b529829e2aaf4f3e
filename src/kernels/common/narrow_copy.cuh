// Element-granular copies of the narrow launches (common/narrow.h): the unit of every loader and
// store of the mma.sync kernels is one 8-element (16-byte) chunk of a row; where the chunk's
// global address is not 16-byte aligned, or the row ends inside it (a head dim that is not a
// multiple of 8), these move its elements one by one instead. Shared memory keeps the fast
// path's layout: a chunk is still written there as one 16-byte st.shared, zero past the row's
// end, so the MMA code after the loads does not know which path filled its tiles.
//
// The loads are synchronous (registers, then st.shared): the stores are visible to the other
// threads after the same __syncthreads / __syncwarp that publishes the fast path's cp.async
// data (the waits on cp.async groups then have nothing of this chunk to wait for).
#pragma once
#include <cstdint>

#include "kernels/common/shared_access.cuh"

namespace flare {

// Elements [src, src + n) (0 <= n <= 8) as one chunk in registers, zeros after: 2-byte loads.
template <typename T>
__device__ __forceinline__ uint4 narrow_load_elements(const T* src, int n) {
  static_assert(sizeof(T) == 2, "fp16 / bf16 elements");
  const unsigned short* s = reinterpret_cast<const unsigned short*>(src);
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t lo = 2 * i < n ? uint32_t(__ldg(s + 2 * i)) : 0u;
    const uint32_t hi = 2 * i + 1 < n ? uint32_t(__ldg(s + 2 * i + 1)) : 0u;
    w[i] = lo | (hi << 16);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// Elements [src, src + n) (0 <= n <= 8) into the 16-byte shared chunk at `smem`, zeros after.
template <typename T>
__device__ __forceinline__ void narrow_load_chunk(uint32_t smem, const T* src, int n) {
  st_shared_16(smem, narrow_load_elements(src, n));
}

// The first n (<= 8) elements of a chunk held as four packed words, stored element by element.
template <typename T>
__device__ __forceinline__ void narrow_store_chunk(T* dst, const uint4& chunk, int n) {
  static_assert(sizeof(T) == 2, "fp16 / bf16 elements");
  unsigned short* d = reinterpret_cast<unsigned short*>(dst);
  const uint32_t w[4] = {chunk.x, chunk.y, chunk.z, chunk.w};
#pragma unroll
  for (int e = 0; e < 8; ++e)
    if (e < n) d[e] = static_cast<unsigned short>(w[e / 2] >> (16 * (e % 2)));
}

// Elements of a chunk that lie before the row's end `head_dim` (col: the chunk's first column).
__device__ __forceinline__ int chunk_elements(int col, int head_dim) {
  const int n = head_dim - col;
  return n < 0 ? 0 : n > 8 ? 8 : n;
}

}  // namespace flare
