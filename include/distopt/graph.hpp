#pragma once
// distopt::graph — an undirected communication graph on ranks 0..n-1 with its
// gossip mixing matrix W, as used by the decentralized topologies.
//
// W is symmetric and doubly stochastic (rows and columns sum to 1, entries >= 0),
// and W_ij > 0 for i != j exactly when {i, j} is an edge. One gossip step is
// x_i <- sum_j W_ij x_j; it preserves the average of the x_i, and the distance to
// consensus shrinks at least by the factor max_{k >= 2} |lambda_k(W)| = 1 - gap per step.
//
// Weights:
//  - Metropolis–Hastings for an edge list (from_edges and every generator below):
//      W_ij = 1 / (1 + max(deg_i, deg_j)) on edges,  W_ii = 1 - sum_{j != i} W_ij.
//    On a regular graph this is the uniform 1/(deg + 1), so ring gives 1/3 (1/2 for
//    n = 2), the 2-D torus (A + I)/5, the complete graph 1/n: the weights of ChocoSGD
//    (ALGORITHMS.md §2.6) — Boyd, Diaconis, Xiao, "Fastest mixing Markov chain on a
//    graph", SIAM Review 2004 (the Metropolis–Hastings chain).
//  - Given weights (from_weights): checked, never changed.
// Spectral gap (CHOCO notation, Koloskova, Stich, Jaggi, ICML 2019, arXiv 1902.00340):
//   gap = 1 - max(|lambda_2|, |lambda_n|) with lambda_1 = 1 >= lambda_2 >= ... >= lambda_n,
// computed in double precision by Householder tridiagonalisation and the implicit QL
// method (detail::symmetric_eigenvalues; O(n^3): build the graph once, not per round).
// Not Eigen's SelfAdjointEigenSolver: instantiating it took 7 s of compile time in every
// translation unit that includes this header.
// Generators: ring(n), torus(rows, cols), hypercube(dim), complete(n),
// exponential(n) (i ~ i +- 2^k), random_regular(n, r, seed).
// Bad input (an edge to a rank outside [0, n), a self-loop, a disconnected graph,
// weights that are not symmetric, non-negative and doubly stochastic) throws
// config_error saying what is wrong.
//
//   auto g = distopt::graph::ring(9);
//   double gap = g.spectral_gap();                 // 1 - (1/3 + 2/3 cos(2 pi / 9))
//   for (int j : g.neighbours(0)) use(j, g.weight(0, j));
//   auto h = distopt::graph::from_edges(4, {{0, 1}, {1, 2}, {2, 3}});   // a path, MH weights

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::detail {

/// Eigenvalues of the symmetric matrix `a` (row-major n x n, destroyed), increasing.
/// Householder reduction to tridiagonal form, then the QL method with implicit shifts
/// (Press et al., Numerical Recipes, 3rd ed., §11.3–11.4: tred2 without eigenvectors, tqli).
inline std::vector<double> symmetric_eigenvalues(std::vector<double> a, std::size_t n) {
  auto at = [&](std::size_t i, std::size_t j) -> double& { return a[i * n + j]; };
  std::vector<double> d(n), e(n, 0.0);
  for (std::size_t i = n; i-- > 1;) {  // tred2: zero row i left of the subdiagonal
    const std::size_t l = i - 1;
    double h = 0.0, scale = 0.0;
    if (l > 0) {
      for (std::size_t k = 0; k <= l; ++k) scale += std::abs(at(i, k));
      if (scale == 0.0) {
        e[i] = at(i, l);
      } else {
        for (std::size_t k = 0; k <= l; ++k) {
          at(i, k) /= scale;
          h += at(i, k) * at(i, k);
        }
        double f = at(i, l);
        double g = f >= 0.0 ? -std::sqrt(h) : std::sqrt(h);
        e[i] = scale * g;
        h -= f * g;
        at(i, l) = f - g;
        f = 0.0;
        for (std::size_t j = 0; j <= l; ++j) {
          g = 0.0;
          for (std::size_t k = 0; k <= j; ++k) g += at(j, k) * at(i, k);
          for (std::size_t k = j + 1; k <= l; ++k) g += at(k, j) * at(i, k);
          e[j] = g / h;
          f += e[j] * at(i, j);
        }
        const double hh = f / (h + h);
        for (std::size_t j = 0; j <= l; ++j) {
          f = at(i, j);
          e[j] = g = e[j] - hh * f;
          for (std::size_t k = 0; k <= j; ++k) at(j, k) -= f * e[k] + g * at(i, k);
        }
      }
    } else {
      e[i] = at(i, l);
    }
  }
  for (std::size_t i = 0; i < n; ++i) d[i] = at(i, i);
  // tqli: e[i] becomes the coupling of d[i] and d[i+1].
  for (std::size_t i = 1; i < n; ++i) e[i - 1] = e[i];
  if (n > 0) e[n - 1] = 0.0;
  constexpr double eps = 1e-15;
  for (std::size_t l = 0; l < n; ++l) {
    for (int iter = 0;; ++iter) {
      std::size_t m = l;
      for (; m + 1 < n; ++m)
        if (std::abs(e[m]) <= eps * (std::abs(d[m]) + std::abs(d[m + 1]))) break;
      if (m == l) break;
      if (iter == 60) throw config_error("graph: the eigenvalues of W did not converge; is W symmetric and finite?");
      double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
      double r = std::hypot(g, 1.0);
      g = d[m] - d[l] + e[l] / (g + (g >= 0.0 ? r : -r));
      double s = 1.0, c = 1.0, p = 0.0;
      bool underflow = false;
      for (std::size_t i = m; i-- > l;) {
        const double f = s * e[i];
        const double b = c * e[i];
        e[i + 1] = r = std::hypot(f, g);
        if (r == 0.0) {  // recover from underflow: deflate and restart this l
          d[i + 1] -= p;
          e[m] = 0.0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1] - p;
        r = (d[i] - g) * s + 2.0 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
      }
      if (underflow) continue;
      d[l] -= p;
      e[l] = g;
      e[m] = 0.0;
    }
  }
  std::sort(d.begin(), d.end());
  return d;
}

}  // namespace distopt::detail

namespace distopt {

class graph {
 public:
  using edge = std::pair<int, int>;

  /// The graph of an undirected edge list on n nodes with Metropolis–Hastings weights.
  /// Duplicate edges (in either orientation) count once.
  static graph from_edges(int n, std::span<const edge> edges) {
    check_size(n, "graph::from_edges");
    std::vector<std::vector<int>> adj(static_cast<std::size_t>(n));
    for (const auto& [a, b] : edges) {
      if (a < 0 || a >= n || b < 0 || b >= n)
        throw config_error("graph: edge (" + std::to_string(a) + ", " + std::to_string(b) +
                           ") names a rank outside [0, " + std::to_string(n) + "); ranks are 0.." +
                           std::to_string(n - 1));
      if (a == b)
        throw config_error("graph: edge (" + std::to_string(a) + ", " + std::to_string(a) +
                           ") is a self-loop; the mixing weight W_ii is implied, remove the edge");
      adj[static_cast<std::size_t>(a)].push_back(b);
      adj[static_cast<std::size_t>(b)].push_back(a);
    }
    for (auto& list : adj) {
      std::sort(list.begin(), list.end());
      list.erase(std::unique(list.begin(), list.end()), list.end());
    }
    Eigen::MatrixXd w = Eigen::MatrixXd::Zero(n, n);
    for (int i = 0; i < n; ++i) {
      double off = 0.0;
      for (int j : adj[static_cast<std::size_t>(i)]) {
        const auto di = adj[static_cast<std::size_t>(i)].size(), dj = adj[static_cast<std::size_t>(j)].size();
        w(i, j) = 1.0 / (1.0 + static_cast<double>(std::max(di, dj)));
        off += w(i, j);
      }
      w(i, i) = 1.0 - off;
    }
    return graph(std::move(w), std::move(adj));
  }
  static graph from_edges(int n, std::initializer_list<edge> edges) {
    return from_edges(n, std::span<const edge>(edges.begin(), edges.size()));
  }

  /// A graph given by its mixing matrix; edges are the off-diagonal entries > 0.
  /// W must be square, finite, non-negative, symmetric and doubly stochastic (to 1e-9).
  static graph from_weights(Eigen::MatrixXd w) {
    if (w.rows() != w.cols() || w.rows() == 0)
      throw config_error("graph::from_weights: W is " + std::to_string(w.rows()) + " x " + std::to_string(w.cols()) +
                         "; it must be a non-empty square matrix, one row per rank");
    const int n = static_cast<int>(w.rows());
    constexpr double tol = 1e-9;
    for (int i = 0; i < n; ++i) {
      double row = 0.0;
      for (int j = 0; j < n; ++j) {
        if (!std::isfinite(w(i, j)) || w(i, j) < 0.0)
          throw config_error("graph::from_weights: W(" + std::to_string(i) + ", " + std::to_string(j) +
                             ") = " + std::to_string(w(i, j)) + "; mixing weights must be finite and >= 0");
        if (std::abs(w(i, j) - w(j, i)) > tol)
          throw config_error("graph::from_weights: W is not symmetric (W(" + std::to_string(i) + ", " +
                             std::to_string(j) + ") != W(" + std::to_string(j) + ", " + std::to_string(i) +
                             ")); gossip needs W = W^T, e.g. Metropolis-Hastings weights (graph::from_edges)");
        row += w(i, j);
      }
      if (std::abs(row - 1.0) > tol)
        throw config_error("graph::from_weights: row " + std::to_string(i) + " of W sums to " + std::to_string(row) +
                           "; W must be doubly stochastic (every row and column sums to 1), e.g. "
                           "Metropolis-Hastings weights (graph::from_edges)");
    }
    std::vector<std::vector<int>> adj(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j)
        if (i != j && w(i, j) > 0.0) adj[static_cast<std::size_t>(i)].push_back(j);
    return graph(std::move(w), std::move(adj));
  }

  /// Ring: i ~ i +- 1 (mod n). W = 1/3 on i, i +- 1 (1/2 for n = 2; W = [1] for n = 1).
  static graph ring(int n) {
    check_size(n, "graph::ring");
    std::vector<edge> e;
    for (int i = 0; i + 1 < n; ++i) e.emplace_back(i, i + 1);
    if (n > 2) e.emplace_back(n - 1, 0);
    return from_edges(n, e);
  }

  /// 2-D torus of rows x cols, rank = r * cols + c, four neighbours (r +- 1, c +- 1)
  /// wrapping around; coinciding neighbours (a side of 1 or 2) count once.
  static graph torus(int rows, int cols) {
    if (rows < 1 || cols < 1)
      throw config_error("graph::torus: rows and cols must be >= 1, got " + std::to_string(rows) + " x " +
                         std::to_string(cols));
    std::vector<edge> e;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        const int me = r * cols + c;
        const int right = r * cols + (c + 1) % cols, down = ((r + 1) % rows) * cols + c;
        if (right != me) e.emplace_back(me, right);
        if (down != me) e.emplace_back(me, down);
      }
    return from_edges(rows * cols, e);
  }

  /// Hypercube of dimension dim (n = 2^dim): i ~ i xor 2^k. W = (I + A)/(dim + 1).
  static graph hypercube(int dim) {
    if (dim < 0 || dim > 20)
      throw config_error("graph::hypercube: dimension must be in [0, 20], got " + std::to_string(dim));
    const int n = 1 << dim;
    std::vector<edge> e;
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < dim; ++k)
        if (const int j = i ^ (1 << k); i < j) e.emplace_back(i, j);
    return from_edges(n, e);
  }

  /// Complete graph: every pair is an edge, W = 1/n everywhere (exact averaging in one step).
  static graph complete(int n) {
    check_size(n, "graph::complete");
    std::vector<edge> e;
    for (int i = 0; i < n; ++i)
      for (int j = i + 1; j < n; ++j) e.emplace_back(i, j);
    return from_edges(n, e);
  }

  /// Undirected exponential graph: i ~ i +- 2^k (mod n) for 2^k < n (Assran et al. 2019
  /// use the directed i -> i + 2^k; the undirected union keeps W symmetric). MH weights.
  static graph exponential(int n) {
    check_size(n, "graph::exponential");
    std::vector<edge> e;
    for (int i = 0; i < n; ++i)
      for (int hop = 1; hop < n; hop *= 2)
        if (const int j = (i + hop) % n; j != i) e.emplace_back(i, j);
    return from_edges(n, e);
  }

  /// A uniformly drawn simple r-regular graph (configuration model with rejection), a pure
  /// function of (n, r, seed). Needs 0 <= r < n and r * n even; connected is required.
  static graph random_regular(int n, int r, std::uint64_t seed) {
    check_size(n, "graph::random_regular");
    if (r < 0 || r >= n || (static_cast<long long>(r) * n) % 2 != 0)
      throw config_error("graph::random_regular: need 0 <= r < n and r * n even, got n = " + std::to_string(n) +
                         ", r = " + std::to_string(r));
    for (std::uint32_t attempt = 0; attempt < 10000; ++attempt) {
      rng g(seed, 0xFFFFFFFFu, attempt, purpose::topology);
      std::vector<int> stubs;
      for (int i = 0; i < n; ++i) stubs.insert(stubs.end(), static_cast<std::size_t>(r), i);
      for (std::size_t k = stubs.size(); k > 1; --k)  // Fisher–Yates
        std::swap(stubs[k - 1], stubs[g.below(static_cast<std::uint32_t>(k))]);
      std::vector<edge> e;
      bool simple = true;
      for (std::size_t k = 0; k + 1 < stubs.size() && simple; k += 2) {
        const edge ab{std::min(stubs[k], stubs[k + 1]), std::max(stubs[k], stubs[k + 1])};
        simple = ab.first != ab.second && std::find(e.begin(), e.end(), ab) == e.end();
        e.push_back(ab);
      }
      if (!simple) continue;
      if (connected_edges(n, e)) return from_edges(n, e);
    }
    throw config_error("graph::random_regular: no connected simple " + std::to_string(r) + "-regular graph on " +
                       std::to_string(n) + " nodes found in 10000 draws; use r >= 2 (r = 1 is a matching)");
  }

  int size() const noexcept { return static_cast<int>(w_.rows()); }
  /// The neighbours of i (excluding i), increasing.
  std::span<const int> neighbours(int i) const { return adj_.at(static_cast<std::size_t>(i)); }
  int degree(int i) const { return static_cast<int>(neighbours(i).size()); }
  double weight(int i, int j) const { return w_(i, j); }
  const Eigen::MatrixXd& mixing_matrix() const noexcept { return w_; }

  /// Eigenvalues of W, decreasing (the first is 1).
  Eigen::VectorXd eigenvalues() const {
    const auto n = static_cast<std::size_t>(size());
    std::vector<double> a(n * n);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < n; ++j) a[i * n + j] = w_(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j));
    const std::vector<double> l = detail::symmetric_eigenvalues(std::move(a), n);
    Eigen::VectorXd out(static_cast<Eigen::Index>(n));
    for (std::size_t k = 0; k < n; ++k) out(static_cast<Eigen::Index>(k)) = l[n - 1 - k];
    return out;
  }
  /// 1 - max(|lambda_2|, |lambda_n|): the per-step contraction of gossip is 1 - gap.
  /// 1 for n = 1 (nothing to mix).
  double spectral_gap() const {
    if (size() == 1) return 1.0;
    const Eigen::VectorXd l = eigenvalues();
    return 1.0 - std::max(std::abs(l(1)), std::abs(l(l.size() - 1)));
  }

 private:
  graph(Eigen::MatrixXd w, std::vector<std::vector<int>> adj) : w_(std::move(w)), adj_(std::move(adj)) {
    if (!connected(adj_))
      throw config_error("graph: the graph on " + std::to_string(size()) +
                         " ranks is not connected, so gossip cannot reach consensus; add edges joining the parts");
  }

  static void check_size(int n, const char* who) {
    if (n < 1) throw config_error(std::string(who) + ": the number of nodes must be >= 1, got " + std::to_string(n));
  }

  static bool connected(const std::vector<std::vector<int>>& adj) {
    std::vector<char> seen(adj.size(), 0);
    std::vector<int> stack{0};
    seen[0] = 1;
    std::size_t reached = 1;
    while (!stack.empty()) {
      const int i = stack.back();
      stack.pop_back();
      for (int j : adj[static_cast<std::size_t>(i)])
        if (!seen[static_cast<std::size_t>(j)]) {
          seen[static_cast<std::size_t>(j)] = 1;
          ++reached;
          stack.push_back(j);
        }
    }
    return reached == adj.size();
  }
  static bool connected_edges(int n, const std::vector<edge>& e) {
    std::vector<std::vector<int>> adj(static_cast<std::size_t>(n));
    for (const auto& [a, b] : e) {
      adj[static_cast<std::size_t>(a)].push_back(b);
      adj[static_cast<std::size_t>(b)].push_back(a);
    }
    return connected(adj);
  }

  Eigen::MatrixXd w_;
  std::vector<std::vector<int>> adj_;
};

}  // namespace distopt
