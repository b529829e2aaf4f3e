// tuning_from_env, the only place flare reads the environment, and describe, its one-line
// print. Linked by the tests and flare_bench (flare_tuning_env) and, in a -DFLARE_TUNING=ON
// build, by the library itself.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "plan/tuning.h"

namespace flare {
namespace {

// The variable's value, or null when unset or empty.
const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' ? v : nullptr;
}

// A default-on switch: off only for a value starting with '0'.
bool env_on_unless_zero(const char* name, bool current) {
  const char* v = env(name);
  return v == nullptr ? current : v[0] != '0';
}

// -1 (the rule) when unset, else 1 for a leading '1' and 0 otherwise.
int env_switch(const char* name) {
  const char* v = env(name);
  return v == nullptr ? -1 : v[0] == '1' ? 1 : 0;
}

// -1 when unset, else the integer value.
int env_int(const char* name) {
  const char* v = env(name);
  return v == nullptr ? -1 : std::atoi(v);
}

// -1 when unset, 2 for a leading 'r' (require), 0 for a leading '0', else 1.
int env_tma_mode(const char* name) {
  const char* v = env(name);
  return v == nullptr ? -1 : v[0] == 'r' ? 2 : v[0] == '0' ? 0 : 1;
}

}  // namespace

Tuning tuning_from_env() {
  Tuning t;
  if (const char* path = env("FLARE_KERNEL_PATH")) t.hopper_kernels = std::strcmp(path, "sm80") != 0;
  const int kb = env_int("FLARE_SMEM_LIMIT_KB");
  t.smem_limit_bytes = kb > 0 ? kb * 1024 : 0;
  t.sm80_decode = env_on_unless_zero("FLARE_SM80_DECODE", t.sm80_decode);
  const int packed_rows = env_int("FLARE_DECODE_PACKED_ROWS");
  if (packed_rows > 0) t.decode_packed_rows = packed_rows;
  t.sm80_wide = env_on_unless_zero("FLARE_SM80_WIDE", t.sm80_wide);
  t.sm80_swizzle = env_on_unless_zero("FLARE_SM80_SWIZZLE", t.sm80_swizzle);
  t.combine_pdl = env_on_unless_zero("FLARE_COMBINE_PDL", t.combine_pdl);
  t.sm90.warp_specialized = env_switch("FLARE_SM90_WS");
  t.sm90.persistent = env_switch("FLARE_SM90_PERSISTENT");
  t.sm90.pingpong = env_switch("FLARE_SM90_PINGPONG");
  t.sm90.tma = env_tma_mode("FLARE_SM90_TMA");
  t.sm90.tma_q = env_tma_mode("FLARE_SM90_TMA_Q");
  t.sm90.block_n = env_int("FLARE_SM90_BLOCK_N");
  t.sm90.consumer_wgs = env_int("FLARE_SM90_CONSUMERS");
  t.sm90.d512 = env_switch("FLARE_SM90_D512");
  t.sm90.cluster_m = env_int("FLARE_SM90_CLUSTER");
  t.sm90.d192 = env_switch("FLARE_SM90_D192");
  return t;
}

std::string describe(const Tuning& tuning) {
  char line[320];
  std::snprintf(line, sizeof line,
                "hopper_kernels=%d smem_limit_bytes=%d sm80_decode=%d decode_packed_rows=%d "
                "sm80_wide=%d sm80_swizzle=%d combine_pdl=%d sm90{ws=%d persistent=%d "
                "pingpong=%d tma=%d tma_q=%d block_n=%d consumers=%d d512=%d cluster=%d d192=%d}",
                tuning.hopper_kernels, tuning.smem_limit_bytes, tuning.sm80_decode,
                tuning.decode_packed_rows, tuning.sm80_wide, tuning.sm80_swizzle,
                tuning.combine_pdl,
                tuning.sm90.warp_specialized, tuning.sm90.persistent, tuning.sm90.pingpong,
                tuning.sm90.tma, tuning.sm90.tma_q, tuning.sm90.block_n,
                tuning.sm90.consumer_wgs, tuning.sm90.d512, tuning.sm90.cluster_m,
                tuning.sm90.d192);
  return line;
}

}  // namespace flare
