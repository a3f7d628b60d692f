#pragma once
// tcp_transport: ranks as separate processes (or threads) talking over TCP, on
// Boost.Asio. This header and transport/tcp/ are the only ones that include
// Boost.Asio and OpenSSL; link the CMake target distopt::tcp.
//
// Rendezvous: rank 0 listens on the coordinator address (host:port); every other
// rank listens on an ephemeral port of its bind address, connects to rank 0,
// proves it holds the shared token and reports its port; rank 0 answers with the
// table of endpoints, and each rank i then connects to ranks 1..i-1 and accepts
// ranks i+1..n-1: a full mesh, one connection per pair. Every connection starts
// with the handshake of tcp/detail/handshake.hpp (HMAC-SHA256 challenge-response,
// then library version, configuration, parameter count and options hash compared;
// a mismatch is refused on both sides with a message naming what differs).
// A listening rank handshakes with every connection concurrently, each under its own
// deadline (tcp_options.handshake_timeout, 2 s): one that fails before proving the
// token (anything that is not a distopt rank of this job, or one with another token)
// is refused and closed, reported once per source address (on_refused, else stderr),
// and the rank goes on waiting for its real peers. Everything is bounded by
// tcp_options.connect_timeout, whose error lists what was refused meanwhile. Once the
// mesh is formed, no port listens.
//
// Data: frames of tcp/detail/wire.hpp (24-byte header with CRC32C, length checked
// against max_frame_bytes before any allocation), written header+payload with one
// gathered sendmsg (no copy), TCP_NODELAY. One reader thread per peer demultiplexes
// frames into per-(peer, tag) queues; recv waits on them with a deadline. A peer
// that closes, dies, or sends a bad frame is marked failed, and every receive from
// it (and send to it) throws transport_error naming it: queued messages it sent
// before are still delivered first. A bad frame's sender is told, when no send is
// under way on that link (a goodbye saying "refused"), so its error names the refusal, not a
// lost connection. The destructor says goodbye to every peer,
// waits (at most 5 s) until they have received what was sent, and joins every thread.
//
//   auto t = distopt::tcp_transport::from_environment(distopt::describe_run<sgd>(dim, opts));
//   sgd opt(t, x0, opts);   // DISTOPT_RANK, DISTOPT_WORLD_SIZE, DISTOPT_COORDINATOR, DISTOPT_TOKEN
//
// or from code:
//   distopt::tcp_transport t({.rank = r, .size = 4, .coordinator = "127.0.0.1:29500", .token = secret});

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/describe.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/options.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/transport_ref.hpp"
#include "distopt/transport/tcp/detail/handshake.hpp"
#include "distopt/transport/tcp/detail/rendezvous.hpp"
#include "distopt/transport/tcp/detail/socket.hpp"
#include "distopt/transport/tcp/detail/wire.hpp"

// The distopt::tcp CMake target defines it from project(VERSION); this fallback
// serves a build that includes the header without CMake.
#ifndef DISTOPT_VERSION_STRING
#define DISTOPT_VERSION_STRING "0.1.0"
#endif

namespace distopt {

/// A hash (FNV-1a, 64 bits) of the options every rank must share: all but the timeout.
inline std::uint64_t options_hash(const options& o) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](const auto& v) {
    unsigned char b[sizeof v];
    std::memcpy(b, &v, sizeof v);
    for (const unsigned char c : b) h = (h ^ c) * 0x100000001b3ull;
  };
  mix(o.learning_rate);
  mix(o.momentum);
  mix(static_cast<unsigned char>(o.nesterov));
  mix(o.weight_decay);
  mix(o.seed);
  return h;
}

/// What a rank running `Optimizer` on `parameter_count` parameters with options `o`
/// tells its peers in the handshake.
template <class Optimizer>
run_description describe_run(std::uint64_t parameter_count, const options& o = {}) {
  return {describe<Optimizer>(), parameter_count, options_hash(o)};
}

struct tcp_options {
  /// This process's rank, 0..size-1.
  int rank = 0;
  /// World size (number of ranks), >= 1.
  int size = 1;
  /// host:port where rank 0 listens and the others connect. Port 0 on rank 0
  /// picks a free port, reported to on_listening.
  std::string coordinator = "127.0.0.1:29500";
  /// Shared secret every rank must hold; proven in the handshake, never sent. Required.
  std::string token{};
  /// Local address to listen on. 127.0.0.1 keeps a run on this machine; listening
  /// on another interface ("0.0.0.0") is an explicit choice.
  std::string bind_address = "127.0.0.1";
  /// What this rank runs, compared in the handshake (describe_run<Optimizer>()).
  run_description run{};
  /// Deadline of every receive (and of a blocked send).
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  /// Deadline of the whole rendezvous: connecting, handshakes, endpoint exchange.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(60)};
  /// Deadline of one accepted connection's handshake, from its accept: a connection that has not
  /// proven the token by then (silent, or dripping bytes) is refused and closed, and the rank goes
  /// on waiting for its peers. A real peer's handshake takes milliseconds.
  std::chrono::milliseconds handshake_timeout{std::chrono::seconds(2)};
  /// SO_SNDBUF and SO_RCVBUF of every connection; 0 keeps the kernel's autotuning.
  int socket_buffer_bytes = 0;
  /// Largest message accepted; a frame announcing more is refused before allocation.
  std::uint64_t max_frame_bytes = std::uint64_t{1} << 30;
  /// Library version announced in the handshake (changed only by tests).
  std::string library_version = DISTOPT_VERSION_STRING;
  /// Called by every rank that listens, with its port, once it accepts connections: rank 0 with
  /// the coordinator port, ranks 1..size-2 with the port the ranks above them connect to.
  std::function<void(std::uint16_t port)> on_listening{};
  /// Called during the rendezvous with one line (source address and reason) for the first refused
  /// connection from each source address; unset, the line goes to stderr.
  std::function<void(const std::string& line)> on_refused{};
};

namespace detail::tcp {
struct raw_access;
}

/// One rank's endpoint of a TCP world. Not copyable or movable (its reader threads
/// refer to it); from_environment returns it by guaranteed copy elision.
class tcp_transport {
 public:
  /// Rendezvous with the other ranks; returns when connected to all of them. Throws
  /// config_error for bad options, transport_error if the rendezvous or a handshake fails.
  explicit tcp_transport(tcp_options o);
  ~tcp_transport();
  tcp_transport(const tcp_transport&) = delete;
  tcp_transport& operator=(const tcp_transport&) = delete;

  /// tcp_options from DISTOPT_RANK, DISTOPT_WORLD_SIZE, DISTOPT_COORDINATOR (host:port),
  /// DISTOPT_TOKEN, and optionally DISTOPT_BIND and DISTOPT_TIMEOUT_MS.
  static tcp_options options_from_environment();
  /// A transport configured from the environment (scripts/distopt-launch sets it).
  static tcp_transport from_environment(run_description run = {}) {
    tcp_options o = options_from_environment();
    o.run = std::move(run);
    return tcp_transport(std::move(o));
  }

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  void send(int peer, tag tg, std::span<const std::byte> bytes);
  void recv(int peer, tag tg, byte_buffer& out) { recv(peer, tg, out, options_.timeout); }
  void recv(int peer, tag tg, byte_buffer& out, std::chrono::milliseconds timeout);
  bool try_recv(int peer, tag tg, byte_buffer& out);

 private:
  friend struct detail::tcp::raw_access;

  enum class link_state { open, closed, failed };
  struct link {
    detail::tcp::socket_fd fd;
    std::mutex send_mutex;  // one frame at a time on the stream
    std::thread reader;
    link_state state = link_state::open;               // guarded by tcp_transport::mutex_
    std::string reason;                                // why it is not open; guarded by mutex_
    std::optional<detail::tcp::goodbye_code> goodbye;  // the peer's, if it said goodbye; guarded by mutex_
  };

  void rendezvous();
  void adopt(int peer, detail::tcp::tcp::socket socket);
  void read_loop(int peer);
  void mark(int peer, link_state state, std::string reason);
  bool take(int peer, tag tg, byte_buffer& out);  // under mutex_
  void check_peer(int peer, const char* what) const;
  [[noreturn]] void throw_unusable(int peer, tag tg);  // under mutex_
  void close_links() noexcept;
  std::string name_of(int peer) const { return "rank " + std::to_string(peer); }
  static std::uint64_t key(int from, tag tg) noexcept {
    return (std::uint64_t(static_cast<std::uint32_t>(from)) << 32) | static_cast<std::uint32_t>(tg);
  }

  tcp_options options_;
  int rank_;
  int size_;
  std::vector<std::unique_ptr<link>> links_;  // links_[rank_] is null
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::unordered_map<std::uint64_t, std::deque<byte_buffer>> queues_;
  std::vector<byte_buffer> pool_;  // spent receive buffers, reused for the next frames
  static constexpr std::size_t max_pooled = 64;
};

static_assert(transport<tcp_transport>);
static_assert(transport_with_timeout<tcp_transport>);

}  // namespace distopt

#include "distopt/transport/tcp/detail/tcp_transport_impl.hpp"
