// 16-byte shared-memory loads and stores by inline PTX (kernels address shared memory by 32-bit
// shared-window addresses, not pointers). volatile with a memory clobber: they stay in program
// order with the barriers and other shared-memory accesses around them.
#pragma once
#include <cstdint>

namespace flare {

__device__ __forceinline__ uint4 ld_shared_16(uint32_t smem) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(smem)
               : "memory");
  return v;
}

__device__ __forceinline__ void st_shared_16(uint32_t smem, const uint4& v) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(smem), "r"(v.x), "r"(v.y),
               "r"(v.z), "r"(v.w)
               : "memory");
}

}  // namespace flare
