// ctest-labels: threads
// Local-steps policies against their definitions, and in the optimizer against the
// configurations they reduce to: post_local<Switch, H> is mini-batch SGD before the
// switch and local SGD<H> after it (bit for bit); geometric<H> draws rounds with
// probability 1/H per step, shared by every worker.

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include <distopt/distopt.hpp>
#include <distopt/problems.hpp>

#include "optimizer_harness.hpp"

namespace ls = distopt::local_steps;
using namespace harness;

TEST_CASE("post_local<Switch, H>: every step before the switch, then every H-th") {
  const ls::post_local<3, 4> p;
  std::vector<std::uint64_t> rounds;
  for (std::uint64_t s = 0; s < 20; ++s)
    if (p.communicates_after(s)) rounds.push_back(s);
  // Steps 0, 1, 2 (before the switch), then Switch + kH - 1 = 6, 10, 14, 18.
  CHECK(rounds == std::vector<std::uint64_t>{0, 1, 2, 6, 10, 14, 18});
  const ls::post_local<0, 1> always;
  for (std::uint64_t s = 0; s < 10; ++s) CHECK(always.communicates_after(s));
}

TEST_CASE("geometric<H>: gaps between rounds have mean H and P(gap = 1) = 1/H; the schedule is the seed's") {
  constexpr std::uint64_t steps = 400000;
  for (const double h : {4.0, 16.0}) {
    CAPTURE(h);
    std::uint64_t rounds = 0, ones = 0, last = 0;
    double gap_sum = 0;
    auto count = [&](auto policy) {
      for (std::uint64_t s = 0; s < steps; ++s) {
        if (!policy.communicates_after(s)) continue;
        const std::uint64_t gap = s + 1 - last;
        last = s + 1;
        gap_sum += double(gap);
        ones += gap == 1;
        ++rounds;
      }
    };
    if (h == 4.0)
      count(ls::geometric<4>{.seed = 3});
    else
      count(ls::geometric<16>{.seed = 3});
    // Geometric gaps: mean H, variance H(H - 1); the mean of `rounds` gaps is within 5 standard
    // errors, and the fraction of gaps of 1 (probability 1/H) within 5 binomial standard errors.
    const double mean = gap_sum / double(rounds);
    CHECK(std::abs(mean - h) <= 5.0 * std::sqrt(h * (h - 1) / double(rounds)));
    const double p = 1.0 / h;
    CHECK(std::abs(double(ones) / double(rounds) - p) <= 5.0 * std::sqrt(p * (1 - p) / double(rounds)));
  }
  const ls::geometric<8> a{.seed = 1}, b{.seed = 1}, c{.seed = 2};
  int same = 0, differ = 0;
  for (std::uint64_t s = 0; s < 10000; ++s) {
    same += a.communicates_after(s) == b.communicates_after(s);
    differ += a.communicates_after(s) != c.communicates_after(s);
  }
  CHECK(same == 10000);
  CHECK(differ > 0);
  const ls::geometric<1> every;
  CHECK(every.communicates_after(12345));
}

TEST_CASE("post_local in the optimizer: mini-batch SGD before the switch, local SGD<H> after, bit for bit") {
  const auto d = distopt::problems::synthetic_regression(240, 8, 0.1f, 11);
  const int n = 3;
  const distopt::options o{.learning_rate = 0.2f, .timeout = k_timeout};
  auto train = [&](int steps) {
    return [&, steps](int rank, auto& opt) {
      auto shards = ls_shards(d, n, 3);
      Eigen::VectorXf g(opt.parameters().size());
      for (int k = 0; k < steps; ++k) {
        shards[static_cast<std::size_t>(rank)].gradient(opt.parameters(), g);
        opt.step(g);
      }
      opt.finish();
    };
  };
  const Eigen::VectorXf x0 = Eigen::VectorXf::Zero(8);
  // Switch beyond the run: every step talks, as mini-batch SGD.
  const auto before = run_workers<distopt::algorithms::post_local_sgd<1000, 4>>(n, x0, o, train(40));
  const auto minibatch = run_workers<distopt::algorithms::minibatch_sgd>(n, x0, o, train(40));
  CHECK(same_bits(before.x[0], minibatch.x[0]));
  // Switch at 0: local SGD with 4 local steps from the start.
  const auto after = run_workers<distopt::algorithms::post_local_sgd<0, 4>>(n, x0, o, train(40));
  const auto local = run_workers<distopt::algorithms::local_sgd<4>>(n, x0, o, train(40));
  CHECK(same_bits(after.x[0], local.x[0]));
  CHECK(after.stats[0].rounds == 10);
  // Switch at 8 with H = 4 over 40 steps: 8 rounds before, then (40 - 8) / 4 = 8 after.
  const auto both = run_workers<distopt::algorithms::post_local_sgd<8, 4>>(n, x0, o, train(40));
  CHECK(both.stats[0].rounds == 16);
  check_all_ranks_identical(both);
}
