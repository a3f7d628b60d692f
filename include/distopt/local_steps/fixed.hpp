#pragma once
// local_steps::fixed<H> — communicate after every H local steps.
//
// With H == 1 (`every_step`) the gradients are averaged before each update:
// mini-batch SGD. With H > 1 each worker takes H local SGD steps from the last
// averaged model x_a, then the model deltas are averaged: x <- x_a + mean_i(x_i - x_a)
// (local SGD / FedAvg; Stich, "Local SGD converges fast and communicates little",
// ICLR 2019, arXiv 1805.09767). Momentum buffers stay local.
//
//   distopt::optimizer<C, T, S, distopt::local_steps::fixed<4>>   // talk every 4th step

#include <cstdint>

namespace distopt::local_steps {

template <int H>
struct fixed {
  // Checked where a policy value is made, not in the class body: a class whose body fails a
  // static_assert is invalid to Clang, which would then report the optimizer's concept check too.
  constexpr fixed() noexcept {
    static_assert(H >= 1,
                  "local_steps::fixed<H>: H must be >= 1 (H local steps between two communication rounds; "
                  "fixed<1> communicates after every step)");
  }
  static constexpr std::uint64_t period = H >= 1 ? static_cast<std::uint64_t>(H) : 1;  // H < 1: refused above
  /// `step` counts local steps from 0.
  bool communicates_after(std::uint64_t step) const { return (step + 1) % period == 0; }
};

/// Communicate after every step.
using every_step = fixed<1>;

}  // namespace distopt::local_steps
