// The rules of the FP8 fields of flare_mha_fwd_params (flare.h, "FP8 inputs"): which element
// type each tensor holds and the descale factor of a (batch entry, K/V head). One place for
// each rule, shared by validation, the CPU reference and the kernels.
#pragma once
#include <stdint.h>

#include "flare/flare.h"
#include "fp8.h"
#include "host_device.h"

namespace flare {

FLARE_HD bool is_fp8_dtype(int dtype) {
  return dtype == FLARE_DTYPE_E4M3 || dtype == FLARE_DTYPE_E5M2;
}

// Element type of k and v (the KV cache): kv_dtype, or dtype when 0.
FLARE_HD int kv_element_dtype(const flare_mha_fwd_params& p) {
  return p.kv_dtype != 0 ? p.kv_dtype : p.dtype;
}
// Element type of q: q_dtype, or dtype when 0.
FLARE_HD int q_element_dtype(const flare_mha_fwd_params& p) {
  return p.q_dtype != 0 ? p.q_dtype : p.dtype;
}
FLARE_HD bool has_fp8_kv(const flare_mha_fwd_params& p) { return is_fp8_dtype(kv_element_dtype(p)); }
FLARE_HD bool has_fp8_q(const flare_mha_fwd_params& p) { return is_fp8_dtype(q_element_dtype(p)); }

// Bytes of one element of a flare_mha_fwd tensor type.
FLARE_HD int element_bytes(int dtype) { return is_fp8_dtype(dtype) ? 1 : 2; }

// Descale factor of (batch entry b, K/V head hk) from an array with the given strides; 1 when
// the tensor has no factors (not FP8).
FLARE_HD float descale_at(const float* descale, int64_t batch_stride, int64_t head_stride, int b,
                          int hk) {
  return descale ? descale[(int64_t)b * batch_stride + (int64_t)hk * head_stride] : 1.f;
}
FLARE_HD float q_descale(const flare_mha_fwd_params& p, int b, int hk) {
  return descale_at(p.q_descale, p.q_descale_batch_stride, p.q_descale_head_stride, b, hk);
}
FLARE_HD float k_descale(const flare_mha_fwd_params& p, int b, int hk) {
  return descale_at(p.k_descale, p.k_descale_batch_stride, p.k_descale_head_stride, b, hk);
}
FLARE_HD float v_descale(const flare_mha_fwd_params& p, int b, int hk) {
  return descale_at(p.v_descale, p.v_descale_batch_stride, p.v_descale_head_stride, b, hk);
}

// Value of an FP8 code of type `dtype` (e4m3 or e5m2).
FLARE_HD float fp8_to_float(uint8_t code, int dtype) {
  return dtype == FLARE_DTYPE_E5M2 ? e5m2_to_float(code) : e4m3_to_float(code);
}

// The code an append writes for value x into an FP8 cache of type `dtype` with factor
// `descale`: the nearest code to x / descale (IEEE division, then round to nearest even),
// saturated to the format's largest finite value.
FLARE_HD uint8_t quantize_fp8(float x, float descale, int dtype) {
  const float y = x / descale;
  return dtype == FLARE_DTYPE_E5M2 ? float_to_e5m2(y) : float_to_e4m3(y);
}

}  // namespace flare
