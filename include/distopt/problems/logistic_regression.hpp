#pragma once
// problems::logistic_regression — l2-regularised binary logistic regression,
// labels y_i in {-1, +1}:
//   f(x) = (1/m) sum_i log(1 + exp(-y_i a_i . x)) + (lambda/2) ||x||^2
//   grad = -(1/m) sum_i y_i sigma(-y_i a_i . x) a_i + lambda x,   sigma(z) = 1/(1+e^-z)
// Strongly convex for lambda > 0, so it has one optimum (tests find it by Newton).
// Const member functions are safe to call from several workers at once.
//
//   distopt::problems::logistic_regression p(A, y, /*lambda=*/1e-3f);
//   p.gradient(x, batch, g);

#include <Eigen/Core>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "distopt/core/errors.hpp"

namespace distopt::problems {

class logistic_regression {
 public:
  logistic_regression(Eigen::MatrixXf a, Eigen::VectorXf y, float lambda)
      : a_(std::move(a)), y_(std::move(y)), lambda_(lambda) {
    if (a_.rows() != y_.size())
      throw config_error("logistic_regression: A has " + std::to_string(a_.rows()) + " rows but y has " +
                         std::to_string(y_.size()) + " labels; they must match");
    if (a_.rows() == 0 || a_.cols() == 0)
      throw config_error("logistic_regression: A must have at least one row and column");
    if (!(lambda_ >= 0.0f && std::isfinite(lambda_)))
      throw config_error("logistic_regression: lambda must be finite and >= 0, got " + std::to_string(lambda_));
    for (Eigen::Index i = 0; i < y_.size(); ++i)
      if (y_(i) != 1.0f && y_(i) != -1.0f)
        throw config_error("logistic_regression: label " + std::to_string(i) + " is " + std::to_string(y_(i)) +
                           "; labels must be -1 or +1");
  }

  Eigen::Index dimension() const { return a_.cols(); }
  std::size_t samples() const { return static_cast<std::size_t>(a_.rows()); }
  float lambda() const { return lambda_; }
  const Eigen::MatrixXf& features() const { return a_; }
  const Eigen::VectorXf& labels() const { return y_; }

  double loss(const Eigen::Ref<const Eigen::VectorXf>& x) const {
    const Eigen::VectorXd margins = (y_.array() * (a_ * x).array()).cast<double>();
    double sum = 0.0;
    for (Eigen::Index i = 0; i < margins.size(); ++i) sum += softplus(-margins(i));
    return sum / static_cast<double>(a_.rows()) + 0.5 * lambda_ * x.cast<double>().squaredNorm();
  }
  /// Full-batch gradient.
  void gradient(const Eigen::Ref<const Eigen::VectorXf>& x, Eigen::VectorXf& g) const {
    Eigen::VectorXf weights = y_.array() * (a_ * x).array();
    for (Eigen::Index i = 0; i < weights.size(); ++i) weights(i) = -y_(i) * sigmoid(-weights(i));
    g.noalias() = a_.transpose() * weights;
    g /= static_cast<float>(a_.rows());
    g += lambda_ * x;
  }
  /// Mean gradient over the rows in `batch`, plus the regulariser.
  void gradient(const Eigen::Ref<const Eigen::VectorXf>& x, std::span<const std::size_t> batch,
                Eigen::VectorXf& g) const {
    g.setZero(a_.cols());
    for (std::size_t k : batch) {
      const auto i = static_cast<Eigen::Index>(k);
      const auto row = a_.row(i);
      g += (-y_(i) * sigmoid(-y_(i) * row.dot(x))) * row.transpose();
    }
    if (!batch.empty()) g /= static_cast<float>(batch.size());
    g += lambda_ * x;
  }

 private:
  static float sigmoid(float z) { return z >= 0 ? 1.0f / (1.0f + std::exp(-z)) : std::exp(z) / (1.0f + std::exp(z)); }
  static double softplus(double z) { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }

  Eigen::MatrixXf a_;
  Eigen::VectorXf y_;
  float lambda_;
};

}  // namespace distopt::problems
