#pragma once
// optimizer<C, T, S, L>: SGD (momentum, Nesterov, weight decay) whose communication is
// described by four policies — what is sent (C), to whom (T), how long anyone waits (S),
// how often (L) — over any transport chosen at run time.
//
// Each step() checks the gradient, asks L whether a round follows this step, and hands
// the step to the protocol that the pair (T, S) selects (protocols/select.hpp):
//   centralized     allreduce / parameter_server, synchronous: mini-batch SGD, local SGD
//   gossip          ring, torus, ...: D-PSGD, CHOCO-SGD, DCD, ECD, DeepSqueeze
//   stale_server    parameter_server under bounded<Tau> / asynchronous: SSP, AsySGD
//   pairwise_gossip random_pairwise under asynchronous: AD-PSGD, SwarmSGD
// The local arithmetic — weight decay, momentum, the step — is core/local_update.hpp,
// the same for every protocol; the optimizer itself names no policy.
//
//   using sgd = distopt::optimizer<distopt::compress::identity, distopt::topology::allreduce,
//                                  distopt::staleness::synchronous, distopt::local_steps::every_step>;
//   sgd opt(t, x0, {.learning_rate = 0.1f});
//   for (...) opt.step(gradient(opt.parameters()));
//   opt.finish();

#include <Eigen/Core>
#include <cstdint>
#include <cstring>
#include <iosfwd>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "distopt/collective/allgather.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/describe.hpp"
#include "distopt/core/diagnostics.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/local_update.hpp"
#include "distopt/core/optimizer_checkpoint.hpp"
#include "distopt/core/options.hpp"
#include "distopt/core/protocol.hpp"
#include "distopt/core/statistics.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/transport_ref.hpp"
#include "distopt/protocols/select.hpp"
#include "distopt/transport/metered.hpp"

namespace distopt {

template <class C, class T, class S, class L>
class optimizer {
  // One diagnostic naming the first requirement a policy misses (core/diagnostics.hpp);
  // nothing below is instantiated with a bad policy, so no error follows it.
  static constexpr bool valid_policies = detail::check_policies<C, T, S, L>();

 public:
  using compressor_type = C;
  using topology_type = T;
  using staleness_type = S;
  using local_steps_type = L;
  using protocol_type = typename std::conditional_t<valid_policies, detail::protocol_of<C, T, S>,
                                                    std::type_identity<detail::invalid_protocol>>::type;
  static_assert(!valid_policies || protocol<protocol_type, C, T, S>,
                "distopt::optimizer: the protocol selected for (T, S) is not a Protocol: it needs a constructor "
                "(protocol_context, x0, C, T, S), step(x, g, talk, local_update&), finish(x) and poll(x) (see "
                "distopt/core/protocol.hpp)");

  optimizer(transport_ref t, Eigen::Ref<const Eigen::VectorXf> x0, options o = {}, C c = {}, T topo = {}, S s = {},
            L l = {})
      : transport_(t),
        meter_(t, stats_, o.timeout),
        local_steps_(std::move(l)),
        x_(checked_start(t, x0, o, topo)),
        update_(o, static_cast<std::size_t>(x_.size())),
        protocol_(protocol_context{transport_ref(meter_), t, &stats_, o}, span_of(x_), std::move(c), std::move(topo),
                  std::move(s)),
        options_(o) {}

  /// One local step with this worker's gradient at parameters(); communicates when L says so.
  void step(Eigen::Ref<const Eigen::VectorXf> gradient) {
    if (gradient.size() != x_.size())
      throw config_error("optimizer::step: gradient has " + std::to_string(gradient.size()) +
                         " entries but the model has " + std::to_string(x_.size()) +
                         "; pass the gradient of the loss at parameters()");
    const std::span<const float> g(gradient.data(), static_cast<std::size_t>(gradient.size()));
    if (!detail::all_finite(g))  // before anything is sent or changed
      throw numeric_error("optimizer::step: rank " + std::to_string(transport_.rank()) +
                          " got a non-finite gradient at step " + std::to_string(step_) +
                          "; lower the learning rate, clip gradients, or check the data for NaN/Inf");
    const bool talk = communicates_after(step_);
    ++step_;
    ++stats_.steps;
    protocol_.step(span_of(x_), g, talk, update_);
  }

  /// The current parameters (this worker's copy).
  Eigen::Ref<const Eigen::VectorXf> parameters() const { return x_; }

  /// Ends a run. Synchronous protocols: every worker ends with the same (averaged) parameters.
  /// Stale parameter server: pending steps are pushed, survivors adopt the server's model.
  /// Pairwise gossip (AD-PSGD, SwarmSGD): each keeps its own model; their mean is the output.
  void finish() { protocol_.finish(span_of(x_)); }

  /// Answers peers without stepping: an asynchronous worker pausing longer than options.timeout
  /// (evaluation) calls it now and then, or its peers give it up as dead. Synchronous: no-op.
  void poll() { protocol_.poll(span_of(x_)); }

  /// Collective, after the same step on every rank: brings an asynchronous run to a cut that no
  /// push or interaction straddles (docs/concepts.md), where save() must be called before the
  /// next step or poll(). Training goes on after it. Synchronous protocols: no-op.
  void quiesce() {
    if constexpr (requires { protocol_.quiesce(span_of(x_)); }) protocol_.quiesce(span_of(x_));
  }

  /// Changes the step size eta for the following steps (decaying schedules).
  void set_learning_rate(float eta) {
    options o = options_;
    o.learning_rate = eta;
    detail::validate(o);
    options_.learning_rate = eta;
    update_.set_learning_rate(eta);
  }

  /// Communication and progress statistics of this worker.
  const statistics& stats() const { return stats_; }

  /// Writes this rank's state — parameters, momentum, counters, statistics, learning rate and the
  /// protocol's state — as a checksummed record (core/checkpoint.hpp), without communication.
  /// Every rank saves after the same step (asynchronous protocols: right after quiesce(), else
  /// config_error); synchronous runs then continue bit for bit. checkpoint_error if `out` fails.
  void save(std::ostream& out) const {
    if constexpr (valid_policies)
      detail::write_checkpoint(out, detail::checkpoint_of(origin(), step_, span_of(x_), update_, stats_, protocol_));
  }

  /// Reads what save() wrote on this rank into a freshly built optimizer of the same
  /// configuration, on every rank before the first step; its learning rate replaces the options'.
  /// checkpoint_error for a damaged checkpoint, config_error naming the difference for another
  /// configuration (type, size, rank, world, options, topology, compressor); either way the
  /// optimizer is left as it was.
  void load(std::istream& in) {
    if constexpr (valid_policies) detail::load_checkpoint(in, origin(), step_, span_of(x_), update_, stats_, protocol_);
    options_.learning_rate = update_.learning_rate();
  }

 private:
  // Protocols whose workers need not meet in rounds (independent_schedules: the asynchronous
  // ones) give each worker its own schedule when L draws one per rank (local_steps::geometric).
  bool communicates_after(std::uint64_t step) const {
    if constexpr (!valid_policies)
      return false;
    else if constexpr (
        requires { requires protocol_type::independent_schedules; } &&
        requires { local_steps_.communicates_after(step, 0); })
      return local_steps_.communicates_after(step, transport_.rank());
    else
      return local_steps_.communicates_after(step);
  }

  checkpoint_origin origin() const {
    return {describe<optimizer>(), static_cast<std::uint64_t>(x_.size()), static_cast<std::uint32_t>(transport_.rank()),
            static_cast<std::uint32_t>(transport_.size()), options_};
  }

  static auto span_of(auto& v) { return std::span(v.data(), static_cast<std::size_t>(v.size())); }

  // Validates the options, the topology and x0, and refuses to start when ranks disagree
  // on the model size (before any round can misalign); returns x0.
  static Eigen::VectorXf checked_start(transport_ref t, Eigen::Ref<const Eigen::VectorXf> x0, const options& o,
                                       const T& topo) {
    detail::validate(o);
    if (x0.size() == 0) throw config_error("optimizer: x0 is empty; pass the initial parameters (at least one)");
    if constexpr (valid_policies) topo.validate(t.size());
    const std::int64_t mine = x0.size();
    std::vector<byte_buffer> sizes;
    collective::allgather(t, std::as_bytes(std::span(&mine, 1)), sizes,
                          detail::reserved_tag(detail::reserved::model_size));
    for (std::size_t k = 0; k < sizes.size(); ++k) {
      std::int64_t theirs = -1;
      if (sizes[k].size() == sizeof theirs) std::memcpy(&theirs, sizes[k].data(), sizeof theirs);
      if (theirs != mine)
        throw config_error("optimizer: rank " + std::to_string(t.rank()) + " has a model of " + std::to_string(mine) +
                           " parameters but rank " + std::to_string(k) + " has " + std::to_string(theirs) +
                           "; every rank must pass an x0 of the same size");
    }
    return x0;
  }

  transport_ref transport_;
  statistics stats_;
  metered_transport meter_;
  L local_steps_;
  Eigen::VectorXf x_;
  local_update update_;
  protocol_type protocol_;
  options options_;
  std::uint64_t step_ = 0;
};

}  // namespace distopt
