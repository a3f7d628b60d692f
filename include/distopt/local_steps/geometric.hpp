#pragma once
// local_steps::geometric<H> — a random number of local steps between rounds, with mean H,
// as SwarmSGD analyses (Nadiradze et al., arXiv 1910.12308: "H_i local steps, geometric with
// mean H", which models independent Poisson clocks): after each step a round follows with
// probability 1/H, independently, so the gaps between rounds are geometric with mean H
// (variance H(H-1)).
// Under staleness::asynchronous (SwarmSGD, AD-PSGD: the optimizer calls
// communicates_after(step, rank)) every worker draws its own schedule, from the stream
// (seed, rank, step). Synchronous rounds need every worker in them, so there the optimizer calls
// communicates_after(step) and all workers share the stream (seed, step): every worker must use
// the same seed. Knob: `seed`.
//
//   distopt::optimizer<distopt::compress::identity, distopt::topology::random_pairwise<>,
//                      distopt::staleness::asynchronous, distopt::local_steps::geometric<4>>
//       opt(t, x0, o, {}, {}, {}, {.seed = 7});

#include <cstdint>

#include "distopt/core/rng.hpp"

namespace distopt::local_steps {

template <int H>
struct geometric {
  static_assert(H >= 1, "local_steps::geometric<H>: H, the mean number of local steps per round, must be >= 1");
  static constexpr std::uint64_t mean_period = static_cast<std::uint64_t>(H);
  /// Seeds the schedule.
  std::uint64_t seed = 0;

  /// The schedule shared by all workers (synchronous rounds).
  bool communicates_after(std::uint64_t step) const { return draw(step, shared); }
  /// Worker `rank`'s own schedule (asynchronous protocols), independent of every other worker's.
  bool communicates_after(std::uint64_t step, int rank) const { return draw(step, static_cast<std::uint32_t>(rank)); }

 private:
  static constexpr std::uint32_t shared = 0xFFFFFFFFu;  // no rank's stream

  // The stream of one step: seed and the high half of the step in the key, the low half as the
  // counter's step.
  bool draw(std::uint64_t step, std::uint32_t stream) const {
    if constexpr (H == 1) return true;
    rng g(seed ^ ((step >> 32) * 0x9E3779B97F4A7C15ull), stream, static_cast<std::uint32_t>(step), purpose::topology);
    return g.uniform() * static_cast<float>(H) < 1.0f;
  }
};

}  // namespace distopt::local_steps
