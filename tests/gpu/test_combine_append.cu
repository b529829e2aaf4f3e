// GPU tests of the two auxiliary kernels: the split-KV combine (run_split_combine) and the KV
// cache append with rotary (run_append_kv), each against a host computation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "common/lse_merge.h"
#include "common/rotary.h"
#include "common/sequence.h"
#include "kernels/fwd_launch.h"

namespace {

using flare::FwdLaunch;

#define CUDA_OK(expr)                                                          \
  do {                                                                         \
    const cudaError_t err_ = (expr);                                           \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_); \
  } while (0)

bool has_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// ---- fp16 / bf16 bits on the host ----

float bits_to_float(uint16_t b, int dtype) {
  if (dtype == FLARE_DTYPE_FP16) {
    __half h;
    std::memcpy(&h, &b, 2);
    return __half2float(h);
  }
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t float_to_bits(float x, int dtype) {
  uint16_t b;
  if (dtype == FLARE_DTYPE_FP16) {
    const __half h = __float2half_rn(x);
    std::memcpy(&b, &h, 2);
  } else {
    const __nv_bfloat16 h = __float2bfloat16_rn(x);
    std::memcpy(&b, &h, 2);
  }
  return b;
}

// Distance in units in the last place between two finite values of the same 16-bit format.
int ulp_distance(uint16_t a, uint16_t b) {
  auto ordered = [](uint16_t v) { return (v & 0x8000) ? -int(v & 0x7fff) : int(v); };
  return std::abs(ordered(a) - ordered(b));
}

// Relative spacing of the element type (one ulp at 1.0).
double dtype_eps(int dtype) { return dtype == FLARE_DTYPE_FP16 ? 1.0 / 1024 : 1.0 / 128; }

// ---- device buffers ----

struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
};

template <typename T>
void upload(DeviceBuffer& buf, const std::vector<T>& host) {
  buf.bytes = std::max<size_t>(host.size() * sizeof(T), 16);
  CUDA_OK(cudaMalloc(&buf.ptr, buf.bytes));
  if (!host.empty())
    CUDA_OK(cudaMemcpy(buf.ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
}

template <typename T>
void download(std::vector<T>& host, const DeviceBuffer& buf) {
  if (!host.empty())
    CUDA_OK(cudaMemcpy(host.data(), buf.ptr, host.size() * sizeof(T), cudaMemcpyDeviceToHost));
}

const char* dtype_name(int dtype) { return dtype == FLARE_DTYPE_FP16 ? "fp16" : "bf16"; }

// =====================================================================================
// Split combine
// =====================================================================================

struct CombineCase {
  int dtype;
  int head_dim;  // columns of the accumulators and out: the V head dim
  int num_splits;
  std::vector<int> cu_seqlens_q;  // empty: padded batch with seqlen_q = max_seqlen_q
  bool with_lse;
  int qk_head_dim = 0;  // != 0: head_dim of a (qk_head_dim, head_dim) pair, head_dim_v set
};

void run_combine_case(const CombineCase& c) {
  const int batch = 2, heads = 3, max_seqlen_q = 5;
  const int d = c.head_dim, n = c.num_splits;
  const bool varlen = !c.cu_seqlens_q.empty();
  const int64_t rows = int64_t(batch) * heads * max_seqlen_q;
  const float kNegInf = -std::numeric_limits<float>::infinity();
  const float kNaN = std::numeric_limits<float>::quiet_NaN();

  std::mt19937 rng(1234 + 97 * d + 13 * n + (varlen ? 7 : 0) + c.dtype);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  std::uniform_real_distribution<float> lse_dist(-6.f, 6.f);
  std::uniform_int_distribution<int> coin(0, 3);

  // Partials: ~1/4 of the parts empty (lse -inf, o NaN garbage), some rows empty in every part.
  std::vector<float> lse_accum(size_t(n) * rows), o_accum(size_t(n) * rows * d);
  for (int64_t r = 0; r < rows; ++r) {
    const bool row_empty = r % 7 == 3;
    for (int s = 0; s < n; ++s) {
      const bool empty = row_empty || coin(rng) == 0;
      lse_accum[s * rows + r] = empty ? kNegInf : lse_dist(rng);
      for (int k = 0; k < d; ++k) o_accum[(s * rows + r) * d + k] = empty ? kNaN : uni(rng);
    }
  }

  // Host view of the sequence layout.
  flare_mha_fwd_params hp;
  std::memset(&hp, 0, sizeof(hp));
  hp.struct_size = sizeof(hp);
  hp.window_left = hp.window_right = -1;
  hp.dtype = c.dtype;
  hp.batch = batch;
  hp.num_heads = heads;
  hp.num_heads_k = heads;
  hp.head_dim = c.qk_head_dim != 0 ? c.qk_head_dim : d;
  hp.head_dim_v = c.qk_head_dim != 0 ? d : 0;
  hp.seqlen_q = max_seqlen_q;
  hp.seqlen_k = 64;
  hp.max_seqlen_q = max_seqlen_q;
  hp.out_head_stride = d;
  hp.out_row_stride = int64_t(heads) * d;
  hp.out_batch_stride = varlen ? 0 : int64_t(max_seqlen_q) * heads * d;
  std::vector<int> cu_k;
  if (varlen) {
    hp.cu_seqlens_q = c.cu_seqlens_q.data();
    cu_k = c.cu_seqlens_q;
    hp.cu_seqlens_k = cu_k.data();
  }
  const int total_q = varlen ? c.cu_seqlens_q[batch] : batch * max_seqlen_q;
  const size_t out_elems = size_t(total_q) * heads * d;
  const size_t lse_elems = size_t(total_q) * heads;
  const size_t guard = 64;  // sentinel elements after the outputs: must stay untouched

  // Host reference in double.
  std::vector<double> ref_out(out_elems, 0.0), ref_lse(lse_elems, 0.0);
  std::vector<char> written(out_elems, 0);
  for (int b = 0; b < batch; ++b) {
    const flare::SequenceInfo seq = flare::sequence_info(hp, b);
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < seq.seqlen_q; ++i) {
        const int64_t r = (int64_t(b) * heads + h) * max_seqlen_q + i;
        std::vector<double> l(n);
        for (int s = 0; s < n; ++s) l[s] = lse_accum[s * rows + r];
        const double lse = flare::merged_lse(l.data(), n);
        const int64_t oo = flare::out_offset(hp, seq, i, h);
        for (int k = 0; k < d; ++k) {
          double acc = 0.0;
          for (int s = 0; s < n; ++s)
            if (l[s] != -INFINITY) acc += std::exp(l[s] - lse) * o_accum[(s * rows + r) * d + k];
          ref_out[oo + k] = acc;
          written[oo + k] = 1;
        }
        ref_lse[flare::lse_offset(hp, seq, i, h)] = lse;
      }
    }
  }

  // Device buffers.
  DeviceBuffer d_o, d_lse_acc, d_out, d_lse, d_cu_q, d_cu_k;
  upload(d_o, o_accum);
  upload(d_lse_acc, lse_accum);
  upload(d_out, std::vector<uint16_t>(out_elems + guard, 0x7e01));  // NaN sentinel
  upload(d_lse, std::vector<float>(lse_elems + guard, kNaN));
  if (varlen) {
    upload(d_cu_q, c.cu_seqlens_q);
    upload(d_cu_k, cu_k);
  }

  FwdLaunch launch{};
  launch.p = hp;
  launch.p.cu_seqlens_q = varlen ? d_cu_q.as<int32_t>() : nullptr;
  launch.p.cu_seqlens_k = varlen ? d_cu_k.as<int32_t>() : nullptr;
  launch.p.out = d_out.ptr;
  launch.p.lse = c.with_lse ? d_lse.as<float>() : nullptr;
  launch.num_splits = n;
  launch.max_seqlen_q = max_seqlen_q;
  launch.o_accum = d_o.as<float>();
  launch.lse_accum = d_lse_acc.as<float>();

  ASSERT_EQ(flare::run_split_combine(launch, nullptr), int(cudaSuccess));
  CUDA_OK(cudaDeviceSynchronize());

  std::vector<uint16_t> out(out_elems + guard);
  std::vector<float> lse(lse_elems + guard);
  download(out, d_out);
  download(lse, d_lse);

  const double eps = dtype_eps(c.dtype);
  int bad = 0;
  for (size_t e = 0; e < out_elems && bad < 10; ++e) {
    ASSERT_TRUE(written[e]) << "test layout does not cover element " << e;
    const float got = bits_to_float(out[e], c.dtype);
    const double want = ref_out[e];
    if (!(std::fabs(got - want) <= eps * std::fabs(want) + 1e-5)) {
      ADD_FAILURE() << "out[" << e << "] = " << got << ", expected " << want;
      ++bad;
    }
  }
  for (size_t e = out_elems; e < out_elems + guard; ++e)
    ASSERT_EQ(out[e], 0x7e01) << "write past the output at " << e;

  if (c.with_lse) {
    for (size_t e = 0; e < lse_elems && bad < 10; ++e) {
      const double want = ref_lse[e];
      if (std::isinf(want)) {
        if (!(std::isinf(lse[e]) && lse[e] < 0)) {
          ADD_FAILURE() << "lse[" << e << "] = " << lse[e] << ", expected -inf";
          ++bad;
        }
      } else if (!(std::fabs(lse[e] - want) <= 2e-6 * (1.0 + std::fabs(want)))) {
        ADD_FAILURE() << "lse[" << e << "] = " << lse[e] << ", expected " << want;
        ++bad;
      }
    }
    for (size_t e = lse_elems; e < lse_elems + guard; ++e)
      ASSERT_TRUE(std::isnan(lse[e])) << "write past the lse at " << e;
  }

  // Rows with no key at all: out exactly 0 (not NaN from the garbage), lse -inf.
  for (int b = 0; b < batch; ++b) {
    const flare::SequenceInfo seq = flare::sequence_info(hp, b);
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < seq.seqlen_q; ++i) {
        if (!std::isinf(ref_lse[flare::lse_offset(hp, seq, i, h)])) continue;
        const int64_t oo = flare::out_offset(hp, seq, i, h);
        for (int k = 0; k < d; ++k)
          ASSERT_EQ(bits_to_float(out[oo + k], c.dtype), 0.f)
              << "empty row b=" << b << " h=" << h << " i=" << i << " d=" << k;
      }
  }
}

TEST(SplitCombine, MatchesHostMerge) {
  if (!has_device()) GTEST_SKIP() << "no CUDA device";
  const std::vector<std::vector<int>> layouts = {{}, {0, 0, 4}, {0, 5, 5}};
  for (int dtype : {FLARE_DTYPE_FP16, FLARE_DTYPE_BF16})
    for (int head_dim : {8, 64, 96, 256, 512})
      for (int splits = 1; splits <= 5; ++splits)
        for (size_t layout = 0; layout < layouts.size(); ++layout) {
          CombineCase c{dtype, head_dim, splits, layouts[layout], splits != 2};
          SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << " d=" << head_dim
                                            << " splits=" << splits << " layout=" << layout);
          run_combine_case(c);
          if (::testing::Test::HasFatalFailure()) return;
        }
  // (head_dim, head_dim_v) = (192, 128): the accumulators and out have 128 columns.
  for (int splits : {2, 3}) {
    CombineCase c{FLARE_DTYPE_BF16, 128, splits, {}, true, 192};
    SCOPED_TRACE(::testing::Message() << "d=192 dv=128 splits=" << splits);
    run_combine_case(c);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// =====================================================================================
// KV cache append with rotary
// =====================================================================================

struct AppendCase {
  int dtype;
  bool paged;
  int rotary_dim;  // 0: off
  bool interleaved;
  bool causal;  // selects per-row query positions
};

void run_append_case(const AppendCase& c) {
  const int batch = 2, heads = 4, heads_k = 2, d = 64;
  const int seqlen_q = 3, seqlen_new = 3;
  const int cache_rows = 16;  // rows per sequence (unpaged capacity / pages x page size)
  const int page_size = 4, num_pages = 10, max_pages = cache_rows / page_size;
  const int cache_batches = 3;  // unpaged: cache entries (cache_batch_idx picks among them)
  const int max_positions = 32;
  const int dt = c.dtype;

  std::mt19937 rng(77 + c.rotary_dim * 5 + (c.paged ? 1 : 0) + (c.interleaved ? 2 : 0) +
                   (c.causal ? 3 : 0) + 11 * dt);
  std::uniform_real_distribution<float> uni(-2.f, 2.f);
  auto random_bits = [&](size_t count) {
    std::vector<uint16_t> v(count);
    for (auto& x : v) x = float_to_bits(uni(rng), dt);
    return v;
  };

  // Host params (host pointers) describing the same layout as the device params.
  flare_mha_fwd_params hp;
  std::memset(&hp, 0, sizeof(hp));
  hp.struct_size = sizeof(hp);
  hp.window_left = hp.window_right = -1;
  hp.dtype = dt;
  hp.batch = batch;
  hp.seqlen_q = seqlen_q;
  hp.seqlen_k = cache_rows;
  hp.num_heads = heads;
  hp.num_heads_k = heads_k;
  hp.head_dim = d;
  hp.causal = c.causal ? 1 : 0;
  // q with padded rows, k_new with padded rows, v_new dense.
  hp.q_head_stride = d;
  hp.q_row_stride = int64_t(heads) * d + 8;
  hp.q_batch_stride = hp.q_row_stride * seqlen_q;
  hp.k_new_head_stride = d;
  hp.k_new_row_stride = int64_t(heads_k) * d + 16;
  hp.k_new_batch_stride = hp.k_new_row_stride * seqlen_new;
  hp.v_new_head_stride = d;
  hp.v_new_row_stride = int64_t(heads_k) * d;
  hp.v_new_batch_stride = hp.v_new_row_stride * seqlen_new;
  hp.seqlen_new = seqlen_new;

  std::vector<int32_t> cache_seqlens, leftpad, batch_idx, block_table;
  int64_t cache_elems;
  if (c.paged) {
    // Pages of each sequence drawn from a permutation of the pool.
    std::vector<int32_t> perm(num_pages);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    block_table.assign(perm.begin(), perm.begin() + batch * max_pages);
    hp.block_table_batch_stride = max_pages;
    hp.page_block_size = page_size;
    hp.num_pages = num_pages;
    cache_seqlens = {5, 10};  // sequence 1 straddles a page boundary while appending
    hp.k_head_stride = d;
    hp.k_row_stride = int64_t(heads_k) * d;
    hp.k_batch_stride = hp.k_row_stride * page_size;
    cache_elems = hp.k_batch_stride * num_pages;
  } else {
    cache_seqlens = {5, 9};
    leftpad = {1, 3};
    batch_idx = {2, 0};
    hp.k_head_stride = d;
    hp.k_row_stride = int64_t(heads_k) * d;
    hp.k_batch_stride = hp.k_row_stride * cache_rows;
    cache_elems = hp.k_batch_stride * cache_batches;
  }
  hp.v_head_stride = hp.k_head_stride;
  hp.v_row_stride = hp.k_row_stride;
  hp.v_batch_stride = hp.k_batch_stride;
  hp.cache_seqlens = cache_seqlens.data();
  hp.leftpad_k = leftpad.empty() ? nullptr : leftpad.data();
  hp.cache_batch_idx = batch_idx.empty() ? nullptr : batch_idx.data();
  hp.block_table = block_table.empty() ? nullptr : block_table.data();

  const std::vector<uint16_t> q = random_bits(size_t(hp.q_batch_stride) * batch);
  const std::vector<uint16_t> k_new = random_bits(size_t(hp.k_new_batch_stride) * batch);
  const std::vector<uint16_t> v_new = random_bits(size_t(hp.v_new_batch_stride) * batch);
  const std::vector<uint16_t> k_cache0 = random_bits(cache_elems);
  const std::vector<uint16_t> v_cache0 = random_bits(cache_elems);
  const int rdim = c.rotary_dim, rhalf = rdim / 2;
  std::vector<uint16_t> cos_tab, sin_tab;
  if (rdim > 0) {
    cos_tab = random_bits(size_t(max_positions) * rhalf);
    sin_tab = random_bits(size_t(max_positions) * rhalf);
  }
  hp.rotary_dim = rdim;
  hp.rotary_interleaved = c.interleaved ? 1 : 0;
  hp.rotary_max_positions = max_positions;

  // Rotated element t of the head vector `x` at `pos` (float math, round to the dtype).
  auto rotate = [&](const uint16_t* x, int t, int pos) -> uint16_t {
    const flare::RotaryPair pr = flare::rotary_pair(t, rdim, c.interleaved);
    const float cs = bits_to_float(cos_tab[size_t(pos) * rhalf + pr.freq], dt);
    const float sn = bits_to_float(sin_tab[size_t(pos) * rhalf + pr.freq], dt);
    return float_to_bits(
        flare::rotary_apply(pr, bits_to_float(x[t], dt), bits_to_float(x[pr.partner], dt), cs, sn),
        dt);
  };

  // Expected caches and q_rotated; `rotated` marks elements compared within 1 ulp.
  std::vector<uint16_t> k_want = k_cache0, v_want = v_cache0;
  std::vector<char> k_rot(cache_elems, 0);
  std::vector<int> touched(cache_elems, 0);
  for (int b = 0; b < batch; ++b) {
    const flare::SequenceInfo s = flare::sequence_info(hp, b);
    // Independent of sequence.h: the first new key sits at cache position cache_seqlens[b].
    ASSERT_EQ(s.k_row0 + s.cache_len, cache_seqlens[b]);
    for (int t = 0; t < seqlen_new; ++t)
      for (int hk = 0; hk < heads_k; ++hk) {
        const int pos = cache_seqlens[b] + t;
        const int64_t ko = flare::k_offset(hp, s, s.cache_len + t, hk);
        const int64_t vo = flare::v_offset(hp, s, s.cache_len + t, hk);
        ASSERT_LT(ko + d, cache_elems + 1);
        const uint16_t* kn = &k_new[b * hp.k_new_batch_stride + t * hp.k_new_row_stride +
                                    hk * hp.k_new_head_stride];
        const uint16_t* vn = &v_new[b * hp.v_new_batch_stride + t * hp.v_new_row_stride +
                                    hk * hp.v_new_head_stride];
        for (int e = 0; e < d; ++e) {
          ++touched[ko + e];
          k_want[ko + e] = e < rdim ? rotate(kn, e, pos) : kn[e];
          k_rot[ko + e] = e < rdim;
          v_want[vo + e] = vn[e];
        }
      }
  }
  for (int x : touched) ASSERT_LE(x, 1) << "test layout writes a cache element twice";

  std::vector<uint16_t> q_want(size_t(batch) * seqlen_q * heads * d);
  for (int b = 0; b < batch; ++b) {
    const flare::SequenceInfo s = flare::sequence_info(hp, b);
    for (int i = 0; i < seqlen_q; ++i) {
      const int pos = cache_seqlens[b] + (c.causal ? i : 0);
      EXPECT_EQ(flare::rotary_q_position(hp, s, i), pos);
      for (int h = 0; h < heads; ++h) {
        const uint16_t* qs = &q[flare::q_offset(hp, s, i, h)];
        uint16_t* qd = &q_want[((size_t(b) * seqlen_q + i) * heads + h) * d];
        for (int e = 0; e < d; ++e) qd[e] = e < rdim ? rotate(qs, e, pos) : qs[e];
      }
    }
  }

  // Device side.
  DeviceBuffer d_q, d_kn, d_vn, d_k, d_v, d_cos, d_sin, d_cs, d_lp, d_bi, d_bt, d_qrot;
  upload(d_q, q);
  upload(d_kn, k_new);
  upload(d_vn, v_new);
  upload(d_k, k_cache0);
  upload(d_v, v_cache0);
  upload(d_cs, cache_seqlens);
  if (rdim > 0) {
    upload(d_cos, cos_tab);
    upload(d_sin, sin_tab);
  }
  if (!leftpad.empty()) upload(d_lp, leftpad);
  if (!batch_idx.empty()) upload(d_bi, batch_idx);
  if (!block_table.empty()) upload(d_bt, block_table);
  upload(d_qrot, std::vector<uint16_t>(q_want.size(), 0x7e01));

  flare_mha_fwd_params p = hp;
  p.q = d_q.ptr;
  p.k = d_k.ptr;
  p.v = d_v.ptr;
  p.k_new = d_kn.ptr;
  p.v_new = d_vn.ptr;
  p.cache_seqlens = d_cs.as<int32_t>();
  p.leftpad_k = leftpad.empty() ? nullptr : d_lp.as<int32_t>();
  p.cache_batch_idx = batch_idx.empty() ? nullptr : d_bi.as<int32_t>();
  p.block_table = block_table.empty() ? nullptr : d_bt.as<int32_t>();
  p.rotary_cos = rdim > 0 ? d_cos.ptr : nullptr;
  p.rotary_sin = rdim > 0 ? d_sin.ptr : nullptr;

  ASSERT_EQ(flare::run_append_kv(p, d_qrot.ptr, nullptr), int(cudaSuccess));
  CUDA_OK(cudaDeviceSynchronize());

  std::vector<uint16_t> k_got(cache_elems), v_got(cache_elems), q_got(q_want.size());
  download(k_got, d_k);
  download(v_got, d_v);
  download(q_got, d_qrot);

  int bad = 0;
  for (int64_t e = 0; e < cache_elems && bad < 10; ++e) {
    const bool k_ok = k_rot[e] ? ulp_distance(k_got[e], k_want[e]) <= 1 : k_got[e] == k_want[e];
    if (!k_ok) {
      ADD_FAILURE() << "k cache[" << e << "] = 0x" << std::hex << k_got[e] << ", expected 0x"
                    << k_want[e] << std::dec << (k_rot[e] ? " (rotated)" : "");
      ++bad;
    }
    if (v_got[e] != v_want[e]) {
      ADD_FAILURE() << "v cache[" << e << "] = 0x" << std::hex << v_got[e] << ", expected 0x"
                    << v_want[e] << std::dec;
      ++bad;
    }
  }
  for (size_t e = 0; e < q_want.size() && bad < 10; ++e) {
    const bool rotated = int(e % d) < rdim;
    const bool ok = rotated ? ulp_distance(q_got[e], q_want[e]) <= 1 : q_got[e] == q_want[e];
    if (!ok) {
      ADD_FAILURE() << "q_rotated[" << e << "] = 0x" << std::hex << q_got[e] << ", expected 0x"
                    << q_want[e] << std::dec;
      ++bad;
    }
  }

  // Without q_rotated only the caches are written (and nothing fails).
  if (!c.paged && rdim == 0) {
    ASSERT_EQ(flare::run_append_kv(p, nullptr, nullptr), int(cudaSuccess));
    CUDA_OK(cudaDeviceSynchronize());
  }
}

TEST(AppendKv, MatchesHostAppend) {
  if (!has_device()) GTEST_SKIP() << "no CUDA device";
  for (int dtype : {FLARE_DTYPE_FP16, FLARE_DTYPE_BF16})
    for (bool paged : {false, true})
      // 64 = the whole head; 32 vector paths; 24 (half = 12) and 20 (a chunk split by the
      // rotary boundary) the element-wise paths.
      for (int rotary_dim : {0, 64, 32, 24, 20})
        for (bool interleaved : {false, true})
          for (bool causal : {false, true}) {
            if (rotary_dim == 0 && interleaved) continue;
            AppendCase c{dtype, paged, rotary_dim, interleaved, causal};
            SCOPED_TRACE(::testing::Message()
                         << dtype_name(dtype) << (paged ? " paged" : " unpaged")
                         << " rotary_dim=" << rotary_dim
                         << (interleaved ? " interleaved" : " half") << (causal ? " causal" : ""));
            run_append_case(c);
            if (::testing::Test::HasFatalFailure()) return;
          }
}

}  // namespace
