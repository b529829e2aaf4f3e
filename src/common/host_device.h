// Marks functions that define attention semantics once for kernels and CPU code alike.
#pragma once
#if defined(__CUDACC__)
#define FLARE_HD __host__ __device__ __forceinline__
#else
#define FLARE_HD inline
#endif
#include <cstdint>
