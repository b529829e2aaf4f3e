// The library's Tuning: Tuning{} unless a test or benchmark sets it, or, in a FLARE_TUNING
// build, what the environment says (read once, at the first plan).
#include "plan/tuning.h"

#include <mutex>

namespace flare {
namespace {

std::mutex g_mutex;
Tuning g_tuning;
bool g_initialised = false;

}  // namespace

Tuning current_tuning() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_initialised) {
#if defined(FLARE_TUNING_FROM_ENV)
    g_tuning = tuning_from_env();
#endif
    g_initialised = true;
  }
  return g_tuning;
}

void set_tuning(const Tuning& tuning) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_tuning = tuning;
  g_initialised = true;
}

}  // namespace flare
