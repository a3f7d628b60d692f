#pragma once
// Bodies of tcp_transport (declared in distopt/transport/tcp.hpp, which includes
// this file; include that header, not this one).

#include "distopt/transport/tcp.hpp"

#include <array>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <optional>
#include <utility>

#include <fcntl.h>
#include <sys/socket.h>

#include "distopt/core/deadline.hpp"
#include "distopt/transport/thread.hpp"  // detail::describe_tag

namespace distopt {
namespace detail::tcp {

/// Testing and fuzzing hook: the descriptor of the connection to `peer`, to write
/// raw (possibly malformed) bytes on it. Not for use outside tests.
struct raw_access {
  static int descriptor(tcp_transport& t, int peer) { return t.links_[static_cast<std::size_t>(peer)]->fd.get(); }
};

inline std::pair<std::string, std::uint16_t> parse_host_port(const std::string& address) {
  const auto bad = [&] {
    return config_error("tcp transport: coordinator address '" + address +
                        "' is not host:port (e.g. 127.0.0.1:29500); set DISTOPT_COORDINATOR or "
                        "tcp_options.coordinator");
  };
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) throw bad();
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned port = 0;
  const char* first = address.data() + colon + 1;
  const char* last = address.data() + address.size();
  const auto [end, ec] = std::from_chars(first, last, port);
  if (ec != std::errc{} || end != last || first == last || port > 65535) throw bad();
  return {host, static_cast<std::uint16_t>(port)};
}

inline std::optional<std::string> environment(const char* name) {
  const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read once at start-up
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

inline long long environment_integer(const char* name, const char* meaning) {
  const auto v = environment(name);
  if (!v)
    throw config_error(std::string("tcp transport: environment variable ") + name + " is not set; it must hold " +
                       meaning + " (scripts/distopt-launch sets it)");
  long long out = 0;
  const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc{} || end != v->data() + v->size())
    throw config_error(std::string("tcp transport: environment variable ") + name + "='" + *v +
                       "' is not an integer; it must hold " + meaning);
  return out;
}

}  // namespace detail::tcp

inline tcp_options tcp_transport::options_from_environment() {
  using namespace detail::tcp;
  tcp_options o;
  o.rank = static_cast<int>(environment_integer("DISTOPT_RANK", "this process's rank, 0..world size-1"));
  o.size = static_cast<int>(environment_integer("DISTOPT_WORLD_SIZE", "the number of processes"));
  const auto coordinator = environment("DISTOPT_COORDINATOR");
  if (!coordinator)
    throw config_error(
        "tcp transport: environment variable DISTOPT_COORDINATOR is not set; it must hold rank 0's host:port "
        "(scripts/distopt-launch sets it)");
  o.coordinator = *coordinator;
  const auto token = environment("DISTOPT_TOKEN");
  if (!token)
    throw config_error(
        "tcp transport: environment variable DISTOPT_TOKEN is not set; every rank needs the same secret token "
        "(scripts/distopt-launch makes a random one)");
  o.token = *token;
  if (const auto bind = environment("DISTOPT_BIND")) o.bind_address = *bind;
  if (environment("DISTOPT_SOCKET_BUFFER"))
    o.socket_buffer_bytes =
        static_cast<int>(environment_integer("DISTOPT_SOCKET_BUFFER", "socket buffer bytes (0: kernel autotuning)"));
  if (environment("DISTOPT_TIMEOUT_MS"))
    o.timeout = std::chrono::milliseconds(environment_integer("DISTOPT_TIMEOUT_MS", "a deadline in milliseconds"));
  return o;
}

inline tcp_transport::tcp_transport(tcp_options o)
    : options_(std::move(o)), rank_(options_.rank), size_(options_.size) {
  if (size_ < 1)
    throw config_error("tcp transport: world size must be >= 1, got " + std::to_string(size_) +
                       " (tcp_options.size / DISTOPT_WORLD_SIZE)");
  if (rank_ < 0 || rank_ >= size_)
    throw config_error("tcp transport: rank " + std::to_string(rank_) + " is outside 0.." + std::to_string(size_ - 1) +
                       " (tcp_options.rank / DISTOPT_RANK)");
  if (options_.token.empty())
    throw config_error(
        "tcp transport: tcp_options.token is empty; every rank needs the same secret token (DISTOPT_TOKEN; "
        "scripts/distopt-launch makes a random one)");
  if (options_.timeout.count() <= 0 || options_.connect_timeout.count() <= 0 || options_.handshake_timeout.count() <= 0)
    throw config_error("tcp transport: tcp_options.timeout, connect_timeout and handshake_timeout must be > 0 ms");
  if (options_.max_frame_bytes == 0) throw config_error("tcp transport: tcp_options.max_frame_bytes must be > 0");
  (void)detail::tcp::parse_host_port(options_.coordinator);  // refuse a bad address on every rank, early
  boost::system::error_code ec;
  (void)boost::asio::ip::make_address(options_.bind_address, ec);
  if (ec)
    throw config_error("tcp transport: bind address '" + options_.bind_address +
                       "' is not an IP address (tcp_options.bind_address / DISTOPT_BIND), e.g. 127.0.0.1");
  links_.resize(static_cast<std::size_t>(size_));
  rendezvous();
  try {
    for (int p = 0; p < size_; ++p)
      if (p != rank_) links_[static_cast<std::size_t>(p)]->reader = std::thread([this, p] { read_loop(p); });
  } catch (...) {  // no thread left running: stop the started ones
    close_links();
    throw;
  }
}

inline tcp_transport::~tcp_transport() { close_links(); }

inline void tcp_transport::rendezvous() {
  namespace t = detail::tcp;
  if (size_ == 1) return;
  const auto [host, port] = t::parse_host_port(options_.coordinator);
  t::timed_io io;
  const auto deadline = distopt::detail::deadline_after(options_.connect_timeout);
  const t::handshake_identity me{rank_, size_, options_.token, options_.library_version, &options_.run};

  // Ranks 0..size-2 accept the ranks above them, from the start (rank 0: everyone, with the port
  // each listens on; the table waits until all have joined), concurrently with what follows.
  std::vector<t::peer_address> table(static_cast<std::size_t>(size_));                 // rank 0's
  std::vector<std::optional<t::tcp::socket>> joined(static_cast<std::size_t>(size_));  // rank 0's
  std::optional<t::listener> incoming;
  if (rank_ < size_ - 1) {
    const auto bind_ip = boost::asio::ip::make_address(options_.bind_address);
    const t::tcp::endpoint where(bind_ip, rank_ == 0 ? port : std::uint16_t{0});
    t::tcp::acceptor acceptor(io.context());
    boost::system::error_code ec;
    acceptor.open(where.protocol(), ec);
    if (!ec) acceptor.set_option(t::tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor.bind(where, ec);
    if (!ec) acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
    if (ec)
      throw transport_error(
          "tcp transport: rank " + std::to_string(rank_) + " cannot listen on " + t::describe_endpoint(where) + ": " +
          ec.message() + (rank_ == 0 && port != 0 ? "; is the port in use? pick another in DISTOPT_COORDINATOR" : ""));
    if (options_.on_listening) options_.on_listening(acceptor.local_endpoint().port());
    auto note = options_.on_refused;
    if (!note) note = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    incoming.emplace(
        io.context(), std::move(acceptor),
        t::listener::config{
            .me = me,
            .handshake_timeout = options_.handshake_timeout,
            .deadline = deadline,
            .follow_up = rank_ == 0,
            .check_rank = [this](int r) -> std::string {
              if (r > rank_ && r < size_) return {};
              return "rank " + std::to_string(r) + " should not connect to rank " + std::to_string(rank_) +
                     " (only ranks " + std::to_string(rank_ + 1) + ".." + std::to_string(size_ - 1) + " do)";
            },
            .on_peer =
                [&](t::accepted_peer&& p) {
                  if (rank_ != 0) return adopt(p.rank, std::move(p.socket));
                  t::message_reader reader(p.follow_up, name_of(p.rank));
                  const std::uint32_t listens_on = reader.u32();
                  reader.finish();
                  if (listens_on > 65535 || (listens_on != 0) != (p.rank < size_ - 1))
                    throw transport_error("tcp transport: " + name_of(p.rank) + " reported listening port " +
                                          std::to_string(listens_on) + "; it is not a distopt rank of this version");
                  table[static_cast<std::size_t>(p.rank)] = {p.address, static_cast<std::uint16_t>(listens_on)};
                  joined[static_cast<std::size_t>(p.rank)].emplace(std::move(p.socket));
                },
            .note = std::move(note)});
  }
  // Waits until every rank above this one has connected (to rank 0: joined), serving the listener.
  const auto accept_the_rest = [&] {
    const auto missing = [&] {
      std::string ranks;
      for (int r = rank_ + 1; r < size_; ++r)
        if (rank_ == 0 ? !joined[static_cast<std::size_t>(r)] : !links_[static_cast<std::size_t>(r)])
          ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
      return ranks;
    };
    io.run_until([&] { return incoming->failure() || missing().empty(); }, deadline);
    if (incoming->failure()) std::rethrow_exception(incoming->failure());
    if (const auto ranks = missing(); !ranks.empty()) {
      const auto refused = incoming->refusals();
      throw transport_error("tcp transport: rank " + std::to_string(rank_) + " waited " +
                            std::to_string(options_.connect_timeout.count()) +
                            " ms (tcp_options.connect_timeout) for rank(s) " + ranks + " of " + std::to_string(size_) +
                            " to connect, in vain; did every rank start, with the same DISTOPT_COORDINATOR and "
                            "DISTOPT_TOKEN?" +
                            (refused.empty() ? std::string() : " Connections refused meanwhile: " + refused));
    }
    incoming->stop();  // the mesh is complete: nothing listens any more
  };
  byte_buffer in, out;

  if (rank_ == 0) {
    accept_the_rest();
    t::encode_address_table(table, out);
    for (int r = 1; r < size_; ++r) {
      t::channel ch(io, std::move(*joined[static_cast<std::size_t>(r)]), deadline, name_of(r));
      ch.write(out);
      adopt(r, std::move(ch.socket()));
    }
    return;
  }

  t::channel coordinator(io, io.connect(host, port, deadline, "rank 0 (the coordinator)"), deadline,
                         "rank 0 at " + options_.coordinator);
  t::handshake(coordinator, me,
               [](int r) -> std::string { return r == 0 ? "" : "the coordinator claims rank " + std::to_string(r); });
  t::message_writer(out).u32(incoming ? incoming->port() : 0u);
  coordinator.write(out);
  coordinator.read(in);
  const auto peers = t::decode_address_table(in, size_, coordinator.who());
  adopt(0, std::move(coordinator.socket()));
  // Connect to the lower ranks, while the listener accepts the higher ones: connections only go
  // downwards, so no two ranks wait on each other.
  for (int j = 1; j < rank_; ++j) {
    const auto& [peer_host, peer_port] = peers[static_cast<std::size_t>(j)];
    const std::string who = name_of(j) + " at " + peer_host + ":" + std::to_string(peer_port);
    t::channel ch(io, io.connect(peer_host, peer_port, deadline, who), deadline, who);
    t::handshake(ch, me, [j](int r) -> std::string {
      return r == j ? "" : "expected rank " + std::to_string(j) + " at that address, found rank " + std::to_string(r);
    });
    adopt(j, std::move(ch.socket()));
  }
  if (incoming) accept_the_rest();
}

inline void tcp_transport::adopt(int peer, detail::tcp::tcp::socket socket) {
  boost::system::error_code ec;
  socket.set_option(detail::tcp::tcp::no_delay(true), ec);  // latency: frames go out at once
  if (options_.socket_buffer_bytes > 0) {
    socket.set_option(boost::asio::socket_base::send_buffer_size(options_.socket_buffer_bytes), ec);
    socket.set_option(boost::asio::socket_base::receive_buffer_size(options_.socket_buffer_bytes), ec);
  }
  auto l = std::make_unique<link>();
  l->fd = detail::tcp::socket_fd(socket.release(ec));
  if (ec || l->fd.get() < 0)
    throw transport_error("tcp transport: cannot take over the connection to " + name_of(peer) + ": " + ec.message());
  // Non-blocking: writes wait in poll() with a deadline, reads poll so a closing transport stops them.
  const int flags = ::fcntl(l->fd.get(), F_GETFL, 0);
  if (flags < 0 || ::fcntl(l->fd.get(), F_SETFL, flags | O_NONBLOCK) < 0)
    throw transport_error("tcp transport: cannot make the connection to " + name_of(peer) +
                          " non-blocking: " + detail::tcp::errno_text(errno));
  links_[static_cast<std::size_t>(peer)] = std::move(l);
}

inline void tcp_transport::mark(int peer, link_state state, std::string reason) {
  {
    std::lock_guard lock(mutex_);
    link& l = *links_[static_cast<std::size_t>(peer)];
    if (l.state != link_state::open) return;  // the first reason stands
    l.state = state;
    l.reason = std::move(reason);
  }
  arrived_.notify_all();
}

inline void tcp_transport::read_loop(int peer) {
  namespace t = detail::tcp;
  link& l = *links_[static_cast<std::size_t>(peer)];
  const int fd = l.fd.get();
  const std::string from = name_of(peer);
  // Fails the link. A refused frame is said to the peer, best effort, so that its error points
  // here rather than at a lost connection: before mark() (once woken, this rank may close its
  // transport, shutting the socket) and under the send lock until the link is failed (no other
  // goodbye, and no frame, follows it). Not while a send holds the lock (a goodbye cannot go
  // inside its frame, and waiting could wait for the peer, which nobody reads any more), nor
  // after another failure of the link.
  auto fail = [&](std::string reason, bool refused_frame = false) {
    std::unique_lock send_lock(l.send_mutex, std::defer_lock);
    const auto still_open = [&] {
      std::lock_guard lock(mutex_);
      return l.state == link_state::open;
    };
    if (refused_frame && send_lock.try_lock() && still_open())
      (void)t::write_all(
          fd, t::encode_header(t::frame_kind::goodbye, static_cast<std::uint32_t>(t::goodbye_code::refused), {}), {},
          distopt::detail::deadline_after(
              std::min<std::chrono::milliseconds>(options_.timeout, std::chrono::seconds(1))));
    mark(peer, link_state::failed, std::move(reason));
    ::shutdown(fd, SHUT_RDWR);  // the peer sees the connection end instead of waiting on a broken stream
  };
  const auto refuse = [&](std::string reason) { fail(std::move(reason), true); };
  std::array<std::byte, t::header_bytes> header{};
  for (;;) {
    auto r = t::read_exact(fd, header.data(), header.size(), stopping_);
    if (r.status == t::io_status::stopped) return;
    if (r.status != t::io_status::ok) {
      if (r.done != 0)
        return fail("the connection to " + from + " ended inside a frame header (" + std::to_string(r.done) +
                        " of 24 bytes: truncated frame; " + t::errno_text(r.error) + ")",
                    r.error == 0);  // a clean end: the peer can still read the refusal
      std::optional<t::goodbye_code> goodbye;
      {
        std::lock_guard lock(mutex_);
        goodbye = l.goodbye;
      }
      if (goodbye == t::goodbye_code::returned)
        return mark(peer, link_state::closed,
                    from +
                        " has closed its transport (it returned) and sends nothing more; every rank must take "
                        "part in the same communication rounds");
      if (goodbye == t::goodbye_code::failing)
        return mark(
            peer, link_state::closed,
            from + " closed its transport while failing (an exception was propagating there); see its own error");
      if (goodbye == t::goodbye_code::refused)
        return mark(peer, link_state::failed,
                    from + " refused a frame rank " + std::to_string(rank_) +
                        " sent it (malformed, corrupted on the way, or longer than its tcp_options.max_frame_bytes; "
                        "its own error says which) and closed the connection");
      return mark(peer, link_state::failed,
                  "lost the connection to " + from + " without a goodbye (" + t::errno_text(r.error) +
                      "): its process ended or the network failed");
    }
    t::frame_header h;
    byte_buffer payload;
    try {
      h = t::decode_header(header, options_.max_frame_bytes, from);
      {
        std::lock_guard lock(mutex_);
        if (!pool_.empty()) {
          payload = std::move(pool_.back());
          pool_.pop_back();
        }
      }
      payload.resize(static_cast<std::size_t>(h.length));
    } catch (const std::bad_alloc&) {
      return fail("no memory for a " + std::to_string(h.length) + "-byte message from " + from +
                  " (within tcp_options.max_frame_bytes)");
    } catch (const std::exception& e) {  // bad header
      return refuse(e.what());
    }
    // The checksum runs over each piece as it lands, in cache, while the next is on its way.
    t::checksum_check check(header);
    r = t::read_exact(fd, payload.data(), payload.size(), stopping_, [&](const std::byte* p, std::size_t n) {
      check.update({p, n});
    });
    if (r.status == t::io_status::stopped) return;
    if (r.status != t::io_status::ok)
      return fail("the connection to " + from + " ended inside a frame: " + std::to_string(r.done) + " of " +
                      std::to_string(h.length) + " payload bytes arrived (truncated frame; " + t::errno_text(r.error) +
                      ")",
                  r.error == 0);
    try {
      check.verify(from);
    } catch (const transport_error& e) {
      return refuse(e.what());
    }
    try {  // an exception must not leave this thread: it would end the process
      std::lock_guard lock(mutex_);
      if (h.kind == t::frame_kind::goodbye) {
        l.goodbye = h.tag <= static_cast<std::uint32_t>(t::goodbye_code::refused) ? static_cast<t::goodbye_code>(h.tag)
                                                                                  : t::goodbye_code::failing;
        continue;
      }
      queues_[key(peer, tag{h.tag})].push_back(std::move(payload));
    } catch (const std::bad_alloc&) {
      return fail("no memory to queue a " + std::to_string(h.length) + "-byte message from " + from +
                  " (this rank is not receiving what its peers send)");
    }
    arrived_.notify_all();
  }
}

inline void tcp_transport::check_peer(int peer, const char* what) const {
  if (peer < 0 || peer >= size_)
    throw config_error("tcp transport: rank " + std::to_string(rank_) + " cannot " + what + " rank " +
                       std::to_string(peer) + ": ranks are 0.." + std::to_string(size_ - 1));
}

inline bool tcp_transport::take(int peer, tag tg, byte_buffer& out) {
  auto it = queues_.find(key(peer, tg));
  if (it == queues_.end() || it->second.empty()) return false;
  byte_buffer spent = std::move(out);
  out = std::move(it->second.front());
  it->second.pop_front();
  if (spent.capacity() != 0 && pool_.size() < max_pooled) pool_.push_back(std::move(spent));
  return true;
}

inline void tcp_transport::throw_unusable(int peer, tag tg) {
  // A peer that closed while failing usually failed because of a third rank; the links this
  // rank saw fail name that root cause, so the message carries them too.
  std::string also;
  for (std::size_t other = 0; other < links_.size(); ++other)
    if (static_cast<int>(other) != peer && links_[other] && links_[other]->state == link_state::failed)
      also += "; also, " + links_[other]->reason;
  throw transport_error("tcp transport: rank " + std::to_string(rank_) + " cannot exchange messages with " +
                        name_of(peer) + " (" + detail::describe_tag(tg) +
                        "): " + links_[static_cast<std::size_t>(peer)]->reason + also);
}

inline void tcp_transport::send(int peer, tag tg, std::span<const std::byte> bytes) {
  namespace t = detail::tcp;
  check_peer(peer, "send to");
  if (bytes.size() > options_.max_frame_bytes)
    throw config_error("tcp transport: a message of " + std::to_string(bytes.size()) +
                       " bytes exceeds tcp_options.max_frame_bytes (" + std::to_string(options_.max_frame_bytes) +
                       "); raise it on every rank or send smaller messages");
  if (peer == rank_) {  // to itself: straight into its own queue
    {
      std::lock_guard lock(mutex_);
      byte_buffer copy;
      if (!pool_.empty()) {
        copy = std::move(pool_.back());
        pool_.pop_back();
      }
      copy.resize(bytes.size());
      if (!bytes.empty()) std::memcpy(copy.data(), bytes.data(), bytes.size());
      queues_[key(peer, tg)].push_back(std::move(copy));
    }
    arrived_.notify_all();
    return;
  }
  link& l = *links_[static_cast<std::size_t>(peer)];
  {
    std::lock_guard lock(mutex_);
    if (l.state != link_state::open) throw_unusable(peer, tg);
  }
  const auto header = t::encode_header(t::frame_kind::data, static_cast<std::uint32_t>(tg), bytes);
  {
    // Held until the link is marked failed: nothing (a refusal's goodbye) may follow a partial frame.
    std::lock_guard send_lock(l.send_mutex);
    const t::io_result r = t::write_all(l.fd.get(), header, bytes, distopt::detail::deadline_after(options_.timeout));
    if (r.status == t::io_status::ok) return;
    if (r.status == t::io_status::timed_out)
      mark(peer, link_state::failed,
           "a send of " + std::to_string(bytes.size()) + " bytes to " + name_of(peer) + " stayed blocked for " +
               std::to_string(options_.timeout.count()) + " ms: that rank is not reading (stuck or stopped)");
    else
      mark(peer, link_state::failed,
           "lost the connection to " + name_of(peer) + " while sending (" + t::errno_text(r.error) +
               "): its process ended or the network failed");
    ::shutdown(l.fd.get(), SHUT_RDWR);  // a partly written frame leaves the stream unusable
  }
  std::lock_guard lock(mutex_);
  throw_unusable(peer, tg);
}

inline void tcp_transport::recv(int peer, tag tg, byte_buffer& out, std::chrono::milliseconds timeout) {
  check_peer(peer, "receive from");
  const auto deadline = distopt::detail::deadline_after(timeout);
  std::unique_lock lock(mutex_);
  for (;;) {
    if (take(peer, tg, out)) return;
    if (peer != rank_ && links_[static_cast<std::size_t>(peer)]->state != link_state::open) throw_unusable(peer, tg);
    if (arrived_.wait_until(lock, deadline) == std::cv_status::timeout) {
      if (take(peer, tg, out)) return;
      if (peer != rank_ && links_[static_cast<std::size_t>(peer)]->state != link_state::open) throw_unusable(peer, tg);
      throw transport_error("tcp transport: rank " + std::to_string(rank_) + " waited " +
                            std::to_string(timeout.count()) + " ms for a message from " + name_of(peer) + " (" +
                            detail::describe_tag(tg) +
                            ") and none came; the peer is stuck or slow (raise tcp_options.timeout or "
                            "DISTOPT_TIMEOUT_MS if it is only slow)");
    }
  }
}

inline bool tcp_transport::try_recv(int peer, tag tg, byte_buffer& out) {
  check_peer(peer, "receive from");
  std::lock_guard lock(mutex_);
  if (take(peer, tg, out)) return true;
  // A peer that closed on purpose just has nothing more: false, as for any empty queue.
  if (peer != rank_ && links_[static_cast<std::size_t>(peer)]->state == link_state::failed) throw_unusable(peer, tg);
  return false;
}

inline void tcp_transport::close_links() noexcept {
  namespace t = detail::tcp;
  // A goodbye tells the peers this rank closes on purpose (and whether it is failing),
  // then the write side is shut. Closing a socket that holds unread input resets the
  // connection, which can destroy data this rank sent but the peer has not yet
  // received; so first wait (at most 5 s) until the peers have acknowledged it all,
  // while the reader threads keep draining the input.
  const auto code =
      static_cast<std::uint32_t>(std::uncaught_exceptions() > 0 ? t::goodbye_code::failing : t::goodbye_code::returned);
  const auto deadline =
      distopt::detail::deadline_after(std::min<std::chrono::milliseconds>(options_.timeout, std::chrono::seconds(5)));
  const auto goodbye = t::encode_header(t::frame_kind::goodbye, code, {});
  for (auto& l : links_) {
    if (!l || !l->reader.joinable()) continue;
    std::lock_guard send_lock(l->send_mutex);  // before the state: a refusal's goodbye may be going out
    {
      std::lock_guard lock(mutex_);
      if (l->state == link_state::failed) continue;
    }
    (void)t::write_all(l->fd.get(), goodbye, {}, deadline);
    ::shutdown(l->fd.get(), SHUT_WR);
  }
  for (auto& l : links_) {
    if (!l || !l->reader.joinable()) continue;
    while (t::delivery_pending(l->fd.get()) && t::clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  stopping_.store(true, std::memory_order_release);
  for (auto& l : links_)
    if (l) ::shutdown(l->fd.get(), SHUT_RDWR);  // wakes the readers
  for (auto& l : links_)
    if (l && l->reader.joinable()) l->reader.join();
}

}  // namespace distopt
