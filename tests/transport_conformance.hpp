#pragma once
// The transport conformance suite: one TEST_CASE_TEMPLATE_DEFINE per property of
// the `transport` concept (core/concepts.hpp), written once against transport_ref
// and run on every backend. A backend's test file defines a runner and invokes
// the whole suite with one macro:
//
//   struct thread_runner { ... };                        // meets conformance::runner
//   TYPE_TO_STRING_AS("threads", thread_runner);         // name shown in test names
//   DISTOPT_TRANSPORT_CONFORMANCE(thread_runner);
//
// A runner R:
//   R r(std::chrono::milliseconds timeout);  // default deadline of every blocking receive
//   r.run(world_size, fn);                   // runs fn(distopt::transport_ref) on every rank,
//                                            // returns when all have returned, rethrows the
//                                            // first exception a rank threw
//   R::name                                  // for messages
//   R::all_ranks_in_process                  // true if every rank runs in this process (threads,
//                                            // TCP over loopback); the failure-propagation
//                                            // tests need it and are skipped, with a message,
//                                            // when it is false (one rank per MPI process)
//
// Checks are made by the ranks themselves (doctest assertions are thread-safe),
// so the same code works whether ranks are threads or processes. Every
// receive has a deadline (the runner's timeout), so a broken backend fails a
// test instead of hanging it. The suite assumes what the concept promises: a
// send queues its bytes and returns without waiting for the receiver.
//
// The try_recv test relies on one thing beyond per-(peer, tag) order: once a
// message from p on tag C has been received, a message p sent earlier on tag A is
// already there for try_recv (true of in-process queues and of one stream per pair).
//
// Sweep: world sizes 1, 2, 3, 4, 8 x message sizes 0 B, 1 B, 4 KiB, 1 MiB. The
// all-pairs test sends every size between every pair up to 4 ranks; at 8 ranks,
// and in the other tests, 1 MiB goes to the next rank and the other pairs get
// 16 KiB (see big_allowed), which keeps the suite quick under ThreadSanitizer.
// Message contents are a pure function of (sender, receiver, size, salt)
// computed independently on both sides (splitmix64), and compared exactly.

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <distopt/core/byte_buffer.hpp>
#include <distopt/core/errors.hpp>
#include <distopt/core/tag.hpp>
#include <distopt/core/transport_ref.hpp>

namespace conformance {

using namespace std::chrono_literals;

/// A way to run a function on every rank of a fresh world of some backend.
template <class R>
concept runner = std::constructible_from<R, std::chrono::milliseconds> &&
    requires(R& r, int world_size, void (*fn)(distopt::transport_ref)) {
  r.run(world_size, fn);
  { R::name } -> std::convertible_to<std::string_view>;
  { R::all_ranks_in_process } -> std::convertible_to<bool>;
};

inline constexpr int world_sizes[] = {1, 2, 3, 4, 8};
inline constexpr std::size_t message_sizes[] = {0, 1, 4096, std::size_t{1} << 20};

/// Deadline of the ordinary tests: long enough never to fire on a loaded machine
/// (TSan, 2 cores), short enough that a hang is reported as a failure.
inline constexpr std::chrono::milliseconds normal_timeout = 20s;
/// Deadline of the deadline test: short, so it expires quickly.
inline constexpr std::chrono::milliseconds short_timeout = 200ms;
/// Deadline of the tests that must end long before it: their finishing quickly is the check.
inline constexpr std::chrono::milliseconds long_timeout = 30s;
/// Explicit deadline of a rendezvous after a deadline has expired.
inline constexpr std::chrono::milliseconds rendezvous_timeout = 10s;

// ---- independent reference data --------------------------------------------------

inline std::uint64_t splitmix64(std::uint64_t z) noexcept {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// Makes the bytes `sender` sends `receiver` in a message of `size` bytes; `salt`
/// distinguishes several messages between the same pair. Reuses its storage, so
/// the 1 MiB sweeps do not pay for fresh pages on every message; the returned
/// span is valid until the next call.
class pattern_buffer {
 public:
  std::span<const std::byte> operator()(int sender, int receiver, std::size_t size, std::uint64_t salt = 0) {
    std::uint64_t key = splitmix64(static_cast<std::uint64_t>(sender) + 0x100);
    key = splitmix64(key ^ static_cast<std::uint64_t>(receiver));
    key = splitmix64(key ^ static_cast<std::uint64_t>(size));
    key = splitmix64(key ^ salt);
    words_.resize((size + 7) / 8);
    for (std::size_t i = 0; i < words_.size(); ++i) words_[i] = splitmix64(key + i);
    return std::as_bytes(std::span<const std::uint64_t>(words_)).first(size);
  }

 private:
  std::vector<std::uint64_t> words_;
};

/// The same bytes as pattern_buffer, as an owned vector.
inline std::vector<std::byte> pattern(int sender, int receiver, std::size_t size, std::uint64_t salt = 0) {
  pattern_buffer make;
  const auto bytes = make(sender, receiver, size, salt);
  return {bytes.begin(), bytes.end()};
}

inline bool same_bytes(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

/// Overwrites `out` with bytes no test sends (at least 777 of them, a size no test
/// sends), so a receive that does not fully replace the buffer is caught. Never
/// shrinks it: shrinking a 1 MiB byte_buffer costs a pass over it.
inline void fill_with_junk(distopt::byte_buffer& out) {
  if (out.size() < 777) out.resize(777);
  std::memset(out.data(), 0xEE, out.size());
}

/// 1 MiB messages go to the next rank only (a ring), except in the all-pairs test
/// up to 4 ranks; other pairs get 16 KiB instead. This keeps the suite quick under
/// sanitizers in unoptimised builds, where a byte_buffer costs a call per byte.
inline bool big_allowed(int sender, int receiver, int n) { return receiver == (sender + 1) % n; }

/// A sweep size as sent from `sender` to `receiver`: 1 MiB becomes 16 KiB unless big_allowed.
inline std::size_t sized_for(std::size_t size, int sender, int receiver, int n) {
  return size > 4096 && !big_allowed(sender, receiver, n) ? std::size_t{1} << 14 : size;
}

/// The all-pairs test sends every size to every peer up to 4 ranks, and uses sized_for beyond.
inline std::size_t all_pairs_size(std::size_t size, int sender, int receiver, int n) {
  return n <= 4 ? size : sized_for(size, sender, receiver, n);
}

inline bool contains(std::string_view text, std::string_view part) { return text.find(part) != std::string_view::npos; }

/// Runs f, which must throw transport_error whose message names "rank <peer>".
template <class F>
void check_fails_naming(int peer, F&& f) {
  bool failed = false;
  try {
    f();
  } catch (const distopt::transport_error& e) {
    failed = true;
    INFO("what(): ", e.what());
    CHECK(contains(e.what(), "rank " + std::to_string(peer)));
  }
  CHECK(failed);
}

inline std::vector<int> peers_of(int rank, int n) {
  std::vector<int> peers;
  for (int p = 0; p < n; ++p)
    if (p != rank) peers.push_back(p);
  return peers;
}

/// A 4-byte message carrying one integer.
inline std::vector<std::byte> int_message(std::uint32_t v) {
  std::vector<std::byte> b(sizeof v);
  std::memcpy(b.data(), &v, sizeof v);
  return b;
}

// User tags; the collectives use tags at and above detail::reserved_tag_base.
inline constexpr distopt::tag tag_a{0};
inline constexpr distopt::tag tag_b{1};
inline constexpr distopt::tag tag_c{7};
inline constexpr distopt::tag tag_high{distopt::detail::reserved_tag_base - 1};
inline constexpr distopt::tag tag_never{12345};  // nothing is ever sent on it

/// The exception the failure tests throw from one rank; not a distopt::error,
/// so it cannot be confused with the transport_error the other ranks see.
struct injected_failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Message sizes of the ordering test: the four sweep sizes first (1 MiB only where
/// big_allowed, 16 KiB elsewhere), then small varied ones.
inline std::size_t ordering_size(int seq, bool big) {
  if (seq == 3 && !big) return std::size_t{1} << 14;
  if (seq < 4) return message_sizes[seq];
  return static_cast<std::size_t>((seq * 37) % 301);
}

}  // namespace conformance

// ---- the suite ------------------------------------------------------------------

TEST_CASE_TEMPLATE_DEFINE("transport: rank() and size(); out-of-range peers are config_error", R, transport_identity) {
  static_assert(conformance::runner<R>);
  for (const int n : conformance::world_sizes) {
    CAPTURE(n);
    R(conformance::normal_timeout).run(n, [n](distopt::transport_ref t) {
      const int r = t.rank();
      INFO("n = ", n, ", rank ", r);
      CHECK(t.size() == n);
      CHECK(r >= 0);
      CHECK(r < n);
      // Bad peers are refused before anything is sent, and the transport stays usable.
      const std::vector<std::byte> one(1, std::byte{1});
      distopt::byte_buffer out;
      for (const int bad : {-1, n, n + 5}) {
        INFO("bad peer ", bad);
        CHECK_THROWS_AS(t.send(bad, conformance::tag_a, one), distopt::config_error);
        CHECK_THROWS_AS(t.recv(bad, conformance::tag_a, out), distopt::config_error);
        CHECK_THROWS_AS((void)t.try_recv(bad, conformance::tag_a, out), distopt::config_error);
      }
      // Every rank tells every other its rank: ranks are distinct and match the peer ids.
      for (const int p : conformance::peers_of(r, n))
        t.send(p, conformance::tag_a, conformance::int_message(static_cast<std::uint32_t>(r)));
      for (const int p : conformance::peers_of(r, n)) {
        t.recv(p, conformance::tag_a, out);
        CHECK(conformance::same_bytes(out, conformance::int_message(static_cast<std::uint32_t>(p))));
      }
    });
  }
}

TEST_CASE_TEMPLATE_DEFINE("transport: every rank to every other, every size, exact bytes", R, transport_all_pairs) {
  static_assert(conformance::runner<R>);
  for (const int n : conformance::world_sizes) {
    CAPTURE(n);
    R(conformance::normal_timeout).run(n, [n](distopt::transport_ref t) {
      const int r = t.rank();
      distopt::byte_buffer out;
      conformance::pattern_buffer make;
      for (const std::size_t size : conformance::message_sizes) {
        for (const int p : conformance::peers_of(r, n))
          t.send(p, conformance::tag_a, make(r, p, conformance::all_pairs_size(size, r, p, n)));
        // Receive in descending peer order, unlike the sending order.
        const auto peers = conformance::peers_of(r, n);
        for (auto it = peers.rbegin(); it != peers.rend(); ++it) {
          const std::size_t expected = conformance::all_pairs_size(size, *it, r, n);
          INFO("n = ", n, ", rank ", r, " receives ", expected, " B from rank ", *it);
          conformance::fill_with_junk(out);
          t.recv(*it, conformance::tag_a, out);
          CHECK(out.size() == expected);
          CHECK(conformance::same_bytes(out, make(*it, r, expected)));
        }
      }
    });
  }
}

TEST_CASE_TEMPLATE_DEFINE("transport: messages on one (peer, tag) arrive in order", R, transport_order) {
  static_assert(conformance::runner<R>);
  static constexpr int count = 64;
  for (const int n : conformance::world_sizes) {
    CAPTURE(n);
    R(conformance::normal_timeout).run(n, [n](distopt::transport_ref t) {
      const int r = t.rank();
      conformance::pattern_buffer make;
      for (const int p : conformance::peers_of(r, n))
        for (int seq = 0; seq < count; ++seq)
          t.send(p, conformance::tag_a,
                 make(r, p, conformance::ordering_size(seq, conformance::big_allowed(r, p, n)),
                      static_cast<std::uint64_t>(seq)));
      distopt::byte_buffer out;
      for (const int p : conformance::peers_of(r, n)) {
        int in_order = 0;
        for (int seq = 0; seq < count; ++seq) {
          t.recv(p, conformance::tag_a, out);
          const std::size_t size = conformance::ordering_size(seq, conformance::big_allowed(p, r, n));
          in_order += conformance::same_bytes(out, make(p, r, size, static_cast<std::uint64_t>(seq)));
        }
        INFO("n = ", n, ", rank ", r, " from rank ", p);
        CHECK(in_order == count);
      }
    });
  }
}

TEST_CASE_TEMPLATE_DEFINE("transport: tags are independent streams (a later tag can be received first)", R,
                          transport_tags) {
  static_assert(conformance::runner<R>);
  static constexpr int count = 24;
  const distopt::tag tags[] = {conformance::tag_a, conformance::tag_b, conformance::tag_high};
  for (const int n : conformance::world_sizes) {
    CAPTURE(n);
    R(conformance::normal_timeout).run(n, [n, &tags](distopt::transport_ref t) {
      const int r = t.rank();
      // Interleaved: a0 b0 h0 a1 b1 h1 ...; the first message on tag_a is big (1 MiB or 16 KiB).
      auto size_of = [n](int from, int to, int seq, int k) -> std::size_t {
        if (seq == 0 && k == 0) return conformance::sized_for(std::size_t{1} << 20, from, to, n);
        return conformance::message_sizes[static_cast<std::size_t>(seq + k) % 3];  // 0, 1, 4096
      };
      auto salt = [](int seq, int k) { return static_cast<std::uint64_t>(seq * 16 + k); };
      conformance::pattern_buffer make;
      for (const int p : conformance::peers_of(r, n))
        for (int seq = 0; seq < count; ++seq)
          for (int k = 0; k < 3; ++k) t.send(p, tags[k], make(r, p, size_of(r, p, seq, k), salt(seq, k)));
      // Received tag by tag in the opposite order: everything on tag_high, then tag_b, then tag_a.
      distopt::byte_buffer out;
      for (const int p : conformance::peers_of(r, n)) {
        for (int k = 2; k >= 0; --k) {
          int in_order = 0;
          for (int seq = 0; seq < count; ++seq) {
            t.recv(p, tags[k], out);
            in_order += conformance::same_bytes(out, make(p, r, size_of(p, r, seq, k), salt(seq, k)));
          }
          INFO("n = ", n, ", rank ", r, " from rank ", p, ", stream ", k);
          CHECK(in_order == count);
        }
      }
    });
  }
}

TEST_CASE_TEMPLATE_DEFINE("transport: try_recv is false until a message is there, then true with its bytes", R,
                          transport_try_recv) {
  static_assert(conformance::runner<R>);
  for (const int n : conformance::world_sizes) {
    CAPTURE(n);
    R(conformance::normal_timeout).run(n, [n](distopt::transport_ref t) {
      const int r = t.rank();
      const auto peers = conformance::peers_of(r, n);
      distopt::byte_buffer out, sync;
      conformance::pattern_buffer make;
      for (const std::size_t size : conformance::message_sizes) {
        // Nobody sends on tag_a before receiving this rank's go-ahead on tag_b.
        for (const int p : peers) {
          INFO("n = ", n, ", rank ", r, ", peer ", p, ", size ", size);
          CHECK_FALSE(t.try_recv(p, conformance::tag_a, out));
        }
        for (const int p : peers) t.send(p, conformance::tag_b, {});
        for (const int p : peers) {
          t.recv(p, conformance::tag_b, sync);  // go-ahead from p
          t.send(p, conformance::tag_a, make(r, p, conformance::sized_for(size, r, p, n)));
          t.send(p, conformance::tag_c, {});  // "the message on tag_a has been sent"
        }
        for (const int p : peers) {
          INFO("n = ", n, ", rank ", r, ", peer ", p, ", size ", size);
          t.recv(p, conformance::tag_c, sync);
          // p sent on tag_a before tag_c, and tag_c has arrived: tag_a is there now.
          conformance::fill_with_junk(out);
          const bool got = t.try_recv(p, conformance::tag_a, out);
          CHECK(got);
          if (got) CHECK(conformance::same_bytes(out, make(p, r, conformance::sized_for(size, p, r, n))));
          CHECK_FALSE(t.try_recv(p, conformance::tag_a, out));  // consumed
        }
      }
    });
  }
}

TEST_CASE_TEMPLATE_DEFINE("transport: the send buffer may be overwritten or freed as soon as send returns", R,
                          transport_send_buffer_reuse) {
  static_assert(conformance::runner<R>);
  for (const int n : conformance::world_sizes) {
    CAPTURE(n);
    R(conformance::normal_timeout).run(n, [n](distopt::transport_ref t) {
      const int r = t.rank();
      conformance::pattern_buffer make;
      std::vector<std::byte> reused;
      distopt::byte_buffer out;
      for (const std::size_t sweep_size : conformance::message_sizes) {
        for (const int p : conformance::peers_of(r, n)) {
          const std::size_t size = conformance::sized_for(sweep_size, r, p, n);
          // 1. A buffer overwritten right after send.
          const auto first = make(r, p, size, 1);
          reused.assign(first.begin(), first.end());
          t.send(p, conformance::tag_a, reused);
          const auto second = make(r, p, size, 2);
          std::copy(second.begin(), second.end(), reused.begin());
          t.send(p, conformance::tag_a, reused);
          if (size != 0) std::memset(reused.data(), 0x5A, size);  // scribble over it again
          // 2. A buffer freed right after send.
          {
            const auto third = make(r, p, size, 3);
            auto freed = std::make_unique_for_overwrite<std::byte[]>(size);
            if (size != 0) std::memcpy(freed.get(), third.data(), size);
            t.send(p, conformance::tag_a, std::span<const std::byte>(freed.get(), size));
          }
        }
        for (const int p : conformance::peers_of(r, n)) {
          const std::size_t size = conformance::sized_for(sweep_size, p, r, n);
          INFO("n = ", n, ", rank ", r, " from rank ", p, ", size ", size);
          for (std::uint64_t salt = 1; salt <= 3; ++salt) {
            t.recv(p, conformance::tag_a, out);
            CHECK(conformance::same_bytes(out, make(p, r, size, salt)));
          }
        }
      }
    });
  }
}

TEST_CASE_TEMPLATE_DEFINE("transport: a receive whose deadline passes throws transport_error naming the peer", R,
                          transport_deadline) {
  static_assert(conformance::runner<R>);
  // Both ranks wait for a message that never comes; neither returns before both
  // have seen their own deadline pass, so this is the deadline path and not the
  // "peer has returned" one.
  constexpr int n = 2;
  R(conformance::short_timeout).run(n, [](distopt::transport_ref t) {
    const int r = t.rank();
    const int peer = 1 - r;
    distopt::byte_buffer out;
    conformance::check_fails_naming(peer, [&] { t.recv(peer, conformance::tag_never, out); });
    // Rendezvous before returning (explicit long deadline where the backend supports one).
    t.send(peer, conformance::tag_a, {});
    t.recv(peer, conformance::tag_a, out, conformance::rendezvous_timeout);
  });
}

TEST_CASE_TEMPLATE_DEFINE("transport: a throwing rank wakes every blocked rank; run rethrows the first exception", R,
                          transport_failure_propagates) {
  static_assert(conformance::runner<R>);
  if constexpr (!R::all_ranks_in_process) {
    MESSAGE("skipped for ", R::name, ": its ranks do not all run in this process");
    return;
  } else {
    for (const int n : conformance::world_sizes) {
      for (const int thrower : n == 1 ? std::vector<int>{0} : std::vector<int>{0, n - 1}) {
        CAPTURE(n);
        CAPTURE(thrower);
        const std::string reason = "injected failure on rank " + std::to_string(thrower);
        // A long deadline: every waiter failing within a quarter of it shows it was woken, not timed out.
        CHECK_THROWS_WITH_AS(
            R(conformance::long_timeout)
                .run(n,
                     [&](distopt::transport_ref t) {
                       const int r = t.rank();
                       distopt::byte_buffer out;
                       if (r == thrower) {
                         for (const int p : conformance::peers_of(r, n))
                           t.recv(p, conformance::tag_a, out);  // everyone is about to block
                         throw conformance::injected_failure(reason);
                       }
                       t.send(thrower, conformance::tag_a, {});
                       // Even ranks wait on the thrower, odd ones on the rank below
                       // (which waits on the thrower): direct and indirect dependence.
                       const int waits_on = (r % 2 == 0 || r - 1 == thrower) ? thrower : r - 1;
                       const auto start = std::chrono::steady_clock::now();
                       try {
                         t.recv(waits_on, conformance::tag_never, out);
                         FAIL_CHECK("rank ", r, " received a message on tag_never");
                       } catch (const distopt::transport_error& e) {
                         // Woken by the failure, not by the 30 s deadline; naming a cause.
                         const std::chrono::duration<double> waited = std::chrono::steady_clock::now() - start;
                         {  // INFO's scope ends here: doctest's context is not thread-safe during unwinding
                           INFO("rank ", r, " waited on rank ", waits_on, " for ", waited.count(),
                                " s: ", std::string(e.what()));
                           CHECK(waited < conformance::long_timeout / 4);
                           CHECK((conformance::contains(e.what(), "rank " + std::to_string(thrower)) ||
                                  conformance::contains(e.what(), "rank " + std::to_string(waits_on))));
                         }
                         throw;  // propagates; run must still report the first exception
                       }
                     }),
            reason.c_str(), conformance::injected_failure);
      }
    }
  }
}

TEST_CASE_TEMPLATE_DEFINE("transport: waiting on a rank that has returned fails at once, after its last message", R,
                          transport_peer_returned) {
  static_assert(conformance::runner<R>);
  if constexpr (!R::all_ranks_in_process) {
    MESSAGE("skipped for ", R::name, ": its ranks do not all run in this process");
    return;
  } else {
    for (const int n : conformance::world_sizes) {
      if (n == 1) continue;
      for (const int waiter : {0, n - 1}) {
        CAPTURE(n);
        CAPTURE(waiter);
        // 30 s deadline: a receive failing within a quarter of it shows the exit was detected.
        R(conformance::long_timeout).run(n, [&](distopt::transport_ref t) {
          const int r = t.rank();
          if (r != waiter) {  // one last message, then return
            t.send(waiter, conformance::tag_a, conformance::pattern(r, waiter, 4096));
            return;
          }
          distopt::byte_buffer out;
          for (const int p : conformance::peers_of(r, n)) {
            INFO("rank ", r, " waits on rank ", p);
            t.recv(p, conformance::tag_a, out);  // sent before p returned: still delivered
            CHECK(conformance::same_bytes(out, conformance::pattern(p, r, 4096)));
            const auto start = std::chrono::steady_clock::now();
            conformance::check_fails_naming(p, [&] { t.recv(p, conformance::tag_a, out); });
            const std::chrono::duration<double> waited = std::chrono::steady_clock::now() - start;
            CHECK(waited < conformance::long_timeout / 4);  // noticed, not waited out
          }
        });
      }
    }
  }
}

/// Runs the whole suite with runner type R (one macro per backend test file).
#define DISTOPT_TRANSPORT_CONFORMANCE(R)                      \
  TEST_CASE_TEMPLATE_INVOKE(transport_identity, R);           \
  TEST_CASE_TEMPLATE_INVOKE(transport_all_pairs, R);          \
  TEST_CASE_TEMPLATE_INVOKE(transport_order, R);              \
  TEST_CASE_TEMPLATE_INVOKE(transport_tags, R);               \
  TEST_CASE_TEMPLATE_INVOKE(transport_try_recv, R);           \
  TEST_CASE_TEMPLATE_INVOKE(transport_send_buffer_reuse, R);  \
  TEST_CASE_TEMPLATE_INVOKE(transport_deadline, R);           \
  TEST_CASE_TEMPLATE_INVOKE(transport_failure_propagates, R); \
  TEST_CASE_TEMPLATE_INVOKE(transport_peer_returned, R)
