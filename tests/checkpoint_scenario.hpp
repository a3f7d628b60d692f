#pragma once
// checkpoint_scenario.hpp: the run that the checkpoint tests over several processes share
// (test_checkpoint_tcp.cpp, mpi/test_mpi_checkpoint.cpp). Every rank starts from x0(), trains
// k steps, saves its checkpoint and trains m more (the reference); a freshly built optimizer
// loads the checkpoint and trains the same m steps, which must give the reference's parameters
// bit for bit. Each test resumes the same two optimizers: minibatch_sgd with momentum, and
// CHOCO-SGD on a ring.
//
//   check<distopt::algorithms::minibatch_sgd>(checkpoint_scenario::momentum_options);
//   check<distopt::algorithms::choco_sgd<>>(checkpoint_scenario::choco_options,
//                                           checkpoint_scenario::choco_compressor, checkpoint_scenario::choco_ring);

#include <Eigen/Core>
#include <cstdint>

#include <distopt/algorithms.hpp>

namespace checkpoint_scenario {

inline constexpr Eigen::Index dim = 32;
inline constexpr int k = 5, m = 6;  // steps before the checkpoint, and after it

// Worker r's gradient in step s: x - c_r plus noise keyed by (r, s); the workers disagree.
inline Eigen::VectorXf gradient(int rank, int step, const Eigen::VectorXf& x) {
  distopt::rng target(17, static_cast<std::uint32_t>(rank), 0, distopt::purpose::user);
  distopt::rng noise(18, static_cast<std::uint32_t>(rank), static_cast<std::uint32_t>(step), distopt::purpose::user);
  Eigen::VectorXf g(dim);
  for (Eigen::Index i = 0; i < dim; ++i) g(i) = x(i) - 3.0f * target.normal() + 0.1f * noise.normal();
  return g;
}

/// The parameters the reference starts from (a resumed optimizer starts from zeros, then loads).
inline Eigen::VectorXf x0() { return Eigen::VectorXf::LinSpaced(dim, -1.0f, 1.0f); }

/// Rank `rank`'s steps from, from + 1, ..., from + steps - 1.
template <class Opt>
void train(Opt& opt, int rank, int from, int steps) {
  for (int s = from; s < from + steps; ++s) opt.step(gradient(rank, s, opt.parameters()));
}

// The two optimizers: minibatch_sgd with momentum (options only), and CHOCO-SGD on a ring.
inline const distopt::options momentum_options{.learning_rate = 0.05f, .momentum = 0.9f, .seed = 4};
inline const distopt::options choco_options{.learning_rate = 0.05f, .seed = 4};
inline const distopt::compress::top_k choco_compressor{0.25};
inline const distopt::topology::gossip<distopt::topology::ring, distopt::mixing::choco> choco_ring{
    {}, {.consensus_step = 0.3f}};

}  // namespace checkpoint_scenario
