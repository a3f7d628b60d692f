#pragma once
// The TCP transport's rendezvous on Boost.Asio, on one io_context run by the constructing thread:
//  - timed_io and channel: the connecting side, written as blocking steps (connect, then
//    length-prefixed handshake messages), each bounded by the rendezvous's deadline. Asio's
//    synchronous calls have none, so every step is started asynchronously and the io_context is
//    run until it completes or the deadline passes; then it is cancelled.
//  - listener: the accepting side. It accepts every connection until stopped and runs each one's
//    handshake concurrently with the others, under a deadline of its own
//    (tcp_options.handshake_timeout). A connection that fails before it has proven the token (a
//    stranger: wrong magic or protocol, a length field out of range, a wrong token, an early close,
//    silence) is refused and closed, noted once per source address, and the rank goes on listening;
//    so a health check, a port scanner or a stale process cannot stop a job from starting. Since
//    all of it runs on the same io_context, the listener makes progress whenever the rank waits in
//    one of the connecting side's steps.
//  - the address table rank 0 sends every rank, and its bounds-checked decoder.
// Include distopt/transport/tcp.hpp, not this header.
//
//   detail::tcp::timed_io io;
//   detail::tcp::channel ch(io, io.connect(host, port, deadline, "rank 0"), deadline, "rank 0");
//   ch.write(bytes); ch.read(reply);

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/deadline.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/transport/tcp/detail/handshake.hpp"
#include "distopt/transport/tcp/detail/socket.hpp"
#include "distopt/transport/tcp/detail/wire.hpp"

namespace distopt::detail::tcp {

namespace asio = boost::asio;
using asio::ip::tcp;

inline std::string describe_endpoint(const tcp::endpoint& e) {
  return e.address().to_string() + ":" + std::to_string(e.port());
}

/// Runs asynchronous operations on one io_context until they complete or a deadline passes.
class timed_io {
 public:
  asio::io_context& context() noexcept { return io_; }

  /// Runs handlers (of any operation on this io_context) until `done()` or `deadline`; returns done().
  template <class Done>
  bool run_until(Done&& done, clock::time_point deadline) {
    while (!done() && clock::now() < deadline) {
      if (io_.stopped()) io_.restart();
      if (io_.run_one_until(deadline) == 0 && io_.stopped()) break;  // no work left: nothing can change
    }
    return done();
  }

  /// Starts `start(handler)` and runs until it completes or `deadline` passes; on expiry
  /// calls `cancel()`, waits for the aborted operation and returns asio::error::timed_out.
  template <class Start, class Cancel>
  boost::system::error_code run(Start&& start, Cancel&& cancel, clock::time_point deadline) {
    std::optional<boost::system::error_code> result;
    start([&result](const boost::system::error_code& ec, auto&&...) { result = ec; });
    if (run_until([&] { return result.has_value(); }, deadline)) return *result;
    cancel();
    while (!result) {  // the cancelled operation's handler
      if (io_.stopped()) io_.restart();
      io_.run_one();
    }
    return asio::error::timed_out;
  }

  /// Connects to host:port, retrying while nobody listens yet, until `deadline`.
  tcp::socket connect(const std::string& host, std::uint16_t port, clock::time_point deadline,
                      const std::string& what) {
    tcp::resolver resolver(io_);
    boost::system::error_code ec;
    const auto endpoints = resolver.resolve(host, std::to_string(port), ec);
    if (ec)
      throw transport_error("tcp transport: cannot resolve " + what + " address '" + host + "': " + ec.message() +
                            "; check DISTOPT_COORDINATOR (host:port)");
    for (;;) {
      tcp::socket s(io_);
      ec = run([&](auto handler) { asio::async_connect(s, endpoints, handler); }, [&] { s.close(); }, deadline);
      if (!ec) return s;
      if (ec == asio::error::timed_out || clock::now() >= deadline)
        throw transport_error("tcp transport: could not connect to " + what + " at " + host + ":" +
                              std::to_string(port) + " before the deadline (tcp_options.connect_timeout): " +
                              ec.message() + "; is that process running and the address right?");
      asio::steady_timer pause(io_, std::chrono::milliseconds(20));  // not listening yet: retry (serving the listener)
      run([&](auto handler) { pause.async_wait(handler); }, [&] { pause.cancel(); }, deadline);
    }
  }

 private:
  asio::io_context io_;
};

/// A connection during the rendezvous, seen from the connecting side: length-prefixed messages,
/// each bounded by the deadline.
class channel {
 public:
  channel(timed_io& io, tcp::socket socket, clock::time_point deadline, std::string who)
      : io_(&io), socket_(std::move(socket)), deadline_(deadline), who_(std::move(who)) {}

  const std::string& who() const noexcept { return who_; }
  tcp::socket& socket() noexcept { return socket_; }

  void write(std::span<const std::byte> bytes) {
    const auto len = static_cast<std::uint32_t>(bytes.size());
    const std::array<asio::const_buffer, 2> parts{asio::buffer(&len, sizeof len),
                                                  asio::buffer(bytes.data(), bytes.size())};
    check(io_->run([&](auto handler) { asio::async_write(socket_, parts, handler); }, [&] { socket_.close(); },
                   deadline_),
          "sending to");
  }

  void read(byte_buffer& out) {
    std::uint32_t len = 0;
    check(io_->run([&](auto handler) { asio::async_read(socket_, asio::buffer(&len, sizeof len), handler); },
                   [&] { socket_.close(); }, deadline_),
          "receiving from");
    if (len > max_handshake_message)
      throw transport_error("tcp transport: " + who_ + " sent a " + std::to_string(len) +
                            "-byte handshake message, above the limit; it is not a distopt peer of this version");
    out.resize(len);
    check(io_->run([&](auto handler) { asio::async_read(socket_, asio::buffer(out.data(), out.size()), handler); },
                   [&] { socket_.close(); }, deadline_),
          "receiving from");
  }

 private:
  void check(const boost::system::error_code& ec, const char* doing) const {
    if (!ec) return;
    if (ec == asio::error::timed_out)
      throw transport_error("tcp transport: handshake timed out " + std::string(doing) + " " + who_ +
                            " (deadline tcp_options.connect_timeout); the peer is stuck or is not a distopt process");
    throw transport_error("tcp transport: connection lost " + std::string(doing) + " " + who_ +
                          " during the handshake: " + ec.message() + "; see that rank's own error");
  }

  timed_io* io_;
  tcp::socket socket_;
  clock::time_point deadline_;
  std::string who_;
};

// ---- the address table ---------------------------------------------------------------

/// Where rank r listens for the ranks above it: the address rank 0 saw it connect from, and the
/// port it reported (0 for the last rank, which accepts nobody).
struct peer_address {
  std::string host;
  std::uint16_t port = 0;
  bool operator==(const peer_address&) const = default;
};

/// Longest host in the table: an IPv6 address with a scope (interface name) fits.
inline constexpr std::size_t max_host_chars = 64;

/// Rank 0's table for ranks 1..size-1: table[0] is unused. Per rank, str host and u32 port.
inline void encode_address_table(std::span<const peer_address> table, byte_buffer& out) {
  message_writer w(out);
  for (std::size_t r = 1; r < table.size(); ++r) {
    w.str(table[r].host);
    w.u32(table[r].port);
  }
}

/// Decodes the table of a world of `size` ranks (entry 0 left empty). Every host must be an IP
/// address in the form rank 0 writes it (it is connected to, never looked up by name), and every
/// rank but the last must listen on a port of 1..65535; anything else throws transport_error.
inline std::vector<peer_address> decode_address_table(std::span<const std::byte> bytes, int size,
                                                      const std::string& from) {
  const auto bad = [&](const std::string& what) {
    return transport_error("tcp transport: " + from + " sent a bad address table: " + what +
                           "; it is not a distopt coordinator of this version");
  };
  message_reader reader(bytes, from);
  std::vector<peer_address> table(static_cast<std::size_t>(size));
  for (int r = 1; r < size; ++r) {
    auto& entry = table[static_cast<std::size_t>(r)];
    entry.host = reader.str();
    const std::uint32_t port = reader.u32();
    if (entry.host.size() > max_host_chars)
      throw bad("the host of rank " + std::to_string(r) + " has " + std::to_string(entry.host.size()) + " characters");
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(entry.host, ec);
    if (ec || address.to_string() != entry.host)
      throw bad("the host of rank " + std::to_string(r) + " is not an IP address in canonical form");
    const bool listens = r < size - 1;
    if (port > 65535 || (listens && port == 0))
      throw bad("impossible port " + std::to_string(port) + " for rank " + std::to_string(r));
    entry.port = static_cast<std::uint16_t>(port);
  }
  reader.finish();
  return table;
}

// ---- the accepting side ----------------------------------------------------------------

/// A connection the listener accepted: an authenticated peer of the expected ranks.
struct accepted_peer {
  int rank = -1;
  tcp::socket socket;
  std::string address;    ///< its IP address, as rank 0 puts it in the table
  byte_buffer follow_up;  ///< the message after the handshake, if listener::config::follow_up
};

/// Accepts connections for one rank during the rendezvous (see the top of this file). Every
/// callback runs on the thread that runs the io_context; the listener must outlive every run of it
/// while it is not stopped (its destructor stops it).
class listener {
 public:
  struct config {
    handshake_identity me;
    /// Deadline of one connection's handshake (and follow-up message), from its accept.
    std::chrono::milliseconds handshake_timeout{};
    /// The rendezvous's deadline: no connection is waited for beyond it.
    clock::time_point deadline{};
    /// Read one more message after the handshake (rank 0: the port the peer listens on).
    bool follow_up = false;
    /// "" if an authenticated peer of that rank may connect here, else why not.
    std::function<std::string(int rank)> check_rank;
    /// An authenticated peer; may throw transport_error, which ends the rendezvous.
    std::function<void(accepted_peer&&)> on_peer;
    /// One line for the first refused connection from each source address.
    std::function<void(const std::string&)> note;
  };

  listener(asio::io_context& io, tcp::acceptor acceptor, config c)
      : io_(io),
        acceptor_(std::move(acceptor)),
        port_(acceptor_.local_endpoint().port()),
        retry_(io),
        c_(std::move(c)) {
    accept_next();
  }
  ~listener() {
    stop();
    io_.restart();
    io_.poll();  // the aborted operations' handlers, which refer to this listener
  }
  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;

  /// The port it listens on.
  std::uint16_t port() const noexcept { return port_; }

  /// The error of an authenticated peer that ended the rendezvous, or null.
  std::exception_ptr failure() const noexcept { return failure_; }

  /// The refused connections, per source address, for the rendezvous's deadline message ("" if none).
  std::string refusals() const {
    std::string out;
    for (const auto& [address, r] : refused_)
      out += (out.empty() ? "" : "; ") + std::to_string(r.count) + " from " + address + " (first: " + r.first + ")";
    return out;
  }

  /// Closes the listening socket and every connection still in its handshake.
  void stop() noexcept {
    if (stopped_) return;
    stopped_ = true;
    boost::system::error_code ec;
    acceptor_.close(ec);
    retry_.cancel();
    for (const auto& weak : live_)
      if (const auto c = weak.lock()) close(*c);
    live_.clear();
  }

 private:
  /// One accepted connection in its handshake.
  struct incoming {
    incoming(tcp::socket s, const handshake_identity& me)
        : socket(std::move(s)), timer(socket.get_executor()), machine(me) {}
    tcp::socket socket;
    asio::steady_timer timer;
    handshake_machine machine;
    std::string address, who;
    std::uint32_t length = 0, out_length = 0;
    std::size_t received = 0;  // bytes of the peer so far
    byte_buffer in;
    bool timed_out = false, finished = false;
  };
  using ptr = std::shared_ptr<incoming>;

  static void close(incoming& c) noexcept {
    c.finished = true;
    boost::system::error_code ec;
    c.timer.cancel();
    c.socket.close(ec);
  }

  void accept_next() {
    // The peer's address as accept() reports it: getpeername() fails on a connection reset since.
    acceptor_.async_accept(peer_, [this](const boost::system::error_code& ec, tcp::socket s) {
      if (stopped_ || ec == asio::error::operation_aborted) return;
      if (ec) {  // e.g. out of descriptors: try again shortly instead of spinning
        retry_.expires_after(std::chrono::milliseconds(20));
        retry_.async_wait([this](const boost::system::error_code& e) {
          if (!e && !stopped_) accept_next();
        });
        return;
      }
      start(std::make_shared<incoming>(std::move(s), c_.me), peer_);
      accept_next();
    });
  }

  void start(const ptr& c, const tcp::endpoint& remote) {
    std::erase_if(live_, [](const std::weak_ptr<incoming>& w) { return w.expired(); });
    live_.push_back(c);
    c->address = remote.address().to_string();
    c->who = "the process at " + describe_endpoint(remote);
    c->timer.expires_at(std::min(distopt::detail::deadline_after(c_.handshake_timeout), c_.deadline));
    c->timer.async_wait([c](const boost::system::error_code& e) {
      if (e || c->finished) return;
      c->timed_out = true;
      boost::system::error_code ignored;
      c->socket.close(ignored);  // the pending read or write ends with operation_aborted
    });
    send(c);
  }

  /// Sends the machine's outgoing message; then refuses, or reads the peer's next message.
  void send(const ptr& c) {
    const auto bytes = c->machine.outgoing();
    c->out_length = static_cast<std::uint32_t>(bytes.size());
    const std::array<asio::const_buffer, 2> parts{asio::buffer(&c->out_length, sizeof c->out_length),
                                                  asio::buffer(bytes.data(), bytes.size())};
    asio::async_write(c->socket, parts, [this, c](const boost::system::error_code& ec, std::size_t) {
      if (stopped_) return;
      if (ec) return lost(c, ec);
      if (c->machine.refused()) return fail(c, c->machine.refusal());
      read(c, c->machine.max_incoming(), [this](const ptr& d) { take(d); });
    });
  }

  /// Reads one length-prefixed message of at most `limit` bytes into c->in, then calls next(c).
  template <class Next>
  void read(const ptr& c, std::size_t limit, Next next) {
    asio::async_read(c->socket, asio::buffer(&c->length, sizeof c->length),
                     [this, c, limit, next](const boost::system::error_code& ec, std::size_t n) {
                       c->received += n;
                       if (stopped_) return;
                       if (ec) return lost(c, ec);
                       if (c->length > limit)
                         return fail(c, c->who + " sent a length field of " + std::to_string(c->length) +
                                            " bytes where at most " + std::to_string(limit) +
                                            " can follow: it is not a distopt peer of this version");
                       c->in.resize(c->length);
                       asio::async_read(c->socket, asio::buffer(c->in.data(), c->in.size()),
                                        [this, c, next](const boost::system::error_code& e, std::size_t m) {
                                          c->received += m;
                                          if (stopped_) return;
                                          if (e) return lost(c, e);
                                          next(c);
                                        });
                     });
  }

  /// The peer's next handshake message.
  void take(const ptr& c) {
    bool complete = false;
    try {
      complete = c->machine.receive(c->in, c->who, [this](int r) { return check(r); });
    } catch (const transport_error& e) {
      return fail(c, e.what());
    }
    if (!complete) return send(c);
    if (c_.follow_up) return read(c, max_handshake_message, [this](const ptr& d) { deliver(d, std::move(d->in)); });
    deliver(c, {});
  }

  std::string check(int r) {
    if (claimed_.contains(r))
      return "two processes claim rank " + std::to_string(r) + "; give each a distinct DISTOPT_RANK";
    auto why = c_.check_rank(r);
    if (why.empty()) claimed_.insert(r);
    return why;
  }

  void deliver(const ptr& c, byte_buffer follow_up) {
    c->finished = true;
    c->timer.cancel();
    try {
      c_.on_peer({c->machine.peer_rank(), std::move(c->socket), c->address, std::move(follow_up)});
    } catch (const transport_error&) {
      failure_ = std::current_exception();
    }
  }

  void lost(const ptr& c, const boost::system::error_code& ec) {
    if (c->timed_out)
      return fail(c, c->who + (c->received == 0 ? " sent nothing" : " sent " + std::to_string(c->received) + " bytes") +
                         " and did not complete the handshake within " + std::to_string(c_.handshake_timeout.count()) +
                         " ms (tcp_options.handshake_timeout)");
    fail(c, c->who + " closed the connection during the handshake, after " + std::to_string(c->received) + " bytes (" +
                ec.message() + ")");
  }

  /// Ends a connection: a stranger's is refused and noted, an authenticated peer's ends the rendezvous.
  void fail(const ptr& c, std::string reason) {
    close(*c);
    constexpr std::string_view prefix = "tcp transport: ";
    if (c->machine.authenticated()) {
      failure_ =
          std::make_exception_ptr(transport_error(reason.starts_with(prefix) ? reason : std::string(prefix) + reason));
      return;
    }
    if (reason.starts_with(prefix)) reason.erase(0, prefix.size());
    auto& r = refused_[c->address];
    if (r.count++ == 0) {
      r.first = reason;
      if (c_.note)
        c_.note("tcp transport: rank " + std::to_string(c_.me.rank) + " refused a connection from " + c->address +
                " during the rendezvous and goes on waiting for its peers (further refusals of that address are "
                "not reported): " +
                reason);
    }
  }

  struct refusal {
    std::size_t count = 0;
    std::string first;
  };

  asio::io_context& io_;
  tcp::acceptor acceptor_;
  std::uint16_t port_;
  tcp::endpoint peer_;  // of the connection being accepted
  asio::steady_timer retry_;
  config c_;
  std::vector<std::weak_ptr<incoming>> live_;
  std::map<std::string, refusal> refused_;
  std::set<int> claimed_;
  std::exception_ptr failure_;
  bool stopped_ = false;
};

}  // namespace distopt::detail::tcp
