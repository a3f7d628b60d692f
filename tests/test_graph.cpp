// ctest-labels: unit
// distopt::graph against closed forms: the spectra of the ring, torus, hypercube and
// complete graph's mixing matrices (derived below), Metropolis–Hastings weights worked
// out by hand, and the refusal of bad graphs.
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <numbers>
#include <set>
#include <utility>
#include <vector>

#include <distopt/graph.hpp>
#include <distopt/topology.hpp>

namespace {

using distopt::graph;

constexpr double pi = std::numbers::pi;

Eigen::VectorXd sorted_decreasing(std::vector<double> v) {
  std::sort(v.begin(), v.end(), std::greater<>());
  return Eigen::Map<Eigen::VectorXd>(v.data(), static_cast<Eigen::Index>(v.size()));
}

// Symmetric, non-negative, rows (hence columns) sum to 1, and W_ij > 0 exactly on edges.
void check_mixing_matrix(const graph& g) {
  const auto& w = g.mixing_matrix();
  const int n = g.size();
  CHECK((w - w.transpose()).cwiseAbs().maxCoeff() == 0.0);
  CHECK(w.minCoeff() >= 0.0);
  for (int i = 0; i < n; ++i) {
    CHECK(std::abs(w.row(i).sum() - 1.0) < 1e-12);
    const auto nb = g.neighbours(i);
    for (int j = 0; j < n; ++j)
      if (j != i) CHECK((w(i, j) > 0.0) == std::binary_search(nb.begin(), nb.end(), j));
  }
}

}  // namespace

TEST_CASE("graph: ring eigenvalues are 1/3 + 2/3 cos(2 pi k / n)") {
  // W = (I + S + S^T)/3 with S the cyclic shift, whose eigenvalues are the n-th roots of
  // unity e^{2 pi i k/n}; so lambda_k = 1/3 + (2/3) cos(2 pi k / n).
  for (int n : {3, 4, 5, 8, 9, 16}) {
    CAPTURE(n);
    const auto g = graph::ring(n);
    check_mixing_matrix(g);
    for (int i = 0; i < n; ++i) {
      CHECK(g.degree(i) == 2);
      CHECK(g.weight(i, (i + 1) % n) == doctest::Approx(1.0 / 3.0));
      CHECK(g.weight(i, i) == doctest::Approx(1.0 / 3.0));
    }
    std::vector<double> expected;
    for (int k = 0; k < n; ++k) expected.push_back(1.0 / 3.0 + 2.0 / 3.0 * std::cos(2 * pi * k / n));
    CHECK((g.eigenvalues() - sorted_decreasing(expected)).cwiseAbs().maxCoeff() < 1e-12);
    // gap = 1 - max(|lambda_1|, |lambda_min|) over k != 0
    double rho = 0.0;
    for (int k = 1; k < n; ++k) rho = std::max(rho, std::abs(1.0 / 3.0 + 2.0 / 3.0 * std::cos(2 * pi * k / n)));
    CHECK(g.spectral_gap() == doctest::Approx(1.0 - rho).epsilon(1e-12));
  }
  // n = 2: W = [[1/2, 1/2], [1/2, 1/2]], eigenvalues 1 and 0; n = 1: W = [1].
  const auto two = graph::ring(2);
  CHECK(two.weight(0, 1) == 0.5);
  CHECK(two.spectral_gap() == doctest::Approx(1.0));
  CHECK(graph::ring(1).mixing_matrix()(0, 0) == 1.0);
  CHECK(graph::ring(1).spectral_gap() == 1.0);
}

TEST_CASE("detail::symmetric_eigenvalues matches Eigen's SelfAdjointEigenSolver") {
  // The library's own tridiagonal QL (kept out of graph.hpp's compile cost) against Eigen's
  // solver on random symmetric matrices, a diagonal one, repeated eigenvalues and n = 1, 2.
  distopt::rng r(11, 0, 0, distopt::purpose::sampling);
  for (int n : {1, 2, 3, 7, 16, 33, 64}) {
    for (int trial = 0; trial < 3; ++trial) {
      CAPTURE(n);
      CAPTURE(trial);
      Eigen::MatrixXd a(n, n);
      for (int i = 0; i < n; ++i)
        for (int j = 0; j <= i; ++j) a(i, j) = a(j, i) = trial == 2 && i != j ? 0.0 : 2.0 * r.uniform() - 1.0;
      if (trial == 1 && n > 2) a.topLeftCorner(2, 2) = Eigen::Matrix2d::Identity();  // a repeated pair
      std::vector<double> flat(static_cast<std::size_t>(n * n));
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) flat[static_cast<std::size_t>(i * n + j)] = a(i, j);
      const auto mine = distopt::detail::symmetric_eigenvalues(flat, static_cast<std::size_t>(n));
      const Eigen::VectorXd ref =
          Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(a, Eigen::EigenvaluesOnly).eigenvalues();
      REQUIRE(mine.size() == static_cast<std::size_t>(n));
      for (int k = 0; k < n; ++k)
        CHECK(mine[static_cast<std::size_t>(k)] == doctest::Approx(ref(k)).epsilon(1e-11).scale(1.0));
    }
  }
}

TEST_CASE("graph: hypercube spectrum and gap 2/(dim + 1)") {
  // W = (I + A)/(d + 1). A is the sum of d commuting involutions (flip bit k), so its
  // eigenvalues are sum_k (+-1) = d - 2m with multiplicity C(d, m). Hence
  // lambda = (d + 1 - 2m)/(d + 1); lambda_2 = (d - 1)/(d + 1) and lambda_min = (1 - d)/(d + 1),
  // both of modulus (d - 1)/(d + 1): gap = 2/(d + 1).
  for (int d = 1; d <= 6; ++d) {
    CAPTURE(d);
    const auto g = graph::hypercube(d);
    check_mixing_matrix(g);
    std::vector<double> expected;
    for (int m = 0; m <= d; ++m) {
      double binom = 1;
      for (int k = 1; k <= m; ++k) binom = binom * (d - m + k) / k;
      for (int c = 0; c < static_cast<int>(std::lround(binom)); ++c) expected.push_back((d + 1.0 - 2 * m) / (d + 1.0));
    }
    CHECK((g.eigenvalues() - sorted_decreasing(expected)).cwiseAbs().maxCoeff() < 1e-12);
    CHECK(g.spectral_gap() == doctest::Approx(2.0 / (d + 1)).epsilon(1e-12));
  }
}

TEST_CASE("graph: complete graph has W = 1/n and gap 1") {
  // W = 11^T/n is the projection on the constants: eigenvalues 1 (once) and 0.
  for (int n : {1, 2, 3, 8, 9}) {
    const auto g = graph::complete(n);
    check_mixing_matrix(g);
    CHECK((g.mixing_matrix().array() - 1.0 / n).abs().maxCoeff() < 1e-15);
    CHECK(g.spectral_gap() == doctest::Approx(1.0));
  }
}

TEST_CASE("graph: torus W = (A + I)/5 with eigenvalues (1 + 2cos(2 pi a/r) + 2cos(2 pi b/c))/5") {
  // A is the Kronecker sum of two cycles, whose eigenvalues add.
  for (auto [r, c] : {std::pair{3, 3}, std::pair{3, 4}, std::pair{4, 5}}) {
    const auto g = graph::torus(r, c);
    check_mixing_matrix(g);
    CHECK(g.weight(0, 1) == doctest::Approx(0.2));
    std::vector<double> expected;
    for (int a = 0; a < r; ++a)
      for (int b = 0; b < c; ++b)
        expected.push_back((1 + 2 * std::cos(2 * pi * a / r) + 2 * std::cos(2 * pi * b / c)) / 5);
    CHECK((g.eigenvalues() - sorted_decreasing(expected)).cwiseAbs().maxCoeff() < 1e-12);
  }
  // topology::torus picks the most square grid: 9 -> 3 x 3, 8 -> 2 x 4, 7 -> 1 x 7 (a ring).
  CHECK(distopt::topology::torus{}.rows_for(9) == 3);
  CHECK(distopt::topology::torus{}.rows_for(8) == 2);
  CHECK(distopt::topology::torus{}.make_graph(7).degree(0) == 2);
  CHECK_THROWS_WITH_AS(distopt::topology::torus{.rows = 4}.make_graph(9), doctest::Contains("does not divide"),
                       distopt::config_error);
}

TEST_CASE("graph: Metropolis-Hastings weights of a path and a star, worked by hand") {
  // Path 0-1-2-3, degrees 1,2,2,1: every edge has max degree 2, so W_ij = 1/3;
  // W_00 = 1 - 1/3 = 2/3, W_11 = 1 - 2/3 = 1/3.
  const auto path = graph::from_edges(4, {{0, 1}, {2, 1}, {2, 3}, {1, 0}});  // a duplicate edge counts once
  check_mixing_matrix(path);
  CHECK(path.weight(0, 1) == doctest::Approx(1.0 / 3));
  CHECK(path.weight(0, 0) == doctest::Approx(2.0 / 3));
  CHECK(path.weight(1, 1) == doctest::Approx(1.0 / 3));
  CHECK(path.weight(0, 2) == 0.0);
  // Star with centre 0 and 4 leaves: W_0j = 1/5, W_00 = 1/5, W_jj = 4/5.
  const auto star = graph::from_edges(5, {{0, 1}, {0, 2}, {0, 3}, {0, 4}});
  check_mixing_matrix(star);
  CHECK(star.weight(0, 3) == doctest::Approx(0.2));
  CHECK(star.weight(0, 0) == doctest::Approx(0.2));
  CHECK(star.weight(3, 3) == doctest::Approx(0.8));
}

TEST_CASE("graph: exponential and random regular graphs") {
  // n = 8: 0 ~ 0 +- 1, 2, 4 = {1, 2, 4, 6, 7}, five neighbours, uniform weights 1/6.
  const auto e = graph::exponential(8);
  check_mixing_matrix(e);
  const auto nb = e.neighbours(0);
  CHECK(std::vector<int>(nb.begin(), nb.end()) == std::vector<int>{1, 2, 4, 6, 7});
  CHECK(e.weight(0, 4) == doctest::Approx(1.0 / 6));
  for (auto [n, r] : {std::pair{8, 3}, std::pair{16, 4}, std::pair{9, 2}}) {
    const auto g = graph::random_regular(n, r, 5);
    check_mixing_matrix(g);
    for (int i = 0; i < n; ++i) CHECK(g.degree(i) == r);
    CHECK(g.spectral_gap() > 0.0);                                               // connected
    CHECK(g.mixing_matrix() == graph::random_regular(n, r, 5).mixing_matrix());  // a function of the seed
  }
  CHECK_THROWS_AS(graph::random_regular(5, 3, 1), distopt::config_error);  // r * n odd
}

TEST_CASE("graph: bad input is refused with a config_error that says what is wrong") {
  using distopt::config_error;
  CHECK_THROWS_WITH_AS(graph::from_edges(4, {{0, 1}, {2, 3}}), doctest::Contains("not connected"), config_error);
  CHECK_THROWS_WITH_AS(graph::from_edges(3, {{0, 1}, {1, 3}}), doctest::Contains("outside [0, 3)"), config_error);
  CHECK_THROWS_WITH_AS(graph::from_edges(3, {{0, 1}, {-1, 2}}), doctest::Contains("outside"), config_error);
  CHECK_THROWS_WITH_AS(graph::from_edges(2, {{0, 0}, {1, 1}}), doctest::Contains("self-loop"), config_error);
  CHECK_THROWS_WITH_AS(graph::from_edges(0, {}), doctest::Contains(">= 1"), config_error);
  // Self-loops only, as weights: W = I is doubly stochastic but every rank is alone.
  CHECK_THROWS_WITH_AS(graph::from_weights(Eigen::MatrixXd::Identity(3, 3)), doctest::Contains("not connected"),
                       config_error);
  Eigen::MatrixXd rows_short(2, 2);
  rows_short << 0.5, 0.4, 0.4, 0.5;
  CHECK_THROWS_WITH_AS(graph::from_weights(rows_short), doctest::Contains("doubly stochastic"), config_error);
  Eigen::MatrixXd asymmetric(2, 2);
  asymmetric << 0.5, 0.5, 0.25, 0.75;
  CHECK_THROWS_WITH_AS(graph::from_weights(asymmetric), doctest::Contains("not symmetric"), config_error);
  Eigen::MatrixXd negative(2, 2);
  negative << 1.5, -0.5, -0.5, 1.5;
  CHECK_THROWS_WITH_AS(graph::from_weights(negative), doctest::Contains(">= 0"), config_error);
  CHECK_THROWS_WITH_AS(graph::from_weights(Eigen::MatrixXd::Constant(2, 3, 0.5)), doctest::Contains("square"),
                       config_error);
  // Good weights are kept as given.
  Eigen::MatrixXd lazy(2, 2);
  lazy << 0.75, 0.25, 0.25, 0.75;
  CHECK(graph::from_weights(lazy).spectral_gap() == doctest::Approx(0.5));  // eigenvalues 1, 0.5
  // A custom topology must match the world size.
  const distopt::topology::custom three{graph::ring(3)};
  CHECK_THROWS_WITH_AS(three.validate(4), doctest::Contains("3 nodes but the world has 4"), config_error);
  CHECK_THROWS_WITH_AS(distopt::topology::hypercube{}.validate(6), doctest::Contains("power of two"), config_error);
}
