// A staleness policy missing `static constexpr max_staleness`, used as S in
// distopt::optimizer, gets one static_assert naming StalenessPolicy and the member.
// Control (no DISTOPT_COMPILE_FAIL): the same type with max_staleness compiles.
// expect: S is not a StalenessPolicy: it needs static max_staleness

#include <cstdint>

#include <distopt/algorithms.hpp>
#include <distopt/core/transport_ref.hpp>

struct lockstep {
#ifndef DISTOPT_COMPILE_FAIL
  static constexpr std::uint64_t max_staleness = 0;
#endif
};

using sgd = distopt::optimizer<distopt::compress::identity, distopt::topology::allreduce, lockstep,
                               distopt::local_steps::every_step>;

void train(distopt::transport_ref t) {
  sgd opt(t, Eigen::VectorXf::Zero(3), {.learning_rate = 0.1f});
  opt.step(Eigen::VectorXf::Ones(3));
  opt.finish();
}
