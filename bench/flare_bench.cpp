// flare_bench: forward-attention throughput through the public C ABI.
//
// A/B runs: the FLARE_* tuning variables of plan/tuning.h (FLARE_KERNEL_PATH=sm80,
// FLARE_SMEM_LIMIT_KB, FLARE_SM80_*, FLARE_SM90_*, FLARE_COMBINE_PDL) are read here, not by the
// library, and handed to it through its internal set_tuning (flare_bench links flare_static).
//
//   flare_bench [--table prefill|prefill_fp8|decode|decode_fp8|varlen|chunked|all]
//               [--dtype bf16|fp16]
//               [--json PATH]
//               [--quick] [--system-name NAME] [--iters N] [--warmup N] [--warmup-ms MS]
//
// Tables
//   prefill  16k tokens per call (batch = 16384 / seqlen), model dim 2048 (heads = 2048 / d),
//            d in {64, 128, 256}, seqlen 512 .. 16384, causal and not. Metric TFLOP/s.
//   prefill_fp8  the prefill table's shapes, each timed twice on the same shape: the --dtype call
//            (the prefill table's) and the FP8 prefill call (q, k, v e4m3: random finite codes,
//            one positive descale per (batch, head) each; out stays --dtype), interleaved twice
//            with the faster median of each kept. Per row: ms and TFLOP/s of both (FLOPs of the
//            --dtype call), the e4m3 / --dtype speed ratio and issue 21's targets, printed and
//            written to the JSON as measured (yes / NO / n/a), never asserted: e4m3 >= 1000
//            TFLOP/s at d128 non-causal 16k, >= 1150 at d256 non-causal 16k. Builds without
//            the FP8 prefill kernel (CMake FLARE_FP8_PREFILL, default OFF) skip every row with
//            one line saying why.
//   d512     the prefill table's shapes at head dim 512 (4 heads), seqlen 1024 .. 16384, causal
//            and not, each on the mma.sync d512 kernel and on the Hopper d512 kernel in turn
//            (rows of table "prefill", head_dim 512, systems "<name>-d512-mma.sync" and
//            "<name>-d512-hopper", with the Hopper kernel's speedup).
//   dv       prefill with head_dim 192 and head_dim_v 128 (DeepSeek-V3 prefill), 16 heads,
//            seqlen 1024 .. 16384, causal and not (rows of table "prefill" with "head_dim_v";
//            FLOPs 2·b·h·sq·sk·(d + dv), halved when causal).
//   overhead d128 causal 4k prefill (batch 4, 16 heads) with a sink, with mm_prefix_ranges
//            holding no range, and with a 1k-token image range, each next to the same call
//            without the feature (table "serving_overhead"; tflops counts the causal FLOPs of
//            the plain call, so the ratio of two rows is the ratio of their times).
//   serving  d512 + dv + overhead (--table d512|dv|overhead|serving; all of them in all).
//   varlen   16k tokens split into sequences of mixed lengths (128 .. 4096), d = 128, 16 heads,
//            causal and not. Metric TFLOP/s summed over the sequences.
//   decode   seqlen_q = 1, 32 query heads over 8 KV heads, d = 128, several (batch, kv length);
//            contiguous K/V and paged K/V (page 64 and 256, pages shuffled). Metric GB/s of
//            the K and V bytes read.
//   decode_fp8  the decode table's shapes, contiguous and paged (page 16), each with three KV
//            caches timed in turn: the --dtype cache (the decode table's call), e4m3 codes with
//            one descale per (batch, KV head) and e5m2 codes with one descale per tensor (q and
//            out stay --dtype). Per row: us, tokens/s (batch / time), K+V bytes read (FP8: 1
//            per element), GB/s, its fraction of the copy ceiling and the speed relative to the
//            --dtype cache; per FP8 row, whether it meets the FP8 targets (>= 1.8x the
//            --dtype cache's tokens/s where that cache's K+V is >= 1 GB; >= 85% of the copy
//            ceiling), printed and written to the JSON, never asserted.
//   chunked  chunked prefill over a paged cache: 8 sequences of 512 new tokens over 8192 cached,
//            32 / 8 heads, d = 128, causal, varlen (cu_seqlens_q / cu_seqlens_k); contiguous
//            K/V (page 0) and pages of 1, 16 and 256 rows, shuffled. Metric TFLOP/s and the
//            speed relative to the contiguous call.
// Ceilings measured in the same process: a 1 GiB device-to-device copy (GB/s counts bytes read
// plus bytes written) and, when libcublas can be loaded at run time, a bf16 GEMM 8192^3.
//
// Method: inputs are random (never zero), copied from a random pool on the device. Each shape
// gets enough independent buffer sets that one sweep over them exceeds a few times the L2 size,
// and consecutive runs use different sets, so every run reads its operands from HBM. After a
// warm-up (5 runs and at least --warmup-ms of GPU time, default 200 ms), a few large device
// copies are queued ahead of the timed runs so that the host can enqueue all of them while the
// GPU is still busy; each run is then bracketed by its own pair of CUDA events, and the median
// run time is reported (GPU time, host overhead excluded).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iterator>
#include <numeric>
#include <string>
#include <vector>

#include "flare/flare.h"
#include "common/fp8_params.h"
#include "plan/tuning.h"

#if __has_include(<cublas_v2.h>)
#include <cublas_v2.h>
#define FLARE_BENCH_HAVE_CUBLAS_HEADER 1
#endif

namespace {

// ------------------------------------------------------------------------------------------
// Error handling: every failure is fatal and explains itself.

[[noreturn]] void die(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::fprintf(stderr, "flare_bench: ");
  std::vfprintf(stderr, fmt, args);
  std::fprintf(stderr, "\n");
  va_end(args);
  std::exit(1);
}

void cuda_check(cudaError_t err, const char* what, const char* file, int line) {
  if (err != cudaSuccess) die("%s failed at %s:%d: %s", what, file, line, cudaGetErrorString(err));
}
#define CUDA_CHECK(expr) cuda_check((expr), #expr, __FILE__, __LINE__)

void flare_check(flare_status st, const char* what, const std::string& shape) {
  if (st != FLARE_OK)
    die("%s failed for %s: %s (%s)", what, shape.c_str(), flare_status_string(st),
        flare_last_error());
}

std::string strf(const char* fmt, ...) {
  char buf[512];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  return buf;
}

// ------------------------------------------------------------------------------------------
// Device memory owned by the bench.

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes) CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = o.ptr_;
      bytes_ = o.bytes_;
      o.ptr_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }

 private:
  void release() {
    if (ptr_) {
      cudaError_t err = cudaFree(ptr_);
      if (err != cudaSuccess) std::fprintf(stderr, "cudaFree: %s\n", cudaGetErrorString(err));
      ptr_ = nullptr;
    }
  }
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// ------------------------------------------------------------------------------------------
// Options and global state.

struct Options {
  std::string table = "all";
  std::string dtype = "bf16";
  std::string json_path;
  std::string system = "flare";
  bool quick = false;
  int only_d = 0, only_causal = -1, only_seqlen = 0;  // --only D,CAUSAL,SEQLEN (prefill)
  int head_dim = 0;                                    // --head-dim D: the table's rows of D
  int splits = 0;  // --splits N: decode and chunked rows force N key splits (0: the heuristic)
  int decode_heads_k = 8;  // --heads-k N: KV heads of the decode tables' 32 query heads
  int only_batch = 0, only_kv_len = 0, only_page = -1;  // --only-decode B,L,PAGE
  int warmup = 5;
  // --warmup-ms: keep warming up (batches of `warmup` runs) until this much GPU time has passed,
  // so that each shape is timed at the clocks its own load settles to under the board's power
  // cap (not at those of an idle GPU or of the previous shape). compare.py does the same.
  double warmup_ms = 200.0;
  int min_iters = 30;  // at least 20 are required; more where runs are short
  int max_iters = 300;
  double target_ms = 150.0;  // timed GPU time per shape we aim for
};

struct Row {
  std::string json;  // one complete JSON object
};

// Random elements of one type on the device, copied from at random offsets to fill tensors.
struct RandomPool {
  DeviceBuffer buf;
  size_t elems = 0;  // 0: not built yet
};

struct Bench {
  Options opt;
  cudaStream_t stream = nullptr;
  int device = 0;
  cudaDeviceProp prop{};
  size_t rotate_bytes = 0;  // one sweep over the buffer sets covers at least this much
  uint64_t rng_state = 0x9e3779b97f4a7c15ull;
  RandomPool pools[FLARE_DTYPE_E5M2 + 1];  // indexed by flare_dtype, built on first use
  DeviceBuffer blocker_src, blocker_dst;  // big copies that keep the GPU busy ahead of timing
  std::vector<cudaEvent_t> events;
  std::vector<Row> rows;
  double copy_gbs = 0.0;
  double gemm_tflops = -1.0;  // < 0: not measured
};

uint64_t next_random(uint64_t& state) {  // splitmix64
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [-1, 1), never exactly representable as zero after rounding to 16 bits.
float random_value(uint64_t& state) {
  const double u = double(next_random(state) >> 11) * (1.0 / 9007199254740992.0);
  float v = float(2.0 * u - 1.0);
  if (std::fabs(v) < 1e-3f) v = v < 0 ? -1e-3f : 1e-3f;
  return v;
}

size_t element_size(flare_dtype dtype) { return size_t(flare::element_bytes(dtype)); }

// Nominal descale of an FP8 pool: its codes hold uniform values in [-1, 1) times the format's
// largest finite value, so code x descale is again in [-1, 1).
float fp8_pool_descale(flare_dtype dtype) {
  return 1.f / (dtype == FLARE_DTYPE_E5M2 ? flare::kE5m2Max : flare::kE4m3Max);
}

// The bytes of value v as an element of `dtype` (little-endian, element_size(dtype) bytes).
// FP8: the code nearest v / the pool's descale (quantize_fp8: round to nearest even, saturated),
// so every code is finite (never e4m3's NaN codes 0x7f / 0xff, never e5m2's infinities or
// NaNs); checked all the same.
void encode_element(float v, flare_dtype dtype, uint8_t* out) {
  if (flare::is_fp8_dtype(dtype)) {
    const uint8_t code = flare::quantize_fp8(v, fp8_pool_descale(dtype), dtype);
    if (!std::isfinite(flare::fp8_to_float(code, dtype)))
      die("random FP8 code 0x%02x of %g is not finite", code, double(v));
    *out = code;
  } else if (dtype == FLARE_DTYPE_BF16) {
    const __nv_bfloat16 b = __float2bfloat16(v);
    std::memcpy(out, &b, 2);
  } else {
    const __half h = __float2half(v);
    std::memcpy(out, &h, 2);
  }
}

// Builds (once per dtype) a pool of random elements on the device. The pool length is odd so
// that chunks copied at varying offsets do not line up with the tensors' strides.
const RandomPool& ensure_pool(Bench& B, flare_dtype dtype) {
  RandomPool& pool = B.pools[dtype];
  if (pool.elems) return pool;
  const size_t n = (size_t(1) << 24) + 4099, es = element_size(dtype);
  std::vector<uint8_t> host(n * es);
  uint64_t state = 0x1234567ull + uint64_t(dtype);
  for (size_t i = 0; i < n; ++i) encode_element(random_value(state), dtype, &host[i * es]);
  pool.buf = DeviceBuffer(host.size());
  CUDA_CHECK(cudaMemcpy(pool.buf.get(), host.data(), host.size(), cudaMemcpyHostToDevice));
  // A pageable copy may return before it lands; the bench stream does not wait for it.
  CUDA_CHECK(cudaDeviceSynchronize());
  pool.elems = n;
  return pool;
}

// Fills `elems` elements of `dtype` at dst with pool data taken from random offsets.
void fill_random(Bench& B, void* dst, size_t elems, flare_dtype dtype) {
  const RandomPool& pool = ensure_pool(B, dtype);
  const size_t es = element_size(dtype);
  char* out = static_cast<char*>(dst);
  size_t done = 0;
  while (done < elems) {
    const size_t offset = next_random(B.rng_state) % (pool.elems / 2);
    const size_t chunk = std::min(elems - done, pool.elems - offset);
    CUDA_CHECK(cudaMemcpyAsync(out + done * es, pool.buf.as<char>() + offset * es, chunk * es,
                               cudaMemcpyDeviceToDevice, B.stream));
    done += chunk;
  }
}

DeviceBuffer random_buffer(Bench& B, size_t elems, flare_dtype dtype) {
  DeviceBuffer buf(elems * element_size(dtype));
  fill_random(B, buf.get(), elems, dtype);
  return buf;
}

DeviceBuffer int_buffer(const std::vector<int32_t>& values) {
  DeviceBuffer buf(std::max<size_t>(values.size(), 1) * sizeof(int32_t));
  if (!values.empty())
    CUDA_CHECK(cudaMemcpy(buf.get(), values.data(), values.size() * sizeof(int32_t),
                          cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaDeviceSynchronize());  // see above: the bench stream does not wait for it
  return buf;
}

// Params over buffer set 0 of q, k, v, out (time_rotating moves a call to the other sets): the
// call's dtype and the four tensors, every other field flare_mha_fwd_params_init's default.
flare_mha_fwd_params params_over_first_set(flare_dtype dtype, const std::vector<DeviceBuffer>& q,
                                           const std::vector<DeviceBuffer>& k,
                                           const std::vector<DeviceBuffer>& v,
                                           const std::vector<DeviceBuffer>& o) {
  flare_mha_fwd_params p;
  flare_mha_fwd_params_init(&p);
  p.dtype = dtype;
  p.q = q[0].get();
  p.k = k[0].get();
  p.v = v[0].get();
  p.out = o[0].get();
  return p;
}

// Descale factors of an FP8 tensor on the device: one per (batch entry, KV head), [b, hk] with
// strides (hk, 1) (FlashAttention-3's shape), or one per tensor (strides 0, 0). Positive, in
// [0.5, 1.5) times the pool's nominal factor, so dequantized values stay near [-1.5, 1.5].
DeviceBuffer descale_buffer(Bench& B, flare_dtype fp8, int b, int hk, bool per_head) {
  std::vector<float> host(per_head ? size_t(b) * hk : 1);
  for (float& f : host) f = (1.f + 0.5f * random_value(B.rng_state)) * fp8_pool_descale(fp8);
  DeviceBuffer buf(host.size() * sizeof(float));
  CUDA_CHECK(cudaMemcpy(buf.get(), host.data(), buf.bytes(), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaDeviceSynchronize());  // see int_buffer
  return buf;
}

// The descale factors of one call's FP8 tensors, held for as long as the call's params point at
// them.
struct Fp8Descales {
  DeviceBuffer q, k, v;

  // Makes k and v (and, fp8_q, q) of `p` FP8 tensors of type `fp8` with fresh factors
  // (descale_buffer: per (batch, KV head) or per tensor). p.batch and p.num_heads_k must be set.
  void attach(Bench& B, flare_mha_fwd_params& p, flare_dtype fp8, bool fp8_q, bool per_head) {
    const int b = p.batch, hk = p.num_heads_k;
    const int64_t batch_stride = per_head ? hk : 0, head_stride = per_head ? 1 : 0;
    p.kv_dtype = fp8;
    k = descale_buffer(B, fp8, b, hk, per_head);
    v = descale_buffer(B, fp8, b, hk, per_head);
    p.k_descale = k.as<float>();
    p.v_descale = v.as<float>();
    p.k_descale_batch_stride = p.v_descale_batch_stride = batch_stride;
    p.k_descale_head_stride = p.v_descale_head_stride = head_stride;
    if (fp8_q) {
      p.q_dtype = fp8;
      q = descale_buffer(B, fp8, b, hk, per_head);
      p.q_descale = q.as<float>();
      p.q_descale_batch_stride = batch_stride;
      p.q_descale_head_stride = head_stride;
    }
  }
};

// How many independent buffer sets of `set_bytes` make one sweep exceed B.rotate_bytes.
int buffer_sets(const Bench& B, size_t set_bytes) {
  if (set_bytes == 0) return 1;
  const size_t sets = (B.rotate_bytes + set_bytes - 1) / set_bytes;
  return int(std::clamp<size_t>(sets, 1, 64));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Times launch(i) (i = run index, used to rotate buffer sets). Returns the median in ms.
template <class Launch>
double time_median_ms(Bench& B, Launch&& launch) {
  // Warm-up, which also gives a rough per-run time to size the timed loop.
  cudaEvent_t w0 = B.events[0], w1 = B.events[1];
  float warm_ms = 0.f;
  for (double warmed_ms = 0.0; warmed_ms == 0.0 || warmed_ms < B.opt.warmup_ms;
       warmed_ms += warm_ms) {
    CUDA_CHECK(cudaEventRecord(w0, B.stream));
    for (int i = 0; i < B.opt.warmup; ++i) launch(i);
    CUDA_CHECK(cudaEventRecord(w1, B.stream));
    CUDA_CHECK(cudaEventSynchronize(w1));
    CUDA_CHECK(cudaEventElapsedTime(&warm_ms, w0, w1));
    if (warm_ms <= 0.f) break;
  }
  const double per_run = std::max(1e-3, double(warm_ms) / std::max(1, B.opt.warmup));
  int iters = int(std::ceil(B.opt.target_ms / per_run));
  iters = std::clamp(iters, B.opt.min_iters, B.opt.max_iters);

  // Keep the GPU busy with large copies (~0.7 ms per GiB on an H100) while the host enqueues
  // the timed runs, so that launch overhead on the host does not show in the event intervals.
  const int blockers = 1 + iters / 40;
  for (int i = 0; i < blockers; ++i)
    CUDA_CHECK(cudaMemcpyAsync(B.blocker_dst.get(), B.blocker_src.get(), B.blocker_src.bytes(),
                               cudaMemcpyDeviceToDevice, B.stream));
  for (int i = 0; i < iters; ++i) {
    CUDA_CHECK(cudaEventRecord(B.events[2 * i], B.stream));
    launch(B.opt.warmup + i);
    CUDA_CHECK(cudaEventRecord(B.events[2 * i + 1], B.stream));
  }
  CUDA_CHECK(cudaStreamSynchronize(B.stream));
  CUDA_CHECK(cudaGetLastError());
  std::vector<double> times(iters);
  for (int i = 0; i < iters; ++i) {
    float ms = 0.f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, B.events[2 * i], B.events[2 * i + 1]));
    times[i] = ms;
  }
  return median(times);
}

const char* dtype_name(flare_dtype d) { return d == FLARE_DTYPE_BF16 ? "bf16" : "fp16"; }

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  return strf("%.6g", v);
}

// A target printed and recorded as measured, never asserted: met < 0 where it does not apply (or
// cannot be judged), else whether it is met.
const char* check_text(int met) { return met < 0 ? "n/a" : met ? "yes" : "NO"; }
const char* check_json(int met) { return met < 0 ? "null" : met ? "true" : "false"; }

// Times n calls in turn, twice over, and keeps each call's faster median, so that a drift of the
// board's clocks over a table does not read as a difference between the calls. time_one(i):
// call i's median ms, or < 0 where it is not timed (then -1 in the result).
template <class TimeOne>
std::vector<double> faster_of_two_rounds(size_t n, TimeOne&& time_one) {
  std::vector<double> ms(n, -1.0);
  for (int round = 0; round < 2; ++round)
    for (size_t i = 0; i < n; ++i) {
      const double t = time_one(i);
      if (t >= 0) ms[i] = ms[i] < 0 ? t : std::min(ms[i], t);
    }
  return ms;
}

// Statuses that mean "this build or device does not offer the shape": skipped, not fatal.
bool is_unsupported(flare_status st) {
  return st == FLARE_ERROR_UNSUPPORTED_HEAD_DIM || st == FLARE_ERROR_UNSUPPORTED_DTYPE ||
         st == FLARE_ERROR_NOT_SUPPORTED || st == FLARE_ERROR_ARCH_NOT_SUPPORTED;
}

// Checks params, allocates the workspace (once per shape). Returns false when flare does not
// offer this shape in this build (the caller skips it); any other failure is fatal.
bool prepare_call(Bench& B, flare_mha_fwd_params& p, DeviceBuffer& workspace,
                  const std::string& shape) {
  // Workspace first: a forced split count needs it before flare_can_implement accepts the call.
  size_t ws = 0;
  const flare_status sized = flare_mha_fwd_workspace_size(&p, B.device, &ws);
  const flare_status can = sized == FLARE_OK ? flare_can_implement(&p, B.device) : sized;
  if (is_unsupported(can)) {
    std::printf("  %-48s skipped: %s (%s)\n", shape.c_str(), flare_status_string(can),
                flare_last_error());
    return false;
  }
  flare_check(sized, "flare_mha_fwd_workspace_size", shape);
  workspace = DeviceBuffer(ws);
  p.workspace = workspace.get();
  p.workspace_size = ws;
  flare_check(flare_can_implement(&p, B.device), "flare_can_implement", shape);
  return true;
}

void run_flare(Bench& B, const flare_mha_fwd_params& p, const std::string& shape) {
  flare_check(flare_mha_fwd(&p, B.stream), "flare_mha_fwd", shape);
}

// Dense [batch, seqlen, heads, head_dim] strides.
// The buffer sets of a table's calls: set i holds its own q / k / v / out (and block table, for
// paged calls), so that consecutive timed runs do not find the previous run's tensors in L2.
struct BufferSets {
  const std::vector<DeviceBuffer>& q;
  const std::vector<DeviceBuffer>& k;
  const std::vector<DeviceBuffer>& v;
  const std::vector<DeviceBuffer>& out;
  const std::vector<DeviceBuffer>* tables;  // paged calls only, else null
  int count;
};

// Median ms of `p`, run i on buffer set i % count.
double time_rotating(Bench& B, const flare_mha_fwd_params& p, const BufferSets& sets,
                     const std::string& shape) {
  return time_median_ms(B, [&](int i) {
    flare_mha_fwd_params pi = p;
    const int set = i % sets.count;
    pi.q = sets.q[set].get();
    pi.k = sets.k[set].get();
    pi.v = sets.v[set].get();
    pi.out = sets.out[set].get();
    if (sets.tables) pi.block_table = (*sets.tables)[set].as<int32_t>();
    run_flare(B, pi, shape);
  });
}

void set_dense_strides(int64_t seqlen, int64_t heads, int64_t d, int64_t& batch_stride,
                       int64_t& row_stride, int64_t& head_stride) {
  head_stride = d;
  row_stride = heads * d;
  batch_stride = seqlen * heads * d;
}

// ------------------------------------------------------------------------------------------
// Ceilings.

void measure_copy_ceiling(Bench& B) {
  const size_t bytes = size_t(1) << 30;
  std::vector<double> times;
  cudaEvent_t e0 = B.events[0], e1 = B.events[1];
  for (int i = 0; i < 3; ++i)
    CUDA_CHECK(cudaMemcpyAsync(B.blocker_dst.get(), B.blocker_src.get(), bytes,
                               cudaMemcpyDeviceToDevice, B.stream));
  for (int i = 0; i < 20; ++i) {
    CUDA_CHECK(cudaEventRecord(e0, B.stream));
    CUDA_CHECK(cudaMemcpyAsync(B.blocker_dst.get(), B.blocker_src.get(), bytes,
                               cudaMemcpyDeviceToDevice, B.stream));
    CUDA_CHECK(cudaEventRecord(e1, B.stream));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0.f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    times.push_back(ms);
  }
  const double ms = median(times);
  B.copy_gbs = 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
  std::printf("ceiling: device-to-device copy of 1 GiB: %.3f ms, %.0f GB/s (read + write)\n", ms,
              B.copy_gbs);
}

#ifdef FLARE_BENCH_HAVE_CUBLAS_HEADER
// cuBLAS is loaded at run time so that the bench links against nothing but cudart and flare.
void measure_gemm_ceiling(Bench& B) {
  void* lib = nullptr;
  for (const char* name : {"libcublas.so.13", "libcublas.so", "libcublas.so.12"}) {
    lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib) break;
  }
  if (!lib) {
    std::printf("ceiling: GEMM skipped (libcublas not loadable: %s)\n", dlerror());
    return;
  }
  using CreateFn = cublasStatus_t (*)(cublasHandle_t*);
  using DestroyFn = cublasStatus_t (*)(cublasHandle_t);
  using SetStreamFn = cublasStatus_t (*)(cublasHandle_t, cudaStream_t);
  using GemmExFn = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int,
                                      int, int, const void*, const void*, cudaDataType, int,
                                      const void*, cudaDataType, int, const void*, void*,
                                      cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  auto create = reinterpret_cast<CreateFn>(dlsym(lib, "cublasCreate_v2"));
  auto destroy = reinterpret_cast<DestroyFn>(dlsym(lib, "cublasDestroy_v2"));
  auto set_stream = reinterpret_cast<SetStreamFn>(dlsym(lib, "cublasSetStream_v2"));
  auto gemm = reinterpret_cast<GemmExFn>(dlsym(lib, "cublasGemmEx"));
  if (!create || !destroy || !set_stream || !gemm) {
    std::printf("ceiling: GEMM skipped (cuBLAS symbols missing)\n");
    return;
  }
  cublasHandle_t handle = nullptr;
  if (create(&handle) != CUBLAS_STATUS_SUCCESS) {
    std::printf("ceiling: GEMM skipped (cublasCreate failed)\n");
    return;
  }
  set_stream(handle, B.stream);
  const int n = 8192;
  const size_t elems = size_t(n) * n;
  DeviceBuffer a = random_buffer(B, elems, FLARE_DTYPE_BF16);
  DeviceBuffer b = random_buffer(B, elems, FLARE_DTYPE_BF16);
  DeviceBuffer c(elems * 2);
  const float alpha = 1.f, beta = 0.f;
  bool ok = true;
  auto launch = [&](int) {
    const cublasStatus_t st =
        gemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a.get(), CUDA_R_16BF, n, b.get(),
             CUDA_R_16BF, n, &beta, c.get(), CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
             CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) ok = false;
  };
  const double ms = time_median_ms(B, launch);
  destroy(handle);
  if (!ok) {
    std::printf("ceiling: GEMM skipped (cublasGemmEx failed)\n");
    return;
  }
  B.gemm_tflops = 2.0 * double(n) * n * n / (ms * 1e-3) / 1e12;
  std::printf("ceiling: cuBLAS bf16 GEMM 8192^3: %.3f ms, %.1f TFLOP/s\n", ms, B.gemm_tflops);
}
#else
void measure_gemm_ceiling(Bench&) {
  std::printf("ceiling: GEMM skipped (built without cublas_v2.h)\n");
}
#endif

// ------------------------------------------------------------------------------------------
// Prefill.

// One dense prefill shape with its own buffer sets: q/k [b, s, h, d], v/out [b, s, h, dv]. out
// has `dtype`; q, k and v too, or (e4m3_inputs: FP8 prefill) they hold random finite e4m3 codes
// with one descale factor per (batch, head) each.
struct PrefillShape {
  int d = 0, dv = 0, b = 0, s = 0, h = 0;
  int sets = 0;
  std::vector<DeviceBuffer> q, k, v, o;
  Fp8Descales descales;
  DeviceBuffer ws;  // prepare's
  flare_mha_fwd_params p{};

  PrefillShape(Bench& B, flare_dtype dtype, int d_, int dv_, int b_, int s_, int h_, int causal,
               bool e4m3_inputs = false)
      : d(d_), dv(dv_), b(b_), s(s_), h(h_) {
    const flare_dtype in = e4m3_inputs ? FLARE_DTYPE_E4M3 : dtype;
    const size_t qk = size_t(b) * s * h * d, vo = size_t(b) * s * h * dv;
    sets = buffer_sets(B, (2 * qk + vo) * element_size(in) + vo * element_size(dtype));
    for (int i = 0; i < sets; ++i) {
      q.push_back(random_buffer(B, qk, in));
      k.push_back(random_buffer(B, qk, in));
      v.push_back(random_buffer(B, vo, in));
      o.emplace_back(vo * element_size(dtype));
    }
    p = params_over_first_set(dtype, q, k, v, o);
    p.batch = b;
    p.seqlen_q = p.seqlen_k = s;
    p.num_heads = p.num_heads_k = h;
    p.head_dim = d;
    p.head_dim_v = dv == d ? 0 : dv;
    p.causal = causal;
    set_dense_strides(s, h, d, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
    set_dense_strides(s, h, d, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
    set_dense_strides(s, h, dv, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
    set_dense_strides(s, h, dv, p.out_batch_stride, p.out_row_stride, p.out_head_stride);
    if (e4m3_inputs) descales.attach(B, p, FLARE_DTYPE_E4M3, true, true);
  }

  // FLOPs of QK^T (d) and PV (dv), halved when causal.
  double flops() const {
    return 2.0 * b * h * double(s) * s * (d + dv) * (p.causal ? 0.5 : 1.0);
  }

  // Median ms of `params` (a copy of p with options set) rotating over the buffer sets, or a
  // negative value when flare does not offer it in this build.
  double time(Bench& B, flare_mha_fwd_params params, const std::string& shape) {
    DeviceBuffer ws;
    if (!prepare_call(B, params, ws, shape)) return -1.0;
    return time_rotating(B, params, {q, k, v, o, nullptr, sets}, shape);
  }

  // p itself: checks it and sizes its workspace once (false: flare does not offer it, skipped),
  // then times it as often as asked.
  bool prepare(Bench& B, const std::string& shape) { return prepare_call(B, p, ws, shape); }
  double time_prepared(Bench& B, const std::string& shape) {
    return time_rotating(B, p, {q, k, v, o, nullptr, sets}, shape);
  }
};

// The prefill tables' shapes: 16k tokens per call (batch = tokens / seqlen), model dim 2048
// (heads = model_dim / d); head dims and seqlens as --quick, --only and --head-dim ask.
struct PrefillGrid {
  static constexpr int tokens = 16384, model_dim = 2048;
  std::vector<int> head_dims = {64, 128, 256};
  std::vector<int> seqlens = {512, 1024, 2048, 4096, 8192, 16384};
  std::vector<int> causals = {0, 1};

  explicit PrefillGrid(const Bench& B) {
    if (B.opt.quick) {
      head_dims = {128};
      seqlens = {1024, 8192};
    }
    if (B.opt.only_d > 0) {  // one shape, e.g. for a profiler
      head_dims = {B.opt.only_d};
      seqlens = {B.opt.only_seqlen};
      causals = {B.opt.only_causal};
    }
    if (B.opt.head_dim > 0) head_dims = {B.opt.head_dim};
  }
};

void bench_prefill(Bench& B, flare_dtype dtype) {
  const PrefillGrid grid(B);
  const int tokens = grid.tokens, model_dim = grid.model_dim;
  std::printf("\n== prefill, %s, %d tokens, model dim %d ==\n", dtype_name(dtype), tokens,
              model_dim);
  std::printf("  %5s %6s %6s %5s %5s %10s %10s\n", "d", "causal", "seqlen", "batch", "heads",
              "ms", "TFLOP/s");
  for (int d : grid.head_dims) {
    for (int causal : grid.causals) {
      for (int s : grid.seqlens) {
        const int b = tokens / s, h = model_dim / d;
        const std::string shape = strf("prefill d=%d causal=%d s=%d b=%d h=%d", d, causal, s, b, h);
        PrefillShape ps(B, dtype, d, d, b, s, h, causal);
        const double ms = ps.time(B, ps.p, shape);
        if (ms < 0) continue;
        const double tflops = ps.flops() / (ms * 1e-3) / 1e12;
        std::printf("  %5d %6s %6d %5d %5d %10.4f %10.1f\n", d, causal ? "yes" : "no", s, b, h, ms,
                    tflops);
        B.rows.push_back({strf("{\"table\": \"prefill\", \"dtype\": \"%s\", \"head_dim\": %d, "
                               "\"causal\": %s, \"batch\": %d, \"heads\": %d, \"seqlen_q\": %d, "
                               "\"seqlen_k\": %d, \"system\": \"%s\", \"tflops\": %s}",
                               dtype_name(dtype), d, causal ? "true" : "false", b, h, s, s,
                               B.opt.system.c_str(), json_number(tflops).c_str())});
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// FP8 prefill (q, k, v e4m3) next to the same shape's 16-bit call, with issue 21's FP8 prefill
// targets measured and printed, never asserted.

// TFLOP/s of the e4m3 call on the non-causal rows of kFp8PrefillTargetSeqlen keys per sequence.
struct Fp8PrefillTarget {
  int head_dim;
  double tflops;
};
constexpr Fp8PrefillTarget kFp8PrefillTargets[] = {{128, 1000.0}, {256, 1150.0}};
constexpr int kFp8PrefillTargetSeqlen = 16384;

// The target of a row, or NaN where none applies.
double fp8_prefill_target(int d, int causal, int s) {
  if (causal || s != kFp8PrefillTargetSeqlen) return std::nan("");
  for (const Fp8PrefillTarget& t : kFp8PrefillTargets)
    if (t.head_dim == d) return t.tflops;
  return std::nan("");
}

// The prefill table's shapes, each timed twice on the same shape with buffer sets of its own:
// the `dtype` call (the prefill table's) and the e4m3 call (random finite codes, per-(batch, head)
// descales), interleaved twice with the faster median of each kept. TFLOP/s of both count the
// same FLOPs. A shape whose e4m3 call flare does not offer in this build is skipped (one line,
// prepare_call's) before its `dtype` call is timed.
void bench_prefill_fp8(Bench& B, flare_dtype dtype) {
  const PrefillGrid grid(B);
  const char* base = dtype_name(dtype);
  std::string targets;
  for (const Fp8PrefillTarget& t : kFp8PrefillTargets)
    targets += strf("%s>= %.0f TFLOP/s at d%d", targets.empty() ? "" : ", ", t.tflops,
                    t.head_dim);
  std::printf("\n== FP8 prefill: q/k/v e4m3 (one descale per (batch, head) each) vs %s, out %s, "
              "%d tokens, model dim %d; targets (e4m3, non-causal, seqlen %d): %s ==\n",
              base, base, grid.tokens, grid.model_dim, kFp8PrefillTargetSeqlen, targets.c_str());
  std::printf("  %5s %6s %6s %5s %5s %10s %8s %10s %8s %9s %7s %5s\n", "d", "causal", "seqlen",
              "batch", "heads", strf("%s ms", base).c_str(), "TFLOP/s", "e4m3 ms", "TFLOP/s",
              strf("e4m3/%s", base).c_str(), "target", "met");
  struct Measured {
    double target, tflops;
    int met;
  };
  std::vector<Measured> judged;
  for (int d : grid.head_dims) {
    for (int causal : grid.causals) {
      for (int s : grid.seqlens) {
        const int b = grid.tokens / s, h = grid.model_dim / d;
        const std::string where = strf("prefill_fp8 d=%d causal=%d s=%d b=%d h=%d", d, causal, s,
                                       b, h);
        const std::string names[2] = {where + " " + base, where + " e4m3"};
        PrefillShape fp8(B, dtype, d, d, b, s, h, causal, true);
        if (!fp8.prepare(B, names[1])) continue;
        PrefillShape plain(B, dtype, d, d, b, s, h, causal);
        if (!plain.prepare(B, names[0])) continue;
        PrefillShape* calls[2] = {&plain, &fp8};
        const std::vector<double> ms = faster_of_two_rounds(
            2, [&](size_t i) { return calls[i]->time_prepared(B, names[i]); });
        double tflops[2];
        for (int i = 0; i < 2; ++i) tflops[i] = plain.flops() / (ms[i] * 1e-3) / 1e12;
        const double speed = ms[0] / ms[1];
        const double target = fp8_prefill_target(d, causal, s);
        const int met = std::isfinite(target) ? tflops[1] >= target : -1;
        if (met >= 0) judged.push_back({target, tflops[1], met});
        std::printf("  %5d %6s %6d %5d %5d %10.4f %8.1f %10.4f %8.1f %9.3f %7s %5s\n", d,
                    causal ? "yes" : "no", s, b, h, ms[0], tflops[0], ms[1], tflops[1], speed,
                    met >= 0 ? strf("%.0f", target).c_str() : "-", check_text(met));
        for (int i = 0; i < 2; ++i) {
          const bool e4m3 = i == 1;
          B.rows.push_back({strf(
              "{\"table\": \"prefill_fp8\", \"dtype\": \"%s\", \"q_dtype\": \"%s\", "
              "\"descale\": \"%s\", \"head_dim\": %d, \"causal\": %s, \"batch\": %d, "
              "\"heads\": %d, \"seqlen_q\": %d, \"seqlen_k\": %d, \"system\": \"%s\", "
              "\"ms\": %s, \"tflops\": %s, \"speed_vs_base\": %s, \"tflops_target\": %s, "
              "\"meets_tflops_target\": %s}",
              base, e4m3 ? "e4m3" : base, e4m3 ? "per_head" : "none", d,
              causal ? "true" : "false", b, h, s, s, B.opt.system.c_str(),
              json_number(ms[i]).c_str(), json_number(tflops[i]).c_str(),
              json_number(ms[0] / ms[i]).c_str(), e4m3 ? json_number(target).c_str() : "null",
              e4m3 ? check_json(met) : "null")});
        }
      }
    }
  }
  std::string summary;
  for (const Measured& m : judged)
    summary += strf("; >= %.0f: %.0f TFLOP/s (%s)", m.target, m.tflops, check_text(m.met));
  std::printf("  FP8 prefill targets: %zu of %zu judged rows met%s\n",
              size_t(std::count_if(judged.begin(), judged.end(),
                                   [](const Measured& m) { return m.met > 0; })),
              judged.size(), summary.c_str());
}

// ------------------------------------------------------------------------------------------
// Serving shapes: head dim 512, a separate V head dim, and the cost of sinks and prefix ranges.

// A prefill table over seqlens 1024 .. 16384 at 16k tokens per call, d / dv and heads fixed.
// The d512 table: each row on the mma.sync d512 kernel and on the Hopper d512 kernel
// (Sm90Overrides::d512 0 / 1; on other GPUs both plans are the mma.sync kernel), timed in turn
// twice on the same inputs and each the faster of its two medians. Rows of systems
// "<system>-d512-mma.sync" and "<system>-d512-hopper"; speedup = mma.sync ms / Hopper ms.
void bench_prefill_d512(Bench& B, flare_dtype dtype, int h) {
  const int d = 512, tokens = 16384;
  std::vector<int> seqlens = {1024, 2048, 4096, 8192, 16384};
  if (B.opt.quick) seqlens = {1024, 8192};
  std::printf("\n== prefill d512, %s, %d tokens, %d heads: mma.sync vs Hopper kernel ==\n",
              dtype_name(dtype), tokens, h);
  std::printf("  %6s %6s %5s %10s %10s %10s %10s %8s\n", "causal", "seqlen", "batch",
              "mma ms", "TFLOP/s", "hopper ms", "TFLOP/s", "speedup");
  const flare::Tuning base = flare::current_tuning();
  const char* const kernels[2] = {"mma.sync", "hopper"};
  for (int causal : {0, 1}) {
    for (int s : seqlens) {
      const int b = tokens / s;
      PrefillShape ps(B, dtype, d, d, b, s, h, causal);
      double ms[2] = {-1.0, -1.0};
      for (int rep = 0; rep < 2; ++rep)
        for (int k = 0; k < 2; ++k) {
          flare::Tuning t = base;
          t.sm90.d512 = k;
          flare::set_tuning(t);
          const std::string shape = strf("prefill d512 %s causal=%d s=%d b=%d h=%d", kernels[k],
                                         causal, s, b, h);
          const double m = ps.time(B, ps.p, shape);
          if (m >= 0) ms[k] = ms[k] < 0 ? m : std::min(ms[k], m);
        }
      flare::set_tuning(base);
      double tflops[2];
      for (int k = 0; k < 2; ++k) tflops[k] = ms[k] > 0 ? ps.flops() / (ms[k] * 1e-3) / 1e12 : NAN;
      const double speedup = ms[0] > 0 && ms[1] > 0 ? ms[0] / ms[1] : NAN;
      std::printf("  %6s %6d %5d %10.4f %10.1f %10.4f %10.1f %8.3f\n", causal ? "yes" : "no", s,
                  b, ms[0], tflops[0], ms[1], tflops[1], speedup);
      for (int k = 0; k < 2; ++k) {
        if (ms[k] < 0) continue;
        B.rows.push_back({strf("{\"table\": \"prefill\", \"dtype\": \"%s\", \"head_dim\": %d, "
                               "\"causal\": %s, \"batch\": %d, \"heads\": %d, \"seqlen_q\": %d, "
                               "\"seqlen_k\": %d, \"system\": \"%s-d512-%s\", \"tflops\": %s, "
                               "\"speedup_hopper_vs_mma_sync\": %s}",
                               dtype_name(dtype), d, causal ? "true" : "false", b, h, s, s,
                               B.opt.system.c_str(), kernels[k], json_number(tflops[k]).c_str(),
                               json_number(speedup).c_str())});
      }
    }
  }
}

void bench_prefill_serving(Bench& B, flare_dtype dtype, int d, int dv, int h, const char* title) {
  const int tokens = 16384;
  std::vector<int> seqlens = {1024, 2048, 4096, 8192, 16384};
  if (B.opt.quick) seqlens = {1024, 8192};
  std::printf("\n== %s, %s, %d tokens, head_dim %d, head_dim_v %d, %d heads ==\n", title,
              dtype_name(dtype), tokens, d, dv, h);
  std::printf("  %6s %6s %5s %10s %10s\n", "causal", "seqlen", "batch", "ms", "TFLOP/s");
  for (int causal : {0, 1}) {
    for (int s : seqlens) {
      const int b = tokens / s;
      const std::string shape =
          strf("prefill d=%d dv=%d causal=%d s=%d b=%d h=%d", d, dv, causal, s, b, h);
      PrefillShape ps(B, dtype, d, dv, b, s, h, causal);
      const double ms = ps.time(B, ps.p, shape);
      if (ms < 0) continue;
      const double tflops = ps.flops() / (ms * 1e-3) / 1e12;
      std::printf("  %6s %6d %5d %10.4f %10.1f\n", causal ? "yes" : "no", s, b, ms, tflops);
      const std::string dv_field = dv != d ? strf("\"head_dim_v\": %d, ", dv) : std::string();
      B.rows.push_back({strf("{\"table\": \"prefill\", \"dtype\": \"%s\", \"head_dim\": %d, %s"
                             "\"causal\": %s, \"batch\": %d, \"heads\": %d, \"seqlen_q\": %d, "
                             "\"seqlen_k\": %d, \"system\": \"%s\", \"tflops\": %s}",
                             dtype_name(dtype), d, dv_field.c_str(), causal ? "true" : "false", b,
                             h, s, s, B.opt.system.c_str(), json_number(tflops).c_str())});
    }
  }
}

// d128 causal 4k: the plain call, then each feature on the same inputs. Each variant is timed
// twice, interleaved with the others, and the faster median kept, so that a drift of the
// board's clocks over the table does not read as the cost of a feature.
void bench_serving_overhead(Bench& B, flare_dtype dtype) {
  const int d = 128, h = 16, s = 4096, b = 16384 / s;
  const int image_start = 512, image_len = 1024;
  std::printf("\n== serving overhead, %s, d=%d causal, seqlen %d, batch %d, %d heads ==\n",
              dtype_name(dtype), d, s, b, h);
  std::printf("  %-26s %10s %10s %8s\n", "feature", "ms", "TFLOP/s", "vs none");
  PrefillShape ps(B, dtype, d, d, b, s, h, 1);
  std::vector<float> sinks(h);
  for (int i = 0; i < h; ++i) sinks[i] = 0.25f * float(i % 5) - 0.5f;
  DeviceBuffer sink_dev(sinks.size() * sizeof(float));
  CUDA_CHECK(cudaMemcpy(sink_dev.get(), sinks.data(), sinks.size() * sizeof(float),
                        cudaMemcpyHostToDevice));
  // One range slot per sequence: empty (start == end), or the image [512, 1536).
  std::vector<int32_t> empty(2 * b, 0), image(2 * b);
  for (int i = 0; i < b; ++i) {
    image[2 * i] = image_start;
    image[2 * i + 1] = image_start + image_len;
  }
  DeviceBuffer empty_dev = int_buffer(empty), image_dev = int_buffer(image);

  struct Variant {
    const char* name;
    flare_mha_fwd_params p;
    double ms;
  };
  std::vector<Variant> variants = {{"none", ps.p, -1.0},
                                   {"sink", ps.p, -1.0},
                                   {"mm_prefix_ranges-empty", ps.p, -1.0},
                                   {"mm_prefix_ranges-image-1k", ps.p, -1.0}};
  variants[1].p.sink = sink_dev.as<float>();
  for (int v : {2, 3}) {
    variants[v].p.mm_prefix_ranges = (v == 2 ? empty_dev : image_dev).as<int32_t>();
    variants[v].p.max_mm_prefix_ranges = 1;
    variants[v].p.mm_prefix_ranges_batch_stride = 2;
  }
  for (int rep = 0; rep < 2; ++rep) {
    for (Variant& v : variants) {
      const std::string shape = strf("overhead %s d=%d causal s=%d b=%d h=%d", v.name, d, s, b, h);
      const double ms = ps.time(B, v.p, shape);
      if (ms < 0) continue;
      v.ms = v.ms < 0 ? ms : std::min(v.ms, ms);
    }
  }
  const double base_ms = variants[0].ms;
  for (const Variant& v : variants) {
    if (v.ms < 0) continue;
    const double tflops = ps.flops() / (v.ms * 1e-3) / 1e12;
    const double ratio = base_ms > 0 ? v.ms / base_ms : NAN;
    std::printf("  %-26s %10.4f %10.1f %8.4f\n", v.name, v.ms, tflops, ratio);
    B.rows.push_back({strf("{\"table\": \"serving_overhead\", \"dtype\": \"%s\", \"head_dim\": %d, "
                           "\"causal\": true, \"batch\": %d, \"heads\": %d, \"seqlen_q\": %d, "
                           "\"seqlen_k\": %d, \"feature\": \"%s\", \"system\": \"%s\", "
                           "\"tflops\": %s, \"ms\": %s, \"time_vs_none\": %s}",
                           dtype_name(dtype), d, b, h, s, s, v.name, B.opt.system.c_str(),
                           json_number(tflops).c_str(), json_number(v.ms).c_str(),
                           json_number(ratio).c_str())});
  }
}

// ------------------------------------------------------------------------------------------
// Varlen.

std::vector<int> varlen_lengths(int total, int lo, int hi, uint64_t seed) {
  std::vector<int> lens;
  int left = total;
  while (left > 0) {
    // Log-uniform in [lo, hi], rounded down to a multiple of 8 (lengths need not be multiples
    // of the kernel's tile sizes).
    const double u = double(next_random(seed) >> 11) * (1.0 / 9007199254740992.0);
    const double log_len = std::log(double(lo)) + u * (std::log(double(hi)) - std::log(double(lo)));
    int len = std::max(lo, int(std::exp(log_len)) / 8 * 8);
    len = std::min({len, hi, left});
    if (left - len < lo) len = left;  // fold a short tail into this sequence
    lens.push_back(len);
    left -= len;
  }
  return lens;
}

void bench_varlen(Bench& B, flare_dtype dtype) {
  const int total = 16384, d = 128, h = 2048 / d;
  const std::vector<int> lens = varlen_lengths(total, 128, 4096, 0xfeedbeefull);
  std::vector<int32_t> cu(1, 0);
  int max_len = 0;
  for (int l : lens) {
    cu.push_back(cu.back() + l);
    max_len = std::max(max_len, l);
  }
  std::string desc;
  for (size_t i = 0; i < lens.size(); ++i) desc += (i ? "," : "") + std::to_string(lens[i]);
  std::printf("\n== varlen, %s, d=%d, heads=%d, %zu sequences, %d tokens: [%s] ==\n",
              dtype_name(dtype), d, h, lens.size(), total, desc.c_str());
  std::printf("  %6s %6s %10s %10s\n", "causal", "max_s", "ms", "TFLOP/s");
  DeviceBuffer cu_dev = int_buffer(cu);
  const size_t elems = size_t(total) * h * d;
  const int sets = buffer_sets(B, 4 * elems * 2);
  std::vector<DeviceBuffer> q, k, v, o;
  for (int i = 0; i < sets; ++i) {
    q.push_back(random_buffer(B, elems, dtype));
    k.push_back(random_buffer(B, elems, dtype));
    v.push_back(random_buffer(B, elems, dtype));
    o.emplace_back(elems * 2);
  }
  for (int causal : {0, 1}) {
    const std::string shape = strf("varlen d=%d causal=%d n=%zu", d, causal, lens.size());
    flare_mha_fwd_params p = params_over_first_set(dtype, q, k, v, o);
    p.batch = int(lens.size());
    p.seqlen_q = p.seqlen_k = max_len;
    p.max_seqlen_q = p.max_seqlen_k = max_len;
    p.cu_seqlens_q = cu_dev.as<int32_t>();
    p.cu_seqlens_k = cu_dev.as<int32_t>();
    p.num_heads = p.num_heads_k = h;
    p.head_dim = d;
    p.causal = causal;
    set_dense_strides(total, h, d, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
    set_dense_strides(total, h, d, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
    set_dense_strides(total, h, d, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
    set_dense_strides(total, h, d, p.out_batch_stride, p.out_row_stride, p.out_head_stride);
    p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = p.out_batch_stride = 0;
    DeviceBuffer ws;
    if (!prepare_call(B, p, ws, shape)) continue;
    const double ms = time_rotating(B, p, {q, k, v, o, nullptr, sets}, shape);
    double flops = 0;
    for (int l : lens) flops += 4.0 * h * double(l) * l * d * (causal ? 0.5 : 1.0);
    const double tflops = flops / (ms * 1e-3) / 1e12;
    std::printf("  %6s %6d %10.4f %10.1f\n", causal ? "yes" : "no", max_len, ms, tflops);
    B.rows.push_back({strf("{\"table\": \"varlen\", \"dtype\": \"%s\", \"head_dim\": %d, "
                           "\"causal\": %s, \"batch\": %zu, \"heads\": %d, \"seqlen_q\": %d, "
                           "\"seqlen_k\": %d, \"total_tokens\": %d, \"system\": \"%s\", "
                           "\"tflops\": %s}",
                           dtype_name(dtype), d, causal ? "true" : "false", lens.size(), h,
                           max_len, max_len, total, B.opt.system.c_str(),
                           json_number(tflops).c_str())});
  }
}

// ------------------------------------------------------------------------------------------
// Decode.

constexpr int kDecodeHeads = 32, kDecodeHeadDim = 128;  // KV heads: Options::decode_heads_k

// The decode tables' (batch, kv length) shapes: two with --quick, one with --only-decode.
std::vector<std::pair<int, int>> decode_shapes(const Bench& B) {
  if (B.opt.only_batch > 0) return {{B.opt.only_batch, B.opt.only_kv_len}};
  if (B.opt.quick) return {{1, 32768}, {64, 8192}};
  return {{1, 8192}, {1, 32768}, {1, 131072}, {8, 8192},
          {8, 32768}, {32, 4096}, {64, 8192},  {128, 2048}};
}

// A decode table's page sizes (0 = contiguous), or the one of --only-decode.
std::vector<int> decode_pages(const Bench& B, std::vector<int> pages) {
  if (B.opt.only_batch > 0) return {B.opt.only_page};
  return pages;
}

// A block table over num_pages pages in a random order (each buffer set gets its own).
DeviceBuffer shuffled_block_table(Bench& B, int num_pages) {
  std::vector<int32_t> table(num_pages);
  std::iota(table.begin(), table.end(), 0);
  for (int j = num_pages - 1; j > 0; --j)
    std::swap(table[j], table[next_random(B.rng_state) % uint64_t(j + 1)]);
  return int_buffer(table);
}

// One decode call with its buffer sets: seqlen_q 1, kDecodeHeads query heads over decode_heads_k
// KV heads, d 128; q / out of `dtype`, K / V of `kv_dtype` (`dtype` or an FP8 type, then with
// per-(batch, KV head) or per-tensor descales), contiguous [b, L, hk, d] or (page > 0) in page
// pools [b * L / page, page, hk, d] read through shuffled block tables with cache_seqlens = L.
// Enough sets that one sweep over them exceeds B.rotate_bytes.
struct DecodeShape {
  int b = 0, L = 0, page = 0;
  flare_dtype kv_dtype;
  size_t kv_elems = 0;  // per K (or V), any page size
  int sets = 0;
  std::vector<DeviceBuffer> q, k, v, o, tables;
  DeviceBuffer cache_seqlens;
  Fp8Descales descales;
  DeviceBuffer ws;
  flare_mha_fwd_params p{};

  DecodeShape(Bench& B, flare_dtype dtype, flare_dtype kv_dtype_, bool per_head_descale, int b_,
              int L_, int page_)
      : b(b_), L(L_), page(page_), kv_dtype(kv_dtype_) {
    const int hq = kDecodeHeads, hk = B.opt.decode_heads_k, d = kDecodeHeadDim;
    kv_elems = size_t(b) * L * hk * d;
    const size_t q_elems = size_t(b) * hq * d;
    sets = buffer_sets(B, size_t(kv_bytes()));
    const int pages_per_seq = page ? L / page : 0;
    const int num_pages = b * pages_per_seq;
    for (int i = 0; i < sets; ++i) {
      q.push_back(random_buffer(B, q_elems, dtype));
      k.push_back(random_buffer(B, kv_elems, kv_dtype));
      v.push_back(random_buffer(B, kv_elems, kv_dtype));
      o.emplace_back(q_elems * element_size(dtype));
      if (page) tables.push_back(shuffled_block_table(B, num_pages));
    }
    p = params_over_first_set(dtype, q, k, v, o);
    p.batch = b;
    p.seqlen_q = 1;
    p.seqlen_k = L;
    p.num_heads = hq;
    p.num_heads_k = hk;
    p.head_dim = d;
    set_dense_strides(1, hq, d, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
    set_dense_strides(1, hq, d, p.out_batch_stride, p.out_row_stride, p.out_head_stride);
    // Contiguous: [b, L, hk, d]; paged: pools [num_pages, page, hk, d], whose batch stride is
    // the page stride.
    const int rows = page ? page : L;
    set_dense_strides(rows, hk, d, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
    set_dense_strides(rows, hk, d, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
    if (page) {
      cache_seqlens = int_buffer(std::vector<int32_t>(b, L));
      p.cache_seqlens = cache_seqlens.as<int32_t>();
      p.block_table = tables[0].as<int32_t>();
      p.block_table_batch_stride = pages_per_seq;
      p.page_block_size = page;
      p.num_pages = num_pages;
    }
    if (kv_dtype != dtype) descales.attach(B, p, kv_dtype, false, per_head_descale);
    p.num_splits = B.opt.splits;
  }

  // Bytes of K and V one call reads.
  double kv_bytes() const { return 2.0 * double(kv_elems) * double(element_size(kv_dtype)); }

  // Checks the call and sizes its workspace; false when flare does not offer it (skipped).
  bool prepare(Bench& B, const std::string& shape) { return prepare_call(B, p, ws, shape); }

  int splits(Bench& B, const std::string& shape) const {
    int n = 0;
    flare_check(flare_mha_fwd_num_splits(&p, B.device, &n), "flare_mha_fwd_num_splits", shape);
    return n;
  }

  // Median ms over the buffer sets (after prepare).
  double time(Bench& B, const std::string& shape) {
    return time_rotating(B, p, {q, k, v, o, page ? &tables : nullptr, sets}, shape);
  }
};

void bench_decode(Bench& B, flare_dtype dtype) {
  const std::vector<int> pages = decode_pages(B, B.opt.quick ? std::vector<int>{0, 64}
                                                             : std::vector<int>{0, 64, 256});
  std::printf("\n== decode, %s, seqlen_q 1, %d q heads / %d kv heads, d=%d ==\n",
              dtype_name(dtype), kDecodeHeads, B.opt.decode_heads_k, kDecodeHeadDim);
  std::printf("  %5s %7s %5s %6s %4s %10s %10s\n", "batch", "kv_len", "page", "splits", "sets",
              "us", "GB/s");
  for (auto [b, L] : decode_shapes(B)) {
    for (int page : pages) {
      const std::string shape = strf("decode b=%d L=%d page=%d", b, L, page);
      DecodeShape ds(B, dtype, dtype, false, b, L, page);
      if (!ds.prepare(B, shape)) continue;
      const int splits = ds.splits(B, shape);
      const double ms = ds.time(B, shape);
      const double gbs = ds.kv_bytes() / (ms * 1e-3) / 1e9;
      std::printf("  %5d %7d %5d %6d %4d %10.2f %10.0f\n", b, L, page, splits, ds.sets, ms * 1e3,
                  gbs);
      B.rows.push_back({strf("{\"table\": \"decode\", \"dtype\": \"%s\", \"head_dim\": %d, "
                             "\"batch\": %d, \"heads\": %d, \"heads_k\": %d, \"seqlen_q\": 1, "
                             "\"seqlen_k\": %d, \"paged\": %d, \"system\": \"%s\", \"gbs\": %s}",
                             dtype_name(dtype), kDecodeHeadDim, b, kDecodeHeads,
                             B.opt.decode_heads_k, L, page, B.opt.system.c_str(),
                             json_number(gbs).c_str())});
    }
  }
}

// ------------------------------------------------------------------------------------------
// Decode over FP8 KV caches, with the FP8 decode targets measured and printed, never asserted.

// Per FP8 row: tokens/s at least this many times the same shape's bf16-cache call, on rows whose
// bf16 K and V hold at least kFp8SpeedMinBf16Bytes; and GB/s of FP8 bytes at least this fraction
// of the copy ceiling (B.copy_gbs, the measure the decode table's GB/s are read against).
constexpr double kFp8SpeedTarget = 1.8;
constexpr double kFp8SpeedMinBf16Bytes = 1e9;
constexpr double kFp8CopyTarget = 0.85;

// The decode table's shapes (contiguous and pages of 16) with three caches each, timed in turn
// on the same shape and interleaved twice (the faster median kept, so clock drift over the table
// does not read as a difference between caches): the `dtype` cache (the decode table's call), an
// e4m3 cache with per-(batch, KV head) descales and an e5m2 cache with one descale per tensor.
// Each cache has its own random buffer sets (FP8: random finite codes).
void bench_decode_fp8(Bench& B, flare_dtype dtype) {
  struct Cache {
    const char* name;     // kv_dtype in the rows
    const char* descale;  // "none", "per_head" (batch, KV head), "per_tensor"
    flare_dtype kv_dtype;
  };
  const Cache caches[] = {{dtype_name(dtype), "none", dtype},
                          {"e4m3", "per_head", FLARE_DTYPE_E4M3},
                          {"e5m2", "per_tensor", FLARE_DTYPE_E5M2}};
  const std::vector<int> pages = decode_pages(B, {0, 16});
  std::printf("\n== decode over FP8 KV caches, q/out %s, seqlen_q 1, %d q heads / %d kv heads, "
              "d=%d; targets per FP8 row: tokens/s >= %.1fx the %s cache's where its K+V >= %.0f "
              "GB, GB/s >= %.0f%% of the copy ceiling ==\n",
              dtype_name(dtype), kDecodeHeads, B.opt.decode_heads_k, kDecodeHeadDim,
              kFp8SpeedTarget, dtype_name(dtype), kFp8SpeedMinBf16Bytes / 1e9,
              kFp8CopyTarget * 100);
  std::printf("  %5s %7s %4s %5s %10s %6s %9s %11s %8s %7s %6s %7s %6s %5s\n", "batch", "kv_len",
              "page", "cache", "descale", "splits", "us", "tokens/s", "KV MB", "GB/s", "%copy",
              strf("x %s", dtype_name(dtype)).c_str(), strf(">=%.1fx", kFp8SpeedTarget).c_str(),
              strf(">=%.0f%%", kFp8CopyTarget * 100).c_str());
  int speed_rows = 0, speed_met = 0, copy_rows = 0, copy_met = 0;
  for (auto [b, L] : decode_shapes(B)) {
    for (int page : pages) {
      std::vector<DecodeShape> calls;
      std::vector<std::string> names;
      std::vector<bool> ready;
      calls.reserve(std::size(caches));
      for (const Cache& c : caches) {
        names.push_back(strf("decode_fp8 b=%d L=%d page=%d cache=%s", b, L, page, c.name));
        calls.emplace_back(B, dtype, c.kv_dtype, std::strcmp(c.descale, "per_head") == 0, b, L,
                           page);
        ready.push_back(calls.back().prepare(B, names.back()));
      }
      const std::vector<double> ms = faster_of_two_rounds(
          calls.size(), [&](size_t i) { return ready[i] ? calls[i].time(B, names[i]) : -1.0; });
      const double base_ms = ms[0];
      const bool big = calls[0].kv_bytes() >= kFp8SpeedMinBf16Bytes;
      for (size_t i = 0; i < calls.size(); ++i) {
        if (ms[i] < 0) continue;
        const Cache& c = caches[i];
        const DecodeShape& ds = calls[i];
        const double sec = ms[i] * 1e-3;
        const double tokens = double(b) / sec;  // one new token per sequence per call
        const double gbs = ds.kv_bytes() / sec / 1e9;
        const double of_copy = B.copy_gbs > 0 ? gbs / B.copy_gbs : std::nan("");
        const double speed = base_ms > 0 ? base_ms / ms[i] : std::nan("");
        const bool fp8 = i > 0;
        // -1: the target does not apply (or cannot be judged), else whether it is met.
        const int speed_ok = !fp8 || !big || !std::isfinite(speed) ? -1 : speed >= kFp8SpeedTarget;
        const int copy_ok = !fp8 || !std::isfinite(of_copy) ? -1 : of_copy >= kFp8CopyTarget;
        if (speed_ok >= 0) {
          ++speed_rows;
          speed_met += speed_ok;
        }
        if (copy_ok >= 0) {
          ++copy_rows;
          copy_met += copy_ok;
        }
        std::printf("  %5d %7d %4d %5s %10s %6d %9.2f %11.0f %8.1f %7.0f %6.1f %7.3f %6s %5s\n", b,
                    L, page, c.name, c.descale, ds.splits(B, names[i]), ms[i] * 1e3, tokens,
                    ds.kv_bytes() / 1e6, gbs, of_copy * 100, speed, check_text(speed_ok),
                    check_text(copy_ok));
        B.rows.push_back({strf(
            "{\"table\": \"decode_fp8\", \"dtype\": \"%s\", \"kv_dtype\": \"%s\", "
            "\"descale\": \"%s\", \"head_dim\": %d, \"batch\": %d, \"heads\": %d, "
            "\"heads_k\": %d, \"seqlen_q\": 1, \"seqlen_k\": %d, \"paged\": %d, "
            "\"system\": \"%s\", \"us\": %s, \"tokens_per_s\": %s, \"kv_bytes\": %.0f, "
            "\"gbs\": %s, \"fraction_of_ceiling\": %s, \"speed_vs_base\": %s, "
            "\"meets_speed_target\": %s, \"meets_copy_target\": %s}",
            dtype_name(dtype), c.name, c.descale, kDecodeHeadDim, b, kDecodeHeads,
            B.opt.decode_heads_k, L, page, B.opt.system.c_str(), json_number(ms[i] * 1e3).c_str(),
            json_number(tokens).c_str(), ds.kv_bytes(), json_number(gbs).c_str(),
            json_number(of_copy).c_str(), json_number(speed).c_str(), check_json(speed_ok),
            check_json(copy_ok))});
      }
    }
  }
  std::printf("  FP8 targets: tokens/s >= %.1fx the %s cache on %d of %d rows with >= %.0f GB of "
              "%s K+V; >= %.0f%% of the copy ceiling on %d of %d rows\n",
              kFp8SpeedTarget, dtype_name(dtype), speed_met, speed_rows,
              kFp8SpeedMinBf16Bytes / 1e9, dtype_name(dtype), kFp8CopyTarget * 100, copy_met,
              copy_rows);
}

// ------------------------------------------------------------------------------------------
// Chunked prefill over a paged KV cache (vLLM-style): each sequence appends a chunk of new
// query rows to a long cached prefix, and its keys are read through the block table. The same
// call on contiguous varlen K/V (page 0) is the row each paged row is measured against.

void bench_chunked_paged(Bench& B, flare_dtype dtype) {
  const int nseq = 8, q_len = 512, cached = 8192, k_len = cached + q_len;
  const int hq = 32, hk = 8, d = 128;
  std::vector<int> pages = {0, 1, 16, 256};
  if (B.opt.quick) pages = {0, 1, 16};
  std::printf("\n== chunked prefill over a paged cache, %s, %d sequences x %d new tokens over "
              "%d cached, %d q heads / %d kv heads, d=%d, causal ==\n",
              dtype_name(dtype), nseq, q_len, cached, hq, hk, d);
  std::printf("  %5s %6s %10s %10s %12s\n", "page", "splits", "ms", "TFLOP/s", "/ contiguous");
  std::vector<int32_t> cu_q(1, 0), cu_k(1, 0);
  for (int b = 0; b < nseq; ++b) {
    cu_q.push_back(cu_q.back() + q_len);
    cu_k.push_back(cu_k.back() + k_len);
  }
  DeviceBuffer cu_q_dev = int_buffer(cu_q), cu_k_dev = int_buffer(cu_k);
  const size_t q_elems = size_t(nseq) * q_len * hq * d;
  const size_t kv_elems = size_t(nseq) * k_len * hk * d;  // per K (or V), any page size
  const int sets = buffer_sets(B, (2 * q_elems + 2 * kv_elems) * 2);
  std::vector<DeviceBuffer> q, o;
  for (int i = 0; i < sets; ++i) {
    q.push_back(random_buffer(B, q_elems, dtype));
    o.emplace_back(q_elems * 2);
  }
  // Causal, bottom-right aligned: query row i of a sequence sees cached + i + 1 keys.
  const double keys_per_seq = double(q_len) * cached + double(q_len) * (q_len + 1) / 2.0;
  const double flops = 4.0 * hq * d * keys_per_seq * nseq;
  double contiguous_ms = 0.0;
  for (int page : pages) {
    const std::string shape = strf("chunked paged page=%d", page);
    // K/V: contiguous varlen [total_k, hk, d], or pools [num_pages, page, hk, d] with each
    // sequence's pages at random places (the values are random either way: timing only).
    const int pages_per_seq = page ? (k_len + page - 1) / page : 0;
    const int num_pages = nseq * pages_per_seq;
    const size_t pool_elems = page ? size_t(num_pages) * page * hk * d : kv_elems;
    std::vector<DeviceBuffer> k, v, tables;
    for (int i = 0; i < sets; ++i) {
      k.push_back(random_buffer(B, pool_elems, dtype));
      v.push_back(random_buffer(B, pool_elems, dtype));
      if (page) tables.push_back(shuffled_block_table(B, num_pages));
    }
    flare_mha_fwd_params p = params_over_first_set(dtype, q, k, v, o);
    p.batch = nseq;
    p.seqlen_q = q_len;
    p.seqlen_k = k_len;
    p.max_seqlen_q = q_len;
    p.max_seqlen_k = k_len;
    p.cu_seqlens_q = cu_q_dev.as<int32_t>();
    p.cu_seqlens_k = cu_k_dev.as<int32_t>();
    p.num_heads = hq;
    p.num_heads_k = hk;
    p.head_dim = d;
    p.causal = 1;
    set_dense_strides(0, hq, d, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
    set_dense_strides(0, hq, d, p.out_batch_stride, p.out_row_stride, p.out_head_stride);
    // Varlen: batch strides 0; paged: the page stride.
    set_dense_strides(page, hk, d, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
    set_dense_strides(page, hk, d, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
    if (page) {
      p.block_table = tables[0].as<int32_t>();
      p.block_table_batch_stride = pages_per_seq;
      p.page_block_size = page;
      p.num_pages = num_pages;
    }
    p.num_splits = B.opt.splits;
    DeviceBuffer ws;
    if (!prepare_call(B, p, ws, shape)) continue;
    int splits = 0;
    flare_check(flare_mha_fwd_num_splits(&p, B.device, &splits), "flare_mha_fwd_num_splits",
                shape);
    const double ms = time_rotating(B, p, {q, k, v, o, page ? &tables : nullptr, sets}, shape);
    if (page == 0) contiguous_ms = ms;
    const double tflops = flops / (ms * 1e-3) / 1e12;
    const double rel = contiguous_ms > 0 ? contiguous_ms / ms : std::nan("");
    std::printf("  %5d %6d %10.4f %10.1f %12.3f\n", page, splits, ms, tflops, rel);
    B.rows.push_back({strf("{\"table\": \"chunked\", \"dtype\": \"%s\", \"head_dim\": %d, "
                           "\"causal\": true, \"batch\": %d, \"heads\": %d, \"heads_k\": %d, "
                           "\"seqlen_q\": %d, \"seqlen_k\": %d, \"paged\": %d, "
                           "\"system\": \"%s\", \"ms\": %s, \"tflops\": %s, "
                           "\"speed_vs_contiguous\": %s}",
                           dtype_name(dtype), d, nseq, hq, hk, q_len, k_len, page,
                           B.opt.system.c_str(), json_number(ms).c_str(),
                           json_number(tflops).c_str(), json_number(rel).c_str())});
  }
}

// ------------------------------------------------------------------------------------------

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out;
}

void write_json(const Bench& B) {
  FILE* f = std::fopen(B.opt.json_path.c_str(), "w");
  if (!f) die("cannot open %s for writing", B.opt.json_path.c_str());
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  const char* commit = std::getenv("FLARE_COMMIT");
  std::fprintf(f, "{\n  \"device\": \"%s\",\n  \"date\": \"%s\",\n  \"commit\": \"%s\",\n",
               json_escape(B.prop.name).c_str(), date,
               json_escape(commit && *commit ? commit : "unknown").c_str());
  std::fprintf(f, "  \"ceilings\": {\"gemm_bf16_tflops\": %s, \"copy_gbs\": %s},\n",
               B.gemm_tflops < 0 ? "null" : json_number(B.gemm_tflops).c_str(),
               json_number(B.copy_gbs).c_str());
  std::fprintf(f, "  \"rows\": [\n");
  for (size_t i = 0; i < B.rows.size(); ++i)
    std::fprintf(f, "    %s%s\n", B.rows[i].json.c_str(), i + 1 < B.rows.size() ? "," : "");
  std::fprintf(f, "  ]\n}\n");
  if (std::fclose(f) != 0) die("cannot write %s", B.opt.json_path.c_str());
  std::printf("\nwrote %zu rows to %s\n", B.rows.size(), B.opt.json_path.c_str());
}

void usage() {
  std::printf(
      "usage: flare_bench [--table prefill|prefill_fp8|decode|decode_fp8|varlen|chunked|all]\n"
      "                   [--dtype bf16|fp16]\n"
      "                   [--json PATH] [--quick] [--system-name NAME]\n"
      "                   [--iters MIN_TIMED_RUNS] [--warmup N] [--warmup-ms MS]\n"
      "                   [--only HEAD_DIM,CAUSAL,SEQLEN]   (one prefill shape; with --table\n"
      "                                                      prefill_fp8 after it: that table)\n"
      "                   [--head-dim D]                    (the prefill rows of one head dim;\n"
      "                                                      likewise)\n"
      "                   [--splits N]                      (decode, chunked: force N key splits)\n"
      "                   [--heads-k N]                     (decode tables: KV heads, default 8;\n"
      "                                                      1 = MQA)\n"
      "                   [--only-decode BATCH,KV_LEN,PAGE] (one decode shape; PAGE 0 =\n"
      "                                                      contiguous; with --table\n"
      "                                                      decode_fp8 after it: that table)\n"
      "       --table also takes d512, dv, overhead and serving (the three of them)\n"
      "       prefill_fp8: the prefill shapes in --dtype and with q/k/v e4m3 (FP8 prefill;\n"
      "       builds without CMake's FLARE_FP8_PREFILL skip its rows, saying why)\n");
}

Options parse(int argc, char** argv) {
  Options o;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) die("%s needs a value", argv[i]);
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--table") o.table = value(i);
    else if (a == "--dtype") o.dtype = value(i);
    else if (a == "--json") o.json_path = value(i);
    else if (a == "--quick") o.quick = true;
    else if (a == "--only") {
      const std::string v = value(i);
      if (std::sscanf(v.c_str(), "%d,%d,%d", &o.only_d, &o.only_causal, &o.only_seqlen) != 3 ||
          o.only_d <= 0 || o.only_causal < 0 || o.only_causal > 1 || o.only_seqlen <= 0 ||
          16384 % o.only_seqlen != 0)
        die("--only needs HEAD_DIM,CAUSAL(0|1),SEQLEN with SEQLEN dividing 16384 (got '%s')",
            v.c_str());
      o.table = "prefill";
    }
    else if (a == "--only-decode") {
      const std::string v = value(i);
      if (std::sscanf(v.c_str(), "%d,%d,%d", &o.only_batch, &o.only_kv_len, &o.only_page) != 3 ||
          o.only_batch <= 0 || o.only_kv_len <= 0 || o.only_page < 0 ||
          (o.only_page > 0 && o.only_kv_len % o.only_page != 0))
        die("--only-decode needs BATCH,KV_LEN,PAGE (PAGE 0 = contiguous, else a page size "
            "dividing KV_LEN; got '%s')", v.c_str());
      o.table = "decode";
    }
    else if (a == "--head-dim") {
      o.head_dim = std::atoi(value(i).c_str());
      if (o.head_dim <= 0 || 2048 % o.head_dim != 0)
        die("--head-dim needs a head dim dividing the model dim 2048 (got '%d')", o.head_dim);
      o.table = "prefill";
    }
    else if (a == "--splits") {
      o.splits = std::atoi(value(i).c_str());
      if (o.splits < 1 || o.splits > 128) die("--splits needs 1..128 (got '%d')", o.splits);
    }
    else if (a == "--heads-k") {
      o.decode_heads_k = std::atoi(value(i).c_str());
      if (o.decode_heads_k < 1 || 32 % o.decode_heads_k != 0)
        die("--heads-k needs a divisor of the 32 query heads (got '%d')", o.decode_heads_k);
    }
    else if (a == "--system-name") o.system = value(i);
    else if (a == "--iters") o.min_iters = std::atoi(value(i).c_str());
    else if (a == "--warmup") o.warmup = std::atoi(value(i).c_str());
    else if (a == "--warmup-ms") o.warmup_ms = std::atof(value(i).c_str());
    else if (a == "--fp16") o.dtype = "fp16";
    else if (a == "-h" || a == "--help") {
      usage();
      std::exit(0);
    } else {
      usage();
      die("unknown argument '%s'", a.c_str());
    }
  }
  const char* const tables[] = {"prefill", "prefill_fp8", "decode",   "decode_fp8",
                                "varlen",  "chunked",     "d512",     "dv",
                                "overhead", "serving",    "all"};
  if (std::none_of(std::begin(tables), std::end(tables),
                   [&](const char* t) { return o.table == t; }))
    die("--table must be prefill, prefill_fp8, decode, decode_fp8, varlen, chunked, d512, dv, "
        "overhead, serving or all (got '%s')",
        o.table.c_str());
  if (o.dtype != "bf16" && o.dtype != "fp16") die("--dtype must be bf16 or fp16");
  if (o.min_iters < 20) die("--iters must be >= 20 (median of at least 20 timed runs)");
  if (o.warmup < 1) o.warmup = 1;
  o.max_iters = std::max(o.max_iters, o.min_iters);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Bench B;
  B.opt = parse(argc, argv);
  const flare::Tuning tuning = flare::tuning_from_env();
  flare::set_tuning(tuning);
  std::printf("flare_bench: tuning: %s\n", flare::describe(tuning).c_str());
  CUDA_CHECK(cudaGetDevice(&B.device));
  CUDA_CHECK(cudaGetDeviceProperties(&B.prop, B.device));
  CUDA_CHECK(cudaStreamCreateWithFlags(&B.stream, cudaStreamNonBlocking));
  B.events.resize(2 * size_t(B.opt.max_iters));
  for (auto& e : B.events) CUDA_CHECK(cudaEventCreate(&e));
  // One sweep over the buffer sets spans at least 4x L2 (and 128 MiB).
  B.rotate_bytes = std::max<size_t>(4 * size_t(B.prop.l2CacheSize), size_t(128) << 20);

  {
    flare_mha_fwd_params p;
    flare_mha_fwd_params_init(&p);
    if (p.struct_size != sizeof(flare_mha_fwd_params))
      die("flare_mha_fwd_params_init set struct_size %u, expected %zu", p.struct_size,
          sizeof(flare_mha_fwd_params));
  }
  std::printf("flare_bench: %s (sm_%d%d, %d SMs, L2 %d MB), flare %d.%d.%d, system '%s'%s\n",
              B.prop.name, B.prop.major, B.prop.minor, B.prop.multiProcessorCount,
              B.prop.l2CacheSize >> 20, FLARE_VERSION_MAJOR, FLARE_VERSION_MINOR,
              FLARE_VERSION_PATCH, B.opt.system.c_str(), B.opt.quick ? " (quick)" : "");

  const size_t gib = size_t(1) << 30;
  B.blocker_src = DeviceBuffer(gib);
  B.blocker_dst = DeviceBuffer(gib);
  CUDA_CHECK(cudaMemsetAsync(B.blocker_src.get(), 0x3c, gib, B.stream));
  measure_copy_ceiling(B);
  measure_gemm_ceiling(B);

  const flare_dtype dtype = B.opt.dtype == "fp16" ? FLARE_DTYPE_FP16 : FLARE_DTYPE_BF16;
  const bool all = B.opt.table == "all";
  if (all || B.opt.table == "prefill") bench_prefill(B, dtype);
  if (all || B.opt.table == "prefill_fp8") bench_prefill_fp8(B, dtype);
  const bool serving = all || B.opt.table == "serving";
  if (serving || B.opt.table == "d512")
    bench_prefill_d512(B, dtype, 2048 / 512);
  if (serving || B.opt.table == "dv")
    bench_prefill_serving(B, dtype, 192, 128, 16, "prefill (192, 128)");
  if (serving || B.opt.table == "overhead") bench_serving_overhead(B, dtype);
  if (all || B.opt.table == "varlen") bench_varlen(B, dtype);
  if (all || B.opt.table == "decode") bench_decode(B, dtype);
  if (all || B.opt.table == "decode_fp8") bench_decode_fp8(B, dtype);
  if (all || B.opt.table == "chunked") bench_chunked_paged(B, dtype);

  if (!B.opt.json_path.empty()) write_json(B);
  for (auto& e : B.events) CUDA_CHECK(cudaEventDestroy(e));
  CUDA_CHECK(cudaStreamDestroy(B.stream));
  return 0;
}
