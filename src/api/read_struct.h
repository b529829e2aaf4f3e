// Reading a caller's C params struct, which starts with its struct_size: an older (smaller)
// struct gets the defaults of the fields it lacks, a newer (larger) one must leave the fields
// this library does not know unset (zero), so that nothing the caller asked for is silently
// ignored. Shared by read_params and read_merge_params.
#pragma once
#include <cstddef>
#include <cstring>

#include "api/error.h"
#include "flare/flare.h"

namespace flare {

// Copies *params into *full (first filled by init) after checking its struct_size: at least
// min_size (the fields through out_head_stride), a multiple of 8 (fields come in 8-byte groups,
// so a valid size never cuts a pointer in half), and zero past sizeof(Params). type_name is
// the C struct's name, "<type_name>_init" its init function. FLARE_ERROR_INVALID_ARGUMENT
// naming the problem otherwise, with *full untouched.
template <typename Params>
flare_status read_struct(const Params* params, Params* full, size_t min_size,
                         const char* type_name, void (*init)(Params*)) {
  if (!params) return fail(FLARE_ERROR_INVALID_ARGUMENT, "params is null");
  if (!full) return fail(FLARE_ERROR_INVALID_ARGUMENT, "full is null");
  const size_t size = params->struct_size;
  if (size < min_size)
    return fail(FLARE_ERROR_INVALID_ARGUMENT,
                "struct_size (%zu) is too small: at least %zu bytes (through out_head_stride) "
                "are required; call %s_init",
                size, min_size, type_name);
  if (size % 8 != 0)
    return fail(FLARE_ERROR_INVALID_ARGUMENT, "struct_size (%zu) is not a multiple of 8", size);
  const unsigned char* tail = reinterpret_cast<const unsigned char*>(params);
  for (size_t i = sizeof(Params); i < size; ++i)
    if (tail[i] != 0)
      return fail(FLARE_ERROR_INVALID_ARGUMENT,
                  "struct_size (%zu) is larger than this library's %s (%zu bytes) and byte %zu "
                  "past it is not zero: a field this library does not know is set",
                  size, type_name, sizeof(Params), i);
  init(full);
  std::memcpy(static_cast<void*>(full), static_cast<const void*>(params),
              size < sizeof(Params) ? size : sizeof(Params));
  full->struct_size = sizeof(Params);
  return FLARE_OK;
}

}  // namespace flare
