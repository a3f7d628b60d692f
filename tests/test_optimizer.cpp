#include <doctest/doctest.h>

#include <distopt/distopt.hpp>

TEST_CASE("optimizer: smoke") {
  distopt::run_threads(4, [](distopt::transport_ref t) {
    distopt::algorithms::minibatch_sgd opt(t, Eigen::VectorXf::Ones(10), {.learning_rate = 0.1f});
    opt.step(Eigen::VectorXf::Constant(10, static_cast<float>(t.rank())));
    CHECK(opt.parameters()(0) == doctest::Approx(1.0f - 0.1f * 1.5f));
  });
}
