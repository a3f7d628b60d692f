#pragma once
// Pieces shared by the asynchronous protocols (stale_server.hpp, async_gossip.hpp).
//  - poll_backoff: waiting for "a message from any of several peers" with the transport's
//    per-peer receives means polling; between empty polls the thread sleeps 20 us, doubling
//    to 1 ms, so 64 waiting workers on 2 cores cost little CPU and a message waits at most
//    ~1 ms for its receiver. The sleep counts as time blocked.
//  - message headers: a kind, a small field and Words counters in front of a payload, checked on
//    receipt.

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <thread>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/statistics.hpp"

namespace distopt::detail {

class poll_backoff {
 public:
  explicit poll_backoff(statistics& stats) : stats_(&stats) {}
  /// Sleeps after a poll that found nothing.
  void pause() {
    const auto start = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(wait_);
    stats_->time_blocked += std::chrono::steady_clock::now() - start;
    wait_ = std::min(wait_ * 2, max_wait);
  }
  /// After a poll that found something: poll again soon.
  void reset() { wait_ = min_wait; }

 private:
  static constexpr std::chrono::microseconds min_wait{20};
  static constexpr std::chrono::microseconds max_wait{1000};
  statistics* stats_;
  std::chrono::microseconds wait_ = min_wait;
};

/// [u32 kind][u32 a][u64 w[0]] ... [u64 w[Words - 1]], then the payload.
template <std::size_t Words>
struct message_header {
  static constexpr std::size_t bytes = 8 + 8 * Words;
  std::uint32_t kind = 0;
  std::uint32_t a = 0;
  std::array<std::uint64_t, Words> w{};

  /// Writes the header at the front of `wire`, which has `bytes` bytes reserved there.
  void write(byte_buffer& wire) const {
    std::memcpy(wire.data(), &kind, 4);
    std::memcpy(wire.data() + 4, &a, 4);
    std::memcpy(wire.data() + 8, w.data(), 8 * Words);
  }
  /// Reads the header of a message from `from`; a message shorter than a header or of a
  /// kind above `max_kind` is a transport_error naming `protocol` and the peer.
  static message_header read(std::span<const std::byte> m, std::uint32_t max_kind, const char* protocol, int from) {
    if (m.size() < bytes)
      throw transport_error(std::string(protocol) + ": a " + std::to_string(m.size()) + "-byte message from rank " +
                            std::to_string(from) + " is shorter than its " + std::to_string(bytes) +
                            "-byte header (malformed or truncated)");
    message_header h;
    std::memcpy(&h.kind, m.data(), 4);
    std::memcpy(&h.a, m.data() + 4, 4);
    std::memcpy(h.w.data(), m.data() + 8, 8 * Words);
    if (h.kind > max_kind)
      throw transport_error(std::string(protocol) + ": a message from rank " + std::to_string(from) +
                            " has unknown kind " + std::to_string(h.kind) + " (malformed, or a different protocol)");
    return h;
  }
};

/// The gossip header: a kind, a flag and one counter.
using async_header = message_header<1>;

}  // namespace distopt::detail
