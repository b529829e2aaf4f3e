// The shared memory of the warp-specialised Hopper kernel and the mbarrier rings that hand its
// buffers between the producer warpgroup and the consumer warpgroups.
//
// Protocol of a ring of `Stages` buffers. Uses are counted from 0 over the CTA's lifetime, by the
// producer and by every consumer thread in the same order: use n lives in stage n % Stages and
// is phase (n / Stages) of that stage's two barriers.
//  - full(s): completes when the producer's copies into the stage have landed: one arrival per
//    producer thread (TMA: thread 0's arrive.expect_tx plus the copied bytes; cp.async: an
//    arrival of each thread once its copies land), plus any extra arrivals the ring was
//    initialised with (the dynamic scheduler's tile publication on the Q ring).
//  - empty(s): completes when every consumer thread has released the stage (its last wgmma
//    reading it is done). The producer waits for it before refilling the stage, from use Stages
//    on.
// No CTA barrier is used after the initialisation, so the consumer warpgroups drift apart.
//
// Clusters (ClusterM > 1 CTAs sharing every K/V stage: each CTA's producer copies its part of a
// stage into all of them by TMA multicast, each copy completing on the receiving CTA's full
// barrier, which expects the whole stage's bytes): a stage may be refilled only once the
// consumers of every CTA have released it: each consumer thread arrives on the empty barrier
// of one CTA (thread i on rank i % ClusterM's), so that every warp's release reaches every CTA.
// (One arrival per warp and CTA, by lanes 0 / 1, took a lane-conditional branch while P V was
// in flight: ptxas then serialised every wgmma, C7513.)
#pragma once
#include <cstdint>

#include "kernels/sm80/mma_sm80.cuh"
#include "kernels/sm90/wgmma_common.cuh"

namespace flare {
namespace sm90 {

// A ring of Stages buffers' full/empty barrier pairs: full(s) at full0 + 8 s, empty(s) at
// empty0 + 8 s (shared-memory addresses of 8-byte mbarriers).
template <int Stages, int ClusterM = 1>
struct StageRing {
  uint32_t full0, empty0;

  // Arrivals each empty barrier counts: one per consumer thread (with a cluster, 1 / ClusterM
  // of each CTA's consumer threads).
  static constexpr int empty_arrivals(int consumer_threads) { return consumer_threads; }

  __device__ __forceinline__ uint32_t full(int s) const { return full0 + 8 * s; }
  __device__ __forceinline__ uint32_t empty(int s) const { return empty0 + 8 * s; }
  static __device__ __forceinline__ int stage(int n) { return n % Stages; }
  static __device__ __forceinline__ uint32_t phase(int n) { return (n / Stages) & 1; }

  // By one thread, before the CTA barrier that precedes any use.
  __device__ __forceinline__ void init(int full_arrivals, int empty_arrivals) const {
    for (int s = 0; s < Stages; ++s) {
      mbarrier_init(full(s), full_arrivals);
      mbarrier_init(empty(s), empty_arrivals);
    }
  }
  // Producer: waits until the consumers have released use n - Stages of use n's stage.
  __device__ __forceinline__ void producer_acquire(int n) const {
    if (n >= Stages) mbarrier_wait(empty(stage(n)), ((n / Stages) + 1) & 1);
  }
  // Consumer: waits until use n's data has landed.
  __device__ __forceinline__ void consumer_wait(int n) const {
    mbarrier_wait(full(stage(n)), phase(n));
  }
  // Consumer: this thread is done with use n's buffer. With a cluster it arrives on the barrier
  // of the CTA of rank threadIdx.x % ClusterM: the wgmma reads are warpgroup-wide, so a
  // warpgroup's arrivals on each CTA say that all of its reads are done.
  __device__ __forceinline__ void consumer_release(int n) const {
    if constexpr (ClusterM > 1)
      mbarrier_arrive_cluster(empty(stage(n)), threadIdx.x % ClusterM);
    else
      mbarrier_arrive(empty(stage(n)));
  }
};

// Shared memory of the warp-specialised kernel (traits Tr): the Q tile, Tr::kStages K stages,
// Tr::kStages V stages, Tr::kVStaging V staging tiles (FP8), the split-O exchange buffers
// (Tr::kSmemExchange bytes, d512 only), then the barriers, from the first 1024-byte boundary of
// the dynamic window (the 128-byte swizzle's atoms must be 1024-byte aligned). Barriers, 8
// bytes each:
// full/empty of Q, full[kStages] of K, full[kStages] of V, empty[kStages] of K, empty[kStages]
// of V, full[kVStaging] of the V staging tiles (FP8). Without Tr::kSeparateKV the K ring covers
// K and V of a stage and the V ring is unused.
template <typename Tr>
struct Sm90WsSmem {
  uint32_t q, k0, v0;  // Q; K stage s at k0 + s * kSmemKV; V stage s at v0 + s * kSmemKV
  uint32_t v_staging0;  // FP8: V staging tile j at v_staging0 + j * kSmemKV
  uint32_t staging_full0;  // FP8: staging tile j's full barrier at staging_full0 + 8 j
  using KvRing = StageRing<Tr::kStages, Tr::kClusterM>;
  StageRing<1> q_ring;  // each CTA's own
  KvRing k_ring, v_ring;

  __device__ __forceinline__ explicit Sm90WsSmem(unsigned char* raw) {
    q = (sm80::smem_addr(raw) + 1023u) & ~1023u;
    k0 = q + Tr::kSmemQ;
    v0 = k0 + Tr::kStages * Tr::kSmemKV;
    v_staging0 = v0 + Tr::kStages * Tr::kSmemKV;
    const uint32_t bar0 = v_staging0 + Tr::kVStaging * Tr::kSmemKV + Tr::kSmemExchange;
    q_ring = StageRing<1>{bar0, bar0 + 8};
    k_ring = KvRing{bar0 + 16, bar0 + 16 + 16 * Tr::kStages};
    v_ring = KvRing{bar0 + 16 + 8 * Tr::kStages, bar0 + 16 + 24 * Tr::kStages};
    staging_full0 = bar0 + 16 + 32 * Tr::kStages;
  }
  __device__ __forceinline__ uint32_t k_stage(int s) const { return k0 + s * Tr::kSmemKV; }
  __device__ __forceinline__ uint32_t v_stage(int s) const { return v0 + s * Tr::kSmemKV; }
  __device__ __forceinline__ uint32_t v_staging(int j) const {
    return v_staging0 + j * Tr::kSmemKV;
  }
  // FP8: completes when a fill of staging tile j has landed, one arrival per producer thread
  // (as a ring's full barrier; the producer threads themselves wait on it). Use n of the
  // staging tiles is tile n % kVStaging, phase (n / kVStaging) & 1.
  __device__ __forceinline__ uint32_t staging_full(int j) const { return staging_full0 + 8 * j; }
  // Split O: consumer warpgroup wg's exchange buffer of parity `parity` (after the V stages).
  __device__ __forceinline__ uint32_t exchange(int wg, int parity) const {
    return v_staging0 + Tr::kVStaging * Tr::kSmemKV +
           uint32_t(2 * parity + wg) * Tr::kSmemExchangeBuffer;
  }

  // By one thread. Full barriers count `producer_threads` arrivals (the Q ring's full barrier
  // `q_full_arrivals`), empty barriers the consumers' releases (KvRing::empty_arrivals).
  __device__ __forceinline__ void init_barriers(int producer_threads, int q_full_arrivals) const {
    q_ring.init(q_full_arrivals, Tr::kConsumerThreads);
    constexpr int kEmpty = KvRing::empty_arrivals(Tr::kConsumerThreads);
    for (int s = 0; s < Tr::kStages; ++s) {
      mbarrier_init(k_ring.full(s), producer_threads);
      mbarrier_init(k_ring.empty(s), kEmpty);
      if (Tr::kSeparateKV) {
        mbarrier_init(v_ring.full(s), producer_threads);
        mbarrier_init(v_ring.empty(s), kEmpty);
      }
    }
    for (int j = 0; j < Tr::kVStaging; ++j) mbarrier_init(staging_full(j), producer_threads);
  }
};

}  // namespace sm90
}  // namespace flare
