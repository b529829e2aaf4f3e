// The two 8-bit floating-point formats flare reads (flare.h: FLARE_DTYPE_E4M3, FLARE_DTYPE_E5M2),
// as exact conversions to float and round-to-nearest-even, saturating conversions from float.
// Host and device share them: the CPU reference decodes with them, and kernels of GPUs without
// FP8 conversion instructions (sm80) can use them where the hardware ones are missing.
//
//   e4m3 (float8_e4m3fn): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; the
//     codes S.1111.111 are NaN; largest finite 448, smallest subnormal 2^-9.
//   e5m2 (float8_e5m2): 1 sign, 5 exponent (bias 15), 2 mantissa bits (IEEE-like: S.11111.00
//     is infinity, S.11111.xx with xx != 0 NaN); largest finite 57344, smallest subnormal 2^-16.
//
// Every finite value of either format is exact in float, half and bfloat16 (their exponent
// ranges and mantissas hold them), so dequantization to the compute type loses nothing; the
// descale factor is what the kernels must fold in exactly (flare.h, "FP8 inputs").
#pragma once
#include <math.h>
#include <stdint.h>

#include "host_device.h"

namespace flare {

// Largest finite magnitudes: saturation bounds of the encoders.
constexpr float kE4m3Max = 448.f;
constexpr float kE5m2Max = 57344.f;

// Exact value of an e4m3 code (NaN for S.1111.111).
FLARE_HD float e4m3_to_float(uint8_t code) {
  const float sign = (code & 0x80u) ? -1.f : 1.f;
  const int exp = (code >> 3) & 0xf;
  const int mant = code & 0x7;
  if (exp == 0xf && mant == 0x7) return NAN;
  if (exp == 0) return sign * ldexpf(float(mant), -9);  // subnormal: mant * 2^-9
  return sign * ldexpf(float(8 + mant), exp - 10);     // (1 + mant / 8) * 2^(exp - 7)
}

// Exact value of an e5m2 code (inf / NaN for exponent 31).
FLARE_HD float e5m2_to_float(uint8_t code) {
  const float sign = (code & 0x80u) ? -1.f : 1.f;
  const int exp = (code >> 2) & 0x1f;
  const int mant = code & 0x3;
  if (exp == 0x1f) return mant == 0 ? sign * INFINITY : NAN;
  if (exp == 0) return sign * ldexpf(float(mant), -16);  // subnormal: mant * 2^-16
  return sign * ldexpf(float(4 + mant), exp - 17);      // (1 + mant / 4) * 2^(exp - 15)
}

namespace fp8_detail {

// Rounds |x| (finite, >= 0) to the nearest value of a format with `mant_bits` mantissa bits,
// smallest normal exponent `min_exp` (subnormals below it step by 2^(min_exp - mant_bits)), and
// returns the code's magnitude bits (exponent field << mant_bits | mantissa), ties to even.
// The caller saturates beforehand, so the result is at most the largest finite code.
FLARE_HD uint32_t encode_magnitude(float ax, int mant_bits, int min_exp, int bias) {
  if (ax == 0.f) return 0u;
  int e;
  frexpf(ax, &e);  // ax = f * 2^e, f in [0.5, 1): the leading bit is 2^(e - 1)
  int exp = e - 1;
  if (exp < min_exp) exp = min_exp;  // subnormal range: fixed quantum
  // The quantum (one unit in the last place) at this exponent, and ax in quanta.
  const float units = ldexpf(ax, mant_bits - exp);
  float r = rintf(units);  // the current rounding mode: round to nearest even
  uint32_t q = uint32_t(r);
  // q counts quanta of 2^(exp - mant_bits): normal values have q in [2^mant, 2^(mant + 1)]
  // (the top is a carry into the next exponent), subnormals q < 2^mant.
  const uint32_t one = 1u << mant_bits;
  if (q >= 2 * one) {  // carry: next exponent, mantissa 0
    q = one;
    ++exp;
  }
  if (q < one) return q;  // subnormal (exponent field 0), or rounded to zero
  return (uint32_t(exp + bias) << mant_bits) | (q - one);
}

}  // namespace fp8_detail

// float -> e4m3, round to nearest even, saturating: magnitudes above 448 (and infinities)
// become +-448; NaN becomes the NaN code 0x7f (sign kept).
FLARE_HD uint8_t float_to_e4m3(float x) {
  const uint32_t sign = signbit(x) ? 0x80u : 0u;
  if (isnan(x)) return uint8_t(sign | 0x7fu);
  float ax = fabsf(x);
  if (ax > kE4m3Max) ax = kE4m3Max;
  return uint8_t(sign | fp8_detail::encode_magnitude(ax, 3, -6, 7));
}

// float -> e5m2, round to nearest even, saturating: magnitudes above 57344 (and infinities)
// become +-57344; NaN becomes 0x7f (sign kept).
FLARE_HD uint8_t float_to_e5m2(float x) {
  const uint32_t sign = signbit(x) ? 0x80u : 0u;
  if (isnan(x)) return uint8_t(sign | 0x7fu);
  float ax = fabsf(x);
  if (ax > kE5m2Max) ax = kE5m2Max;
  return uint8_t(sign | fp8_detail::encode_magnitude(ax, 2, -14, 15));
}

}  // namespace flare
