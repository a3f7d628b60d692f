// ctest-labels: threads
// Every stale and asynchronous alias of algorithms.hpp with default options against the
// no-communication control (algorithms_defaults.hpp says how; these runs are paced).
#include "algorithms_defaults.hpp"

namespace algo = distopt::algorithms;
using defaults_test::check;

TEST_CASE("every asynchronous alias with default options beats not communicating on heterogeneous least squares") {
  const double control = defaults_test::control_error();
  REQUIRE(control > 0.05);  // the shards disagree enough for the control to fail
  check<algo::ssp_sgd<2>>("ssp_sgd<2>", control);
  check<algo::async_ps_sgd<>>("async_ps_sgd", control);
  check<algo::ad_psgd<>>("ad_psgd", control);
  check<algo::swarm_sgd<>>("swarm_sgd", control);
}
