#pragma once
// staleness::synchronous — round r completes with every worker's round-r
// contribution; nobody runs ahead. Observed staleness is always 0.
//
//   distopt::optimizer<C, T, distopt::staleness::synchronous, L>

#include <cstdint>

namespace distopt::staleness {

struct synchronous {
  static constexpr std::uint64_t max_staleness = 0;
};

}  // namespace distopt::staleness
