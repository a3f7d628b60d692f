// ctest-labels: threads
// Tests of distopt::optimizer against independent references: a hand-written
// scalar SGD loop (bit for bit), the closed-form least-squares solution and a
// Newton solve of l2-logistic regression (double precision), the exact fixed
// point of local gradient descent, and the byte count of the ring allreduce
// derived from its algorithm.
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <Eigen/Cholesky>
#include <Eigen/QR>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include <distopt/distopt.hpp>
#include <distopt/problems.hpp>

#include "optimizer_harness.hpp"

namespace {

using namespace harness;
using distopt::transport_ref;
using Eigen::Index;

std::vector<distopt::problems::logistic_regression> logistic_shards(const distopt::problems::labelled_data& d, int n,
                                                                    float lambda, std::uint64_t seed) {
  return shards(d, n, seed, [lambda](Eigen::MatrixXf a, Eigen::VectorXf b) {
    return distopt::problems::logistic_regression(std::move(a), std::move(b), lambda);
  });
}

// Newton's method in double for f(x) = (1/m) sum log(1 + exp(-y_i a_i.x)) + lambda/2 ||x||^2:
//   grad = -(1/m) sum y_i s(-z_i) a_i + lambda x,     z_i = y_i a_i.x,  s = sigmoid
//   Hess =  (1/m) sum s(z_i) s(-z_i) a_i a_i^T + lambda I
Eigen::VectorXd logistic_newton(const distopt::problems::labelled_data& d, double lambda) {
  const Eigen::MatrixXd a = d.features.cast<double>();
  const Eigen::VectorXd y = d.targets.cast<double>();
  const double m = static_cast<double>(a.rows());
  const Index dim = a.cols();
  auto sigmoid = [](double z) { return z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z)); };
  Eigen::VectorXd x = Eigen::VectorXd::Zero(dim);
  Eigen::VectorXd grad(dim);
  for (int it = 0; it < 50; ++it) {
    grad = lambda * x;
    Eigen::MatrixXd hess = lambda * Eigen::MatrixXd::Identity(dim, dim);
    for (Index i = 0; i < a.rows(); ++i) {
      const double z = y(i) * a.row(i).dot(x);
      grad -= (y(i) * sigmoid(-z) / m) * a.row(i).transpose();
      hess += (sigmoid(z) * sigmoid(-z) / m) * a.row(i).transpose() * a.row(i);
    }
    const Eigen::VectorXd step = hess.llt().solve(grad);
    x -= step;
    if (step.norm() <= 1e-15 * (1.0 + x.norm())) break;
  }
  REQUIRE(grad.norm() <= 1e-12);  // the Newton solve converged
  return x;
}

}  // namespace

// ---- 1. one worker == a hand-written SGD loop, bit for bit ------------------------------

namespace {

struct sgd_rule {
  const char* name;
  float lr, mu;
  bool nesterov;
  float wd;
};

// The documented update rule, in scalar float code:
//   d = g + wd x;  v = mu v + d;  d = nesterov ? d + mu v : v;  x = x - lr d
// (momentum 0 disables the velocity, as options.momentum documents).
// (`g` is the caller's scratch vector: owning it here trips a false -Wuse-after-free of GCC 12 at -O3.)
template <class Problem>
Eigen::VectorXf hand_written_sgd(const Problem& p, Eigen::VectorXf x, const sgd_rule& r,
                                 distopt::data::minibatch_sampler sampler, int steps, Eigen::VectorXf& g) {
  std::vector<float> v(static_cast<std::size_t>(x.size()), 0.0f);
  for (int k = 0; k < steps; ++k) {
    p.gradient(x, sampler.next(), g);
    for (Index i = 0; i < x.size(); ++i) {
      float& vi = v[static_cast<std::size_t>(i)];
      float d = g(i) + r.wd * x(i);
      if (r.mu != 0.0f) {
        vi = r.mu * vi + d;
        d = r.nesterov ? d + r.mu * vi : vi;
      }
      x(i) = x(i) - r.lr * d;
    }
  }
  return x;
}

template <class Problem>
void check_one_worker_matches_hand_loop(const Problem& p, const sgd_rule& r) {
  constexpr int steps = 200;
  constexpr std::size_t batch = 8;
  constexpr std::uint64_t seed = 17;
  const Eigen::VectorXf x0 = seeded_normal(p.dimension(), 5);
  auto sampler = [&] {
    return distopt::data::minibatch_sampler(distopt::data::iid_shard(p.samples(), 0, 1, seed), batch, seed, 0);
  };

  Eigen::VectorXf scratch;
  const Eigen::VectorXf expected = hand_written_sgd(p, x0, r, sampler(), steps, scratch);
  const run_result got = run_workers<distopt::algorithms::minibatch_sgd>(1, x0,
                                                                         {.learning_rate = r.lr,
                                                                          .momentum = r.mu,
                                                                          .nesterov = r.nesterov,
                                                                          .weight_decay = r.wd,
                                                                          .seed = seed,
                                                                          .timeout = k_timeout},
                                                                         [&](int, auto& opt) {
                                                                           auto s = sampler();
                                                                           Eigen::VectorXf g(opt.parameters().size());
                                                                           for (int k = 0; k < steps; ++k) {
                                                                             p.gradient(opt.parameters(), s.next(), g);
                                                                             opt.step(g);
                                                                           }
                                                                         });
  CAPTURE(r.name);
  REQUIRE(expected.allFinite());
  CHECK(!same_bits(expected, x0));  // the loop did move
  CHECK(same_bits(got.x[0], expected));
  CHECK(got.stats[0].steps == steps);
  CHECK(got.stats[0].rounds == steps);
  CHECK(got.stats[0].bytes_sent == 0);  // one worker has no one to talk to
}

const sgd_rule k_rules[] = {
    {"plain SGD", 0.05f, 0.0f, false, 0.0f},
    {"momentum", 0.05f, 0.9f, false, 0.0f},
    {"Nesterov", 0.05f, 0.9f, true, 0.0f},
    {"weight decay", 0.05f, 0.0f, false, 0.01f},
    {"momentum + weight decay", 0.03f, 0.8f, false, 0.05f},
    {"Nesterov + weight decay", 0.03f, 0.8f, true, 0.05f},
};

}  // namespace

TEST_CASE("optimizer: one worker equals a hand-written SGD loop bit for bit (least squares)") {
  const auto d = distopt::problems::synthetic_regression(120, 10, 0.5f, 1);
  const distopt::problems::least_squares p(d.features, d.targets);
  for (const auto& r : k_rules) check_one_worker_matches_hand_loop(p, r);
}

TEST_CASE("optimizer: one worker equals a hand-written SGD loop bit for bit (logistic regression)") {
  const auto d = distopt::problems::synthetic_classification(120, 10, 2);
  const distopt::problems::logistic_regression p(d.features, d.targets, 0.01f);
  for (const auto& r : k_rules) check_one_worker_matches_hand_loop(p, r);
}

// ---- 1b. n workers == a hand-written loop that averages in the documented order ----------
//
// collective/ring_allreduce.hpp documents the reduction: chunk c = [c len/n, (c+1) len/n)
// is summed as ((v_c + v_{c+1}) + v_{c+2}) + ... + v_{c+n-1} (ranks mod n) and divided
// by n once. With that order written out here, n workers are reproduced bit for bit:
// mini-batch SGD averages the gradients before the update; local SGD takes H local
// steps (momentum buffers stay local) and then averages the model deltas,
// x = x_a + mean_r (x_r - x_a), with finish() averaging a trailing partial period.

namespace {

// One coordinate of the documented update rule.
float updated(float x, float g, float& v, const sgd_rule& r) {
  float d = g + r.wd * x;
  if (r.mu != 0.0f) {
    v = r.mu * v + d;
    d = r.nesterov ? d + r.mu * v : v;
  }
  return x - r.lr * d;
}

// The mean of v[0..n-1] in the documented ring order.
Eigen::VectorXf ring_order_mean(const std::vector<Eigen::VectorXf>& v) {
  const std::size_t n = v.size();
  const auto len = static_cast<std::size_t>(v[0].size());
  Eigen::VectorXf out(v[0].size());
  for (std::size_t c = 0; c < n; ++c)
    for (std::size_t i = len * c / n; i < len * (c + 1) / n; ++i) {
      const auto e = static_cast<Index>(i);
      float s = v[c](e);
      for (std::size_t k = 1; k < n; ++k) s = s + v[(c + k) % n](e);
      out(e) = s / static_cast<float>(n);
    }
  return out;
}

using sampler_list = std::vector<distopt::data::minibatch_sampler>;

sampler_list make_samplers(std::size_t samples, int n, std::uint64_t seed) {
  sampler_list out;
  for (int r = 0; r < n; ++r) out.emplace_back(distopt::data::iid_shard(samples, r, n, seed), 4, seed, r);
  return out;
}

// Mini-batch SGD over n workers: every worker's gradient at the common x, averaged, one update.
template <class Problem>
Eigen::VectorXf hand_written_minibatch_sgd(const std::vector<Problem>& problems, sampler_list samplers,
                                           Eigen::VectorXf x, const sgd_rule& r, int steps,
                                           std::vector<Eigen::VectorXf>& g) {
  const std::size_t n = problems.size();
  g.resize(n);
  std::vector<float> v(static_cast<std::size_t>(x.size()), 0.0f);
  for (int k = 0; k < steps; ++k) {
    for (std::size_t w = 0; w < n; ++w) problems[w].gradient(x, samplers[w].next(), g[w]);
    const Eigen::VectorXf d = ring_order_mean(g);
    for (Index i = 0; i < x.size(); ++i) x(i) = updated(x(i), d(i), v[static_cast<std::size_t>(i)], r);
  }
  return x;
}

// Local SGD over n workers, H local steps per round; returns every worker's final model.
template <class Problem>
std::vector<Eigen::VectorXf> hand_written_local_sgd(const std::vector<Problem>& problems, sampler_list samplers,
                                                    const Eigen::VectorXf& x0, const sgd_rule& r, int h, int steps,
                                                    Eigen::VectorXf& g) {
  const std::size_t n = problems.size();
  std::vector<Eigen::VectorXf> x(n, x0);
  std::vector<std::vector<float>> v(n, std::vector<float>(static_cast<std::size_t>(x0.size()), 0.0f));
  Eigen::VectorXf anchor = x0;
  int pending = 0;
  auto average = [&] {
    std::vector<Eigen::VectorXf> delta(n, Eigen::VectorXf(x0.size()));
    for (std::size_t w = 0; w < n; ++w)
      for (Index i = 0; i < x0.size(); ++i) delta[w](i) = x[w](i) - anchor(i);
    const Eigen::VectorXf mean = ring_order_mean(delta);
    for (std::size_t w = 0; w < n; ++w)
      for (Index i = 0; i < x0.size(); ++i) x[w](i) = anchor(i) + mean(i);
    anchor = x[0];
    pending = 0;
  };
  for (int k = 0; k < steps; ++k) {
    for (std::size_t w = 0; w < n; ++w) {
      problems[w].gradient(x[w], samplers[w].next(), g);
      for (Index i = 0; i < x0.size(); ++i) x[w](i) = updated(x[w](i), g(i), v[w][static_cast<std::size_t>(i)], r);
    }
    ++pending;
    if ((k + 1) % h == 0) average();
  }
  if (pending > 0) average();  // finish()
  return x;
}

}  // namespace

TEST_CASE("optimizer: n workers equal a hand-written loop averaging in the documented ring order, bit for bit") {
  // 7 parameters: uneven chunks for n = 2, 3, 4, and an empty one for n = 8.
  const auto d = distopt::problems::synthetic_classification(160, 7, 14);
  const Eigen::VectorXf x0 = seeded_normal(7, 15);
  constexpr std::uint64_t seed = 23;
  constexpr int steps = 40;
  const sgd_rule rules[] = {k_rules[0], k_rules[4], k_rules[5]};
  for (int n : {2, 3, 4, 8}) {
    // The whole data set per worker; each samples its iid shard's (global) row indices.
    const std::vector<distopt::problems::logistic_regression> problems(
        static_cast<std::size_t>(n), distopt::problems::logistic_regression(d.features, d.targets, 0.02f));
    for (const auto& r : rules) {
      CAPTURE(n);
      CAPTURE(r.name);
      const distopt::options o{.learning_rate = r.lr,
                               .momentum = r.mu,
                               .nesterov = r.nesterov,
                               .weight_decay = r.wd,
                               .seed = seed,
                               .timeout = k_timeout};
      auto body = [&](int rank, auto& opt) {
        auto mine = problems[static_cast<std::size_t>(rank)];  // this thread's own copy
        distopt::data::minibatch_sampler s(distopt::data::iid_shard(160, rank, n, seed), 4, seed, rank);
        Eigen::VectorXf g(opt.parameters().size());
        for (int k = 0; k < steps; ++k) {
          mine.gradient(opt.parameters(), s.next(), g);
          opt.step(g);
        }
        opt.finish();
      };
      // Also with the thread transport's shared-memory allreduce, which must sum in the same order.
      for (const bool native : {false, true}) {
        CAPTURE(native);
        const distopt::thread_options threads{.timeout = k_timeout, .native_allreduce = native};
        {
          std::vector<Eigen::VectorXf> scratch;
          const Eigen::VectorXf expected =
              hand_written_minibatch_sgd(problems, make_samplers(160, n, seed), x0, r, steps, scratch);
          const run_result got = run_workers<distopt::algorithms::minibatch_sgd>(n, x0, o, body, threads);
          for (int k = 0; k < n; ++k) CHECK(same_bits(got.x[static_cast<std::size_t>(k)], expected));
        }
        {
          Eigen::VectorXf scratch;
          const auto expected = hand_written_local_sgd(problems, make_samplers(160, n, seed), x0, r, 3, steps, scratch);
          const run_result got = run_workers<distopt::algorithms::local_sgd<3>>(n, x0, o, body, threads);
          for (int k = 0; k < n; ++k) {
            CHECK(same_bits(expected[static_cast<std::size_t>(k)], expected[0]));
            CHECK(same_bits(got.x[static_cast<std::size_t>(k)], expected[0]));
          }
        }
      }
    }
  }
}

// ---- 2./3. n workers, full-batch gradients, reach the optimum -----------------------------
//
// 240 samples split into equal shards (240 is divisible by 2, 3, 4 and 8), so the
// mean of the shard-mean gradients is the global gradient and gradient descent
// converges to the global optimum. Rows ~ N(0, I) with m/d = 30 make the Hessian
// well conditioned (eigenvalues ~ (1 +- sqrt(d/m))^2 for least squares), so float32
// gradient descent can get within a few 1e-7 relative of the optimum: it stalls
// where lr * g falls below half an ulp of x, i.e. ~ u / (lr * lambda_min) relative.

TEST_CASE("optimizer: n workers with full-batch gradients reach the least-squares solution to 1e-5") {
  const auto d = distopt::problems::synthetic_regression(240, 8, 0.1f, 11);
  const Eigen::VectorXd x_star = least_squares_solution(d);
  for (int n : {2, 3, 4, 8}) {
    CAPTURE(n);
    auto shards = ls_shards(d, n, 3);
    for (const auto& s : shards) REQUIRE(s.samples() == 240 / static_cast<std::size_t>(n));
    const run_result r = run_workers<distopt::algorithms::minibatch_sgd>(
        n, Eigen::VectorXf::Zero(8), {.learning_rate = 0.5f, .timeout = k_timeout}, [&](int rank, auto& opt) {
          Eigen::VectorXf g(opt.parameters().size());
          for (int k = 0; k < 100; ++k) {
            shards[static_cast<std::size_t>(rank)].gradient(opt.parameters(), g);
            opt.step(g);
          }
        });
    check_all_ranks_identical(r);
    CHECK(relative_error(r.x[0], x_star) <= 1e-5);
  }
}

TEST_CASE("optimizer: n workers with full-batch gradients reach the l2-logistic optimum (Newton) to 1e-5") {
  const auto d = distopt::problems::synthetic_classification(240, 6, 5);
  const float lambda = 0.1f;
  const Eigen::VectorXd x_star = logistic_newton(d, static_cast<double>(lambda));
  // Hessian eigenvalues lie in [lambda, lambda + lambda_max(A^T A / m) / 4] ~ [0.1, 0.5]:
  // a step of 2 contracts the error by at most ~0.8 per step.
  for (int n : {2, 3, 4, 8}) {
    CAPTURE(n);
    auto shards = logistic_shards(d, n, lambda, 3);
    const run_result r = run_workers<distopt::algorithms::minibatch_sgd>(
        n, Eigen::VectorXf::Zero(6), {.learning_rate = 2.0f, .timeout = k_timeout}, [&](int rank, auto& opt) {
          Eigen::VectorXf g(opt.parameters().size());
          for (int k = 0; k < 150; ++k) {
            shards[static_cast<std::size_t>(rank)].gradient(opt.parameters(), g);
            opt.step(g);
          }
        });
    check_all_ranks_identical(r);
    CHECK(relative_error(r.x[0], x_star) <= 1e-5);
  }
}

// ---- 4. local SGD ----------------------------------------------------------------------
//
// Local gradient descent with H steps per round: from the averaged model x, worker i
// takes H steps x <- M_i x + lr c_i (M_i = I - lr A_i^T A_i / m_i, c_i = A_i^T b_i / m_i),
// then the models are averaged. Its fixed point solves
//   (I - mean_i M_i^H) x = lr mean_i (sum_{k<H} M_i^k) c_i,
// which is the global optimum when every shard has the same minimiser (noise-free
// data, b = A x_true) but not otherwise (client drift): with noisy data the shard
// optima differ and so does the fixed point. Both cases are checked, in double.

namespace {

Eigen::VectorXd local_gd_fixed_point(const std::vector<distopt::problems::least_squares>& shards, double lr, int h) {
  const Index dim = shards[0].dimension();
  Eigen::MatrixXd lhs = Eigen::MatrixXd::Zero(dim, dim);
  Eigen::VectorXd rhs = Eigen::VectorXd::Zero(dim);
  const Eigen::MatrixXd id = Eigen::MatrixXd::Identity(dim, dim);
  for (const auto& s : shards) {
    const Eigen::MatrixXd a = s.features().cast<double>();
    const Eigen::VectorXd b = s.targets().cast<double>();
    const double m = static_cast<double>(a.rows());
    const Eigen::MatrixXd mi = id - lr * (a.transpose() * a) / m;
    const Eigen::VectorXd ci = a.transpose() * b / m;
    Eigen::MatrixXd power = id, sum = Eigen::MatrixXd::Zero(dim, dim);
    for (int k = 0; k < h; ++k) {
      sum += power;
      power = mi * power;
    }
    lhs += id - power;  // power == M_i^H
    rhs += lr * sum * ci;
  }
  return lhs.colPivHouseholderQr().solve(rhs);  // the 1/n of both means cancels
}

template <int H>
void check_local_sgd(int n, const distopt::problems::labelled_data& d, const Eigen::VectorXd& reference, int steps) {
  CAPTURE(n);
  CAPTURE(H);
  CAPTURE(steps);
  auto shards = ls_shards(d, n, 7);
  std::vector<std::uint64_t> rounds_before_finish(static_cast<std::size_t>(n));
  const run_result r = run_workers<distopt::algorithms::local_sgd<H>>(
      n, Eigen::VectorXf::Zero(d.features.cols()), {.learning_rate = 0.5f, .timeout = k_timeout},
      [&](int rank, auto& opt) {
        Eigen::VectorXf g(opt.parameters().size());
        for (int k = 0; k < steps; ++k) {
          shards[static_cast<std::size_t>(rank)].gradient(opt.parameters(), g);
          opt.step(g);
        }
        rounds_before_finish[static_cast<std::size_t>(rank)] = opt.stats().rounds;
        opt.finish();
      });
  check_all_ranks_identical(r);
  for (int k = 0; k < n; ++k) {
    const auto& s = r.stats[static_cast<std::size_t>(k)];
    CHECK(rounds_before_finish[static_cast<std::size_t>(k)] == static_cast<std::uint64_t>(steps / H));
    // finish() averages a trailing partial period, if any.
    CHECK(s.rounds == static_cast<std::uint64_t>((steps + H - 1) / H));
    CHECK(s.steps == static_cast<std::uint64_t>(steps));
  }
  CHECK(relative_error(r.x[0], reference) <= 1e-5);
}

}  // namespace

TEST_CASE(
    "optimizer: local SGD, H in {1, 2, 4, 8}, with full-batch gradients reaches the least-squares optimum (noise-free "
    "data)") {
  const auto d = distopt::problems::synthetic_regression(240, 8, 0.0f, 12);
  const Eigen::VectorXd x_star = least_squares_solution(d);
  for (int n : {2, 4}) {
    // Also a step count that is not a multiple of H: finish() takes the last round; one
    // averaged local step is a global gradient step, which stays at the optimum.
    check_local_sgd<1>(n, d, x_star, 120);
    check_local_sgd<2>(n, d, x_star, 120);
    check_local_sgd<2>(n, d, x_star, 121);
    check_local_sgd<4>(n, d, x_star, 120);
    check_local_sgd<4>(n, d, x_star, 122);
    check_local_sgd<8>(n, d, x_star, 120);
  }
}

TEST_CASE("optimizer: local SGD with noisy shards reaches the exact fixed point of local gradient descent") {
  const auto d = distopt::problems::synthetic_regression(240, 8, 0.5f, 13);
  const Eigen::VectorXd x_star = least_squares_solution(d);
  for (int n : {2, 4}) {
    auto shards = ls_shards(d, n, 7);
    const Eigen::VectorXd fp2 = local_gd_fixed_point(shards, 0.5, 2);
    const Eigen::VectorXd fp4 = local_gd_fixed_point(shards, 0.5, 4);
    // The drift is real (so matching the fixed point is a sharper test than matching x*).
    CHECK((fp4 - x_star).norm() >= 1e-3 * x_star.norm());
    check_local_sgd<2>(n, d, fp2, 120);
    check_local_sgd<4>(n, d, fp4, 120);
  }
}

// ---- 5. determinism ------------------------------------------------------------------------

namespace {

// n workers, stochastic mini-batches on iid shards of a logistic problem.
template <class Opt>
run_result stochastic_run(int n, std::uint64_t sampling_seed, const distopt::options& o) {
  const auto d = distopt::problems::synthetic_classification(160, 6, 8);
  const distopt::problems::logistic_regression whole(d.features, d.targets, 0.01f);
  std::vector<distopt::problems::logistic_regression> problems(static_cast<std::size_t>(n), whole);  // one per rank
  return run_workers<Opt>(n, seeded_normal(6, 9), o, [&](int rank, auto& opt) {
    distopt::data::minibatch_sampler s(distopt::data::iid_shard(160, rank, n, sampling_seed), 5, sampling_seed, rank);
    Eigen::VectorXf g(opt.parameters().size());
    for (int k = 0; k < 60; ++k) {
      problems[static_cast<std::size_t>(rank)].gradient(opt.parameters(), s.next(), g);
      opt.step(g);
    }
    opt.finish();
  });
}

template <class Opt>
void check_reproducible(const distopt::options& o) {
  for (int n : {2, 3, 4}) {
    CAPTURE(n);
    const run_result a = stochastic_run<Opt>(n, 21, o);
    const run_result b = stochastic_run<Opt>(n, 21, o);
    const run_result c = stochastic_run<Opt>(n, 22, o);
    check_all_ranks_identical(a);
    check_all_ranks_identical(b);
    for (std::size_t k = 0; k < a.x.size(); ++k) CHECK(same_bits(a.x[k], b.x[k]));
    CHECK(!same_bits(a.x[0], c.x[0]));  // the comparison can fail: other batches, other result
  }
}

}  // namespace

TEST_CASE("optimizer: same seed, same bits; every rank ends with identical parameters") {
  SUBCASE("mini-batch SGD, Nesterov + weight decay") {
    check_reproducible<distopt::algorithms::minibatch_sgd>({.learning_rate = 0.2f,
                                                            .momentum = 0.9f,
                                                            .nesterov = true,
                                                            .weight_decay = 1e-3f,
                                                            .seed = 4,
                                                            .timeout = k_timeout});
  }
  SUBCASE("local SGD, H = 4, momentum (a 60-step run ends on a round boundary)") {
    check_reproducible<distopt::algorithms::local_sgd<4>>(
        {.learning_rate = 0.2f, .momentum = 0.5f, .seed = 4, .timeout = k_timeout});
  }
  SUBCASE("local SGD, H = 7 (finish() averages the trailing 4 steps)") {
    check_reproducible<distopt::algorithms::local_sgd<7>>({.learning_rate = 0.2f, .seed = 4, .timeout = k_timeout});
  }
}

// ---- 6. statistics --------------------------------------------------------------------------
//
// Ring allreduce of `len` floats over n ranks (collective/ring_allreduce.hpp): chunk c
// is [c len / n, (c+1) len / n), sent in messages of at most 2^16 floats (the default
// allreduce_workspace::segment_floats), an empty chunk as one empty message.
// Reduce-scatter: rank r sends its own chunk r, then the partial sums of chunks
// r-1, r-2, ..., r-(n-1) = r+1; so every chunk once (the last, chunk r+1, finished:
// rank r owns it, and that send is the first hop of its allgather).
// Allgather: finished chunk c starts at its owner c-1 and is forwarded by ranks
// c, c+1, ..., c+n-3; rank c+n-2 = c-2 is its last hop. So rank r forwards chunk c
// iff (r - c) mod n <= n - 3.

namespace {

struct traffic {
  std::uint64_t bytes = 0;
  std::uint64_t messages = 0;
};

traffic ring_traffic_per_round(std::size_t len, int n, int r) {
  traffic t;
  if (n == 1) return t;  // nothing to exchange
  constexpr std::size_t segment = std::size_t{1} << 16;
  const std::size_t nn = static_cast<std::size_t>(n);
  for (int c = 0; c < n; ++c) {
    const std::size_t size = len * static_cast<std::size_t>(c + 1) / nn - len * static_cast<std::size_t>(c) / nn;
    const std::uint64_t messages = size == 0 ? 1 : (size + segment - 1) / segment;
    const int sends = 1 + (((r - c) % n + n) % n <= n - 3 ? 1 : 0);
    t.bytes += static_cast<std::uint64_t>(sends) * size * sizeof(float);
    t.messages += static_cast<std::uint64_t>(sends) * messages;
  }
  return t;
}

template <class Opt>
void check_statistics(int n, std::size_t len, int steps, std::uint64_t rounds, bool native = false) {
  CAPTURE(n);
  CAPTURE(len);
  CAPTURE(steps);
  CAPTURE(native);
  const auto size = static_cast<Index>(len);
  const run_result r = run_workers<Opt>(
      n, Eigen::VectorXf::Zero(size), {.learning_rate = 0.1f, .timeout = k_timeout},
      [&](int rank, auto& opt) {
        const Eigen::VectorXf g = Eigen::VectorXf::Constant(size, 0.5f + rank);
        for (int k = 0; k < steps; ++k) opt.step(g);
        opt.finish();
      },
      distopt::thread_options{.timeout = k_timeout, .native_allreduce = native});
  for (int k = 0; k < n; ++k) {
    CAPTURE(k);
    const auto& s = r.stats[static_cast<std::size_t>(k)];
    const traffic mine = ring_traffic_per_round(len, n, k);
    const traffic prev = ring_traffic_per_round(len, n, (k + n - 1) % n);  // what rank k receives
    CHECK(s.steps == static_cast<std::uint64_t>(steps));
    CHECK(s.rounds == rounds);
    CHECK(s.bytes_sent == rounds * mine.bytes);
    CHECK(s.messages_sent == rounds * mine.messages);
    CHECK(s.bytes_received == rounds * prev.bytes);
    CHECK(s.messages_received == rounds * prev.messages);
    CHECK(s.max_staleness == 0);
    REQUIRE(s.staleness_histogram.size() == 1);  // synchronous: every contribution at staleness 0
    CHECK(s.staleness_histogram[0] == rounds);
  }
}

}  // namespace

TEST_CASE("optimizer: statistics of mini-batch SGD match the ring allreduce's traffic") {
  // Sanity of the derivation: 2(n-1) messages per round, and 2(n-1)/n * len floats
  // when n divides len.
  CHECK(ring_traffic_per_round(40, 4, 1).messages == 6);
  CHECK(ring_traffic_per_round(40, 4, 1).bytes == 6 * 10 * sizeof(float));
  CHECK(ring_traffic_per_round(40, 2, 0).bytes == 2 * 20 * sizeof(float));
  // The thread transport's shared-memory allreduce sends no messages; it is counted as the
  // ring it replaces, so its statistics must be the same.
  for (const bool native : {false, true}) {
    for (int n : {1, 2, 3, 4, 8})
      for (std::size_t len : {std::size_t{1}, std::size_t{5}, std::size_t{8}, std::size_t{37}, std::size_t{1000}})
        check_statistics<distopt::algorithms::minibatch_sgd>(n, len, 5, 5, native);
    // Chunks longer than one 2^16-float segment travel as several messages.
    check_statistics<distopt::algorithms::minibatch_sgd>(2, 3 * 65536 + 7, 2, 2, native);
    check_statistics<distopt::algorithms::minibatch_sgd>(3, 3 * 65536 + 7, 2, 2, native);
  }
}

TEST_CASE("optimizer: statistics of local SGD count one round per H steps") {
  for (int n : {1, 2, 3, 4}) {
    check_statistics<distopt::algorithms::local_sgd<3>>(n, 10, 9, 3);
    check_statistics<distopt::algorithms::local_sgd<3>>(n, 10, 10, 4);  // finish() adds the partial round
    check_statistics<distopt::algorithms::local_sgd<3>>(n, 10, 2, 1);
  }
}

// ---- 7. bad input ----------------------------------------------------------------------------

namespace {

// What a call threw: whether it was an E, and its message.
struct thrown {
  bool as_expected = false;
  std::string what = "(nothing thrown)";
};

template <class E, class F>
thrown catch_as(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return {true, e.what()};
  } catch (const std::exception& e) {
    return {false, std::string("(another exception) ") + e.what()};
  }
  return {};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

void check_config_error(const distopt::options& o, const Eigen::VectorXf& x0, const std::string& names) {
  const thrown t = catch_as<distopt::config_error>([&] {
    distopt::run_threads(
        1, [&](transport_ref tr) { distopt::algorithms::minibatch_sgd opt(tr, x0, o); }, k_threads);
  });
  CAPTURE(t.what);
  CHECK(t.as_expected);
  CHECK(contains(t.what, names));
}

}  // namespace

TEST_CASE("optimizer: bad options and shapes throw config_error naming the parameter") {
  const Eigen::VectorXf x0 = Eigen::VectorXf::Ones(3);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  using ms = std::chrono::milliseconds;

  check_config_error({.timeout = k_timeout}, Eigen::VectorXf(0), "x0");
  for (float lr : {0.0f, -0.1f, nan, inf})
    check_config_error({.learning_rate = lr, .timeout = k_timeout}, x0, "learning_rate");
  for (float mu : {-0.1f, 1.0f, 1.5f, nan}) check_config_error({.momentum = mu, .timeout = k_timeout}, x0, "momentum");
  check_config_error({.momentum = 0.0f, .nesterov = true, .timeout = k_timeout}, x0, "nesterov");
  for (float wd : {-1e-4f, nan, inf})
    check_config_error({.weight_decay = wd, .timeout = k_timeout}, x0, "weight_decay");
  for (ms timeout : {ms(0), ms(-5)}) check_config_error({.timeout = timeout}, x0, "timeout");

  // Boundary values that are valid.
  CHECK_NOTHROW(distopt::run_threads(
      1,
      [&](transport_ref t) {
        distopt::algorithms::minibatch_sgd opt(
            t, x0,
            {.learning_rate = 1e-30f, .momentum = 0.999f, .nesterov = true, .weight_decay = 0.0f, .timeout = ms(1)});
      },
      k_threads));

  // A gradient of the wrong size.
  const thrown t = catch_as<distopt::config_error>([&] {
    distopt::run_threads(
        1,
        [&](transport_ref tr) {
          distopt::algorithms::minibatch_sgd opt(tr, x0, {.timeout = k_timeout});
          opt.step(Eigen::VectorXf::Ones(4));
        },
        k_threads);
  });
  CAPTURE(t.what);
  CHECK(t.as_expected);
  CHECK(contains(t.what, "gradient"));
}

TEST_CASE("optimizer: the policies' own knobs are checked too, naming the knob and the policy") {
  const Eigen::VectorXf x0 = Eigen::VectorXf::Ones(3);
  const auto refusal = [&](auto make) {
    const thrown t = catch_as<distopt::config_error>([&] {
      distopt::run_threads(
          3, [&](transport_ref tr) { (void)make(tr); }, k_threads);
    });
    CAPTURE(t.what);
    CHECK(t.as_expected);
    return t.what;
  };
  using choco = distopt::algorithms::choco_sgd<>;
  for (float gamma : {0.0f, -0.5f, 1.5f, std::numeric_limits<float>::quiet_NaN()}) {
    CAPTURE(gamma);
    const distopt::topology::gossip<distopt::topology::ring, distopt::mixing::choco> ring{{},
                                                                                          {.consensus_step = gamma}};
    CHECK(contains(refusal([&](transport_ref t) { return choco(t, x0, {.timeout = k_timeout}, {}, ring); }),
                   "consensus_step must be in (0, 1]"));
  }
  // The staleness-aware step belongs to the parameter server; pairwise gossip has none.
  CHECK(contains(refusal([&](transport_ref t) {
                   return distopt::algorithms::ad_psgd<>(t, x0, {.timeout = k_timeout}, {}, {},
                                                         {.staleness_aware_lr = true});
                 }),
                 "staleness_aware_lr applies to the parameter server only"));
}

TEST_CASE("optimizer: run_threads refuses a non-positive worker count or timeout") {
  for (int n : {0, -1}) {
    const thrown t = catch_as<distopt::config_error>([&] { distopt::run_threads(n, [](transport_ref) {}); });
    CAPTURE(t.what);
    CHECK(t.as_expected);
    CHECK(contains(t.what, "number of workers"));
  }
  const thrown t = catch_as<distopt::config_error>(
      [&] { distopt::run_threads(2, [](transport_ref) {}, {.timeout = std::chrono::milliseconds(0)}); });
  CAPTURE(t.what);
  CHECK(t.as_expected);
  CHECK(contains(t.what, "timeout"));
}

TEST_CASE("optimizer: ranks with different model sizes are refused with config_error") {
  // Rank 2 has 5 parameters, the others 4: every rank sees every size, so each one detects it.
  std::mutex m;
  std::vector<thrown> seen(3);
  distopt::run_threads(
      3,
      [&](transport_ref t) {
        const Eigen::VectorXf x0 = Eigen::VectorXf::Zero(t.rank() == 2 ? 5 : 4);
        const thrown got = catch_as<distopt::config_error>(
            [&] { distopt::algorithms::minibatch_sgd opt(t, x0, {.timeout = k_timeout}); });
        std::lock_guard lock(m);
        seen[static_cast<std::size_t>(t.rank())] = got;
      },
      k_threads);
  for (std::size_t k = 0; k < seen.size(); ++k) {
    CAPTURE(k);
    CAPTURE(seen[k].what);
    CHECK(seen[k].as_expected);
    CHECK(contains(seen[k].what, "x0"));
    CHECK(contains(seen[k].what, k == 2 ? "model of 5" : "model of 4"));
  }

  // Uncaught, run_threads rethrows the first, a config_error.
  const thrown t = catch_as<distopt::config_error>([&] {
    distopt::run_threads(
        3,
        [&](transport_ref tr) {
          distopt::algorithms::minibatch_sgd opt(tr, Eigen::VectorXf::Zero(tr.rank() == 1 ? 7 : 4),
                                                 {.timeout = k_timeout});
          opt.step(Eigen::VectorXf::Zero(opt.parameters().size()));
        },
        k_threads);
  });
  CAPTURE(t.what);
  CHECK(t.as_expected);
  CHECK(contains(t.what, "same size"));
}

TEST_CASE("optimizer: a NaN or Inf gradient throws numeric_error naming the rank and the step") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();

  SUBCASE("one worker: Inf at step 0, parameters untouched") {
    bool unchanged = false;
    const thrown t = catch_as<distopt::numeric_error>([&] {
      distopt::run_threads(
          1,
          [&](transport_ref tr) {
            const Eigen::VectorXf x0 = Eigen::VectorXf::Ones(3);
            distopt::algorithms::minibatch_sgd opt(tr, x0, {.timeout = k_timeout});
            Eigen::VectorXf g = Eigen::VectorXf::Ones(3);
            g(2) = -inf;
            try {
              opt.step(g);
            } catch (...) {
              unchanged = same_bits(opt.parameters(), x0) && opt.stats().steps == 0;
              throw;
            }
          },
          k_threads);
    });
    CAPTURE(t.what);
    CHECK(t.as_expected);
    CHECK(contains(t.what, "rank 0"));
    CHECK(contains(t.what, "step 0"));
    CHECK(unchanged);
  }

  SUBCASE("three workers: rank 1 sends NaN at its fourth step (step 3, counted from 0)") {
    const thrown t = catch_as<distopt::numeric_error>([&] {
      distopt::run_threads(
          3,
          [&](transport_ref tr) {
            distopt::algorithms::minibatch_sgd opt(tr, Eigen::VectorXf::Zero(6), {.timeout = k_timeout});
            for (int k = 0; k < 6; ++k) {
              Eigen::VectorXf g = Eigen::VectorXf::Ones(6);
              if (tr.rank() == 1 && k == 3) g(4) = nan;
              opt.step(g);
            }
          },
          k_threads);
    });
    // The other ranks wake with transport_error; run_threads rethrows the first error.
    CAPTURE(t.what);
    CHECK(t.as_expected);
    CHECK(contains(t.what, "rank 1"));
    CHECK(contains(t.what, "step 3"));
  }
}
