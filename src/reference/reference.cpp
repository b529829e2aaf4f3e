// CPU reference of the forward pass. Every index and visibility decision goes through the shared
// semantic functions of src/common, so the reference and the kernels cannot drift apart on
// layout; only the arithmetic (float64, or a deliberately naive low-precision pipeline) is ours.
#include "reference/reference.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/fp8_params.h"
#include "common/mask.h"
#include "common/rotary.h"
#include "common/sequence.h"
#include "common/serving_semantics.h"

namespace flare {
namespace ref {

namespace {

uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

float bits_float(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in float.
    const float mag = std::ldexp(static_cast<float>(mant), -24);
    return bits_float(sign | float_bits(mag));
  }
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

// value / 2^shift rounded to nearest, ties to even (1 <= shift <= 31).
uint32_t shift_round_even(uint32_t value, int shift) {
  const uint32_t q = value >> shift;
  const uint32_t rem = value & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  return (rem > half || (rem == half && (q & 1u))) ? q + 1u : q;
}

uint16_t float_to_half(float x) {
  const uint32_t u = float_bits(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t mag = u & 0x7fffffffu;
  if (mag > 0x7f800000u) {  // nan: keep it quiet, keep the top payload bits
    return static_cast<uint16_t>(sign | 0x7e00u | ((mag >> 13) & 0x3ffu));
  }
  if (mag >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 -> inf
  const uint32_t exp = mag >> 23;
  if (exp >= 113) {
    // Normal half. A carry out of the mantissa correctly bumps the exponent.
    const uint32_t h = ((exp - 112u) << 10) | ((mag >> 13) & 0x3ffu);
    const uint32_t rem = mag & 0x1fffu;
    const uint32_t up = (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ? 1u : 0u;
    return static_cast<uint16_t>(sign | (h + up));
  }
  if (exp == 0) return sign;  // float zero/subnormal: far below half's smallest subnormal
  // Half subnormal (or rounds up to the smallest normal, whose pattern is the carry 0x400):
  // the value in units of 2^-24 is m * 2^(exp - 126) with the 24-bit significand m.
  const uint32_t m = (mag & 0x7fffffu) | 0x800000u;
  const int shift = 126 - static_cast<int>(exp);  // >= 14
  if (shift > 24) return sign;                     // below a quarter of the smallest subnormal
  return static_cast<uint16_t>(sign | shift_round_even(m, shift));
}

float bf16_to_float(uint16_t b) { return bits_float(uint32_t(b) << 16); }

uint16_t float_to_bf16(float x) {
  const uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  const uint32_t bias = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + bias) >> 16);
}

// Double -> float rounding to odd: a float with >= 2 more significand bits than the target
// then rounds to the target exactly as the double would, with no double-rounding error.
float double_to_float_odd(double x) {
  if (std::isnan(x)) return static_cast<float>(x);
  const float f = static_cast<float>(x);
  if (static_cast<double>(f) == x) return f;
  uint32_t u = float_bits(f);
  if ((u & 1u) == 0) {
    // Step one ulp toward x; inf steps down to FLT_MAX, zero up to the smallest subnormal.
    if (std::fabs(static_cast<double>(f)) > std::fabs(x))
      u -= 1u;
    else
      u += 1u;
  }
  return bits_float(u);
}

bool is_bf16(int dtype) { return dtype == FLARE_DTYPE_BF16; }

void check_dtype(int dtype) {
  if (dtype != FLARE_DTYPE_FP16 && dtype != FLARE_DTYPE_BF16)
    throw std::invalid_argument("flare::ref: unsupported dtype " + std::to_string(dtype));
}

double round_to(double x, int dtype) {
  return static_cast<double>(to_float(from_double(x, dtype), dtype));
}

// Converts one row of n elements from dtype bits to double.
void load_row(const uint16_t* src, int n, int dtype, double* dst) {
  if (is_bf16(dtype)) {
    for (int e = 0; e < n; ++e) dst[e] = bf16_to_float(src[e]);
  } else {
    for (int e = 0; e < n; ++e) dst[e] = half_to_float(src[e]);
  }
}

// The row of n elements at element `offset` of a tensor of type `dtype` (fp16 / bf16, or FP8
// codes times their descale factor: exact in double).
void load_tensor_row(const void* base, int64_t offset, int n, int dtype, float descale,
                     double* dst) {
  if (!is_fp8_dtype(dtype)) {
    load_row(static_cast<const uint16_t*>(base) + offset, n, dtype, dst);
    return;
  }
  const uint8_t* src = static_cast<const uint8_t*>(base) + offset;
  for (int e = 0; e < n; ++e) dst[e] = double(fp8_to_float(src[e], dtype)) * double(descale);
}

// Four dot products against the same q row, with independent accumulators so the inner loop is
// not one long chain of dependent additions.
void dot4(const double* q, const double* k0, const double* k1, const double* k2,
          const double* k3, int n, double* r) {
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (int e = 0; e < n; ++e) {
    const double x = q[e];
    a0 += x * k0[e];
    a1 += x * k1[e];
    a2 += x * k2[e];
    a3 += x * k3[e];
  }
  r[0] = a0;
  r[1] = a1;
  r[2] = a2;
  r[3] = a3;
}

double dot1(const double* q, const double* k, int n) {
  double a0 = 0, a1 = 0;
  int e = 0;
  for (; e + 1 < n; e += 2) {
    a0 += q[e] * k[e];
    a1 += q[e + 1] * k[e + 1];
  }
  if (e < n) a0 += q[e] * k[e];
  return a0 + a1;
}

struct RotaryTables {
  bool on = false;
  int dim = 0;
  bool interleaved = false;
  int positions = 0;
  const uint16_t* cos = nullptr;
  const uint16_t* sin = nullptr;
  int dtype = 0;

  explicit RotaryTables(const flare_mha_fwd_params& p) {
    on = is_kv_cache(p) && p.k_new != nullptr && p.rotary_dim > 0;
    if (!on) return;
    if (p.rotary_dim % 2 != 0 || p.rotary_dim > p.head_dim)
      throw std::invalid_argument("flare::ref: bad rotary_dim");
    if (!p.rotary_cos || !p.rotary_sin)
      throw std::invalid_argument("flare::ref: rotary tables missing");
    dim = p.rotary_dim;
    interleaved = p.rotary_interleaved != 0;
    positions = p.rotary_max_positions;
    cos = static_cast<const uint16_t*>(p.rotary_cos);
    sin = static_cast<const uint16_t*>(p.rotary_sin);
    dtype = p.dtype;
  }

  int64_t index(int pos, int freq) const {
    if (pos < 0 || pos >= positions)
      throw std::out_of_range("flare::ref: rotary position " + std::to_string(pos) +
                              " outside the cos/sin tables");
    return static_cast<int64_t>(pos) * (dim / 2) + freq;
  }
  float cos_at(int pos, int freq) const { return to_float(cos[index(pos, freq)], dtype); }
  float sin_at(int pos, int freq) const { return to_float(sin[index(pos, freq)], dtype); }
};

// Rotates the first rotary_dim elements of x (double copy of a row) at position pos.
// exact: float64 rotation; otherwise float rotation (as a kernel does) rounded to the dtype.
void rotate_row(const RotaryTables& rt, int pos, const double* x, bool exact, double* out) {
  for (int t = 0; t < rt.dim; ++t) {
    const RotaryPair pr = rotary_pair(t, rt.dim, rt.interleaved);
    const float c = rt.cos_at(pos, pr.freq);
    const float s = rt.sin_at(pos, pr.freq);
    if (exact) {
      // rotary_apply's formula, evaluated in double.
      out[t] = pr.is_first ? x[t] * c - x[pr.partner] * s : x[pr.partner] * s + x[t] * c;
    } else {
      const float r = rotary_apply(pr, static_cast<float>(x[t]),
                                   static_cast<float>(x[pr.partner]), c, s);
      out[t] = round_to(r, rt.dtype);
    }
  }
}

}  // namespace

float to_float(uint16_t bits, int dtype) {
  return is_bf16(dtype) ? bf16_to_float(bits) : half_to_float(bits);
}

uint16_t from_float(float x, int dtype) {
  return is_bf16(dtype) ? float_to_bf16(x) : float_to_half(x);
}

uint16_t from_double(double x, int dtype) { return from_float(double_to_float_odd(x), dtype); }

void attention_forward(const flare_mha_fwd_params& p, Precision precision, double* out,
                       double* lse) {
  check_dtype(p.dtype);
  if (p.num_heads_k <= 0 || p.num_heads % p.num_heads_k != 0)
    throw std::invalid_argument("flare::ref: num_heads must be a multiple of num_heads_k");
  const int dtype = p.dtype;
  const int d = p.head_dim;
  const int dv = v_head_dim(p);
  if (d < 1 || dv < 1) throw std::invalid_argument("flare::ref: head_dim and head_dim_v must be >= 1");
  const bool naive = precision == Precision::NaiveLowPrecision;
  const int group = p.num_heads / p.num_heads_k;
  const double scale = effective_scale(p);
  const double softcap = p.softcap;
  const RotaryTables rot(p);
  const int q_dtype = q_element_dtype(p), kv_dtype = kv_element_dtype(p);
  // The naive model of FP8 prefill quantizes the unnormalised probabilities to e4m3 for P V, as
  // an FP8 kernel feeds its second GEMM (the row sum stays unrounded).
  const bool fp8_p = has_fp8_q(p);
  const double neg_inf = -std::numeric_limits<double>::infinity();

  std::vector<double> kd, vd, q(d), qr(d), acc(dv), score;
  std::vector<int> keys;

  for (int b = 0; b < p.batch; ++b) {
    const SequenceInfo s = sequence_info(p, b);
    if (s.seqlen_q <= 0) continue;
    const MaskSpec m = sequence_mask(p, s);
    const int sk = s.seqlen_k > 0 ? s.seqlen_k : 0;
    kd.resize(static_cast<size_t>(sk) * d);
    vd.resize(static_cast<size_t>(sk) * dv);
    score.resize(sk);
    keys.reserve(sk);

    for (int hk = 0; hk < p.num_heads_k; ++hk) {
      // Keys and values of this (sequence, kv head), converted once for the whole group.
      const float kscale = k_descale(p, b, hk), vscale = v_descale(p, b, hk);
      for (int j = 0; j < sk; ++j) {
        load_tensor_row(p.k, k_offset(p, s, j, hk), d, kv_dtype, kscale,
                        &kd[static_cast<size_t>(j) * d]);
        load_tensor_row(p.v, v_offset(p, s, j, hk), dv, kv_dtype, vscale,
                        &vd[static_cast<size_t>(j) * dv]);
      }
      for (int h = hk * group; h < (hk + 1) * group; ++h) {
        const double slope = alibi_slope(p, b, h);
        // The sink joins the denominator only: -inf (no sink) adds nothing.
        const double sink = sink_logit(p, h);
        for (int i = 0; i < s.seqlen_q; ++i) {
          double* o = out + out_offset(p, s, i, h);
          keys.clear();
          for (int j = 0; j < sk; ++j)
            if (key_visible(p, s, m, i, j)) keys.push_back(j);
          if (keys.empty()) {
            for (int e = 0; e < dv; ++e) o[e] = 0.0;
            if (lse) lse[lse_offset(p, s, i, h)] = has_sink(p) ? sink : neg_inf;
            continue;
          }

          load_tensor_row(p.q, q_offset(p, s, i, h), d, q_dtype, q_descale(p, b, hk), q.data());
          const double* qrow = q.data();
          if (rot.on) {
            for (int e = 0; e < d; ++e) qr[e] = q[e];
            rotate_row(rot, rotary_q_position(p, s, i), q.data(), !naive, qr.data());
            qrow = qr.data();
          }

          // Scores of the visible keys.
          const size_t nk = keys.size();
          size_t t = 0;
          double r4[4];
          for (; t + 4 <= nk; t += 4) {
            dot4(qrow, &kd[static_cast<size_t>(keys[t]) * d],
                 &kd[static_cast<size_t>(keys[t + 1]) * d],
                 &kd[static_cast<size_t>(keys[t + 2]) * d],
                 &kd[static_cast<size_t>(keys[t + 3]) * d], d, r4);
            for (int u = 0; u < 4; ++u) score[t + u] = r4[u];
          }
          for (; t < nk; ++t) score[t] = dot1(qrow, &kd[static_cast<size_t>(keys[t]) * d], d);

          double mx = neg_inf;
          for (size_t u = 0; u < nk; ++u) {
            double x = scale * score[u];
            if (softcap > 0) x = softcap * std::tanh(x / softcap);
            if (slope != 0) {
              const long long dist =
                  static_cast<long long>(i) + sk - s.seqlen_q - keys[u];
              x -= slope * static_cast<double>(dist < 0 ? -dist : dist);
            }
            if (naive) x = round_to(x, dtype);
            score[u] = x;
            if (x > mx) mx = x;
          }
          // A finite sink above every score becomes the max, as a softmax over the scores and
          // the sink column would take it (a naive kernel too).
          if (sink > mx) mx = sink;
          double sum = sink > neg_inf ? std::exp(sink - mx) : 0.0;
          for (size_t u = 0; u < nk; ++u) {
            score[u] = std::exp(score[u] - mx);
            sum += score[u];
          }
          const double inv = 1.0 / sum;
          for (size_t u = 0; u < nk; ++u) {
            if (naive && fp8_p) {
              score[u] = double(e4m3_to_float(float_to_e4m3(float(score[u])))) * inv;
              continue;
            }
            const double pr = score[u] * inv;
            score[u] = naive ? round_to(pr, dtype) : pr;
          }

          // out = sum_j p_j v_j, four keys per pass over the row.
          for (int e = 0; e < dv; ++e) acc[e] = 0.0;
          t = 0;
          for (; t + 4 <= nk; t += 4) {
            const double p0 = score[t], p1 = score[t + 1], p2 = score[t + 2], p3 = score[t + 3];
            const double* v0 = &vd[static_cast<size_t>(keys[t]) * dv];
            const double* v1 = &vd[static_cast<size_t>(keys[t + 1]) * dv];
            const double* v2 = &vd[static_cast<size_t>(keys[t + 2]) * dv];
            const double* v3 = &vd[static_cast<size_t>(keys[t + 3]) * dv];
            for (int e = 0; e < dv; ++e)
              acc[e] += (p0 * v0[e] + p1 * v1[e]) + (p2 * v2[e] + p3 * v3[e]);
          }
          for (; t < nk; ++t) {
            const double p0 = score[t];
            const double* v0 = &vd[static_cast<size_t>(keys[t]) * dv];
            for (int e = 0; e < dv; ++e) acc[e] += p0 * v0[e];
          }
          for (int e = 0; e < dv; ++e) o[e] = naive ? round_to(acc[e], dtype) : acc[e];
          if (lse) lse[lse_offset(p, s, i, h)] = mx + std::log(sum);
        }
      }
    }
  }
}

void append_kv(const flare_mha_fwd_params& p, void* k_cache, void* v_cache) {
  check_dtype(p.dtype);
  if (!is_kv_cache(p) || p.k_new == nullptr || p.seqlen_new <= 0) return;
  if (p.v_new == nullptr) throw std::invalid_argument("flare::ref: k_new without v_new");
  const int dtype = p.dtype;
  const int d = p.head_dim;
  const int dv = v_head_dim(p);
  const RotaryTables rot(p);
  const auto* kn = static_cast<const uint16_t*>(p.k_new);
  const auto* vn = static_cast<const uint16_t*>(p.v_new);
  const int kv_dtype = kv_element_dtype(p);
  std::vector<float> x(d);

  for (int b = 0; b < p.batch; ++b) {
    const SequenceInfo s = sequence_info(p, b);
    for (int t = 0; t < p.seqlen_new; ++t) {
      const int row = s.cache_len + t;
      for (int hk = 0; hk < p.num_heads_k; ++hk) {
        const uint16_t* ksrc = kn + static_cast<int64_t>(b) * p.k_new_batch_stride +
                               static_cast<int64_t>(t) * p.k_new_row_stride +
                               static_cast<int64_t>(hk) * p.k_new_head_stride;
        const uint16_t* vsrc = vn + static_cast<int64_t>(b) * p.v_new_batch_stride +
                               static_cast<int64_t>(t) * p.v_new_row_stride +
                               static_cast<int64_t>(hk) * p.v_new_head_stride;
        if (is_fp8_dtype(kv_dtype)) {
          // FP8 cache: the (rotated) fp32 value, quantized with the factor of (b, hk).
          uint8_t* kdst = static_cast<uint8_t*>(k_cache) + k_offset(p, s, row, hk);
          uint8_t* vdst = static_cast<uint8_t*>(v_cache) + v_offset(p, s, row, hk);
          const float kscale = k_descale(p, b, hk), vscale = v_descale(p, b, hk);
          for (int e = 0; e < d; ++e) x[e] = to_float(ksrc[e], dtype);
          for (int e = 0; e < d; ++e) {
            float value = x[e];
            if (rot.on && e < rot.dim) {
              const int pos = static_cast<int>(s.k_row0) + s.cache_len + t;
              const RotaryPair pr = rotary_pair(e, rot.dim, rot.interleaved);
              value = rotary_apply(pr, x[e], x[pr.partner], rot.cos_at(pos, pr.freq),
                                   rot.sin_at(pos, pr.freq));
            }
            kdst[e] = quantize_fp8(value, kscale, kv_dtype);
          }
          for (int e = 0; e < dv; ++e) vdst[e] = quantize_fp8(to_float(vsrc[e], dtype), vscale, kv_dtype);
          continue;
        }
        uint16_t* kdst = static_cast<uint16_t*>(k_cache) + k_offset(p, s, row, hk);
        uint16_t* vdst = static_cast<uint16_t*>(v_cache) + v_offset(p, s, row, hk);
        if (rot.on) {
          const int pos = static_cast<int>(s.k_row0) + s.cache_len + t;
          for (int e = 0; e < d; ++e) x[e] = to_float(ksrc[e], dtype);
          for (int e = 0; e < d; ++e) {
            if (e < rot.dim) {
              const RotaryPair pr = rotary_pair(e, rot.dim, rot.interleaved);
              const float r = rotary_apply(pr, x[e], x[pr.partner], rot.cos_at(pos, pr.freq),
                                           rot.sin_at(pos, pr.freq));
              kdst[e] = from_float(r, dtype);
            } else {
              kdst[e] = ksrc[e];
            }
          }
        } else {
          for (int e = 0; e < d; ++e) kdst[e] = ksrc[e];
        }
        for (int e = 0; e < dv; ++e) vdst[e] = vsrc[e];
      }
    }
  }
}

}  // namespace ref
}  // namespace flare
