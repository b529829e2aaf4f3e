// flare context parallelism: the schedule (host only, header-only, no CUDA or NCCL): which
// (query chunk, key chunk) pairs each rank computes at each step of the ring, with which
// mask, and the flare_mha_fwd calls that cover them.
//
// Zig-zag sharding: the sequence of S rows is cut into 2R chunks of c = S / (2R) rows; rank r
// holds chunks r and 2R-1-r (its "halves" 0 and 1, concatenated: 2c local rows) of Q, K and
// V. With a causal mask every rank then has the same amount of work (one early, one late
// chunk).
//
// Ring: at step t (0 <= t < R) rank r holds the K/V shard of rank (r - t) mod R and sends it
// on to rank r + 1. Pair (q chunk a, kv chunk b) with a causal mask is Full when b < a,
// Causal (the diagonal block: a square causal mask) when b == a, and Skip when b > a;
// without a causal mask every pair is Full.
//
// All-gather: every rank gathers all K/V in sequence order and runs its own query chunks
// against the key prefix they see.
// Users shard their sequence with zigzag_chunk / global_row; flare_cp.hpp runs the rest.
#ifndef FLARE_CP_SCHEDULE_HPP
#define FLARE_CP_SCHEDULE_HPP
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace flare {
namespace cp {

enum class PairMask { Skip = 0, Full = 1, Causal = 2 };

// Global chunk index of half h (0 or 1) of rank r among 2 * world chunks.
inline int zigzag_chunk(int rank, int world, int half) {
  return half == 0 ? rank : 2 * world - 1 - rank;
}

// The rank whose K/V shard rank `rank` holds at ring step `step`.
inline int ring_source_rank(int rank, int world, int step) {
  return ((rank - step) % world + world) % world;
}

inline PairMask pair_mask(int q_chunk, int kv_chunk, bool causal) {
  if (!causal || kv_chunk < q_chunk) return PairMask::Full;
  return kv_chunk == q_chunk ? PairMask::Causal : PairMask::Skip;
}

// One (query half, key half) pair of a step, in local halves and global chunks.
struct CpPair {
  int q_half, kv_half;
  int q_chunk, kv_chunk;
  PairMask mask;
};

// The four pairs of ring step `step` on rank `rank` (Skip ones included).
inline std::vector<CpPair> ring_step_pairs(int rank, int world, int step, bool causal) {
  const int src = ring_source_rank(rank, world, step);
  std::vector<CpPair> pairs;
  for (int qh = 0; qh < 2; ++qh)
    for (int kh = 0; kh < 2; ++kh) {
      const int a = zigzag_chunk(rank, world, qh), b = zigzag_chunk(src, world, kh);
      pairs.push_back({qh, kh, a, b, pair_mask(a, b, causal)});
    }
  return pairs;
}

// One flare_mha_fwd call: query rows [q_begin, q_begin + q_rows) of the local shard against
// key rows [kv_begin, kv_begin + kv_rows) of the K/V buffer (ring: the shard held at the
// step; all-gather: the whole sequence). causal uses flare's bottom-right aligned mask.
struct CpCall {
  int q_begin, q_rows;
  int kv_begin, kv_rows;
  bool causal;
};

inline bool operator==(const CpCall& a, const CpCall& b) {
  return a.q_begin == b.q_begin && a.q_rows == b.q_rows && a.kv_begin == b.kv_begin &&
         a.kv_rows == b.kv_rows && a.causal == b.causal;
}

// Covers the pairs of one step with as few calls as possible; the calls of a step have
// disjoint query rows (one call per query half, the two merged when they form one call).
// Throws std::logic_error for a pair set no call can express (never produced by the ring).
inline std::vector<CpCall> calls_for_pairs(const std::vector<CpPair>& pairs, int chunk_rows) {
  const int c = chunk_rows;
  PairMask m[2][2] = {{PairMask::Skip, PairMask::Skip}, {PairMask::Skip, PairMask::Skip}};
  for (const CpPair& p : pairs) m[p.q_half][p.kv_half] = p.mask;
  std::vector<CpCall> per_half;
  for (int qh = 0; qh < 2; ++qh) {
    const PairMask a = m[qh][0], b = m[qh][1];
    const int q0 = qh * c;
    if (a == PairMask::Skip && b == PairMask::Skip) continue;
    if (a != PairMask::Skip && b != PairMask::Skip) {
      // Keys [0, 2c): Full+Full is unmasked; Full+Causal is the bottom-right causal mask of
      // c query rows over 2c keys (all of half 0, half 1 up to the diagonal).
      if (a == PairMask::Full && b == PairMask::Full)
        per_half.push_back({q0, c, 0, 2 * c, false});
      else if (a == PairMask::Full && b == PairMask::Causal)
        per_half.push_back({q0, c, 0, 2 * c, true});
      else
        throw std::logic_error("cp schedule: key half 0 causal with key half 1 visible");
    } else {
      const int kh = a != PairMask::Skip ? 0 : 1;
      per_half.push_back({q0, c, kh * c, c, m[qh][kh] == PairMask::Causal});
    }
  }
  if (per_half.size() == 2) {
    const CpCall& x = per_half[0];
    const CpCall& y = per_half[1];
    // Same unmasked keys for both halves: one call over all 2c query rows.
    if (!x.causal && !y.causal && x.kv_begin == y.kv_begin && x.kv_rows == y.kv_rows)
      return {{0, 2 * c, x.kv_begin, x.kv_rows, false}};
    // Half 0 causal over keys [0, c), half 1 causal over [0, 2c): the square causal mask of
    // the whole local shard.
    if (x.causal && y.causal && x.kv_begin == 0 && x.kv_rows == c && y.kv_begin == 0 &&
        y.kv_rows == 2 * c)
      return {{0, 2 * c, 0, 2 * c, true}};
  }
  return per_half;
}

inline std::vector<CpCall> ring_step_calls(int rank, int world, int step, bool causal,
                                           int chunk_rows) {
  return calls_for_pairs(ring_step_pairs(rank, world, step, causal), chunk_rows);
}

// All-gather: calls of rank `rank` against the K/V of the whole sequence (in sequence order,
// world * 2 * chunk_rows rows). Causal: each query half sees the key prefix up to its chunk
// (bottom-right alignment puts its diagonal at the chunk); otherwise one call over all keys.
inline std::vector<CpCall> allgather_calls(int rank, int world, bool causal, int chunk_rows) {
  const int c = chunk_rows, S = 2 * world * chunk_rows;
  if (!causal) return {{0, 2 * c, 0, S, false}};
  std::vector<CpCall> calls;
  for (int qh = 0; qh < 2; ++qh) {
    const int a = zigzag_chunk(rank, world, qh);
    calls.push_back({qh * c, c, 0, (a + 1) * c, true});
  }
  return calls;
}

// Where local row `row` of rank `rank` sits in the sequence.
inline int64_t global_row(int rank, int world, int chunk_rows, int row) {
  const int half = row / chunk_rows;
  return int64_t(zigzag_chunk(rank, world, half)) * chunk_rows + row % chunk_rows;
}

enum class Strategy { Auto = 0, Ring = 1, AllGather = 2 };

inline const char* strategy_name(Strategy s) {
  return s == Strategy::Ring ? "ring" : s == Strategy::AllGather ? "allgather" : "auto";
}

// Auto picks all-gather for short contexts: when the gathered K/V of all ranks
// (world x the local K+V bytes) fits in `allgather_max_bytes`, one collective beats R - 1
// ring steps whose transfers are too small to hide behind compute. A single rank never
// communicates (ring with one step).
inline Strategy choose_strategy(Strategy requested, int world, size_t local_kv_bytes,
                                size_t allgather_max_bytes) {
  if (world <= 1) return Strategy::Ring;
  if (requested != Strategy::Auto) return requested;
  const double gathered = double(local_kv_bytes) * double(world);
  return gathered <= double(allgather_max_bytes) ? Strategy::AllGather : Strategy::Ring;
}

}  // namespace cp
}  // namespace flare

#endif  // FLARE_CP_SCHEDULE_HPP
