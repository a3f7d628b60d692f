#pragma once
// problems::least_squares — f(x) = 1/(2m) ||A x - b||^2 over m rows of A.
// Gradient on a batch B: (1/|B|) sum_{i in B} (a_i . x - b_i) a_i.
// The minimiser solves A^T A x = A^T b (tests compare with Eigen's solve).
// Const member functions are safe to call from several workers at once.
//
//   distopt::problems::least_squares p(A, b);
//   p.gradient(x, batch, g);

#include <Eigen/Core>
#include <cstddef>
#include <span>
#include <string>

#include "distopt/core/errors.hpp"

namespace distopt::problems {

class least_squares {
 public:
  least_squares(Eigen::MatrixXf a, Eigen::VectorXf b) : a_(std::move(a)), b_(std::move(b)) {
    if (a_.rows() != b_.size())
      throw config_error("least_squares: A has " + std::to_string(a_.rows()) + " rows but b has " +
                         std::to_string(b_.size()) + " entries; they must match");
    if (a_.rows() == 0 || a_.cols() == 0) throw config_error("least_squares: A must have at least one row and column");
  }

  Eigen::Index dimension() const { return a_.cols(); }
  std::size_t samples() const { return static_cast<std::size_t>(a_.rows()); }
  const Eigen::MatrixXf& features() const { return a_; }
  const Eigen::VectorXf& targets() const { return b_; }

  double loss(const Eigen::Ref<const Eigen::VectorXf>& x) const {
    return 0.5 * (a_ * x - b_).cast<double>().squaredNorm() / static_cast<double>(a_.rows());
  }
  /// Full-batch gradient.
  void gradient(const Eigen::Ref<const Eigen::VectorXf>& x, Eigen::VectorXf& g) const {
    g.noalias() = a_.transpose() * (a_ * x - b_);
    g /= static_cast<float>(a_.rows());
  }
  /// Mean gradient over the rows in `batch`.
  void gradient(const Eigen::Ref<const Eigen::VectorXf>& x, std::span<const std::size_t> batch,
                Eigen::VectorXf& g) const {
    g.setZero(a_.cols());
    for (std::size_t i : batch) {
      const auto row = a_.row(static_cast<Eigen::Index>(i));
      g += (row.dot(x) - b_(static_cast<Eigen::Index>(i))) * row.transpose();
    }
    if (!batch.empty()) g /= static_cast<float>(batch.size());
  }

 private:
  Eigen::MatrixXf a_;
  Eigen::VectorXf b_;
};

}  // namespace distopt::problems
