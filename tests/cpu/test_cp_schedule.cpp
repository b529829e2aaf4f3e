// The context-parallel schedule (include/flare/cp_schedule.hpp): zig-zag sharding, ring steps, the
// calls that cover each step, the all-gather calls and the strategy choice. The calls are
// checked by brute force: expanding every call of every step into the (query row, key row)
// pairs it computes (with flare's bottom-right causal mask) must give exactly the global mask,
// each visible pair once.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <vector>

#include "flare/cp_schedule.hpp"

namespace {

using namespace flare::cp;

TEST(CpSchedule, ZigZagChunksPartitionTheSequence) {
  for (int world = 1; world <= 8; ++world) {
    std::multiset<int> chunks;
    for (int r = 0; r < world; ++r)
      for (int h = 0; h < 2; ++h) chunks.insert(zigzag_chunk(r, world, h));
    ASSERT_EQ(chunks.size(), size_t(2 * world));
    for (int k = 0; k < 2 * world; ++k) EXPECT_EQ(chunks.count(k), 1u) << world << " " << k;
    EXPECT_EQ(zigzag_chunk(0, world, 1), 2 * world - 1);
  }
  EXPECT_EQ(global_row(1, 2, 4, 0), 4);   // rank 1 of 2, chunk 1
  EXPECT_EQ(global_row(1, 2, 4, 5), 9);   // half 1 = chunk 2, row 1
  EXPECT_EQ(global_row(0, 2, 4, 7), 15);  // rank 0 half 1 = chunk 3
}

TEST(CpSchedule, RingSourceVisitsEveryRankOnce) {
  for (int world = 1; world <= 8; ++world)
    for (int r = 0; r < world; ++r) {
      std::set<int> seen;
      for (int t = 0; t < world; ++t) seen.insert(ring_source_rank(r, world, t));
      EXPECT_EQ(seen.size(), size_t(world));
      EXPECT_EQ(ring_source_rank(r, world, 0), r);
      // What r holds at step t + 1 is what r - 1 held at step t (received from r - 1).
      for (int t = 0; t + 1 < world; ++t)
        EXPECT_EQ(ring_source_rank(r, world, t + 1),
                  ring_source_rank((r - 1 + world) % world, world, t));
    }
}

TEST(CpSchedule, PairMask) {
  EXPECT_EQ(pair_mask(3, 1, true), PairMask::Full);
  EXPECT_EQ(pair_mask(3, 3, true), PairMask::Causal);
  EXPECT_EQ(pair_mask(3, 4, true), PairMask::Skip);
  EXPECT_EQ(pair_mask(3, 4, false), PairMask::Full);
  EXPECT_EQ(pair_mask(3, 3, false), PairMask::Full);
}

TEST(CpSchedule, KnownSteps) {
  // 2 ranks, chunk 4 rows, causal. Rank 1 holds chunks 1, 2.
  // Step 0: own shard, the square causal mask.
  EXPECT_EQ(ring_step_calls(1, 2, 0, true, 4), (std::vector<CpCall>{{0, 8, 0, 8, true}}));
  // Step 1: shard of rank 0 (chunks 0, 3): both halves see chunk 0 fully, nobody chunk 3.
  EXPECT_EQ(ring_step_calls(1, 2, 1, true, 4), (std::vector<CpCall>{{0, 8, 0, 4, false}}));
  // Rank 0 (chunks 0, 3), step 1: shard of rank 1 (chunks 1, 2): only half 1 (chunk 3) sees
  // both, fully.
  EXPECT_EQ(ring_step_calls(0, 2, 1, true, 4), (std::vector<CpCall>{{4, 4, 0, 8, false}}));
  // Without a mask every step is one call over everything.
  EXPECT_EQ(ring_step_calls(0, 2, 1, false, 4), (std::vector<CpCall>{{0, 8, 0, 8, false}}));
  // All-gather, causal: each half against its key prefix.
  EXPECT_EQ(allgather_calls(0, 2, true, 4),
            (std::vector<CpCall>{{0, 4, 0, 4, true}, {4, 4, 0, 16, true}}));
  EXPECT_EQ(allgather_calls(1, 2, false, 4), (std::vector<CpCall>{{0, 8, 0, 16, false}}));
}

TEST(CpSchedule, UnexpressiblePairsThrow) {
  // Key half 0 on the diagonal while key half 1 is visible: no single call; the ring never
  // produces it.
  const std::vector<CpPair> bad = {{0, 0, 2, 2, PairMask::Causal}, {0, 1, 2, 1, PairMask::Full}};
  EXPECT_THROW(calls_for_pairs(bad, 4), std::logic_error);
  // Unmergeable halves stay separate calls with disjoint query rows.
  const std::vector<CpPair> two = {{0, 0, 0, 0, PairMask::Causal}, {1, 1, 1, 1, PairMask::Causal}};
  EXPECT_EQ(calls_for_pairs(two, 4),
            (std::vector<CpCall>{{0, 4, 0, 4, true}, {4, 4, 4, 4, true}}));
}

// Adds the (local q row, global key) pairs of `call` to `cover`; kv_global maps a row of the
// call's K/V buffer to its global key index.
template <class KvGlobal>
void expand(const CpCall& call, int rows_local, int seq, KvGlobal kv_global,
            std::vector<int>& cover) {
  for (int i = 0; i < call.q_rows; ++i)
    for (int j = 0; j < call.kv_rows; ++j) {
      // flare's bottom-right causal mask: j <= i + kv_rows - q_rows.
      if (call.causal && j > i + call.kv_rows - call.q_rows) continue;
      const int q = call.q_begin + i;
      ASSERT_LT(q, rows_local);
      ++cover[size_t(q) * seq + kv_global(call.kv_begin + j)];
    }
}

// Rank counts of the brute-force coverage tests: 1-6, and the 8 and 16 of one or two hosts.
const int kWorlds[] = {1, 2, 3, 4, 5, 6, 8, 16};

TEST(CpSchedule, RingCoversTheMaskExactlyOnce) {
  for (int world : kWorlds)
    for (int c = 1; c <= 3; ++c)
      for (bool causal : {false, true}) {
        SCOPED_TRACE(testing::Message() << "world=" << world << " c=" << c << " causal=" << causal);
        const int seq = 2 * world * c, rows = 2 * c;
        long long work0 = -1;
        for (int r = 0; r < world; ++r) {
          std::vector<int> cover(size_t(rows) * seq, 0);
          long long work = 0;
          for (int t = 0; t < world; ++t) {
            const int src = ring_source_rank(r, world, t);
            const std::vector<CpCall> calls = ring_step_calls(r, world, t, causal, c);
            std::vector<int> q_used(rows, 0);
            for (const CpCall& call : calls) {
              ASSERT_GE(call.kv_begin, 0);
              ASSERT_LE(call.kv_begin + call.kv_rows, rows);  // inside the held shard
              for (int i = 0; i < call.q_rows; ++i) ++q_used[call.q_begin + i];
              expand(call, rows, seq, [&](int kv) { return int(global_row(src, world, c, kv)); },
                     cover);
              work += (long long)call.q_rows * call.kv_rows;
            }
            for (int i = 0; i < rows; ++i) {
              ASSERT_LE(q_used[i], 1) << "calls of step " << t << " share query row " << i;
              // The executor writes step 0 straight into the output: it must cover every row.
              if (t == 0) {
                ASSERT_EQ(q_used[i], 1) << "step 0 misses query row " << i;
              }
            }
          }
          for (int i = 0; i < rows; ++i) {
            const int64_t gq = global_row(r, world, c, i);
            for (int k = 0; k < seq; ++k) {
              const int want = (!causal || k <= gq) ? 1 : 0;
              ASSERT_EQ(cover[size_t(i) * seq + k], want)
                  << "rank " << r << " q row " << i << " (global " << gq << ") key " << k;
            }
          }
          // Zig-zag balance: every rank does the same amount of attention work.
          if (work0 < 0) work0 = work;
          EXPECT_EQ(work, work0) << "rank " << r;
        }
      }
}

TEST(CpSchedule, AllGatherCoversTheMaskExactlyOnce) {
  for (int world : kWorlds)
    for (int c = 1; c <= 3; ++c)
      for (bool causal : {false, true}) {
        SCOPED_TRACE(testing::Message() << "world=" << world << " c=" << c << " causal=" << causal);
        const int seq = 2 * world * c, rows = 2 * c;
        for (int r = 0; r < world; ++r) {
          std::vector<int> cover(size_t(rows) * seq, 0);
          for (const CpCall& call : allgather_calls(r, world, causal, c)) {
            ASSERT_LE(call.kv_begin + call.kv_rows, seq);
            expand(call, rows, seq, [](int kv) { return kv; }, cover);
          }
          for (int i = 0; i < rows; ++i) {
            const int64_t gq = global_row(r, world, c, i);
            for (int k = 0; k < seq; ++k)
              ASSERT_EQ(cover[size_t(i) * seq + k], (!causal || k <= gq) ? 1 : 0)
                  << "rank " << r << " q row " << i << " key " << k;
          }
        }
      }
}

// (query, key) pairs a call computes: all of them, or under flare's bottom-right causal mask
// (query row i sees key rows j <= i + kv_rows - q_rows).
int64_t call_work(const CpCall& call) {
  const int64_t q = call.q_rows, kv = call.kv_rows;
  if (!call.causal) return q * kv;
  const int64_t off = kv - q;
  if (off >= 0) return q * (off + 1) + q * (q - 1) / 2;  // row i sees i + off + 1 <= kv keys
  int64_t n = 0;
  for (int64_t i = 0; i < q; ++i) n += std::min(kv, std::max<int64_t>(0, i + off + 1));
  return n;
}

// Chunk-level view of one schedule at real sequence lengths (too long to expand pair by pair):
// every call is cut into c x c blocks, each of which must be wholly visible ("full"), a square
// causal mask ("diagonal") or wholly masked; the blocks are counted per global (query chunk, key
// chunk). kv_chunk maps a block's first key row in the call's K/V buffer to its global chunk.
struct ChunkCover {
  int chunks;
  std::vector<int> full, diag;
  explicit ChunkCover(int n) : chunks(n), full(size_t(n) * n, 0), diag(size_t(n) * n, 0) {}

  template <class KvChunk>
  void add(const CpCall& call, int rank, int world, int64_t c, KvChunk kv_chunk) {
    ASSERT_EQ(call.q_begin % c, 0);
    ASSERT_EQ(call.q_rows % c, 0);
    ASSERT_EQ(call.kv_begin % c, 0);
    ASSERT_EQ(call.kv_rows % c, 0);
    const int64_t off = call.kv_rows - call.q_rows;
    for (int64_t qi = 0; qi < call.q_rows / c; ++qi)
      for (int64_t kj = 0; kj < call.kv_rows / c; ++kj) {
        const int64_t i0 = qi * c, j0 = kj * c;  // first row / key of the block in the call
        const int a = zigzag_chunk(rank, world, int((call.q_begin + i0) / c));
        const int b = kv_chunk(call.kv_begin + j0);
        if (!call.causal || j0 + c - 1 <= i0 + off) {
          ++full[size_t(a) * chunks + b];
        } else if (j0 == i0 + off) {
          ++diag[size_t(a) * chunks + b];
        } else {
          ASSERT_GT(j0, i0 + c - 1 + off) << "a block cut by the mask off its diagonal";
        }
      }
  }

  // Every visible chunk pair once: b < a full, b == a the diagonal, b > a never (causal); every
  // pair full without a mask.
  void expect_exact(bool causal) const {
    for (int a = 0; a < chunks; ++a)
      for (int b = 0; b < chunks; ++b) {
        const size_t i = size_t(a) * chunks + b;
        const int want_full = (!causal || b < a) ? 1 : 0, want_diag = (causal && a == b) ? 1 : 0;
        EXPECT_EQ(full[i], want_full) << "q chunk " << a << ", kv chunk " << b;
        EXPECT_EQ(diag[i], want_diag) << "q chunk " << a << ", kv chunk " << b;
      }
  }
};

// The long-context sizes context parallelism is for (128k-1M tokens) on 2-16 ranks: the ring and
// the all-gather cover every visible (query, key) pair exactly once, and the zig-zag shards
// balance the work: with a causal mask every rank computes exactly S (S + 1) / (2 R) pairs in
// all and, at each ring step, as many as every other rank (2c^2 + c at step 0, its own two
// chunks; 2c^2 after: one key chunk fully visible to each query chunk or both to the late one).
TEST(CpSchedule, LongSequencesCoverOnceAndBalance) {
  for (int world : {2, 4, 8, 16})
    for (int64_t seq : {int64_t(131072), int64_t(262144), int64_t(524288), int64_t(1048576)})
      for (bool causal : {true, false}) {
        SCOPED_TRACE(testing::Message() << "world=" << world << " seqlen=" << seq
                                        << " causal=" << causal);
        ASSERT_EQ(seq % (2 * world), 0);
        const int64_t c = seq / (2 * world);
        const int64_t total = causal ? seq * (seq + 1) / 2 : seq * seq;
        ChunkCover ring(2 * world), gather(2 * world);
        for (int r = 0; r < world; ++r) {
          int64_t ring_work = 0, gather_work = 0;
          for (int t = 0; t < world; ++t) {
            const int src = ring_source_rank(r, world, t);
            int64_t step_work = 0;
            for (const CpCall& call : ring_step_calls(r, world, t, causal, int(c))) {
              ring.add(call, r, world, c,
                       [&](int64_t kv_row) { return zigzag_chunk(src, world, int(kv_row / c)); });
              step_work += call_work(call);
            }
            const int64_t want = !causal ? 4 * c * c : t == 0 ? 2 * c * c + c : 2 * c * c;
            EXPECT_EQ(step_work, want) << "rank " << r << " step " << t;
            ring_work += step_work;
          }
          for (const CpCall& call : allgather_calls(r, world, causal, int(c))) {
            gather.add(call, r, world, c, [&](int64_t kv_row) { return int(kv_row / c); });
            gather_work += call_work(call);
          }
          EXPECT_EQ(ring_work * world, total) << "rank " << r;
          EXPECT_EQ(gather_work * world, total) << "rank " << r;
          if (HasFailure()) return;
        }
        ring.expect_exact(causal);
        gather.expect_exact(causal);
        if (HasFailure()) return;
      }
}

TEST(CpSchedule, CallWorkMatchesTheMask) {
  // call_work's closed form against counting, for the shapes the schedule produces.
  for (const CpCall& call : {CpCall{0, 6, 0, 12, true}, CpCall{0, 6, 0, 6, true},
                             CpCall{6, 6, 0, 24, true}, CpCall{0, 12, 0, 6, false}}) {
    int64_t n = 0;
    for (int i = 0; i < call.q_rows; ++i)
      for (int j = 0; j < call.kv_rows; ++j)
        n += (!call.causal || j <= i + call.kv_rows - call.q_rows) ? 1 : 0;
    EXPECT_EQ(call_work(call), n);
  }
}

TEST(CpSchedule, StrategyChoice) {
  const size_t mib = size_t(1) << 20;
  EXPECT_EQ(choose_strategy(Strategy::Auto, 1, 100 * mib, 64 * mib), Strategy::Ring);
  EXPECT_EQ(choose_strategy(Strategy::AllGather, 1, mib, 64 * mib), Strategy::Ring);
  EXPECT_EQ(choose_strategy(Strategy::Auto, 4, 16 * mib, 64 * mib), Strategy::AllGather);
  EXPECT_EQ(choose_strategy(Strategy::Auto, 4, 16 * mib + 1, 64 * mib), Strategy::Ring);
  EXPECT_EQ(choose_strategy(Strategy::Ring, 4, mib, 64 * mib), Strategy::Ring);
  EXPECT_EQ(choose_strategy(Strategy::AllGather, 8, 1000 * mib, 64 * mib), Strategy::AllGather);
  EXPECT_STREQ(strategy_name(Strategy::AllGather), "allgather");
}

}  // namespace
