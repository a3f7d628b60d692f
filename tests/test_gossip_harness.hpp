#pragma once
// Shared by the gossip tests: runs a gossip optimizer on n threads and records every
// worker's model after every step, and builds least-squares shards with their closed
// forms (global optimum, D-PSGD fixed points) computed serially in double precision.
#include <Eigen/Core>
#include <Eigen/Dense>
#include <chrono>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include <distopt/distopt.hpp>
#include <distopt/problems.hpp>

namespace gossip_test {

using Eigen::Index;

inline constexpr std::chrono::milliseconds timeout = std::chrono::seconds(20);

inline Eigen::VectorXf seeded_normal(Index d, std::uint64_t seed, std::uint32_t stream) {
  distopt::rng g(seed, stream, 0, distopt::purpose::user);
  Eigen::VectorXf v(d);
  for (Index i = 0; i < d; ++i) v(i) = g.normal();
  return v;
}

/// traj[t][r]: worker r's parameters after t steps (t = 0: x0); `final[r]` after finish().
struct trajectory {
  std::vector<std::vector<Eigen::VectorXf>> at;
  std::vector<Eigen::VectorXf> final;
  std::vector<distopt::statistics> stats;
};

/// grad(rank, x, g) writes the gradient; eta(t) the step size of step t.
template <class Opt>
trajectory run(int n, int steps, const std::function<Eigen::VectorXf(int)>& x0, distopt::options o,
               const std::function<void(int, const Eigen::VectorXf&, Eigen::VectorXf&)>& grad,
               typename Opt::compressor_type c = {}, typename Opt::topology_type topo = {},
               const std::function<float(int)>& eta = {}) {
  trajectory tr;
  tr.at.assign(static_cast<std::size_t>(steps + 1), std::vector<Eigen::VectorXf>(static_cast<std::size_t>(n)));
  tr.final.resize(static_cast<std::size_t>(n));
  tr.stats.resize(static_cast<std::size_t>(n));
  o.timeout = timeout;
  distopt::run_threads(
      n,
      [&](distopt::transport_ref t) {
        const auto r = static_cast<std::size_t>(t.rank());
        Opt opt(t, x0(t.rank()), o, c, topo);
        tr.at[0][r] = opt.parameters();
        Eigen::VectorXf g(opt.parameters().size()), x;
        for (int s = 0; s < steps; ++s) {
          if (eta) opt.set_learning_rate(eta(s));
          x = opt.parameters();
          grad(t.rank(), x, g);
          opt.step(g);
          tr.at[static_cast<std::size_t>(s + 1)][r] = opt.parameters();
        }
        opt.finish();
        tr.final[r] = opt.parameters();
        tr.stats[r] = opt.stats();
      },
      distopt::thread_options{.timeout = timeout});
  return tr;
}

/// The workers' models stacked as an n x d matrix (double).
inline Eigen::MatrixXd stack(const std::vector<Eigen::VectorXf>& xs) {
  Eigen::MatrixXd m(static_cast<Index>(xs.size()), xs[0].size());
  for (std::size_t r = 0; r < xs.size(); ++r) m.row(static_cast<Index>(r)) = xs[r].cast<double>().transpose();
  return m;
}

/// ||X - 1 xbar^T||_F: the distance to consensus.
inline double consensus_distance(const Eigen::MatrixXd& x) { return (x.rowwise() - x.colwise().mean()).norm(); }

/// Least squares split across n workers: f_i(x) = 1/(2 m) ||A_i x - b_i||^2, gradient H_i x - c_i.
struct shards {
  std::vector<Eigen::MatrixXd> h;  // H_i = A_i^T A_i / m
  std::vector<Eigen::VectorXd> c;  // c_i = A_i^T b_i / m
  Index d;

  shards(int n, Index rows_each, Index dim, std::uint64_t seed) : d(dim) {
    for (int i = 0; i < n; ++i) {
      // Heterogeneous shards: each worker's data has its own planted solution, so the
      // local optima differ and only true consensus reaches the global optimum.
      auto data = distopt::problems::synthetic_regression(rows_each, dim, 0.1f, seed + static_cast<std::uint64_t>(i));
      const Eigen::MatrixXd a = data.features.cast<double>();
      h.push_back(a.transpose() * a / static_cast<double>(rows_each));
      c.push_back(a.transpose() * data.targets.cast<double>() / static_cast<double>(rows_each));
    }
  }
  void gradient(int i, const Eigen::VectorXf& x, Eigen::VectorXf& g) const {
    g = (h[static_cast<std::size_t>(i)] * x.cast<double>() - c[static_cast<std::size_t>(i)]).cast<float>();
  }
  /// argmin (1/n) sum_i f_i: (sum_i H_i) x = sum_i c_i.
  Eigen::VectorXd optimum() const {
    Eigen::MatrixXd hs = Eigen::MatrixXd::Zero(d, d);
    Eigen::VectorXd cs = Eigen::VectorXd::Zero(d);
    for (std::size_t i = 0; i < h.size(); ++i) {
      hs += h[i];
      cs += c[i];
    }
    return hs.ldlt().solve(cs);
  }
  /// Fixed point of D-PSGD-like iterations, stacked by worker (row i = x_i):
  ///   mix_after_step = false:  x_i <- sum_j M_ij x_j - eta (H_i x_i - c_i),
  ///                            i.e. ((I - M) (x) I + eta blockdiag(H)) X = eta c;
  ///   mix_after_step = true:   x_i <- sum_j M_ij (x_j - eta (H_j x_j - c_j)),
  ///                            i.e. ((I - M) (x) I + eta (M (x) I) blockdiag(H)) X = eta (M (x) I) c.
  /// M = W gives D-PSGD in its two orders; CHOCO with a deterministic compressor has the
  /// first with M = I - gamma (I - W) (x_hat = x at a fixed point, since C(v) = 0 only for v = 0).
  Eigen::MatrixXd fixed_point(const Eigen::MatrixXd& m, double eta, bool mix_after_step) const {
    const auto n = static_cast<Index>(h.size());
    Eigen::MatrixXd big = Eigen::MatrixXd::Zero(n * d, n * d);
    Eigen::VectorXd rhs = Eigen::VectorXd::Zero(n * d);
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j) {
        const auto sj = static_cast<std::size_t>(j);
        big.block(i * d, j * d, d, d) = ((i == j ? 1.0 : 0.0) - m(i, j)) * Eigen::MatrixXd::Identity(d, d);
        const double p = mix_after_step ? m(i, j) : (i == j ? 1.0 : 0.0);
        big.block(i * d, j * d, d, d) += eta * p * h[sj];
        rhs.segment(i * d, d) += eta * p * c[sj];
      }
    const Eigen::VectorXd x = big.partialPivLu().solve(rhs);
    Eigen::MatrixXd out(n, d);
    for (Index i = 0; i < n; ++i) out.row(i) = x.segment(i * d, d).transpose();
    return out;
  }
  /// One serial step of D-PSGD on the stacked models, in double: X <- M X - eta G(X) or M (X - eta G(X)).
  Eigen::MatrixXd serial_step(const Eigen::MatrixXd& m, const Eigen::MatrixXd& x, double eta,
                              bool mix_after_step) const {
    Eigen::MatrixXd g(x.rows(), x.cols());
    for (Index i = 0; i < x.rows(); ++i)
      g.row(i) = (h[static_cast<std::size_t>(i)] * x.row(i).transpose() - c[static_cast<std::size_t>(i)]).transpose();
    return mix_after_step ? Eigen::MatrixXd(m * (x - eta * g)) : Eigen::MatrixXd(m * x - eta * g);
  }
};

}  // namespace gossip_test
