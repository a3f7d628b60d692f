#pragma once
// Shared by test_algorithms_defaults (synchronous aliases) and test_algorithms_defaults_async
// (stale and asynchronous ones, which the ThreadSanitizer pass also runs): every alias of
// algorithms.hpp as a new user first runs it: default options (learning rate 0.01, no
// momentum), the alias's default compressor and topology, 4 workers on least squares whose
// shards have different optima. The control is the same run without communication: each
// worker reaches its own optimum and finish()'s average of those misses the global one
// (closed form below). An alias passes when it ends less than half the control's distance
// from the global optimum (set before running: an algorithm that talks must clearly beat
// one that does not) and never fails. The defaults that diverged (CHOCO's consensus step 1,
// issue 17) fail here.
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <chrono>
#include <concepts>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include <distopt/algorithms.hpp>
#include <distopt/distopt.hpp>

#include "test_gossip_harness.hpp"

namespace defaults_test {

inline constexpr int workers = 4;
inline constexpr Eigen::Index dim = 20;
inline constexpr int steps = 3000;
inline const gossip_test::shards problem(workers, 80, dim, 31);

inline double error_of(const Eigen::VectorXd& x) { return (x - problem.optimum()).norm() / problem.optimum().norm(); }

// No communication: worker i ends at H_i^-1 c_i; finish() would average those.
inline double control_error() {
  Eigen::VectorXd mean = Eigen::VectorXd::Zero(dim);
  for (int i = 0; i < workers; ++i)
    mean += problem.h[static_cast<std::size_t>(i)].ldlt().solve(problem.c[static_cast<std::size_t>(i)]);
  return error_of(mean / workers);
}

// The worst worker's relative error after `steps` steps and finish(). Asynchronous and stale
// runs are paced, step s of every worker starting s * 1 ms after a common start, as if each
// took the same compute time (1 ms is far above a step's own cost, even under sanitizers):
// unpaced threads on 2 cores run in bursts, and an asynchronous run then settles at the
// optimum weighted by the workers' rates, or its staleness grows past what the default step
// tolerates. Synchronous runs are lock-step and need no pacing.
template <class Opt>
double error_with_defaults() {
  using clock = std::chrono::steady_clock;
  constexpr bool paced = !std::same_as<typename Opt::staleness_type, distopt::staleness::synchronous>;
  const auto start = clock::now() + std::chrono::milliseconds(20);
  std::vector<int> taken(workers, 0);  // steps begun, per rank (each rank writes its own)
  const auto tr = gossip_test::run<Opt>(
      workers, steps, [](int) { return Eigen::VectorXf::Zero(dim); }, distopt::options{},
      [&](int r, const Eigen::VectorXf& x, Eigen::VectorXf& g) {
        if (paced)
          std::this_thread::sleep_until(start + taken[static_cast<std::size_t>(r)]++ * std::chrono::milliseconds(1));
        problem.gradient(r, x, g);
      });
  double worst = 0.0;
  for (const Eigen::VectorXf& x : tr.final) worst = std::max(worst, error_of(x.cast<double>()));
  return worst;
}

template <class Opt>
void check(const char* name, double control) {
  CAPTURE(std::string(name));
  double e = INFINITY;
  CHECK_NOTHROW(e = error_with_defaults<Opt>());
  MESSAGE(name << ": relative error " << e << " (no communication: " << control << ")");
  CHECK(e < 0.5 * control);
}

}  // namespace defaults_test
