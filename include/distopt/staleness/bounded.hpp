#pragma once
// staleness::bounded<Tau> — stale synchronous parallel (SSP; Ho et al., NeurIPS 2013): a
// worker may compute on a model that lacks the contributions of the last Tau rounds of
// the slowest worker, and blocks only when it would fall further behind. Round c of a
// worker uses a model complete to round >= c - 1 - Tau of every worker; the observed
// staleness c - 1 - (that round) is recorded in statistics and never exceeds Tau. A worker
// always sees its own updates (read-my-writes): its parameters are the server's model plus its
// own pushes that model does not hold yet.
// Where it applies: topology::parameter_server (see protocols/stale_server.hpp).
// bounded<0> is the synchronous schedule, run by the asynchronous protocol.
//
//   distopt::optimizer<distopt::compress::qsgd<8>, distopt::topology::parameter_server,
//                      distopt::staleness::bounded<2>, distopt::local_steps::every_step>
//       opt(t, x0, o, {}, {}, {.staleness_aware_lr = true});  // steps scaled by 1/(1 + staleness)

#include <cstdint>

namespace distopt::staleness {

template <std::uint64_t Tau>
struct bounded {
  static constexpr std::uint64_t max_staleness = Tau;
  /// Scale the steps after a round of staleness s by 1/(1 + s) (Zhang et al., IJCAI 2016).
  bool staleness_aware_lr = false;
};

}  // namespace distopt::staleness
