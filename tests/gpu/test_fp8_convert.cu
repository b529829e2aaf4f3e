// GPU test of the FP8 decode kernels' code conversion (kernels/common/fp8_convert.cuh): every
// e4m3 and e5m2 code, to fp16 and to bf16, against the exact decode of common/fp8.h: finite
// codes exactly (sign of zero included), non-finite ones as NaN or the same infinity. Each
// non-finite code also sits in a word of otherwise finite codes, which must stay exact.
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

// 256 codes in 64 words; out gets 256 16-bit values in code order.
template <typename T>
__global__ void convert_all(const uint32_t* codes, uint32_t* out, int dtype) {
  const flare::Fp8ToHalf2<T> dec = flare::Fp8ToHalf2<T>::of(dtype);
  const int i = threadIdx.x;
  if (i < 64) dec.four(codes[i], out[2 * i], out[2 * i + 1]);
}

float half_bits_to_float(uint16_t b, bool bf16) {
  if (bf16) {
    const uint32_t w = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &w, 4);
    return f;
  }
  return __half2float(__ushort_as_half(b));
}

class Fp8Convert : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(Fp8Convert, EveryCodeMatchesTheExactDecode) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) GTEST_SKIP() << "no CUDA device";
  const int dtype = std::get<0>(GetParam());
  const bool bf16 = std::get<1>(GetParam());
  std::vector<uint32_t> codes(64);
  for (int i = 0; i < 64; ++i)
    codes[i] = uint32_t(4 * i) | uint32_t(4 * i + 1) << 8 | uint32_t(4 * i + 2) << 16 |
               uint32_t(4 * i + 3) << 24;
  uint32_t *d_codes = nullptr, *d_out = nullptr;
  ASSERT_EQ(cudaMalloc(&d_codes, 256), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_out, 512), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_codes, codes.data(), 256, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(d_out, 0xff, 512), cudaSuccess);
  if (bf16)
    convert_all<__nv_bfloat16><<<1, 64>>>(d_codes, d_out, dtype);
  else
    convert_all<__half><<<1, 64>>>(d_codes, d_out, dtype);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint16_t> out(256);
  ASSERT_EQ(cudaMemcpy(out.data(), d_out, 512, cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d_codes);
  cudaFree(d_out);
  int finite = 0, non_finite = 0;
  for (int c = 0; c < 256; ++c) {
    const float want = flare::fp8_to_float(uint8_t(c), dtype);
    const float got = half_bits_to_float(out[c], bf16);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << "code 0x" << std::hex << c << " gave " << got;
      ++non_finite;
      continue;
    }
    EXPECT_EQ(got, want) << "code 0x" << std::hex << c;
    EXPECT_EQ(std::signbit(got), std::signbit(want)) << "code 0x" << std::hex << c;
    if (std::isinf(want)) ++non_finite;
    else ++finite;
  }
  EXPECT_EQ(finite, dtype == FLARE_DTYPE_E5M2 ? 248 : 254);
  EXPECT_EQ(non_finite, dtype == FLARE_DTYPE_E5M2 ? 8 : 2);
}

INSTANTIATE_TEST_SUITE_P(Codes, Fp8Convert,
                         ::testing::Combine(::testing::Values(FLARE_DTYPE_E4M3, FLARE_DTYPE_E5M2),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) == FLARE_DTYPE_E5M2 ? "e5m2" : "e4m3") +
                                  (std::get<1>(info.param) ? "_to_bf16" : "_to_fp16");
                         });

}  // namespace
