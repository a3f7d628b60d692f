// ctest-labels: numeric
// Every synchronous alias of algorithms.hpp with default options against the no-communication
// control (algorithms_defaults.hpp says how); the stale and asynchronous aliases are in
// test_algorithms_defaults_async.cpp, which the ThreadSanitizer pass runs too.
// signsgd_majority_vote and signum are left out on purpose: the vote's fixed point is where
// each coordinate's gradient signs balance (a median, not the mean), so on shards this
// different it is not the optimum (test_error_feedback_momentum.cpp checks the vote).
#include "algorithms_defaults.hpp"

namespace algo = distopt::algorithms;
using defaults_test::check;

TEST_CASE("every synchronous alias with default options beats not communicating on heterogeneous least squares") {
  const double control = defaults_test::control_error();
  REQUIRE(control > 0.05);  // the shards disagree enough for the control to fail
  check<algo::minibatch_sgd>("minibatch_sgd", control);
  check<algo::local_sgd<4>>("local_sgd<4>", control);
  check<algo::post_local_sgd<100, 4>>("post_local_sgd<100, 4>", control);
  check<algo::qsgd_sgd<>>("qsgd_sgd", control);
  check<algo::terngrad_sgd>("terngrad_sgd", control);
  check<algo::ef_signsgd>("ef_signsgd", control);
  check<algo::ef_topk_sgd>("ef_topk_sgd", control);
  check<algo::bytegrad>("bytegrad", control);
  check<algo::ef21_sgd<>>("ef21_sgd", control);
  check<algo::powersgd<>>("powersgd", control);
  check<algo::d_psgd<>>("d_psgd", control);
  check<algo::choco_sgd<>>("choco_sgd", control);
  check<algo::dcd_psgd<>>("dcd_psgd", control);
  check<algo::ecd_psgd<>>("ecd_psgd", control);
  check<algo::deep_squeeze<>>("deep_squeeze", control);
  check<algo::ps_sgd<>>("ps_sgd", control);
  check<algo::double_squeeze<>>("double_squeeze", control);
}
