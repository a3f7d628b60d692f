// ctest-labels: numeric;slow
// The consensus step CHOCO-SGD and DeepSqueeze take when the scheme's consensus_step is unset
// (topology::default_consensus_step, from the compressor's compress::delta_bound):
//  - against the mean-square stability limit of compressed gossip, computed here from the
//    second-moment recursion of the whole graph (an independent derivation: the header's rule
//    comes from a one-node model);
//  - on the thread transport: gossip with a random sparsifier agrees at the default and blows
//    up at 2.6 times it; CHOCO with top-5% on heterogeneous least squares (ring of 9, eta = 0.02)
//    reaches its closed-form fixed point where the old default 1 diverged; DeepSqueeze converges;
//  - an explicit step wins, and a compressor with no contraction needs one.
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <optional>
#include <string>
#include <vector>

#include <distopt/distopt.hpp>

#include "test_gossip_harness.hpp"

namespace {

using gossip_test::consensus_distance;
using gossip_test::stack;
namespace dc = distopt::compress;
namespace topo = distopt::topology;
namespace mixing = distopt::mixing;
using Eigen::MatrixXd;

template <class S>
using ring_with = topo::gossip<topo::ring, S>;
template <class C, class S = mixing::choco>
using gossip_sgd =
    distopt::optimizer<C, ring_with<S>, distopt::staleness::synchronous, distopt::local_steps::every_step>;
// A CHOCO ring with the consensus step set.
ring_with<mixing::choco> choco_ring(double gamma) { return {{}, {.consensus_step = static_cast<float>(gamma)}}; }

// Spectral radius of the second-moment map of CHOCO's gossip (zero gradient) when C transmits
// each coordinate of x_i - xh_i independently with probability p. Per coordinate, with
// y = x - mean(x) (the mean is preserved) and e = x - xh:
//   y+ = (I - gamma L) y + gamma L e,   e+ = (I - M) ((I + gamma L) e - gamma L y),   L = I - W,
// M = diag(m_i), m_i ~ Bernoulli(p). With S = E[(y, e)(y, e)^T] and S' = G S G^T (G the linear
// part), E[(I - M) A (I - M)] = (1 - p)^2 A + p (1 - p) diag(A) gives S+. y is written in an
// orthonormal basis of 1^perp, so the map has no eigenvalue 1 from the preserved mean.
double second_moment_radius(const MatrixXd& w, double p, double gamma) {
  const auto n = w.rows();
  const MatrixXd id = MatrixXd::Identity(n, n), l = id - w;
  const Eigen::SelfAdjointEigenSolver<MatrixXd> eig(l);
  const MatrixXd u = eig.eigenvectors().rightCols(n - 1);  // L's eigenvalue 0 (the constant vector) comes first
  const auto m = 2 * n - 1;
  MatrixXd g = MatrixXd::Zero(m, m);
  g.topLeftCorner(n - 1, n - 1) = u.transpose() * (id - gamma * l) * u;
  g.topRightCorner(n - 1, n) = gamma * u.transpose() * l;
  g.bottomLeftCorner(n, n - 1) = -gamma * l * u;
  g.bottomRightCorner(n, n) = id + gamma * l;
  MatrixXd map(m * m, m * m);
  for (Eigen::Index k = 0; k < m * m; ++k) {
    MatrixXd s = MatrixXd::Zero(m, m);
    s(k % m, k / m) = 1.0;
    MatrixXd r = g * s * g.transpose();
    r.topRightCorner(n - 1, n) *= 1.0 - p;
    r.bottomLeftCorner(n, n - 1) *= 1.0 - p;
    const MatrixXd ee = r.bottomRightCorner(n, n);
    r.bottomRightCorner(n, n) = (1.0 - p) * (1.0 - p) * ee;
    r.bottomRightCorner(n, n).diagonal() += p * (1.0 - p) * ee.diagonal();
    map.col(k) = Eigen::Map<const Eigen::VectorXd>(r.data(), m * m);
  }
  return Eigen::EigenSolver<MatrixXd>(map, false).eigenvalues().cwiseAbs().maxCoeff();
}

void zero_gradient(int, const Eigen::VectorXf& x, Eigen::VectorXf& g) { g.setZero(x.size()); }

}  // namespace

TEST_CASE("default_consensus_step: 0.4-0.7 of the mean-square stability limit on every graph shape") {
  // The rule takes half of a one-node limit; the whole graph's limit is within ~15% of it.
  // Stable at default / 0.7 and unstable at default / 0.4 bracket the ratio.
  const std::vector<std::pair<std::string, distopt::graph>> graphs = {
      {"ring 9", distopt::graph::ring(9)},
      {"ring 4", distopt::graph::ring(4)},
      {"torus 3x3", distopt::graph::torus(3, 3)},
      {"complete 8", distopt::graph::complete(8)},
      {"star 5", distopt::graph::from_edges(5, {{0, 1}, {0, 2}, {0, 3}, {0, 4}})},
      {"path 4", distopt::graph::from_edges(4, {{0, 1}, {1, 2}, {2, 3}})},
  };
  for (const auto& [name, g] : graphs)
    for (double delta : {0.01, 0.05, 0.3, 1.0}) {
      CAPTURE(name);
      CAPTURE(delta);
      const double gamma = topo::default_consensus_step(delta, g);
      CHECK(gamma > 0.0);
      CHECK(gamma <= 1.0);
      CHECK(second_moment_radius(g.mixing_matrix(), delta, gamma / 0.7) < 1.0);
      CHECK(second_moment_radius(g.mixing_matrix(), delta, gamma / 0.4) > 1.0);
    }
  // The closed form on a ring of 9 (W_ii = 1/3, beta = 1 - lambda_min(W) = 4/3 - 2/3 (1 + cos(8 pi / 9))).
  const double beta = 1.0 - (1.0 / 3.0 + 2.0 / 3.0 * std::cos(8.0 * std::numbers::pi / 9.0));
  CHECK(topo::default_consensus_step(0.05, distopt::graph::ring(9)) == doctest::Approx(0.05 / (1.95 * 2.0 / 3.0)));
  CHECK(topo::default_consensus_step(1.0, distopt::graph::ring(9)) == doctest::Approx(1.0 / beta));
  CHECK(topo::default_consensus_step(1.0, distopt::graph::complete(8)) == doctest::Approx(1.0));
  CHECK_THROWS_AS(topo::default_consensus_step(0.0, distopt::graph::ring(9)), distopt::config_error);
}

TEST_CASE("CHOCO gossip with random-5% agrees at the default step and blows up at 2.6 times it (ring of 9)") {
  // The random sparsifier is the model the rule is derived for: its limit is ~2x the default.
  constexpr int n = 9, rounds = 2000;
  constexpr Eigen::Index d = 200;  // 10 of 200 entries per message
  const dc::random_k_biased c{0.05};
  const double gamma = topo::default_consensus_step(0.05, distopt::graph::ring(n));
  auto x0 = [](int r) { return gossip_test::seeded_normal(d, 3, static_cast<std::uint32_t>(r)); };
  const auto safe = gossip_test::run<gossip_sgd<dc::random_k_biased>>(n, rounds, x0, {.seed = 2}, zero_gradient, c);
  const double start = consensus_distance(stack(safe.at[0]));
  const double end = consensus_distance(stack(safe.at[rounds]));
  MESSAGE("default gamma " << gamma << ": consensus distance " << start << " -> " << end);
  CHECK(end < 1e-3 * start);
  const auto fast = gossip_test::run<gossip_sgd<dc::random_k_biased>>(n, rounds, x0, {.seed = 2}, zero_gradient, c,
                                                                      choco_ring(2.6 * gamma));
  const double blown = consensus_distance(stack(fast.at[rounds]));
  MESSAGE("gamma " << 2.6 * gamma << ": consensus distance " << start << " -> " << blown);
  CHECK(blown > 10.0 * start);
}

namespace {

// Heterogeneous least squares on a ring of 9 (each worker its own planted solution), top-5%.
constexpr int workers = 9;
constexpr Eigen::Index dim = 40;  // top-5% keeps 2 entries
const gossip_test::shards problem(workers, 60, dim, 21);
Eigen::VectorXf zero_start(int) { return Eigen::VectorXf::Zero(dim); }
void gradient(int r, const Eigen::VectorXf& x, Eigen::VectorXf& g) { problem.gradient(r, x, g); }

// max over workers of ||x_i - x*|| / ||x*||.
double worst_error(const std::vector<Eigen::VectorXf>& xs) {
  const Eigen::VectorXd opt = problem.optimum();
  return (stack(xs).rowwise() - opt.transpose()).rowwise().norm().maxCoeff() / opt.norm();
}

}  // namespace

TEST_CASE("CHOCO-SGD and DeepSqueeze with default options converge on heterogeneous least squares (ring 9, top-5%)") {
  constexpr int steps = 6000;
  constexpr float eta = 0.02f;
  const distopt::options o{.learning_rate = eta};
  const dc::top_k c{0.05};
  const double gamma = topo::default_consensus_step(0.05, distopt::graph::ring(workers));
  const MatrixXd w = distopt::graph::ring(workers).mixing_matrix();
  const MatrixXd id = MatrixXd::Identity(workers, workers);

  const auto exact = gossip_test::run<gossip_sgd<dc::identity, mixing::exact>>(workers, steps, zero_start, o, gradient);
  const auto choco = gossip_test::run<gossip_sgd<dc::top_k>>(workers, steps, zero_start, o, gradient, c);
  const auto squeeze = gossip_test::run<gossip_sgd<dc::error_feedback<dc::top_k>, mixing::deep_squeeze>>(
      workers, steps, zero_start, o, gradient, dc::error_feedback{c});
  // No communication: every worker ends at its own optimum H_i^-1 c_i.
  std::vector<Eigen::VectorXf> alone;
  for (int i = 0; i < workers; ++i)
    alone.push_back(
        problem.h[static_cast<std::size_t>(i)].ldlt().solve(problem.c[static_cast<std::size_t>(i)]).cast<float>());

  const double e_exact = worst_error(exact.at[steps]), e_choco = worst_error(choco.at[steps]);
  const double e_squeeze = worst_error(squeeze.at[steps]), e_alone = worst_error(alone);
  MESSAGE("default gamma " << gamma << "; worst worker's relative error: D-PSGD " << e_exact << ", CHOCO " << e_choco
                           << " (" << e_choco / e_exact << "x), DeepSqueeze " << e_squeeze << " ("
                           << e_squeeze / e_exact << "x), no communication " << e_alone << "; after finish(): D-PSGD "
                           << worst_error(exact.final) << ", CHOCO " << worst_error(choco.final) << ", DeepSqueeze "
                           << worst_error(squeeze.final));
  // CHOCO with a deterministic compressor stops where C(x - xh) = 0, i.e. xh = x, so at the
  // fixed point of D-PSGD with mixing matrix I - gamma (I - W) (closed form, double precision),
  // which is D-PSGD's with step eta / gamma: on data this heterogeneous its distance from the
  // optimum grows about as 1 / gamma.
  const MatrixXd fixed = problem.fixed_point(id - gamma * (id - w), eta, false);
  const Eigen::VectorXd opt = problem.optimum();
  const double e_fixed = (fixed.rowwise() - opt.transpose()).rowwise().norm().maxCoeff() / opt.norm();
  CHECK((stack(choco.at[steps]) - fixed).cwiseAbs().maxCoeff() < 1e-3 * opt.cwiseAbs().maxCoeff());
  CHECK(e_choco < e_alone);
  // DeepSqueeze, the same consensus step on error-compensated models: as accurate as CHOCO's
  // fixed point (within 1.5x), for every worker and for the average finish() returns.
  CHECK(e_squeeze < 1.5 * e_fixed);
  CHECK(worst_error(squeeze.final) < 1.5 * worst_error(choco.final));
  CHECK(worst_error(choco.final) < e_choco);
  // The old default, gamma = 1, diverges on the same run.
  CHECK_THROWS_AS(gossip_test::run<gossip_sgd<dc::top_k>>(workers, steps, zero_start, {.learning_rate = eta}, gradient,
                                                          c, choco_ring(1.0)),
                  distopt::numeric_error);
}

TEST_CASE("consensus step: an explicit value wins; compressors without a contraction need one") {
  constexpr int n = 3, steps = 20;
  const dc::top_k c{0.05};
  const double gamma = topo::default_consensus_step(0.05, distopt::graph::ring(n));
  auto x0 = [](int r) { return gossip_test::seeded_normal(dim, 5, static_cast<std::uint32_t>(r)); };
  const auto by_default = gossip_test::run<gossip_sgd<dc::top_k>>(n, steps, x0, {.learning_rate = 0.02f}, gradient, c);
  const auto same =
      gossip_test::run<gossip_sgd<dc::top_k>>(n, steps, x0, {.learning_rate = 0.02f}, gradient, c, choco_ring(gamma));
  const auto other =
      gossip_test::run<gossip_sgd<dc::top_k>>(n, steps, x0, {.learning_rate = 0.02f}, gradient, c, choco_ring(0.5));
  CHECK((stack(by_default.at[steps]) - stack(same.at[steps])).cwiseAbs().maxCoeff() == 0.0);
  CHECK((stack(by_default.at[steps]) - stack(other.at[steps])).cwiseAbs().maxCoeff() > 1e-3);
  // sign, and qsgd<2> (omega = min(40, sqrt(40)) = 6.3 >= 1 on 40 entries), guarantee no
  // contraction: refused with the fix in the message, unless a step is given.
  CHECK_THROWS_WITH_AS(gossip_test::run<gossip_sgd<dc::sign>>(n, 1, x0, {}, gradient),
                       doctest::Contains("set the scheme's consensus_step"), distopt::config_error);
  CHECK_THROWS_AS(gossip_test::run<gossip_sgd<dc::qsgd<2>>>(n, 1, x0, {}, gradient), distopt::config_error);
  CHECK_NOTHROW(gossip_test::run<gossip_sgd<dc::qsgd<2>>>(n, 1, x0, {}, gradient, {}, choco_ring(0.1)));
  CHECK_NOTHROW(gossip_test::run<gossip_sgd<dc::scaled<dc::qsgd<2>>>>(n, 1, x0, {}, gradient));
}
