#pragma once
// optimizer<C, T, S, L>: SGD (momentum, Nesterov, weight decay) whose communication
// is described by four policies — what is sent (C), to whom (T), how long anyone
// waits (S), how often (L) — over any transport chosen at run time.
//
// Local update, per worker, from the gradient g the user passes to step():
//   d = g + lambda x                         (weight decay)
//   v = mu v + d;  d = nesterov ? d + mu v : v   (momentum, PyTorch convention)
//   x = x - eta d
// Communication, when L says so after a step:
//  - centralized topologies (exchange_kind::gradients: allreduce, parameter_server): if one local step
//    was taken since the last round, the gradients are averaged before the update
//    (mini-batch SGD); otherwise the model deltas since the last round are averaged
//    (local SGD);
//  - gossip topologies (exchange_kind::models: ring, torus, ...): the step eta d is handed
//    to one round of collective::model_exchange, which mixes models with the neighbours by
//    the topology's scheme (topology/gossip.hpp: exact D-PSGD x <- Wx - eta d, or
//    W(x - eta d), CHOCO-SGD, DCD-PSGD, ECD-PSGD, DeepSqueeze); steps without a round are
//    x <- x - eta d. finish() then averages the models exactly (ring allreduce), so every
//    worker ends with the node average.
//
//   using sgd = distopt::optimizer<distopt::compress::identity, distopt::topology::allreduce,
//                                  distopt::staleness::synchronous, distopt::local_steps::every_step>;
//   sgd opt(t, x0, {.learning_rate = 0.1f});
//   for (...) opt.step(gradient(opt.parameters()));
//   opt.finish();
//
//   using choco = distopt::optimizer<distopt::compress::top_k, distopt::topology::ring,
//                                    distopt::staleness::synchronous, distopt::local_steps::every_step>;
//   choco gossip(t, x0, {.learning_rate = 0.1f, .consensus_step = 0.04f}, distopt::compress::top_k{0.01});

#include <Eigen/Core>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "distopt/collective/allgather.hpp"
#include "distopt/collective/async_gossip.hpp"
#include "distopt/collective/async_parameter_server.hpp"
#include "distopt/collective/average.hpp"
#include "distopt/collective/model_exchange.hpp"
#include "distopt/collective/parameter_server.hpp"
#include "distopt/collective/ring_allreduce.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/options.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/statistics.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/transport_ref.hpp"
#include "distopt/staleness/asynchronous.hpp"
#include "distopt/topology/parameter_server.hpp"
#include "distopt/topology/random_pairwise.hpp"
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
  static_assert(T::exchange == exchange_kind::gradients || topology::gossip_topology<T>,
                "distopt::optimizer<C, T, S, L>: T exchanges models but is not a gossip topology: it needs "
                "make_graph(n) (static) or schedule(n).row(rank, round, seed, row) (time-varying); see "
                "distopt/topology/gossip.hpp");
  static_assert(S::max_staleness == 0 || T::exchange == exchange_kind::models ||
                    std::is_same_v<T, topology::parameter_server>,
                "distopt::optimizer: staleness::bounded and staleness::asynchronous need topology::parameter_server "
                "(SSP, AsySGD) or topology::random_pairwise<G> (AD-PSGD, SwarmSGD): an allreduce is a collective "
                "that every worker enters together, and the compressed downlink (DoubleSqueeze) is synchronous only");
  static_assert(S::max_staleness == 0 || T::exchange == exchange_kind::gradients ||
                    topology::is_random_pairwise_v<T>,
                "distopt::optimizer: asynchronous gossip averages with one random neighbour at a time: use "
                "topology::random_pairwise<G> with staleness::asynchronous (fixed gossip graphs are synchronous)");
  static_assert(S::max_staleness == 0 || T::exchange == exchange_kind::gradients ||
                    std::is_same_v<S, staleness::asynchronous>,
                "distopt::optimizer: bounded staleness is defined for the parameter server (SSP); pairwise gossip "
                "runs staleness::asynchronous (AD-PSGD, SwarmSGD) or staleness::synchronous");

 public:
  using compressor_type = C;
  using topology_type = T;
  using staleness_type = S;
  using local_steps_type = L;
  /// True for gossip topologies, which exchange models rather than gradients.
  static constexpr bool gossip = T::exchange == exchange_kind::models;
  /// True for bounded and asynchronous staleness (collective/async_parameter_server.hpp,
  /// collective/async_gossip.hpp); bounded<0> is synchronous.
  static constexpr bool stale = S::max_staleness != 0;

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
    if constexpr (!stale && requires { topology_.shards; })
      if (topology_.shards != 1)
        throw config_error("topology::parameter_server: shards > 1 needs staleness::bounded<Tau> or "
                           "staleness::asynchronous (the stale server); the synchronous round has one server");
    check_same_model_size();
    if (options_.momentum > 0.0f) velocity_.setZero(x_.size());
    direction_.resize(x_.size());
    if constexpr (stale && gossip)
      async_.emplace(transport_.rank(), topology_.base.make_graph(transport_.size()), options_.seed, span_of(x_),
                     staleness::max_unanswered_steps(staleness_), options_.timeout);
    else if constexpr (stale)
      async_.emplace(transport_, topology_, S::max_staleness, staleness::max_unanswered_steps(staleness_), span_of(x_),
                     options_.timeout, compressor_);
    else if constexpr (gossip)
      gossip_.emplace(meter_, topology_, span_of(x_), options_.consensus_step, options_.seed, compressor_);
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
    const bool talk = communicates_after(step_);
    ++step_;
    ++stats_.steps;
    if constexpr (stale && gossip) {  // AD-PSGD, SwarmSGD: averages before the step, sends after it
      async_->step(meter_, stats_, span_of(x_), talk, compressor_, [&] { update(direction_); });
      return;
    } else if constexpr (stale) {  // SSP, AsySGD: push this round's update; the server's model + own pushes
      update(direction_);
      ++local_since_round_;
      if (talk) push_update();
      return;
    } else if constexpr (gossip) {
      direct(direction_);
      if (!talk) {
        x_ -= options_.learning_rate * direction_;
        return;
      }
      direction_ *= options_.learning_rate;
      rng g = round_rng();
      gossip_->round(meter_, span_of(x_), span_of(direction_), compressor_, g);
      end_round();
      return;
    }
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

  /// Ends a run. Synchronous policies: every worker ends with the same parameters (the
  /// local steps since the last round are averaged; gossip averages the models exactly, by
  /// ring allreduce). Parameter server under bounded or asynchronous staleness: the pending
  /// steps are pushed and every surviving worker adopts the server's final model. Pairwise
  /// asynchronous gossip (AD-PSGD, SwarmSGD): no final averaging — each worker keeps its own
  /// model (their mean is the algorithms' output; statistics::lost_peers lists the
  /// neighbours it gave up).
  void finish() {
    if constexpr (stale && gossip) {
      async_->finish(meter_, stats_, span_of(x_), compressor_);
    } else if constexpr (stale) {
      if (local_since_round_ > 0) push_update();
      async_->finish(meter_, stats_, span_of(x_), compressor_);
    } else if constexpr (gossip)
      collective::ring_allreduce(meter_, span_of(x_), collective::reduce_op::mean, ring_);
    else if (local_since_round_ > 0)
      average_deltas();
  }

  /// Answers what peers have sent, without waiting or stepping. Asynchronous policies only
  /// rely on it: a worker that pauses training for longer than options.timeout
  /// (evaluation, checkpointing) calls it now and then, or its gossip partners — or, on
  /// the server rank, the workers — give it up as dead. Does nothing under synchronous
  /// policies.
  void poll() {
    if constexpr (stale) async_->poll(meter_, stats_, span_of(x_), compressor_);
  }

  /// Changes the step size eta for the following steps (decaying schedules).
  void set_learning_rate(float eta) {
    options o = options_;
    o.learning_rate = eta;
    detail::validate(o);
    options_.learning_rate = eta;
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

  static std::span<float> span_of(Eigen::VectorXf& v) { return {v.data(), static_cast<std::size_t>(v.size())}; }

  // d <- the update direction: weight decay, then momentum.
  void direct(Eigen::VectorXf& d) {
    if (options_.weight_decay != 0.0f) d += options_.weight_decay * x_;
    if (options_.momentum != 0.0f) {
      velocity_ = options_.momentum * velocity_ + d;
      if (options_.nesterov)
        d += options_.momentum * velocity_;
      else
        d = velocity_;
    }
  }

  void update(Eigen::VectorXf& d) {
    direct(d);
    x_ -= (options_.learning_rate * lr_scale_) * d;
  }

  // The round of the stale parameter server: the update since the last round goes to the server,
  // x becomes the newest server model plus this worker's pushes it lacks; the staleness scales
  // the next steps if asked.
  void push_update() {
    rng g = round_rng();
    const std::uint64_t s = async_->round(meter_, stats_, span_of(x_), compressor_, g);
    ++stats_.rounds;
    stats_.record_staleness(s);
    if (options_.staleness_aware_lr) lr_scale_ = 1.0f / (1.0f + static_cast<float>(s));
    local_since_round_ = 0;
  }

  // Asynchronous protocols give each worker its own schedule (local_steps::geometric draws one
  // per rank); synchronous rounds need every worker in them, so all share one.
  bool communicates_after(std::uint64_t step) const {
    if constexpr (stale && requires { local_steps_.communicates_after(step, 0); })
      return local_steps_.communicates_after(step, transport_.rank());
    else
      return local_steps_.communicates_after(step);
  }

  rng round_rng() const {
    return rng(options_.seed, static_cast<std::uint32_t>(transport_.rank()), static_cast<std::uint32_t>(stats_.rounds),
               purpose::compression);
  }
  void end_round() {
    ++stats_.rounds;
    stats_.record_staleness(0);
  }

  void average(Eigen::VectorXf& v) {
    rng g = round_rng();
    averager_.average(meter_, span_of(v), compressor_, g);
    end_round();
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
  // The centralized round: collective::averager (allreduce) or, for a parameter server,
  // collective::ps_averager, which takes the server's rank from the topology.
  template <class Topo>
  struct averager_for {
    using type = collective::averager<C>;
    static type make(const Topo&) { return {}; }
  };
  template <topology::downlink D>
  struct averager_for<topology::basic_parameter_server<D>> {
    using type = collective::ps_averager<C, D>;
    static type make(const topology::basic_parameter_server<D>& t) { return type(t); }
  };
  typename averager_for<T>::type averager_ = averager_for<T>::make(topology_);
  struct no_gossip {};
  std::optional<std::conditional_t<gossip && !stale, collective::model_exchange<C, T>, no_gossip>> gossip_;
  using async_type = std::conditional_t<!stale, no_gossip,
                                        std::conditional_t<gossip, collective::async_gossip<C>,
                                                           collective::async_parameter_server<C>>>;
  std::optional<async_type> async_;
  float lr_scale_ = 1.0f;  // 1 / (1 + staleness) under options.staleness_aware_lr
  collective::allreduce_workspace ring_;  // finish() of gossip
  std::uint64_t step_ = 0;
  std::uint64_t local_since_round_ = 0;
};

}  // namespace distopt
