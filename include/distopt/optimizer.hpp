#pragma once
// optimizer<C, T, S, L>: SGD (momentum, Nesterov, weight decay) whose communication
// is described by four policies — what is sent (C), to whom (T), how long anyone
// waits (S), how often (L) — over any transport chosen at run time.
//
// Local update, per worker, from the gradient g the user passes to step():
//   d = g + lambda x                         (weight decay)
//   v = mu v + d;  d = nesterov ? d + mu v : v   (momentum, PyTorch convention)
//   x = x - eta d
// Communication, when L says so after a step: if one local step was taken since the
// last round, the gradients are averaged before the update (mini-batch SGD);
// otherwise the model deltas since the last round are averaged (local SGD).
//
//   using sgd = distopt::optimizer<distopt::compress::identity, distopt::topology::allreduce,
//                                  distopt::staleness::synchronous, distopt::local_steps::every_step>;
//   sgd opt(t, x0, {.learning_rate = 0.1f});
//   for (...) opt.step(gradient(opt.parameters()));
//   opt.finish();

#include <Eigen/Core>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "distopt/collective/allgather.hpp"
#include "distopt/collective/average.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/options.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/statistics.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/transport_ref.hpp"
#include "distopt/transport/metered.hpp"

namespace distopt {

template <class C, class T, class S, class L>
class optimizer {
  static_assert(compressor<C>,
                "distopt::optimizer<C, T, S, L>: C is not a Compressor: it needs encode(in, wire, rng), "
                "decode(bytes, out), static unbiased and max_encoded_bytes(n) (see distopt/core/concepts.hpp)");
  static_assert(topology_policy<T>,
                "distopt::optimizer<C, T, S, L>: T is not a TopologyPolicy: it needs static exchange and "
                "validate(world_size) (see distopt/core/concepts.hpp)");
  static_assert(staleness_policy<S>,
                "distopt::optimizer<C, T, S, L>: S is not a StalenessPolicy: it needs static max_staleness "
                "(see distopt/core/concepts.hpp)");
  static_assert(local_steps_policy<L>,
                "distopt::optimizer<C, T, S, L>: L is not a LocalStepsPolicy: it needs communicates_after(step) "
                "(see distopt/core/concepts.hpp)");
  static_assert(T::exchange == exchange_kind::gradients,
                "distopt::optimizer: this version supports centralized topologies (topology::allreduce); "
                "model-exchanging (gossip) topologies are not available yet");
  static_assert(S::max_staleness == 0,
                "distopt::optimizer: this version supports staleness::synchronous only; "
                "bounded and asynchronous policies are not available yet");

 public:
  using compressor_type = C;
  using topology_type = T;
  using staleness_type = S;
  using local_steps_type = L;

  optimizer(transport_ref t, Eigen::Ref<const Eigen::VectorXf> x0, options o = {}, C c = {}, T topo = {}, S s = {},
            L l = {})
      : transport_(t),
        meter_(t, stats_, o.timeout),
        options_(o),
        compressor_(std::move(c)),
        topology_(std::move(topo)),
        staleness_(std::move(s)),
        local_steps_(std::move(l)),
        x_(x0) {
    detail::validate(options_);
    if (x_.size() == 0) throw config_error("optimizer: x0 is empty; pass the initial parameters (at least one)");
    topology_.validate(transport_.size());
    check_same_model_size();
    if (options_.momentum > 0.0f) velocity_.setZero(x_.size());
    direction_.resize(x_.size());
  }

  /// One local step with this worker's gradient at parameters(); communicates when L says so.
  void step(Eigen::Ref<const Eigen::VectorXf> gradient) {
    if (gradient.size() != x_.size())
      throw config_error("optimizer::step: gradient has " + std::to_string(gradient.size()) +
                         " entries but the model has " + std::to_string(x_.size()) +
                         "; pass the gradient of the loss at parameters()");
    if (!copy_if_finite(gradient, direction_))  // direction_ = gradient, and check it
      throw numeric_error("optimizer::step: rank " + std::to_string(transport_.rank()) + " got a non-finite gradient at step " +
                          std::to_string(step_) +
                          "; lower the learning rate, clip gradients, or check the data for NaN/Inf");
    const bool talk = local_steps_.communicates_after(step_);
    ++step_;
    ++stats_.steps;
    if (talk && local_since_round_ == 0) {  // mini-batch SGD: average gradients, then update
      average(direction_);
      update(direction_);
      return;
    }
    if (local_since_round_ == 0) anchor_ = x_;  // the model of the last round
    update(direction_);
    ++local_since_round_;
    if (talk) average_deltas();
  }

  /// The current parameters (this worker's copy).
  Eigen::Ref<const Eigen::VectorXf> parameters() const { return x_; }

  /// Ends a run: averages the local steps taken since the last round, so every
  /// worker ends with the same parameters.
  void finish() {
    if (local_since_round_ > 0) average_deltas();
  }

  /// Communication and progress statistics of this worker.
  const statistics& stats() const { return stats_; }

 private:
  // out = g, returning whether every entry is finite, in one pass that the compiler
  // vectorises (Eigen's allFinite() is a scalar loop, which cost more than the whole
  // hand-written SGD step in bench_optimizer). An entry is Inf or NaN iff its
  // exponent bits are all ones, iff adding one to the exponent field carries into
  // the sign bit; 16 independent accumulators keep the OR chain off the critical path.
  // `out` is scratch: after a throw it holds a copy of g and nothing else has changed.
  static bool copy_if_finite(Eigen::Ref<const Eigen::VectorXf> g, Eigen::VectorXf& out) noexcept {
    const float* __restrict in = g.data();
    float* __restrict o = out.data();
    const auto n = static_cast<std::size_t>(g.size());
    auto flag = [](float v) { return (std::bit_cast<std::uint32_t>(v) & 0x7f800000u) + 0x00800000u; };
    constexpr std::size_t lanes = 16;
    std::uint32_t flags[lanes] = {};
    std::size_t i = 0;
    for (; i + lanes <= n; i += lanes)
      for (std::size_t j = 0; j < lanes; ++j) {
        o[i + j] = in[i + j];
        flags[j] |= flag(in[i + j]);
      }
    std::uint32_t any = 0;
    for (; i < n; ++i) {
      o[i] = in[i];
      any |= flag(in[i]);
    }
    for (const std::uint32_t f : flags) any |= f;
    return (any & 0x80000000u) == 0;
  }

  void update(Eigen::VectorXf& d) {
    if (options_.weight_decay != 0.0f) d += options_.weight_decay * x_;
    if (options_.momentum != 0.0f) {
      velocity_ = options_.momentum * velocity_ + d;
      if (options_.nesterov)
        d += options_.momentum * velocity_;
      else
        d = velocity_;
    }
    x_ -= options_.learning_rate * d;
  }

  void average(Eigen::VectorXf& v) {
    rng g(options_.seed, static_cast<std::uint32_t>(transport_.rank()), static_cast<std::uint32_t>(stats_.rounds),
          purpose::compression);
    averager_.average(meter_, std::span<float>(v.data(), static_cast<std::size_t>(v.size())), compressor_, g);
    ++stats_.rounds;
    stats_.record_staleness(0);
  }

  void average_deltas() {
    direction_ = x_ - anchor_;
    average(direction_);
    x_ = anchor_ + direction_;
    local_since_round_ = 0;
  }

  // Refuses to start when ranks disagree on the model size (before any round can misalign).
  void check_same_model_size() {
    const std::int64_t mine = x_.size();
    std::vector<byte_buffer> sizes;
    collective::allgather(transport_, std::as_bytes(std::span(&mine, 1)), sizes,
                          tag{detail::reserved_tag_base + 16});
    for (std::size_t k = 0; k < sizes.size(); ++k) {
      std::int64_t theirs = -1;
      if (sizes[k].size() == sizeof theirs) std::memcpy(&theirs, sizes[k].data(), sizeof theirs);
      if (theirs != mine)
        throw config_error("optimizer: rank " + std::to_string(transport_.rank()) + " has a model of " +
                           std::to_string(mine) + " parameters but rank " + std::to_string(k) + " has " +
                           std::to_string(theirs) + "; every rank must pass an x0 of the same size");
    }
  }

  transport_ref transport_;
  statistics stats_;
  metered_transport meter_;
  options options_;
  C compressor_;
  T topology_;
  S staleness_;
  L local_steps_;
  Eigen::VectorXf x_;
  Eigen::VectorXf velocity_;
  Eigen::VectorXf anchor_;     // model at the last round, set when local steps begin
  Eigen::VectorXf direction_;  // reused for gradients, update directions and deltas
  collective::averager<C> averager_;
  std::uint64_t step_ = 0;
  std::uint64_t local_since_round_ = 0;
};

}  // namespace distopt
