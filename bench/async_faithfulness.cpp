// async_faithfulness: the numbers issue 15 asks for, measured the way a user would meet them.
// It uses only the public API that every version since the first asynchronous one has, so the same
// file measures an old checkout and the current one (compile it against either include/ tree).
//
//  1. AsySGD / SSP on least squares whose shards disagree (each worker's own optimum x_k* = x_true
//     + N(0, I)), 4 workers, learning rate 0.05, a step "computes" for 200 us: step s of every
//     worker starts no earlier than s * 250 us after a common start (a paced clock), so the workers
//     push at one rate and the fixed point is x*, not an optimum weighted by how fast each worker
//     happened to run. Reported: the server model's relative distance |x - x*| / |x*| after the
//     run, and the mean staleness the workers recorded. x* is the optimum of the sum, closed form.
//     The same unpaced (each step sleeps 200 us), as the issue measured it: then the workers' rates
//     differ with the machine's load, and so does where AsySGD settles.
//  2. Read-my-writes: worker k's gradient is e_k (it moves only coordinate k), so the model must
//     show all of worker k's own pushes in coordinate k of worker k's parameters. Rank 3 sleeps 2 ms
//     per step (a straggler). Reported: the largest number of its own pushes a worker's parameters
//     lacked after a step returned, over every step of every worker.
//
//   async_faithfulness [--runs R]      (prints one table; exit 0)

#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <distopt/distopt.hpp>
#include <distopt/problems.hpp>

namespace {

using namespace std::chrono_literals;
constexpr int n = 4, dim = 8, rows = 60;

struct problem {
  std::vector<distopt::problems::least_squares> shards;
  Eigen::VectorXd optimum;

  explicit problem(std::uint64_t seed) {
    distopt::rng g(seed, 0, 0, distopt::purpose::user);
    Eigen::VectorXd truth(dim);
    for (Eigen::Index j = 0; j < dim; ++j) truth(j) = g.normal();
    Eigen::MatrixXd all_a(n * rows, dim);
    Eigen::VectorXd all_b(n * rows);
    for (int k = 0; k < n; ++k) {
      Eigen::VectorXf own = truth.cast<float>();
      for (Eigen::Index j = 0; j < dim; ++j) own(j) += g.normal();
      Eigen::MatrixXf a(rows, dim);
      for (Eigen::Index i = 0; i < rows; ++i)
        for (Eigen::Index j = 0; j < dim; ++j) a(i, j) = g.normal();
      const Eigen::VectorXf b = a * own;
      all_a.middleRows(k * rows, rows) = a.cast<double>();
      all_b.segment(k * rows, rows) = b.cast<double>();
      shards.emplace_back(a, b);
    }
    optimum = all_a.colPivHouseholderQr().solve(all_b);
  }
};

double mean_staleness(const distopt::statistics& s) {
  double sum = 0, count = 0;
  for (std::size_t v = 0; v < s.staleness_histogram.size(); ++v) {
    sum += static_cast<double>(v) * static_cast<double>(s.staleness_histogram[v]);
    count += static_cast<double>(s.staleness_histogram[v]);
  }
  return count > 0 ? sum / count : 0.0;
}

struct convergence {
  double error = 0, staleness = 0;
};

// The staleness-aware step: a knob of the staleness policy now, of the options in old versions.
template <class Opt, class Options>
Opt make(distopt::transport_ref t, const Eigen::VectorXf& x0, Options o, bool aware) {
  if constexpr (requires { o.staleness_aware_lr; }) {
    o.staleness_aware_lr = aware;
    return Opt(t, x0, o);
  } else {
    typename Opt::staleness_type s{};
    s.staleness_aware_lr = aware;
    return Opt(t, x0, o, {}, {}, s);
  }
}

template <class Opt>
convergence converge(const problem& p, bool aware, int steps, bool paced) {
  distopt::options o;
  o.learning_rate = 0.05f;
  o.timeout = 30s;
  convergence out;
  std::mutex m;
  const auto start = std::chrono::steady_clock::now() + 20ms;
  distopt::run_threads(n, [&](distopt::transport_ref t) {
    Opt opt = make<Opt>(t, Eigen::VectorXf::Zero(dim), o, aware);
    const auto& shard = p.shards[static_cast<std::size_t>(t.rank())];
    Eigen::VectorXf g(dim);
    for (int s = 0; s < steps; ++s) {
      if (paced)
        std::this_thread::sleep_until(start + s * 250us);
      else
        std::this_thread::sleep_for(200us);
      shard.gradient(opt.parameters(), g);
      opt.step(g);
    }
    opt.finish();
    std::lock_guard lock(m);
    out.staleness += mean_staleness(opt.stats()) / n;
    if (t.rank() == 0) out.error = (opt.parameters().template cast<double>() - p.optimum).norm() / p.optimum.norm();
  });
  return out;
}

// The largest number of a worker's own pushes missing from its parameters after a step.
template <class Opt>
long read_my_writes_deficit(int steps) {
  distopt::options o;
  o.learning_rate = 1.0f;
  o.timeout = 30s;
  long worst = 0;
  std::mutex m;
  distopt::run_threads(n, [&](distopt::transport_ref t) {
    const int k = t.rank();
    Opt opt(t, Eigen::VectorXf::Zero(n), o);
    Eigen::VectorXf g = Eigen::VectorXf::Zero(n);
    g(k) = 1.0f;
    // One push of e_k moves coordinate k by -eta/n on the server; measured from the first push the
    // server answers, so the unit does not depend on how the version scales a push.
    double unit = 0;
    long own_worst = 0;
    for (int s = 1; s <= steps; ++s) {
      std::this_thread::sleep_for(k == n - 1 ? 2000us : 200us);
      opt.step(g);
      const double moved = -static_cast<double>(opt.parameters()(k));
      if (unit == 0 && moved > 0) unit = moved / s;  // the first nonzero view: s pushes at most
      const long seen = unit > 0 ? std::lround(moved / unit) : 0;
      own_worst = std::max(own_worst, static_cast<long>(s) - seen);
    }
    opt.finish();
    std::lock_guard lock(m);
    worst = std::max(worst, own_worst);
  });
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 3;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::strcmp(argv[i], "--runs") == 0) runs = std::atoi(argv[i + 1]);
  using async = distopt::algorithms::async_ps_sgd<>;
  using ssp = distopt::algorithms::ssp_sgd<2>;
  std::printf("%-42s %s\n", "measurement", "runs");
  const auto row = [&](const char* name, auto measure) {
    std::printf("%-42s", name);
    for (int r = 0; r < runs; ++r) std::printf(" %10s", measure(r).c_str());
    std::printf("\n");
    std::fflush(stdout);
  };
  const auto fmt = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.3g", v);
    return std::string(b);
  };
  const auto convergence_rows = [&]<class Opt>(const std::string& name, bool aware, bool paced) {
    std::vector<convergence> c;
    for (int r = 0; r < runs; ++r) c.push_back(converge<Opt>(problem(100 + r), aware, 2000, paced));
    const std::string how = name + (aware ? " aware" : "") + (paced ? ", paced" : ", unpaced");
    row((how + ": rel. error").c_str(), [&](int r) { return fmt(c[r].error); });
    row((how + ": staleness").c_str(), [&](int r) { return fmt(c[r].staleness); });
  };
  for (const bool paced : {true, false}) {
    convergence_rows.template operator()<async>("asysgd", false, paced);
    convergence_rows.template operator()<async>("asysgd", true, paced);
    convergence_rows.template operator()<ssp>("ssp<2>", false, paced);
  }
  row("read-my-writes deficit, ssp<2>", [&](int) { return std::to_string(read_my_writes_deficit<ssp>(300)); });
  row("read-my-writes deficit, asysgd", [&](int) { return std::to_string(read_my_writes_deficit<async>(300)); });
  std::printf("async_faithfulness: done\n");
}
