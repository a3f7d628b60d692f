#pragma once
// deadline_after(timeout): now + timeout on the steady clock, saturating. The clock counts
// nanoseconds in 64 bits (292 years); a longer timeout meant as "never" (DISTOPT_TIMEOUT_MS
// set to 10^13) would overflow that sum, which could land in the past: every wait would then
// expire at once.

#include <chrono>

namespace distopt::detail {

template <class Rep, class Period>
std::chrono::steady_clock::time_point deadline_after(std::chrono::duration<Rep, Period> timeout) {
  using clock = std::chrono::steady_clock;
  const clock::time_point now = clock::now();
  const auto room = std::chrono::duration_cast<std::chrono::duration<Rep, Period>>(clock::time_point::max() - now);
  if (timeout >= room) return clock::time_point::max();
  return now + std::chrono::duration_cast<clock::duration>(timeout);
}

}  // namespace distopt::detail
