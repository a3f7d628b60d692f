// bench/async_scaling: do the asynchronous policies let many workers share few cores?
// The requirement: "64 asynchronous workers run in one process on 2 cores without burning
// CPU while waiting (report steps/s per core at n = 1 and n = 64)".
//
// Each worker (a thread of run_threads) owns a shard of a least-squares problem (rows x dim,
// dense) and takes --steps full-batch gradient steps on it, then finish(). Configurations:
// ad_psgd<complete>, swarm_sgd<4> and async_ps_sgd<identity>, for n in --workers. Per run:
// wall time, process CPU time (all threads, user + sys) and the steps taken. The reference
// row is the same gradient computation and SGD update in one thread with no optimizer, so
// the table reads as ratios. Each row is the shortest of --repeat runs (the machine may be
// shared); the straggler runs are run once.
//   util          CPU / (wall * cores), cores = std::thread::hardware_concurrency()
//   steps/s/core  steps/s / min(n, cores) (column "/core")
//   CPU us/st     process CPU per step; "vs n=1" divides by the same configuration at n = 1
//                 (the cost of running n workers), "vs ref" by the reference (optimizer +
//                 communication + scheduling on top of the gradient), "vs thr" by the
//                 "compute only (threads)" run with the same n: n threads of the same steps
//                 without an optimizer, which takes out what n threads of compute alone cost
//                 on these cores (scheduling, caches), leaving the optimizer's overhead
//   loop us       the workers' own thread CPU inside their step loops, per step (no finish())
//   fin CPU       the workers' thread CPU inside finish(), summed (waiting for the others)
//   loss/l0       mean loss over the n shards at the mean of the n final models, over that
//                 at x0 (a sanity check that the runs optimise, not a convergence study;
//                 gradients are clipped to norm 1e3 so that a diverging run stays finite)
//
// Straggler runs (workers that WAIT), async_ps_sgd and ad_psgd with n = --straggler-workers:
// every worker takes --straggler-steps steps, the last rank sleeping --straggler-sleep-ms
// after each, so the others finish early and wait in finish() until it is done (async_ps: the
// server thread of rank 0 and the waiting workers poll. ad_psgd: all poll).
// Reported for the waiting phase ("wait s": from the moment the last fast worker entered
// finish() to the end; "waitCPU": the process CPU over it):
//   cores         process CPU / wall over that phase (cores kept busy)
//   /waiter       that, per waiting thread (n - 1), in % of a core
//   finish() CPU  the waiting workers' own thread CPU time inside finish() over their wall
//                 time inside it (per-thread clocks), in %
//   wakeups/s     voluntary context switches per second per waiting thread (a condition
//                 variable: ~0; a poll with a 1 ms sleep: ~1000)
//
//   build/bench/async_scaling [--workers 1,2,8,64] [--steps 400] [--dim 512] [--rows 256] [--repeat 3]
//                             [--straggler-workers N] [--straggler-steps 100] [--straggler-sleep-ms 10]

#include <sys/resource.h>
#include <time.h>

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <distopt/algorithms.hpp>
#include <distopt/problems.hpp>
#include <distopt/transport/thread.hpp>

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_of(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double seconds_of(const timeval& tv) { return static_cast<double>(tv.tv_sec) + 1e-6 * static_cast<double>(tv.tv_usec); }

/// What the process has used so far.
struct usage {
  double wall = 0, cpu = 0, sys = 0;
  long voluntary_switches = 0;

  static usage now() {
    usage u;
    u.wall = std::chrono::duration<double>(clock_type::now().time_since_epoch()).count();
    u.cpu = seconds_of(CLOCK_PROCESS_CPUTIME_ID);
    rusage r{};
    getrusage(RUSAGE_SELF, &r);
    u.sys = seconds_of(r.ru_stime);
    u.voluntary_switches = r.ru_nvcsw;
    return u;
  }
  usage operator-(const usage& o) const {
    return {wall - o.wall, cpu - o.cpu, sys - o.sys, voluntary_switches - o.voluntary_switches};
  }
};

struct settings {
  std::vector<int> workers{1, 2, 8, 64};
  int steps = 400;
  int dim = 512;
  int rows = 256;
  int straggler_workers = 0;  // 0: the largest of `workers`
  int straggler_steps = 0;    // 0: min(steps, 100)
  int straggler_sleep_ms = 10;
  int repeat = 3;
  float learning_rate = 0.02f;
};

/// The shards of one least-squares problem, one per worker (b = A x* + noise over all rows).
struct problem {
  std::vector<distopt::problems::least_squares> shards;
  int dim = 0;

  problem(int max_workers, int rows, int dim_) : dim(dim_) {
    const auto data = distopt::problems::synthetic_regression(static_cast<Eigen::Index>(max_workers) * rows, dim, 0.1f,
                                                              /*seed=*/7);
    shards.reserve(static_cast<std::size_t>(max_workers));
    for (int k = 0; k < max_workers; ++k)
      shards.emplace_back(data.features.middleRows(static_cast<Eigen::Index>(k) * rows, rows),
                          data.targets.segment(static_cast<Eigen::Index>(k) * rows, rows));
  }
  /// g = the full-batch gradient of shard k at x, clipped to norm <= max_gradient_norm (the
  /// runs measure speed; clipping keeps a diverging run finite instead of aborting it).
  void gradient(int k, const Eigen::Ref<const Eigen::VectorXf>& x, Eigen::VectorXf& g) const {
    shards[static_cast<std::size_t>(k)].gradient(x, g);
    const float norm = g.norm();
    if (norm > max_gradient_norm) g *= max_gradient_norm / norm;
  }
  static constexpr float max_gradient_norm = 1e3f;
  /// Mean loss over the first n shards.
  double loss(const Eigen::VectorXf& x, int n) const {
    double s = 0;
    for (int k = 0; k < n; ++k) s += shards[static_cast<std::size_t>(k)].loss(x);
    return s / n;
  }
};

struct run_result {
  std::string config;
  int n = 0;
  std::uint64_t steps = 0;
  usage used;
  double loss_ratio = 0;
  std::size_t lost_peers = 0;
  double loop_cpu = 0;                     // thread CPU inside the step loops, summed over the workers
  double finish_cpu = 0, finish_wall = 0;  // thread CPU and wall inside finish(), summed over the waiting workers
  usage waiting;                           // straggler runs: from the moment the last waiting worker entered finish()
};

/// The reference: the same gradient and SGD update, one thread, no optimizer.
run_result reference(const problem& p, int steps, float lr) {
  Eigen::VectorXf x = Eigen::VectorXf::Zero(p.dim), g(p.dim);
  const usage start = usage::now();
  for (int s = 0; s < steps; ++s) {
    p.gradient(0, x, g);
    x -= lr * g;
  }
  run_result r;
  r.used = usage::now() - start;
  r.loop_cpu = r.used.cpu;
  r.config = "reference (1 thread)";
  r.n = 1;
  r.steps = static_cast<std::uint64_t>(steps);
  r.loss_ratio = p.loss(x, 1) / p.loss(Eigen::VectorXf::Zero(p.dim), 1);
  return r;
}

// AsySGD's step is scaled by 1/(1 + staleness) (the others' pushes a push missed, in rounds):
// staleness_aware_lr, which only the parameter server has.
template <class Opt>
Opt make_worker(distopt::transport_ref t, const Eigen::VectorXf& x0, const distopt::options& o) {
  if constexpr (requires { requires distopt::server_topology<typename Opt::topology_type>; })
    return Opt(t, x0, o, {}, {}, {.staleness_aware_lr = true});
  else
    return Opt(t, x0, o);
}

/// n workers of Opt, `steps` steps each; with straggler >= 0, that rank sleeps after each step.
template <class Opt>
run_result run(const char* config, const problem& p, int n, int steps, float lr, int straggler = -1,
               std::chrono::milliseconds straggler_sleep = {}) {
  std::atomic<std::uint64_t> total_steps{0};
  std::atomic<std::size_t> lost{0};
  std::atomic<int> entered_finish{0};
  const int fast_workers = straggler >= 0 ? n - 1 : n;
  std::mutex m;
  std::optional<usage> all_waiting;  // when the last fast worker entered finish()
  double loop_cpu = 0, finish_cpu = 0, finish_wall = 0;
  const Eigen::VectorXf x0 = Eigen::VectorXf::Zero(p.dim);
  Eigen::VectorXf mean_model = Eigen::VectorXf::Zero(p.dim);

  const usage start = usage::now();
  distopt::run_threads(n, [&](distopt::transport_ref t) {
    Opt opt = make_worker<Opt>(t, x0, {.learning_rate = lr, .seed = 1});
    Eigen::VectorXf g(p.dim);
    const double loop0 = seconds_of(CLOCK_THREAD_CPUTIME_ID);
    for (int s = 0; s < steps; ++s) {
      p.gradient(t.rank(), opt.parameters(), g);
      opt.step(g);
      if (t.rank() == straggler) std::this_thread::sleep_for(straggler_sleep);
    }
    const bool waiter = t.rank() != straggler;
    if (waiter && entered_finish.fetch_add(1) + 1 == fast_workers) {
      std::lock_guard lock(m);
      all_waiting = usage::now();
    }
    const double cpu0 = seconds_of(CLOCK_THREAD_CPUTIME_ID);
    const double loop = cpu0 - loop0;
    const auto wall0 = clock_type::now();
    opt.finish();
    const double cpu = seconds_of(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    const double wall = std::chrono::duration<double>(clock_type::now() - wall0).count();
    total_steps += opt.stats().steps;
    lost += opt.stats().lost_peers.size();
    std::lock_guard lock(m);
    loop_cpu += loop;
    if (waiter) {
      finish_cpu += cpu;
      finish_wall += wall;
    }
    mean_model += opt.parameters() / static_cast<float>(n);
  });
  const usage end = usage::now();

  run_result r;
  r.config = config;
  r.n = n;
  r.steps = total_steps.load();
  r.used = end - start;
  r.loss_ratio = p.loss(mean_model, n) / p.loss(x0, n);
  r.lost_peers = lost.load();
  if (all_waiting) r.waiting = end - *all_waiting;
  r.loop_cpu = loop_cpu;
  r.finish_cpu = finish_cpu;
  r.finish_wall = finish_wall;
  return r;
}

/// The optimizer's interface without communication: each worker takes plain SGD steps on
/// its own shard. Run with n threads, it measures what n threads of compute alone cost on
/// these cores (scheduling, caches), which the "vs thr" column divides out.
class compute_only {
 public:
  compute_only(distopt::transport_ref, Eigen::Ref<const Eigen::VectorXf> x0, distopt::options o)
      : x_(x0), learning_rate_(o.learning_rate) {}
  void step(Eigen::Ref<const Eigen::VectorXf> g) {
    x_ -= learning_rate_ * g;
    ++stats_.steps;
  }
  Eigen::Ref<const Eigen::VectorXf> parameters() const { return x_; }
  void finish() {}
  const distopt::statistics& stats() const { return stats_; }

 private:
  Eigen::VectorXf x_;
  float learning_rate_;
  distopt::statistics stats_;
};

using ad_psgd = distopt::algorithms::ad_psgd<distopt::topology::complete>;
using swarm_sgd = distopt::algorithms::swarm_sgd<4>;
using async_ps = distopt::algorithms::async_ps_sgd<distopt::compress::identity>;

/// The least disturbed (shortest) of `repeat` runs: the machine may be shared.
template <class Run>
run_result best_of(int repeat, Run run) {
  run_result best = run();
  for (int i = 1; i < repeat; ++i) {
    run_result r = run();
    if (r.used.wall < best.used.wall) best = std::move(r);
  }
  return best;
}

int parse_int(const std::string& flag, const char* text, int min) {
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < min || v > 1'000'000)
    throw std::runtime_error(flag + ": expected an integer >= " + std::to_string(min) + ", got '" + text + "'");
  return static_cast<int>(v);
}

settings parse(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::printf(
          "usage: async_scaling [--workers 1,2,8,64] [--steps 400] [--dim 512] [--rows 256] [--repeat 3]\n"
          "                     [--straggler-workers N (default: the largest of --workers)]\n"
          "                     [--straggler-steps min(steps, 100)] [--straggler-sleep-ms 10]\n");
      std::exit(0);
    }
    static const char* const known[] = {
        "--workers",           "--steps", "--dim", "--rows", "--repeat", "--straggler-workers", "--straggler-steps",
        "--straggler-sleep-ms"};
    if (std::none_of(std::begin(known), std::end(known), [&](const char* k) { return flag == k; }))
      throw std::runtime_error("unknown option " + flag + " (see --help)");
    if (i + 1 >= argc) throw std::runtime_error(flag + ": missing value (see --help)");
    const char* value = argv[++i];
    if (flag == "--workers") {
      s.workers.clear();
      std::string list = value;
      for (std::size_t pos = 0; pos <= list.size();) {
        const std::size_t comma = std::min(list.find(',', pos), list.size());
        s.workers.push_back(parse_int("--workers", list.substr(pos, comma - pos).c_str(), 1));
        pos = comma + 1;
      }
    } else if (flag == "--steps") {
      s.steps = parse_int(flag, value, 1);
    } else if (flag == "--dim") {
      s.dim = parse_int(flag, value, 1);
    } else if (flag == "--rows") {
      s.rows = parse_int(flag, value, 1);
    } else if (flag == "--repeat") {
      s.repeat = parse_int(flag, value, 1);
    } else if (flag == "--straggler-workers") {
      s.straggler_workers = parse_int(flag, value, 2);
    } else if (flag == "--straggler-steps") {
      s.straggler_steps = parse_int(flag, value, 1);
    } else if (flag == "--straggler-sleep-ms") {
      s.straggler_sleep_ms = parse_int(flag, value, 0);
    }
  }
  if (s.straggler_steps == 0) s.straggler_steps = std::min(s.steps, 100);
  if (s.straggler_workers == 0)
    s.straggler_workers = std::max(2, *std::max_element(s.workers.begin(), s.workers.end()));
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  const settings s = parse(argc, argv);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const int max_n = std::max(s.straggler_workers, *std::max_element(s.workers.begin(), s.workers.end()));
  const problem p(max_n, s.rows, s.dim);

  std::printf("async_scaling: %u cores (hardware_concurrency), %d steps per worker, least squares %d x %d per worker\n",
              cores, s.steps, s.rows, s.dim);
  double load[1] = {0};
  if (getloadavg(load, 1) == 1)  // other processes on these cores inflate wall times (CPU times less)
    std::printf("load average at start: %.2f\n", load[0]);

  // The reference runs as many steps as the largest run in total, so its time is stable.
  const int ref_steps = s.steps * *std::max_element(s.workers.begin(), s.workers.end());
  const run_result ref = best_of(s.repeat, [&] { return reference(p, ref_steps, s.learning_rate); });
  std::vector<run_result> rows;
  rows.push_back(ref);
  const auto run_all = [&]<class Opt>(const char* name) {
    for (int n : s.workers)
      rows.push_back(best_of(s.repeat, [&] { return run<Opt>(name, p, n, s.steps, s.learning_rate); }));
  };
  run_all.operator()<compute_only>("compute only (threads)");
  run_all.operator()<ad_psgd>("ad_psgd<complete>");
  run_all.operator()<swarm_sgd>("swarm_sgd<4>");
  run_all.operator()<async_ps>("async_ps_sgd<identity>");

  const auto cpu_per_step = [](const run_result& r) { return r.used.cpu / static_cast<double>(r.steps); };
  const auto find = [&](const char* config, int n) -> const run_result* {
    for (const run_result& r : rows)
      if (r.config == config && r.n == n) return &r;
    return nullptr;
  };
  // out = CPU per step of r over that of `base`, if there is one.
  const auto ratio = [&](char(&out)[16], const run_result& r, const run_result* base) {
    if (base) std::snprintf(out, sizeof out, "%.2f", cpu_per_step(r) / cpu_per_step(*base));
  };
  std::printf("\n%-23s %3s %6s %6s %6s %6s %4s %7s %7s %8s %6s %6s %6s %7s %7s %8s\n", "config", "n", "steps", "wall s",
              "CPU s", "sys s", "util", "steps/s", "/core", "CPU us/st", "vs n=1", "vs ref", "vs thr", "loop us",
              "fin CPU", "loss/l0");
  for (const run_result& r : rows) {
    const double steps = static_cast<double>(r.steps);
    const double steps_per_s = steps / r.used.wall;
    char vs_one[16] = "-", vs_ref[16] = "-", vs_threads[16] = "-";
    const bool is_ref = &r == &rows.front();
    ratio(vs_ref, r, &ref);
    if (!is_ref) {
      ratio(vs_one, r, find(r.config.c_str(), 1));
      ratio(vs_threads, r, find("compute only (threads)", r.n));
    }
    std::printf("%-23s %3d %6llu %6.3f %6.3f %6.3f %3.0f%% %7.0f %7.0f %8.2f %6s %6s %6s %7.2f %7.3f %8.2e%s\n",
                r.config.c_str(), r.n, static_cast<unsigned long long>(r.steps), r.used.wall, r.used.cpu, r.used.sys,
                100.0 * r.used.cpu / (r.used.wall * cores), steps_per_s, steps_per_s / std::min<double>(r.n, cores),
                1e6 * cpu_per_step(r), vs_one, vs_ref, vs_threads, 1e6 * r.loop_cpu / steps, r.finish_cpu, r.loss_ratio,
                r.lost_peers ? "  LOST PEERS" : "");
  }

  // Workers that wait: one straggler, the others wait for it in finish().
  const int n = s.straggler_workers;
  const auto sleep = std::chrono::milliseconds(s.straggler_sleep_ms);
  std::vector<run_result> waits;
  waits.push_back(run<async_ps>("async_ps_sgd<identity>", p, n, s.straggler_steps, s.learning_rate, n - 1, sleep));
  waits.push_back(run<ad_psgd>("ad_psgd<complete>", p, n, s.straggler_steps, s.learning_rate, n - 1, sleep));
  std::printf("\nstraggler: rank n-1 sleeps %d ms after each of its %d steps; the other n-1 wait in finish()\n",
              s.straggler_sleep_ms, s.straggler_steps);
  std::printf("%-26s %4s %7s %7s %7s %7s %7s %11s %9s %11s %6s\n", "config", "n", "wall s", "CPU s", "wait s",
              "waitCPU", "cores", "/waiter", "finish()", "wakeups/s", "lost");
  for (const run_result& r : waits) {
    const double waiters = r.n - 1;
    const double busy = r.waiting.wall > 0 ? r.waiting.cpu / r.waiting.wall : 0;
    std::printf("%-26s %4d %7.3f %7.3f %7.3f %7.3f %7.3f %10.2f%% %8.2f%% %11.0f %6zu\n", r.config.c_str(), r.n,
                r.used.wall, r.used.cpu, r.waiting.wall, r.waiting.cpu, busy, 100.0 * busy / waiters,
                r.finish_wall > 0 ? 100.0 * r.finish_cpu / r.finish_wall : 0.0,
                r.waiting.wall > 0 ? static_cast<double>(r.waiting.voluntary_switches) / r.waiting.wall / waiters : 0.0,
                r.lost_peers);
  }
  std::printf("\nasync_scaling: done\n");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "async_scaling: %s\n", e.what());
  return 1;
}
