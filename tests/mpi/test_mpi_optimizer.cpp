// Synchronous configurations give bit-identical parameters under MPI and over
// threads: every rank trains over mpi_transport, then runs the same training with
// run_threads in its own process (the independent second transport) and compares
// its own worker's parameters bit for bit. Also: the MPI ranks agree with each
// other, and the training did reduce the loss (so equal parameters mean something).

#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include <distopt/algorithms.hpp>
#include <distopt/data/partition.hpp>
#include <distopt/problems/least_squares.hpp>
#include <distopt/problems/synthetic.hpp>
#include <distopt/transport/mpi.hpp>
#include <distopt/transport/thread.hpp>

namespace {

using namespace std::chrono_literals;

const distopt::problems::labelled_data data =
    distopt::problems::synthetic_regression(/*samples=*/768, /*dim=*/24, /*noise=*/0.1f, /*seed=*/5);
const distopt::problems::least_squares problem(data.features, data.targets);
constexpr int steps = 60;
constexpr std::uint64_t seed = 11;

/// Trains Optimizer on this worker's shard and returns its final parameters.
template <class Optimizer>
Eigen::VectorXf train(distopt::transport_ref t, float momentum) {
  distopt::data::minibatch_sampler batches(distopt::data::iid_shard(problem.samples(), t.rank(), t.size(), seed),
                                           /*batch=*/8, seed, t.rank());
  Optimizer opt(t, Eigen::VectorXf::Zero(problem.dimension()),
                {.learning_rate = 0.05f, .momentum = momentum, .seed = seed, .timeout = 20s});
  Eigen::VectorXf g;
  for (int s = 0; s < steps; ++s) {
    problem.gradient(opt.parameters(), batches.next(), g);
    opt.step(g);
  }
  opt.finish();
  return opt.parameters();
}

bool same_bits(const Eigen::VectorXf& a, const Eigen::VectorXf& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}

template <class Optimizer>
void check_mpi_equals_threads(float momentum) {
  distopt::mpi_transport t(MPI_COMM_WORLD, {.timeout = 20s});
  const Eigen::VectorXf over_mpi = train<Optimizer>(t, momentum);

  Eigen::VectorXf over_threads;
  distopt::run_threads(t.size(),
                       [&](distopt::transport_ref tt) {
                         Eigen::VectorXf x = train<Optimizer>(tt, momentum);
                         if (tt.rank() == t.rank()) over_threads = std::move(x);
                       },
                       {.timeout = 20s});

  INFO("rank ", t.rank(), " of ", t.size());
  CHECK(same_bits(over_mpi, over_threads));
  // Rank 0's parameters, bit for bit, on every rank.
  Eigen::VectorXf first = over_mpi;
  MPI_Bcast(first.data(), static_cast<int>(first.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
  CHECK(same_bits(first, over_mpi));
  CHECK(problem.loss(over_mpi) < 0.1 * problem.loss(Eigen::VectorXf::Zero(problem.dimension())));
}

}  // namespace

TEST_CASE("mpi vs threads: minibatch_sgd gives bit-identical parameters") {
  check_mpi_equals_threads<distopt::algorithms::minibatch_sgd>(0.0f);
  check_mpi_equals_threads<distopt::algorithms::minibatch_sgd>(0.9f);
}

TEST_CASE("mpi vs threads: qsgd_sgd<8> gives bit-identical parameters") {
  check_mpi_equals_threads<distopt::algorithms::qsgd_sgd<8>>(0.0f);
}

TEST_CASE("mpi vs threads: local_sgd<4> gives bit-identical parameters") {
  check_mpi_equals_threads<distopt::algorithms::local_sgd<4>>(0.0f);
}
