// ctest-labels: numeric
// The compressed gossip schemes with a lossy compressor, step for step against serial
// recursions written here from the papers' update rules (topology/gossip.hpp lists them),
// on least squares split across 9 heterogeneous workers on a ring. With compress::identity
// every scheme collapses to D-PSGD (test_gossip_convergence.cpp), so only a lossy C shows
// which vector each scheme compresses and what it keeps: top-k (deterministic; the reference
// picks the k largest magnitudes itself) for CHOCO, DCD and DeepSqueeze, and the
// deterministic grid rounding for ECD, whose extrapolated z grows with t.
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include <distopt/distopt.hpp>

#include "test_gossip_harness.hpp"

namespace {

using Eigen::Index;
using Eigen::MatrixXd;
using gossip_test::stack;
namespace dc = distopt::compress;
namespace topo = distopt::topology;
namespace mixing = distopt::mixing;

template <class S, class C>
using ring_sgd = distopt::optimizer<C, topo::gossip<topo::ring, S>, distopt::staleness::synchronous,
                                    distopt::local_steps::every_step>;

constexpr int n = 9;
constexpr Index dim = 5;
constexpr int steps = 30;
constexpr double eta = 0.1, consensus = 0.3;
constexpr std::size_t kept = 2;    // top_k{0.4} on 5 entries
constexpr float grid = 0x1.0p-6f;  // rounding's step for ECD
const gossip_test::shards problem(n, 20, dim, 7);
const MatrixXd w = distopt::graph::ring(n).mixing_matrix();

Eigen::VectorXf start(int rank) { return gossip_test::seeded_normal(dim, 5, static_cast<std::uint32_t>(rank)); }
void gradient(int r, const Eigen::VectorXf& x, Eigen::VectorXf& g) { problem.gradient(r, x, g); }

// The k largest magnitudes of each row kept, the rest zeroed (ties to the lower index).
MatrixXd top_rows(const MatrixXd& v) {
  MatrixXd out = MatrixXd::Zero(v.rows(), v.cols());
  for (Index i = 0; i < v.rows(); ++i) {
    std::vector<Index> order(static_cast<std::size_t>(v.cols()));
    std::iota(order.begin(), order.end(), Index{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](Index a, Index b) { return std::abs(v(i, a)) > std::abs(v(i, b)); });
    for (std::size_t r = 0; r < kept; ++r) out(i, order[r]) = v(i, order[r]);
  }
  return out;
}
// Every entry to the nearest multiple of the grid, ties to even.
MatrixXd round_to_grid(const MatrixXd& v) {
  return v.unaryExpr([](double e) { return grid * std::nearbyint(e / grid); });
}

MatrixXd gradients(const MatrixXd& x) {
  MatrixXd g(x.rows(), x.cols());
  for (Index i = 0; i < x.rows(); ++i)
    g.row(i) = (problem.h[static_cast<std::size_t>(i)] * x.row(i).transpose() - problem.c[static_cast<std::size_t>(i)])
                   .transpose();
  return g;
}

// Compares the distributed run with the serial one after every step (relative max norm).
template <class S, class C>
void check(const char* name, C c, topo::gossip<topo::ring, S> ring, const std::vector<MatrixXd>& serial) {
  CAPTURE(std::string(name));
  const auto tr =
      gossip_test::run<ring_sgd<S, C>>(n, steps, start, {.learning_rate = static_cast<float>(eta)}, gradient, c, ring);
  double worst = 0.0;
  for (int s = 1; s <= steps; ++s) {
    const MatrixXd& ref = serial[static_cast<std::size_t>(s)];
    worst = std::max(worst, (stack(tr.at[static_cast<std::size_t>(s)]) - ref).cwiseAbs().maxCoeff() /
                                (1.0 + ref.cwiseAbs().maxCoeff()));
  }
  MESSAGE(name << ": largest gap to the serial recursion " << worst);
  CHECK(worst < 1e-4);
}

}  // namespace

TEST_CASE("CHOCO, DCD, ECD and DeepSqueeze with a lossy compressor follow their serial recursions (ring of 9)") {
  std::vector<Eigen::VectorXf> x0;
  for (int r = 0; r < n; ++r) x0.push_back(start(r));
  const MatrixXd start_models = stack(x0);
  auto serial = [&](auto step) {
    std::vector<MatrixXd> path{start_models};
    MatrixXd x = start_models;
    for (int t = 0; t < steps; ++t) {
      step(x, t);
      path.push_back(x);
    }
    return path;
  };

  // CHOCO-SGD: x <- x - eta g; x <- x + gamma (W Xh - Xh); Xh <- Xh + C(X - Xh); Xh starts at 0.
  MatrixXd xh = MatrixXd::Zero(n, dim);
  const auto choco = serial([&](MatrixXd& x, int) {
    x = x - eta * gradients(x) + consensus * (w * xh - xh);
    xh += top_rows(x - xh);
  });
  check<mixing::choco>("CHOCO top-k", dc::top_k{0.4}, {{}, {.consensus_step = static_cast<float>(consensus)}}, choco);

  // DCD-PSGD: the replicas are exact (Xh = X); X <- X + Q(W X - eta g - X).
  const auto dcd = serial([&](MatrixXd& x, int) { x += top_rows(w * x - eta * gradients(x) - x); });
  check<mixing::dcd>("DCD top-k", dc::top_k{0.4}, {}, dcd);

  // ECD-PSGD: x_half = W Xh - eta g(x); z = (1 - (t+1)/2) x + (t+1)/2 x_half; x <- x_half;
  // Xh <- (1 - 2/(t+1)) Xh + 2/(t+1) Q(z); Xh starts at x0.
  xh = start_models;
  const auto ecd = serial([&](MatrixXd& x, int t) {
    const double t1 = t + 1;
    const MatrixXd half = w * xh - eta * gradients(x);
    const MatrixXd z = (1.0 - t1 / 2.0) * x + (t1 / 2.0) * half;
    x = half;
    xh = (1.0 - 2.0 / t1) * xh + (2.0 / t1) * round_to_grid(z);
  });
  check<mixing::ecd>("ECD rounding", dc::rounding{grid, 0}, {}, ecd);

  // DeepSqueeze: x <- x - eta g; c = C(x + e), e <- x + e - c; Xh <- c; x <- x + gamma (W Xh - Xh).
  MatrixXd e = MatrixXd::Zero(n, dim);
  const auto squeeze = serial([&](MatrixXd& x, int) {
    x -= eta * gradients(x);
    const MatrixXd sent = top_rows(x + e);
    e = x + e - sent;
    x += consensus * (w * sent - sent);
  });
  check<mixing::deep_squeeze>("DeepSqueeze EF top-k", dc::error_feedback{dc::top_k{0.4}},
                              {{}, {.consensus_step = static_cast<float>(consensus)}}, squeeze);
}
