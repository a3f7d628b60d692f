// Checkpoints under MPI (mpirun -np 3): every rank trains k steps, saves, and trains m more
// (the reference); then each loads its checkpoint into a freshly built optimizer on the same
// communicator and trains the same m steps. The parameters must be bit-identical on every
// rank, for minibatch_sgd with momentum (MPI_Allreduce) and CHOCO-SGD on a ring.

#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <sstream>
#include <string>

#include <distopt/algorithms.hpp>
#include <distopt/transport/mpi.hpp>

#include "checkpoint_scenario.hpp"

namespace {

using namespace std::chrono_literals;
namespace scenario = checkpoint_scenario;

bool same_bits(const Eigen::VectorXf& a, const Eigen::VectorXf& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}

template <class Opt>
void check_resume_over_mpi(const distopt::options& o, auto... policies) {
  using scenario::k, scenario::m;
  distopt::mpi_transport t(MPI_COMM_WORLD, {.timeout = 20s});
  const int r = t.rank();
  std::ostringstream checkpoint;
  Eigen::VectorXf reference;
  {
    Opt opt(t, scenario::x0(), o, policies...);
    scenario::train(opt, r, 0, k);
    opt.save(checkpoint);
    scenario::train(opt, r, k, m);
    reference = opt.parameters();
    opt.finish();
  }
  Opt opt(t, Eigen::VectorXf::Zero(scenario::dim), o, policies...);
  std::istringstream in(checkpoint.str());
  opt.load(in);
  scenario::train(opt, r, k, m);
  INFO("rank ", r, " of ", t.size());
  CHECK(same_bits(opt.parameters(), reference));
  opt.finish();
}

}  // namespace

TEST_CASE("mpi: minibatch_sgd with momentum resumes from its checkpoint bit for bit") {
  check_resume_over_mpi<distopt::algorithms::minibatch_sgd>(scenario::momentum_options);
}

TEST_CASE("mpi: CHOCO-SGD on a ring resumes from its checkpoint bit for bit") {
  check_resume_over_mpi<distopt::algorithms::choco_sgd<>>(scenario::choco_options, scenario::choco_compressor,
                                                          scenario::choco_ring);
}
