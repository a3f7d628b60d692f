// ctest-labels: numeric
// Decentralized SGD on least squares split across 9 heterogeneous workers on a ring,
// against closed forms computed serially in double precision (test_gossip_harness.hpp):
// the serial D-PSGD recursion X <- W X - eta G(X) / W (X - eta G(X)), the fixed point of
// each order and of CHOCO (a linear solve), and the global optimum (sum H_i) x = sum c_i.
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <cmath>
#include <string>
#include <vector>

#include <distopt/distopt.hpp>

#include "test_gossip_harness.hpp"

namespace {

using gossip_test::stack;
namespace topo = distopt::topology;
namespace mixing = distopt::mixing;

template <class T, class C = distopt::compress::identity>
using gossip_sgd = distopt::optimizer<C, T, distopt::staleness::synchronous, distopt::local_steps::every_step>;

constexpr int n = 9;
constexpr Eigen::Index dim = 5;
const gossip_test::shards problem(n, 20, dim, 7);
const Eigen::MatrixXd w = distopt::graph::ring(n).mixing_matrix();

Eigen::VectorXf start(int rank) { return gossip_test::seeded_normal(dim, 5, static_cast<std::uint32_t>(rank)); }
void gradient(int r, const Eigen::VectorXf& x, Eigen::VectorXf& g) { problem.gradient(r, x, g); }

// Runs `steps` steps and compares every step with the serial recursion of the given order.
// `first_step_mixes = false`: the first step is x <- x - eta g (CHOCO's public copies start at 0).
template <class T, class C = distopt::compress::identity>
void check_against_serial(bool mix_after_step, float gamma, bool first_step_mixes = true, C c = {}) {
  constexpr int steps = 30;
  constexpr float eta = 0.1f;
  T topology{};
  if constexpr (requires { topology.scheme.consensus_step; })
    topology.scheme.consensus_step = gamma;
  else
    REQUIRE(gamma == 1.0f);  // the scheme has no consensus step
  const auto tr = gossip_test::run<gossip_sgd<T, C>>(n, steps, start, {.learning_rate = eta}, gradient, c, topology);
  Eigen::MatrixXd ref = stack(tr.at[0]);
  for (int s = 0; s < steps; ++s) {
    const bool mixes = s > 0 || first_step_mixes;
    ref = problem.serial_step(mixes ? w : Eigen::MatrixXd::Identity(n, n), ref, eta, mix_after_step);
    CHECK((stack(tr.at[static_cast<std::size_t>(s + 1)]) - ref).cwiseAbs().maxCoeff() < 1e-4);
  }
}

}  // namespace

TEST_CASE("D-PSGD in both orders, and every scheme with an exact compressor, follow the serial recursion") {
  // x <- W x - eta g(x) (Lian et al.) and x <- W (x - eta g(x)) (ChocoSGD's "plain").
  check_against_serial<topo::ring>(false, 1.0f);
  check_against_serial<topo::gossip<topo::ring, mixing::exact_step_then_mix>>(true, 1.0f);
  // With C = identity: CHOCO with gamma = 1 gives x <- W x - eta g (its public copies lag one
  // round, which is exactly the pre-step model); DCD and ECD keep exact replicas, so they are
  // x <- W x - eta g as well; DeepSqueeze with gamma = 1 is x <- W (x - eta g).
  check_against_serial<topo::gossip<topo::ring, mixing::choco>>(false, 1.0f, false);
  check_against_serial<topo::gossip<topo::ring, mixing::dcd>>(false, 1.0f);
  check_against_serial<topo::gossip<topo::ring, mixing::ecd>>(false, 1.0f);
  check_against_serial<topo::gossip<topo::ring, mixing::deep_squeeze>>(true, 1.0f);
}

TEST_CASE("D-PSGD with a constant step reaches the closed-form fixed point of each order (9 workers, ring)") {
  // The iteration is linear, X <- (W - eta H) X + eta c; with eta = 0.1 its slowest mode
  // contracts by ~1 - eta mu per step (mu ~ 0.25 here), so 800 steps leave < 1e-8 of the start.
  constexpr int steps = 800;
  constexpr float eta = 0.1f;
  const auto before = problem.fixed_point(w, eta, false), after = problem.fixed_point(w, eta, true);
  REQUIRE((before - after).cwiseAbs().maxCoeff() > 1e-3);  // the two orders are distinguishable
  const auto a = gossip_test::run<gossip_sgd<topo::ring>>(n, steps, start, {.learning_rate = eta}, gradient);
  CHECK((stack(a.at[steps]) - before).cwiseAbs().maxCoeff() < 1e-4);
  const auto b = gossip_test::run<gossip_sgd<topo::gossip<topo::ring, mixing::exact_step_then_mix>>>(
      n, steps, start, {.learning_rate = eta}, gradient);
  CHECK((stack(b.at[steps]) - after).cwiseAbs().maxCoeff() < 1e-4);
}

TEST_CASE("CHOCO-SGD with top-k reaches its closed-form fixed point (9 workers, ring)") {
  // At a fixed point of CHOCO with a deterministic compressor, C(x - x_hat) = 0 forces
  // x_hat = x, so gamma (I - W) X + eta (H X - c) = 0: D-PSGD's fixed point with
  // M = I - gamma (I - W).
  constexpr int steps = 3000;
  constexpr float eta = 0.05f, gamma = 0.3f;
  const Eigen::MatrixXd m = Eigen::MatrixXd::Identity(n, n) - gamma * (Eigen::MatrixXd::Identity(n, n) - w);
  const auto expected = problem.fixed_point(m, eta, false);
  const auto tr = gossip_test::run<gossip_sgd<topo::gossip<topo::ring>, distopt::compress::top_k>>(
      n, steps, start, {.learning_rate = eta}, gradient, distopt::compress::top_k{0.4},
      {{}, {.consensus_step = gamma}});
  CHECK((stack(tr.at[steps]) - expected).cwiseAbs().maxCoeff() < 1e-4);
}

TEST_CASE("with a decaying step, D-PSGD and CHOCO-SGD reach the global least-squares optimum (9 workers, ring)") {
  // eta_t = 0.1 / (1 + t/50). The distance of the fixed point from the optimum is O(eta):
  // `bias` is its value at the final step size (closed form, M = W for D-PSGD and
  // M = I - gamma (I - W) for CHOCO, whose bias is ~1/gamma larger). Tolerance: every worker
  // within 3 * bias + 1e-3 of x* (relative, max norm), and the final average (finish()) too.
  constexpr int steps = 3000;
  auto eta = [](int t) { return 0.1f / (1.0f + static_cast<float>(t) / 50.0f); };
  const Eigen::VectorXd opt = problem.optimum();
  const double scale = opt.cwiseAbs().maxCoeff();
  auto check = [&](const gossip_test::trajectory& tr, double gamma, const char* name) {
    CAPTURE(std::string(name));
    const Eigen::MatrixXd m = Eigen::MatrixXd::Identity(n, n) - gamma * (Eigen::MatrixXd::Identity(n, n) - w);
    const Eigen::MatrixXd fp = problem.fixed_point(m, eta(steps - 1), false);
    const double bias = (fp.rowwise() - opt.transpose()).cwiseAbs().maxCoeff() / scale, tol = 3 * bias + 1e-3;
    const double worst = (stack(tr.at[steps]).rowwise() - opt.transpose()).cwiseAbs().maxCoeff() / scale;
    const double avg = (stack(tr.final).rowwise() - opt.transpose()).cwiseAbs().maxCoeff() / scale;
    MESSAGE(name << ": worst worker " << worst << ", average " << avg << ", fixed-point bias " << bias);
    CHECK(worst < tol);
    CHECK(avg < tol);
  };
  check(gossip_test::run<gossip_sgd<topo::ring>>(n, steps, start, {.learning_rate = eta(0)}, gradient, {}, {}, eta),
        1.0, "D-PSGD");
  check(gossip_test::run<gossip_sgd<topo::gossip<topo::ring>, distopt::compress::top_k>>(
            n, steps, start, {.learning_rate = eta(0)}, gradient, distopt::compress::top_k{0.4},
            {{}, {.consensus_step = 0.3f}}, eta),
        0.3, "CHOCO top-40%");
  check(gossip_test::run<gossip_sgd<topo::gossip<topo::ring>, distopt::compress::qsgd<8>>>(
            n, steps, start, {.learning_rate = eta(0)}, gradient, {}, {{}, {.consensus_step = 0.5f}}, eta),
        0.5, "CHOCO qsgd<8>");
}
