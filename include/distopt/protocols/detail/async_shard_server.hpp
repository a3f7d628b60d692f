#pragma once
// async_shard_server<C>: one shard of the stale parameter server — its slice of the model, what
// it took from each worker, and the thread that serves it beside the training thread of its rank
// (protocols/stale_server.hpp describes the protocol and why a thread).
//
// The thread polls the workers' pushes (detail::poll_backoff between empty passes), applies each
// as it takes it, and answers after each pass. The worker of the same rank does not use the
// transport for this shard: it applies its own pushes and reads the model under the shard's lock.
// Every call either thread makes on the transport holds transport_mutex(), so the transport is
// used by one thread at a time (MPI needs MPI_THREAD_SERIALIZED, not MULTIPLE).
//
// Cuts (optimizer::quiesce, stale_server.hpp): each worker sends a mark after its last push
// (its own rank's worker calls mark_local()); the channel being FIFO, when every worker still
// training has marked, every push before the marks is applied and none after them, since no
// worker pushes again before the cut's answer. The thread then records the cut (model, counts,
// version), moves to the next generation and answers every worker with the cut model. A message
// carries the generation of its sender (w[3]): one of a later generation (a worker that loaded a
// checkpoint, before this rank has) waits, unread with everything behind it, until the shard
// reaches that generation (load() here); one of an earlier generation is a fault.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "distopt/protocols/detail/async_wait.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/statistics.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/transport_ref.hpp"
#include "distopt/transport/metered.hpp"

namespace distopt::detail {

inline constexpr tag ps_push_tag = reserved_tag(reserved::async_push);
inline constexpr tag ps_pull_tag = reserved_tag(reserved::async_pull);
inline constexpr const char* ps_protocol = "asynchronous parameter server";
inline constexpr std::uint64_t ps_never = std::numeric_limits<std::uint64_t>::max();

/// push: kind (0 update, 1 done, 2 mark), a = 0, w = {round, version, own, generation}: the update
///       of the worker's round `round`, computed on the shard model of version `version` (pushes
///       applied) that held `own` of the worker's pushes; done and mark carry the worker's last
///       round. `generation`: the cuts the sender has passed or loaded (header above).
/// pull: kind (0 model, 1 final, 2 cut), a = the slowest worker, w = {version, own, complete,
///       staleness}: the shard model after `version` pushes, `own` of them the recipient's, complete
///       to round `complete`; `staleness` is the largest of the recipient's pushes applied since its
///       last pull. A cut is the model at the cut that every worker's mark asked for.
using ps_header = message_header<4>;
enum ps_kind : std::uint32_t { ps_update = 0, ps_done = 1, ps_mark = 2, ps_model = 0, ps_final = 1, ps_cut = 2 };

template <compressor C>
class async_shard_server {
 public:
  /// The shard as its own rank's worker reads it.
  struct snapshot {
    std::uint64_t version, own, complete, staleness;
    int laggard;
  };
  /// The shard at a cut: what a checkpoint of its rank holds.
  struct cut_state {
    std::vector<float> model;
    std::vector<std::uint64_t> count;  // pushes applied per worker
    std::uint64_t version = 0;
  };

  /// Starts serving: `slice` is the shard's initial model, `workers` the world size, `tau` the
  /// staleness bound (ps_never: asynchronous).
  async_shard_server(transport_ref t, int rank, int workers, std::uint64_t tau, std::span<const float> slice,
                     std::chrono::milliseconds timeout, const C& c)
      : meter_(t, stats_, timeout),
        c_(c),
        me_(rank),
        n_(workers),
        tau_(tau),
        timeout_(timeout),
        model_(slice.begin(), slice.end()),
        decoded_(slice.size()) {
    const auto n = static_cast<std::size_t>(n_);
    count_.assign(n, 0);
    staleness_.assign(n, 0);
    sent_complete_.assign(n, 0);
    done_.assign(n, 0);
    lost_.assign(n, 0);
    pushed_.assign(n, 0);
    marked_.assign(n, 0);
    heard_.resize(n);
    later_.resize(n);
    cut_ = {model_, count_, 0};
    thread_ = std::thread([this] { run(); });
  }
  async_shard_server(const async_shard_server&) = delete;
  async_shard_server& operator=(const async_shard_server&) = delete;
  ~async_shard_server() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }

  /// Held by every call on the transport of this rank, from either thread.
  std::mutex& transport_mutex() { return transport_mutex_; }

  /// The update of this rank's own worker (decoded, not yet divided by n), applied at once.
  void push_local(std::span<const float> decoded, std::uint64_t round, std::uint64_t version, std::uint64_t own) {
    std::lock_guard lock(mutex_);
    apply(me_, decoded, round, version, own);
  }
  /// Copies the shard model into `slice` and says what it holds.
  snapshot read_local(std::span<float> slice) {
    std::lock_guard lock(mutex_);
    std::copy(model_.begin(), model_.end(), slice.begin());
    const auto i = static_cast<std::size_t>(me_);
    const snapshot s{version_, count_[i], complete(), staleness_[i], laggard()};
    staleness_[i] = 0;
    return s;
  }
  /// This rank's worker has reached the cut of generation generation() (its last push applied).
  void mark_local() {
    std::lock_guard lock(mutex_);
    marked_[static_cast<std::size_t>(me_)] = 1;
  }
  /// The cuts this shard has passed or loaded.
  std::uint64_t generation() {
    std::lock_guard lock(mutex_);
    return generation_;
  }
  /// If the shard has passed the cut that ends generation `g`: copies the cut model into `slice`,
  /// `state` gets the cut, and the result says what it holds for this rank's worker.
  std::optional<snapshot> read_cut(std::uint64_t g, std::span<float> slice, cut_state& state) {
    std::lock_guard lock(mutex_);
    if (generation_ <= g) return std::nullopt;
    std::copy(cut_.model.begin(), cut_.model.end(), slice.begin());
    state = cut_;
    const auto i = static_cast<std::size_t>(me_);
    const snapshot s{cut_.version, cut_.count[i], cut_complete_, staleness_[i], laggard()};
    staleness_[i] = 0;
    return s;
  }
  /// Restores the shard from a cut that a checkpoint holds, as generation `g` (before this rank's
  /// first step; the pushes of workers that loaded theirs wait until now).
  void load(const cut_state& state, std::uint64_t g) {
    std::lock_guard lock(mutex_);
    model_ = state.model;
    count_ = state.count;
    version_ = state.version;
    std::fill(staleness_.begin(), staleness_.end(), 0);
    std::fill(marked_.begin(), marked_.end(), 0);
    cut_ = state;
    cut_complete_ = complete();
    std::fill(sent_complete_.begin(), sent_complete_.end(), cut_complete_);
    generation_ = g;
  }
  /// This rank's worker has finished: the thread serves until every worker has (or, asynchronous,
  /// is lost), sends the final model, and ends.
  void finish_local() {
    std::lock_guard lock(mutex_);
    done_[static_cast<std::size_t>(me_)] = 1;
    local_done_at_ = std::chrono::steady_clock::now();
  }
  /// Waits for the thread to end (finish_local() first), adds its traffic and lost peers to
  /// `into`, and rethrows its error if it failed.
  void join(statistics& into) {
    if (thread_.joinable()) thread_.join();
    into.bytes_sent += stats_.bytes_sent;
    into.bytes_received += stats_.bytes_received;
    into.messages_sent += stats_.messages_sent;
    into.messages_received += stats_.messages_received;
    into.lost_peers.insert(into.lost_peers.end(), stats_.lost_peers.begin(), stats_.lost_peers.end());
    rethrow_if_failed();
  }
  /// The thread's error, if it stopped on one (a malformed push, a lost worker under bounded<Tau>).
  void rethrow_if_failed() {
    std::lock_guard lock(mutex_);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run() noexcept {
    try {
      serve();
    } catch (...) {
      std::lock_guard lock(mutex_);
      error_ = std::current_exception();
    }
  }

  void serve() {
    poll_backoff backoff(stats_);
    while (!stop_.load()) {
      const bool progress = pass();
      if (finished()) {
        send_finals();
        return;
      }
      if (progress)
        backoff.reset();
      else
        backoff.pause();
    }
  }

  // model += decoded / n, and the bookkeeping of a push (under mutex_). The staleness of the push,
  // in rounds of the others: their pushes applied after the model it was computed on, / (n - 1).
  void apply(int k, std::span<const float> decoded, std::uint64_t round, std::uint64_t version, std::uint64_t own) {
    const auto i = static_cast<std::size_t>(k);
    if (round != count_[i] + 1 || version > version_ || own >= round || version_ - version < round - 1 - own)
      throw transport_error(std::string(ps_protocol) + ": rank " + std::to_string(k) + " pushed round " +
                            std::to_string(round) + " on a model of version " + std::to_string(version) + " holding " +
                            std::to_string(own) + " of its pushes, after round " + std::to_string(count_[i]) +
                            " with the model at version " + std::to_string(version_) +
                            " (messages lost, reordered or malformed)");
    const float scale = 1.0f / static_cast<float>(n_);
    for (std::size_t j = 0; j < model_.size(); ++j) model_[j] += scale * decoded[j];
    const std::uint64_t missed = (version_ - version) - (round - 1 - own);
    const std::uint64_t others = static_cast<std::uint64_t>(n_ - 1);
    staleness_[i] = std::max(staleness_[i], others == 0 ? 0 : (missed + others / 2) / others);
    count_[i] = round;
    ++version_;
  }

  // The round every worker still training has pushed (done and lost workers push no more).
  std::uint64_t complete() const {
    std::uint64_t m = ps_never, most = 0;
    for (std::size_t k = 0; k < count_.size(); ++k) {
      most = std::max(most, count_[k]);
      if (!lost_[k] && !done_[k]) m = std::min(m, count_[k]);
    }
    return m == ps_never ? most : m;
  }
  int laggard() const {
    int who = me_;
    for (std::size_t k = 0; k < count_.size(); ++k)
      if (!lost_[k] && !done_[k] && count_[k] < count_[static_cast<std::size_t>(who)]) who = static_cast<int>(k);
    return who;
  }

  // Takes every push that has arrived, then answers: the workers whose pushes it took, and under
  // bounded<Tau> those the new complete round releases. Returns whether it took anything.
  bool pass() {
    const auto arrivals = meter_.arrivals();  // unchanged since the last pass: nothing to take ...
    const std::uint64_t generation = this->generation();
    const bool news = !arrivals || arrivals != seen_arrivals_ || generation != seen_generation_;  // ... but
    seen_arrivals_ = arrivals;  // messages left unread for a later generation, once the shard reaches it
    seen_generation_ = generation;
    bool progress = false;
    const auto now = std::chrono::steady_clock::now();
    std::fill(pushed_.begin(), pushed_.end(), 0);
    for (int k = 0; news && k < n_; ++k) {
      const auto i = static_cast<std::size_t>(k);
      if (k == me_ || lost_[i] || done_[i]) continue;  // done_ and lost_ of other ranks: this thread's own
      if (!later_[i].empty()) {  // a message of a later generation, taken before the shard reached it
        if (ps_header::read(later_[i], ps_mark, ps_protocol, k).w[3] > generation) continue;
        std::swap(push_, later_[i]);
        later_[i].clear();
        progress = true;
        if (!take(k, generation)) continue;
      }
      while (receive_push(k)) {
        progress = true;
        heard_[i] = now;
        if (!take(k, generation)) break;
      }
    }
    answer();
    cut_if_marked();
    return progress;
  }

  // Takes the message in push_ from worker k; returns whether to read on from k (not after a done,
  // a mark, or a message of a later generation, which waits in later_).
  bool take(int k, std::uint64_t generation) {
    const auto i = static_cast<std::size_t>(k);
    const auto h = ps_header::read(push_, ps_mark, ps_protocol, k);
    if (h.w[3] > generation) {
      std::swap(later_[i], push_);
      return false;
    }
    if (h.w[3] < generation)
      throw transport_error(
          std::string(ps_protocol) + ": rank " + std::to_string(k) + " sent a message of checkpoint " + "generation " +
          std::to_string(h.w[3]) + " to the server rank " + std::to_string(me_) + ", which is at generation " +
          std::to_string(generation) + " (the ranks loaded checkpoints of different cuts, or messages were reordered)");
    if (h.kind == ps_done || h.kind == ps_mark) {
      std::lock_guard lock(mutex_);
      (h.kind == ps_done ? done_ : marked_)[i] = 1;
      return false;
    }
    decode(k);
    std::lock_guard lock(mutex_);
    apply(k, decoded_, h.w[0], h.w[1], h.w[2]);
    pushed_[i] = 1;
    return true;
  }

  // The cut: once every worker still training has marked (its pushes before the mark all applied,
  // none after it sent yet), records the shard, moves to the next generation and sends every
  // worker the cut model (after the answers of this pass, which came before it on each channel).
  void cut_if_marked() {
    recipients_.clear();
    {
      std::lock_guard lock(mutex_);
      if (!marked_[static_cast<std::size_t>(me_)]) return;
      for (std::size_t k = 0; k < marked_.size(); ++k)
        if (!marked_[k] && !lost_[k] && !done_[k]) return;
      cut_ = {model_, count_, version_};
      cut_complete_ = complete();
      for (int k = 0; k < n_; ++k) {
        const auto i = static_cast<std::size_t>(k);
        if (k == me_ || !marked_[i]) continue;
        recipients_.push_back({k, ps_header{ps_cut,
                                            static_cast<std::uint32_t>(laggard()),
                                            {version_, count_[i], cut_complete_, staleness_[i]}}});
        staleness_[i] = 0;
        sent_complete_[i] = cut_complete_;
      }
      std::fill(marked_.begin(), marked_.end(), 0);
      ++generation_;
      copy_model();
    }
    send(recipients_);
  }

  void decode(int k) {
    try {
      c_.decode(std::span<const std::byte>(push_).subspan(ps_header::bytes), decoded_);
    } catch (const transport_error& e) {
      throw transport_error(std::string(ps_protocol) + ": the update from rank " + std::to_string(k) +
                            " does not decode: " + e.what());
    }
  }

  // try_recv of a push; asynchronous gives a worker whose link failed up, bounded<Tau> needs
  // every worker and rethrows.
  bool receive_push(int k) {
    try {
      std::lock_guard lock(transport_mutex_);
      return meter_.try_recv(k, ps_push_tag, push_);
    } catch (const transport_error&) {
      if (tau_ != ps_never) throw;
      give_up(k);
      return false;
    }
  }

  void answer() {
    recipients_.clear();
    {
      std::lock_guard lock(mutex_);
      const std::uint64_t m = complete();
      for (int k = 0; k < n_; ++k) {
        const auto i = static_cast<std::size_t>(k);
        if (k == me_ || lost_[i] || done_[i]) continue;
        const bool released =
            tau_ != ps_never && sent_complete_[i] < m && count_[i] > tau_ && sent_complete_[i] < count_[i] - tau_;
        if (!pushed_[i] && !released) continue;
        recipients_.push_back(
            {k, ps_header{ps_model, static_cast<std::uint32_t>(laggard()), {version_, count_[i], m, staleness_[i]}}});
        staleness_[i] = 0;
        sent_complete_[i] = m;
      }
      if (!recipients_.empty()) copy_model();
    }
    send(recipients_);
  }

  void copy_model() {
    pull_.resize(ps_header::bytes + model_.size() * sizeof(float));
    std::memcpy(pull_.data() + ps_header::bytes, model_.data(), model_.size() * sizeof(float));
  }

  // Sends pull_ with each recipient's header; a worker whose link failed is given up (asynchronous).
  template <class List>
  void send(const List& to) {
    for (const auto& r : to) {
      r.header.write(pull_);
      try {
        std::lock_guard lock(transport_mutex_);
        meter_.send(r.rank, ps_pull_tag, pull_);
      } catch (const transport_error&) {
        if (tau_ != ps_never) throw;
        give_up(r.rank);
      }
    }
  }

  // After this rank's worker finished: is every worker done or lost? A worker silent for the
  // timeout is lost (asynchronous) or fails the run, named (bounded<Tau>).
  bool finished() {
    std::chrono::steady_clock::time_point since;
    {
      std::lock_guard lock(mutex_);
      if (!done_[static_cast<std::size_t>(me_)]) return false;
      since = local_done_at_;
    }
    const auto now = std::chrono::steady_clock::now();
    bool all = true;
    int silent = -1;
    for (int k = 0; k < n_; ++k) {
      const auto i = static_cast<std::size_t>(k);
      if (k == me_ || done_[i] || lost_[i]) continue;
      if (now - std::max(heard_[i], since) <= timeout_) {
        all = false;
      } else if (tau_ == ps_never) {
        give_up(k);
      } else if (silent < 0 || count_[i] < count_[static_cast<std::size_t>(silent)]) {
        silent = k;
      }
    }
    if (silent >= 0)
      throw transport_error(std::string(ps_protocol) + ": the server (rank " + std::to_string(me_) + ") waited " +
                            std::to_string(timeout_.count()) + " ms in finish() for rank " + std::to_string(silent) +
                            ", which sent nothing more after round " +
                            std::to_string(count_[static_cast<std::size_t>(silent)]) + ": it is dead or stuck");
    return all;
  }

  void send_finals() {
    recipients_.clear();
    {
      std::lock_guard lock(mutex_);
      const std::uint64_t m = complete();
      for (int k = 0; k < n_; ++k) {
        const auto i = static_cast<std::size_t>(k);
        if (k != me_ && done_[i] && !lost_[i])
          recipients_.push_back({k, ps_header{ps_final, static_cast<std::uint32_t>(me_), {version_, count_[i], m, 0}}});
      }
      copy_model();
    }
    send(recipients_);
  }

  void give_up(int k) {
    std::lock_guard lock(mutex_);
    lost_[static_cast<std::size_t>(k)] = 1;
    stats_.lost_peers.push_back(k);
  }

  struct recipient {
    int rank;
    ps_header header;
  };

  statistics stats_;  // this thread's traffic; join() adds it to the worker's
  metered_transport meter_;
  C c_;  // the server's own copy: decoders may keep scratch
  int me_, n_;
  std::uint64_t tau_;
  std::chrono::milliseconds timeout_;
  std::mutex mutex_;                      // guards what the worker of this rank touches: below, up to error_
  std::vector<float> model_;              // the shard's model
  std::vector<std::uint64_t> count_;      // pushes applied per worker
  std::vector<std::uint64_t> staleness_;  // largest staleness of each worker's pushes since its last pull
  std::vector<char> done_, lost_;
  std::vector<char> marked_;      // the workers that reached the cut ending this generation
  std::uint64_t version_ = 0;     // pushes applied
  std::uint64_t generation_ = 0;  // cuts passed or loaded
  cut_state cut_;                 // the shard at the last cut (at the start: the initial one)
  std::uint64_t cut_complete_ = 0;
  std::vector<std::uint64_t> sent_complete_;  // complete round of the last pull sent to each worker
  std::chrono::steady_clock::time_point local_done_at_{};
  std::exception_ptr error_;
  // This thread's own:
  std::vector<char> pushed_;
  std::vector<std::chrono::steady_clock::time_point> heard_;  // when each worker's last message was taken
  std::vector<byte_buffer> later_;  // per worker, a message of a later generation, not yet taken
  std::uint64_t seen_generation_ = 0;
  std::vector<float> decoded_;
  std::vector<recipient> recipients_;
  byte_buffer push_, pull_;
  std::optional<std::uint64_t> seen_arrivals_;
  std::mutex transport_mutex_;
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: starts once everything above is constructed
};

}  // namespace distopt::detail
