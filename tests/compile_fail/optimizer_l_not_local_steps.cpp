// A local-steps policy whose communicates_after is not const, used as L in
// distopt::optimizer, gets one static_assert naming LocalStepsPolicy and the member.
// Control (no DISTOPT_COMPILE_FAIL): the const member function compiles.
// expect: L is not a LocalStepsPolicy: it needs communicates_after\(step\) const

#include <cstdint>

#include <distopt/algorithms.hpp>
#include <distopt/core/transport_ref.hpp>

struct always {
#ifdef DISTOPT_COMPILE_FAIL
  bool communicates_after(std::uint64_t) { return true; }
#else
  bool communicates_after(std::uint64_t) const { return true; }
#endif
};

using sgd = distopt::optimizer<distopt::compress::identity, distopt::topology::allreduce,
                               distopt::staleness::synchronous, always>;

void train(distopt::transport_ref t) {
  sgd opt(t, Eigen::VectorXf::Zero(3), {.learning_rate = 0.1f});
  opt.step(Eigen::VectorXf::Ones(3));
  opt.finish();
}
