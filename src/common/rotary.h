// Rotary embedding: which two elements of a head vector rotate together, and the rotation.
#pragma once
#include "host_device.h"

namespace flare {

// For element t < rotary_dim: its partner and the cos/sin column of the pair.
// Interleaved pairs (2p, 2p+1); half-rotated pairs (p, p + rotary_dim/2).
struct RotaryPair {
  int partner;
  int freq;       // column in the [positions, rotary_dim/2] cos/sin tables
  bool is_first;  // x_first' = x_first*cos - x_second*sin; x_second' = x_first*sin + x_second*cos
};

FLARE_HD RotaryPair rotary_pair(int t, int rotary_dim, bool interleaved) {
  RotaryPair p;
  if (interleaved) {
    p.freq = t / 2;
    p.is_first = (t % 2) == 0;
    p.partner = p.is_first ? t + 1 : t - 1;
  } else {
    const int half = rotary_dim / 2;
    p.is_first = t < half;
    p.freq = p.is_first ? t : t - half;
    p.partner = p.is_first ? t + half : t - half;
  }
  return p;
}

// The rotated value of element t given itself, its partner and the pair's cos/sin: two fp32
// products, each rounded, then their sum. On the device the intrinsics keep nvcc from fusing a
// product into an FMA, so kernels and the CPU reference round identically (an FP8 append is
// compared code for code).
FLARE_HD float rotary_apply(const RotaryPair& p, float x, float partner, float c, float s) {
#ifdef __CUDA_ARCH__
  const float xc = __fmul_rn(x, c), ps = __fmul_rn(partner, s);
  return p.is_first ? __fsub_rn(xc, ps) : __fadd_rn(ps, xc);
#else
  return p.is_first ? x * c - partner * s : partner * s + x * c;
#endif
}

}  // namespace flare
