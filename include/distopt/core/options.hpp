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
};
// The policies carry their own knobs: the consensus step is the gossip scheme's
// (mixing::choco{.consensus_step}), the staleness-aware step the staleness policy's
// (staleness::asynchronous{.staleness_aware_lr}, bounded<Tau>{...}); see README "Migrating".

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
  if (o.timeout.count() <= 0)
    throw config_error("options.timeout must be > 0 ms, got " + std::to_string(o.timeout.count()) + " ms");
}

}  // namespace detail
}  // namespace distopt
