#pragma once
// topology::torus — 2-D torus of rows x cols = n ranks (rank = r * cols + c), four
// neighbours wrapping around: x_i <- (x_i + sum of the 4 neighbours) / 5, i.e.
// W = (A + I) / 5 as in ChocoSGD (ALGORITHMS.md §2.6); a side of 1 or 2 has
// coinciding neighbours, which count once (Metropolis–Hastings weights). Spectral
// gap ~ 1/max(rows, cols)^2, better than the ring's 1/n^2.
// Knob: rows = 0 (default: the largest divisor of n that is <= sqrt(n), the most
// square grid; a prime n gives 1 x n, which is a ring).
//
//   distopt::topology::torus grid{.rows = 3};        // 3 x 3 for 9 workers
//   distopt::optimizer<distopt::compress::identity, distopt::topology::torus,
//                      distopt::staleness::synchronous, distopt::local_steps::every_step> opt(t, x0, {}, {}, grid);

#include <string>

#include "distopt/core/errors.hpp"
#include "distopt/graph.hpp"
#include "distopt/topology/gossip.hpp"

namespace distopt::topology {

struct torus {
  static constexpr exchange_kind exchange = exchange_kind::models;
  int rows = 0;  ///< 0: the most square grid

  /// The number of rows used for n ranks.
  int rows_for(int n) const {
    if (rows < 0 || (rows > 0 && (n < 1 || n % rows != 0)))
      throw config_error("topology::torus: rows = " + std::to_string(rows) + " does not divide the world size " +
                         std::to_string(n) + "; pick a divisor of n, or rows = 0 for the most square grid");
    if (rows > 0) return rows;
    int r = 1;
    for (int d = 1; d * d <= n; ++d)
      if (n % d == 0) r = d;
    return r;
  }
  graph make_graph(int n) const {
    if (n < 1) throw config_error("topology::torus: the world size must be >= 1, got " + std::to_string(n));
    const int r = rows_for(n);
    return graph::torus(r, n / r);
  }
  void validate(int n) const { (void)make_graph(n); }
};

}  // namespace distopt::topology
