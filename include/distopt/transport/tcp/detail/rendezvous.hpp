#pragma once
// The TCP transport's rendezvous on Boost.Asio: timed connect, accept, and
// length-prefixed handshake messages, each bounded by one deadline (Asio's
// synchronous calls have none, so every operation is started asynchronously and
// the io_context is run until the deadline; on expiry the operation is cancelled).
// Include distopt/transport/tcp.hpp, not this header.
//
//   detail::tcp::timed_io io;
//   detail::tcp::channel ch(io, io.connect(host, port, deadline, "rank 0"), deadline, "rank 0");
//   ch.write(bytes); ch.read(reply);

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/transport/tcp/detail/socket.hpp"

namespace distopt::detail::tcp {

namespace asio = boost::asio;
using asio::ip::tcp;

/// Largest handshake message accepted (the endpoint table of a large world fits easily).
inline constexpr std::size_t max_handshake_message = std::size_t{1} << 20;

inline std::string describe_endpoint(const tcp::endpoint& e) {
  return e.address().to_string() + ":" + std::to_string(e.port());
}

/// Runs single asynchronous operations to completion or a deadline.
class timed_io {
 public:
  asio::io_context& context() noexcept { return io_; }

  /// Starts `start(handler)` and runs until it completes or `deadline` passes; on expiry
  /// calls `cancel()`, drains the aborted operation and returns asio::error::timed_out.
  template <class Start, class Cancel>
  boost::system::error_code run(Start&& start, Cancel&& cancel, clock::time_point deadline) {
    std::optional<boost::system::error_code> result;
    start([&result](const boost::system::error_code& ec, auto&&...) { result = ec; });
    io_.restart();
    io_.run_until(deadline);
    if (result) return *result;
    cancel();
    io_.restart();
    io_.run();  // the cancelled operation's handler
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
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // not listening yet: retry
    }
  }

  /// Accepts one connection on `acceptor` before `deadline`.
  tcp::socket accept(tcp::acceptor& acceptor, clock::time_point deadline, const std::string& what) {
    tcp::socket s(io_);
    const auto ec =
        run([&](auto handler) { acceptor.async_accept(s, handler); }, [&] { acceptor.cancel(); }, deadline);
    if (ec)
      throw transport_error("tcp transport: " + what + " did not connect to " + describe_endpoint(acceptor.local_endpoint()) +
                            " before the deadline (tcp_options.connect_timeout): " + ec.message() +
                            "; did every rank start, with the same DISTOPT_COORDINATOR?");
    return s;
  }

 private:
  asio::io_context io_;
};

/// A connection during the rendezvous: length-prefixed messages, each bounded by the deadline.
class channel {
 public:
  channel(timed_io& io, tcp::socket socket, clock::time_point deadline, std::string who)
      : io_(&io), socket_(std::move(socket)), deadline_(deadline), who_(std::move(who)) {}

  const std::string& who() const noexcept { return who_; }
  void set_who(std::string who) { who_ = std::move(who); }
  tcp::socket& socket() noexcept { return socket_; }

  void write(std::span<const std::byte> bytes) {
    const auto len = static_cast<std::uint32_t>(bytes.size());
    const std::array<asio::const_buffer, 2> parts{asio::buffer(&len, sizeof len), asio::buffer(bytes.data(), bytes.size())};
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

}  // namespace distopt::detail::tcp
