#pragma once
// async_gossip<C>: non-blocking pairwise averaging with one random neighbour at a time —
// AD-PSGD (Lian et al., ICML 2018, arXiv 1710.06952; H = 1) and SwarmSGD (Nadiradze et al.,
// NeurIPS 2021, arXiv 1910.12308; H local steps, optionally lattice-quantized models), the
// configuration topology::random_pairwise<G> + staleness::asynchronous.
//
// An interaction of i with a neighbour j (uniform among the neighbours of i in G that have
// not finished), at each communication point of i (every H-th step):
//   i: q_i = Q(x_i); sends q_i; goes on with its local steps (it never waits);
//   j: when it next polls (each of its steps): q_j = Q(x_j); sends q_j back;
//      x_j <- x_j + (q_i - q_j) / 2;
//   i: when the reply arrives, x_i <- x_i + (q_j - q_i) / 2.
// So both ends move by opposite amounts and the sum of the models is preserved exactly (up
// to float rounding), whatever the quantizer Q and whatever local steps i took meanwhile:
// i re-applies its own progress since q_i, as SwarmSGD's non-blocking variant prescribes
// (x_i <- (x̂_i + x̂_j)/2 + (x_i - x̂_i) with x̂_i = q_i). With identity, an interaction
// without steps in between is the exact average (x_i + x_j)/2 on both ends.
// One request is in flight per worker, which keeps the re-applied progress short: a
// communication point that finds the previous request unanswered defers its interaction to
// the moment the reply is applied (several deferred ones merge into one), so
// statistics::rounds (interactions i started) falls below the communication points only
// when partners answer more slowly than i reaches them.
// Q is C's encoding: identity sends the floats; compress::lattice<B> sends B bits per
// entry and the receiver decodes against its own model (SwarmSGD's decoding key), which must
// lie within lattice::radius() of the sender's; other stateless compressors decode from the
// bytes alone. Models that drifted farther apart do not stop the run: j, unable to decode
// q_i (decoding_radius_error), asks i to send x_i in full precision and the interaction
// goes on exactly. i decodes the reply against q_i (not against its model, which may have
// moved meanwhile), and j, which knows q_i, replies in full precision when x_j is not
// within the radius of q_i, so every reply decodes. i records the staleness of each
// interaction: the local steps it took between sending q_i and applying the reply.
//
// Termination (finish): a worker says "done" to the neighbours that have not; each answers
// with an "ack" at its next poll (or with its own "done" if it is finishing too). A request
// precedes the ack on its channel, so once every neighbour has acked (or said done) and its
// own request is answered, nobody will ask it anything more and it returns, without waiting
// for its neighbours to finish their steps. Faults: a neighbour that stays silent for
// options.timeout while a request or ack is owed (or whose link fails) is given up —
// recorded in statistics::lost_peers, its pending request abandoned — and the others go on.
// A worker that pauses longer than that (evaluation, checkpointing) should call
// optimizer::poll() meanwhile, or its partners give it up.
//
// Wire: [u32 kind: 0 request, 1 reply, 2 done, 3 ack, 4 resend in full precision]
//       [u32 0: C's encoding, 1: d floats][u64 0][the model].

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "distopt/protocols/detail/async_wait.hpp"
#include "distopt/protocols/gossip.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/statistics.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/traits.hpp"
#include "distopt/graph.hpp"
#include "distopt/core/protocol.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt::protocols {

inline constexpr tag async_gossip_tag = distopt::detail::reserved_tag(distopt::detail::reserved::async_gossip);

template <compressor C>
class async_gossip {
  static_assert(!stateful_encoder<C>,
                "asynchronous gossip (AD-PSGD, SwarmSGD): C keeps per-worker state (error feedback, ef21, "
                "power_sgd), which has no meaning for models averaged with a random partner; use "
                "compress::identity or compress::lattice<B>");

 public:
  async_gossip(int rank, const graph& g, std::uint64_t seed, std::size_t dimension, std::chrono::milliseconds timeout)
      : me_(rank), seed_(seed), timeout_(timeout) {
    const auto d = static_cast<std::size_t>(g.degree(me_));
    peers_.resize(d);
    for (std::size_t k = 0; k < d; ++k) {
      peers_[k].rank = g.neighbours(me_)[k];
      peers_[k].sent.resize(dimension);
    }
    mine_.resize(dimension);
    theirs_.resize(dimension);
  }

  /// One local step was taken: for the staleness of pending interactions.
  void count_step() { ++steps_; }

  /// A communication point: answers what has arrived, then starts an interaction with a
  /// random neighbour, or defers it while the previous request is unanswered.
  void interact(transport_ref t, statistics& stats, std::span<float> x, C& c) {
    owed_ = true;
    poll(t, stats, x, c);
  }

  /// Answers requests and applies replies that have arrived, without waiting; starts a
  /// deferred interaction once the previous one is answered.
  void poll(transport_ref t, statistics& stats, std::span<float> x, C& c) {
    const auto now = std::chrono::steady_clock::now();
    const auto arrivals = t.arrivals();  // before the pass: what arrives during it is seen next time
    const bool news = !arrivals || arrivals != seen_arrivals_;
    seen_arrivals_ = arrivals;
    for (peer& p : peers_) {
      if (p.lost) continue;
      while (news && !p.lost && receive(t, stats, p)) {
        p.heard = now;
        take(t, stats, p, x, c);  // a malformed message throws
      }
      if (p.pending && now - p.sent_at > timeout_) give_up(p, stats);  // the partner never answered
    }
    if (owed_ && !finishing_ && !in_flight_) start(t, stats, x, c);
  }

  /// Says done to the neighbours, then answers them until each has acked (or is lost) and
  /// this worker's own request is answered (or abandoned).
  void finish(transport_ref t, statistics& stats, std::span<float> x, C& c) {
    finishing_ = true;
    for (peer& p : peers_) {
      p.heard = std::chrono::steady_clock::now();
      if (!p.lost && !p.quiet) send_control(t, stats, p, 2);
    }
    detail::poll_backoff backoff(stats);
    for (;;) {
      const std::uint64_t before = messages_;
      poll(t, stats, x, c);
      const auto now = std::chrono::steady_clock::now();
      bool all = true;
      for (peer& p : peers_) {
        if (p.lost || (p.quiet && !p.pending)) continue;
        if (now - p.heard > timeout_) give_up(p, stats);
        else all = false;
      }
      if (all) return;
      if (messages_ != before) backoff.reset();
      else backoff.pause();
    }
  }

 private:
  static constexpr const char* protocol = "asynchronous gossip";
  struct peer {
    int rank = -1;
    bool pending = false;  // our request to it is unanswered
    bool finished = false;  // it said done: never ask it again
    bool quiet = false;     // it will ask us nothing more (it said done, or acked ours)
    bool lost = false;
    std::vector<float> sent;  // q_i of the pending request
    std::uint64_t sent_at_step = 0;
    std::chrono::steady_clock::time_point sent_at{}, heard{std::chrono::steady_clock::now()};
  };

  // A fresh stream per draw: a function of (seed, rank, draw number).
  rng stream(purpose p) { return rng(seed_, static_cast<std::uint32_t>(me_), static_cast<std::uint32_t>(draws_++), p); }

  // message_ = [header of `kind`][x in full precision if `exact`, else C's encoding of x]
  // (encoders append); out = the point the receiver reconstructs.
  void quantize(std::uint32_t kind, bool exact, std::span<const float> x, C& c, std::span<float> out) {
    start_message(kind, exact);
    if (exact) {
      message_.resize(detail::async_header::bytes + x.size_bytes());
      std::memcpy(message_.data() + detail::async_header::bytes, x.data(), x.size_bytes());
      std::copy(x.begin(), x.end(), out.begin());
      return;
    }
    rng g = stream(purpose::compression);
    c.encode(x, message_, g);
    decode_into(std::span<const std::byte>(message_).subspan(detail::async_header::bytes), x, c, out);
  }
  void start_message(std::uint32_t kind, bool exact = false) {
    message_.resize(detail::async_header::bytes);
    detail::async_header{kind, exact ? 1u : 0u, 0}.write(message_);
  }
  void decode_into(std::span<const std::byte> bytes, std::span<const float> key, C& c, std::span<float> out) {
    if constexpr (decodes_with_reference_v<C>)
      c.decode(bytes, key, out);
    else
      c.decode(bytes, out);
  }

  // theirs_ = the point of p's request or reply, decoded against `key`. False for a request
  // that C cannot decode (a lattice point beyond the radius of key): the caller asks for it
  // in full precision.
  bool read_point(const detail::async_header& h, const peer& p, std::span<const float> key, C& c) {
    const auto payload = std::span<const std::byte>(in_).subspan(detail::async_header::bytes);
    try {
      if (h.a == 0) {
        decode_into(payload, key, c, theirs_);
      } else if (payload.size() == theirs_.size() * sizeof(float)) {
        std::memcpy(theirs_.data(), payload.data(), payload.size());
      } else {
        throw transport_error("a full-precision model of " + std::to_string(payload.size()) + " bytes, expected " +
                              std::to_string(theirs_.size() * sizeof(float)));
      }
      return true;
    } catch (const decoding_radius_error& e) {
      if (h.kind == 0) return false;
      throw undecodable(p, e);
    } catch (const transport_error& e) {
      throw undecodable(p, e);
    }
  }
  transport_error undecodable(const peer& p, const transport_error& e) const {
    return transport_error(std::string(protocol) + ": the model from rank " + std::to_string(p.rank) +
                           " does not decode: " + e.what());
  }

  // Must our reply to the request point theirs_ go in full precision? Its sender decodes it
  // against that point, exactly when x is within the radius of it (1 % kept for rounding).
  bool reply_exactly(std::span<const float> x, const C& c) const {
    if constexpr (requires { c.radius(); }) {
      float far = 0;
      for (std::size_t i = 0; i < x.size(); ++i) far = std::max(far, std::abs(x[i] - theirs_[i]));
      return !(far < 0.99f * c.radius());
    } else {
      return false;
    }
  }

  // Starts the owed interaction with a random neighbour that has not finished.
  void start(transport_ref t, statistics& stats, std::span<const float> x, C& c) {
    owed_ = false;
    candidates_.clear();
    for (std::size_t k = 0; k < peers_.size(); ++k)
      if (!peers_[k].finished && !peers_[k].lost) candidates_.push_back(k);
    rng g = stream(purpose::topology);
    if (candidates_.empty()) return;  // every neighbour finished or lost
    peer& p = peers_[candidates_[g.below(static_cast<std::uint32_t>(candidates_.size()))]];
    quantize(0, false, x, c, p.sent);
    if (!send(t, stats, p)) return;
    p.pending = true;
    p.sent_at_step = steps_;
    p.sent_at = std::chrono::steady_clock::now();
    in_flight_ = true;
    ++stats.rounds;
  }

  void take(transport_ref t, statistics& stats, peer& p, std::span<float> x, C& c) {
    ++messages_;
    const auto h = detail::async_header::read(in_, 4, protocol, p.rank);
    if (h.a > 1)
      throw transport_error(std::string(protocol) + ": a message from rank " + std::to_string(p.rank) +
                            " has unknown encoding " + std::to_string(h.a) + " (malformed, or a different protocol)");
    if (h.kind == 2 || h.kind == 3) {  // done (answered by an ack unless ours is on its way) or ack
      if (h.kind == 2) {
        p.finished = true;
        if (!finishing_) send_control(t, stats, p, 3);
      }
      p.quiet = true;
      return;
    }
    if (h.kind != 0 && !p.pending)
      throw transport_error(std::string(protocol) + ": rank " + std::to_string(p.rank) +
                            " answered a request rank " + std::to_string(me_) + " never made");
    if (h.kind == 4) {  // p could not decode our request: the same interaction in full precision
      quantize(0, true, x, c, p.sent);
      p.sent_at_step = steps_;
      p.sent_at = std::chrono::steady_clock::now();
      send(t, stats, p);
      return;
    }
    if (h.kind == 0) {  // a request: answer with our point, move half way to theirs
      if (!read_point(h, p, x, c)) {
        send_control(t, stats, p, 4);
        return;
      }
      quantize(1, h.a == 1 || reply_exactly(x, c), x, c, mine_);
      if (!send(t, stats, p)) return;
      for (std::size_t i = 0; i < x.size(); ++i) x[i] += 0.5f * (theirs_[i] - mine_[i]);
      return;
    }
    read_point(h, p, p.sent, c);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += 0.5f * (theirs_[i] - p.sent[i]);
    p.pending = false;
    in_flight_ = false;
    stats.record_staleness(steps_ - p.sent_at_step);
  }

  // Sends message_ to p; a neighbour whose link failed is given up (false).
  bool send(transport_ref t, statistics& stats, peer& p) {
    try {
      t.send(p.rank, async_gossip_tag, message_);
      return true;
    } catch (const transport_error&) {
      give_up(p, stats);
      return false;
    }
  }
  void send_control(transport_ref t, statistics& stats, peer& p, std::uint32_t kind) {
    start_message(kind);
    send(t, stats, p);
  }

  // try_recv; a neighbour whose link failed is given up.
  bool receive(transport_ref t, statistics& stats, peer& p) {
    try {
      return t.try_recv(p.rank, async_gossip_tag, in_);
    } catch (const transport_error&) {
      give_up(p, stats);
      return false;
    }
  }

  void give_up(peer& p, statistics& stats) {
    if (p.lost) return;
    p.lost = true;
    if (p.pending) in_flight_ = false;
    p.pending = false;
    stats.lost_peers.push_back(p.rank);
  }

  int me_;
  std::uint64_t seed_;
  std::chrono::milliseconds timeout_;
  std::vector<peer> peers_;
  std::vector<std::size_t> candidates_;
  std::vector<float> mine_, theirs_;
  byte_buffer message_, in_;
  std::uint64_t steps_ = 0, draws_ = 0, messages_ = 0;
  std::optional<std::uint64_t> seen_arrivals_;  // transport_ref::arrivals() at the last pass
  bool in_flight_ = false;  // a request of ours is unanswered (at most one)
  bool owed_ = false;        // a communication point is waiting for that request's answer
  bool finishing_ = false;
};

/// The asynchronous pairwise gossip protocol (AD-PSGD, SwarmSGD) over
/// topology::random_pairwise<G>: every local step x <- x - eta d(g); a step that ends with
/// a round starts a non-blocking interaction with a random neighbour of G (async_gossip),
/// others answer what has arrived. finish() keeps each worker's own model.
template <compressor C, class T, class S>
class pairwise_gossip {
 public:
  pairwise_gossip(protocol_context ctx, std::span<const float> x0, C c, T topo, S)
      : ctx_(ctx),
        compressor_(std::move(c)),
        engine_(ctx.transport.rank(), topo.base.make_graph(ctx.transport.size()), ctx.opts.seed, x0.size(),
                ctx.opts.timeout) {}

  void step(std::span<float> x, std::span<const float> g, bool talk, local_update& u) {
    u.apply(x, g);
    engine_.count_step();
    if (talk)
      engine_.interact(ctx_.transport, *ctx_.stats, x, compressor_);
    else
      engine_.poll(ctx_.transport, *ctx_.stats, x, compressor_);
  }

  void finish(std::span<float> x) { engine_.finish(ctx_.transport, *ctx_.stats, x, compressor_); }

  void poll(std::span<float> x) { engine_.poll(ctx_.transport, *ctx_.stats, x, compressor_); }

 private:
  protocol_context ctx_;
  C compressor_;
  async_gossip<C> engine_;
};

}  // namespace distopt::protocols
