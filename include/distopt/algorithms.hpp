#pragma once
// Named algorithms of the literature as points in the policy space. Each alias
// is one tested configuration; see shared/ALGORITHMS.md for the update rules.
//
//   distopt::algorithms::minibatch_sgd opt(t, x0, {.learning_rate = 0.1f});

#include "distopt/compress.hpp"
#include "distopt/local_steps.hpp"
#include "distopt/optimizer.hpp"
#include "distopt/staleness.hpp"
#include "distopt/topology.hpp"

namespace distopt::algorithms {

/// Synchronous data-parallel mini-batch SGD: exact gradients averaged every step.
using minibatch_sgd =
    optimizer<compress::identity, topology::allreduce, staleness::synchronous, local_steps::every_step>;

/// Local SGD / FedAvg (Stich 2019; McMahan et al. 2017): H local steps, then model deltas averaged.
template <int H>
using local_sgd = optimizer<compress::identity, topology::allreduce, staleness::synchronous, local_steps::fixed<H>>;

}  // namespace distopt::algorithms
