// Brute-force checks of the semantic functions in src/common against the rules written in
// include/flare/flare.h: visibility, block ranges, mask-free blocks, split partitions, the LSE
// merge, rotary pairing and the row/offset mapping of every batch mode.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "common/block_range.h"
#include "common/lse_merge.h"
#include "common/mask.h"
#include "common/paged_rows.h"
#include "common/prefix_ranges.h"
#include "common/rotary.h"
#include "common/score_mods.h"
#include "common/serving_semantics.h"
#include "common/sequence.h"
#include "common/split.h"

namespace {

using flare::BlockRange;
using flare::MaskSpec;

const int kWindows[] = {-1, 0, 1, 3, 7, 50};
constexpr int kMaxLen = 40;

// The visibility rule exactly as the public header states it, with no normalisation.
bool documented_visible(int sq, int sk, bool causal, int wl, int wr, int i, int j) {
  if (j < 0 || j >= sk) return false;
  const long long diag = static_cast<long long>(i) + sk - sq;
  if (causal && j > diag) return false;
  if (wl >= 0 && j < diag - wl) return false;
  if (wr >= 0 && j > diag + wr) return false;
  return true;
}

// Calls fn(sq, sk, causal, wl, wr) for every configuration of the sweep.
template <typename Fn>
void for_each_config(Fn fn) {
  for (int sq = 1; sq <= kMaxLen; ++sq)
    for (int sk = 0; sk <= kMaxLen; ++sk)
      for (int causal = 0; causal < 2; ++causal)
        for (int wl : kWindows)
          for (int wr : kWindows) fn(sq, sk, causal != 0, wl, wr);
}

// Bit j of row_bits[i] set when key j is visible to row i (sk <= 40 fits in 64 bits).
std::vector<uint64_t> visibility_bits(const MaskSpec& m) {
  std::vector<uint64_t> bits(m.seqlen_q, 0);
  for (int i = 0; i < m.seqlen_q; ++i)
    for (int j = 0; j < m.seqlen_k; ++j)
      if (m.visible(i, j)) bits[i] |= uint64_t(1) << j;
  return bits;
}

uint64_t column_bits(int begin, int end) {
  uint64_t r = 0;
  for (int j = begin; j < end; ++j) r |= uint64_t(1) << j;
  return r;
}

::testing::AssertionResult config_failure(int sq, int sk, bool causal, int wl, int wr) {
  return ::testing::AssertionFailure() << "sq=" << sq << " sk=" << sk << " causal=" << causal
                                       << " wl=" << wl << " wr=" << wr;
}

// ---------------------------------------------------------------------------------------------
// (a) visible() and first_key/end_key

TEST(SemanticsMask, VisibleMatchesDocumentedRule) {
  long long mismatches = 0;
  for_each_config([&](int sq, int sk, bool causal, int wl, int wr) {
    const MaskSpec m = flare::make_mask(sq, sk, causal, wl, wr);
    for (int i = 0; i < sq; ++i)
      for (int j = -2; j < sk + 2; ++j) {
        const bool want = documented_visible(sq, sk, causal, wl, wr, i, j);
        if (m.visible(i, j) != want) {
          if (++mismatches <= 5)
            ADD_FAILURE() << config_failure(sq, sk, causal, wl, wr).message() << " i=" << i
                          << " j=" << j << " visible=" << m.visible(i, j) << " want=" << want;
        }
      }
  });
  EXPECT_EQ(mismatches, 0);
}

TEST(SemanticsMask, FirstAndEndKeyBoundTheVisibleInterval) {
  long long failures = 0;
  for_each_config([&](int sq, int sk, bool causal, int wl, int wr) {
    const MaskSpec m = flare::make_mask(sq, sk, causal, wl, wr);
    for (int i = 0; i < sq; ++i) {
      int lo = -1, hi = -1, count = 0;
      for (int j = 0; j < sk; ++j)
        if (m.visible(i, j)) {
          if (lo < 0) lo = j;
          hi = j + 1;
          ++count;
        }
      const int fk = m.first_key(i), ek = m.end_key(i);
      bool ok;
      if (count == 0) {
        ok = std::max(fk, 0) >= std::min(ek, sk);  // the interval they describe is empty
      } else {
        // The visible keys form one interval, and first/end key are exactly its ends.
        ok = (hi - lo == count) && fk == lo && ek == hi;
      }
      if (!ok && ++failures <= 5)
        ADD_FAILURE() << config_failure(sq, sk, causal, wl, wr).message() << " row " << i
                      << ": first_key=" << fk << " end_key=" << ek << " brute [" << lo << ","
                      << hi << ") count=" << count;
    }
  });
  EXPECT_EQ(failures, 0);
}

TEST(SemanticsMask, CausalIsWindowRightZero) {
  for (int sq = 1; sq <= 12; ++sq)
    for (int sk = 0; sk <= 12; ++sk)
      for (int wl : kWindows) {
        const MaskSpec a = flare::make_mask(sq, sk, true, wl, -1);
        const MaskSpec b = flare::make_mask(sq, sk, false, wl, 0);
        for (int i = 0; i < sq; ++i)
          for (int j = 0; j < sk; ++j) ASSERT_EQ(a.visible(i, j), b.visible(i, j));
      }
}

// ---------------------------------------------------------------------------------------------
// (b) key_block_range, (c) block_needs_mask

TEST(SemanticsBlocks, KeyBlockRangeIsExact) {
  const int block_ms[] = {1, 3, 16, kMaxLen};
  const int block_ns[] = {1, 4, 16};
  long long failures = 0, checked = 0;
  for_each_config([&](int sq, int sk, bool causal, int wl, int wr) {
    const MaskSpec m = flare::make_mask(sq, sk, causal, wl, wr);
    const std::vector<uint64_t> rows = visibility_bits(m);
    for (int bm : block_ms)
      for (int m_begin = 0; m_begin < sq; m_begin += bm) {
        const int m_end = m_begin + bm;  // may run past sq, as the last CTA's block does
        uint64_t any = 0;
        for (int i = m_begin; i < std::min(m_end, sq); ++i) any |= rows[i];
        for (int bn : block_ns) {
          const int nblocks = (sk + bn - 1) / bn;
          int want_begin = -1, want_end = -1;
          for (int n = 0; n < nblocks; ++n)
            if (any & column_bits(n * bn, (n + 1) * bn)) {
              if (want_begin < 0) want_begin = n;
              want_end = n + 1;
            }
          const BlockRange r = flare::key_block_range(m, m_begin, m_end, bn);
          bool ok;
          if (want_begin < 0) {
            ok = r.end <= r.begin;
          } else {
            // Blocks between the first and the last must each hold a visible key too.
            bool contiguous = true;
            for (int n = want_begin; n < want_end; ++n)
              contiguous = contiguous && (any & column_bits(n * bn, (n + 1) * bn)) != 0;
            ok = contiguous && r.begin == want_begin && r.end == want_end;
          }
          ++checked;
          if (!ok && ++failures <= 5)
            ADD_FAILURE() << config_failure(sq, sk, causal, wl, wr).message() << " rows ["
                          << m_begin << "," << m_end << ") block_n=" << bn << " got ["
                          << r.begin << "," << r.end << ") want [" << want_begin << ","
                          << want_end << ")";
        }
      }
  });
  EXPECT_EQ(failures, 0);
  EXPECT_GT(checked, 1000000);
}

TEST(SemanticsBlocks, BlockNeedsMaskIsExact) {
  const int block_ms[] = {1, 4, 16};
  const int block_ns[] = {1, 4, 16};
  long long missed = 0, conservative = 0, mask_free = 0;
  for_each_config([&](int sq, int sk, bool causal, int wl, int wr) {
    const MaskSpec m = flare::make_mask(sq, sk, causal, wl, wr);
    const std::vector<uint64_t> rows = visibility_bits(m);
    for (int bm : block_ms)
      for (int m_begin = 0; m_begin < sq; m_begin += bm) {
        const int m_end = m_begin + bm;
        for (int bn : block_ns) {
          const int nblocks = (std::max(sk, 1) + bn - 1) / bn;
          for (int n = 0; n < nblocks; ++n) {
            const uint64_t cols = column_bits(n * bn, (n + 1) * bn);
            bool some_hidden = false;
            for (int i = m_begin; i < std::min(m_end, sq); ++i)
              some_hidden = some_hidden || (rows[i] & cols) != cols;
            const bool got = flare::block_needs_mask(m, m_begin, m_end, n, bn);
            if (some_hidden && !got && ++missed <= 5)
              ADD_FAILURE() << "unmasked block with hidden keys: "
                            << config_failure(sq, sk, causal, wl, wr).message() << " rows ["
                            << m_begin << "," << m_end << ") n_block=" << n << " bn=" << bn;
            if (!some_hidden && got && ++conservative <= 5)
              ADD_FAILURE() << "fully visible block masked: "
                            << config_failure(sq, sk, causal, wl, wr).message() << " rows ["
                            << m_begin << "," << m_end << ") n_block=" << n << " bn=" << bn;
            if (!some_hidden) ++mask_free;
          }
        }
      }
  });
  EXPECT_EQ(missed, 0);
  EXPECT_EQ(conservative, 0);
  EXPECT_GT(mask_free, 0);  // the sweep does exercise mask-free blocks
}

// ---------------------------------------------------------------------------------------------
// (d) split_block_range

void check_partition(BlockRange range, int splits) {
  const int n = std::max(range.end - range.begin, 0);
  int expected_begin = range.begin;
  int prev_size = n + 1;
  std::vector<int> covered(n, 0);
  for (int s = 0; s < splits; ++s) {
    const BlockRange r = flare::split_block_range(range, splits, s);
    const int size = r.end - r.begin;
    ASSERT_GE(size, 0) << "split " << s << " of " << splits;
    if (size > 0) {
      ASSERT_EQ(r.begin, expected_begin) << "split " << s << " of " << splits;
      ASSERT_LE(size, prev_size) << "split sizes must not grow";
      prev_size = size;
      expected_begin = r.end;
    }
    for (int b = r.begin; b < r.end; ++b) {
      ASSERT_GE(b, range.begin);
      ASSERT_LT(b, range.begin + n);
      ++covered[b - range.begin];
    }
  }
  for (int t = 0; t < n; ++t) ASSERT_EQ(covered[t], 1) << "block " << range.begin + t;
  ASSERT_EQ(expected_begin, range.begin + n);
}

TEST(SemanticsSplit, SplitsPartitionTheRange) {
  for (int begin = 0; begin <= 7; ++begin)
    for (int n = -2; n <= 40; ++n)
      for (int splits = 1; splits <= 9; ++splits) {
        SCOPED_TRACE(::testing::Message() << "begin=" << begin << " n=" << n);
        check_partition(BlockRange{begin, begin + n}, splits);
        if (HasFatalFailure()) return;
      }
}

TEST(SemanticsSplit, SplitsOfRealBlockRanges) {
  for (int sq = 1; sq <= kMaxLen; sq += 3)
    for (int sk = 0; sk <= kMaxLen; ++sk)
      for (int wl : kWindows) {
        const MaskSpec m = flare::make_mask(sq, sk, true, wl, -1);
        for (int m_begin = 0; m_begin < sq; m_begin += 4) {
          const BlockRange r = flare::key_block_range(m, m_begin, m_begin + 4, 4);
          for (int splits = 1; splits <= 9; ++splits) {
            check_partition(r, splits);
            if (HasFatalFailure()) return;
          }
        }
      }
}

// ---------------------------------------------------------------------------------------------
// (e) merged_lse / merge_weight

long double brute_lse(const std::vector<double>& parts) {
  long double sum = 0;
  for (double x : parts) sum += std::exp(static_cast<long double>(x));  // exp(-inf) = 0
  return std::log(sum);  // log(0) = -inf
}

TEST(SemanticsLseMerge, MatchesBruteForce) {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<double> val(-40.0, 40.0);
  std::uniform_int_distribution<int> coin(0, 3);
  for (int trial = 0; trial < 20000; ++trial) {
    const int n = trial % 9;  // 0..8 parts
    std::vector<double> parts(n);
    const double offset = (trial % 3 == 0) ? 900.0 : 0.0;  // exp would overflow without the max
    for (double& x : parts)
      x = coin(rng) == 0 ? -INFINITY : val(rng) + offset;
    const double got = flare::merged_lse(parts.data(), n);
    const long double want = brute_lse(parts);
    if (std::isinf(static_cast<double>(want))) {
      ASSERT_TRUE(std::isinf(got) && got < 0) << "n=" << n << " got " << got;
      for (double x : parts) ASSERT_EQ(flare::merge_weight(x, got), 0.0);
      continue;
    }
    ASSERT_FALSE(std::isnan(got));
    ASSERT_NEAR(got, static_cast<double>(want), 1e-12 * std::max(1.0, std::fabs(got)));
    // Weights: exp(part - merged), zero for empty parts, summing to one.
    double wsum = 0;
    for (double x : parts) {
      const double w = flare::merge_weight(x, got);
      if (x == -INFINITY) {
        ASSERT_EQ(w, 0.0);
      } else {
        ASSERT_NEAR(w, static_cast<double>(std::exp(static_cast<long double>(x) - want)),
                    1e-12);
      }
      wsum += w;
    }
    ASSERT_NEAR(wsum, 1.0, 1e-12);
  }
}

TEST(SemanticsLseMerge, EdgeCases) {
  EXPECT_EQ(flare::merged_lse<double>(nullptr, 0), -INFINITY);
  const double single[] = {3.25};
  EXPECT_EQ(flare::merged_lse(single, 1), 3.25);  // exact: log(1) = 0
  EXPECT_EQ(flare::merge_weight(3.25, 3.25), 1.0);
  const double all_empty[] = {-INFINITY, -INFINITY, -INFINITY};
  EXPECT_EQ(flare::merged_lse(all_empty, 3), -INFINITY);
  EXPECT_EQ(flare::merge_weight(-INFINITY, -INFINITY), 0.0);  // never NaN
  const double one_live[] = {-INFINITY, -1.5, -INFINITY};
  EXPECT_EQ(flare::merged_lse(one_live, 3), -1.5);
  const double equal[] = {2.0, 2.0};
  EXPECT_DOUBLE_EQ(flare::merged_lse(equal, 2), 2.0 + std::log(2.0));
  // The float instantiation the kernels use.
  const float fparts[] = {1.0f, -INFINITY, 0.5f, 80.0f};
  const float fgot = flare::merged_lse(fparts, 4);
  EXPECT_NEAR(fgot, static_cast<float>(brute_lse({1.0, -INFINITY, 0.5, 80.0})), 1e-5f);
  EXPECT_EQ(flare::merge_weight(-INFINITY, fgot), 0.0f);
}

// ---------------------------------------------------------------------------------------------
// (f) rotary_pair

TEST(SemanticsRotary, PairsAreAnInvolutionCoveringEachFrequencyOnce) {
  for (int interleaved = 0; interleaved < 2; ++interleaved)
    for (int rd = 2; rd <= 256; rd += 2) {
      SCOPED_TRACE(::testing::Message() << "rotary_dim=" << rd << " interleaved=" << interleaved);
      std::vector<int> firsts(rd / 2, 0), seconds(rd / 2, 0);
      for (int t = 0; t < rd; ++t) {
        const flare::RotaryPair p = flare::rotary_pair(t, rd, interleaved != 0);
        ASSERT_GE(p.partner, 0);
        ASSERT_LT(p.partner, rd);
        ASSERT_NE(p.partner, t);
        const flare::RotaryPair q = flare::rotary_pair(p.partner, rd, interleaved != 0);
        ASSERT_EQ(q.partner, t);
        ASSERT_EQ(q.freq, p.freq);
        ASSERT_NE(q.is_first, p.is_first);
        ASSERT_GE(p.freq, 0);
        ASSERT_LT(p.freq, rd / 2);
        ++(p.is_first ? firsts : seconds)[p.freq];
        if (interleaved) {
          ASSERT_EQ(p.freq, t / 2);
        } else {
          ASSERT_EQ(p.freq, t % (rd / 2));
        }
      }
      for (int f = 0; f < rd / 2; ++f) {
        ASSERT_EQ(firsts[f], 1) << "freq " << f;
        ASSERT_EQ(seconds[f], 1) << "freq " << f;
      }
    }
}

TEST(SemanticsRotary, ApplyIsAComplexRotation) {
  const float angles[] = {0.0f, 0.3f, 1.0f, 2.5f, -1.2f};
  for (float a : angles) {
    const float c = std::cos(a), s = std::sin(a);
    const float x0 = 0.75f, x1 = -1.25f;  // (x0 + i x1) * (c + i s)
    for (int interleaved = 0; interleaved < 2; ++interleaved) {
      const int t0 = 0, t1 = interleaved ? 1 : 4;  // rotary_dim 8
      const flare::RotaryPair p0 = flare::rotary_pair(t0, 8, interleaved != 0);
      const flare::RotaryPair p1 = flare::rotary_pair(t1, 8, interleaved != 0);
      ASSERT_EQ(p0.partner, t1);
      const float y0 = flare::rotary_apply(p0, x0, x1, c, s);
      const float y1 = flare::rotary_apply(p1, x1, x0, c, s);
      EXPECT_NEAR(y0, x0 * c - x1 * s, 1e-6f);
      EXPECT_NEAR(y1, x0 * s + x1 * c, 1e-6f);
      EXPECT_NEAR(y0 * y0 + y1 * y1, x0 * x0 + x1 * x1, 1e-5f);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// (g) sequence_info and offsets

flare_mha_fwd_params base_params() {
  flare_mha_fwd_params p;
  std::memset(&p, 0, sizeof p);
  p.struct_size = sizeof p;
  p.window_left = p.window_right = -1;
  return p;
}

TEST(SemanticsSequence, PaddedBatch) {
  flare_mha_fwd_params p = base_params();
  p.batch = 3;
  p.seqlen_q = 5;
  p.seqlen_k = 9;
  p.num_heads = 4;
  p.num_heads_k = 2;
  p.head_dim = 8;
  p.q_batch_stride = 1000, p.q_row_stride = 40, p.q_head_stride = 8;
  p.k_batch_stride = 2000, p.k_row_stride = 16, p.k_head_stride = 8;
  p.out_batch_stride = 3000, p.out_row_stride = 64, p.out_head_stride = 16;
  for (int b = 0; b < 3; ++b) {
    const flare::SequenceInfo s = flare::sequence_info(p, b);
    EXPECT_EQ(s.batch, b);
    EXPECT_EQ(s.seqlen_q, 5);
    EXPECT_EQ(s.seqlen_k, 9);
    EXPECT_EQ(s.q_row0, 0);
    EXPECT_EQ(s.k_row0, 0);
    EXPECT_EQ(s.kv_batch, b);
    EXPECT_EQ(s.cache_len, 0);
    EXPECT_EQ(flare::q_offset(p, s, 3, 2), b * 1000 + 3 * 40 + 2 * 8);
    EXPECT_EQ(flare::out_offset(p, s, 3, 2), b * 3000 + 3 * 64 + 2 * 16);
    EXPECT_EQ(flare::k_offset(p, s, 7, 1), b * 2000 + 7 * 16 + 8);
    EXPECT_EQ(flare::lse_offset(p, s, 3, 2), (b * 4 + 2) * 5 + 3);
  }
}

TEST(SemanticsSequence, VarlenWithSequsedK) {
  flare_mha_fwd_params p = base_params();
  const int32_t cu_q[] = {0, 3, 3, 10};  // middle sequence empty
  const int32_t cu_k[] = {0, 4, 6, 6};
  const int32_t used[] = {2, 1, 0};
  p.batch = 3;
  p.num_heads = 2;
  p.num_heads_k = 1;
  p.head_dim = 8;
  p.cu_seqlens_q = cu_q;
  p.cu_seqlens_k = cu_k;
  p.q_batch_stride = 12345;  // ignored for varlen
  p.q_row_stride = 16, p.q_head_stride = 8;
  p.k_batch_stride = 777, p.k_row_stride = 8, p.k_head_stride = 8;
  p.out_batch_stride = 999, p.out_row_stride = 16, p.out_head_stride = 8;
  const int want_sq[] = {3, 0, 7}, want_sk[] = {4, 2, 0};
  for (int b = 0; b < 3; ++b) {
    const flare::SequenceInfo s = flare::sequence_info(p, b);
    EXPECT_EQ(s.seqlen_q, want_sq[b]);
    EXPECT_EQ(s.seqlen_k, want_sk[b]);
    EXPECT_EQ(s.q_row0, cu_q[b]);
    EXPECT_EQ(s.k_row0, cu_k[b]);
    EXPECT_EQ(s.kv_batch, 0);
    EXPECT_EQ(flare::q_offset(p, s, 1, 1), (cu_q[b] + 1) * 16 + 8);
    EXPECT_EQ(flare::out_offset(p, s, 1, 1), (cu_q[b] + 1) * 16 + 8);
    EXPECT_EQ(flare::k_offset(p, s, 1, 0), (cu_k[b] + 1) * 8);
    EXPECT_EQ(flare::lse_offset(p, s, 1, 1), 1 * 10 + cu_q[b] + 1);  // [heads, total_q]
  }
  p.seqused_k = used;
  for (int b = 0; b < 3; ++b) EXPECT_EQ(flare::sequence_info(p, b).seqlen_k, used[b]);
}

TEST(SemanticsSequence, KvCacheLeftpadAndBatchIndex) {
  flare_mha_fwd_params p = base_params();
  const int32_t cache[] = {5, 9, 0};
  const int32_t leftpad[] = {2, 0, 0};
  const int32_t idx[] = {4, 0, 2};
  p.batch = 3;
  p.seqlen_q = 2;
  p.seqlen_k = 16;  // capacity
  p.num_heads = 2;
  p.num_heads_k = 2;
  p.head_dim = 8;
  p.k_batch_stride = 16 * 16, p.k_row_stride = 16, p.k_head_stride = 8;
  p.v_batch_stride = 16 * 32, p.v_row_stride = 32, p.v_head_stride = 8;
  p.cache_seqlens = cache;
  for (int b = 0; b < 3; ++b) {
    const flare::SequenceInfo s = flare::sequence_info(p, b);
    EXPECT_EQ(s.seqlen_k, cache[b]);
    EXPECT_EQ(s.cache_len, cache[b]);
    EXPECT_EQ(s.k_row0, 0);
    EXPECT_EQ(s.kv_batch, b);
  }
  p.leftpad_k = leftpad;
  p.cache_batch_idx = idx;
  int16_t dummy = 0;
  p.k_new = &dummy;
  p.v_new = &dummy;
  p.seqlen_new = 3;
  for (int b = 0; b < 3; ++b) {
    const flare::SequenceInfo s = flare::sequence_info(p, b);
    EXPECT_EQ(s.cache_len, cache[b] - leftpad[b]);
    EXPECT_EQ(s.seqlen_k, cache[b] - leftpad[b] + 3);
    EXPECT_EQ(s.k_row0, leftpad[b]);
    EXPECT_EQ(s.kv_batch, idx[b]);
    EXPECT_EQ(flare::k_offset(p, s, 1, 1), idx[b] * 256 + (leftpad[b] + 1) * 16 + 8);
    EXPECT_EQ(flare::v_offset(p, s, 1, 1), idx[b] * 512 + (leftpad[b] + 1) * 32 + 8);
    // The first appended token sits at absolute cache row cache_seqlens[b].
    EXPECT_EQ(flare::rotary_q_position(p, s, 1), cache[b]);
  }
  p.causal = 1;
  for (int b = 0; b < 3; ++b) {
    const flare::SequenceInfo s = flare::sequence_info(p, b);
    EXPECT_EQ(flare::rotary_q_position(p, s, 1), cache[b] + 1);
  }
}

// The paged fills' lane lookups (common/paged_rows.h) for the shapes the Hopper kernels run
// (chunks per row x threads x rows: producer 128 threads, all-threads kernel 256): every row of
// a fill is looked up by exactly one lane, and in every pass each thread's shuffle source (a lane
// of its own warp) looked up the very row the thread copies.
template <int Chunks, int Threads, int Rows>
void check_paged_lane_rows() {
  using L = flare::PagedLaneRows<Chunks, Threads, Rows>;
  SCOPED_TRACE(::testing::Message() << Chunks << " chunks, " << Threads << " threads, " << Rows
                                    << " rows");
  ASSERT_TRUE(L::kApplies);
  std::vector<int> looked_up(Rows, 0);
  for (int warp = 0; warp < Threads / 32; ++warp)
    for (int lane = 0; lane < 32; ++lane) {
      const int row = L::lookup_row(warp, lane);
      if (row < 0) continue;
      ASSERT_LT(row, Rows);
      ++looked_up[row];
    }
  for (int r = 0; r < Rows; ++r) EXPECT_EQ(looked_up[r], 1) << "row " << r;
  std::vector<int> copied(Rows * Chunks, 0);
  for (int t = 0; t < Threads; ++t)
    for (int i = 0; i < L::kPasses; ++i) {
      const int row = L::copied_row(t, i);
      ASSERT_LT(row, Rows);
      ++copied[row * Chunks + t % Chunks];
      const int holder = L::holder(t, i);
      ASSERT_GE(holder, 0);
      ASSERT_LT(holder, 32);
      EXPECT_EQ(L::lookup_row(t / 32, holder), row) << "thread " << t << " pass " << i;
    }
  for (int c : copied) EXPECT_EQ(c, 1);  // every chunk of every row exactly once
}

TEST(SemanticsSequence, PagedFillLaneLookups) {
  check_paged_lane_rows<8, 128, 128>();   // d64 producer
  check_paged_lane_rows<16, 128, 128>();  // d128 producer
  check_paged_lane_rows<8, 256, 128>();   // d64 all-threads
  check_paged_lane_rows<16, 256, 128>();  // d128 all-threads
  check_paged_lane_rows<32, 256, 64>();   // d256 all-threads
  // A warp split across rows, or more rows per warp than lanes: not this layout.
  EXPECT_FALSE((flare::PagedLaneRows<12, 128, 128>::kApplies));
  EXPECT_FALSE((flare::PagedLaneRows<8, 128, 192>::kApplies));
}

TEST(SemanticsSequence, PagedMatchesContiguous) {
  std::mt19937 rng(7);
  const int batch = 3, hk = 2, d = 4, max_rows = 40;
  for (int page : {1, 4, 16}) {
    for (int use_leftpad = 0; use_leftpad < 2; ++use_leftpad) {
      SCOPED_TRACE(::testing::Message() << "page=" << page << " leftpad=" << use_leftpad);
      const int pages_per_seq = (max_rows + page - 1) / page;
      const int num_pages = batch * pages_per_seq + 3;  // a few unused pages in the pool
      const int rows_cap = pages_per_seq * page;
      // Contiguous cache [batch, rows_cap, hk, d] holding distinct values.
      std::vector<int> contig(static_cast<size_t>(batch) * rows_cap * hk * d);
      std::iota(contig.begin(), contig.end(), 1);
      // A permuted block table, then the same data scattered into the page pool.
      std::vector<int32_t> perm(num_pages);
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      const int bt_stride = pages_per_seq + 2;
      std::vector<int32_t> table(static_cast<size_t>(batch) * bt_stride, -1);
      for (int b = 0; b < batch; ++b)
        for (int t = 0; t < pages_per_seq; ++t) table[b * bt_stride + t] = perm[b * pages_per_seq + t];
      std::vector<int> pool(static_cast<size_t>(num_pages) * page * hk * d, 0);
      for (int b = 0; b < batch; ++b)
        for (int r = 0; r < rows_cap; ++r)
          for (int h = 0; h < hk; ++h)
            for (int e = 0; e < d; ++e)
              pool[((static_cast<size_t>(table[b * bt_stride + r / page]) * page + r % page) * hk + h) * d + e] =
                  contig[((static_cast<size_t>(b) * rows_cap + r) * hk + h) * d + e];

      const int32_t cache[] = {37, 5, 40};
      const int32_t leftpad[] = {3, 0, 11};
      flare_mha_fwd_params pc = base_params();
      pc.batch = batch;
      pc.seqlen_q = 1;
      pc.seqlen_k = rows_cap;
      pc.num_heads = pc.num_heads_k = hk;
      pc.head_dim = d;
      pc.k_batch_stride = static_cast<int64_t>(rows_cap) * hk * d;
      pc.k_row_stride = hk * d;
      pc.k_head_stride = d;
      pc.cache_seqlens = cache;
      if (use_leftpad) pc.leftpad_k = leftpad;
      flare_mha_fwd_params pp = pc;
      pp.block_table = table.data();
      pp.block_table_batch_stride = bt_stride;
      pp.page_block_size = page;
      pp.num_pages = num_pages;
      pp.k_batch_stride = static_cast<int64_t>(page) * hk * d;  // the page stride
      for (int b = 0; b < batch; ++b) {
        const flare::SequenceInfo sc = flare::sequence_info(pc, b);
        const flare::SequenceInfo sp = flare::sequence_info(pp, b);
        ASSERT_EQ(sc.seqlen_k, sp.seqlen_k);
        for (int r = 0; r < sc.seqlen_k; ++r)
          for (int h = 0; h < hk; ++h) {
            const int64_t oc = flare::k_offset(pc, sc, r, h);
            const int64_t op = flare::k_offset(pp, sp, r, h);
            ASSERT_GE(op, 0);
            ASSERT_LT(op + d, static_cast<int64_t>(pool.size()) + 1);
            for (int e = 0; e < d; ++e) ASSERT_EQ(pool[op + e], contig[oc + e]) << b << " " << r;
          }
      }
    }
  }
}

}  // namespace

namespace {

TEST(SemanticsScores, ScoreUnits) {
  // Without softcap x = q.k and the softmax exponent is x * scale * log2(e); ALiBi slopes are
  // divided by the scale (x carries no scale). With softcap x is already capped: unit 1.
  flare_mha_fwd_params p;
  flare_mha_fwd_params_init(&p);
  p.softmax_scale = 0.125f;
  p.num_heads = 4;
  const float slopes[8] = {0.5f, 0.25f, 0.125f, 0.0625f, 1.f, 2.f, 3.f, 4.f};
  p.alibi_slopes = slopes;
  p.alibi_batch_stride = 4;
  flare::ScoreUnits u = flare::score_units(p, 1, 2);
  EXPECT_FALSE(u.has_softcap);
  EXPECT_FLOAT_EQ(u.unit_log2, 0.125f * 1.4426950408889634f);
  EXPECT_EQ(u.cap_in, 0.f);
  EXPECT_FLOAT_EQ(u.alibi, 3.f / 0.125f);
  p.softcap = 30.f;
  u = flare::score_units(p, 0, 1);
  EXPECT_TRUE(u.has_softcap);
  EXPECT_FLOAT_EQ(u.unit_log2, 1.4426950408889634f);
  EXPECT_FLOAT_EQ(u.cap_in, 0.125f / 30.f);
  EXPECT_FLOAT_EQ(u.alibi, 0.25f);
  p.alibi_slopes = nullptr;
  EXPECT_EQ(flare::score_units(p, 0, 1).alibi, 0.f);
}

}  // namespace

namespace {

// modify_row_scores and its one-pass form on one fragment row (8 n8 tiles, a thread's two
// columns per tile) equal the element-by-element rule: softcap, ALiBi by key distance, mask.
TEST(SemanticsScores, ModifyRowScoresMatchesElementRule) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> val(-4.f, 4.f);
  constexpr int kTiles = 8;
  for (int trial = 0; trial < 400; ++trial) {
    const bool softcap_on = trial % 2 == 1;
    const float softcap = 5.f, cap_in = 0.3f;
    const float alibi = (trial / 2) % 2 ? 0.7f : 0.f;
    const bool needs_mask = (trial / 4) % 2 == 1;
    const int seqlen_q = 1 + int(rng() % 200), seqlen_k = 1 + int(rng() % 300);
    const int wl = int(rng() % 3) == 0 ? -1 : int(rng() % 40);
    const bool causal = rng() % 2 == 0;
    const flare::MaskSpec mask = flare::make_mask(seqlen_q, seqlen_k, causal, wl, -1);
    const int row = int(rng() % seqlen_q);
    const int t = int(rng() % 4), n_block = int(rng() % 5), block_n = 64;
    const int col0 = n_block * block_n + 2 * t;  // the thread's first column
    float got[kTiles][2], got1[kTiles][2], want[kTiles][2];
    for (int j = 0; j < kTiles; ++j)
      for (int e = 0; e < 2; ++e) {
        const int key = col0 + 8 * j + e;
        float x = val(rng);
        got[j][e] = got1[j][e] = x;
        if (softcap_on) x = softcap * std::tanh(x * cap_in);
        if (alibi != 0.f) x -= alibi * std::fabs(float(row + mask.diagonal() - key));
        if (needs_mask && !(key >= mask.first_key(row) && key < mask.end_key(row))) x = -INFINITY;
        want[j][e] = x;
      }
    flare::modify_row_scores<kTiles>([&](int j, int e) -> float& { return got[j][e]; },
                                     softcap_on, softcap, cap_in, alibi,
                                     row + mask.diagonal() - col0, needs_mask,
                                     mask.first_key(row) - col0, mask.end_key(row) - col0);
    flare::modify_row_scores_one_pass<kTiles>(
        [&](int j, int e) -> float& { return got1[j][e]; }, softcap_on, softcap, cap_in, alibi,
        row + mask.diagonal() - col0, needs_mask, mask.first_key(row) - col0,
        mask.end_key(row) - col0);
    for (int j = 0; j < kTiles; ++j)
      for (int e = 0; e < 2; ++e) {
        if (std::isinf(want[j][e])) {
          EXPECT_EQ(got[j][e], want[j][e]) << "trial " << trial << " j " << j << " e " << e;
        } else {
          EXPECT_NEAR(got[j][e], want[j][e], 1e-5f) << "trial " << trial << " j " << j;
        }
        EXPECT_EQ(got1[j][e], got[j][e]) << "trial " << trial << " j " << j << " e " << e;
      }
  }
}

}  // namespace

namespace {

// modify_wgmma_block_scores on a wgmma m64 fragment (accumulator 4 j + 2 hr + e = row
// row_base + 8 hr, column block_col0 + 8 j + e), both forms, equals the element rule; with a
// widening callback (prefix ranges) a masked block takes each row's widened bounds.
TEST(SemanticsScores, WgmmaBlockScoresMatchElementRule) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> val(-3.f, 3.f);
  constexpr int kTiles = 10;  // an 80-key block
  for (int trial = 0; trial < 400; ++trial) {
    const bool softcap_on = trial % 2 == 1, in_flight = (trial / 2) % 2 == 1;
    const float alibi = (trial / 4) % 2 ? 0.4f : 0.f;
    const bool needs_mask = (trial / 8) % 2 == 1;
    const bool widened = (trial / 16) % 2 == 1;
    const int seqlen_q = 1 + int(rng() % 300), seqlen_k = 1 + int(rng() % 400);
    const flare::MaskSpec mask = flare::make_mask(seqlen_q, seqlen_k, trial % 3 != 0,
                                                  trial % 5 == 0 ? 17 : -1, -1);
    const int row_base = int(rng() % seqlen_q), col0 = 80 * int(rng() % 5) + 2 * int(rng() % 4);
    // The extra interval of the widened rows (as row_keys would add it).
    const int extra_lo = std::max(0, col0 - 30), extra_hi = std::min(seqlen_k, col0 + 45);
    auto bounds = [&](int row, int& first, int& end) {
      first = mask.first_key(row), end = mask.end_key(row);
      if (widened) flare::row_keys_union(first, end, extra_lo, extra_hi);
    };
    float acc[4 * kTiles], want[4 * kTiles];
    for (int j = 0; j < kTiles; ++j)
      for (int hr = 0; hr < 2; ++hr)
        for (int e = 0; e < 2; ++e) {
          const int i = 4 * j + 2 * hr + e, row = row_base + 8 * hr, key = col0 + 8 * j + e;
          float x = acc[i] = val(rng);
          if (softcap_on) x = 4.f * std::tanh(x * 0.5f);
          if (alibi != 0.f) x -= alibi * std::fabs(float(row + mask.diagonal() - key));
          int first, end;
          bounds(row, first, end);
          if (needs_mask && !(key >= first && key < end)) x = -INFINITY;
          want[i] = x;
        }
    flare::modify_wgmma_block_scores<kTiles>(
        acc, mask, mask.diagonal(), row_base, col0, in_flight, softcap_on, 4.f, 0.5f, alibi,
        needs_mask, [&](int, int& first, int& end) {
          if (widened) flare::row_keys_union(first, end, extra_lo, extra_hi);
        });
    for (int i = 0; i < 4 * kTiles; ++i) {
      if (std::isinf(want[i])) {
        EXPECT_EQ(acc[i], want[i]) << "trial " << trial << " i " << i;
      } else {
        EXPECT_NEAR(acc[i], want[i], 1e-5f) << "trial " << trial << " i " << i;
      }
    }
  }
}

}  // namespace

namespace {

// Prefix ranges (prefix_ranges.h) against key_visible, the reference rule, by brute force over
// random masks, ranges (empty slots, starts before key 0, ends past seqlen_k, the int32
// extremes, overlapping and touching ranges) and lengths with seqlen_q below, equal to and above seqlen_k.
struct RangesProblem {
  flare_mha_fwd_params p;
  std::vector<int32_t> ranges;  // [1, n, 2]
  flare::SequenceInfo seq;
  flare::MaskSpec mask;
};

RangesProblem random_ranges_problem(std::mt19937& rng, int trial) {
  RangesProblem r;
  flare_mha_fwd_params_init(&r.p);
  const int sq = 1 + int(rng() % 300), sk = int(rng() % 400);
  const int n = int(rng() % 4);
  r.ranges.resize(2 * std::max(n, 1));
  for (int i = 0; i < n; ++i) {
    int s = int(rng() % (sk + 40)) - 20, e = s + int(rng() % 160) - 10;  // some empty
    if (rng() % 6 == 0) e = s;
    if (rng() % 12 == 0) s = INT32_MIN;  // the int32 extremes: no overflow anywhere
    if (rng() % 12 == 0) e = INT32_MAX;
    r.ranges[2 * i] = s, r.ranges[2 * i + 1] = e;
  }
  r.p.mm_prefix_ranges = r.ranges.data();
  r.p.max_mm_prefix_ranges = n;
  r.p.mm_prefix_ranges_batch_stride = 2 * std::max(n, 1);
  const int kind = trial % 5;
  const bool causal = kind == 0 || kind == 3;
  const int wl = kind == 1 || kind == 3 ? int(rng() % 70) : -1;
  const int wr = kind == 1 ? int(rng() % 20) : kind == 2 ? int(rng() % 40) : -1;
  r.p.causal = causal, r.p.window_left = wl, r.p.window_right = wr;
  r.seq = flare::SequenceInfo{0, sq, sk, 0, 0, 0, 0};
  r.mask = flare::make_mask(sq, sk, causal, wl, wr);
  return r;
}

TEST(SemanticsPrefixRanges, RowKeysAreKeyVisible) {
  std::mt19937 rng(20);
  for (int trial = 0; trial < 3000; ++trial) {
    const RangesProblem r = random_ranges_problem(rng, trial);
    for (int i = 0; i < r.seq.seqlen_q; ++i) {
      int first = r.mask.first_key(i), end = r.mask.end_key(i);
      flare::row_keys(r.p, 0, r.mask, i, first, end);
      for (int j = -3; j < r.seq.seqlen_k + 3; ++j) {
        const bool want = flare::key_visible(r.p, r.seq, r.mask, i, j);
        const bool got = j >= 0 && j < r.seq.seqlen_k && j >= first && j < end;
        ASSERT_EQ(got, want) << "trial " << trial << " row " << i << " key " << j;
      }
    }
  }
}

// tile_key_blocks: the blocks cover every key visible to a row of the tile, `prefix` is set
// exactly when some row sees a key outside its mask interval, and
// without it the range is key_block_range's; a block that block_needs_mask calls mask-free
// is fully visible to every row of the tile.
TEST(SemanticsPrefixRanges, TileKeyBlocksAreTheVisibleBlocks) {
  std::mt19937 rng(21);
  const int kBlockMs[] = {16, 64, 128, 192};
  const int kBlockNs[] = {64, 80, 128, 176};
  int tiles = 0, prefix_tiles = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    const RangesProblem r = random_ranges_problem(rng, trial);
    const int bm = kBlockMs[trial % 4], bn = kBlockNs[(trial / 4) % 4];
    for (int m0 = 0; m0 < r.seq.seqlen_q; m0 += bm) {
      const flare::TileKeys t = flare::tile_key_blocks(r.p, 0, r.mask, m0, m0 + bm, bn);
      int lo = INT32_MAX, hi = -1;
      bool outside_mask = false;
      for (int i = m0; i < std::min(m0 + bm, r.seq.seqlen_q); ++i)
        for (int j = 0; j < r.seq.seqlen_k; ++j) {
          if (!flare::key_visible(r.p, r.seq, r.mask, i, j)) continue;
          lo = std::min(lo, j / bn), hi = std::max(hi, j / bn);
          if (!r.mask.visible(i, j)) outside_mask = true;
        }
      ASSERT_EQ(t.prefix, outside_mask) << "trial " << trial << " m0 " << m0;
      ++tiles;
      prefix_tiles += t.prefix ? 1 : 0;
      if (!t.prefix) {
        const BlockRange k = flare::key_block_range(r.mask, m0, m0 + bm, bn);
        ASSERT_EQ(t.range.begin, k.begin) << "trial " << trial << " m0 " << m0;
        ASSERT_EQ(t.range.end, k.end) << "trial " << trial << " m0 " << m0;
      }
      if (hi < 0) {
        ASSERT_LE(t.range.end, t.range.begin) << "trial " << trial << " m0 " << m0;
        continue;
      }
      ASSERT_LE(t.range.begin, lo) << "trial " << trial << " m0 " << m0;
      ASSERT_GE(t.range.end, hi + 1) << "trial " << trial << " m0 " << m0;
      ASSERT_GE(t.range.begin, 0) << "trial " << trial << " m0 " << m0;
      ASSERT_LE(t.range.end, (r.seq.seqlen_k + bn - 1) / bn) << "trial " << trial;
      for (int nb = t.range.begin; nb < t.range.end; ++nb) {
        if (flare::block_needs_mask(r.mask, m0, m0 + bm, nb, bn)) continue;
        for (int i = m0; i < std::min(m0 + bm, r.seq.seqlen_q); ++i)
          for (int j = nb * bn; j < (nb + 1) * bn; ++j)
            ASSERT_TRUE(flare::key_visible(r.p, r.seq, r.mask, i, j))
                << "trial " << trial << " m0 " << m0 << " block " << nb;
      }
    }
  }
  // The sweep has both kinds of tiles in numbers.
  EXPECT_GT(prefix_tiles, tiles / 10) << prefix_tiles << " of " << tiles;
  EXPECT_LT(prefix_tiles, tiles - tiles / 10) << prefix_tiles << " of " << tiles;
}

// A mask that bounds no row leaves the ranges nothing to add (so GQA packing, whose one
// decode row is unbounded, ignores them exactly); without ranges tile_key_blocks is
// key_block_range.
TEST(SemanticsPrefixRanges, UnboundedMaskAndNoRangesAreTodaysBlocks) {
  std::mt19937 rng(22);
  for (int trial = 0; trial < 500; ++trial) {
    RangesProblem r = random_ranges_problem(rng, trial);
    const flare::MaskSpec full = flare::make_mask(r.seq.seqlen_q, r.seq.seqlen_k, false, -1, -1);
    EXPECT_FALSE(flare::prefix_ranges_apply(r.p, full));
    for (int i = 0; i < r.seq.seqlen_q; ++i)
      for (int j = 0; j < r.seq.seqlen_k; ++j)
        ASSERT_TRUE(flare::key_visible(r.p, r.seq, full, i, j));
    r.p.mm_prefix_ranges = nullptr;
    r.p.max_mm_prefix_ranges = 0;
    const flare::TileKeys t = flare::tile_key_blocks(r.p, 0, r.mask, 0, 64, 128);
    const BlockRange k = flare::key_block_range(r.mask, 0, 64, 128);
    EXPECT_FALSE(t.prefix);
    EXPECT_EQ(t.range.begin, k.begin);
    EXPECT_EQ(t.range.end, k.end);
  }
}

}  // namespace
