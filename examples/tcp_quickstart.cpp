// The quickstart (examples/quickstart.cpp) over TCP: each worker is a process of
// its own. The launcher starts them and sets the environment each one reads
// (DISTOPT_RANK, DISTOPT_WORLD_SIZE, DISTOPT_COORDINATOR, DISTOPT_TOKEN):
//
//   scripts/distopt-launch -n 4 -- build/examples/tcp_quickstart [epochs]
//
// The run is bit-for-bit the one of `build/examples/quickstart 4 [epochs]` with
// threads: same data, same seeds, same reduction order.

#include <CLI/CLI.hpp>
#include <cstdio>

#include <distopt/distopt.hpp>
#include <distopt/problems.hpp>
#include <distopt/transport/tcp.hpp>

int main(int argc, char** argv) try {
  int epochs = 10;
  CLI::App app{"distopt quickstart over TCP, one process per rank (start it with scripts/distopt-launch)"};
  app.add_option("epochs", epochs, "passes over the data")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  const auto data = distopt::problems::synthetic_classification(/*samples=*/8192, /*dim=*/64, /*seed=*/1);
  const distopt::problems::logistic_regression problem(data.features, data.targets, /*lambda=*/1e-3f);

  using sgd = distopt::algorithms::minibatch_sgd;  // identity, allreduce, synchronous, every step
  const distopt::options opts{.learning_rate = 0.05f, .momentum = 0.9f, .seed = 7};
  // The handshake refuses peers that run another optimizer, model size or options.
  auto t = distopt::tcp_transport::from_environment(
      distopt::describe_run<sgd>(static_cast<std::uint64_t>(problem.dimension()), opts));
  distopt::data::minibatch_sampler batches(distopt::data::iid_shard(problem.samples(), t.rank(), t.size(), /*seed=*/7),
                                           /*batch=*/32, /*seed=*/7, t.rank());
  sgd opt(t, Eigen::VectorXf::Zero(problem.dimension()), opts);
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
  std::printf("rank %d: %llu steps, %llu rounds, %.2f MB sent, %.3f s blocked\n", t.rank(),
              static_cast<unsigned long long>(s.steps), static_cast<unsigned long long>(s.rounds),
              static_cast<double>(s.bytes_sent) / 1e6, std::chrono::duration<double>(s.time_blocked).count());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "tcp_quickstart: %s\n", e.what());
  return 1;
}
