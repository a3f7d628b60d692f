#pragma once
// Seeded synthetic data sets: a pure function of (seed, shape), the same on every
// machine, for tests, benchmarks and examples that need no files.
//
//   auto [a, b] = distopt::problems::synthetic_regression(512, 20, /*noise=*/0.1f, /*seed=*/1);
//   auto [f, y] = distopt::problems::synthetic_classification(512, 20, /*seed=*/1);

#include <Eigen/Core>
#include <cmath>
#include <cstdint>

#include "distopt/core/rng.hpp"

namespace distopt::problems {

struct labelled_data {
  Eigen::MatrixXf features;  ///< one sample per row
  Eigen::VectorXf targets;   ///< regression targets or labels in {-1, +1}
};

/// Rows a_i ~ N(0, I); b = A x* + noise * N(0, 1) with x*_j ~ N(0, 1).
inline labelled_data synthetic_regression(Eigen::Index samples, Eigen::Index dim, float noise, std::uint64_t seed) {
  rng g(seed, 0, 0, purpose::user);
  labelled_data d{Eigen::MatrixXf(samples, dim), Eigen::VectorXf(samples)};
  Eigen::VectorXf truth(dim);
  for (Eigen::Index j = 0; j < dim; ++j) truth(j) = g.normal();
  for (Eigen::Index i = 0; i < samples; ++i)
    for (Eigen::Index j = 0; j < dim; ++j) d.features(i, j) = g.normal();
  d.targets = d.features * truth;
  for (Eigen::Index i = 0; i < samples; ++i) d.targets(i) += noise * g.normal();
  return d;
}

/// Two Gaussian classes: label y = +-1 with equal probability, a_i ~ N(0.5 y mu, I)
/// with mu_j ~ N(0, 1) / sqrt(dim), so the classes overlap (the optimum is finite).
inline labelled_data synthetic_classification(Eigen::Index samples, Eigen::Index dim, std::uint64_t seed) {
  rng g(seed, 0, 0, purpose::user);
  labelled_data d{Eigen::MatrixXf(samples, dim), Eigen::VectorXf(samples)};
  Eigen::VectorXf mu(dim);
  for (Eigen::Index j = 0; j < dim; ++j) mu(j) = g.normal() / std::sqrt(static_cast<float>(dim));
  for (Eigen::Index i = 0; i < samples; ++i) {
    const float y = (g.next_u32() & 1u) ? 1.0f : -1.0f;
    d.targets(i) = y;
    for (Eigen::Index j = 0; j < dim; ++j) d.features(i, j) = 0.5f * y * mu(j) + g.normal();
  }
  return d;
}

}  // namespace distopt::problems
