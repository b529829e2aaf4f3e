// FP8 codes (e4m3 / e5m2) to the 16-bit compute type T (fp16 or bf16), exactly, on any sm80+
// GPU. Every finite code of both formats is a value of T (fp8.h), so the conversion only moves
// bits: a code c = s eeee mmm (e4m3) or s eeeee mm (e5m2) becomes the T pattern
// s << 15 | (c & 0x7f) << (7 - shift), whose exponent field still carries the code's exponent
// bias; one multiplication by the power of two between the biases (exact) finishes it. Code
// exponents of 0 (subnormal codes) land on T's subnormals, which fp16 and bf16 multiplication
// keep (no flush to zero), so they convert exactly too. Per two codes: one byte permute, one
// shift, one bit select, one packed multiply.
// Non-finite codes (e4m3's NaN 0x7f / 0xff; e5m2's infinities 0x7c / 0xfc and NaNs) would come
// out finite that way (e4m3 NaN as 480; e5m2 inf and NaN to bf16 as 65536 and more): a check
// per four codes (three integer operations) sends a word holding one to a slow path that writes
// T's NaN or infinity instead, as the reference's decode gives (e5m2 to fp16 keeps them itself).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

#include "flare/flare.h"

namespace flare {

template <typename T>
struct Fp8ToHalf2 {
  uint32_t shift;  // right shift from the code's bits (at bit 8 of a 16-bit lane) to T's
  uint32_t mask;   // magnitude bits after the shift, both lanes
  uint32_t scale;  // T x2 bits of 2^(T's exponent bias - the code's bias), both lanes
  // Per byte, 0x80 minus the smallest non-finite code magnitude (e4m3 0x7f, e5m2 0x7c): a
  // code's magnitude plus it reaches bit 7 exactly when the code is not finite. 0 where the
  // bit moves keep them (e5m2 to fp16).
  uint32_t non_finite_bias;

  // The decoder of codes of type `dtype` (FLARE_DTYPE_E4M3 or FLARE_DTYPE_E5M2).
  __device__ __forceinline__ static Fp8ToHalf2 of(int dtype) {
    constexpr bool kBf16 = std::is_same<T, __nv_bfloat16>::value;
    const bool e5m2 = dtype == FLARE_DTYPE_E5M2;
    // fp16: 5 exponent bits (bias 15), 10 mantissa bits; bf16: 8 (bias 127), 7.
    // e4m3 (bias 7, 3 mantissa bits), e5m2 (bias 15, 2 mantissa bits).
    const uint32_t mant_t = kBf16 ? 7 : 10;
    const uint32_t mant_c = e5m2 ? 2 : 3;
    const int bias_t = kBf16 ? 127 : 15, bias_c = e5m2 ? 15 : 7;
    Fp8ToHalf2 d;
    // The code's mantissa MSB (bit 8 + mant_c - 1 of the lane) onto T's (bit mant_t - 1):
    // fp16 1 (e4m3) / 0 (e5m2), bf16 4 / 3.
    d.shift = 8 - (mant_t - mant_c);
    const uint32_t m16 = 0x7f00u >> d.shift;
    d.mask = m16 | (m16 << 16);
    // 2^(bias_t - bias_c) as T bits: exponent field bias_t + (bias_t - bias_c), mantissa 0.
    const uint32_t e = uint32_t(2 * bias_t - bias_c) << mant_t;
    d.scale = e | (e << 16);
    d.non_finite_bias = !e5m2 ? 0x01010101u : kBf16 ? 0x04040404u : 0u;
    return d;
  }

  // Codes bytes b0 and b1 of `w` (selector 0x1404: bytes 0 and 1; 0x3424: bytes 2 and 3) to
  // two T values, the first in the low half.
  template <uint32_t Sel>
  __device__ __forceinline__ uint32_t pair(uint32_t w) const {
    uint32_t t;
    asm("prmt.b32 %0, %1, 0, %2;" : "=r"(t) : "r"(w), "n"(Sel));
    const uint32_t bits = (t & 0x80008000u) | ((t >> shift) & mask);
    uint32_t r;
    if constexpr (std::is_same<T, __nv_bfloat16>::value)
      asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(bits), "r"(scale), "r"(0x80008000u));
    else
      asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(bits), "r"(scale));
    return r;
  }

  // Four codes (bytes of w, lowest first) to four T values in two words.
  __device__ __forceinline__ void four(uint32_t w, uint32_t& lo, uint32_t& hi) const {
    lo = pair<0x1404u>(w);
    hi = pair<0x3424u>(w);
    if (((w & 0x7f7f7f7fu) + non_finite_bias) & 0x80808080u) non_finite(w, lo, hi);
  }

 private:
  // The slow path of four(): each non-finite code's lane becomes T's NaN (e4m3: its only
  // non-finite codes; e5m2: mantissa bits set) or the signed infinity (e5m2, mantissa 0).
  __device__ __forceinline__ void non_finite(uint32_t w, uint32_t& lo, uint32_t& hi) const {
    constexpr bool kBf16 = std::is_same<T, __nv_bfloat16>::value;
    constexpr uint32_t kInf = kBf16 ? 0x7f80u : 0x7c00u;
    const bool e4m3 = non_finite_bias == 0x01010101u;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t code = (w >> (8 * i)) & 0xffu;
      if ((((code & 0x7fu) + (non_finite_bias & 0xffu)) & 0x80u) == 0) continue;
      const uint32_t sign = (code & 0x80u) << 8;
      const uint32_t v = e4m3 || (code & 0x03u) != 0 ? 0x7fffu : sign | kInf;
      uint32_t& word = i < 2 ? lo : hi;
      const int shift = 16 * (i % 2);
      word = (word & ~(0xffffu << shift)) | (v << shift);
    }
  }
};

}  // namespace flare
