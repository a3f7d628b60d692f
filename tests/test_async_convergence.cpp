// ctest-labels: threads
// Asynchronous SGD (SSP, AsySGD, AD-PSGD, SwarmSGD) on least squares whose shards disagree: each
// worker's own optimum x_k* lies far from the optimum x* of the sum, so a worker that does not
// communicate ends far from x* (the control), and one that does reaches a neighbourhood of x*
// whose size the known O(eta tau) bias of asynchronous SGD sets (ALGORITHMS.md §2.5).
//
// Notation: n workers, f_k(x) = |A_k x - b_k|^2 / (2 m), g_k(x) = H_k (x - x_k*), x* = argmin of
// sum_k f_k, h_k = g_k(x*) (sum_k h_k = 0), beta = |(sum_k H_k)^-1 sum_k H_k h_k|, mu =
// lambda_min(mean_k H_k), so the model's error contracts by (1 - eta mu) per round. Measured in the
// run: G, the largest gradient a worker computed in its last tenth of the steps; s, the mean
// staleness the workers recorded (rounds of the server, steps of an interaction; at least the
// nominal 2, so a calm run is held to the nominal bound); s_kr, the staleness worker k recorded at
// its step r, and R_k its steps; T, the steps taken beyond the fewest any worker took (the tail, in
// which some workers step without the others). The bounds, first order in eta:
//  parameter server (SSP, AsySGD), a push moves the model by (eta/n) g:
//   (1) sum_k h_k = 0 only over a whole round, so within one the model strays from the centre of
//       its cycle by at most (eta/n) G (n - 1); the T pushes of the tail add (eta/n) G T; a worker
//       whose push comes e rounds later than the others' (a stall) was missing for e rounds, in
//       which the others' pushes (their h_j sum to -h_k) took the model (eta/n) G e off, decaying
//       by (1 - eta mu) per round since: E = sum_k max_r (s_kr - s)+ (1 - eta mu)^(R_k - r) rounds;
//   (2) a push computed s rounds late misses the others' last pushes, whose h_j sum to -h_k per
//       round, so it carries (eta/n) s H_k h_k too much; through the contraction by sum_k H_k per
//       round the centre settles (eta/n) s beta from x* (the O(eta tau) bias).
//   bound = (eta/n) G (n - 1 + T + E) + (s + 1) (eta/n) beta.
//  pairwise gossip (AD-PSGD, SwarmSGD; protocols/async_gossip.hpp), a worker steps by eta g on
//  its own model x_i and exposes x̂_i; s* = max(s, max_kr s_kr (1 - eta mu)^(R_k - r)):
//   (3) its private progress x_i - x̂_i grows by at most eta G per step and is exposed at its own
//       interactions, at most H + s* + 1 steps apart: it stays below P = eta G (H + s* + 1). Its
//       exposed copy receives at most P at each of its interactions, which also halves its
//       distance to a partner's, and is halved once more, in expectation, as someone's partner
//       (complete graph): it stays within P / (1 - 1/4) of the copies' mean. So each model lies
//       within D = (1 + 4/3 + 1) P < 4 P of the models' mean;
//   (4) averaging keeps the sum of the models, so their mean takes the steps (eta/n) g_k(x_k):
//       it oscillates as in (1), and its centre settles where sum_k H_k (mean + d_k - x_k*) = 0,
//       d_k = x_k - mean, whose systematic part is the drift towards x_k*, -4 eta (H + s* + 1) h_k
//       at most: 4 eta (H + s* + 1) beta from x* (the O(eta tau) bias).
//   bound = 4 P + 4 eta (H + s* + 1) beta + (eta/n) G (n - 1 + T), for every worker's model.
// Control: without communication worker k converges to x_k*, so some model ends at least
// min_k |x_k* - x*| from x*; each bound at the nominal staleness (E = n, one round late each; T =
// 0) must lie below half of that, or the test could not fail.
//
// Each worker's step k starts no earlier than k * 250 us after a common start (a paced clock, as
// if a step computed for 250 us): the workers push at one rate, so the fixed point is x* and not
// the optimum of the shards weighted by how fast each worker happens to run. Every worker steps
// until all have taken `steps`.

#include <doctest/doctest.h>

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/QR>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <distopt/distopt.hpp>
#include <distopt/problems.hpp>

#include "optimizer_harness.hpp"

namespace {

using namespace std::chrono_literals;

constexpr int n = 4, dim = 8, rows = 60, steps = 1500;
constexpr double nominal_staleness = 2.0;

// Least squares on n shards with shard optima x_k* = x_true + N(0, I) (noise-free within a shard).
struct heterogeneous_problem {
  std::vector<distopt::problems::least_squares> shards;
  std::vector<Eigen::MatrixXd> hessian;  // H_k
  std::vector<Eigen::VectorXd> local;    // x_k*
  Eigen::VectorXd optimum;               // x*
  double h_max = 0, mu = 0;
  double beta = 0;     // |(sum_k H_k)^-1 sum_k H_k h_k|
  double control = 0;  // min_k |x_k* - x*|

  explicit heterogeneous_problem(std::uint64_t seed) {
    distopt::rng g(seed, 0, 0, distopt::purpose::user);
    Eigen::VectorXd truth(dim);
    for (Eigen::Index j = 0; j < dim; ++j) truth(j) = g.normal();
    Eigen::MatrixXd all_a(n * rows, dim);
    Eigen::VectorXd all_b(n * rows);
    Eigen::MatrixXd sum_h = Eigen::MatrixXd::Zero(dim, dim);
    for (int k = 0; k < n; ++k) {
      Eigen::VectorXd own = truth;
      for (Eigen::Index j = 0; j < dim; ++j) own(j) += g.normal();
      Eigen::MatrixXf a(rows, dim);
      for (Eigen::Index i = 0; i < rows; ++i)
        for (Eigen::Index j = 0; j < dim; ++j) a(i, j) = g.normal();
      const Eigen::VectorXf b = a * own.cast<float>();
      all_a.middleRows(k * rows, rows) = a.cast<double>();
      all_b.segment(k * rows, rows) = b.cast<double>();
      hessian.push_back(a.cast<double>().transpose() * a.cast<double>() / rows);
      local.push_back(a.cast<double>().colPivHouseholderQr().solve(b.cast<double>()));
      sum_h += hessian.back();
      shards.emplace_back(a, b);
    }
    optimum = all_a.colPivHouseholderQr().solve(all_b);
    Eigen::VectorXd weighted = Eigen::VectorXd::Zero(dim);
    control = 1e300;
    for (int k = 0; k < n; ++k) {
      const auto i = static_cast<std::size_t>(k);
      const Eigen::VectorXd h = hessian[i] * (optimum - local[i]);
      weighted += hessian[i] * h;
      h_max = std::max(h_max, h.norm());
      control = std::min(control, (local[i] - optimum).norm());
    }
    beta = sum_h.ldlt().solve(weighted).norm();
    std::vector<double> mean_h(dim * dim);  // row-major, for graph.hpp's solver (tested against Eigen's)
    for (int i = 0; i < dim; ++i)
      for (int j = 0; j < dim; ++j) mean_h[static_cast<std::size_t>(i * dim + j)] = sum_h(i, j) / n;
    mu = distopt::detail::symmetric_eigenvalues(std::move(mean_h), dim).front();  // increasing order
  }

  // (1) + (2) above; E in rounds.
  double server_bound(double eta, double g, double staleness, double tail, double late) const {
    return eta / n * g * (n - 1 + tail + late) + (staleness + 1) * eta / n * beta;
  }
  // (3) + (4) above; staleness is s*.
  double gossip_bound(double eta, double g, double staleness, double tail, int local_steps) const {
    const double between = local_steps + staleness + 1;  // steps between a worker's interactions
    return 4 * eta * g * between + 4 * eta * between * beta + eta / n * g * (n - 1 + tail);
  }
};

struct run_result {
  std::vector<Eigen::VectorXf> x;
  std::vector<std::vector<std::uint64_t>> late;  // per worker and step: the largest staleness recorded in it
  double gradient = 0;                           // G
  double staleness = 0;                          // s: the mean staleness, at least nominal_staleness
  double tail = 0;                               // T

  // sum_k (or max_k) over the workers of the largest excess of a step's staleness over `above`,
  // decayed by `decay` per step since (by the end of the run).
  template <class Combine>
  double late_at_end(double above, double decay, Combine combine) const {
    double total = 0;
    for (const auto& steps_of_k : late) {
      double worst = 0, weight = 1;
      for (auto it = steps_of_k.rbegin(); it != steps_of_k.rend(); ++it, weight *= decay)
        worst = std::max(worst, (static_cast<double>(*it) - above) * weight);
      total = combine(total, worst);
    }
    return total;
  }
};

// The largest staleness statistics recorded since `seen` (its histogram before a step); updates seen.
std::uint64_t recorded_since(const distopt::statistics& now, std::vector<std::uint64_t>& seen) {
  std::uint64_t late = 0;
  for (std::size_t i = 0; i < now.staleness_histogram.size(); ++i)
    if (now.staleness_histogram[i] > (i < seen.size() ? seen[i] : 0)) late = i;
  seen = now.staleness_histogram;
  return late;
}

// With `cut` > 0: every worker takes `cut` steps, quiesce(), save(); then the run goes on in a
// new world of optimizers built from another x0 (far off) that load the checkpoints.
template <class Opt, class... Extra>
run_result run_with_cut(const heterogeneous_problem& p, float eta, int cut, Extra... extra) {
  run_result out;
  out.x.resize(n);
  out.late.resize(n);
  std::vector<distopt::statistics> stats(n);
  std::vector<double> largest(n, 0.0);
  std::vector<std::string> checkpoints(n);
  std::vector<std::vector<std::uint64_t>> seen(n);
  std::atomic<int> reached{0};
  std::mutex m;
  auto world = [&](int from, bool resumed) {
    const auto start = std::chrono::steady_clock::now() + 20ms - from * 250us;
    distopt::run_threads(
        n,
        [&](distopt::transport_ref t) {
          const auto r = static_cast<std::size_t>(t.rank());
          Opt opt(t, Eigen::VectorXf::Constant(dim, resumed ? 100.0f : 0.0f),
                  {.learning_rate = eta, .seed = 3, .timeout = harness::k_timeout}, extra...);
          if (resumed) {
            std::istringstream in(checkpoints[r]);
            opt.load(in);
          }
          Eigen::VectorXf g(dim);
          for (int k = from; k < steps || reached.load() < n; ++k) {
            if (k == cut && !resumed) {
              opt.quiesce();
              std::ostringstream save;
              opt.save(save);
              checkpoints[r] = save.str();
              return;
            }
            p.shards[r].gradient(opt.parameters(), g);
            if (k >= steps - steps / 10) largest[r] = std::max(largest[r], static_cast<double>(g.norm()));
            std::this_thread::sleep_until(start + k * 250us);
            opt.step(g);
            out.late[r].push_back(recorded_since(opt.stats(), seen[r]));
            if (k + 1 == steps) ++reached;
          }
          opt.finish();
          std::lock_guard lock(m);
          out.x[r] = opt.parameters();
          stats[r] = opt.stats();
        },
        harness::k_threads);
  };
  if (cut > 0) world(0, false);
  world(std::max(cut, 0), cut > 0);
  double sum = 0, count = 0;
  std::uint64_t fewest = stats[0].steps;
  for (const auto& s : stats) {
    for (std::size_t i = 0; i < s.staleness_histogram.size(); ++i) {
      sum += static_cast<double>(i * s.staleness_histogram[i]);
      count += static_cast<double>(s.staleness_histogram[i]);
    }
    fewest = std::min(fewest, s.steps);
  }
  for (const auto& s : stats) out.tail += static_cast<double>(s.steps - fewest);
  out.gradient = *std::max_element(largest.begin(), largest.end());
  out.staleness = std::max(nominal_staleness, count > 0 ? sum / count : 0.0);
  return out;
}

template <class Opt, class... Extra>
run_result run(const heterogeneous_problem& p, float eta, Extra... extra) {
  return run_with_cut<Opt>(p, eta, -1, extra...);
}

double worst_distance(const std::vector<Eigen::VectorXf>& xs, const Eigen::VectorXd& ref) {
  double w = 0;
  for (const auto& x : xs) w = std::max(w, (x.cast<double>() - ref).norm());
  return w;
}

}  // namespace

TEST_CASE("SSP and AsySGD on shards with different optima reach the O(eta tau) neighbourhood of the optimum") {
  // eta = 0.05, 1/30 of the synchronous stability limit 2 / lambda_max(mean H); no staleness-aware step.
  namespace alg = distopt::algorithms;
  const heterogeneous_problem p(5);
  constexpr float eta = 0.05f;
  const double decay = 1 - eta * p.mu;
  const double nominal = p.server_bound(eta, p.h_max, nominal_staleness, 0, n);
  INFO("no-communication control: ", p.control, ", bound at the nominal staleness: ", nominal);
  REQUIRE(nominal < p.control / 2);
  auto check = [&](const run_result& r) {
    const double late = r.late_at_end(r.staleness, decay, [](double a, double b) { return a + b; });
    const double bound = p.server_bound(eta, r.gradient, r.staleness, r.tail, late);
    INFO("distance ", worst_distance(r.x, p.optimum), ", bound ", bound, " (G ", r.gradient, ", s ", r.staleness,
         ", T ", r.tail, ", E ", late, "), |x*| ", p.optimum.norm());
    CHECK(worst_distance(r.x, p.optimum) <= bound);
    for (std::size_t k = 1; k < r.x.size(); ++k) CHECK(harness::same_bits(r.x[k], r.x[0]));  // finish(): one model
  };
  SUBCASE("ssp_sgd<2>") { check(run<alg::ssp_sgd<2>>(p, eta)); }
  SUBCASE("async_ps_sgd") { check(run<alg::async_ps_sgd<>>(p, eta)); }
  SUBCASE("async_ps_sgd, two shards") {
    check(run<alg::async_ps_sgd<>>(p, eta, distopt::compress::identity{},
                                   distopt::topology::parameter_server{.shards = 2}));
  }
  SUBCASE("async_ps_sgd, resumed from a checkpoint (quiesce) 4/5 of the way, into optimizers built from x0 = 100") {
    check(run_with_cut<alg::async_ps_sgd<>>(p, eta, steps - steps / 5));
  }
}

TEST_CASE("AD-PSGD and SwarmSGD on shards with different optima: every model reaches the O(eta tau) neighbourhood") {
  namespace alg = distopt::algorithms;
  const heterogeneous_problem p(5);
  constexpr float eta = 0.01f;
  const double decay = 1 - eta * p.mu;
  auto check = [&](const run_result& r, int local_steps) {
    const double nominal = p.gossip_bound(eta, p.h_max, nominal_staleness, 0, local_steps);
    const double late =
        std::max(r.staleness, r.late_at_end(0, decay, [](double a, double b) { return std::max(a, b); }));
    const double bound = p.gossip_bound(eta, r.gradient, late, r.tail, local_steps);
    INFO("no-communication control: ", p.control, ", bound at the nominal staleness: ", nominal);
    INFO("distance ", worst_distance(r.x, p.optimum), ", bound ", bound, " (G ", r.gradient, ", s ", r.staleness,
         ", s* ", late, ", T ", r.tail, "), |x*| ", p.optimum.norm());
    REQUIRE(nominal < p.control / 2);
    CHECK(worst_distance(r.x, p.optimum) <= bound);
  };
  SUBCASE("ad_psgd") { check(run<alg::ad_psgd<>>(p, eta), 1); }
  SUBCASE("swarm_sgd<2>") { check(run<alg::swarm_sgd<2>>(p, eta), 2); }
  SUBCASE("swarm_sgd<2>, resumed from a checkpoint (quiesce) 4/5 of the way, into optimizers built from x0 = 100") {
    check(run_with_cut<alg::swarm_sgd<2>>(p, eta, steps - steps / 5), 2);
  }
}
