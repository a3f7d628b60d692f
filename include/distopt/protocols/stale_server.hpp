#pragma once
// async_parameter_server<C>: the parameter server of topology::parameter_server under
// staleness::bounded<Tau> (SSP, Ho et al., NeurIPS 2013) and staleness::asynchronous
// (AsySGD, Lian et al., NeurIPS 2015, arXiv 1506.08272; the staled compressed gradients of
// Khirirat, Feyzmahdavian, Johansson, arXiv 1806.06573). ALGORITHMS.md §2.5.
//
// Every worker k counts its rounds c = 1, 2, ...; a round ends its local steps:
//   worker k: pushes C(u_k), u_k = x_k - (its parameters when the round began);
//   server:   applies each push as it takes it, x <- x + decode(C(u_k)) / n (n pushes, one from
//             each worker, make one synchronous round's step), and answers the pusher with its
//             model and how many of that worker's pushes the model holds.
// Read-my-writes (SSP's consistency model): a worker's parameters are always the newest server
// model it holds plus its own pushes that model does not hold yet, each as the server will add it:
//   x_k = x_server + sum over own pushes p not in x_server of decode(C(u_p)) / n,
// so no gradient is computed on parameters that lack the worker's own updates, and none twice
// on the same parameters because an answer is late.
// bounded<Tau>: a model is "complete to round m" when it holds rounds 1..m of every worker still
// training. After its round c a worker waits until it holds one complete to round >= c - Tau;
// the staleness c - m (0..Tau) is recorded in statistics.
// asynchronous: never waits for other workers. The staleness of a push is AsySGD's delay in
// rounds: the other workers' pushes the server applied between the model the push was computed
// on and the push itself, divided by n - 1 and rounded (1 when each of the others pushes once
// while it computes). The server measures it and tells the worker, which records the largest of
// its pushes answered in each round; S's staleness_aware_lr scales the following steps by
// 1 / (1 + staleness) (under bounded<Tau>, by the c - m above).
// Oversubscription: a worker whose oldest unanswered push was sent
// staleness::asynchronous::max_unanswered_steps local steps ago (default 16) waits for the answer
// before it steps on, so with many more workers than cores a worker does not run far ahead of a
// server thread that is not scheduled. staleness::asynchronous{.max_unanswered_steps =
// staleness::asynchronous::unbounded} never waits.
//
// A server that answers while its rank computes: each server rank runs its shard in a thread
// beside its training thread (detail/async_shard_server.hpp); the worker of that rank applies its
// own pushes and reads the shard under a lock, without messages. Every rank still trains (a
// program is the same on every rank, as with the synchronous server), and a server rank 10x
// slower than the others does not delay their answers. Transports: every call this protocol
// makes on a server rank's transport, from either thread, holds one lock, so one thread uses it
// at a time. The thread and TCP transports are safe from any thread; under MPI initialise with
// distopt::mpi_session(argc, argv, MPI_THREAD_SERIALIZED) (the default MPI_THREAD_FUNNELED allows
// MPI calls from the main thread only). A program that itself uses the transport of a server
// rank while training needs one safe for concurrent use (thread, TCP; MPI_THREAD_MULTIPLE). The
// modelled transports (throttled, simulated) time the CPU of the thread that calls them: on a
// server rank with one shard that is the server thread only.
//
// Shards (topology::parameter_server::shards = S): ranks server_rank .. server_rank + S - 1 each
// serve the coordinates [s d / S, (s + 1) d / S); a worker pushes each shard its slice of u,
// encoded apart (C's state is per shard), and the rules above hold per shard. The staleness
// recorded is the largest over the shards (asynchronous) or c minus the smallest complete round.
//
// Wire (tags async_push_tag, async_pull_tag; 40-byte headers, detail/async_shard_server.hpp):
//   push [u32 kind: 0 update, 1 done, 2 mark][u32 0][u64 round][u64 version][u64 own]
//        [u64 generation][C's encoding]
//        (the model it was computed on: `version` pushes applied, `own` of them this worker's;
//        `generation`: the cuts its sender has passed or loaded, below)
//   pull [u32 kind: 0 model, 1 final, 2 cut][u32 slowest rank][u64 version][u64 own]
//        [u64 complete round][u64 staleness][the shard's floats]
// Downlink: the exact model (4 d / S bytes per pull); compressed downlinks are synchronous only.
//
// Faults. asynchronous: a worker silent for options.timeout while a server waits in finish() is
// given up (statistics::lost_peers of the server rank) and the others finish; a worker's finish()
// waits up to twice options.timeout for the final model, to allow for that. bounded<Tau>: a
// worker held back for options.timeout (twice that on ranks without a shard, so a server rank's
// diagnosis comes first) raises transport_error naming the slowest rank. A server rank that
// stops (or whose thread fails: a malformed push) fails every worker, which all depend on it.
//
// Checkpoints (optimizer::quiesce, then optimizer::save). The consistent point is a cut of the
// pushes: quiesce() — collective, every rank at the same step — pushes the worker's pending local
// steps, then sends each shard a mark behind them (a channel is FIFO, so when a shard takes the
// mark it has applied every push of that worker) and waits. A shard that has the marks of every
// worker still training records its state at that moment — slice, pushes applied per worker,
// version — and answers each worker with that model (kind cut); no push comes after a mark until
// the worker has every shard's cut, so the recorded state holds every push before the cut and
// none after it. The worker adopts the cut model (it holds all its own pushes: nothing is left to
// add for read-my-writes), so its parameters equal the server's model at the cut on every rank.
// save() writes the worker's state and, on a server rank, the shard at the cut (not the live
// shard, which the others' later pushes already change). Cost: one mark per shard and one model
// per shard per worker (as one round), and a barrier: every worker waits for the slowest to reach
// quiesce() (up to twice options.timeout, then transport_error). The cuts passed are counted
// (the generation, in every push); a checkpoint restores a shard as a new generation, and the
// pushes of workers that loaded theirs wait, unread, until their server rank has loaded its own:
// the ranks may load and step in any order.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "distopt/core/deadline.hpp"
#include "distopt/protocols/detail/async_shard_server.hpp"
#include "distopt/protocols/detail/async_wait.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/statistics.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/traits.hpp"
#include "distopt/core/transport_ref.hpp"
#include "distopt/staleness/asynchronous.hpp"
#include "distopt/topology/parameter_server.hpp"
#include "distopt/core/protocol.hpp"

namespace distopt::protocols {

inline constexpr tag async_push_tag = detail::ps_push_tag;
inline constexpr tag async_pull_tag = detail::ps_pull_tag;

template <compressor C>
class async_parameter_server {
  static_assert(!drives_own_collective_v<C>,
                "asynchronous parameter server: C runs its own synchronous collective (power_sgd); use "
                "staleness::synchronous with topology::allreduce");
  static_assert(
      !requires(C & c, std::span<float> v, compressor_state_t<C>& s) { c.finish_round(v, s); },
      "asynchronous parameter server: C tracks the synchronous aggregate of all workers (ef21); use "
      "staleness::synchronous");

 public:
  static constexpr std::uint64_t never = detail::ps_never;

  /// `max_staleness`: Tau of bounded<Tau>, or `never` (asynchronous); `max_unanswered_steps`: the
  /// oversubscription bound (header). x0: the initial model. A server rank starts serving here.
  async_parameter_server(transport_ref t, const topology::parameter_server& topo, std::uint64_t max_staleness,
                         std::uint64_t max_unanswered_steps, std::span<const float> x0,
                         std::chrono::milliseconds timeout, const C& c)
      : me_(t.rank()),
        n_(t.size()),
        tau_(max_staleness),
        max_unanswered_(max_unanswered_steps),
        timeout_(timeout),
        held_(x0.begin(), x0.end()),
        anchor_(x0.begin(), x0.end()),
        update_(x0.size()) {
    topo.validate(n_);
    const auto d = x0.size();
    const auto shards = static_cast<std::size_t>(topo.shards);
    if (d < shards)
      throw config_error("topology::parameter_server: " + std::to_string(shards) + " shards need a model of at least " +
                         std::to_string(shards) + " parameters, got " + std::to_string(d) + "; use fewer shards");
    C copy = c;
    for (std::size_t k = 0; k < shards; ++k) {
      const int rank = topo.server_rank + static_cast<int>(k);
      const std::size_t begin = k * d / shards, end = (k + 1) * d / shards;
      shard& s = shards_.emplace_back(shard{rank, begin, end, make_compressor_state(copy, end - begin)});
      if (rank == me_) {
        local_ = k;
        server_ = std::make_unique<detail::async_shard_server<C>>(t, me_, n_, tau_, slice(held_, s), timeout_, c);
        cut_ = {std::vector<float>(slice(held_, s).begin(), slice(held_, s).end()),
                std::vector<std::uint64_t>(static_cast<std::size_t>(n_), 0), 0};
      }
    }
  }

  /// Ends this worker's round: x (its parameters after the round's local steps) minus the
  /// parameters the round began with is pushed; x becomes the newest server model plus this
  /// worker's pushes it lacks, after waiting as the header says. Returns the staleness.
  std::uint64_t round(transport_ref t, statistics& stats, std::span<float> x, C& c, rng& g) {
    check_server();
    at_cut_ = false;
    ++rounds_;
    for (std::size_t i = 0; i < x.size(); ++i) update_[i] = x[i] - anchor_[i];
    pending& p = start_pending(stats.steps);
    for (shard& s : shards_) push(t, s, p, c, g);
    answers_ = 0;
    answered_now_ = false;
    take(t);
    wait(t, stats, [&] { return must_wait(stats); });
    settle(x);
    if (answered_now_) staleness_ = answers_;
    if (tau_ == never) return staleness_;
    const std::uint64_t m = complete();
    return rounds_ > m ? rounds_ - m : 0;
  }

  /// Nothing to answer on the worker's side (a server rank's thread serves by itself); rethrows
  /// the error of that thread if it stopped on one.
  void poll(transport_ref, statistics&, std::span<const float>, C&) { check_server(); }

  /// Ends the run: this worker says it is done and waits for every shard's final model (a server
  /// rank serves until every worker is done or, asynchronous, lost). Afterwards every surviving
  /// worker holds the same x. Push the last local steps with round() first.
  void finish(transport_ref t, statistics& stats, std::span<float> x, C&) {
    check_server();
    at_cut_ = false;
    message_.resize(detail::ps_header::bytes);
    detail::ps_header{detail::ps_done, 0, {rounds_, 0, 0, generation_}}.write(message_);
    for (shard& s : shards_)
      if (!is_local(s)) send(t, s.rank, message_);
    if (server_) server_->finish_local();
    // A server may first wait options.timeout for a silent worker: allow twice that.
    detail::poll_backoff backoff(stats);
    const auto deadline = distopt::detail::deadline_after(2 * timeout_);
    for (shard& s : shards_) {
      while (!is_local(s) && !s.final) {
        if (receive(t, s)) {
          s.final = adopt(s, detail::ps_final) == detail::ps_final;
          backoff.reset();
          continue;
        }
        if (std::chrono::steady_clock::now() > deadline) throw stuck("the final model", s, 2 * timeout_);
        check_server();
        backoff.pause();
      }
    }
    if (server_) {
      server_->join(stats);
      read_local();
    }
    for (const shard& s : shards_)
      if (s.own != rounds_)
        throw transport_error(std::string(detail::ps_protocol) + ": the final model of the server rank " +
                              std::to_string(s.rank) + " holds " + std::to_string(s.own) + " of the " +
                              std::to_string(rounds_) + " pushes of rank " + std::to_string(me_) +
                              " (messages lost or malformed)");
    pending_.clear();
    std::copy(held_.begin(), held_.end(), x.begin());
  }

  /// The cut (header, "Checkpoints"): marks every shard behind this worker's pushes and waits
  /// until each has the marks of every worker and answers with its model at the cut, which x
  /// becomes. Push the pending local steps with round() first. Collective.
  void quiesce(transport_ref t, statistics& stats, std::span<float> x) {
    check_server();
    message_.resize(detail::ps_header::bytes);
    detail::ps_header{detail::ps_mark, 0, {rounds_, 0, 0, generation_}}.write(message_);
    for (shard& s : shards_)
      if (!is_local(s)) send(t, s.rank, message_);
    if (server_) server_->mark_local();
    answers_ = 0;
    answered_now_ = false;
    detail::poll_backoff backoff(stats);
    const auto limit = 2 * timeout_;  // a barrier: the slowest worker may still be a timeout from its push
    const auto deadline = distopt::detail::deadline_after(limit);
    for (shard& s : shards_) {
      for (bool cut = false; !cut;) {
        if (is_local(s)) {
          const auto snap = server_->read_cut(generation_, slice(held_, s), cut_);
          if ((cut = snap.has_value())) take_snapshot(s, *snap);
        }
        while (!cut && !is_local(s) && receive(t, s)) cut = adopt(s, detail::ps_cut) == detail::ps_cut;
        if (cut) {
          backoff.reset();
        } else {
          if (std::chrono::steady_clock::now() > deadline) throw stuck("the cut of quiesce()", s, limit);
          check_server();
          backoff.pause();
        }
      }
    }
    for (const shard& s : shards_)
      if (s.own != rounds_)
        throw transport_error(std::string(detail::ps_protocol) + ": the cut of the server rank " +
                              std::to_string(s.rank) + " holds " + std::to_string(s.own) + " of the " +
                              std::to_string(rounds_) + " pushes of rank " + std::to_string(me_) +
                              " (messages lost or malformed)");
    while (!pending_.empty()) {  // every push is in the model
      spare_.push_back(std::move(pending_.front().update));
      pending_.pop_front();
    }
    if (answered_now_) staleness_ = answers_;
    std::copy(held_.begin(), held_.end(), x.begin());
    std::copy(held_.begin(), held_.end(), anchor_.begin());
    ++generation_;
    at_cut_ = true;
  }

  /// A local step changed the parameters: save() is refused until the next cut.
  void leave_cut() noexcept { at_cut_ = false; }

  /// Writes this worker's state at the cut and, on a server rank, its shard's; a config_error
  /// unless this worker is at a cut (built or loaded, or quiesce() with no round() since).
  void save(checkpoint_writer& w) const {
    if (!at_cut_)
      throw config_error(std::string(detail::ps_protocol) + " (SSP, AsySGD): rank " + std::to_string(me_) +
                         " is not at a consistent point, pushes may be in flight; call optimizer::quiesce() on every "
                         "rank at the same step, then save() before the next step");
    w.u64(rounds_);
    w.u64(generation_);
    w.u64(staleness_);
    w.u32(static_cast<std::uint32_t>(shards_.size()));
    for (const shard& s : shards_) {
      w.u32(static_cast<std::uint32_t>(s.rank));
      w.u64(s.version);
      w.u64(s.complete);
      save_compressor_state<C>(w, s.state);
    }
    w.floats(held_);
    w.boolean(server_ != nullptr);
    if (server_) {
      w.u64(cut_.version);
      w.u32(static_cast<std::uint32_t>(cut_.count.size()));
      for (const std::uint64_t c : cut_.count) w.u64(c);
      w.floats(cut_.model);
    }
  }

  /// Reads what save() wrote into a worker built for the same configuration, before its first
  /// round; a server rank's shard continues from the cut.
  void load(checkpoint_reader& r) {
    const std::uint64_t rounds = r.u64(), generation = r.u64(), staleness = r.u64();
    if (r.u32() != shards_.size()) r.refuse("the parameter server has another number of shards");
    for (shard& s : shards_) {
      if (static_cast<int>(r.u32()) != s.rank) r.refuse("the parameter server's ranks differ");
      s.version = r.u64();
      s.own = rounds;
      s.complete = r.u64();
      s.laggard = me_;
      s.final = false;
      load_compressor_state<C>(r, s.state);
    }
    r.floats(held_, "the server model");
    if (r.boolean() != (server_ != nullptr)) r.refuse("the server ranks differ");
    if (server_) {
      typename detail::async_shard_server<C>::cut_state cut;
      cut.version = r.u64();
      if (r.u32() != static_cast<std::uint32_t>(n_)) r.refuse("the server counts pushes of another number of workers");
      cut.count.resize(static_cast<std::size_t>(n_));
      for (std::uint64_t& c : cut.count) c = r.u64();
      cut.model.resize(shards_[local_].end - shards_[local_].begin);
      r.floats(cut.model, "the server's shard");
      cut_ = cut;
      server_->load(cut_, generation + 1);
    }
    rounds_ = rounds;
    generation_ = generation + 1;  // a new generation: the pushes of others that loaded wait for the shards'
    staleness_ = staleness;
    while (!pending_.empty()) {
      spare_.push_back(std::move(pending_.front().update));
      pending_.pop_front();
    }
    std::copy(held_.begin(), held_.end(), anchor_.begin());
    at_cut_ = true;
  }

 private:
  struct shard {
    int rank;
    std::size_t begin, end;       // its coordinates
    compressor_state_t<C> state;  // C's state for this slice
    std::uint64_t version = 0;    // of the model held: pushes applied ...
    std::uint64_t own = 0;        // ... own of them this worker's
    std::uint64_t complete = 0;   // the round it is complete to
    int laggard = 0;              // the slowest worker then
    bool final = false;
  };
  struct pending {  // a push not yet held by every shard's model, as the server adds it
    std::uint64_t round, step;
    std::vector<float> update;
  };

  static std::span<float> slice(std::vector<float>& v, const shard& s) {
    return std::span<float>(v).subspan(s.begin, s.end - s.begin);
  }
  bool is_local(const shard& s) const { return s.rank == me_; }
  void check_server() {
    if (server_) server_->rethrow_if_failed();
  }

  void take_snapshot(shard& s, const typename detail::async_shard_server<C>::snapshot& snap) {
    if (snap.own != s.own) report(snap.staleness);
    s.version = snap.version;
    s.own = snap.own;
    s.complete = snap.complete;
    s.laggard = snap.laggard;
  }

  pending& start_pending(std::uint64_t step) {
    std::vector<float> buffer;
    if (!spare_.empty()) {
      buffer = std::move(spare_.back());
      spare_.pop_back();
    }
    buffer.resize(update_.size());
    return pending_.emplace_back(pending{rounds_, step, std::move(buffer)});
  }

  // Pushes the shard its slice of update_; p.update gets it as the server will add it.
  void push(transport_ref t, shard& s, pending& p, C& c, rng& g) {
    message_.resize(detail::ps_header::bytes);  // encoders append: encode right after the header
    detail::ps_header{detail::ps_update, 0, {rounds_, s.version, s.own, generation_}}.write(message_);
    encode(c, slice(update_, s), message_, g, s.state);
    const std::span<float> added = slice(p.update, s);
    c.decode(std::span<const std::byte>(message_).subspan(detail::ps_header::bytes), added);
    if (is_local(s))
      server_->push_local(added, rounds_, s.version, s.own);
    else
      send(t, s.rank, message_);
    const float scale = 1.0f / static_cast<float>(n_);
    for (float& v : added) v *= scale;
  }

  void send(transport_ref t, int to, const byte_buffer& m) {
    if (!server_) return t.send(to, async_push_tag, m);
    std::lock_guard lock(server_->transport_mutex());
    t.send(to, async_push_tag, m);
  }
  bool receive(transport_ref t, const shard& s) {
    try {
      if (!server_) return t.try_recv(s.rank, async_pull_tag, pull_);
      std::lock_guard lock(server_->transport_mutex());
      return t.try_recv(s.rank, async_pull_tag, pull_);
    } catch (const transport_error& e) {
      throw transport_error(std::string(detail::ps_protocol) + ": rank " + std::to_string(me_) +
                            " lost the server rank " + std::to_string(s.rank) + ": " + e.what());
    }
  }

  // Adopts the pulls that have arrived (and reads the local shard); returns whether any came.
  bool take(transport_ref t) {
    bool got = false;
    for (shard& s : shards_) {
      if (is_local(s)) {
        got = read_local() || got;
        continue;
      }
      while (receive(t, s)) {
        adopt(s, detail::ps_model);
        got = true;
      }
    }
    return got;
  }

  bool read_local() {
    shard& s = shards_[local_];
    const auto snap = server_->read_local(slice(held_, s));
    const bool news = snap.version != s.version;
    take_snapshot(s, snap);
    return news;
  }

  // Takes the pull in pull_ from shard s: a model, or the kind `expected` (final, cut); returns its kind.
  std::uint32_t adopt(shard& s, std::uint32_t expected) {
    const auto h = detail::ps_header::read(pull_, detail::ps_cut, detail::ps_protocol, s.rank);
    const std::size_t floats = s.end - s.begin;
    auto fail = [&](const std::string& what) {
      return transport_error(std::string(detail::ps_protocol) + ": rank " + std::to_string(me_) + " got " + what +
                             " from the server rank " + std::to_string(s.rank));
    };
    if (pull_.size() != detail::ps_header::bytes + floats * sizeof(float))
      throw fail("a model of " + std::to_string(pull_.size() - detail::ps_header::bytes) + " bytes, expected " +
                 std::to_string(floats * sizeof(float)));
    if (h.kind == detail::ps_final && expected != detail::ps_final)
      throw fail("the final model while still training (the server finished early)");
    if (h.kind == detail::ps_cut && expected != detail::ps_cut)
      throw fail("a cut (quiesce) while this worker is not in quiesce()");
    if (h.w[1] > rounds_ || h.w[1] < s.own || h.w[0] < s.version)
      throw fail("a model holding " + std::to_string(h.w[1]) + " of its pushes at version " + std::to_string(h.w[0]) +
                 " after one holding " + std::to_string(s.own) + " at version " + std::to_string(s.version) +
                 " (it pushed " + std::to_string(rounds_) + "; messages lost, reordered or malformed)");
    std::memcpy(held_.data() + s.begin, pull_.data() + detail::ps_header::bytes, floats * sizeof(float));
    if (h.w[1] != s.own) report(h.w[3]);
    s.version = h.w[0];
    s.own = h.w[1];
    s.complete = h.w[2];
    s.laggard = static_cast<int>(h.a);
    return h.kind;
  }

  // A shard answered pushes of this worker, the stalest `staleness` rounds late.
  void report(std::uint64_t staleness) {
    answers_ = std::max(answers_, staleness);
    answered_now_ = true;
  }

  std::uint64_t complete() const {
    std::uint64_t m = never;
    for (const shard& s : shards_) m = std::min(m, s.complete);
    return m;
  }
  std::uint64_t answered() const {
    std::uint64_t m = never;
    for (const shard& s : shards_) m = std::min(m, s.own);
    return m;
  }
  // Must this worker wait before it steps on: bounded<Tau> without a model complete to round
  // c - Tau, or a push unanswered for max_unanswered_steps?
  bool must_wait(const statistics& stats) {
    while (!pending_.empty() && pending_.front().round <= answered()) {
      spare_.push_back(std::move(pending_.front().update));
      pending_.pop_front();
    }
    if (tau_ != never && rounds_ > tau_ && complete() < rounds_ - tau_) return true;
    return !pending_.empty() && stats.steps - pending_.front().step >= max_unanswered_;
  }

  template <class Blocked>
  void wait(transport_ref t, statistics& stats, Blocked blocked) {
    if (!blocked()) return;
    detail::poll_backoff backoff(stats);
    const auto limit = server_ ? timeout_ : 2 * timeout_;
    const auto deadline = distopt::detail::deadline_after(limit);
    while (blocked()) {
      if (std::chrono::steady_clock::now() > deadline) {
        const shard& s = *std::min_element(shards_.begin(), shards_.end(),
                                           [](const shard& a, const shard& b) { return a.complete < b.complete; });
        throw stuck("a newer model", s, limit);
      }
      check_server();
      if (take(t))
        backoff.reset();
      else
        backoff.pause();
    }
  }

  transport_error stuck(const std::string& what, const shard& s, std::chrono::milliseconds waited) const {
    return transport_error(std::string(detail::ps_protocol) + ": rank " + std::to_string(me_) + " at round " +
                           std::to_string(rounds_) + " waited " + std::to_string(waited.count()) + " ms for " + what +
                           " from the server rank " + std::to_string(s.rank) + " (it holds one complete to round " +
                           std::to_string(s.complete) + ", the slowest being rank " + std::to_string(s.laggard) +
                           ", and " + std::to_string(s.own) + " of this worker's pushes): the slowest worker or the " +
                           "server is dead, stuck or far slower; raise options.timeout if it is only slow");
  }

  // x = the held model plus the pushes each shard's model lacks (read-my-writes); the next
  // round's update is measured from here.
  void settle(std::span<float> x) {
    for (const shard& s : shards_) {
      std::copy(held_.begin() + static_cast<std::ptrdiff_t>(s.begin),
                held_.begin() + static_cast<std::ptrdiff_t>(s.end), x.begin() + static_cast<std::ptrdiff_t>(s.begin));
      for (const pending& p : pending_)
        if (p.round > s.own)
          for (std::size_t i = s.begin; i < s.end; ++i) x[i] += p.update[i];
    }
    std::copy(x.begin(), x.end(), anchor_.begin());
  }

  int me_, n_;
  std::uint64_t tau_, max_unanswered_;
  std::chrono::milliseconds timeout_;
  std::vector<shard> shards_;
  std::size_t local_ = 0;  // the shard this rank serves, if server_
  std::unique_ptr<detail::async_shard_server<C>> server_;
  std::vector<float> held_;    // the newest model of every shard
  std::vector<float> anchor_;  // the parameters at the end of the last round
  std::vector<float> update_;
  std::deque<pending> pending_;
  std::vector<std::vector<float>> spare_;  // buffers of answered pushes, for the next ones
  byte_buffer message_, pull_;
  std::uint64_t rounds_ = 0;
  std::uint64_t staleness_ = 0;  // asynchronous: the staleness of the pushes answered last
  std::uint64_t answers_ = 0;    // the largest staleness answered in this round, if answered_now_
  bool answered_now_ = false;
  std::uint64_t generation_ = 0;                           // cuts passed or loaded (header, "Checkpoints")
  bool at_cut_ = true;                                     // nothing pushed since the start, the last cut or a load
  typename detail::async_shard_server<C>::cut_state cut_;  // a server rank: its shard at that point
};

/// The stale parameter-server protocol (SSP under staleness::bounded<Tau>, AsySGD under
/// staleness::asynchronous) over async_parameter_server: local steps, and at each round a
/// push of the update since the last one; the worker's parameters are then the newest
/// server model plus its own pushes that model lacks (read-my-writes). Under
/// S's staleness_aware_lr the steps after a round are scaled by 1/(1 + s), s the
/// staleness of the model it adopted (Zhang et al. 2016). Workers draw their local-steps
/// schedules independently (independent_schedules).
template <compressor C, class T, class S>
class stale_server {
 public:
  static constexpr bool independent_schedules = true;

  stale_server(protocol_context ctx, std::span<const float> x0, C c, T topo, S s)
      : ctx_(ctx),
        compressor_(std::move(c)),
        engine_(ctx.backend, topo, S::max_staleness, staleness::max_unanswered_steps(s), x0, ctx.opts.timeout,
                compressor_),
        staleness_aware_(s.staleness_aware_lr) {}

  void step(std::span<float> x, std::span<const float> g, bool talk, local_update& u) {
    engine_.leave_cut();
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

  /// The consistent point of a checkpoint (async_parameter_server, "Checkpoints"): pushes the
  /// pending steps, then every worker adopts the server's model at the cut. Collective.
  void quiesce(std::span<float> x) {
    if (since_round_ > 0) push(x);
    engine_.quiesce(ctx_.transport, *ctx_.stats, x);
  }

  /// Checkpoints hold the engine's state at the cut (a server rank's shard included) and the
  /// staleness-aware scale of the next steps; save() outside a cut is a config_error.
  void save(checkpoint_writer& w) const {
    w.boolean(staleness_aware_);  // the staleness policy's knob, compared on load
    engine_.save(w);
    w.f32(scale_);
  }
  void load(checkpoint_reader& r) {
    if (r.boolean() != staleness_aware_)
      r.refuse(std::string("the staleness policy's staleness_aware_lr is ") + (staleness_aware_ ? "false" : "true") +
               " in the checkpoint, " + (staleness_aware_ ? "true" : "false") + " here");
    engine_.load(r);
    scale_ = r.f32();
    since_round_ = 0;
  }

 private:
  void push(std::span<float> x) {
    rng r = ctx_.round_rng();
    const std::uint64_t s = engine_.round(ctx_.transport, *ctx_.stats, x, compressor_, r);
    ++ctx_.stats->rounds;
    ctx_.stats->record_staleness(s);
    if (staleness_aware_) scale_ = 1.0f / (1.0f + static_cast<float>(s));
    since_round_ = 0;
  }

  protocol_context ctx_;
  C compressor_;
  async_parameter_server<C> engine_;
  bool staleness_aware_;
  float scale_ = 1.0f;
  std::uint64_t since_round_ = 0;
};

}  // namespace distopt::protocols
