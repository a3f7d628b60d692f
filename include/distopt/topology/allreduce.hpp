#pragma once
// topology::allreduce — every worker averages with every other, through a
// collective: x <- x - eta * (1/n) sum_i C(g_i). Summable compressors are reduced
// on the ring (bandwidth 2(n-1)/n * M per worker, latency 2(n-1) alpha); others
// are gathered around the ring and decoded in rank order ((n-1) * M/ratio).
// Paper: mini-batch SGD; ring allreduce as in Patarasuk & Yuan, JPDC 2009.
//
//   distopt::optimizer<distopt::compress::identity, distopt::topology::allreduce,
//                      distopt::staleness::synchronous, distopt::local_steps::every_step> opt(t, x0);

#include "distopt/core/concepts.hpp"

namespace distopt::topology {

struct allreduce {
  static constexpr exchange_kind exchange = exchange_kind::gradients;
  /// Any world size >= 1 works.
  void validate(int /*world_size*/) const {}
};

}  // namespace distopt::topology
