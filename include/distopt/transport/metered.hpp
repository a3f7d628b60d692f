#pragma once
// metered: wraps a transport_ref and records bytes, messages and time blocked in
// a statistics object. The optimizer talks through one, so its stats() are exact.

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>

#include "distopt/core/ring_schedule.hpp"
#include "distopt/core/statistics.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt {

class metered_transport {
 public:
  metered_transport(transport_ref inner, statistics& stats, std::chrono::milliseconds timeout) noexcept
      : inner_(inner), stats_(&stats), timeout_(timeout) {}

  int rank() const { return inner_.rank(); }
  int size() const { return inner_.size(); }
  void send(int peer, tag tg, std::span<const std::byte> bytes) {
    inner_.send(peer, tg, bytes);
    stats_->bytes_sent += bytes.size();
    ++stats_->messages_sent;
  }
  void recv(int peer, tag tg, byte_buffer& out) { recv(peer, tg, out, timeout_); }
  void recv(int peer, tag tg, byte_buffer& out, std::chrono::milliseconds timeout) {
    const auto start = std::chrono::steady_clock::now();
    inner_.recv(peer, tg, out, timeout);
    stats_->time_blocked += std::chrono::steady_clock::now() - start;
    count_received(out);
  }
  /// The backend's own mean allreduce, if it offers one (transport_ref::native_allreduce_mean);
  /// counted as this rank's bytes and messages in the ring allreduce it replaces (default
  /// segments), so statistics do not depend on the path. Time blocked is not recorded.
  bool native_allreduce_mean(std::span<const float> in, std::span<float> out) {
    if (!inner_.native_allreduce_mean(in, out)) return false;
    const detail::ring_traffic ring = detail::ring_allreduce_traffic(in.size(), size(), rank());
    stats_->bytes_sent += ring.bytes_sent;
    stats_->bytes_received += ring.bytes_received;
    stats_->messages_sent += ring.messages_sent;
    stats_->messages_received += ring.messages_received;
    return true;
  }
  std::optional<std::uint64_t> arrivals() const { return inner_.arrivals(); }
  bool try_recv(int peer, tag tg, byte_buffer& out) {
    if (!inner_.try_recv(peer, tg, out)) return false;
    count_received(out);
    return true;
  }

 private:
  void count_received(const byte_buffer& out) {
    stats_->bytes_received += out.size();
    ++stats_->messages_received;
  }

  transport_ref inner_;
  statistics* stats_;
  std::chrono::milliseconds timeout_;
};

}  // namespace distopt
