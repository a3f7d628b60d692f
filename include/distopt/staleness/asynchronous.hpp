#pragma once
// staleness::asynchronous — never waits for a peer: a worker uses whatever has arrived
// and goes on. Observed staleness is unbounded (a straggler falls behind for good) and is
// recorded in statistics. Where it applies:
//  - topology::parameter_server: AsySGD (Lian et al., NeurIPS 2015, arXiv 1506.08272) —
//    workers push C(update) and adopt the newest model the server has sent back;
//  - topology::random_pairwise<G>: AD-PSGD (Lian et al., ICML 2018, arXiv 1710.06952) and
//    SwarmSGD (Nadiradze et al., NeurIPS 2021, arXiv 1910.12308) — non-blocking pairwise
//    averaging with a random neighbour (protocols/async_gossip.hpp).
//
//   distopt::optimizer<distopt::compress::identity, distopt::topology::random_pairwise<>,
//                      distopt::staleness::asynchronous, distopt::local_steps::every_step>

#include <cstdint>
#include <limits>

namespace distopt::staleness {

struct asynchronous {
  static constexpr std::uint64_t max_staleness = std::numeric_limits<std::uint64_t>::max();
};

}  // namespace distopt::staleness
