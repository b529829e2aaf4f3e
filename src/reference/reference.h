// CPU reference of flare's full forward semantics, in float64 and in a "naive low precision"
// variant (scores and probabilities rounded to the element type, as a straightforward fp16/bf16
// implementation would do). All pointers in the params are HOST pointers; fp16/bf16 tensors are
// stored as uint16_t bit patterns, FP8 tensors (kv_dtype / q_dtype) as byte codes whose values
// are code x descale (flare.h, "FP8 inputs"). The naive model of FP8 prefill (q_dtype e4m3)
// rounds the unnormalised probabilities to e4m3 before P V, as an FP8 kernel does.
#pragma once
#include <cstdint>
#include <vector>

#include "flare/flare.h"

namespace flare {
namespace ref {

enum class Precision { Float64, NaiveLowPrecision };

float to_float(uint16_t bits, int dtype);     // fp16/bf16 bits -> float
uint16_t from_float(float x, int dtype);      // round to nearest even
uint16_t from_double(double x, int dtype);    // round to nearest even (via double)

// Attention forward with every rule of flare.h. Reads q, k, v (for a KV cache: the cache AFTER
// append_kv), masks, multimodal prefix ranges, alibi, softcap, sinks, varlen and paged KV (KV
// cache or paged varlen, any page size >= 1) exactly as the GPU does (src/common/sequence.h,
// src/common/serving_semantics.h); v and out rows have head_dim_v elements (0: head_dim), any
// head dims >= 1. Writes out[out_offset(...)] and, when lse != nullptr, lse[lse_offset(...)]
// (natural log, the sink included; a row that sees no key gets out = 0 and lse = its sink
// logit, -inf without sinks). Only elements of real rows are written, so callers size `out` as
// they would the GPU output. With rotary (KV cache, k_new and rotary_dim > 0) q is rotated
// first at rotary_q_position().
void attention_forward(const flare_mha_fwd_params& p, Precision precision, double* out, double* lse);

// The KV cache append: writes k_new (rotated when rotary_dim > 0) and v_new (head_dim_v
// elements a row) into the host
// caches `k_cache`/`v_cache` (same layout/strides as p.k / p.v, paged or not) at rows
// [cache_seqlens[b], cache_seqlens[b] + seqlen_new) of each sequence. An FP8 cache (kv_dtype)
// holds byte codes: the (rotated) fp32 values are quantized with quantize_fp8 (fp8_params.h).
void append_kv(const flare_mha_fwd_params& p, void* k_cache, void* v_cache);

}  // namespace ref
}  // namespace flare
