// wgmma shared-memory matrix descriptors (PTX ISA "matrix descriptor format") for the 128-byte
// swizzled layout: plain arithmetic, shared by the kernels and the CPU tests.
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace flare {
namespace sm90 {

// Start address, leading- and stride-dimension byte offsets (all >> 4, 14 bits each), layout
// type 1 = 128-byte swizzle (bits 62-63).
FLARE_HD uint64_t make_desc(uint32_t smem_addr, uint32_t leading_bytes, uint32_t stride_bytes) {
  uint64_t d = 0;
  d |= uint64_t((smem_addr >> 4) & 0x3FFF);
  d |= uint64_t((leading_bytes >> 4) & 0x3FFF) << 16;
  d |= uint64_t((stride_bytes >> 4) & 0x3FFF) << 32;
  d |= uint64_t(1) << 62;
  return d;
}

// K-major operand (rows = M or N, the 16-wide K step inside one 128-byte atom row): eight-row
// groups are 1024 bytes apart; the leading offset is unused for this layout.
FLARE_HD uint64_t desc_k_major(uint32_t smem_addr) { return make_desc(smem_addr, 16, 1024); }

// MN-major operand (B = V: keys are K, head dim is N): 64-element atoms along N are
// `atom_bytes` apart, eight-key groups 1024 bytes apart.
FLARE_HD uint64_t desc_mn_major(uint32_t smem_addr, uint32_t atom_bytes) {
  return make_desc(smem_addr, atom_bytes, 1024);
}

// The descriptor of (start address + offset_bytes) from that of the start address: only the
// start-address field moves. While the moved address stays below 2^18 (every shared-memory
// address does: 228 KB per SM) the 14-bit field cannot carry into the leading-offset bits, and
// the high word is unchanged: one 32-bit add per wgmma instead of rebuilding every field.
FLARE_HD uint64_t desc_add(uint64_t desc, uint32_t offset_bytes) {
  const uint32_t lo = uint32_t(desc) + (offset_bytes >> 4);
  return (desc & 0xFFFFFFFF00000000ull) | lo;
}

}  // namespace sm90
}  // namespace flare
