// Thread-local error state: each failing call records a message naming the field and value.
#pragma once
#include "flare/flare.h"

namespace flare {

// Records the printf-style message for this thread and returns status.
flare_status fail(flare_status status, const char* format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

void clear_error();

}  // namespace flare
