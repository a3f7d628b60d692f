#pragma once
// async_parameter_server<C>: the parameter server of topology::parameter_server under
// staleness::bounded<Tau> (SSP, Ho et al., NeurIPS 2013) and staleness::asynchronous
// (AsySGD, Lian et al., NeurIPS 2015; the staled compressed gradients of Khirirat,
// Feyzmahdavian, Johansson, arXiv 1806.06573).
//
// Every worker k counts its rounds c = 1, 2, ...; a round ends its local steps:
//   worker k: push C(u_k), u_k = x_k - (model it last adopted), its update of round c;
//             then adopt the newest model the server has sent back (see "waiting").
//   server:   applies each push as it takes it: x <- x + decode(C(u_k)) / n (n pushes, one
//             from each worker, make one synchronous round's step); after each pass over
//             the workers it sends its model to every worker whose pushes it took, and to
//             every worker its pass released (below).
// A model is "complete to round m" when it holds rounds 1..m of every worker (m = the
// smallest count of pushes taken). Waiting: after its round c a worker blocks until it holds
// a model complete to round >= c - Tau; asynchronous never blocks and keeps the newest model
// it has (possibly the one it already had). The staleness of the steps that follow is
// c - m (0..Tau under bounded<Tau>), recorded in statistics.
//
// The server role runs on the server rank inside its own optimizer calls, with no extra
// thread, so every transport works unchanged: pushes that arrive while the server rank
// computes wait for its next step(). A server rank much slower than the others therefore
// makes their models staler (statistics show it) without slowing their steps. Waiting for
// any of several peers polls with a short sleep (detail/async_wait.hpp).
//
// Wire: push  [u32 kind: 0 update, 1 done][u32 0][u64 round][encoding];
//       pull  [u32 kind: 0 model, 1 final][u32 laggard rank][u64 complete round][d floats].
// Downlink: the exact model (4d bytes per pull); compressed downlinks are synchronous only.
//
// Faults. asynchronous: a worker silent for options.timeout while the server waits in
// finish() is given up (statistics::lost_peers) and the others finish (a worker's finish()
// waits up to twice options.timeout for the final model, to allow for that). bounded<Tau>: the
// server blocked past the deadline raises transport_error naming the rank that holds it back,
// which fails every worker; a worker waits twice that for the server, so the server's diagnosis
// comes first (a dead server: the worker's own error names it).
// A lost server fails every worker (they all depend on it).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "distopt/protocols/detail/async_wait.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/statistics.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/traits.hpp"
#include "distopt/core/protocol.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt::protocols {

inline constexpr tag async_push_tag = distopt::detail::reserved_tag(distopt::detail::reserved::async_push);
inline constexpr tag async_pull_tag = distopt::detail::reserved_tag(distopt::detail::reserved::async_pull);

template <compressor C>
class async_parameter_server {
  static_assert(!drives_own_collective_v<C>,
                "asynchronous parameter server: C runs its own synchronous collective (power_sgd); use "
                "staleness::synchronous with topology::allreduce");
  static_assert(!requires(C& c, std::span<float> v, compressor_state_t<C>& s) { c.finish_round(v, s); },
                "asynchronous parameter server: C tracks the synchronous aggregate of all workers (ef21); use "
                "staleness::synchronous");

 public:
  static constexpr std::uint64_t never = std::numeric_limits<std::uint64_t>::max();

  /// `max_staleness`: Tau of bounded<Tau>, or `never` (asynchronous). x0: the initial model.
  async_parameter_server(int rank, int world_size, int server_rank, std::uint64_t max_staleness,
                         std::span<const float> x0, std::chrono::milliseconds timeout)
      : me_(rank), server_(server_rank), n_(world_size), tau_(max_staleness), timeout_(timeout),
        model_(x0.begin(), x0.end()) {
    count_.assign(static_cast<std::size_t>(n_), 0);
    done_.assign(static_cast<std::size_t>(n_), 0);
    lost_.assign(static_cast<std::size_t>(n_), 0);
    heard_.resize(static_cast<std::size_t>(n_));
    decoded_.resize(model_.size());
  }

  /// Ends this worker's round: pushes `update` (this round's change of the model), then replaces
  /// x by the newest server model, waiting under bounded<Tau> as the header says. Returns the
  /// staleness of that model (this worker's round minus the round it is complete to).
  std::uint64_t round(transport_ref t, statistics& stats, std::span<float> x, std::span<const float> update,
                      C& c, rng& g) {
    if (!state_) state_.emplace(make_compressor_state(c, update.size()));
    ++rounds_;
    // The push is [header][encoding]: encoders append, so encode right after the header.
    message_.resize(detail::async_header::bytes);
    detail::async_header{0, 0, rounds_}.write(message_);
    encode(c, update, message_, g, *state_);
    if (me_ == server_) {
      apply(me_, std::span<const std::byte>(message_).subspan(detail::async_header::bytes), c);
      count_[static_cast<std::size_t>(me_)] = rounds_;
      serve(t, stats, c);
      if (must_wait()) wait_as_server(t, stats, c);
      std::memcpy(x.data(), model_.data(), x.size_bytes());
      return rounds_ - complete();
    }
    t.send(server_, async_push_tag, message_);
    while (t.try_recv(server_, async_pull_tag, pull_)) adopt_pull(/*final_expected=*/false);
    while (must_wait()) {  // the server waits timeout_ for the laggard, then fails naming it: outlast that
      receive_blocking(t, 2 * timeout_);
      adopt_pull(false);
    }
    std::memcpy(x.data(), model_.data(), x.size_bytes());
    return rounds_ - held_complete_;
  }

  /// Takes the pushes that have arrived and answers them (server rank only; a worker has
  /// nothing to answer): for a server rank that pauses between steps.
  void poll(transport_ref t, statistics& stats, std::span<const float>, C& c) {
    if (me_ == server_) serve(t, stats, c);
  }

  /// Ends the run: workers say they are done and adopt the server's final model; the server
  /// takes every push until each worker is done (or, asynchronous, lost), then sends the
  /// final model. Afterwards every surviving worker holds the same x.
  void finish(transport_ref t, statistics& stats, std::span<float> x, C& c) {
    if (me_ != server_) {
      message_.resize(detail::async_header::bytes);
      detail::async_header{1, 0, rounds_}.write(message_);
      t.send(server_, async_push_tag, message_);
      for (;;) {  // the server may first wait options.timeout for a silent worker: allow twice that
        receive_blocking(t, 2 * timeout_);
        if (adopt_pull(true)) break;
      }
    } else {
      done_[static_cast<std::size_t>(me_)] = 1;
      detail::poll_backoff backoff(stats);
      heard_.assign(heard_.size(), std::chrono::steady_clock::now());  // silence counts from here
      for (;;) {
        const std::uint64_t before = taken_;
        serve(t, stats, c);
        const auto now = std::chrono::steady_clock::now();
        bool all = true;
        for (int k = 0; k < n_; ++k) {
          const auto i = static_cast<std::size_t>(k);
          if (done_[i] || lost_[i]) continue;
          if (now - heard_[i] <= timeout_) {
            all = false;
          } else if (tau_ != never) {
            throw transport_error(std::string(protocol) + ": the server (rank " + std::to_string(me_) + ") waited " +
                                  std::to_string(timeout_.count()) + " ms in finish() for rank " + std::to_string(k) +
                                  ", which sent nothing more after round " + std::to_string(count_[i]) +
                                  ": it is dead or stuck");
          } else {
            give_up(k, stats);
          }
        }
        if (all) break;
        if (taken_ != before) backoff.reset();
        else backoff.pause();
      }
      send_models(t, /*final_model=*/true, [&](int k) { return done_[static_cast<std::size_t>(k)] != 0; });
    }
    std::memcpy(x.data(), model_.data(), x.size_bytes());
  }

 private:
  static constexpr const char* protocol = "asynchronous parameter server";

  std::uint64_t complete() const {
    std::uint64_t m = never;
    for (int k = 0; k < n_; ++k)
      if (!lost_[static_cast<std::size_t>(k)]) m = std::min(m, count_[static_cast<std::size_t>(k)]);
    return m;
  }
  int laggard() const {
    int who = server_;
    for (int k = 0; k < n_; ++k)
      if (!lost_[static_cast<std::size_t>(k)] && count_[static_cast<std::size_t>(k)] < count_[static_cast<std::size_t>(who)])
        who = k;
    return who;
  }
  // Must this worker, at its round rounds_, wait for a more complete model?
  bool must_wait() const {
    if (tau_ == never || rounds_ <= tau_) return false;
    return (me_ == server_ ? complete() : held_complete_) < rounds_ - tau_;
  }

  // model += decode(encoding) / n.
  void apply(int from, std::span<const std::byte> encoding, C& c) {
    try {
      c.decode(encoding, decoded_);
    } catch (const transport_error& e) {
      throw transport_error(std::string(protocol) + ": the update from rank " + std::to_string(from) +
                            " does not decode: " + e.what());
    }
    const float scale = 1.0f / static_cast<float>(n_);
    for (std::size_t i = 0; i < model_.size(); ++i) model_[i] += scale * decoded_[i];
  }

  // One pass of the server: takes every push that has arrived, then answers (header comment).
  void serve(transport_ref t, statistics& stats, C& c) {
    const std::uint64_t old_complete = complete();
    pushed_.assign(static_cast<std::size_t>(n_), 0);
    const auto arrivals = t.arrivals();  // unchanged since the last pass: nothing to take
    const bool news = !arrivals || arrivals != seen_arrivals_;
    seen_arrivals_ = arrivals;
    const auto now = std::chrono::steady_clock::now();
    for (int k = 0; news && k < n_; ++k) {
      const auto i = static_cast<std::size_t>(k);
      if (k == server_ || lost_[i] || done_[i]) continue;
      while (!done_[i] && receive_push(t, stats, k)) {
        ++taken_;
        heard_[i] = now;
        const auto h = detail::async_header::read(push_, 1, protocol, k);
        if (h.kind == 1) {
          done_[i] = 1;
          break;
        }
        if (h.b != count_[i] + 1)
          throw transport_error(std::string(protocol) + ": rank " + std::to_string(k) + " pushed round " +
                                std::to_string(h.b) + " after round " + std::to_string(count_[i]) +
                                " (messages lost or reordered)");
        apply(k, std::span<const std::byte>(push_).subspan(detail::async_header::bytes), c);
        count_[i] = h.b;
        pushed_[i] = 1;
      }
    }
    const std::uint64_t now_complete = complete();
    send_models(t, false, [&](int k) {
      const auto i = static_cast<std::size_t>(k);
      const bool released = now_complete != old_complete && tau_ != never && count_[i] > tau_ &&
                            old_complete < count_[i] - tau_;
      return pushed_[i] != 0 || released;
    });
  }

  // try_recv of a push; asynchronous gives a worker whose link failed up, bounded<Tau>
  // needs every worker and rethrows. Malformed messages throw in both (serve()).
  bool receive_push(transport_ref t, statistics& stats, int k) {
    try {
      return t.try_recv(k, async_push_tag, push_);
    } catch (const transport_error&) {
      if (tau_ != never) throw;
      give_up(k, stats);
      return false;
    }
  }

  template <class Want>
  void send_models(transport_ref t, bool final_model, Want want) {
    const std::uint64_t m = complete();
    pull_.resize(detail::async_header::bytes + model_.size() * sizeof(float));
    detail::async_header{final_model ? 1u : 0u, static_cast<std::uint32_t>(laggard()), m}.write(pull_);
    std::memcpy(pull_.data() + detail::async_header::bytes, model_.data(), model_.size() * sizeof(float));
    for (int k = 0; k < n_; ++k)
      if (k != server_ && !lost_[static_cast<std::size_t>(k)] && want(k)) t.send(k, async_pull_tag, pull_);
  }

  // Takes the model in pull_; returns whether it was the final one.
  bool adopt_pull(bool final_expected) {
    const auto h = detail::async_header::read(pull_, 1, protocol, server_);
    if (pull_.size() != detail::async_header::bytes + model_.size() * sizeof(float))
      throw transport_error(std::string(protocol) + ": rank " + std::to_string(me_) + " got a model of " +
                            std::to_string(pull_.size() - detail::async_header::bytes) + " bytes from the server, expected " +
                            std::to_string(model_.size() * sizeof(float)));
    if (h.kind == 1 && !final_expected)
      throw transport_error(std::string(protocol) + ": rank " + std::to_string(me_) +
                            " got the final model while still training (the server finished early)");
    std::memcpy(model_.data(), pull_.data() + detail::async_header::bytes, model_.size() * sizeof(float));
    held_complete_ = h.b;
    held_laggard_ = static_cast<int>(h.a);
    return h.kind == 1;
  }

  void receive_blocking(transport_ref t, std::chrono::milliseconds timeout) {
    try {
      t.recv(server_, async_pull_tag, pull_, timeout);
    } catch (const transport_error& e) {
      throw transport_error(std::string(protocol) + ": rank " + std::to_string(me_) + " at round " +
                            std::to_string(rounds_) + " waited for the server's model (it holds one complete to round " +
                            std::to_string(held_complete_) + ", the slowest being rank " + std::to_string(held_laggard_) +
                            "): " + e.what());
    }
  }

  void wait_as_server(transport_ref t, statistics& stats, C& c) {
    detail::poll_backoff backoff(stats);
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    while (must_wait()) {
      if (std::chrono::steady_clock::now() > deadline)
        throw transport_error(std::string(protocol) + ": the server (rank " + std::to_string(server_) + ") at round " +
                              std::to_string(rounds_) + " waited " + std::to_string(timeout_.count()) +
                              " ms for rank " + std::to_string(laggard()) + ", which is still at round " +
                              std::to_string(complete()) + " (bounded staleness " + std::to_string(tau_) +
                              "): it is dead, stuck or far slower; raise options.timeout if it is only slow");
      const std::uint64_t before = complete();
      serve(t, stats, c);
      if (complete() != before) backoff.reset();
      else backoff.pause();
    }
  }

  void give_up(int k, statistics& stats) {
    lost_[static_cast<std::size_t>(k)] = 1;
    stats.lost_peers.push_back(k);
  }

  int me_;
  int server_;
  int n_;
  std::uint64_t tau_;
  std::chrono::milliseconds timeout_;
  std::vector<float> model_;  // the server's model (server rank) or the newest one received
  std::vector<float> decoded_;
  std::vector<std::uint64_t> count_;  // server: pushes taken per worker
  std::vector<char> done_, lost_, pushed_;
  std::vector<std::chrono::steady_clock::time_point> heard_;  // server: when each worker's last message was taken
  std::uint64_t taken_ = 0;                                    // server: messages taken so far
  std::optional<compressor_state_t<C>> state_;
  byte_buffer message_, push_, pull_;
  std::optional<std::uint64_t> seen_arrivals_;  // transport_ref::arrivals() at the last pass
  std::uint64_t rounds_ = 0;
  std::uint64_t held_complete_ = 0;
  int held_laggard_ = 0;
};

/// The stale parameter-server protocol (SSP under staleness::bounded<Tau>, AsySGD under
/// staleness::asynchronous): local steps from the model of the last round; a round pushes
/// u = x - x_a through async_parameter_server and adopts the newest server model. Under
/// options.staleness_aware_lr the steps after a round are scaled by 1/(1 + s), s the
/// staleness of the adopted model (Zhang et al. 2016).
template <compressor C, class T, class S>
class stale_server {
 public:
  stale_server(protocol_context ctx, std::span<const float> x0, C c, T topo, S)
      : ctx_(ctx),
        compressor_(std::move(c)),
        engine_(ctx.transport.rank(), ctx.transport.size(), topo.server_rank, S::max_staleness, x0, ctx.opts.timeout),
        delta_(x0.size()) {}

  void step(std::span<float> x, std::span<const float> g, bool talk, local_update& u) {
    if (since_round_ == 0) anchor_.assign(x.begin(), x.end());
    u.set_scale(scale_);
    u.apply(x, g);
    ++since_round_;
    if (talk) push(x);
  }

  /// Pushes the pending steps; every surviving worker adopts the server's final model.
  void finish(std::span<float> x) {
    if (since_round_ > 0) push(x);
    engine_.finish(ctx_.transport, *ctx_.stats, x, compressor_);
  }

  void poll(std::span<float> x) { engine_.poll(ctx_.transport, *ctx_.stats, x, compressor_); }

 private:
  void push(std::span<float> x) {
    for (std::size_t i = 0; i < x.size(); ++i) delta_[i] = x[i] - anchor_[i];
    rng r = ctx_.round_rng();
    const std::uint64_t s = engine_.round(ctx_.transport, *ctx_.stats, x, delta_, compressor_, r);
    ++ctx_.stats->rounds;
    ctx_.stats->record_staleness(s);
    if (ctx_.opts.staleness_aware_lr) scale_ = 1.0f / (1.0f + static_cast<float>(s));
    since_round_ = 0;
  }

  protocol_context ctx_;
  C compressor_;
  async_parameter_server<C> engine_;
  std::vector<float> anchor_, delta_;
  float scale_ = 1.0f;
  std::uint64_t since_round_ = 0;
};

}  // namespace distopt::protocols
