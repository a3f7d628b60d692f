// A topology missing `static constexpr exchange_kind exchange`, used as T in
// distopt::optimizer, is rejected by a static_assert that names TopologyPolicy.
// Control (no DISTOPT_COMPILE_FAIL): the same type with `exchange` compiles.
// expect: T is not a TopologyPolicy: it needs static exchange

#include <distopt/algorithms.hpp>
#include <distopt/core/transport_ref.hpp>

struct everyone {
#ifndef DISTOPT_COMPILE_FAIL
  static constexpr distopt::exchange_kind exchange = distopt::exchange_kind::gradients;
#endif
  void validate(int /*world_size*/) const {}
};

using sgd = distopt::optimizer<distopt::compress::identity, everyone, distopt::staleness::synchronous,
                               distopt::local_steps::every_step>;

void train(distopt::transport_ref t) {
  sgd opt(t, Eigen::VectorXf::Zero(3), {.learning_rate = 0.1f});
  opt.step(Eigen::VectorXf::Ones(3));
  opt.finish();
}
