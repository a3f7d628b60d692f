#pragma once
// protocols::centralized<C, T> — the synchronous round of the centralized topologies
// (topology::allreduce, topology::parameter_server): every worker ends each round with
// the same average. Per local step, with the gradient g at x:
//  - a round right after the last one (LocalSteps talks every step): mini-batch SGD,
//      g <- (1/n) sum_k decode(C(g_k));  x <- x - eta d(g)
//    the average taken by collective::averager (ring allreduce, encoded ring, allgather,
//    or the compressor's own collective) or, when T names a server (server_topology),
//    by the parameter server's round (protocols/parameter_server_round.hpp). A compressor
//    that declares momentum_before_compression (core/traits.hpp: error_feedback, majority_sign)
//    gets each worker's direction d(g_k) instead, and the average is stepped along as it is:
//      x <- x - eta (1/n) sum_k decode(C(d(g_k)))        (DGC's momentum correction; Signum)
//    after which the compressor may mask the momentum (DGC's factor masking);
//  - otherwise a local step x <- x - eta d(g) from the model x_a of the last round, and
//    when LocalSteps talks, the deltas are averaged (local SGD / FedAvg; Stich, ICLR
//    2019, arXiv 1805.09767):  x <- x_a + (1/n) sum_k decode(C(x_k - x_a)).
// finish() averages the steps taken since the last round, so every worker ends equal.
// With raw floats the gradient goes around the ring straight from the caller's buffer;
// on one rank it is not copied at all.
//
//   using sgd = distopt::optimizer<distopt::compress::identity, distopt::topology::allreduce,
//                                  distopt::staleness::synchronous, distopt::local_steps::every_step>;

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "distopt/collective/average.hpp"
#include "distopt/core/checkpoint.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/protocol.hpp"
#include "distopt/core/traits.hpp"
#include "distopt/protocols/parameter_server_round.hpp"

namespace distopt {

/// A centralized topology whose round runs through one server rank (topology::parameter_server).
template <class T>
concept server_topology = topology_policy<T> &&(T::exchange == exchange_kind::gradients) && requires(const T& t) {
  { t.server_rank } -> std::convertible_to<int>;
  { T::downlink_mode } -> std::convertible_to<topology::downlink>;
};

}  // namespace distopt

namespace distopt::protocols {

template <compressor C, class T>
class centralized {
  static_assert(topology_policy<T> && T::exchange == exchange_kind::gradients,
                "protocols::centralized<C, T>: T must be a centralized topology (allreduce, parameter_server)");

  template <class Topo>
  struct averager_for {
    using type = collective::averager<C>;
    static type make(const Topo&) { return {}; }
  };
  template <server_topology Topo>
  struct averager_for<Topo> {
    using type = ps_averager<C, Topo::downlink_mode>;
    static type make(const Topo& t) { return type(t.server_rank); }
  };

 public:
  template <class S>
  centralized(protocol_context ctx, std::span<const float> x0, C c, T topo, S)
      : ctx_(ctx), compressor_(std::move(c)), averager_(averager_for<T>::make(topo)), n_(x0.size()) {
    if constexpr (requires { topo.shards; })
      if (topo.shards != 1)
        throw config_error(
            "topology::parameter_server: shards > 1 needs staleness::bounded<Tau> or "
            "staleness::asynchronous (the stale server); the synchronous round has one server");
    scratch_.reserve(x0.size());
  }

  void step(std::span<float> x, std::span<const float> g, bool talk, local_update& u) {
    if (talk && since_round_ == 0) {  // mini-batch SGD: average the gradients, then update
      rng r = ctx_.round_rng();
      if constexpr (momentum_before_compression_v<C>) {
        direction_.assign(g.begin(), g.end());
        u.direct(direction_, x);
        averager_.average(ctx_.transport, std::span<float>(direction_), compressor_, r);
        u.descend(x, direction_);
        if constexpr (requires { compressor_.mask_momentum(u.velocity(), *averager_.state()); })
          compressor_.mask_momentum(u.velocity(), *averager_.state());
      } else {
        u.apply(x, averager_.average(ctx_.transport, g, scratch_, compressor_, r));
      }
      ctx_.end_round();
      return;
    }
    if (since_round_ == 0) anchor_.assign(x.begin(), x.end());  // the model of the last round
    u.apply(x, g);
    ++since_round_;
    if (talk) average_deltas(x);
  }

  /// Averages the local steps since the last round, so every worker ends with the same model.
  void finish(std::span<float> x) {
    if (since_round_ > 0) average_deltas(x);
  }

  void poll(std::span<float>) {}

  /// This worker's compressor state; null before the first round.
  const compressor_state_t<C>* compressor_state() const { return averager_.state(); }

  /// Checkpoints hold the averager's compressor state(s), the local steps taken since the
  /// last round and, while there are some, that round's model (the anchor).
  void save(checkpoint_writer& w) const {
    averager_.save(w);
    w.u64(since_round_);
    w.floats(since_round_ > 0 ? std::span<const float>(anchor_) : std::span<const float>());
  }
  void load(checkpoint_reader& r) {
    averager_.load(r, compressor_, n_);
    const std::uint64_t since = r.u64();
    if (since > 0) anchor_.resize(n_);
    r.floats(since > 0 ? std::span<float>(anchor_) : std::span<float>(), "the local-SGD anchor");
    since_round_ = since;
  }

 private:
  void average_deltas(std::span<float> x) {
    scratch_.resize(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) scratch_[i] = x[i] - anchor_[i];
    rng r = ctx_.round_rng();
    averager_.average(ctx_.transport, std::span<float>(scratch_), compressor_, r);
    ctx_.end_round();
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = anchor_[i] + scratch_[i];
    since_round_ = 0;
  }

  protocol_context ctx_;
  C compressor_;
  typename averager_for<T>::type averager_;
  std::vector<float> anchor_;     // the model of the last round, while local steps run
  std::vector<float> scratch_;    // the average of a round
  std::vector<float> direction_;  // d(g) before compression (momentum_before_compression)
  std::uint64_t since_round_ = 0;
  std::size_t n_;  // the model size
};

}  // namespace distopt::protocols
