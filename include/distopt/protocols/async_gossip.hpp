#pragma once
// async_gossip<C>: non-blocking pairwise averaging with one random neighbour at a time —
// AD-PSGD (Lian et al., ICML 2018, arXiv 1710.06952; H = 1) and SwarmSGD (Nadiradze et al.,
// NeurIPS 2021, arXiv 1910.12308; H local steps, optionally lattice-quantized models), the
// configuration topology::random_pairwise<G> + staleness::asynchronous.
//
// Every worker a keeps, besides its model x_a, an exposed copy x̂_a: the model it had when its
// last interaction ended (x̂_a = x0 at the start). x_a - x̂_a is its local progress since (its
// gradient steps). An interaction of i with a neighbour j (uniform among the neighbours of i in G
// that have not finished), started at a communication point of i (every H-th step):
//   i: q_i = Q(x̂_i); sends q_i; goes on with its local steps (it never waits);
//   j: when it next polls (before each of its steps): q_j = Q(x̂_j); sends q_j back;
//      x_j <- x_j + (q_i - q_j) / 2,  x̂_j <- x̂_j + (q_i - q_j) / 2;
//   i: when the reply arrives, x_i <- x_i + (q_j - q_i) / 2,  x̂_i <- x_i.
// With Q = identity that is SwarmSGD's non-blocking averaging (ALGORITHMS.md §3.2, Algorithm S2):
//   x_i <- (x̂_i + x̂_j) / 2 + (x_i - x̂_i),  x̂_i <- x_i      (i re-applies all its local progress)
//   x̂_j <- (x̂_i + x̂_j) / 2,  x_j keeps its progress x_j - x̂_j for its own next interaction.
// Both ends move by opposite amounts, so the sum of the models is preserved exactly (up to float
// rounding) whatever Q and whatever steps either took meanwhile. With H = 1 it is AD-PSGD as
// published (ALGORITHMS.md §2.6): replies are applied before a step and the request sent after
// it, carrying x̂_i, so when the previous reply came before the gradient was read, the request
// carries the model the gradient was read at and the step lands after the average:
//   x_i <- (x_i + x_j) / 2 - eta g_i(x_i)    (X W - eta G(X̂): gradient before, applied after);
// without steps in between an interaction is the exact average (x_i + x_j) / 2 on both ends.
// One request is in flight per worker: a communication point that finds the previous request
// unanswered defers its interaction to the moment the reply is applied (several deferred ones
// merge into one), so statistics::rounds (interactions i started) falls below the communication
// points when partners answer more slowly than i reaches them. A request unanswered for
// staleness::asynchronous::max_unanswered_steps of i's steps (default 16) makes i wait for the
// reply (answering others) before it steps on: with many more workers than cores, i cannot
// run unboundedly many local steps between interactions while its partner is not scheduled.
// Q is C's encoding: identity sends the floats; compress::lattice<B> sends B bits per
// entry and the receiver decodes against its own exposed copy (SwarmSGD's decoding key), which
// must lie within lattice::radius() of the sender's point; other stateless compressors decode from
// the bytes alone. Models that drifted farther apart do not stop the run: j, unable to decode
// q_i (decoding_radius_error), asks i to send x̂_i in full precision and the interaction goes
// on exactly. i decodes the reply against q_i (not against its own copy, which may have moved
// meanwhile), and j, which knows q_i, replies in full precision when x̂_j is not within the
// radius of q_i, so every reply decodes. i records the staleness of each interaction: the local
// steps it took between sending q_i and applying the reply.
//
// Termination (finish): a worker says "done" to the neighbours that have not; each answers
// with an "ack" at its next poll (or with its own "done" if it is finishing too). A finishing
// worker takes no part in averaging any more: it declines the requests it gets after its done
// (it drops them; a requester that gets a done while its request to that worker is pending
// knows it will not be answered, since a reply would have come first on the channel), so its
// final model is not moved by neighbours still training. A request precedes the ack on its
// channel, so once every neighbour has acked (or said done) and its own request is answered
// (or declined), nobody will ask it anything more and it returns, without waiting for its
// neighbours to finish their steps. Faults: a neighbour that stays silent for
// options.timeout while a request or ack is owed (or whose link fails) is given up —
// recorded in statistics::lost_peers, its pending request abandoned — and the others go on.
// A worker that pauses longer than that (evaluation, checkpointing) should call
// optimizer::poll() meanwhile, or its partners give it up.
//
// Checkpoints (optimizer::quiesce, then optimizer::save). The consistent point is a cut of the
// interactions: quiesce() — collective, every rank at the same step — starts no interaction,
// sends each neighbour a mark (behind every request it sent), and answers requests until its own
// request is answered and every neighbour's mark has come. After a neighbour's mark a worker reads
// that channel only for the answer it is owed (a reply; a request in full precision it asked for):
// whatever else follows belongs after the neighbour's cut, and waits, unread, until this worker
// has passed its own. So a request sent before its sender's mark is read, answered and its reply
// applied before either end passes the cut (the responder cannot pass it before the requester's
// mark, which follows the request), and one sent after it is read by neither before its cut:
// every interaction is wholly in the saved models or wholly absent, and the sum of the saved
// models is the sum the interactions preserve. save() writes the exposed copy, the random draws
// and a deferred interaction. Cost: a mark to each neighbour and, for each worker, a wait for its
// own last reply and for the slowest neighbour to reach quiesce() (up to options.timeout; a
// neighbour silent that long is given up, as in finish). After the cut, poll() and step() answer
// what waited; save() must come before them.
//
// Wire: [u32 kind: 0 request, 1 reply, 2 done, 3 ack, 4 resend in full precision, 5 mark]
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
#include "distopt/staleness/asynchronous.hpp"
#include "distopt/core/protocol.hpp"

namespace distopt::protocols {

inline constexpr tag async_gossip_tag = distopt::detail::reserved_tag(distopt::detail::reserved::async_gossip);

template <compressor C>
class async_gossip {
  static_assert(!stateful_encoder<C>,
                "asynchronous gossip (AD-PSGD, SwarmSGD): C keeps per-worker state (error feedback, ef21, "
                "power_sgd), which has no meaning for models averaged with a random partner; use "
                "compress::identity or compress::lattice<B>");

 public:
  /// x0: the initial model (the first exposed copy); `max_unanswered_steps`: the
  /// oversubscription bound (header).
  async_gossip(int rank, const graph& g, std::uint64_t seed, std::span<const float> x0,
               std::uint64_t max_unanswered_steps, std::chrono::milliseconds timeout)
      : me_(rank),
        seed_(seed),
        max_unanswered_(max_unanswered_steps),
        timeout_(timeout),
        exposed_(x0.begin(), x0.end()) {
    const std::size_t dimension = x0.size();
    const auto d = static_cast<std::size_t>(g.degree(me_));
    peers_.resize(d);
    for (std::size_t k = 0; k < d; ++k) {
      peers_[k].rank = g.neighbours(me_)[k];
      peers_[k].sent.resize(dimension);
    }
    mine_.resize(dimension);
    theirs_.resize(dimension);
  }

  /// One local step: answers what has arrived, applies `update` (x <- x - eta d, the gradient read
  /// before any of it), and at a communication point (`talk`) starts an interaction with a random
  /// neighbour, or defers it while the previous request is unanswered. Then, if the request has
  /// been unanswered for max_unanswered_steps steps (counted in stats.steps), waits for it.
  template <class Update>
  void step(transport_ref t, statistics& stats, std::span<float> x, bool talk, C& c, Update&& update) {
    at_cut_ = false;
    poll(t, stats, x, c);
    update();
    owed_ = owed_ || talk;
    if (owed_ && !finishing_ && !in_flight_) start(t, stats, c, stats.steps);
    if (!overdue(stats)) return;
    detail::poll_backoff backoff(stats);
    while (overdue(stats)) {  // ends: the partner answers, says done, or is given up after options.timeout
      const std::uint64_t before = messages_;
      poll(t, stats, x, c);
      if (messages_ != before)
        backoff.reset();
      else
        backoff.pause();
    }
  }

  /// Answers requests and applies replies that have arrived, without waiting; starts a
  /// deferred interaction once the previous one is answered.
  void poll(transport_ref t, statistics& stats, std::span<float> x, C& c) {
    at_cut_ = false;
    const auto now = std::chrono::steady_clock::now();
    const auto arrivals = t.arrivals();  // before the pass: what arrives during it is seen next time
    const bool news = !arrivals || arrivals != seen_arrivals_;
    seen_arrivals_ = arrivals;
    for (peer& p : peers_) {
      if (p.lost) continue;
      while (news && !p.lost && readable(p) && receive(t, stats, p)) {
        p.heard = now;
        take(t, stats, p, x, c);  // a malformed message throws
      }
      if (p.pending && now - p.sent_at > timeout_) give_up(p, stats);  // the partner never answered
    }
    if (owed_ && !finishing_ && !quiescing_ && !in_flight_) start(t, stats, c, stats.steps);
  }

  /// The cut (header, "Checkpoints"): marks every neighbour, then answers until this worker's
  /// request is answered and every neighbour (not lost or finished) has marked. Collective.
  void quiesce(transport_ref t, statistics& stats, std::span<float> x, C& c) {
    quiescing_ = true;
    for (peer& p : peers_) {
      p.heard = std::chrono::steady_clock::now();
      if (!p.lost && !p.finished) send_control(t, stats, p, 5);
    }
    detail::poll_backoff backoff(stats);
    for (;;) {
      const std::uint64_t before = messages_;
      poll(t, stats, x, c);  // gives up a partner that never answers our request
      const auto now = std::chrono::steady_clock::now();
      bool all = !in_flight_;
      for (peer& p : peers_) {
        if (p.lost || p.finished || (p.marks > cuts_ && !p.asked_resend)) continue;
        if (now - p.heard > timeout_)
          give_up(p, stats);
        else
          all = false;
      }
      if (all) break;
      if (messages_ != before)
        backoff.reset();
      else
        backoff.pause();
    }
    ++cuts_;
    quiescing_ = false;
    seen_arrivals_.reset();  // what waited behind the neighbours' marks is read from now on
    at_cut_ = true;
  }

  /// Writes the state at the cut: the neighbours (compared on load), the random draws, a deferred
  /// interaction and the exposed copy; a config_error unless this worker is at a cut (built or
  /// loaded, or quiesce() with no step() or poll() since).
  void save(checkpoint_writer& w) const {
    if (!at_cut_)
      throw config_error(std::string(protocol) + " (AD-PSGD, SwarmSGD): rank " + std::to_string(me_) +
                         " is not at a consistent point, interactions may be half applied; call optimizer::quiesce() "
                         "on every rank at the same step, then save() before the next step or poll()");
    w.u64(peers_.size());
    for (const peer& p : peers_) w.u32(static_cast<std::uint32_t>(p.rank));
    w.u64(draws_);
    w.boolean(owed_);
    w.floats(exposed_);
  }

  /// Reads what save() wrote into a worker built for the same configuration, before its first step.
  void load(checkpoint_reader& r) {
    if (r.count(4) != peers_.size()) r.refuse("the graph gives this rank another number of neighbours");
    for (const peer& p : peers_)
      if (static_cast<int>(r.u32()) != p.rank) r.refuse("the graph gives this rank other neighbours");
    const std::uint64_t draws = r.u64();
    const bool owed = r.boolean();
    r.floats(exposed_, "the exposed copy");
    draws_ = draws;
    owed_ = owed;
    at_cut_ = true;
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
        if (now - p.heard > timeout_)
          give_up(p, stats);
        else
          all = false;
      }
      if (all) return;
      if (messages_ != before)
        backoff.reset();
      else
        backoff.pause();
    }
  }

 private:
  static constexpr const char* protocol = "asynchronous gossip";
  struct peer {
    int rank = -1;
    bool pending = false;   // our request to it is unanswered
    bool finished = false;  // it said done: never ask it again
    bool quiet = false;     // it will ask us nothing more (it said done, or acked ours)
    bool lost = false;
    bool asked_resend = false;  // we asked it for its request in full precision
    std::uint64_t marks = 0;    // cuts it has reached (marks received)
    std::vector<float> sent;    // q_i of the pending request
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
    detail::async_header{kind, exact ? 1u : 0u, {0}}.write(message_);
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
  // against that point, exactly when our exposed copy is within the radius of it (1 % kept for
  // rounding).
  bool reply_exactly(const C& c) const {
    if constexpr (requires { c.radius(); }) {
      float far = 0;
      for (std::size_t i = 0; i < exposed_.size(); ++i) far = std::max(far, std::abs(exposed_[i] - theirs_[i]));
      return !(far < 0.99f * c.radius());
    } else {
      return false;
    }
  }

  // Is p's channel read? Not after a mark of a cut this worker has not passed, but for an answer
  // owed to it: what else follows belongs after p's cut (header, "Checkpoints").
  bool readable(const peer& p) const { return p.marks <= cuts_ || p.pending || p.asked_resend; }

  bool overdue(const statistics& stats) const {
    return in_flight_ && stats.steps - in_flight_since_ >= max_unanswered_;
  }

  // Starts the owed interaction with a random neighbour that has not finished: sends it the
  // exposed copy.
  void start(transport_ref t, statistics& stats, C& c, std::uint64_t step) {
    owed_ = false;
    candidates_.clear();
    for (std::size_t k = 0; k < peers_.size(); ++k)
      if (!peers_[k].finished && !peers_[k].lost) candidates_.push_back(k);
    rng g = stream(purpose::topology);
    if (candidates_.empty()) return;  // every neighbour finished or lost
    peer& p = peers_[candidates_[g.below(static_cast<std::uint32_t>(candidates_.size()))]];
    quantize(0, false, exposed_, c, p.sent);
    if (!send(t, stats, p)) return;
    p.pending = true;
    p.sent_at = std::chrono::steady_clock::now();
    in_flight_ = true;
    in_flight_since_ = step;
    ++stats.rounds;
  }

  void take(transport_ref t, statistics& stats, peer& p, std::span<float> x, C& c) {
    ++messages_;
    const auto h = detail::async_header::read(in_, 5, protocol, p.rank);
    if (h.a > 1)
      throw transport_error(std::string(protocol) + ": a message from rank " + std::to_string(p.rank) +
                            " has unknown encoding " + std::to_string(h.a) + " (malformed, or a different protocol)");
    if (h.kind == 5) {  // p reached the cut: it sends no request before we pass it
      ++p.marks;
      return;
    }
    if (h.kind == 2 || h.kind == 3) {  // done (answered by an ack unless ours is on its way) or ack
      if (h.kind == 2) {
        p.finished = true;
        if (!finishing_) send_control(t, stats, p, 3);
        if (p.pending) decline(p);  // p answered before saying done, or will not answer
      }
      p.quiet = true;
      return;
    }
    if (h.kind != 0 && !p.pending)
      throw transport_error(std::string(protocol) + ": rank " + std::to_string(p.rank) + " answered a request rank " +
                            std::to_string(me_) + " never made");
    if (h.kind == 4) {  // p could not decode our request: the same interaction in full precision
      quantize(0, true, exposed_, c, p.sent);
      p.sent_at = std::chrono::steady_clock::now();
      send(t, stats, p);
      return;
    }
    if (h.kind == 0) {  // a request: answer with our exposed copy, move both half way to theirs
      p.asked_resend = false;
      if (finishing_) return;  // declined: p learns it from our done, which it gets after this
      if (!read_point(h, p, exposed_, c)) {
        send_control(t, stats, p, 4);
        p.asked_resend = true;
        return;
      }
      quantize(1, h.a == 1 || reply_exactly(c), exposed_, c, mine_);
      if (!send(t, stats, p)) return;
      for (std::size_t i = 0; i < x.size(); ++i) {
        const float move = 0.5f * (theirs_[i] - mine_[i]);
        x[i] += move;
        exposed_[i] += move;  // the progress since our last exposure stays ours, for our next interaction
      }
      return;
    }
    read_point(h, p, p.sent, c);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += 0.5f * (theirs_[i] - p.sent[i]);
    std::copy(x.begin(), x.end(), exposed_.begin());
    p.pending = false;
    in_flight_ = false;
    stats.record_staleness(stats.steps - in_flight_since_);
  }

  // p will not answer our request (it finished): the interaction did not happen; the next
  // communication point picks another neighbour.
  void decline(peer& p) {
    p.pending = false;
    in_flight_ = false;
    owed_ = true;
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
    p.asked_resend = false;
    if (p.pending) in_flight_ = false;
    p.pending = false;
    stats.lost_peers.push_back(p.rank);
  }

  int me_;
  std::uint64_t seed_;
  std::uint64_t max_unanswered_;
  std::chrono::milliseconds timeout_;
  std::vector<float> exposed_;  // x̂ (header): what it sends; x - x̂ is its progress not yet exposed
  std::vector<peer> peers_;
  std::vector<std::size_t> candidates_;
  std::vector<float> mine_, theirs_;
  byte_buffer message_, in_;
  std::uint64_t draws_ = 0, messages_ = 0;
  std::uint64_t in_flight_since_ = 0;           // stats.steps when the request in flight was sent
  std::optional<std::uint64_t> seen_arrivals_;  // transport_ref::arrivals() at the last pass
  bool in_flight_ = false;                      // a request of ours is unanswered (at most one)
  bool owed_ = false;                           // a communication point is waiting for that request's answer
  bool finishing_ = false;
  bool quiescing_ = false;  // in quiesce(): starts no interaction
  bool at_cut_ = true;      // no step or poll since the start, the last cut or a load
  std::uint64_t cuts_ = 0;  // quiesce() calls passed in this run
};

/// The asynchronous pairwise gossip protocol (AD-PSGD, SwarmSGD) over
/// topology::random_pairwise<G>: each step answers what has arrived, applies the local step,
/// and at a communication point starts a non-blocking interaction with a random neighbour of
/// G (async_gossip, above). finish() keeps each worker's own model. Workers draw their
/// local-steps schedules independently (independent_schedules).
template <compressor C, class T, class S>
class pairwise_gossip {
 public:
  static constexpr bool independent_schedules = true;

  pairwise_gossip(protocol_context ctx, std::span<const float> x0, C c, T topo, S s)
      : ctx_(ctx),
        compressor_(std::move(c)),
        engine_(ctx.transport.rank(), topo.base.make_graph(ctx.transport.size()), ctx.opts.seed, x0,
                staleness::max_unanswered_steps(s), ctx.opts.timeout) {
    if constexpr (requires { s.staleness_aware_lr; })
      if (s.staleness_aware_lr)
        throw config_error(
            "pairwise asynchronous gossip (AD-PSGD, SwarmSGD) has no staleness-aware step; "
            "staleness_aware_lr applies to the parameter server only: leave it false");
  }

  void step(std::span<float> x, std::span<const float> g, bool talk, local_update& u) {
    engine_.step(ctx_.transport, *ctx_.stats, x, talk, compressor_, [&] { u.apply(x, g); });
  }

  void finish(std::span<float> x) { engine_.finish(ctx_.transport, *ctx_.stats, x, compressor_); }

  void poll(std::span<float> x) { engine_.poll(ctx_.transport, *ctx_.stats, x, compressor_); }

  /// The consistent point of a checkpoint (async_gossip, "Checkpoints"). Collective.
  void quiesce(std::span<float> x) { engine_.quiesce(ctx_.transport, *ctx_.stats, x, compressor_); }

  /// Checkpoints hold the engine's state at the cut; save() outside a cut is a config_error.
  void save(checkpoint_writer& w) const { engine_.save(w); }
  void load(checkpoint_reader& r) { engine_.load(r); }

 private:
  protocol_context ctx_;
  C compressor_;
  async_gossip<C> engine_;
};

}  // namespace distopt::protocols
