// Checkpoints under MPI (mpirun -np 3): every rank trains k steps, saves, and trains m more
// (the reference); then each loads its checkpoint into a freshly built optimizer on the same
// communicator and trains the same m steps. The parameters must be bit-identical on every
// rank, for minibatch_sgd with momentum (MPI_Allreduce) and CHOCO-SGD on a ring.

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>

#include <distopt/algorithms.hpp>
#include <distopt/transport/mpi.hpp>

namespace {

using namespace std::chrono_literals;
constexpr Eigen::Index dim = 32;

// Worker r's gradient in step s: x - c_r plus noise keyed by (r, s); the workers disagree.
Eigen::VectorXf gradient(int rank, int step, const Eigen::VectorXf& x) {
  distopt::rng target(17, static_cast<std::uint32_t>(rank), 0, distopt::purpose::user);
  distopt::rng noise(18, static_cast<std::uint32_t>(rank), static_cast<std::uint32_t>(step), distopt::purpose::user);
  Eigen::VectorXf g(dim);
  for (Eigen::Index i = 0; i < dim; ++i) g(i) = x(i) - 3.0f * target.normal() + 0.1f * noise.normal();
  return g;
}

bool same_bits(const Eigen::VectorXf& a, const Eigen::VectorXf& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}

template <class Opt>
void check_resume_over_mpi(const distopt::options& o, auto... policies) {
  constexpr int k = 5, m = 6;
  distopt::mpi_transport t(MPI_COMM_WORLD, {.timeout = 20s});
  const int r = t.rank();
  auto train = [&](Opt& opt, int from, int steps) {
    for (int s = from; s < from + steps; ++s) opt.step(gradient(r, s, opt.parameters()));
  };
  std::ostringstream checkpoint;
  Eigen::VectorXf reference;
  {
    Opt opt(t, Eigen::VectorXf::LinSpaced(dim, -1.0f, 1.0f), o, policies...);
    train(opt, 0, k);
    opt.save(checkpoint);
    train(opt, k, m);
    reference = opt.parameters();
    opt.finish();
  }
  Opt opt(t, Eigen::VectorXf::Zero(dim), o, policies...);
  std::istringstream in(checkpoint.str());
  opt.load(in);
  train(opt, k, m);
  INFO("rank ", r, " of ", t.size());
  CHECK(same_bits(opt.parameters(), reference));
  opt.finish();
}

}  // namespace

TEST_CASE("mpi: minibatch_sgd with momentum resumes from its checkpoint bit for bit") {
  check_resume_over_mpi<distopt::algorithms::minibatch_sgd>({.learning_rate = 0.05f, .momentum = 0.9f, .seed = 4});
}

TEST_CASE("mpi: CHOCO-SGD on a ring resumes from its checkpoint bit for bit") {
  check_resume_over_mpi<distopt::algorithms::choco_sgd<>>(
      {.learning_rate = 0.05f, .seed = 4}, distopt::compress::top_k{0.25},
      distopt::topology::gossip<distopt::topology::ring, distopt::mixing::choco>{{}, {.consensus_step = 0.3f}});
}
