// ctest-labels: slow
// Paper-1 claim (Liu & Zhang §2.4; Karimireddy et al. 2019): with error feedback,
// 1% top-k and scaled sign reach the full-precision loss; without it they stall above.
// The reference is the closed-form minimum. With heterogeneous shards and a constant
// step, EF ends in a neighbourhood of the optimum whose size shrinks with the step
// (measured excess of EF top-1%: 0.0205 at 0.05, 0.0044 at 0.02, 0.0013 at 0.01), so
// EF top-1% runs with the smaller step 0.005. Label 'slow': not run under sanitizers.
#include <doctest/doctest.h>

#include <Eigen/Cholesky>

#include <cstdio>
#include <mutex>

#include <distopt/distopt.hpp>
#include <distopt/problems.hpp>

namespace {

using namespace distopt;

// Least squares split over 4 workers (iid rows, noisy targets), full-batch gradients.
const problems::labelled_data d = problems::synthetic_regression(400, 100, 0.5f, 3);
const problems::least_squares global(d.features, d.targets);

template <class C>
double final_loss(C c, int steps, float lr) {
  double loss = 0;
  std::mutex m;
  run_threads(4, [&](transport_ref t) {
    const auto rows = data::iid_shard(400, t.rank(), 4, 1);
    Eigen::MatrixXf a(static_cast<Eigen::Index>(rows.size()), 100);
    Eigen::VectorXf b(static_cast<Eigen::Index>(rows.size()));
    for (std::size_t i = 0; i < rows.size(); ++i) {
      a.row(static_cast<Eigen::Index>(i)) = d.features.row(static_cast<Eigen::Index>(rows[i]));
      b(static_cast<Eigen::Index>(i)) = d.targets(static_cast<Eigen::Index>(rows[i]));
    }
    const problems::least_squares shard(a, b);
    optimizer<C, topology::allreduce, staleness::synchronous, local_steps::every_step> opt(
        t, Eigen::VectorXf::Zero(100), {.learning_rate = lr, .seed = 1}, c);
    Eigen::VectorXf g;
    for (int s = 0; s < steps; ++s) {
      shard.gradient(opt.parameters(), g);
      opt.step(g);
    }
    if (t.rank() == 0) {
      std::lock_guard lock(m);
      loss = global.loss(opt.parameters());
    }
  });
  return loss;
}

}  // namespace

TEST_CASE("error feedback closes the gap that 1% top-k and scaled sign leave") {
  const Eigen::MatrixXd a = d.features.cast<double>();
  const Eigen::VectorXd x_star = (a.transpose() * a).ldlt().solve(a.transpose() * d.targets.cast<double>());
  const double minimum = global.loss(x_star.cast<float>());
  const double exact = final_loss(compress::identity{}, 20000, 0.01f);
  const double topk = final_loss(compress::top_k{0.01}, 20000, 0.01f);
  const double sign = final_loss(compress::scaled_sign{0}, 20000, 0.01f);
  const double ef_sign = final_loss(compress::error_feedback{compress::scaled_sign{0}}, 20000, 0.01f);
  const double ef_topk = final_loss(compress::error_feedback{compress::top_k{0.01}}, 40000, 0.005f);
  MESSAGE("final loss: minimum " << minimum << ", exact SGD " << exact << ", top-1% " << topk << ", EF top-1% "
                                 << ef_topk << ", scaled sign " << sign << ", EF scaled sign " << ef_sign);
  CHECK(exact <= 1.0001 * minimum);
  CHECK(ef_topk <= 1.01 * minimum);
  CHECK(ef_sign <= 1.01 * minimum);
  CHECK(topk >= 1.05 * minimum);
  CHECK(sign >= 1.05 * minimum);
}
