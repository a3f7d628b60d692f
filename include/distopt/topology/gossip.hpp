#pragma once
// Gossip topologies: the vocabulary shared by ring, torus, exponential, hypercube,
// complete, custom, one_peer_exponential and random_pairwise, and the model-exchange
// schemes that run over them.
//
// A gossip topology (exchange = exchange_kind::models) gives each worker, per round,
// a mixing_row: its own weight W_ii and its peers j with W_ij > 0. Rows are
// symmetric within a round (j lists i iff i lists j, with the same weight), so
// every message sent in a round is received in that round. Two kinds:
//  - static: `t.make_graph(n)` returns the distopt::graph, the same every round;
//  - time-varying: `t.schedule(n)` returns an object whose `row(rank, round, seed, out)`
//    fills the row of a round; every rank computes the same W_t (seeded by the
//    shared options.seed, never by the rank).
//
// Schemes (namespace distopt::mixing) say how models are exchanged; they are all one
// mechanism, protocols/gossip.hpp. `eta d` is the local SGD step.
//   exact                x <- sum_j W_ij x_j - eta d          D-PSGD, Lian et al., NeurIPS 2017, arXiv 1705.09056
//                        (the gradient is taken at the pre-mixing model; raw models are sent)
//   exact_step_then_mix  x <- sum_j W_ij (x_j - eta d_j)      the "plain" D-PSGD of ChocoSGD's convex code
//   choco                x <- x - eta d;  x <- x + gamma (sum_j W_ij xh_j - xh_i);  send C(x - xh_i);
//                        every holder xh_i += decode          CHOCO-SGD, Koloskova, Stich, Jaggi, ICML 2019,
//                                                             arXiv 1902.00340
//   dcd                  z = sum_j W_ij xh_j - eta d - x;  x <- x + Q(z);  holders xh_i += Q(z)   (xh_i == x_i)
//                                                             DCD-PSGD, Tang et al., NeurIPS 2018, arXiv 1803.06443
//   ecd                  x_half = sum_j W_ij xh_j - eta d;  z = (1 - (t+1)/2) x + (t+1)/2 x_half;  x <- x_half;
//                        holders xh_i <- (1 - 2/(t+1)) xh_i + 2/(t+1) Q(z)      ECD-PSGD, same paper (t from 0)
//   deep_squeeze         x <- x - eta d;  c_i = C(x) (error_feedback<C> adds its residual);  holders xh_i <- c_i;
//                        x <- x + gamma (sum_j W_ij xh_j - xh_i)    DeepSqueeze, Tang et al. 2019, arXiv 1907.07346
//   automatic (default)  exact for compress::identity, choco for any other compressor
// gamma is the scheme's consensus_step (choco, deep_squeeze, and automatic when it runs choco):
// x <- x + gamma (sum_j W_ij xh_j - xh_i). Unset (the default), it is derived from the
// compressor's guaranteed contraction delta and the graph, default_consensus_step below
// (0.0385 for top-5% on a ring of 9); a value set wins (ChocoSGD's tuned ring-of-9 values:
// top-1% 0.04, random-1% 0.01, 4-bit QSGD 0.34):
//   distopt::topology::gossip<distopt::topology::ring, distopt::mixing::choco>{{}, {.consensus_step = 0.04f}}
// Public copies xh (of self and of each peer) need fixed
// neighbours, so choco/dcd/ecd/deep_squeeze require a static topology: time-varying
// topologies run the exact schemes (compress::identity).
//
//   using dcd_ring = distopt::topology::gossip<distopt::topology::ring, distopt::mixing::dcd>;
//   distopt::optimizer<distopt::compress::qsgd<4>, dcd_ring, distopt::staleness::synchronous,
//                      distopt::local_steps::every_step> opt(t, x0, {.learning_rate = 0.01f});

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "distopt/core/concepts.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/traits.hpp"
#include "distopt/graph.hpp"

namespace distopt {

/// One worker's row of W for one round: W_ii and the peers j (increasing) with W_ij > 0.
struct mixing_row {
  float self_weight = 1.0f;
  std::vector<int> peers;
  std::vector<float> weights;  ///< weights[k] = W_{i, peers[k]}

  /// The row of rank i in a static graph.
  void assign(const graph& g, int i) {
    const auto nb = g.neighbours(i);
    peers.assign(nb.begin(), nb.end());
    weights.resize(peers.size());
    for (std::size_t k = 0; k < peers.size(); ++k) weights[k] = static_cast<float>(g.weight(i, peers[k]));
    self_weight = static_cast<float>(g.weight(i, i));
  }
  /// A round in which i averages with one partner (weights 1/2), or keeps its model (partner < 0).
  void assign_pair(int partner) {
    peers.clear();
    weights.clear();
    self_weight = 1.0f;
    if (partner < 0) return;
    peers.push_back(partner);
    weights.push_back(0.5f);
    self_weight = 0.5f;
  }
};

namespace mixing {
// consensus_step: gamma in (0, 1]; unset, topology::default_consensus_step for the compressor.
/// exact for compress::identity, choco (with this consensus step) for any other compressor.
struct automatic {
  std::optional<float> consensus_step;
};
struct exact {};
struct exact_step_then_mix {};
struct choco {
  std::optional<float> consensus_step;
};
struct dcd {};
struct ecd {};
struct deep_squeeze {
  std::optional<float> consensus_step;
};
}  // namespace mixing

namespace topology {

/// A gossip topology whose graph is the same every round.
template <class T>
concept static_gossip_topology = topology_policy<T> &&(T::exchange == exchange_kind::models) &&
                                 requires(const T& t, int n) {
  { t.make_graph(n) } -> std::same_as<graph>;
};

/// A gossip topology whose W changes with the round.
template <class T>
concept time_varying_gossip_topology = topology_policy<T> &&(T::exchange == exchange_kind::models) &&
                                       requires(const T& t, int n, int rank, std::uint64_t round, std::uint64_t seed,
                                                mixing_row& row) {
  t.schedule(n).row(rank, round, seed, row);
};

template <class T>
concept gossip_topology = static_gossip_topology<T> || time_varying_gossip_topology<T>;

/// Gossip over G with the model-exchange scheme S (a distopt::mixing scheme and its knobs).
template <class G, class S = mixing::automatic>
struct gossip : G {
  static_assert(gossip_topology<G>, "topology::gossip<G, S>: G must be a gossip topology (ring, torus, ...)");
  using scheme_type = S;
  S scheme{};
  gossip() = default;
  gossip(G g, S s = {}) : G(std::move(g)), scheme(s) {}  // NOLINT(google-explicit-constructor): keeps G's knobs

  void validate(int n) const {
    G::validate(n);
    if constexpr (requires { scheme.consensus_step; })
      if (scheme.consensus_step && !(*scheme.consensus_step > 0.0f && *scheme.consensus_step <= 1.0f))
        throw config_error("topology::gossip: the scheme's consensus_step must be in (0, 1], got " +
                           std::to_string(*scheme.consensus_step) +
                           "; it is CHOCO's gamma (1 = exact mixing of the public copies, smaller for stronger "
                           "compression); leave it unset for the step derived from the compressor and graph");
  }
};

namespace detail {
template <class T>
struct scheme_of {
  using type = mixing::automatic;
};
template <class T>
requires requires { typename T::scheme_type; }
struct scheme_of<T> {
  using type = typename T::scheme_type;
};
}  // namespace detail

/// The consensus step gamma set on gossip topology t's scheme (unset: none set, or a scheme without one).
template <class T>
std::optional<float> consensus_step(const T& t) {
  if constexpr (requires { t.scheme.consensus_step; })
    return t.scheme.consensus_step;
  else
    return std::nullopt;
}

/// The consensus step gamma of CHOCO-SGD and DeepSqueeze when the scheme sets none, for a
/// compressor that guarantees the contraction `delta` (compress::delta_bound) on graph g:
///
///     gamma = min(1, 1 / beta, delta / ((2 - delta) a)),   a = max_i (1 - W_ii),  beta = 1 - lambda_min(W)
///
/// Why. Worker i's own public copy enters its gossip step x_i <- x_i + gamma (sum_j W_ij xh_j - xh_i)
/// with weight -gamma (1 - W_ii), and xh_i only catches up with x_i when C transmits. Model C by
/// a random sparsifier that sends each coordinate of x_i - xh_i with probability delta (it meets
/// E||C(v) - v||^2 <= (1 - delta)||v||^2 with equality). Per coordinate, neighbours held still,
/// a = gamma (1 - W_ii):  x+ = x - a xh;  xh+ = x+ with probability delta, else xh. The second
/// moments (E x^2, E x xh, E xh^2) evolve by a 3x3 matrix T with det(T - I) = a delta (a (2 - delta)
/// - 2 delta), so the iteration is mean-square stable iff a < 2 delta / (2 - delta); exact gossip
/// (delta = 1) is stable iff gamma beta < 2. The default takes half of both limits at the worker
/// with the largest 1 - W_ii. Against the second-moment recursion of the whole graph
/// (tests/test_gossip_step.cpp: rings, torus, complete, star, path; delta 0.01 to 1) it is 0.4-0.7
/// of the true limit. The spectral gap sets how fast compressed gossip agrees, not whether it is
/// stable. CHOCO-SGD's Theorem 2 step (Koloskova, Stich, Jaggi, ICML 2019, arXiv 1902.00340),
/// gap^2 delta / (16 gap + gap^2 + 4 beta^2 + 2 gap beta^2 - 8 gap delta), covers the worst
/// compressor and is ~300x smaller (1.3e-4 for top-5% on a ring of 9 against 0.0385 here). On
/// ChocoSGD's ring of 9 (d = 2000) this gives 0.0075 for random-1% (tuned: 0.01), 0.21 for 4-bit
/// QSGD scaled (tuned: 0.34) and 0.0075 for top-1% (tuned: 0.04; top-k does far better than its
/// worst case, so tune it). With a constant step eta, CHOCO's fixed point is D-PSGD's with step
/// eta / gamma: a smaller gamma leaves the workers further from consensus on heterogeneous data.
inline double default_consensus_step(double delta, const graph& g) {
  if (!(delta > 0.0 && delta <= 1.0))
    throw config_error("topology::default_consensus_step: delta must be in (0, 1], got " + std::to_string(delta));
  const double a = 1.0 - g.mixing_matrix().diagonal().minCoeff();
  const double beta = 1.0 - g.eigenvalues().minCoeff();
  double gamma = 1.0;
  if (beta > 0.0) gamma = std::min(gamma, 1.0 / beta);
  if (a > 0.0) gamma = std::min(gamma, delta / ((2.0 - delta) * a));
  return gamma;
}

/// The per-worker schedule of a time-varying topology (an unused int for a static one).
template <class T>
struct schedule_of {
  using type = int;
};
template <time_varying_gossip_topology T>
struct schedule_of<T> {
  using type = decltype(std::declval<const T&>().schedule(1));
};
template <class T>
using schedule_t = typename schedule_of<T>::type;

/// The scheme a compressor C runs over gossip topology T (automatic resolved).
template <class C, class T>
using scheme_t = std::conditional_t<std::same_as<typename detail::scheme_of<T>::type, mixing::automatic>,
                                    std::conditional_t<sends_raw_floats_v<C>, mixing::exact, mixing::choco>,
                                    typename detail::scheme_of<T>::type>;

}  // namespace topology
}  // namespace distopt
