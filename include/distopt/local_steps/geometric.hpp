#pragma once
// local_steps::geometric<H> — a random number of local steps between rounds, with mean H,
// as SwarmSGD analyses (Nadiradze et al., arXiv 1910.12308): after each step a round
// follows with probability 1/H, independently, so the gaps between rounds are
// geometric with mean H (variance H(H-1)). The draw is a pure function of (seed, step),
// the same on every worker, so all workers take part in the same rounds. Knob: `seed`.
//
//   distopt::optimizer<C, T, S, distopt::local_steps::geometric<4>> opt(t, x0, o, c, topo, s, {.seed = 7});

#include <cstdint>

#include "distopt/core/rng.hpp"

namespace distopt::local_steps {

template <int H>
struct geometric {
  static_assert(H >= 1, "local_steps::geometric<H>: H, the mean number of local steps per round, must be >= 1");
  static constexpr std::uint64_t mean_period = static_cast<std::uint64_t>(H);
  /// Seeds the schedule; every worker must use the same.
  std::uint64_t seed = 0;

  bool communicates_after(std::uint64_t step) const {
    if constexpr (H == 1) return true;
    // The stream of one step: seed and the high half of the step in the key, the low half as
    // the counter's step; rank 0xFFFFFFFF marks a stream shared by all workers.
    rng g(seed ^ ((step >> 32) * 0x9E3779B97F4A7C15ull), 0xFFFFFFFFu, static_cast<std::uint32_t>(step),
          purpose::topology);
    return g.uniform() * static_cast<float>(H) < 1.0f;
  }
};

}  // namespace distopt::local_steps
