// Hopper helpers around wgmma: the fences and waits of the async warpgroup MMA, the swizzled
// tile address, mbarriers, stmatrix and named barriers (the descriptors are in wgmma_desc.h).
#pragma once
#include <cuda/ptx>

#include <cstdint>

#include "kernels/sm90/wgmma_desc.h"

namespace flare {
namespace sm90 {

// Tiles live in shared memory as [cols / 64][rows][64] 16-bit elements: each row of an atom is
// 128 bytes, and 16-byte chunk c of row r sits at chunk c ^ (r % 8) (the 128B swizzle, which
// needs every atom 1024-byte aligned). Byte offset of (row, 16-byte chunk) in such a tile:
__device__ __forceinline__ uint32_t swizzled_offset(int row, int chunk, int rows) {
  return uint32_t((chunk >> 3) * rows * 128 + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Keeps the compiler from moving accesses of accumulator registers across a wgmma wait.
template <int R>
__device__ __forceinline__ void fence_registers(float (&r)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

template <int R, int C>
__device__ __forceinline__ void fence_registers(uint32_t (&r)[R][C]) {
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int j = 0; j < C; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
}

// Shared memory written by the generic proxy (cp.async, st.shared) must be fenced before the
// async proxy (wgmma) reads it.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

}  // namespace sm90
}  // namespace flare

namespace flare {
namespace sm90 {

// mbarrier (shared::cta) helpers for producer/consumer pipelines.
__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Arrives on `bar` once every cp.async this thread issued before has landed (the arrival was
// counted in the barrier's expected count: .noinc).
__device__ __forceinline__ void cp_async_mbarrier_arrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// Blocks until the phase of `bar` with parity `parity` has completed. The retry loop lives
// inside the asm (labels are local to its { } block): a C++ loop around try_wait makes ptxas
// serialise the wgmmas of the function.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

// Arrives on `bar` and adds `bytes` to the transaction count its phase waits for (the bytes
// the TMA copies issued next will complete on it).
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  cuda::ptx::mbarrier_arrive_expect_tx(
      cuda::ptx::sem_release, cuda::ptx::scope_cta, cuda::ptx::space_shared,
      static_cast<uint64_t*>(__cvta_shared_to_generic(bar)), bytes);
}

// TMA: one box of the 4-D tensor `map` at coordinates (c0..c3, innermost first) into shared
// memory at `dst`, completing `bytes` on the mbarrier `bar`.
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const void* map, int c0, int c1,
                                            int c2, int c3, uint32_t bar) {
  const int32_t coords[4] = {c0, c1, c2, c3};
  cuda::ptx::cp_async_bulk_tensor(cuda::ptx::space_cluster, cuda::ptx::space_global,
                                  __cvta_shared_to_generic(dst), map, coords,
                                  static_cast<uint64_t*>(__cvta_shared_to_generic(bar)));
}

// TMA multicast: the box at (c0..c3) of `map` into shared memory at offset `dst` of every CTA
// of the cluster in `cta_mask`, completing the bytes each receives on the mbarrier at offset
// `bar` of that CTA.
__device__ __forceinline__ void tma_load_4d_multicast(uint32_t dst, const void* map, int c0,
                                                      int c1, int c2, int c3, uint32_t bar,
                                                      uint16_t cta_mask) {
  const int32_t coords[4] = {c0, c1, c2, c3};
  cuda::ptx::cp_async_bulk_tensor(cuda::ptx::space_cluster, cuda::ptx::space_global,
                                  __cvta_shared_to_generic(dst), map, coords,
                                  static_cast<uint64_t*>(__cvta_shared_to_generic(bar)),
                                  cta_mask);
}

// Thread blocks clusters. This CTA's rank in its cluster.
__device__ __forceinline__ uint32_t cluster_cta_rank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
}
// Arrives on the mbarrier at shared-memory offset `bar` of the CTA of rank `cta_rank` in this
// cluster (this CTA's own included). The arrival's default semantics (release at CTA scope):
// it only tells the other CTA's producer that this warp's wgmma reads of the stage are done
// (completed at their wait), before that producer's TMA overwrites it; a cluster-scope release
// would add a GPU-wide memory barrier to every release.
__device__ __forceinline__ void mbarrier_arrive_cluster(uint32_t bar, uint32_t cta_rank) {
  asm volatile(
      "{\n.reg .b32 remote;\n"
      "mapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n}\n" ::"r"(bar),
      "r"(cta_rank)
      : "memory");
}
// Every thread of every CTA of the cluster: the barrier initialisations (fenced) before any
// CTA's remote arrivals or multicast copies; at the end, no CTA exits while the others may
// still arrive on its barriers.
__device__ __forceinline__ void cluster_sync() {
  asm volatile(
      "barrier.cluster.arrive.release.aligned;\n"
      "barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void fence_mbarrier_init_cluster() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// stmatrix.x4 (sm_90): four 8 x 8 matrices of 16-bit elements from the warp's registers to
// shared memory; lane 8 m + r gives the address of row r (16 bytes) of matrix m, lane 4 g + q's
// r_m holds elements 2q and 2q + 1 of row g of matrix m (the ldmatrix fragment).
__device__ __forceinline__ void stmatrix_x4(uint32_t addr, uint32_t r0, uint32_t r1, uint32_t r2,
                                            uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n"
               ::"r"(addr), "r"(r0), "r"(r1), "r"(r2), "r"(r3)
               : "memory");
}

// Named barriers (ids 1..15; 0 is __syncthreads): `threads` counts the waiting and the
// arriving threads together.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}

}  // namespace sm90
}  // namespace flare
