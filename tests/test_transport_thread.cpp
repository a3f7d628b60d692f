// ctest-labels: threads
// The transport conformance suite (transport_conformance.hpp) on the in-process
// thread transport, plus what is particular to run_threads: its own argument
// checks, receives with an explicit timeout, non-standard exceptions, and
// transport_ref over a transport that has no timeout overload.

#include "archetypes/transport_archetype.hpp"
#include "transport_conformance.hpp"

#include <atomic>
#include <chrono>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <distopt/collective/ring_allreduce.hpp>
#include <distopt/transport/thread.hpp>

namespace {

using namespace std::chrono_literals;

/// Runs a world of `run_threads` workers with the given default deadline.
class thread_runner {
 public:
  static constexpr std::string_view name = "threads";
  static constexpr bool all_ranks_in_process = true;

  explicit thread_runner(std::chrono::milliseconds timeout) : timeout_(timeout) {}

  template <class F>
  void run(int world_size, F fn) {
    distopt::run_threads(world_size, fn, {.timeout = timeout_});
  }

 private:
  std::chrono::milliseconds timeout_;
};

/// Forwards the five members of the transport concept and nothing else (no recv
/// with a timeout), so transport_ref takes its fallback path.
class minimal_transport {
 public:
  explicit minimal_transport(distopt::transport_ref inner) : inner_(inner) {}
  int rank() { return inner_.rank(); }
  int size() { return inner_.size(); }
  void send(int peer, distopt::tag tg, std::span<const std::byte> bytes) { inner_.send(peer, tg, bytes); }
  void recv(int peer, distopt::tag tg, distopt::byte_buffer& out) { inner_.recv(peer, tg, out); }
  bool try_recv(int peer, distopt::tag tg, distopt::byte_buffer& out) { return inner_.try_recv(peer, tg, out); }

 private:
  distopt::transport_ref inner_;
};

static_assert(distopt::transport<distopt::thread_transport>);
static_assert(distopt::transport_with_timeout<distopt::thread_transport>);
static_assert(distopt::transport<minimal_transport>);
static_assert(!distopt::transport_with_timeout<minimal_transport>);
static_assert(conformance::runner<thread_runner>);

}  // namespace

TYPE_TO_STRING_AS("threads", thread_runner);
DISTOPT_TRANSPORT_CONFORMANCE(thread_runner);

TEST_CASE("run_threads: a bad world size or timeout is a config_error and runs nothing") {
  std::atomic<int> calls{0};
  auto count = [&](distopt::transport_ref) { ++calls; };
  CHECK_THROWS_AS(distopt::run_threads(0, count), distopt::config_error);
  CHECK_THROWS_AS(distopt::run_threads(-3, count), distopt::config_error);
  CHECK_THROWS_AS(distopt::run_threads(2, count, {.timeout = 0ms}), distopt::config_error);
  CHECK_THROWS_AS(distopt::run_threads(2, count, {.timeout = -5ms}), distopt::config_error);
  CHECK(calls.load() == 0);
  distopt::run_threads(3, count);
  CHECK(calls.load() == 3);
}

TEST_CASE("thread transport: recv with an explicit timeout uses it instead of the default deadline") {
  // Default deadline 30 s; the test finishing quickly shows the 100 ms one was used.
  distopt::run_threads(2,
                       [](distopt::transport_ref t) {
                         const int peer = 1 - t.rank();
                         distopt::byte_buffer out;
                         bool expired = false;
                         try {
                           t.recv(peer, conformance::tag_never, out, 100ms);
                         } catch (const distopt::transport_error& e) {
                           expired = true;
                           INFO("what(): ", e.what());
                           CHECK(conformance::contains(e.what(), "100 ms"));
                           CHECK(conformance::contains(e.what(), "rank " + std::to_string(peer)));
                         }
                         CHECK(expired);
                         t.send(peer, conformance::tag_a, {});
                         t.recv(peer, conformance::tag_a, out);
                       },
                       {.timeout = 30s});
}

TEST_CASE("thread transport: a deadline beyond the clock's range means wait, not expire at once") {
  // 9.3 * 10^12 ms (295 years) as "never": now + timeout would overflow the steady clock's
  // 64-bit nanoseconds (292 years) and wrap into the past (core/deadline.hpp saturates it). The
  // message comes 50 ms late; every wait, the native allreduce's barriers included, must take it.
  constexpr std::chrono::milliseconds never{9'300'000'000'000};
  for (const bool native : {false, true})
    distopt::run_threads(2,
                         [&](distopt::transport_ref t) {
                           distopt::byte_buffer out;
                           if (t.rank() == 1) std::this_thread::sleep_for(50ms);
                           if (t.rank() == 1) t.send(0, conformance::tag_a, {});
                           if (t.rank() == 0) CHECK_NOTHROW(t.recv(1, conformance::tag_a, out));
                           if (t.rank() == 0) CHECK_NOTHROW(t.recv(1, conformance::tag_b, out, never));
                           if (t.rank() == 1) t.send(0, conformance::tag_b, {});
                           std::vector<float> v(100, 1.0f);
                           if (native) CHECK_NOTHROW((void)t.native_allreduce_mean(v));
                         },
                         {.timeout = never, .native_allreduce = native});
}

TEST_CASE("transport_ref: over a transport without a timeout overload, recv(..., timeout) uses its own deadline") {
  // The wrapped world's deadline is 200 ms; the requested 30 s cannot be honoured
  // by minimal_transport, so the receive must end with the 200 ms one.
  distopt::run_threads(2,
                       [](distopt::transport_ref inner) {
                         minimal_transport m(inner);
                         const distopt::transport_ref t(m);
                         const int peer = 1 - t.rank();
                         CHECK(t.size() == 2);
                         distopt::byte_buffer out;
                         t.send(peer, conformance::tag_a, conformance::pattern(t.rank(), peer, 4096));
                         // The peer's message is queued once its rendezvous message is (the 200 ms
                         // deadline then does not depend on when the peer's thread runs).
                         inner.send(peer, conformance::tag_c, {});
                         inner.recv(peer, conformance::tag_c, out, 10s);
                         t.recv(peer, conformance::tag_a, out, 30s);
                         CHECK(conformance::same_bytes(out, conformance::pattern(peer, t.rank(), 4096)));
                         const auto start = std::chrono::steady_clock::now();
                         CHECK_THROWS_AS(t.recv(peer, conformance::tag_never, out, 30s), distopt::transport_error);
                         CHECK(std::chrono::steady_clock::now() - start < 10s);  // the world's 200 ms, not 30 s
                         inner.send(peer, conformance::tag_b, {});  // rendezvous with a deadline of its own
                         inner.recv(peer, conformance::tag_b, out, 10s);
                       },
                       {.timeout = 200ms});
}

TEST_CASE("thread transport: arrivals() changes when a message arrives, and transport_ref forwards only what exists") {
  distopt::run_threads(2,
                       [](distopt::transport_ref t) {
                         distopt::byte_buffer out;
                         const int peer = 1 - t.rank();
                         if (t.rank() == 0) {
                           const auto before = t.arrivals();
                           REQUIRE(before.has_value());
                           t.send(peer, conformance::tag_a, {});   // rank 1 sends only after this
                           t.recv(peer, conformance::tag_a, out);  // so this message arrives after `before`
                           CHECK(t.arrivals() != before);
                           const auto settled = t.arrivals();
                           CHECK_FALSE(t.try_recv(peer, conformance::tag_b, out));
                           CHECK(t.arrivals() == settled);  // nothing arrived: polls and receives do not change it
                           minimal_transport m(t);          // a backend without the counter
                           CHECK_FALSE(distopt::transport_ref(m).arrivals().has_value());
                           t.send(peer, conformance::tag_b, {});  // only now may rank 1 exit (an exit changes it too)
                         } else {
                           t.recv(peer, conformance::tag_a, out);
                           t.send(peer, conformance::tag_a, {});
                           t.recv(peer, conformance::tag_b, out);
                         }
                       },
                       {.timeout = 10s});
}

TEST_CASE("run_threads: a non-standard exception wakes the others and is rethrown as itself") {
  for (const int n : {1, 2, 4}) {
    CAPTURE(n);
    std::atomic<int> woken{0};
    CHECK_THROWS_AS(distopt::run_threads(n,
                                         [&](distopt::transport_ref t) {
                                           distopt::byte_buffer out;
                                           if (t.rank() == n - 1) {
                                             for (int p = 0; p < n - 1; ++p) t.recv(p, conformance::tag_a, out);
                                             throw 42;  // NOLINT(hicpp-exception-baseclass): the point of the test
                                           }
                                           t.send(n - 1, conformance::tag_a, {});
                                           try {
                                             t.recv(n - 1, conformance::tag_never, out);
                                           } catch (const distopt::transport_error&) {
                                             ++woken;
                                           }
                                         },
                                         {.timeout = 30s}),
                    int);
    CHECK(woken.load() == n - 1);
  }
}

TEST_CASE("thread transport: woken and exited-peer errors say why, so they are not deadline expiries") {
  // The conformance suite cannot tell "woken at once" from "timed out after 30 s"
  // without timing; the thread transport's messages can.
  SUBCASE("a rank blocked when another throws is woken by the abort") {
    CHECK_THROWS_AS(distopt::run_threads(3,
                                         [](distopt::transport_ref t) {
                                           distopt::byte_buffer out;
                                           if (t.rank() == 2) {
                                             t.recv(0, conformance::tag_a, out);
                                             t.recv(1, conformance::tag_a, out);
                                             throw conformance::injected_failure("injected failure on rank 2");
                                           }
                                           t.send(2, conformance::tag_a, {});
                                           try {
                                             t.recv(2, conformance::tag_never, out);
                                             CHECK(false);
                                           } catch (const distopt::transport_error& e) {
                                             INFO("what(): ", e.what());
                                             CHECK(conformance::contains(e.what(), "aborted"));
                                             CHECK(conformance::contains(e.what(), "injected failure on rank 2"));
                                             CHECK_FALSE(conformance::contains(e.what(), "waited"));
                                           }
                                         },
                                         {.timeout = 30s}),
                    conformance::injected_failure);
  }
  SUBCASE("a rank waiting on a returned peer learns that it returned") {
    distopt::run_threads(2,
                         [](distopt::transport_ref t) {
                           if (t.rank() == 1) return;
                           distopt::byte_buffer out;
                           try {
                             t.recv(1, conformance::tag_a, out);
                             CHECK(false);
                           } catch (const distopt::transport_error& e) {
                             INFO("what(): ", e.what());
                             CHECK(conformance::contains(e.what(), "already returned"));
                             CHECK_FALSE(conformance::contains(e.what(), "waited"));
                           }
                         },
                         {.timeout = 30s});
  }
}

// ---- native allreduce on shared memory ------------------------------------------------

namespace {

/// Irregular floats of mixed sign and magnitude, so that the order of their sums shows in the bits.
float native_value(int rank, std::size_t i) {
  const auto h = conformance::splitmix64(i * 131 + static_cast<std::uint64_t>(rank) * 7919);
  return static_cast<float>(static_cast<double>(h >> 11) * 0x1.0p-53 * 2.0 - 1.0) * static_cast<float>(1u << (h % 13));
}

/// Runs call(t) on n workers with the native allreduce on; counts the workers on which it
/// threw E with `text` in what().
template <class E, class Call>
int refusals(int n, const char* text, Call&& call) {
  std::atomic<int> count{0};
  distopt::run_threads(n,
                       [&](distopt::transport_ref t) {
                         try {
                           call(t);
                         } catch (const E& e) {
                           INFO("what(): ", e.what());
                           CHECK(conformance::contains(e.what(), text));
                           ++count;
                         }
                       },
                       {.timeout = 30s, .native_allreduce = true});
  return count.load();
}

}  // namespace

TEST_CASE("thread transport: the native allreduce is the ring's mean, bit for bit, on every rank") {
  for (const int n : {1, 2, 3, 4, 8}) {
    for (const std::size_t len :
         {std::size_t{0}, std::size_t{1}, std::size_t{5}, std::size_t{4099}, std::size_t{100'003}}) {
      for (const bool in_place : {true, false}) {
        CAPTURE(n);
        CAPTURE(len);
        CAPTURE(in_place);
        std::atomic<std::size_t> mismatches{0}, differs_from_other_order{0};
        distopt::run_threads(
            n,
            [&](distopt::transport_ref t) {
              std::vector<float> input(len), ring(len), native(len);
              for (std::size_t i = 0; i < len; ++i) input[i] = native_value(t.rank(), i);
              distopt::collective::allreduce_workspace ws;
              ws.segment_floats = 1000;  // several segments per chunk
              distopt::collective::ring_allreduce(t, input, ring, distopt::collective::reduce_op::mean, ws);
              if (in_place) native = input;
              const bool used = in_place ? t.native_allreduce_mean(native)
                                         : t.native_allreduce_mean(std::span<const float>(input), native);
              CHECK(used);
              std::size_t bad = 0, other = 0;
              for (std::size_t i = 0; i < len; ++i) {
                if (!in_place) bad += input[i] != native_value(t.rank(), i);  // read, never written
                bad += std::memcmp(&ring[i], &native[i], sizeof(float)) != 0;
                // Summed from rank 0 up, whatever the chunk: the order the test must be able to tell apart.
                float s = native_value(0, i);
                for (int k = 1; k < n; ++k) s += native_value(k, i);
                s /= static_cast<float>(n);
                other += std::memcmp(&s, &native[i], sizeof(float)) != 0;
              }
              mismatches += bad;
              differs_from_other_order += other;
            },
            {.timeout = 30s, .native_allreduce = true});
        CHECK(mismatches.load() == 0);
        if (n >= 3 && len >= 4099) CHECK(differs_from_other_order.load() > 0);  // the comparison can fail
      }
    }
  }
}

TEST_CASE("thread transport: the native allreduce is offered only when asked for") {
  distopt::run_threads(2, [](distopt::transport_ref t) {
    std::vector<float> v(10, 1.0f);
    CHECK_FALSE(t.native_allreduce_mean(v));
    CHECK(v[0] == 1.0f);  // untouched when refused
  });
}

TEST_CASE("thread transport: a native allreduce that cannot complete throws transport_error on every waiting rank") {
  SUBCASE("a worker throws instead of joining: the others are woken by the abort") {
    std::atomic<int> woken{0};
    CHECK_THROWS_AS(distopt::run_threads(3,
                                         [&](distopt::transport_ref t) {
                                           std::vector<float> v(1000, 1.0f);
                                           if (t.rank() == 1)
                                             throw conformance::injected_failure("injected failure on rank 1");
                                           try {
                                             (void)t.native_allreduce_mean(v);
                                           } catch (const distopt::transport_error& e) {
                                             INFO("what(): ", e.what());
                                             CHECK(conformance::contains(e.what(), "injected failure on rank 1"));
                                             ++woken;
                                           }
                                         },
                                         {.timeout = 30s, .native_allreduce = true}),
                    conformance::injected_failure);
    CHECK(woken.load() == 2);
  }
  SUBCASE("a worker returns instead of joining: the others learn it at once") {
    CHECK(refusals<distopt::transport_error>(3, "already returned", [](distopt::transport_ref t) {
            if (t.rank() == 2) return;
            std::vector<float> v(1000, 1.0f);
            (void)t.native_allreduce_mean(v);
          }) == 2);
  }
  SUBCASE("a worker is late past the deadline: the ones waiting give up, and so does the late one") {
    std::atomic<int> expired{0}, late_refused{0};
    std::atomic<bool> rank0_gave_up{false};
    distopt::run_threads(2,
                         [&](distopt::transport_ref t) {
                           std::vector<float> v(1000, 1.0f);
                           if (t.rank() == 1) {  // late: comes only after rank 0 has given up (10 s guard)
                             const auto guard = std::chrono::steady_clock::now() + 10s;
                             while (!rank0_gave_up.load() && std::chrono::steady_clock::now() < guard)
                               std::this_thread::sleep_for(1ms);
                           }
                           try {
                             (void)t.native_allreduce_mean(v);
                           } catch (const distopt::transport_error& e) {
                             INFO("what(): ", e.what());
                             if (t.rank() == 0) rank0_gave_up = true;
                             if (conformance::contains(e.what(), "waited 100 ms")) ++expired;
                             if (t.rank() == 1) ++late_refused;  // arrives at an abandoned allreduce
                           }
                         },
                         {.timeout = 100ms, .native_allreduce = true});
    CHECK(expired.load() == 2);  // rank 0's own error, and the reason rank 1 is given
    CHECK(late_refused.load() == 1);
  }
  SUBCASE("lengths differ: config_error on every rank") {
    CHECK(refusals<distopt::config_error>(2, "same length", [](distopt::transport_ref t) {
            std::vector<float> v(t.rank() == 0 ? 10 : 11, 1.0f);
            (void)t.native_allreduce_mean(v);
          }) == 2);
  }
  SUBCASE("input and output of different lengths: config_error before any peer reads the input") {
    const std::vector<float> in(10, 1.0f);
    std::vector<float> out(1000);  // a peer summing 1000 floats of `in` would overrun it
    CHECK(refusals<distopt::config_error>(
              2, "same length", [&](distopt::transport_ref t) { (void)t.native_allreduce_mean(in, out); }) == 2);
    // The backend's own call refuses it too, before it publishes anything (one rank: no barrier is reached).
    distopt::detail::thread_world world(2, 30s, true);
    distopt::thread_transport rank0(world, 0);
    CHECK_THROWS_WITH_AS(rank0.allreduce_mean(in, out), doctest::Contains("same length"), distopt::config_error);
    // And transport_ref refuses it whatever the backend, also one without a native allreduce.
    distopt::run_threads(1, [&](distopt::transport_ref t) {
      CHECK_THROWS_WITH_AS((void)t.native_allreduce_mean(in, out), doctest::Contains("same length"),
                           distopt::config_error);
    });
  }
}
