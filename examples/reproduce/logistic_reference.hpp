#pragma once
// logistic_reference: the full l2-regularised logistic-regression objective of a reproduction in
// double precision, f(x) = (1/m) sum_i log(1 + exp(-y_i a_i.x)) + (lambda/2) ||x||^2, and its
// minimiser by Newton's method (the reference the reproductions' f - f* is measured against).
//
//   reproduce::logistic_reference ref(features.cast<double>(), labels.cast<double>(), lambda);
//   ref.solve();                               // ref.xstar, ref.fstar, ref.newton_steps, ref.grad_norm
//   double gap = ref.loss(x) - ref.fstar;

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <utility>

namespace reproduce {

struct logistic_reference {
  Eigen::MatrixXd a;  // m x d, one sample per row
  Eigen::VectorXd y;  // labels in {-1, +1}
  double lambda = 0;
  Eigen::VectorXd xstar;
  double fstar = 0, grad_norm = 0;
  int newton_steps = 0;

  logistic_reference() = default;
  logistic_reference(Eigen::MatrixXd features, Eigen::VectorXd labels, double l2)
      : a(std::move(features)), y(std::move(labels)), lambda(l2) {}

  static double softplus(double z) { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }
  static double sigmoid(double z) { return z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z)); }

  double loss(const Eigen::VectorXd& x) const {
    const Eigen::VectorXd margins = y.cwiseProduct(a * x);
    double sum = 0.0;
    for (Eigen::Index i = 0; i < margins.size(); ++i) sum += softplus(-margins(i));
    return sum / static_cast<double>(a.rows()) + 0.5 * lambda * x.squaredNorm();
  }
  double loss(const Eigen::VectorXf& x) const { return loss(Eigen::VectorXd(x.cast<double>())); }

  /// The Hessian at x, A^T diag(p (1 - p)) A / m + lambda I with p = sigmoid(-y a.x), its lower
  /// triangle formed 4096 rows at a time (no m x d temporary).
  Eigen::MatrixXd hessian(const Eigen::VectorXd& x) const {
    const auto m = static_cast<double>(a.rows());
    const Eigen::VectorXd margins = y.cwiseProduct(a * x);
    Eigen::MatrixXd h = Eigen::MatrixXd::Zero(a.cols(), a.cols());
    for (Eigen::Index lo = 0; lo < a.rows(); lo += 4096) {
      const Eigen::Index len = std::min<Eigen::Index>(4096, a.rows() - lo);
      const Eigen::ArrayXd p = (-margins.segment(lo, len)).unaryExpr([](double z) { return sigmoid(z); }).array();
      const Eigen::MatrixXd b = (p * (1.0 - p)).sqrt().matrix().asDiagonal() * a.middleRows(lo, len);
      h.selfadjointView<Eigen::Lower>().rankUpdate(b.transpose(), 1.0 / m);
    }
    h.diagonal().array() += lambda;
    return h.selfadjointView<Eigen::Lower>();
  }

  /// x* and f* by Newton's method with backtracking from 0, until ||grad f|| < 1e-10.
  void solve() {
    const auto m = static_cast<double>(a.rows());
    Eigen::VectorXd x = Eigen::VectorXd::Zero(a.cols()), g;
    for (newton_steps = 0; newton_steps < 100; ++newton_steps) {
      const Eigen::VectorXd margins = y.cwiseProduct(a * x);
      const Eigen::VectorXd p = (-margins).unaryExpr([](double z) { return sigmoid(z); });
      g = -(a.transpose() * y.cwiseProduct(p)) / m + lambda * x;
      if (g.norm() < 1e-10) break;
      const Eigen::VectorXd dx = hessian(x).ldlt().solve(g);
      const double f0 = loss(x);
      double t = 1.0;
      while (t > 1e-12 && loss(Eigen::VectorXd(x - t * dx)) > f0 - 0.25 * t * g.dot(dx)) t *= 0.5;
      x -= t * dx;
    }
    xstar = x;
    fstar = loss(x);
    grad_norm = g.norm();
  }
};

}  // namespace reproduce
