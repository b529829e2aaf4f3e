// FP8 codes (e4m3 / e5m2) to fp16 pairs for the mma steps of the FP8 K/V decode kernel, exact
// up to one power of two per format (kValueScale), on any sm80+ GPU.
//
// Every finite code of both formats is an fp16 value (fp8.h), so the conversion only moves bits:
// - e5m2 is fp16 with its low byte dropped: the code in the high byte of a 16-bit lane is the
//   value itself, infinities and NaNs included (one byte permute per two codes).
// - e4m3 with the hardware conversion (sm89 and newer, `cvt.rn.f16x2.e4m3x2`): the value, NaN
//   codes to NaN (one instruction per two codes).
// - e4m3 without it (sm80): the code s eeee mmm becomes the fp16 pattern
//   s << 15 | (c & 0x7f) << 7, whose exponent still carries e4m3's bias (7, fp16's is 15): that
//   pattern is the value times 2^-8 for every finite code, subnormal codes landing on fp16's
//   subnormals; the kernel folds 2^8 into its descale factors. Per two codes one byte permute,
//   one shift and one bit select. e4m3's NaN codes (0x7f, 0xff) would come out finite that way:
//   a check per four codes (three integer operations) sends a word holding one to a slow path
//   that writes fp16's NaN, as the reference's decode gives.
#pragma once
#include <stdint.h>

namespace flare {

// Whether this compilation pass has the sm89+ FP8 conversion instructions.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
constexpr bool kFp8CvtInstructions = true;
#else
constexpr bool kFp8CvtInstructions = false;
#endif

// Decodes codes of one format: E5m2 (else e4m3); Hardware: use the sm89+ conversion where this
// pass has it (the kernels pass Arch >= 89; the conversion test forces either path).
template <bool E5m2, bool Hardware>
struct Fp8ToHalf {
  static constexpr bool kCvt = !E5m2 && Hardware && kFp8CvtInstructions;
  // The decoded fp16 value of a finite code is its value times kValueScale.
  static constexpr float kValueScale = E5m2 || kCvt ? 1.f : 1.f / 256.f;

  // Four codes (bytes of w, lowest first) to fp16 pairs: lo = (c0, c1), hi = (c2, c3), the
  // first of each pair in the low half.
  __device__ __forceinline__ static void four(uint32_t w, uint32_t& lo, uint32_t& hi) {
    if constexpr (kCvt) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
      asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n"
          " cvt.rn.f16x2.e4m3x2 %0, l;\n cvt.rn.f16x2.e4m3x2 %1, h;\n}"
          : "=r"(lo), "=r"(hi)
          : "r"(w));
#endif
    } else {
      lo = high_bytes<0x1404u>(w);  // [0, c0, 0, c1]
      hi = high_bytes<0x3424u>(w);  // [0, c2, 0, c3]
      if constexpr (!E5m2) {
        lo = (lo & 0x80008000u) | ((lo >> 1) & 0x3f803f80u);
        hi = (hi & 0x80008000u) | ((hi >> 1) & 0x3f803f80u);
        // A magnitude of 0x7f plus one reaches bit 7: the word holds a NaN code.
        if (((w & 0x7f7f7f7fu) + 0x01010101u) & 0x80808080u) nan_lanes(w, lo, hi);
      }
    }
  }

 private:
  template <uint32_t Sel>
  __device__ __forceinline__ static uint32_t high_bytes(uint32_t w) {
    uint32_t t;
    asm("prmt.b32 %0, %1, 0, %2;" : "=r"(t) : "r"(w), "n"(Sel));
    return t;
  }
  // The slow path of four() for e4m3 by bit moves: each NaN code's lane becomes fp16's NaN.
  __device__ __forceinline__ static void nan_lanes(uint32_t w, uint32_t& lo, uint32_t& hi) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (((w >> (8 * i)) & 0x7fu) != 0x7fu) continue;
      uint32_t& word = i < 2 ? lo : hi;
      const int shift = 16 * (i % 2);
      word = (word & ~(0xffffu << shift)) | (0x7fffu << shift);
    }
  }
};

// Byte permutes pairing two rows' codes (the V operand): [a.b0, b.b0, a.b1, b.b1] and
// [a.b2, b.b2, a.b3, b.b3], so that four() of each gives the fp16 pairs (a, b) of two columns.
__device__ __forceinline__ uint32_t interleave_low(uint32_t a, uint32_t b) {
  uint32_t t;
  asm("prmt.b32 %0, %1, %2, 0x5140;" : "=r"(t) : "r"(a), "r"(b));
  return t;
}
__device__ __forceinline__ uint32_t interleave_high(uint32_t a, uint32_t b) {
  uint32_t t;
  asm("prmt.b32 %0, %1, %2, 0x7362;" : "=r"(t) : "r"(a), "r"(b));
  return t;
}

}  // namespace flare
