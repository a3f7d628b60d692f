// local_steps::fixed<0> (never communicate) is rejected by fixed<H>'s own
// static_assert, which names H and the fix.
// Control (no DISTOPT_COMPILE_FAIL): fixed<1> compiles.
// expect: local_steps::fixed<H>: H must be >= 1

#include <distopt/algorithms.hpp>
#include <distopt/core/transport_ref.hpp>

#ifdef DISTOPT_COMPILE_FAIL
constexpr int period = 0;
#else
constexpr int period = 1;
#endif

void train(distopt::transport_ref t) {
  distopt::algorithms::local_sgd<period> opt(t, Eigen::VectorXf::Zero(3), {.learning_rate = 0.1f});
  opt.step(Eigen::VectorXf::Ones(3));
  opt.finish();
}
