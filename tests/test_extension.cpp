// ctest-labels: threads
// The extension story: a compressor, a gossip topology and a protocol written here,
// outside include/, compose into distopt::optimizer and train. Data: least squares whose
// shards have different optima (a no-communication control must miss the global one),
// checked against the closed-form optimum and a serial double-precision D-PSGD.

#include <doctest/doctest.h>

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <cstring>
#include <mutex>
#include <span>
#include <vector>

#include <distopt/distopt.hpp>

#include "archetypes/policy_archetypes.hpp"

namespace {

using Eigen::Index;

constexpr int workers = 4;
constexpr Index dim = 6;
constexpr Index rows = 24;
constexpr float eta = 0.05f;

/// Worker r's shard: A_r x = b_r with its own optimum (w + r * shift).
struct shard {
  Eigen::MatrixXf a;
  Eigen::VectorXf b;
  Eigen::VectorXf gradient(const Eigen::VectorXf& x) const { return a.transpose() * (a * x - b) / float(rows); }
};

std::vector<shard> make_shards() {
  distopt::rng g(5, 0, 0, distopt::purpose::user);
  auto normal = [&](Index r, Index c) {
    Eigen::MatrixXf m(r, c);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = g.normal();
    return m;
  };
  const Eigen::VectorXf w = normal(dim, 1);
  const Eigen::VectorXf shift = normal(dim, 1);
  std::vector<shard> out;
  for (int r = 0; r < workers; ++r) {
    shard s{normal(rows, dim), {}};
    s.b = s.a * (w + float(r) * shift);
    out.push_back(std::move(s));
  }
  return out;
}

/// argmin (1/n) sum_r ||A_r x - b_r||^2 / (2 rows), in double.
Eigen::VectorXd global_optimum(const std::vector<shard>& s) {
  Eigen::MatrixXd h = Eigen::MatrixXd::Zero(dim, dim);
  Eigen::VectorXd v = Eigen::VectorXd::Zero(dim);
  for (const auto& p : s) {
    h += p.a.cast<double>().transpose() * p.a.cast<double>();
    v += p.a.cast<double>().transpose() * p.b.cast<double>();
  }
  return h.ldlt().solve(v);
}

double relative_error(const Eigen::VectorXf& x, const Eigen::VectorXd& ref) {
  return (x.cast<double>() - ref).norm() / ref.norm();
}

/// Trains `Opt` on every shard for `steps` full-batch steps; returns every rank's final model.
template <class Opt, class... Policies>
std::vector<Eigen::VectorXf> train(const std::vector<shard>& s, int steps, Policies... policies) {
  std::vector<Eigen::VectorXf> out(workers);
  std::mutex m;
  distopt::run_threads(workers,
                       [&](distopt::transport_ref t) {
                         Opt opt(t, Eigen::VectorXf::Zero(dim), {.learning_rate = eta}, policies...);
                         const shard& mine = s[static_cast<std::size_t>(t.rank())];
                         for (int k = 0; k < steps; ++k) opt.step(mine.gradient(opt.parameters()));
                         opt.finish();
                         std::lock_guard lock(m);
                         out[static_cast<std::size_t>(t.rank())] = opt.parameters();
                       },
                       {.timeout = std::chrono::seconds(20)});
  return out;
}

// --- a compressor: exact bytes, but neither summable nor raw floats, so the allreduce
// topology must allgather and decode it (reduction::gather_decode).
struct plain_bytes {
  static constexpr bool unbiased = true;
  void encode(std::span<const float> in, distopt::byte_buffer& w, distopt::rng&) const {
    distopt::append(w, std::as_bytes(in));
  }
  void decode(std::span<const std::byte> b, std::span<float> out) const {
    if (b.size() != out.size() * sizeof(float)) throw distopt::transport_error("plain_bytes: wrong length");
    std::memcpy(out.data(), b.data(), b.size());
  }
  std::size_t max_encoded_bytes(std::size_t n) const { return 4 * n; }
};
static_assert(distopt::compressor<plain_bytes>);
static_assert(distopt::reduction_for_v<plain_bytes> == distopt::reduction::gather_decode);

// --- a gossip topology: a star around rank 0, Metropolis-Hastings weights.
struct star {
  static constexpr distopt::exchange_kind exchange = distopt::exchange_kind::models;
  void validate(int n) const {
    if (n < 2) throw distopt::config_error("star: needs at least 2 ranks");
  }
  distopt::graph make_graph(int n) const {
    std::vector<distopt::graph::edge> e;
    for (int k = 1; k < n; ++k) e.push_back({0, k});
    return distopt::graph::from_edges(n, e);
  }
};
static_assert(distopt::topology::static_gossip_topology<star>);

// --- a protocol, chosen by a topology of our own: every round averages the models
// exactly (so with one local step per round this is mini-batch gradient descent).
template <class C, class S>
class model_average {
 public:
  template <class T>
  model_average(distopt::protocol_context ctx, std::span<const float>, C, T, S) : ctx_(ctx) {}
  void step(std::span<float> x, std::span<const float> g, bool talk, distopt::local_update& u) {
    u.apply(x, g);
    if (!talk) return;
    distopt::collective::ring_allreduce(ctx_.transport, x, distopt::collective::reduce_op::mean, ws_);
    ctx_.end_round();
  }
  void finish(std::span<float>) {}
  void poll(std::span<float>) {}

 private:
  distopt::protocol_context ctx_;
  distopt::collective::allreduce_workspace ws_;
};

// The control: the same shape, but nobody talks.
template <class C, class S>
struct alone {
  template <class T>
  alone(distopt::protocol_context, std::span<const float>, C, T, S) {}
  void step(std::span<float> x, std::span<const float> g, bool, distopt::local_update& u) { u.apply(x, g); }
  void finish(std::span<float>) {}
  void poll(std::span<float>) {}
};

template <template <class, class> class P>
struct topology_with {
  static constexpr distopt::exchange_kind exchange = distopt::exchange_kind::gradients;
  void validate(int) const {}
  template <class C, class S>
  using protocol = P<C, S>;
};

template <class C, class T>
using opt_of = distopt::optimizer<C, T, distopt::staleness::synchronous, distopt::local_steps::every_step>;

static_assert(
    distopt::protocol<model_average<distopt::compress::identity, distopt::staleness::synchronous>,
                      distopt::compress::identity, topology_with<model_average>, distopt::staleness::synchronous>);
static_assert(!distopt::protocol<int, distopt::compress::identity, topology_with<model_average>,
                                 distopt::staleness::synchronous>);

}  // namespace

TEST_CASE("extension: a compressor of one's own trains mini-batch SGD to the global optimum") {
  const auto s = make_shards();
  const Eigen::VectorXd opt = global_optimum(s);
  const auto x = train<opt_of<plain_bytes, distopt::topology::allreduce>>(s, 3000);
  // Full-batch GD at eta well inside 2/L converges linearly; 3000 steps leave only float rounding.
  for (const auto& xr : x) CHECK(relative_error(xr, opt) < 1e-4);
}

TEST_CASE("extension: a protocol of one's own composes; the no-communication control misses the optimum") {
  const auto s = make_shards();
  const Eigen::VectorXd opt = global_optimum(s);
  const auto averaged = train<opt_of<distopt::compress::identity, topology_with<model_average>>>(s, 3000);
  for (const auto& xr : averaged) CHECK(relative_error(xr, opt) < 1e-4);
  const auto lonely = train<opt_of<distopt::compress::identity, topology_with<alone>>>(s, 3000);
  for (const auto& xr : lonely) CHECK(relative_error(xr, opt) > 0.1);  // each found its own shard's optimum
}

TEST_CASE("extension: a gossip topology of one's own runs D-PSGD exactly as a serial simulation") {
  // Serial D-PSGD in double: x_i <- sum_j W_ij x_j - eta g_i(x_i) (gradient at the pre-mixing model).
  const auto s = make_shards();
  constexpr int steps = 400;
  const distopt::graph g = star{}.make_graph(workers);
  std::vector<Eigen::VectorXd> ref(workers, Eigen::VectorXd::Zero(dim));
  for (int k = 0; k < steps; ++k) {
    std::vector<Eigen::VectorXd> next(workers);
    for (int i = 0; i < workers; ++i) {
      next[static_cast<std::size_t>(i)] = g.weight(i, i) * ref[static_cast<std::size_t>(i)];
      for (int j : g.neighbours(i))
        next[static_cast<std::size_t>(i)] += g.weight(i, j) * ref[static_cast<std::size_t>(j)];
      const shard& p = s[static_cast<std::size_t>(i)];
      const Eigen::VectorXd xi = ref[static_cast<std::size_t>(i)];
      next[static_cast<std::size_t>(i)] -=
          double(eta) * (p.a.cast<double>().transpose() * (p.a.cast<double>() * xi - p.b.cast<double>())) /
          double(rows);
    }
    ref = next;
  }
  Eigen::VectorXd mean = Eigen::VectorXd::Zero(dim);
  for (const auto& r : ref) mean += r / workers;
  const auto x = train<opt_of<distopt::compress::identity, star>>(s, steps);  // finish() averages exactly
  for (const auto& xr : x) CHECK(relative_error(xr, mean) < 1e-4);
  // D-PSGD with a constant step stops in an O(eta) neighbourhood of the optimum, not at it.
  CHECK(relative_error(x[0], global_optimum(s)) < 0.05);
}
