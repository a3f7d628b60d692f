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
#include "distopt/core/errors.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt {

struct thread_options {
  /// Default deadline of a receive.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
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
  thread_world(int size, std::chrono::milliseconds timeout)
      : timeout_(timeout),
        mailboxes_(static_cast<std::size_t>(size)),
        spin_(size > 1 && static_cast<unsigned>(size) <= std::thread::hardware_concurrency()) {
    for (auto& box : mailboxes_) box.peer_exited.assign(static_cast<std::size_t>(size), 0);
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
    const auto deadline = std::chrono::steady_clock::now() + timeout;
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
  }

  std::chrono::milliseconds timeout_;
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
  detail::thread_world world(n, opts.timeout);
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
