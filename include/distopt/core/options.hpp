#pragma once
// options: the optimizer's run-time knobs, an aggregate with documented defaults.
//
//   distopt::options o{.learning_rate = 0.1f, .momentum = 0.9f, .seed = 7};

#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>

#include "distopt/core/errors.hpp"

namespace distopt {

struct options {
  /// Step size eta. Must be finite and > 0.
  float learning_rate = 0.01f;
  /// Heavy-ball momentum mu in [0, 1); 0 disables it. Convention of PyTorch:
  /// v <- mu v + g, x <- x - eta v.
  float momentum = 0.0f;
  /// Nesterov momentum: x <- x - eta (g + mu v). Requires momentum > 0.
  bool nesterov = false;
  /// L2 weight decay lambda >= 0, added to the gradient as lambda x.
  float weight_decay = 0.0f;
  /// Seed of every random stream (sampling, compression, topology).
  std::uint64_t seed = 0;
  /// Deadline of every blocking wait; a peer silent for longer raises transport_error.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  /// Scale the step by 1/(1 + staleness) (Zhang et al. 2016) under stale policies.
  bool staleness_aware_lr = false;
  /// Consensus step gamma in (0, 1] of compressed gossip (CHOCO-SGD, DeepSqueeze; see
  /// topology/gossip.hpp): x <- x + gamma (sum_j W_ij xh_j - xh_i). 1 is exact gossip;
  /// compressed runs need it tuned (ChocoSGD: top-1% 0.04, random-1% 0.01, 4-bit QSGD 0.34).
  /// Unused by other topologies.
  float consensus_step = 1.0f;
};

namespace detail {

inline void validate(const options& o) {
  if (!(std::isfinite(o.learning_rate) && o.learning_rate > 0.0f))
    throw config_error("options.learning_rate must be finite and > 0, got " + std::to_string(o.learning_rate));
  if (!(o.momentum >= 0.0f && o.momentum < 1.0f))
    throw config_error("options.momentum must be in [0, 1), got " + std::to_string(o.momentum));
  if (o.nesterov && o.momentum == 0.0f)
    throw config_error("options.nesterov requires options.momentum > 0; set a momentum or turn nesterov off");
  if (!(std::isfinite(o.weight_decay) && o.weight_decay >= 0.0f))
    throw config_error("options.weight_decay must be finite and >= 0, got " + std::to_string(o.weight_decay));
  if (!(o.consensus_step > 0.0f && o.consensus_step <= 1.0f))
    throw config_error("options.consensus_step must be in (0, 1], got " + std::to_string(o.consensus_step) +
                       "; it is CHOCO's gamma (1 = exact gossip, smaller for stronger compression)");
  if (o.timeout.count() <= 0)
    throw config_error("options.timeout must be > 0 ms, got " + std::to_string(o.timeout.count()) + " ms");
}

}  // namespace detail
}  // namespace distopt
