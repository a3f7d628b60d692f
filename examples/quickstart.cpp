// Quickstart: 4 workers, as threads of this process, train l2-regularised logistic
// regression with synchronous data-parallel SGD. Each worker holds an iid shard
// of a seeded synthetic data set and computes mini-batch gradients on it; the
// optimizer averages them with a ring allreduce every step. With --transport mpi
// the same code runs once per MPI rank instead (see launch.hpp).
//
//   build/examples/quickstart [--transport threads|mpi] [workers] [epochs]
//   mpirun -np 4 build/examples/quickstart --transport mpi

#include <CLI/CLI.hpp>
#include <cstdio>
#include <mutex>
#include <string>

#include <distopt/distopt.hpp>
#include <distopt/problems.hpp>

#include "launch.hpp"

int main(int argc, char** argv) try {
  std::string transport = "threads";
  int requested_workers = 0;  // 0: the launcher's default (4 threads, or the MPI world)
  int epochs = 10;
  CLI::App app{"distopt quickstart: synchronous data-parallel SGD on logistic regression"};
  app.add_option("--transport", transport, "threads or mpi")->check(CLI::IsMember({"threads", "mpi"}));
  app.add_option("workers", requested_workers, "number of workers (threads)")->check(CLI::NonNegativeNumber);
  app.add_option("epochs", epochs, "passes over the data")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  const examples::launcher launch(transport, argc, argv);
  const int workers = launch.workers(requested_workers);
  const auto data = distopt::problems::synthetic_classification(/*samples=*/8192, /*dim=*/64, /*seed=*/1);
  const distopt::problems::logistic_regression problem(data.features, data.targets, /*lambda=*/1e-3f);
  std::mutex print;

  // [quickstart]
  using sgd = distopt::algorithms::minibatch_sgd;  // identity, allreduce, synchronous, every step
  // launch.run: distopt::run_threads(workers, ...) by default; once per rank under --transport mpi
  launch.run(workers, [&](distopt::transport_ref t) {
    distopt::data::minibatch_sampler batches(
        distopt::data::iid_shard(problem.samples(), t.rank(), t.size(), /*seed=*/7), /*batch=*/32, /*seed=*/7,
        t.rank());
    sgd opt(t, Eigen::VectorXf::Zero(problem.dimension()), {.learning_rate = 0.05f, .momentum = 0.9f, .seed = 7});
    const std::size_t steps_per_epoch = problem.samples() / (32 * static_cast<std::size_t>(t.size()));
    Eigen::VectorXf g;
    for (int epoch = 1; epoch <= epochs; ++epoch) {
      for (std::size_t b = 0; b < steps_per_epoch; ++b) {  // the same count on every worker
        problem.gradient(opt.parameters(), batches.next(), g);
        opt.step(g);
      }
      if (t.rank() == 0) std::printf("epoch %2d  loss %.6f\n", epoch, problem.loss(opt.parameters()));
    }
    opt.finish();
    const distopt::statistics& s = opt.stats();
    std::lock_guard lock(print);
    std::printf("rank %d: %llu steps, %llu rounds, %.2f MB sent, %.3f s blocked\n", t.rank(),
                static_cast<unsigned long long>(s.steps), static_cast<unsigned long long>(s.rounds),
                static_cast<double>(s.bytes_sent) / 1e6, std::chrono::duration<double>(s.time_blocked).count());
  });
  // [quickstart]
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "quickstart: %s\n", e.what());
  return 1;
}
