#pragma once
// The in-process transport: n workers as threads of this process, exchanging
// messages through per-receiver mailboxes. A send copies the payload once into a
// pooled buffer; a receive hands that buffer over by swapping, so steady-state
// traffic allocates nothing. Waiting blocks on a condition variable, so 64 workers
// share 2 cores without burning them; only when every worker has a core of its own
// does a receiver first poll for at most 10 us, which saves a sleep and wake-up per
// message when the peer is about to send.
//
//   distopt::run_threads(4, [&](distopt::transport_ref t) {
//     // t.rank() in 0..3; every blocking receive has a deadline
//   });
//
// If a worker throws, every peer blocked on it wakes with transport_error and
// run_threads rethrows the first exception once all threads have ended. A
// receive from a worker that has already returned fails at once instead of
// waiting for the deadline.
//
// Native allreduce (thread_options::native_allreduce): the workers publish their
// arrays and meet at a barrier; worker r sums chunk r (the ring's chunks) straight
// from the peers' arrays in the ring's order, ((x_r + x_{r+1}) + ...) + x_{r+n-1},
// then / n, block by block into its own output and every peer's; a second barrier
// keeps every array alive until nobody writes or reads it. The result is the
// ring's, bit for bit. Each barrier waits
// at most the timeout; a worker that times out, fails or returns makes every
// worker in the allreduce throw transport_error, and none leaves while a peer may
// still be reading its arrays.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/deadline.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/float_sum.hpp"
#include "distopt/core/ring_schedule.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt {

struct thread_options {
  /// Default deadline of a receive (and of each wait inside the native allreduce).
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  /// Let the optimizer's uncompressed averaging use the shared-memory allreduce
  /// (thread_transport::allreduce_mean) instead of the ring's messages: the same bits,
  /// without copying through mailboxes. Statistics count it as the ring it replaces.
  bool native_allreduce = false;
};

namespace detail {

inline std::string describe_tag(tag tg) {
  const auto v = static_cast<std::uint32_t>(tg);
  if (v >= reserved_tag_base) return "internal tag " + std::to_string(v - reserved_tag_base);
  return "tag " + std::to_string(v);
}

/// Payloads of at least this many bytes are copied with streaming stores (copy_payload).
inline constexpr std::size_t streaming_copy_bytes = std::size_t{64} << 10;

/// Copies a payload into a message buffer. A pooled buffer was last read on the
/// receiver's core; when the two cores share no cache, ordinary stores must first
/// take each line back from the receiver, which made large sends several times
/// slower than a local memcpy on our 2-core VMs (bench_collective: ring allreduce
/// bus bandwidth 5.7 GB/s with memcpy, 14.5 GB/s with streaming stores at 1 MiB).
/// Streaming (non-temporal) stores skip that; small payloads, cheap either way and
/// likely to be read from cache soon, keep memcpy.
inline void copy_payload(std::byte* dst, const std::byte* src, std::size_t n) noexcept {
#if defined(__SSE2__)
  if (n >= streaming_copy_bytes) {
    const std::size_t head = (16 - reinterpret_cast<std::uintptr_t>(dst) % 16) % 16;
    std::memcpy(dst, src, head);
    std::size_t i = head;
    for (; i + 64 <= n; i += 64) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 16));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 32));
      const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 48));
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i), a);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 16), b);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 32), c);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 48), d);
    }
    std::memcpy(dst + i, src + i, n - i);
    _mm_sfence();  // streaming stores are weakly ordered: complete them before the message is published
    return;
  }
#endif
  if (n != 0) std::memcpy(dst, src, n);
}

/// Shared state of one run: a mailbox per receiving rank.
class thread_world {
 public:
  thread_world(int size, std::chrono::milliseconds timeout, bool native_allreduce = false)
      : timeout_(timeout),
        native_allreduce_(native_allreduce),
        mailboxes_(static_cast<std::size_t>(size)),
        spin_(size > 1 && static_cast<unsigned>(size) <= std::thread::hardware_concurrency()) {
    for (auto& box : mailboxes_) box.peer_exited.assign(static_cast<std::size_t>(size), 0);
    shared_.in.resize(static_cast<std::size_t>(size));
    shared_.out.resize(static_cast<std::size_t>(size));
    shared_.length.resize(static_cast<std::size_t>(size));
  }

  bool native_allreduce() const noexcept { return native_allreduce_; }

  /// The mean over all ranks of each rank's `in`, into its `out` (`in` itself or a disjoint
  /// array of the same length), bit-identical to collective::ring_allreduce (header comment).
  void allreduce_mean(int self, std::span<const float> in, std::span<float> out) {
    // Before publishing: the peers would read past the end of `in`.
    distopt::detail::check_allreduce_lengths("thread transport: allreduce_mean", in.size(), out.size(), self);
    const int n = size();
    if (n == 1) {  // the ring's answer: x / 1 == x
      if (in.data() != out.data()) std::copy(in.begin(), in.end(), out.begin());
      return;
    }
    const auto r = static_cast<std::size_t>(self);
    const auto deadline = distopt::detail::deadline_after(timeout_);
    {
      std::lock_guard lock(shared_.mutex);
      shared_.in[r] = in.data();
      shared_.out[r] = out.data();
      shared_.length[r] = out.size();
    }
    meet(self, deadline, false, "to start");
    const std::size_t len = out.size();
    for (int k = 0; k < n; ++k)
      if (const std::size_t theirs = shared_.length[static_cast<std::size_t>(k)]; theirs != len) {
        // Read before meeting: once past the barrier, a rank may start its next call and publish anew.
        meet(self, deadline, true, "to agree on the length", false);  // nobody reads a peer's arrays any more
        throw config_error("thread transport: allreduce of " + std::to_string(len) + " floats on rank " +
                           std::to_string(self) + " but " + std::to_string(theirs) + " on rank " + std::to_string(k) +
                           "; every rank must pass the same length");
      }
    sum_chunk(self, distopt::detail::ring_chunk_begin(len, n, self),
              distopt::detail::ring_chunk_begin(len, n, self + 1));
    meet(self, deadline, true, "to finish", false);
  }

  int size() const noexcept { return static_cast<int>(mailboxes_.size()); }
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }

  void send(int from, int to, tag tg, std::span<const std::byte> bytes) {
    check_peer(from, to, "send to");
    mailbox& box = mailboxes_[static_cast<std::size_t>(to)];
    byte_buffer message;
    {
      std::lock_guard lock(box.mutex);
      if (!box.pool.empty()) {
        message = std::move(box.pool.back());
        box.pool.pop_back();
      }
    }
    message.resize(bytes.size());
    copy_payload(message.data(), bytes.data(), bytes.size());
    {
      std::lock_guard lock(box.mutex);
      box.queues[key(from, tg)].push_back(std::move(message));
      box.events.fetch_add(1, std::memory_order_relaxed);
    }
    box.arrived.notify_all();
  }

  /// Changes whenever a message arrives for `self` (also on exits and failures).
  std::uint64_t arrivals(int self) const {
    return mailboxes_[static_cast<std::size_t>(self)].events.load(std::memory_order_acquire);
  }

  bool try_recv(int self, int from, tag tg, byte_buffer& out) {
    check_peer(self, from, "receive from");
    mailbox& box = mailboxes_[static_cast<std::size_t>(self)];
    std::lock_guard lock(box.mutex);
    throw_if_failed();
    return take(box, from, tg, out);
  }

  void recv(int self, int from, tag tg, byte_buffer& out, std::chrono::milliseconds timeout) {
    check_peer(self, from, "receive from");
    mailbox& box = mailboxes_[static_cast<std::size_t>(self)];
    const auto deadline = distopt::detail::deadline_after(timeout);
    std::unique_lock lock(box.mutex);
    bool spinning = spin_;
    const auto spin_until = spinning ? std::min(deadline, std::chrono::steady_clock::now() + spin_limit)
                                     : std::chrono::steady_clock::time_point{};
    for (;;) {
      throw_if_failed();
      if (take(box, from, tg, out)) return;
      if (box.peer_exited[static_cast<std::size_t>(from)])
        throw transport_error("thread transport: rank " + std::to_string(self) + " waits for a message from rank " +
                              std::to_string(from) + " (" + describe_tag(tg) +
                              ") but that worker has already returned; every worker must take part in the same "
                              "communication rounds");
      if (spinning) {
        // Every worker has a core: the message is usually microseconds away, and
        // catching it here saves the sleep and wake-up of a blocking wait.
        const std::uint64_t seen = box.events.load(std::memory_order_relaxed);  // under the lock
        lock.unlock();
        spinning = spin_while_equal(box.events, seen, spin_until);  // false: budget spent, block
        lock.lock();
        continue;  // re-check: the lock was released
      }
      if (box.arrived.wait_until(lock, deadline) == std::cv_status::timeout && !has(box, from, tg)) {
        throw_if_failed();
        throw transport_error("thread transport: rank " + std::to_string(self) + " waited " +
                              std::to_string(timeout.count()) + " ms for a message from rank " + std::to_string(from) +
                              " (" + describe_tag(tg) +
                              ") and none came; the peer is stuck or slow (raise the timeout if it is only slow)");
      }
    }
  }

  /// Marks the run failed and wakes every waiting receiver.
  void fail(const std::string& reason) {
    {
      std::lock_guard lock(state_mutex_);
      if (failure_.empty()) failure_ = reason;
    }
    failed_.store(true, std::memory_order_release);
    wake_all();
  }

  /// Records that `rank` returned from its function, and wakes receivers waiting on it.
  void exited(int rank) {
    for (auto& box : mailboxes_) {
      {
        std::lock_guard lock(box.mutex);
        box.peer_exited[static_cast<std::size_t>(rank)] = 1;
        box.events.fetch_add(1, std::memory_order_relaxed);
      }
      box.arrived.notify_all();
    }
    {
      std::lock_guard lock(shared_.mutex);
      ++shared_.exited;
    }
    shared_.met.notify_all();
  }

  /// Returns a spent buffer to the receiver's pool, for the next sends to it.
  void recycle(int self, byte_buffer&& spent) {
    if (spent.capacity() == 0) return;
    mailbox& box = mailboxes_[static_cast<std::size_t>(self)];
    std::lock_guard lock(box.mutex);
    if (box.pool.size() < max_pooled) box.pool.push_back(std::move(spent));
  }

 private:
  struct mailbox {
    std::mutex mutex;
    std::condition_variable arrived;
    std::unordered_map<std::uint64_t, std::deque<byte_buffer>> queues;
    std::vector<byte_buffer> pool;         // spent buffers, reused by the next sends to this rank
    std::vector<char> peer_exited;         // peer_exited[r]: rank r has returned
    std::atomic<std::uint64_t> events{0};  // bumped under `mutex` by every arrival, exit and failure
  };
  static constexpr std::size_t max_pooled = 64;

  // How long a receiver polls before blocking. bench_collective, 2 workers, 4 KiB to
  // 256 KiB: 5, 20 and 50 us all gave 2-3x the bandwidth of blocking at once.
  static constexpr std::chrono::microseconds spin_limit{10};
  static void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
  /// Polls `events` until it differs from `seen` (true) or `until` passes (false).
  static bool spin_while_equal(const std::atomic<std::uint64_t>& events, std::uint64_t seen,
                               std::chrono::steady_clock::time_point until) {
    for (unsigned i = 1;; ++i) {
      if (events.load(std::memory_order_relaxed) != seen) return true;
      cpu_relax();
      if (i % 64 == 0 && std::chrono::steady_clock::now() >= until) return false;
    }
  }

  static std::uint64_t key(int from, tag tg) noexcept {
    return (std::uint64_t(static_cast<std::uint32_t>(from)) << 32) | static_cast<std::uint32_t>(tg);
  }
  static bool has(mailbox& box, int from, tag tg) {
    auto it = box.queues.find(key(from, tg));
    return it != box.queues.end() && !it->second.empty();
  }
  static bool take(mailbox& box, int from, tag tg, byte_buffer& out) {
    auto it = box.queues.find(key(from, tg));
    if (it == box.queues.end() || it->second.empty()) return false;
    std::swap(out, it->second.front());
    it->second.pop_front();
    return true;
  }
  void check_peer(int self, int peer, const char* what) const {
    if (peer < 0 || peer >= size())
      throw config_error("thread transport: rank " + std::to_string(self) + " cannot " + what + " rank " +
                         std::to_string(peer) + ": ranks are 0.." + std::to_string(size() - 1));
  }
  void throw_if_failed() {
    if (!failed_.load(std::memory_order_acquire)) return;
    std::lock_guard lock(state_mutex_);
    throw transport_error("thread transport: the run was aborted: " + failure_);
  }
  void wake_all() {
    for (auto& box : mailboxes_) {
      {
        std::lock_guard lock(box.mutex);  // orders the flag before a waiter's predicate check
        box.events.fetch_add(1, std::memory_order_relaxed);
      }
      box.arrived.notify_all();
    }
    { std::lock_guard lock(shared_.mutex); }  // the same for the allreduce's barrier
    shared_.met.notify_all();
  }

  // ---- native allreduce --------------------------------------------------------------

  /// Rank self's chunk [b, e) of the mean, summed in the ring's order and with its operands
  /// in the ring's order (the partial sum first): ((x_s + x_{s+1}) + ...) + x_{s+n-1}, / n,
  /// into its own output and then into every peer's. Blocks of 4096 floats stay in the L1
  /// cache across the n - 1 additions and the copies. Writing a peer's output is safe before
  /// the final barrier: only this rank reads chunk s of the inputs (which an in-place output
  /// overwrites), and only after it has summed that block.
  void sum_chunk(int self, std::size_t b, std::size_t e) {
    const int n = size();
    const auto in = [&](int k) { return shared_.in[static_cast<std::size_t>((self + k) % n)]; };
    float* const out = shared_.out[static_cast<std::size_t>(self)];
    const float divisor = static_cast<float>(n);
    constexpr std::size_t block = 4096;
    for (std::size_t at = b; at < e; at += block) {
      const std::size_t m = std::min(block, e - at);
      float* const o = out + at;
      const bool in_place = o == in(0) + at;
      if (n == 2 && in_place)
        allreduce_accumulate_divide(o, in(1) + at, m, divisor);
      else if (n == 2)
        allreduce_add_divide(o, in(1) + at, in(0) + at, m, divisor);
      else {
        if (in_place)
          allreduce_accumulate(o, in(1) + at, m);
        else
          allreduce_add(o, in(1) + at, in(0) + at, m);
        for (int k = 2; k < n - 1; ++k) allreduce_accumulate(o, in(k) + at, m);
        allreduce_accumulate_divide(o, in(n - 1) + at, m, divisor);
      }
      for (int k = 1; k < n; ++k) std::copy(o, o + m, shared_.out[static_cast<std::size_t>((self + k) % n)] + at);
    }
  }

  /// The allreduce's barrier. `from_phase`: the caller comes from reading or writing the
  /// peers' arrays; `phase_follows`: it will again once everyone is here. A worker that
  /// cannot wait any longer (deadline, failed run, a peer returned) abandons the allreduce
  /// for everyone, but first waits until no peer is inside a phase (pure computation, so
  /// short), because a peer may be reading its arrays.
  void meet(int self, std::chrono::steady_clock::time_point deadline, bool from_phase, const char* what,
            bool phase_follows = true) {
    auto& c = shared_;
    std::unique_lock lock(c.mutex);
    if (from_phase) --c.busy;
    const std::uint64_t generation = c.generation.load(std::memory_order_relaxed);
    if (++c.arrived == size()) {
      c.arrived = 0;
      c.busy = phase_follows ? size() : 0;
      c.generation.store(generation + 1, std::memory_order_release);
      lock.unlock();
      c.met.notify_all();
      return;
    }
    const auto done = [&] { return c.generation.load(std::memory_order_relaxed) != generation; };
    bool spinning = spin_;
    const auto spin_until = std::chrono::steady_clock::now() + spin_limit;
    for (;;) {
      if (done()) return;
      std::string why;
      if (!c.abandoned.empty())
        why = c.abandoned;
      else if (failed_.load(std::memory_order_acquire))
        why = "the run was aborted";
      else if (c.exited > 0)
        why = "a worker has already returned; every worker must take part in the same communication rounds";
      else if (std::chrono::steady_clock::now() >= deadline)
        why = "rank " + std::to_string(self) + " waited " + std::to_string(timeout_.count()) +
              " ms for the other workers " + what + " and they did not come (raise the timeout if they are only slow)";
      if (!why.empty()) {
        if (c.abandoned.empty()) c.abandoned = why;
        --c.arrived;
        c.met.notify_all();
        c.met.wait(lock, [&] { return c.busy == 0; });
        lock.unlock();
        throw_if_failed();
        throw transport_error("thread transport: native allreduce abandoned: " + why);
      }
      if (spinning) {  // as in recv: a peer with a core of its own is often microseconds away
        lock.unlock();
        spinning = spin_while_equal(c.generation, generation, spin_until);
        lock.lock();
        continue;
      }
      c.met.wait_until(lock, deadline);
    }
  }

  struct shared_arrays {
    std::mutex mutex;
    std::condition_variable met;
    std::vector<const float*> in;  // each rank's input, output and length, published before the first barrier
    std::vector<float*> out;
    std::vector<std::size_t> length;
    std::atomic<std::uint64_t> generation{0};  // bumped under `mutex` when the last worker arrives
    int arrived = 0;                           // workers waiting at the barrier
    int busy = 0;                              // workers between a barrier and the next, touching peers' arrays
    int exited = 0;                            // workers that have returned
    std::string abandoned;                     // why the allreduce was given up; then it is given up for good
  };

  std::chrono::milliseconds timeout_;
  bool native_allreduce_;
  shared_arrays shared_;
  std::vector<mailbox> mailboxes_;
  bool spin_;  // receivers poll briefly before blocking: only when every worker can have a core
  std::atomic<bool> failed_{false};
  std::mutex state_mutex_;
  std::string failure_;
};

}  // namespace detail

/// One worker's endpoint of an in-process run. Made by run_threads.
class thread_transport {
 public:
  thread_transport(detail::thread_world& world, int rank) noexcept : world_(&world), rank_(rank) {}

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return world_->size(); }
  void send(int peer, tag tg, std::span<const std::byte> bytes) { world_->send(rank_, peer, tg, bytes); }
  void recv(int peer, tag tg, byte_buffer& out) { recv(peer, tg, out, world_->timeout()); }
  void recv(int peer, tag tg, byte_buffer& out, std::chrono::milliseconds timeout) {
    byte_buffer previous = std::move(out);
    out = byte_buffer{};
    try {
      world_->recv(rank_, peer, tg, out, timeout);
    } catch (...) {
      out = std::move(previous);
      throw;
    }
    world_->recycle(rank_, std::move(previous));
  }
  /// True if thread_options::native_allreduce asked the optimizer to average with allreduce_mean.
  bool native_allreduce() const noexcept { return world_->native_allreduce(); }
  /// The mean over all workers of `in` into `out` (`in` itself or a disjoint array of the same
  /// length) on shared memory; the same bits as collective::ring_allreduce's mean. Every
  /// worker must call it, with the same length.
  void allreduce_mean(std::span<const float> in, std::span<float> out) { world_->allreduce_mean(rank_, in, out); }
  void allreduce_mean(std::span<float> data) { allreduce_mean(data, data); }
  /// A counter that changes whenever a message arrives for this rank (transport_ref::arrivals).
  std::uint64_t arrivals() const { return world_->arrivals(rank_); }
  bool try_recv(int peer, tag tg, byte_buffer& out) {
    byte_buffer previous = std::move(out);
    out = byte_buffer{};
    const bool got = world_->try_recv(rank_, peer, tg, out);
    if (got)
      world_->recycle(rank_, std::move(previous));
    else
      out = std::move(previous);
    return got;
  }

 private:
  detail::thread_world* world_;
  int rank_;
};

/// Runs `fn(transport_ref)` on `n` threads, one per rank, and waits for all of them.
/// If any throws, the others are woken with transport_error and the first
/// exception is rethrown here.
template <class F>
requires std::is_invocable_v<F&, transport_ref>
void run_threads(int n, F&& fn, thread_options opts = {}) {
  if (n < 1) throw config_error("run_threads: the number of workers must be >= 1, got " + std::to_string(n));
  if (opts.timeout.count() <= 0)
    throw config_error("run_threads: thread_options.timeout must be > 0 ms, got " +
                       std::to_string(opts.timeout.count()));
  detail::thread_world world(n, opts.timeout, opts.native_allreduce);
  std::mutex first_mutex;
  std::exception_ptr first;
  auto body = [&](int rank) {
    thread_transport endpoint(world, rank);
    try {
      fn(transport_ref(endpoint));
    } catch (const std::exception& e) {
      {
        std::lock_guard lock(first_mutex);
        if (!first) first = std::current_exception();
      }
      world.fail("rank " + std::to_string(rank) + " failed: " + e.what());
    } catch (...) {
      {
        std::lock_guard lock(first_mutex);
        if (!first) first = std::current_exception();
      }
      world.fail("rank " + std::to_string(rank) + " failed with a non-standard exception");
    }
    world.exited(rank);
  };
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(n - 1));
  try {
    for (int r = 1; r < n; ++r) threads.emplace_back(body, r);
  } catch (const std::exception& e) {  // no thread left running: stop the started ones, then report
    world.fail(std::string("could not start all workers: ") + e.what());
    for (auto& t : threads) t.join();
    throw;
  }
  body(0);
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

}  // namespace distopt
