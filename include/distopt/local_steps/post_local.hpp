#pragma once
// local_steps::post_local<Switch, H> — post-local SGD: communicate after every step for
// the first Switch steps (mini-batch SGD, which finds a good region quickly), then
// after every H steps (local SGD, averaging model deltas). Steps count from 0, so the
// rounds follow steps 0, 1, ..., Switch-1, then Switch+H-1, Switch+2H-1, ...
// Paper: T. Lin, S. U. Stich, K. K. Patel, M. Jaggi, "Don't Use Large Mini-Batches, Use
// Local SGD", ICLR 2020, arXiv 1808.07217.
//
//   distopt::optimizer<C, T, S, distopt::local_steps::post_local<1000, 8>>   // 8 local steps after step 1000

#include <cstdint>

namespace distopt::local_steps {

template <std::uint64_t Switch, int H>
struct post_local {
  constexpr post_local() noexcept {  // checked here, not in the class body: see local_steps::fixed
    static_assert(H >= 1,
                  "local_steps::post_local<Switch, H>: H must be >= 1 (local steps between two rounds "
                  "after the switch)");
  }
  static constexpr std::uint64_t switch_step = Switch;
  static constexpr std::uint64_t period = H >= 1 ? static_cast<std::uint64_t>(H) : 1;  // H < 1: refused above
  bool communicates_after(std::uint64_t step) const { return step < Switch || (step - Switch + 1) % period == 0; }
};

}  // namespace distopt::local_steps
