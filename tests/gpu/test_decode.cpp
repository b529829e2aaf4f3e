// GPU tests of the KV-cache (decode) path: flash_attn_with_kvcache semantics through the C ABI.
//
// Each case builds q [batch, seqlen_q, heads, d], a K/V cache (unpaged [batch_cache, capacity,
// heads_k, d] or a paged pool [num_pages, page, heads_k, d] with pages in a random permutation),
// cache_seqlens, and optionally k_new/v_new (appended before attention), rotary tables,
// cache_batch_idx and leftpad_k. The host copy of the cache goes through ref::append_kv, then
// ref::attention_forward (float64 and naive) gives the reference. After the GPU call:
//   - the output and lse are checked like the prefill sweep (gpu_test_util.h: check_output),
//   - the downloaded cache equals the host-appended cache element by element: exact for every
//     element except the appended K rows with rotary, which may differ by 1 ulp (the rotation is
//     computed in fp32 and rounded once, and the two may round differently on ties),
//   - with num_splits != 1 the call is repeated unsplit and the two outputs agree within the
//     same tolerance as the reference comparison (re-running is idempotent: the append writes
//     the same rows with the same values).
//
// Sweep (DecodeSweep):
//   Features/*   17 features x 9 head dims (d512: the prefill kernel) x 2 dtypes; batch,
//                capacity, LSE and num_splits (1, 2, 3, 7, 0 = heuristic, 128) rotate over the
//                cases.
//   Pages/*      page sizes 16, 64, 256, 512 and 1, 3, 48 x every split count x {q1 append1,
//                q4 causal append4 + rotary}.
//   Edges/*      split counts beyond the key blocks with short or empty caches (empty splits,
//                rows that see nothing: out 0, lse -inf).
//   Heuristic/*  batch 1, heads 2, seqlen_q 8, seqlen_k 512, d64: the heuristic must split
//                (flare_mha_fwd_num_splits >= 2) and still match the reference.
//   Shared/*     pages shared by two sequences (read-only, no append).
//   Long/*       caches up to 8192 rows.
//   Chunks/*     chunked prefill (40 / 130 query rows appended) into paged and unpaged caches,
//                d64/d96/d128/d192/d256: the prefill kernels (Hopper: wgmma) on a KV cache;
//                pages of 1 and 3 rows at d64/d128/d256.
//   Narrow/*     head dims 1, 7, 59, 111 (contiguous: strides not multiples of 8) and 200 (a
//                control) with append, rotary (even rotary_dim, both modes), GQA packing,
//                pages, leftpad, cache_batch_idx, windows and split-KV: the narrow launches
//                (flare's common/narrow.h) of the append pass, decode and prefill kernels.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gpu/gpu_test_util.h"

namespace flare_test {
namespace {

struct DecCase {
  size_t id = 0;
  std::string group;
  std::string name;
  int dtype = FLARE_DTYPE_BF16;
  int head_dim = 64;
  int batch = 2;
  int seqlen_q = 1;
  int num_heads = 4, num_heads_k = 4;
  int capacity = 256;  // rows per sequence (paged: rounded up to whole pages)
  int seqlen_new = 0;  // 0: no append (k_new/v_new null)
  int rotary_dim = 0;
  bool rotary_interleaved = false;
  bool batch_idx = false;  // cache_batch_idx into a larger cache
  bool leftpad = false;
  int page_size = 0;  // 0: unpaged
  bool shared_pages = false;
  bool causal = false;
  int window_left = -1, window_right = -1;
  int alibi = 0;
  float softcap = 0.f;
  bool lse = true;
  int num_splits = 1;
  bool padded = false;  // padded strides for q, out, the cache and k_new/v_new
  bool expect_split = false;  // the heuristic must pick >= 2 splits
  std::vector<int> cache_lens;  // cache_seqlens (leftpad rows included)
  std::vector<int> leftpads;
};

void PrintTo(const DecCase& c, std::ostream* os) { *os << c.name; }

std::string window_tag(int w) { return w < 0 ? "n" : std::to_string(w); }

std::string make_name(const DecCase& c) {
  std::ostringstream os;
  char idx[16];
  std::snprintf(idx, sizeof idx, "%04zu", c.id);
  os << c.group << idx << "_" << dtype_name(c.dtype) << "_d" << c.head_dim << "_b" << c.batch
     << "_q" << c.seqlen_q << "_h" << c.num_heads << "x" << c.num_heads_k << "_cap" << c.capacity;
  if (c.seqlen_new > 0) os << "_new" << c.seqlen_new;
  if (c.rotary_dim > 0) os << "_rot" << (c.rotary_interleaved ? "I" : "H") << c.rotary_dim;
  if (c.page_size > 0) os << "_page" << c.page_size;
  if (c.shared_pages) os << "_shared";
  if (c.batch_idx) os << "_bidx";
  if (c.leftpad) os << "_lpad";
  if (c.causal) os << "_causal";
  if (c.window_left >= 0 || c.window_right >= 0)
    os << "_win" << window_tag(c.window_left) << "_" << window_tag(c.window_right);
  if (c.alibi) os << "_alibi";
  if (c.softcap > 0) os << "_softcap" << int(c.softcap);
  if (c.padded) os << "_padded";
  os << (c.lse ? "_lse" : "_nolse") << "_sp" << c.num_splits;
  return os.str();
}

uint64_t case_seed(const DecCase& c) { return mix_seed(base_seed(), 0xDEC0000 + c.id); }

std::string describe(const DecCase& c) {
  std::ostringstream os;
  os << c.name << " seed=0x" << std::hex << case_seed(c) << std::dec << " cache_seqlens={";
  for (size_t i = 0; i < c.cache_lens.size(); ++i) os << (i ? "," : "") << c.cache_lens[i];
  os << "}";
  if (!c.leftpads.empty()) {
    os << " leftpad={";
    for (size_t i = 0; i < c.leftpads.size(); ++i) os << (i ? "," : "") << c.leftpads[i];
    os << "}";
  }
  return os.str();
}

int effective_capacity(const DecCase& c) {
  if (c.page_size <= 0) return c.capacity;
  return (c.capacity + c.page_size - 1) / c.page_size * c.page_size;
}

// Fills cache_lens (and leftpads) for a case: random fill levels that leave room for the
// append, with the first sequences pinned to edge values.
void choose_lengths(DecCase& c, uint64_t salt, std::vector<int> pinned = {}) {
  std::mt19937_64 rng(mix_seed(base_seed() ^ 0xCAFE, salt));
  const int cap = effective_capacity(c);
  const int hi = cap - c.seqlen_new;
  std::uniform_int_distribution<int> ud(0, std::max(0, hi));
  c.cache_lens.assign(c.batch, 0);
  for (int b = 0; b < c.batch; ++b)
    c.cache_lens[b] = b < int(pinned.size()) ? std::min(pinned[b], hi) : ud(rng);
  c.leftpads.clear();
  if (c.leftpad) {
    c.leftpads.resize(c.batch);
    for (int b = 0; b < c.batch; ++b) {
      std::uniform_int_distribution<int> lp(0, c.cache_lens[b]);
      c.leftpads[b] = b == 0 ? 0 : lp(rng);  // sequence 0 without padding
    }
  }
}

// ---------------------------------------------------------------------------------------------
HostProblem build_decode_problem(const DecCase& c) {
  std::mt19937_64 rng(case_seed(c));
  HostProblem hp;
  flare_mha_fwd_params& p = hp.tmpl;
  flare_mha_fwd_params_init(&p);
  p.dtype = c.dtype;
  p.head_dim = c.head_dim;
  p.batch = c.batch;
  p.seqlen_q = c.seqlen_q;
  p.num_heads = c.num_heads;
  p.num_heads_k = c.num_heads_k;
  p.causal = c.causal ? 1 : 0;
  p.window_left = c.window_left;
  p.window_right = c.window_right;
  p.softcap = c.softcap;
  p.num_splits = c.num_splits;
  const int h = c.num_heads, hk = c.num_heads_k, d = c.head_dim;
  const int layout = c.padded ? kPaddedStrides : kContiguous;

  const Strides sq = make_strides(layout, c.batch, c.seqlen_q, h, d);
  hp.buf[kBufQ] = random_tensor(sq.elems, c.dtype, rng);
  hp.q = {kBufQ, 0};
  p.q_batch_stride = sq.batch, p.q_row_stride = sq.row, p.q_head_stride = sq.head;
  p.out_batch_stride = sq.batch, p.out_row_stride = sq.row, p.out_head_stride = sq.head;
  hp.out_elems = sq.elems;
  hp.ref_lse_elems = size_t(c.batch) * h * c.seqlen_q;
  hp.lse_elems = c.lse ? hp.ref_lse_elems : 0;

  const int cap = effective_capacity(c);
  Strides sc;
  if (c.page_size > 0) {
    const int max_pages = cap / c.page_size;
    const int spare = 3;  // pages no sequence owns: must stay untouched
    const int num_pages = c.batch * max_pages + spare;
    sc = make_strides(layout, num_pages, c.page_size, hk, d);
    std::vector<int32_t> perm(num_pages);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    const int stride = max_pages + 1;  // one padding column, pointing at a spare page
    hp.block_table.assign(size_t(c.batch) * stride, perm[num_pages - 1]);
    for (int b = 0; b < c.batch; ++b)
      for (int j = 0; j < max_pages; ++j)
        hp.block_table[size_t(b) * stride + j] = perm[size_t(b) * max_pages + j];
    if (c.shared_pages && c.batch >= 2) {
      // Sequence 1 shares the leading pages (a common prefix) of sequence 0.
      const int shared = std::max(1, std::min(c.cache_lens[0], c.cache_lens[1]) / c.page_size);
      for (int j = 0; j < shared && j < max_pages; ++j)
        hp.block_table[size_t(stride) + j] = hp.block_table[j];
    }
    p.block_table_batch_stride = stride;
    p.page_block_size = c.page_size;
    p.num_pages = num_pages;
  } else {
    const int batch_cache = c.batch_idx ? c.batch + 2 : c.batch;
    sc = make_strides(layout, batch_cache, cap, hk, d);
    if (c.batch_idx) {
      std::vector<int32_t> entries(batch_cache);
      std::iota(entries.begin(), entries.end(), 0);
      std::shuffle(entries.begin(), entries.end(), rng);
      hp.cache_batch_idx.assign(entries.begin(), entries.begin() + c.batch);
    }
  }
  p.seqlen_k = cap;
  // The whole cache is random: rows past the fill level or inside the left padding hold
  // garbage that must neither be read into attention nor be overwritten.
  hp.buf[kBufK] = random_tensor(sc.elems, c.dtype, rng);
  hp.buf[kBufV] = random_tensor(sc.elems, c.dtype, rng);
  hp.k = {kBufK, 0};
  hp.v = {kBufV, 0};
  p.k_batch_stride = sc.batch, p.k_row_stride = sc.row, p.k_head_stride = sc.head;
  p.v_batch_stride = sc.batch, p.v_row_stride = sc.row, p.v_head_stride = sc.head;

  hp.cache_seqlens.assign(c.cache_lens.begin(), c.cache_lens.end());
  if (c.leftpad) hp.leftpad_k.assign(c.leftpads.begin(), c.leftpads.end());

  if (c.seqlen_new > 0) {
    const Strides sn = make_strides(layout, c.batch, c.seqlen_new, hk, d);
    hp.buf[kBufKNew] = random_tensor(sn.elems, c.dtype, rng);
    hp.buf[kBufVNew] = random_tensor(sn.elems, c.dtype, rng);
    hp.k_new = {kBufKNew, 0};
    hp.v_new = {kBufVNew, 0};
    p.seqlen_new = c.seqlen_new;
    p.k_new_batch_stride = sn.batch, p.k_new_row_stride = sn.row, p.k_new_head_stride = sn.head;
    p.v_new_batch_stride = sn.batch, p.v_new_row_stride = sn.row, p.v_new_head_stride = sn.head;
  }
  if (c.rotary_dim > 0) {
    // Standard rotary tables: angle(pos, i) = pos * 10000^(-2i / rotary_dim), in the dtype.
    const int half = c.rotary_dim / 2;
    hp.buf[kBufCos].resize(size_t(cap) * half);
    hp.buf[kBufSin].resize(size_t(cap) * half);
    for (int pos = 0; pos < cap; ++pos)
      for (int i = 0; i < half; ++i) {
        const double theta = pos * std::pow(10000.0, -2.0 * i / c.rotary_dim);
        hp.buf[kBufCos][size_t(pos) * half + i] = flare::ref::from_double(std::cos(theta), c.dtype);
        hp.buf[kBufSin][size_t(pos) * half + i] = flare::ref::from_double(std::sin(theta), c.dtype);
      }
    hp.rotary_cos = {kBufCos, 0};
    hp.rotary_sin = {kBufSin, 0};
    p.rotary_dim = c.rotary_dim;
    p.rotary_interleaved = c.rotary_interleaved ? 1 : 0;
    p.rotary_max_positions = cap;
  }
  if (c.alibi) {
    hp.alibi.resize(h);
    for (int i = 0; i < h; ++i) hp.alibi[i] = std::pow(2.f, -8.f * float(i + 1) / float(h));
  }
  return hp;
}

// ---------------------------------------------------------------------------------------------
// The sweep.
constexpr int kHeadDims[] = {32, 40, 64, 80, 96, 128, 192, 256, 512};
constexpr int kDecodeSplits[] = {1, 2, 3, 7, 0, 128};
constexpr int kPageSizes[] = {16, 64, 256, 512};
// Page sizes below and between those: every key row its own page, pages smaller than the
// decode kernel's 16-row warp groups, and a size that is no multiple of 16.
constexpr int kSmallPageSizes[] = {1, 3, 48};

int rot_half_dim(int d) { return (d / 2) % 2 == 0 ? d / 2 : d / 2 - 1; }

void add_features(std::vector<DecCase>& out) {
  const int caps[] = {256, 700, 1024};
  int n = 0;
  for (int dt = 0; dt < 2; ++dt)
    for (size_t hi = 0; hi < sizeof(kHeadDims) / sizeof(int); ++hi)
      for (int f = 0; f < 17; ++f, ++n) {
        if (quick_mode() && n % 6 != 0) continue;
        DecCase c;
        c.group = "dfeat";
        c.dtype = dt == 0 ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
        const int d = kHeadDims[hi];
        c.head_dim = d;
        c.batch = (f + hi) % 2 == 0 ? 3 : 1;
        c.capacity = caps[(f + hi + dt) % 3];
        c.lse = (f + hi + dt) % 4 != 3;
        c.num_splits = kDecodeSplits[(f + hi * 2 + dt) % 6];
        switch (f) {
          case 0: break;  // no append, one query row
          case 1: c.seqlen_new = 1; break;
          case 2: c.seqlen_q = 4, c.seqlen_new = 4, c.causal = true; break;
          case 3: c.seqlen_new = 1, c.rotary_dim = d, c.rotary_interleaved = true; break;
          case 4:
            c.seqlen_q = 3, c.seqlen_new = 3, c.causal = true;
            c.rotary_dim = rot_half_dim(d);
            break;
          case 5: c.seqlen_q = 2, c.seqlen_new = 2, c.rotary_dim = d; break;  // shared position
          case 6: c.num_heads = 8, c.num_heads_k = 2, c.seqlen_new = 1; break;  // packed GQA
          case 7: c.num_heads = 6, c.num_heads_k = 1, c.seqlen_new = 1; break;  // MQA
          case 8:
            c.num_heads = 4, c.num_heads_k = 2;
            c.seqlen_q = 5, c.seqlen_new = 5, c.causal = true;
            break;
          case 9:
            c.window_left = 64, c.window_right = 0;
            c.seqlen_q = (hi % 2) ? 4 : 1, c.seqlen_new = c.seqlen_q;
            break;
          case 10: c.batch_idx = true, c.seqlen_q = 2, c.seqlen_new = 2, c.causal = true; break;
          case 11:
            c.leftpad = true, c.seqlen_new = 1;
            c.rotary_dim = d, c.rotary_interleaved = true;
            c.batch = 3;
            break;
          case 12: c.page_size = kPageSizes[(hi + dt) % 4], c.seqlen_new = 1; break;
          case 13:
            c.page_size = kPageSizes[(hi + dt + 2) % 4];
            c.rotary_dim = rot_half_dim(d);
            c.num_heads = 8, c.num_heads_k = 2;
            c.seqlen_q = 4, c.seqlen_new = 4, c.causal = true;
            break;
          case 14:
            c.alibi = 1, c.softcap = 30.f;
            c.num_heads = 4, c.num_heads_k = 1;
            c.seqlen_q = 2, c.seqlen_new = 2, c.causal = true;
            break;
          case 15:
            // Fewer new keys than queries (and no append at all) with a causal mask.
            c.seqlen_q = 3, c.seqlen_new = (hi % 2) ? 1 : 5, c.causal = true;
            break;
          case 16:
            c.padded = true, c.leftpad = true, c.batch = 3;
            c.seqlen_q = 2, c.seqlen_new = 2, c.causal = true;
            break;
        }
        choose_lengths(c, n, {c.capacity - c.seqlen_new, 0});
        out.push_back(c);
      }
}

void add_pages(std::vector<DecCase>& out) {
  int n = 0;
  std::vector<int> pages(std::begin(kPageSizes), std::end(kPageSizes));
  pages.insert(pages.end(), std::begin(kSmallPageSizes), std::end(kSmallPageSizes));
  for (int page : pages)
    for (int sp : kDecodeSplits)
      for (int mode = 0; mode < 2; ++mode, ++n) {
        if (quick_mode() && n % 4 != 0) continue;
        DecCase c;
        c.group = "dpage";
        c.dtype = n % 2 ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
        c.head_dim = mode == 0 ? 128 : 64;
        c.batch = 3;
        c.capacity = 1024;
        c.page_size = page;
        c.num_splits = sp;
        c.num_heads = 8, c.num_heads_k = 2;
        if (mode == 0) {
          c.seqlen_new = 1;
        } else {
          c.seqlen_q = 4, c.seqlen_new = 4, c.causal = true;
          c.rotary_dim = 64, c.rotary_interleaved = n % 4 == 1;
          c.leftpad = page == 64 || page == 3;
        }
        // Fill levels: empty, one page boundary +- 1, random.
        choose_lengths(c, 1000 + n, {0, page + (mode ? -1 : 1)});
        out.push_back(c);
      }
}

void add_edges(std::vector<DecCase>& out) {
  const std::vector<std::vector<int>> lens = {{0, 0}, {0, 1, 63}, {64, 65, 5}, {1}};
  int n = 0;
  for (const auto& l : lens)
    for (int append = 0; append < 2; ++append)
      for (int sp : {128, 7}) {
        DecCase c;
        c.group = "dedge";
        c.dtype = n % 2 ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
        c.head_dim = n % 3 == 0 ? 128 : 64;
        c.batch = int(l.size());
        c.capacity = 2048;  // 32 key blocks: most splits of the short sequences are empty
        c.seqlen_q = append ? 4 : 1;
        c.seqlen_new = append ? 4 : 0;
        c.causal = append == 1;
        c.num_splits = sp;
        c.num_heads = 4, c.num_heads_k = n % 2 ? 1 : 4;
        choose_lengths(c, 2000 + n, l);
        out.push_back(c);
        ++n;
      }
}

void add_heuristic(std::vector<DecCase>& out) {
  for (int dt = 0; dt < 2; ++dt)
    for (int causal = 0; causal < 2; ++causal) {
      DecCase c;
      c.group = "dheur";
      c.dtype = dt == 0 ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
      c.head_dim = 64;
      c.batch = 1;
      c.num_heads = 2, c.num_heads_k = 2;
      c.seqlen_q = 8;
      c.capacity = 512;
      c.causal = causal == 1;
      c.num_splits = 0;
      c.expect_split = true;
      choose_lengths(c, 3000 + dt * 2 + causal, {512});
      out.push_back(c);
    }
}

void add_shared(std::vector<DecCase>& out) {
  int n = 0;
  for (int page : {16, 64})
    for (int sp : {0, 3}) {
      DecCase c;
      c.group = "dshared";
      c.dtype = n % 2 ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
      c.head_dim = 128;
      c.batch = 3;
      c.capacity = 512;
      c.page_size = page;
      c.shared_pages = true;
      c.seqlen_q = n % 2 ? 4 : 1;
      c.causal = true;
      c.num_heads = 8, c.num_heads_k = 2;
      c.num_splits = sp;
      choose_lengths(c, 4000 + n, {300, 200 + n * 37, 100});
      out.push_back(c);
      ++n;
    }
}

void add_long(std::vector<DecCase>& out) {
  int n = 0;
  for (int sq : {1, 16})
    for (int sp : {0, 1, 7})
      for (int page : {0, 256}) {
        if (quick_mode() && n % 3 != 0) {
          ++n;
          continue;
        }
        DecCase c;
        c.group = "dlong";
        c.dtype = n % 2 ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
        c.head_dim = 128;
        c.batch = 2;
        c.capacity = 8192;
        c.page_size = page;
        c.seqlen_q = sq, c.seqlen_new = sq;
        c.causal = sq > 1;
        c.num_heads = 8, c.num_heads_k = 2;
        c.num_splits = sp;
        choose_lengths(c, 5000 + n, {8192 - sq, 3000});
        out.push_back(c);
        ++n;
      }
}

// Chunked prefill into a cache: more than 16 query rows take the prefill kernels (on Hopper the
// wgmma kernels: unpaged K/V by TMA with open row extents, paged K/V by cp.async, paged d192 /
// d256 on the all-threads kernel), for every head dim that has a Hopper kernel, the padded
// d96 / d192 (run on the d128 / d256 kernels) included. Capacity >= 1024 keys: the d256
// kernel's warp-specialised rule applies to the unpaged d192 / d256 cases.
void add_chunks(std::vector<DecCase>& out) {
  const int splits[] = {1, 0, 3};
  int n = 0;
  // The fields every chunk case shares; case i (its number) picks dtype, splits, lse, rotary.
  auto chunk_case = [&](int i, int hd, int page, int sq, int heads) {
    DecCase c;
    c.group = "dchunk";
    c.dtype = i % 2 ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
    c.head_dim = hd;
    c.batch = 2;
    c.capacity = 1100;
    c.page_size = page;
    c.seqlen_q = sq, c.seqlen_new = sq;
    c.causal = true;
    c.num_heads = heads, c.num_heads_k = 2;
    c.num_splits = splits[i % 3];
    c.lse = i % 4 != 3;
    if (i % 4 == 1) c.rotary_dim = rot_half_dim(hd);
    return c;
  };
  for (int hd : {64, 96, 128, 192, 256})
    for (int page : {0, 64, 16})
      for (int sq : {40, 130}) {
        const int i = n++;
        if (quick_mode() && i % 3 != 0) continue;
        DecCase c = chunk_case(i, hd, page, sq, 4);
        if (page == 0 && i % 4 == 2) c.batch_idx = true;
        if (i % 5 == 4) c.leftpad = true;
        choose_lengths(c, 6000 + i, {0, effective_capacity(c) - sq});
        out.push_back(c);
      }
  // Small pages: the prefill kernels (Hopper: the paged producer) over pages of 1 and 3 rows,
  // with leftpad and GQA.
  for (int hd : {64, 128, 256})
    for (int page : {1, 3})
      for (int sq : {40, 130}) {
        const int i = n++;
        if (quick_mode() && i % 3 != 0) continue;
        DecCase c = chunk_case(i, hd, page, sq, 8);
        c.leftpad = page == 3;
        choose_lengths(c, 6000 + i, {0, effective_capacity(c) - sq});
        out.push_back(c);
      }
}

// Narrow launches: the KV-cache path with head dims that are not multiples of 8 (contiguous
// tensors then have strides that are not either). rotary_dim stays even (validation).
void add_narrow(std::vector<DecCase>& out) {
  int n = 0;
  for (int d : {1, 7, 59, 111, 200})
    for (int f = 0; f < 5; ++f) {
      const int i = n++;
      if (quick_mode() && i % 2 != 0) continue;
      DecCase c;
      c.group = "dnarrow";
      c.dtype = i % 2 ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
      c.head_dim = d;
      c.batch = 3;
      c.capacity = 300;
      const int rot = d >= 2 ? d / 2 * 2 : 0;  // the largest even rotary_dim <= d
      switch (f) {
        case 0:  // decode, packed GQA, interleaved rotary over every pair, splits
          c.num_heads = 8, c.num_heads_k = 2, c.seqlen_new = 1;
          c.rotary_dim = rot, c.rotary_interleaved = true;
          c.num_splits = 3;
          break;
        case 1:  // 4 rows appended into pages of 16, half-mode rotary on part of the dims
          c.seqlen_q = 4, c.seqlen_new = 4, c.causal = true;
          c.page_size = 16;
          c.rotary_dim = rot >= 4 ? rot / 4 * 2 : rot;
          c.num_splits = 0;
          break;
        case 2:  // chunked prefill (the prefill kernel), leftpad, rotary
          c.seqlen_q = 40, c.seqlen_new = 40, c.causal = true;
          c.capacity = 500, c.leftpad = true;
          c.rotary_dim = rot;
          c.num_heads = 4, c.num_heads_k = 2, c.num_splits = 2;
          break;
        case 3:  // no append, window, cache_batch_idx, MQA
          c.num_heads = 6, c.num_heads_k = 1, c.seqlen_q = 2;
          c.window_left = 40, c.window_right = 0, c.batch_idx = true;
          c.num_splits = 7;
          break;
        case 4:  // padded strides (16-byte aligned gaps) with an odd head dim, alibi, softcap
          c.padded = true, c.seqlen_q = 3, c.seqlen_new = 3, c.causal = true;
          c.alibi = 1, c.softcap = 30.f, c.num_splits = 1;
          break;
      }
      choose_lengths(c, 7000 + i, {c.capacity - c.seqlen_new, 0});
      out.push_back(c);
    }
}

const std::vector<DecCase>& all_decode_cases() {
  static const std::vector<DecCase> cases = [] {
    std::vector<DecCase> v;
    add_features(v);
    add_pages(v);
    add_edges(v);
    add_heuristic(v);
    add_shared(v);
    add_long(v);
    add_chunks(v);
    add_narrow(v);
    for (size_t i = 0; i < v.size(); ++i) {
      v[i].id = i;
      v[i].name = make_name(v[i]);
    }
    return v;
  }();
  return cases;
}

std::vector<DecCase> cases_of(const std::string& group) {
  std::vector<DecCase> v;
  for (const DecCase& c : all_decode_cases())
    if (c.group == group) v.push_back(c);
  return v;
}

double reference_work(const DecCase& c) {
  double w = 0;
  for (int b = 0; b < c.batch; ++b) {
    const int lp = c.leftpads.empty() ? 0 : c.leftpads[b];
    w += double(c.seqlen_q) * (c.cache_lens[b] - lp + c.seqlen_new);
  }
  return w * c.num_heads * c.head_dim;
}

// ---------------------------------------------------------------------------------------------
struct DecPrepared {
  HostProblem hp;
  std::vector<uint16_t> k_after, v_after;  // host caches after ref::append_kv
  RefOutputs ref;
};

Prefetcher<DecPrepared>& decode_prefetcher() {
  static Prefetcher<DecPrepared> p;
  return p;
}

DecPrepared prepare_decode(const DecCase& c) {
  DecPrepared r;
  r.hp = build_decode_problem(c);
  r.k_after = r.hp.buf[kBufK];
  r.v_after = r.hp.buf[kBufV];
  const flare_mha_fwd_params hp = host_params(r.hp);
  flare::ref::append_kv(hp, r.k_after.data(), r.v_after.data());
  flare_mha_fwd_params after = hp;
  after.k = r.k_after.data();
  after.v = r.v_after.data();
  r.ref = compute_reference(after, r.hp);
  return r;
}

class DecodeSweep : public ::testing::TestWithParam<DecCase> {
 public:
  static void SetUpTestSuite() {
    static bool done = false;  // once for all instantiations
    if (done) return;
    done = true;
    const std::vector<DecCase>& cases = all_decode_cases();
    std::map<std::string, size_t> by_name;
    for (const DecCase& c : cases) by_name[c.name] = c.id;
    std::vector<size_t> order;
    double work = 0;
    for (const std::string& name : planned_params("DecodeSweep")) {
      const auto it = by_name.find(name);
      if (it == by_name.end()) continue;
      order.push_back(it->second);
      work += reference_work(cases[it->second]);
    }
    std::printf("DecodeSweep: %zu of %zu cases selected, CPU reference work %.3f G "
                "(sum of b*h*sq*sk*d)\n",
                order.size(), cases.size(), work * 1e-9);
    std::fflush(stdout);
    if (!g_has_device) return;
    std::vector<Prefetcher<DecPrepared>::Job> jobs;
    for (const DecCase& c : cases) jobs.push_back([c]() { return prepare_decode(c); });
    decode_prefetcher().init(std::move(jobs), order, size_t(host_threads()));
  }
};

// Element-by-element comparison of a downloaded cache with the host-appended one. Appended K
// rows with rotary may differ by 1 ulp; everything else must be bit-identical.
std::string check_cache(const char* which, const flare_mha_fwd_params& hp,
                        const std::vector<uint16_t>& got, const std::vector<uint16_t>& want,
                        bool allow_rotary_ulp) {
  if (got.size() != want.size()) return std::string(which) + ": size mismatch";
  std::vector<char> rotated(got.size(), 0);
  if (allow_rotary_ulp && hp.k_new != nullptr) {
    for (int b = 0; b < hp.batch; ++b) {
      const flare::SequenceInfo s = flare::sequence_info(hp, b);
      for (int i = 0; i < hp.seqlen_new; ++i)
        for (int hk = 0; hk < hp.num_heads_k; ++hk) {
          const int64_t base = flare::k_offset(hp, s, s.cache_len + i, hk);
          for (int t = 0; t < hp.rotary_dim; ++t) rotated[base + t] = 1;
        }
    }
  }
  size_t bad = 0, first = size_t(-1);
  for (size_t i = 0; i < got.size(); ++i) {
    const bool ok = got[i] == want[i] || (rotated[i] && ulp_distance16(got[i], want[i]) <= 1);
    if (!ok) {
      if (bad == 0) first = i;
      ++bad;
    }
  }
  if (bad == 0) return "";
  std::ostringstream os;
  os << which << " cache: " << bad << " elements differ from the host-appended cache; first at "
     << "element " << first << " got 0x" << std::hex << got[first] << " want 0x" << want[first];
  return os.str();
}

TEST_P(DecodeSweep, MatchesReference) {
  FLARE_REQUIRE_GPU();
  const DecCase& c = GetParam();
  DecPrepared prep = decode_prefetcher().take(c.id);
  const flare_mha_fwd_params hp = host_params(prep.hp);
  Stream stream;
  DeviceProblem dp(prep.hp);
  flare_mha_fwd_params p = dp.params(prep.hp);
  FLARE_SKIP_IF_NO_KERNEL(p);
  const std::string desc = describe(c);

  std::string error;
  if (run_flare(p, dp.workspace, stream.get(), &error) != FLARE_OK) {
    report_failure(desc, error);
    return;
  }
  const std::vector<uint16_t> out = dp.out.download<uint16_t>();
  const std::vector<float> lse = dp.lse.download<float>();
  const Verdict v = check_output(hp, out, lse, prep.ref);
  if (!v.ok) report_failure(desc, v.summary());

  const std::string k_msg = check_cache("K", hp, dp.buf[kBufK].download<uint16_t>(), prep.k_after,
                                        c.rotary_dim > 0);
  if (!k_msg.empty()) report_failure(desc, k_msg);
  const std::string v_msg =
      check_cache("V", hp, dp.buf[kBufV].download<uint16_t>(), prep.v_after, false);
  if (!v_msg.empty()) report_failure(desc, v_msg);

  flare_mha_fwd_params with_ws = p;
  with_ws.workspace = dp.workspace.get();
  with_ws.workspace_size = dp.workspace.bytes();
  const int splits = resolved_splits(with_ws);
  if (c.expect_split && splits < 2) {
    std::ostringstream os;
    os << "the split heuristic picked " << splits << " split(s); this shape must take the split "
       << "path (>= 2): " << flare_last_error();
    report_failure(desc, os.str());
  }

  if (c.num_splits != 1 || splits > 1) {
    // Unsplit rerun (appending again is idempotent), compared within the reference tolerance.
    dp.poison();
    flare_mha_fwd_params p1 = p;
    p1.num_splits = 1;
    if (run_flare(p1, dp.workspace, stream.get(), &error) != FLARE_OK) {
      report_failure(desc + " [num_splits=1 rerun]", error);
      return;
    }
    const std::vector<uint16_t> out1 = dp.out.download<uint16_t>();
    const double diff = max_abs_diff16(out, out1, c.dtype);
    const double bound = error_bound(v.naive_err);
    if (!(diff <= bound)) {
      std::ostringstream os;
      os << "split (" << splits << ") and unsplit outputs differ by " << diff << " > bound "
         << bound;
      report_failure(desc, os.str());
    }
  }
}

auto case_name = [](const ::testing::TestParamInfo<DecCase>& info) { return info.param.name; };

INSTANTIATE_TEST_SUITE_P(Features, DecodeSweep, ::testing::ValuesIn(cases_of("dfeat")), case_name);
INSTANTIATE_TEST_SUITE_P(Pages, DecodeSweep, ::testing::ValuesIn(cases_of("dpage")), case_name);
INSTANTIATE_TEST_SUITE_P(Edges, DecodeSweep, ::testing::ValuesIn(cases_of("dedge")), case_name);
INSTANTIATE_TEST_SUITE_P(Heuristic, DecodeSweep, ::testing::ValuesIn(cases_of("dheur")),
                         case_name);
INSTANTIATE_TEST_SUITE_P(Shared, DecodeSweep, ::testing::ValuesIn(cases_of("dshared")), case_name);
INSTANTIATE_TEST_SUITE_P(Long, DecodeSweep, ::testing::ValuesIn(cases_of("dlong")), case_name);
INSTANTIATE_TEST_SUITE_P(Chunks, DecodeSweep, ::testing::ValuesIn(cases_of("dchunk")), case_name);
INSTANTIATE_TEST_SUITE_P(Narrow, DecodeSweep, ::testing::ValuesIn(cases_of("dnarrow")), case_name);

}  // namespace
}  // namespace flare_test
