// Tests of the problems (least squares, logistic regression), the synthetic data
// generators and the data partitioning. Every gradient is checked against central
// finite differences of the loss formula evaluated in double precision, written
// here independently of the library.
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <Eigen/QR>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <distopt/core/errors.hpp>
#include <distopt/core/rng.hpp>
#include <distopt/data/partition.hpp>
#include <distopt/problems.hpp>

namespace {

using distopt::config_error;
using Eigen::Index;

// Unit roundoff of binary32.
constexpr double u32 = 0x1.0p-24;

bool same_bits(const Eigen::MatrixXf& a, const Eigen::MatrixXf& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}

Eigen::VectorXf seeded_normal(Index n, std::uint64_t seed, float scale) {
  distopt::rng g(seed, 0, 0, distopt::purpose::user);
  Eigen::VectorXf v(n);
  for (Index i = 0; i < n; ++i) v(i) = scale * g.normal();
  return v;
}

std::vector<std::size_t> all_rows(std::size_t m) {
  std::vector<std::size_t> rows(m);
  for (std::size_t i = 0; i < m; ++i) rows[i] = i;
  return rows;
}

// ---- independent double-precision losses ------------------------------------

// f_B(x) = 1/(2|B|) sum_{i in B} (a_i . x - b_i)^2
double ls_loss(const Eigen::MatrixXd& a, const Eigen::VectorXd& b, const std::vector<std::size_t>& batch,
               const Eigen::VectorXd& x) {
  double s = 0.0;
  for (std::size_t i : batch) {
    const double r = a.row(static_cast<Index>(i)).dot(x) - b(static_cast<Index>(i));
    s += r * r;
  }
  return 0.5 * s / static_cast<double>(batch.size());
}

// log(1 + e^z), without overflow.
double softplus(double z) { return std::max(z, 0.0) + std::log1p(std::exp(-std::abs(z))); }

// f_B(x) = 1/|B| sum_{i in B} log(1 + exp(-y_i a_i . x)) + lambda/2 ||x||^2
double logistic_loss(const Eigen::MatrixXd& a, const Eigen::VectorXd& y, double lambda,
                     const std::vector<std::size_t>& batch, const Eigen::VectorXd& x) {
  double s = 0.0;
  for (std::size_t i : batch) s += softplus(-y(static_cast<Index>(i)) * a.row(static_cast<Index>(i)).dot(x));
  return s / static_cast<double>(batch.size()) + 0.5 * lambda * x.squaredNorm();
}

// Central differences (f(x + h e_j) - f(x - h e_j)) / 2h in double. Truncation error
// h^2/6 |f'''| and rounding error ~ 1e-16 |f| / h are both below 1e-10 here.
template <class F>
Eigen::VectorXd central_differences(F&& f, const Eigen::VectorXd& x, double h) {
  Eigen::VectorXd g(x.size());
  for (Index j = 0; j < x.size(); ++j) {
    Eigen::VectorXd xp = x, xm = x;
    xp(j) += h;
    xm(j) -= h;
    g(j) = (f(xp) - f(xm)) / (2.0 * h);
  }
  return g;
}

// Compares a float gradient with a double reference component by component. The
// tolerance is the first-order forward error bound of a float computation that sums
// `terms` products, terms * u * scale_j (u = 2^-24, scale_j = the sum of the absolute
// values of the products that make up component j), plus 1e-9 for the finite
// differences. Returns the worst ratio |g - ref| / tol (must be <= 1).
double worst_ratio(const Eigen::VectorXf& g, const Eigen::VectorXd& ref, const Eigen::VectorXd& scale, double terms) {
  REQUIRE(g.size() == ref.size());
  double worst = 0.0;
  for (Index j = 0; j < g.size(); ++j) {
    const double tol = terms * u32 * scale(j) + 1e-9;
    worst = std::max(worst, std::abs(static_cast<double>(g(j)) - ref(j)) / tol);
  }
  return worst;
}

// scale_j = 1/|B| sum_i |a_ij| (sum_k |a_ik x_k| + |b_i|): bounds the terms of the LS gradient.
Eigen::VectorXd ls_scale(const Eigen::MatrixXd& a, const Eigen::VectorXd& b, const std::vector<std::size_t>& batch,
                         const Eigen::VectorXd& x) {
  Eigen::VectorXd s = Eigen::VectorXd::Zero(a.cols());
  for (std::size_t k : batch) {
    const auto i = static_cast<Index>(k);
    const double r = (a.row(i).cwiseAbs().transpose().cwiseProduct(x.cwiseAbs())).sum() + std::abs(b(i));
    s += r * a.row(i).cwiseAbs().transpose();
  }
  return s / static_cast<double>(batch.size());
}

// scale_j = 1/|B| sum_i |a_ij| (|w_i| + 1/4 sum_k |a_ik x_k|) + lambda |x_j|: bounds the
// terms of the logistic gradient (w_i = -y_i sigma(-z_i), and sigma' <= 1/4 propagates
// the rounding error of the margin z_i).
Eigen::VectorXd logistic_scale(const Eigen::MatrixXd& a, const Eigen::VectorXd& y, double lambda,
                               const std::vector<std::size_t>& batch, const Eigen::VectorXd& x) {
  Eigen::VectorXd s = Eigen::VectorXd::Zero(a.cols());
  for (std::size_t k : batch) {
    const auto i = static_cast<Index>(k);
    const double z = y(i) * a.row(i).dot(x);
    const double w = 1.0 / (1.0 + std::exp(z));  // |w_i| = sigma(-z_i)
    const double spread = (a.row(i).cwiseAbs().transpose().cwiseProduct(x.cwiseAbs())).sum();
    s += (w + 0.25 * spread) * a.row(i).cwiseAbs().transpose();
  }
  return s / static_cast<double>(batch.size()) + lambda * x.cwiseAbs();
}

}  // namespace

// ---- least squares --------------------------------------------------------------

TEST_CASE("least_squares: full-batch and mini-batch gradients match double-precision finite differences") {
  const auto d = distopt::problems::synthetic_regression(240, 8, 0.3f, 21);
  const distopt::problems::least_squares p(d.features, d.targets);
  const Eigen::MatrixXd a = d.features.cast<double>();
  const Eigen::VectorXd b = d.targets.cast<double>();
  const Index dim = a.cols();

  const std::vector<std::vector<std::size_t>> batches = {
      all_rows(240), {7}, {3, 200, 17, 99, 150, 4, 61}, {239, 0, 120, 120}};  // the last one repeats a row
  for (std::uint64_t xseed : {1u, 2u, 3u}) {
    const Eigen::VectorXf xf = seeded_normal(dim, 100 + xseed, 1.0f);
    const Eigen::VectorXd x = xf.cast<double>();
    for (const auto& batch : batches) {
      CAPTURE(xseed);
      CAPTURE(batch.size());
      const Eigen::VectorXd fd =
          central_differences([&](const Eigen::VectorXd& z) { return ls_loss(a, b, batch, z); }, x, 1e-4);
      const Eigen::VectorXd scale = ls_scale(a, b, batch, x);
      const double terms = static_cast<double>(dim) + static_cast<double>(batch.size()) + 4.0;

      Eigen::VectorXf g;
      p.gradient(xf, batch, g);
      CHECK(g.size() == dim);
      CHECK(worst_ratio(g, fd, scale, terms) <= 1.0);

      if (batch.size() == 240) {  // the full-batch overload computes the same mean
        Eigen::VectorXf full;
        p.gradient(xf, full);
        CHECK(worst_ratio(full, fd, scale, terms) <= 1.0);
        // loss() evaluates A x in float: relative error of order (dim + 2) u times the scale.
        CHECK(std::abs(p.loss(xf) - ls_loss(a, b, batch, x)) <= 1e-5 * ls_loss(a, b, batch, x));
      }
    }
  }
}

TEST_CASE("least_squares: refuses mismatched or empty data") {
  CHECK_THROWS_AS(distopt::problems::least_squares(Eigen::MatrixXf::Ones(4, 2), Eigen::VectorXf::Ones(3)),
                  config_error);
  CHECK_THROWS_AS(distopt::problems::least_squares(Eigen::MatrixXf(0, 2), Eigen::VectorXf(0)), config_error);
  CHECK_THROWS_AS(distopt::problems::least_squares(Eigen::MatrixXf(3, 0), Eigen::VectorXf::Ones(3)), config_error);
}

// ---- logistic regression ---------------------------------------------------------

TEST_CASE("logistic_regression: full-batch and mini-batch gradients match double-precision finite differences") {
  const auto d = distopt::problems::synthetic_classification(240, 6, 33);
  const float lambda = 0.05f;
  const distopt::problems::logistic_regression p(d.features, d.targets, lambda);
  const Eigen::MatrixXd a = d.features.cast<double>();
  const Eigen::VectorXd y = d.targets.cast<double>();
  const double lam = static_cast<double>(lambda);
  const Index dim = a.cols();

  const std::vector<std::vector<std::size_t>> batches = {all_rows(240), {5}, {8, 77, 230, 1, 140, 66, 12, 9}};
  // Small weights (margins of order 1) and large ones (margins of tens, where a naive
  // sigmoid or log(1 + exp) overflows).
  for (float magnitude : {0.5f, 30.0f}) {
    const Eigen::VectorXf xf = seeded_normal(dim, 7, magnitude);
    const Eigen::VectorXd x = xf.cast<double>();
    for (const auto& batch : batches) {
      CAPTURE(magnitude);
      CAPTURE(batch.size());
      const Eigen::VectorXd fd = central_differences(
          [&](const Eigen::VectorXd& z) { return logistic_loss(a, y, lam, batch, z); }, x, 1e-5 * magnitude);
      const Eigen::VectorXd scale = logistic_scale(a, y, lam, batch, x);
      // sum of |B| products + dot products of length dim + a few roundings in exp and the division
      const double terms = static_cast<double>(dim) + static_cast<double>(batch.size()) + 8.0;

      Eigen::VectorXf g;
      p.gradient(xf, batch, g);
      REQUIRE(g.allFinite());
      CHECK(worst_ratio(g, fd, scale, terms) <= 1.0);

      if (batch.size() == 240) {
        Eigen::VectorXf full;
        p.gradient(xf, full);
        REQUIRE(full.allFinite());
        CHECK(worst_ratio(full, fd, scale, terms) <= 1.0);
        const double ref = logistic_loss(a, y, lam, batch, x);
        CHECK(std::isfinite(p.loss(xf)));
        CHECK(std::abs(p.loss(xf) - ref) <= 1e-5 * ref);
      }
    }
  }
}

TEST_CASE("logistic_regression: refuses bad labels, lambda and shapes") {
  const Eigen::MatrixXf a = Eigen::MatrixXf::Ones(3, 2);
  Eigen::VectorXf y(3);
  y << 1.0f, -1.0f, 1.0f;
  CHECK_NOTHROW(distopt::problems::logistic_regression(a, y, 0.0f));
  CHECK_THROWS_AS(distopt::problems::logistic_regression(a, Eigen::VectorXf::Ones(2), 0.1f), config_error);
  CHECK_THROWS_AS(distopt::problems::logistic_regression(Eigen::MatrixXf(0, 2), Eigen::VectorXf(0), 0.1f),
                  config_error);
  CHECK_THROWS_AS(distopt::problems::logistic_regression(a, y, -0.1f), config_error);
  CHECK_THROWS_AS(distopt::problems::logistic_regression(a, y, std::numeric_limits<float>::quiet_NaN()), config_error);
  CHECK_THROWS_AS(distopt::problems::logistic_regression(a, y, std::numeric_limits<float>::infinity()), config_error);
  for (float bad : {0.0f, 2.0f, 0.5f}) {
    Eigen::VectorXf z = y;
    z(1) = bad;
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(distopt::problems::logistic_regression(a, z, 0.1f), doctest::Contains("label 1"),
                         config_error);
  }
}

// ---- synthetic data --------------------------------------------------------------

TEST_CASE("synthetic generators: a pure function of the seed, different across seeds") {
  const auto r1 = distopt::problems::synthetic_regression(50, 4, 0.1f, 9);
  const auto r2 = distopt::problems::synthetic_regression(50, 4, 0.1f, 9);
  const auto r3 = distopt::problems::synthetic_regression(50, 4, 0.1f, 10);
  CHECK(r1.features.rows() == 50);
  CHECK(r1.features.cols() == 4);
  CHECK(r1.targets.size() == 50);
  CHECK(same_bits(r1.features, r2.features));
  CHECK(same_bits(r1.targets, r2.targets));
  // Independent streams: essentially no entry coincides.
  CHECK((r1.features.array() == r3.features.array()).count() < 5);
  CHECK((r1.targets.array() == r3.targets.array()).count() < 5);

  const auto c1 = distopt::problems::synthetic_classification(50, 4, 9);
  const auto c2 = distopt::problems::synthetic_classification(50, 4, 9);
  const auto c3 = distopt::problems::synthetic_classification(50, 4, 10);
  CHECK(same_bits(c1.features, c2.features));
  CHECK(same_bits(c1.targets, c2.targets));
  CHECK((c1.features.array() == c3.features.array()).count() < 5);
  CHECK(!same_bits(c1.targets, c3.targets));
}

TEST_CASE("synthetic generators: the documented distributions") {
  // Regression with noise 0: b = A x* exactly (up to float rounding), so the double
  // least-squares solution leaves no residual; with noise sigma, the residual RMS is
  // sigma sqrt((m - d) / m) with relative standard deviation ~ 1/sqrt(2(m - d)) = 1.6%;
  // the bound of 10% is 6 standard deviations.
  {
    const auto d = distopt::problems::synthetic_regression(400, 5, 0.0f, 3);
    const Eigen::MatrixXd a = d.features.cast<double>();
    const Eigen::VectorXd b = d.targets.cast<double>();
    const Eigen::VectorXd x = a.colPivHouseholderQr().solve(b);
    CHECK((a * x - b).norm() <= 1e-6 * b.norm());
  }
  {
    const Index m = 2000, dim = 5;
    const float sigma = 0.5f;
    const auto d = distopt::problems::synthetic_regression(m, dim, sigma, 4);
    const Eigen::MatrixXd a = d.features.cast<double>();
    const Eigen::VectorXd b = d.targets.cast<double>();
    const Eigen::VectorXd x = a.colPivHouseholderQr().solve(b);
    const double rms = (a * x - b).norm() / std::sqrt(static_cast<double>(m));
    const double expected = sigma * std::sqrt(static_cast<double>(m - dim) / static_cast<double>(m));
    CHECK(std::abs(rms - expected) <= 0.1 * expected);
    // Rows ~ N(0, I): entry mean within 0.1 (std error 1/sqrt(10000) = 0.01) and
    // variance within 0.1 of 1 (std error sqrt(2/10000) = 0.014).
    const double mean = a.mean();
    const double var = (a.array() - mean).square().mean();
    CHECK(std::abs(mean) <= 0.1);
    CHECK(std::abs(var - 1.0) <= 0.1);
  }
  {
    // Classification: labels are exactly +-1, about half each (binomial, std 1/sqrt(4000) of the
    // fraction: 0.45..0.55 is > 6 std), and the class means differ (0.5 y mu, ||mu|| ~ 1).
    const Index m = 4000, dim = 6;
    const auto d = distopt::problems::synthetic_classification(m, dim, 5);
    Index positives = 0;
    for (Index i = 0; i < m; ++i) {
      REQUIRE((d.targets(i) == 1.0f || d.targets(i) == -1.0f));
      if (d.targets(i) > 0) ++positives;
    }
    const double frac = static_cast<double>(positives) / static_cast<double>(m);
    CHECK(frac > 0.45);
    CHECK(frac < 0.55);
    Eigen::VectorXd pos = Eigen::VectorXd::Zero(dim), neg = Eigen::VectorXd::Zero(dim);
    for (Index i = 0; i < m; ++i) (d.targets(i) > 0 ? pos : neg) += d.features.row(i).transpose().cast<double>();
    pos /= static_cast<double>(positives);
    neg /= static_cast<double>(m - positives);
    // pos - neg estimates mu; its sampling error per coordinate is ~ sqrt(4/m) = 0.03.
    CHECK((pos + neg).norm() <= 0.25);  // the midpoint is the origin
    CHECK((pos - neg).norm() >= 0.25);  // the classes are separated (||mu|| ~ 1 in expectation)
  }
}

// ---- partitioning ------------------------------------------------------------------

TEST_CASE("iid_shard: the shards partition 0..m-1 with sizes differing by at most one") {
  const std::vector<std::pair<std::size_t, int>> cases = {{0, 1},  {1, 1},   {1, 3},   {5, 8},    {10, 3},
                                                          {24, 4}, {100, 7}, {240, 8}, {1001, 6}, {97, 97}};
  for (auto [m, workers] : cases) {
    CAPTURE(m);
    CAPTURE(workers);
    std::vector<int> owner(m, -1);
    std::size_t smallest = m + 1, largest = 0;
    for (int r = 0; r < workers; ++r) {
      const auto shard = distopt::data::iid_shard(m, r, workers, 42);
      smallest = std::min(smallest, shard.size());
      largest = std::max(largest, shard.size());
      for (std::size_t i : shard) {
        REQUIRE(i < m);
        CHECK(owner[i] == -1);  // disjoint
        owner[i] = r;
      }
      CHECK(shard == distopt::data::iid_shard(m, r, workers, 42));  // every worker computes the same cut
    }
    CHECK(std::count(owner.begin(), owner.end(), -1) == 0);  // the union is everything
    CHECK(largest - smallest <= 1);
  }
  // The seed matters: another seed gives another shuffle.
  CHECK(distopt::data::iid_shard(100, 0, 2, 1) != distopt::data::iid_shard(100, 0, 2, 2));
}

TEST_CASE("iid_shard: refuses a rank outside 0..workers-1") {
  CHECK_THROWS_AS(distopt::data::iid_shard(10, 0, 0, 1), config_error);
  CHECK_THROWS_AS(distopt::data::iid_shard(10, -1, 2, 1), config_error);
  CHECK_THROWS_AS(distopt::data::iid_shard(10, 2, 2, 1), config_error);
  CHECK_THROWS_AS(distopt::data::iid_shard(10, 0, -3, 1), config_error);
}

TEST_CASE("minibatch_sampler: every epoch visits each shard element exactly once") {
  const std::vector<std::size_t> shard = distopt::data::iid_shard(100, 1, 4, 5);  // 25 items
  for (std::size_t batch : {std::size_t{1}, std::size_t{4}, std::size_t{5}, std::size_t{25}, std::size_t{40}}) {
    CAPTURE(batch);
    distopt::data::minibatch_sampler s(shard, batch, 11, 1);
    const std::size_t per_epoch = (shard.size() + batch - 1) / batch;
    CHECK(s.batches_per_epoch() == per_epoch);
    std::vector<std::vector<std::size_t>> epochs;
    for (int e = 0; e < 3; ++e) {
      std::vector<std::size_t> seen;
      for (std::size_t k = 0; k < per_epoch; ++k) {
        const auto b = s.next();
        const std::size_t expected = k + 1 < per_epoch ? batch : shard.size() - (per_epoch - 1) * batch;
        CHECK(b.size() == expected);
        seen.insert(seen.end(), b.begin(), b.end());
      }
      epochs.push_back(seen);
      std::sort(seen.begin(), seen.end());
      std::vector<std::size_t> sorted = shard;
      std::sort(sorted.begin(), sorted.end());
      CHECK(seen == sorted);
    }
    if (batch < shard.size()) CHECK(epochs[0] != epochs[1]);  // a fresh shuffle per epoch
  }
}

TEST_CASE("minibatch_sampler: the same seed and rank give the same stream of batches") {
  const std::vector<std::size_t> shard = distopt::data::iid_shard(60, 0, 2, 5);
  for (std::size_t batch : {std::size_t{3}, std::size_t{7}}) {
    CAPTURE(batch);
    distopt::data::minibatch_sampler s1(shard, batch, 8, 0);
    distopt::data::minibatch_sampler s2(shard, batch, 8, 0);
    distopt::data::minibatch_sampler other_rank(shard, batch, 8, 1);
    bool all_same_as_other_rank = true;
    for (int k = 0; k < 25; ++k) {
      const auto b1 = s1.next();
      const auto b2 = s2.next();  // b1 stays valid: it belongs to s1
      const auto b3 = other_rank.next();
      CHECK(std::equal(b1.begin(), b1.end(), b2.begin(), b2.end()));
      all_same_as_other_rank = all_same_as_other_rank && std::equal(b1.begin(), b1.end(), b3.begin(), b3.end());
    }
    CHECK(!all_same_as_other_rank);  // the rank selects another stream
  }
}

TEST_CASE("minibatch_sampler: refuses a zero batch size or an empty shard") {
  CHECK_THROWS_WITH_AS(distopt::data::minibatch_sampler({1, 2, 3}, 0, 1, 0), doctest::Contains("batch size"),
                       config_error);
  CHECK_THROWS_WITH_AS(distopt::data::minibatch_sampler({}, 4, 1, 0), doctest::Contains("shard is empty"),
                       config_error);
}
