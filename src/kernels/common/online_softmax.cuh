// The online softmax of the attention kernels (mma.sync prefill and decode, Hopper wgmma): the
// running state of the rows a thread holds, updated one block of scores at a time.
//
// Units: a score x is turned into a probability as exp2(x * unit_log2 - max * unit_log2), where
// unit_log2 = unit * log2(e) (unit = softmax scale, or 1 when the scores are already
// soft-capped: ScoreUnits). row_max is kept in score units.
//
// Layout: the thread holds `Rows` rows and, of each row, an even number of its columns in
// adjacent pairs (the accumulator fragments of mma.sync m16n8 and wgmma m64nN: per n8 tile and
// row, columns 2t and 2t + 1 of the quad's thread t). The rest of a row lives in the other
// threads of its row group, which the reduction policy combines (QuadRowReduce: the 4 threads
// of a quad).
#pragma once
#include <cmath>

#include "kernels/sm80/mma_sm80.cuh"

namespace flare {

// Max and sum over the 4 threads of a quad (lanes 4g .. 4g + 3), which share the rows of an
// mma.sync or wgmma accumulator fragment.
struct QuadRowReduce {
  static __device__ __forceinline__ float max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
  }
  static __device__ __forceinline__ float sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
  }
};

template <int Rows, typename Reduce = QuadRowReduce>
struct OnlineSoftmax {
  float row_sum[Rows];  // this thread's part of each row's sum of probabilities, relative to
                        // row_max (the row group's parts are added at the end: finalize)
  float row_max[Rows];  // each row's running max in score units; -inf: no visible key yet

  // The empty state: no key seen.
  __device__ __forceinline__ void init() {
#pragma unroll
    for (int r = 0; r < Rows; ++r) row_max[r] = -INFINITY;
#pragma unroll
    for (int r = 0; r < Rows; ++r) row_sum[r] = 0.f;
  }

  // Takes one block of (already masked and modified) scores: score(r, c) is this thread's
  // column c of row r (c < Cols, Cols even, columns 2k and 2k + 1 adjacent), a float& that is
  // overwritten with its probability. correction[r] receives the factor exp2((old max - new
  // max) * unit_log2) by which row r's earlier output and sum are rescaled (rescale_tile).
  // A row that has seen only masked keys keeps max -inf; its probabilities exp2(-inf - 0) are 0.
  template <int Cols, typename Score>
  __device__ __forceinline__ void update(Score&& score, float unit_log2,
                                         float (&correction)[Rows]) {
    static_assert(Cols % 2 == 0, "columns in pairs");
#pragma unroll
    for (int r = 0; r < Rows; ++r) {
      float mx = row_max[r];
#pragma unroll
      for (int k = 0; k < Cols / 2; ++k)
        mx = fmaxf(mx, fmaxf(score(r, 2 * k), score(r, 2 * k + 1)));
      mx = Reduce::max(mx);
      const float base = mx == -INFINITY ? 0.f : mx * unit_log2;
      correction[r] = sm80::fast_exp2(row_max[r] * unit_log2 - base);
      row_max[r] = mx;
      float sum = 0.f;
#pragma unroll
      for (int k = 0; k < Cols / 2; ++k)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = score(r, 2 * k + e);
          const float pe = sm80::fast_exp2(x * unit_log2 - base);
          x = pe;
          sum += pe;
        }
      row_sum[r] = row_sum[r] * correction[r] + sum;
    }
  }

  // Rescales one n8 output accumulator tile of rows 2 pair and 2 pair + 1 (elements 0, 1 of
  // the first row, 2, 3 of the second) by the rows' corrections.
  static __device__ __forceinline__ void rescale_tile(float* tile, const float (&correction)[Rows],
                                                      int pair) {
    tile[0] *= correction[2 * pair];
    tile[1] *= correction[2 * pair];
    tile[2] *= correction[2 * pair + 1];
    tile[3] *= correction[2 * pair + 1];
  }

  // The whole row's sum (this thread's part added to its row group's).
  __device__ __forceinline__ float total_sum(int r) const { return Reduce::sum(row_sum[r]); }

  // Row r's output normaliser (1 / sum) and log-sum-exp (natural log) from its max `max_log2`
  // (in log2 units: row_max * unit_log2) and total sum. A row that saw no visible key (sum 0)
  // gets normaliser 0 (output 0) and LSE -inf.
  static __device__ __forceinline__ void finish(float max_log2, float sum, float& inv_sum,
                                                float& lse) {
    const bool empty = !(sum > 0.f);
    inv_sum = empty ? 0.f : 1.f / sum;
    lse = empty ? -INFINITY : (max_log2 + __log2f(sum)) * 0.6931471805599453f;
  }

  // finish for every row of this state (the max's conversion to log2 units fused into the LSE).
  __device__ __forceinline__ void finalize(float unit_log2, float (&inv_sum)[Rows],
                                           float (&lse)[Rows]) const {
#pragma unroll
    for (int r = 0; r < Rows; ++r) {
      const float sum = total_sum(r);
      const bool empty = !(sum > 0.f);
      inv_sum[r] = empty ? 0.f : 1.f / sum;
      lse[r] = empty ? -INFINITY : (row_max[r] * unit_log2 + __log2f(sum)) * 0.6931471805599453f;
    }
  }

  // finish with a sink logit `sink_log2` (log2 units, the sink z times log2(e)) in the
  // denominator: lse = log(exp(z) + sum), output weight 1 / (sum + exp(z - max)). The larger of
  // the row max and the sink is the reference point, so neither term overflows however far z
  // lies from the scores. An empty row gets normaliser 0 and LSE z; a sink of -inf (none) is
  // plain finish.
  static __device__ __forceinline__ void finish_with_sink(float max_log2, float sum,
                                                          float sink_log2, float& inv_sum,
                                                          float& lse) {
    if (!(sink_log2 > -INFINITY)) {
      finish(max_log2, sum, inv_sum, lse);
      return;
    }
    const bool empty = !(sum > 0.f);
    const float ref = empty ? sink_log2 : fmaxf(max_log2, sink_log2);
    const float keys = empty ? 0.f : sm80::fast_exp2(max_log2 - ref);  // weight of the keys' sum
    const float total = sum * keys + sm80::fast_exp2(sink_log2 - ref);
    inv_sum = __fdividef(keys, total);  // 1 <= total <= key count + 1: no slow path needed
    lse = (ref + __log2f(total)) * 0.6931471805599453f;
  }

  // finalize with each row's sink logit in log2 units (-inf: none), for launches that are not
  // split (a split writes its part without the sink; the combine adds it once).
  __device__ __forceinline__ void finalize(float unit_log2, const float (&sink_log2)[Rows],
                                           float (&inv_sum)[Rows], float (&lse)[Rows]) const {
#pragma unroll
    for (int r = 0; r < Rows; ++r) {
      const float sum = total_sum(r);
      const float max_log2 = row_max[r] == -INFINITY ? -INFINITY : row_max[r] * unit_log2;
      finish_with_sink(max_log2, sum, sink_log2[r], inv_sum[r], lse[r]);
    }
  }

  // Merging states (of the same rows over disjoint keys): a state with max m (log2 units) and
  // sum s enters the merged state, whose max is the largest m, with weight exp2(m - max) on its
  // sum and output; an empty state (m -inf) with weight 0.
  static __device__ __forceinline__ float merge_weight(float max_log2, float merged_max_log2) {
    return merged_max_log2 == -INFINITY ? 0.f : sm80::fast_exp2(max_log2 - merged_max_log2);
  }
};

}  // namespace flare
