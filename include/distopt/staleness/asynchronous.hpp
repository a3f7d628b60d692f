#pragma once
// staleness::asynchronous — never waits for other workers: a worker uses whatever has arrived
// and goes on. Observed staleness is recorded in statistics. Where it applies:
//  - topology::parameter_server: AsySGD (Lian et al., NeurIPS 2015, arXiv 1506.08272) —
//    workers push C(update) and adopt the newest model the server has sent back, plus their
//    own pushes it lacks (read-my-writes; protocols/stale_server.hpp);
//  - topology::random_pairwise<G>: AD-PSGD (Lian et al., ICML 2018, arXiv 1710.06952) and
//    SwarmSGD (Nadiradze et al., NeurIPS 2021, arXiv 1910.12308) — non-blocking pairwise
//    averaging with a random neighbour (protocols/async_gossip.hpp).
//
// Knobs: staleness_aware_lr (default false, below) and max_unanswered_steps (default 16), the
// oversubscription bound. A worker whose oldest message (a push to the server, a request to a
// gossip partner) has waited that many of its local steps for an answer waits for it (polling,
// answering others, until options.timeout) before it steps on. With many more workers than
// cores a peer may not run for a whole time slice, in which a worker could otherwise take
// thousands of steps without interacting. It does not wait for any other worker's progress,
// only for an answer owed to it; `unbounded` never waits.
//
//   distopt::optimizer<distopt::compress::identity, distopt::topology::random_pairwise<>,
//                      distopt::staleness::asynchronous, distopt::local_steps::every_step>
//       opt(t, x0, o, {}, {}, {.max_unanswered_steps = 64});

#include <cstdint>
#include <limits>

namespace distopt::staleness {

struct asynchronous {
  static constexpr std::uint64_t max_staleness = std::numeric_limits<std::uint64_t>::max();
  /// A max_unanswered_steps that never waits.
  static constexpr std::uint64_t unbounded = std::numeric_limits<std::uint64_t>::max();
  /// Local steps a worker may take while its oldest message waits for an answer (0: wait at once).
  std::uint64_t max_unanswered_steps = 16;
  /// Parameter server only: scale the steps after a round of staleness s by 1/(1 + s) (Zhang et
  /// al., IJCAI 2016). Pairwise gossip has no such rule and refuses it. It weights each worker by
  /// its own staleness (the server's rank is the least stale), so where the workers' data differ
  /// the run settles at that weighted optimum, not the optimum of the sum: 6-22 % away in
  /// bench/async_faithfulness (paced workers), against 0.1-0.6 % without it.
  bool staleness_aware_lr = false;
};

/// The oversubscription bound of a staleness policy: its max_unanswered_steps, or unbounded for
/// policies without one (bounded<Tau> is bounded by Tau already).
template <class S>
constexpr std::uint64_t max_unanswered_steps(const S& s) {
  if constexpr (requires { s.max_unanswered_steps; })
    return s.max_unanswered_steps;
  else
    return asynchronous::unbounded;
}

}  // namespace distopt::staleness
