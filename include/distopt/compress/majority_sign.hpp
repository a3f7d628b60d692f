#pragma once
// compress::majority_sign — signSGD with majority vote: every worker sends the signs of its
// gradient, and a round's result is the elementwise vote
//     vote = sgn(sum_i sgn(g_i))        (0 where the votes tie)
// so the optimizer steps x <- x - eta vote. With options.momentum = beta > 0 this is Signum:
// each worker takes the sign of its own momentum m_i <- beta m_i + g_i (momentum before
// compression, core/traits.hpp; the scale of m does not change its sign, so the PyTorch
// convention equals the paper's m <- beta m + (1 - beta) g), and no momentum is applied after
// the vote.
// Encoding: compress::sign's (u32 n, then one bit per entry), 4 + ceil(n / 8) bytes per worker.
// The vote is taken after the round: finish_round turns the mean of the decoded signs into its
// sign. Under topology::allreduce the sign bits are allgathered and every worker counts the
// votes (n ceil(d / 8) bytes in per worker); under topology::parameter_server the server counts
// them and sends back the mean, and every worker takes its sign.
// Bound: biased and not contractive (see compress::sign); the magnitude of the step is eta.
// Ties: 0 (no move) where as many workers vote + as -, which only an even number of workers
//   can produce; GRACE's signum counts a tie as +1 (ALGORITHMS.md §5.5).
// Papers: J. Bernstein, Y.-X. Wang, K. Azizzadenesheli, A. Anandkumar, "signSGD: Compressed
//   Optimisation for Non-Convex Problems", ICML 2018, arXiv 1802.04434 (Algorithm 3: signSGD and
//   Signum with majority vote); J. Bernstein, J. Zhao, K. Azizzadenesheli, A. Anandkumar, "signSGD
//   with Majority Vote is Communication Efficient and Fault Tolerant", ICLR 2019, arXiv 1810.05291.
// Knobs: none.
//
//   distopt::algorithms::signsgd_majority_vote opt(t, x0, {.learning_rate = 1e-3f});
//   distopt::algorithms::signum opt(t, x0, {.learning_rate = 1e-3f, .momentum = 0.9f});

#include <span>

#include "distopt/compress/sign.hpp"

namespace distopt::compress {

struct majority_sign : sign {
  /// Signum: momentum is applied on each worker before the signs are taken.
  static constexpr bool momentum_before_compression = true;

  /// Replaces the mean of the workers' decoded signs by the vote: +1, -1, or 0 on a tie.
  void finish_round(std::span<float> mean, const auto& /*state*/) const {
    for (float& v : mean) v = v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f);
  }
};

}  // namespace distopt::compress
