// GPU test of the FP8 decode kernel's code conversion (kernels/common/fp8_convert.cuh): every
// e4m3 and e5m2 code, by the hardware conversion and by bit moves, against the exact decode of
// common/fp8.h times the decoder's power of two: finite codes exactly (sign of zero included),
// non-finite ones as NaN or the same infinity. Each non-finite code also sits in a word of
// otherwise finite codes, which must stay exact. The V operand's byte pairing is checked too.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/fp8_params.h"
#include "kernels/common/fp8_convert.cuh"

namespace {

// 256 codes in 64 words; out gets 256 fp16 values in code order, then (pairs) the 256 values
// again through the V operand's pairing of word i with word i ^ 1.
template <bool E5m2, bool Hardware>
__global__ void convert_all(const uint32_t* codes, uint32_t* out, uint32_t* pairs) {
  using Dec = flare::Fp8ToHalf<E5m2, Hardware>;
  const int i = threadIdx.x;
  if (i >= 64) return;
  Dec::four(codes[i], out[2 * i], out[2 * i + 1]);
  // Word i's codes are a, the partner's b: pairs (a_j, b_j) of dims j = 0..3.
  const uint32_t a = codes[i], b = codes[i ^ 1];
  uint32_t p[4];
  Dec::four(flare::interleave_low(a, b), p[0], p[1]);
  Dec::four(flare::interleave_high(a, b), p[2], p[3]);
  for (int j = 0; j < 4; ++j) pairs[4 * i + j] = p[j];
}

float half_bits_to_float(uint16_t b) { return __half2float(__ushort_as_half(b)); }

// (format, hardware conversion)
class Fp8Convert : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(Fp8Convert, EveryCodeMatchesTheExactDecode) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) GTEST_SKIP() << "no CUDA device";
  const int dtype = std::get<0>(GetParam());
  const bool hardware = std::get<1>(GetParam());
  const bool e5m2 = dtype == FLARE_DTYPE_E5M2;
  std::vector<uint32_t> codes(64);
  for (int i = 0; i < 64; ++i)
    codes[i] = uint32_t(4 * i) | uint32_t(4 * i + 1) << 8 | uint32_t(4 * i + 2) << 16 |
               uint32_t(4 * i + 3) << 24;
  uint32_t *d_codes = nullptr, *d_out = nullptr, *d_pairs = nullptr;
  ASSERT_EQ(cudaMalloc(&d_codes, 256), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_out, 512), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_pairs, 1024), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_codes, codes.data(), 256, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(d_out, 0xff, 512), cudaSuccess);
  ASSERT_EQ(cudaMemset(d_pairs, 0xff, 1024), cudaSuccess);
  float value_scale = 1.f;
  if (e5m2 && hardware) {
    convert_all<true, true><<<1, 64>>>(d_codes, d_out, d_pairs);
    value_scale = flare::Fp8ToHalf<true, true>::kValueScale;
  } else if (e5m2) {
    convert_all<true, false><<<1, 64>>>(d_codes, d_out, d_pairs);
    value_scale = flare::Fp8ToHalf<true, false>::kValueScale;
  } else if (hardware) {
    convert_all<false, true><<<1, 64>>>(d_codes, d_out, d_pairs);
    // The host pass has no conversion instructions: the device's scale is 1 where it has them.
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
    value_scale = major * 10 + minor >= 89 ? 1.f : 1.f / 256.f;
  } else {
    convert_all<false, false><<<1, 64>>>(d_codes, d_out, d_pairs);
    value_scale = flare::Fp8ToHalf<false, false>::kValueScale;
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint16_t> out(256), pairs(512);
  ASSERT_EQ(cudaMemcpy(out.data(), d_out, 512, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(pairs.data(), d_pairs, 1024, cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d_codes);
  cudaFree(d_out);
  cudaFree(d_pairs);
  auto expect_code = [&](int c, uint16_t bits, const char* where) {
    const float want = flare::fp8_to_float(uint8_t(c), dtype) * value_scale;
    const float got = half_bits_to_float(bits);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << where << " code 0x" << std::hex << c << " gave " << got;
      return false;
    }
    EXPECT_EQ(got, want) << where << " code 0x" << std::hex << c;
    EXPECT_EQ(std::signbit(got), std::signbit(want)) << where << " code 0x" << std::hex << c;
    return !std::isinf(want);
  };
  int finite = 0;
  for (int c = 0; c < 256; ++c) finite += expect_code(c, out[c], "four()");
  EXPECT_EQ(finite, e5m2 ? 248 : 254);
  // pairs[8 i + 2 j + h]: dim j of word i (h = 0) and of its partner word i ^ 1 (h = 1).
  for (int i = 0; i < 64; ++i)
    for (int j = 0; j < 4; ++j)
      for (int h = 0; h < 2; ++h)
        expect_code(4 * (h ? i ^ 1 : i) + j, pairs[8 * i + 2 * j + h], "interleave");
}

INSTANTIATE_TEST_SUITE_P(Codes, Fp8Convert,
                         ::testing::Combine(::testing::Values(FLARE_DTYPE_E4M3, FLARE_DTYPE_E5M2),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) == FLARE_DTYPE_E5M2 ? "e5m2" : "e4m3") +
                                  (std::get<1>(info.param) ? "_hardware" : "_bit_moves");
                         });

}  // namespace
