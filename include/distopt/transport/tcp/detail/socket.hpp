#pragma once
// The TCP transport's data path on a connected socket (POSIX calls on the
// descriptor that Asio hands over after the handshake): a gathered write with a
// deadline, and an exact read that a closing transport can interrupt. Asio's
// synchronous operations have no deadlines, and an Asio socket may not be used by
// a reader thread and a writer thread at once; plain calls on a non-blocking
// descriptor have neither problem. Include distopt/transport/tcp.hpp, not this header.
//
//   detail::tcp::socket_fd fd(released_descriptor);
//   auto r = detail::tcp::write_all(fd.get(), header, payload, deadline);   // r.status
//   auto s = detail::tcp::read_exact(fd.get(), buffer, n, stopping);
//   read_exact(fd.get(), buffer, n, stopping, [&](const std::byte* p, std::size_t k) { check(p, k); });

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <utility>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(__linux__)
#include <linux/sockios.h>
#endif

namespace distopt::detail::tcp {

using clock = std::chrono::steady_clock;

/// Owns a socket descriptor; closes it on destruction.
class socket_fd {
 public:
  socket_fd() noexcept = default;
  explicit socket_fd(int fd) noexcept : fd_(fd) {}
  socket_fd(socket_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  socket_fd& operator=(socket_fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~socket_fd() { reset(); }
  int get() const noexcept { return fd_; }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

enum class io_status {
  ok,
  closed,     ///< the peer closed the connection (end of stream, reset or broken pipe)
  timed_out,  ///< the deadline passed
  stopped,    ///< this transport is closing
  failed,     ///< another socket error (errno in io_result::error)
};

struct io_result {
  io_status status = io_status::ok;
  std::size_t done = 0;  ///< bytes transferred
  int error = 0;         ///< errno for failed and closed
};

inline std::string errno_text(int e) { return e == 0 ? std::string("end of stream") : std::string(std::strerror(e)); }

inline bool is_disconnect(int e) noexcept { return e == EPIPE || e == ECONNRESET || e == ENOTCONN || e == ESHUTDOWN; }

/// Milliseconds until `deadline` for poll(), at least 0 and at most `cap`.
inline int poll_ms(clock::time_point deadline, int cap) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now()).count();
  return static_cast<int>(left < 0 ? 0 : (left > cap ? cap : left));
}

/// Writes `a` then `b` in full (one gathered sendmsg, no copy), waiting at most until `deadline`.
inline io_result write_all(int fd, std::span<const std::byte> a, std::span<const std::byte> b,
                           clock::time_point deadline) {
  iovec iov[2] = {{const_cast<std::byte*>(a.data()), a.size()}, {const_cast<std::byte*>(b.data()), b.size()}};
  int first = a.empty() ? 1 : 0;
  std::size_t done = 0;
  const std::size_t total = a.size() + b.size();
  while (done < total) {
    msghdr msg{};
    msg.msg_iov = iov + first;
    msg.msg_iovlen = static_cast<decltype(msg.msg_iovlen)>(2 - first);
    const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      auto left = static_cast<std::size_t>(n);
      while (left > 0) {  // advance the iovecs past what was sent
        const std::size_t step = left < iov[first].iov_len ? left : iov[first].iov_len;
        iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + step;
        iov[first].iov_len -= step;
        left -= step;
        if (iov[first].iov_len == 0 && first == 0) first = 1;
      }
      continue;
    }
    const int e = n < 0 ? errno : 0;
    if (n < 0 && e == EINTR) continue;
    if (n < 0 && (e == EAGAIN || e == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      const int ms = poll_ms(deadline, 1000);
      if (ms == 0 && clock::now() >= deadline) return {io_status::timed_out, done, 0};
      if (::poll(&p, 1, ms) < 0 && errno != EINTR) return {io_status::failed, done, errno};
      continue;
    }
    return {is_disconnect(e) ? io_status::closed : io_status::failed, done, e};
  }
  return {io_status::ok, done, 0};
}

/// Reads exactly n bytes into p. Waits as long as it takes, checking `stopping`
/// every 100 ms (a closing transport also shuts the socket down, which wakes it at once).
/// landed(first, count) sees each piece as it arrives, while it is in cache.
template <class Landed>
io_result read_exact(int fd, std::byte* p, std::size_t n, const std::atomic<bool>& stopping, Landed&& landed) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t got = ::recv(fd, p + done, n - done, 0);
    if (got > 0) {
      landed(p + done, static_cast<std::size_t>(got));
      done += static_cast<std::size_t>(got);
      continue;
    }
    if (got == 0) return {stopping.load(std::memory_order_acquire) ? io_status::stopped : io_status::closed, done, 0};
    const int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      if (stopping.load(std::memory_order_acquire)) return {io_status::stopped, done, 0};
      pollfd pf{fd, POLLIN, 0};
      if (::poll(&pf, 1, 100) < 0 && errno != EINTR) return {io_status::failed, done, errno};
      continue;
    }
    if (stopping.load(std::memory_order_acquire)) return {io_status::stopped, done, e};
    return {is_disconnect(e) ? io_status::closed : io_status::failed, done, e};
  }
  return {io_status::ok, done, 0};
}
inline io_result read_exact(int fd, std::byte* p, std::size_t n, const std::atomic<bool>& stopping) {
  return read_exact(fd, p, n, stopping, [](const std::byte*, std::size_t) {});
}

/// True while bytes (or the FIN) written on `fd` are not yet acknowledged by the
/// peer, on a connection that can still deliver them (not reset). Linux only;
/// elsewhere false, and closing just does not wait.
inline bool delivery_pending(int fd) noexcept {
#if defined(__linux__)
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 || info.tcpi_state == TCP_CLOSE) return false;
  int unacknowledged = 0;
  return ::ioctl(fd, SIOCOUTQ, &unacknowledged) == 0 && unacknowledged > 0;
#else
  (void)fd;
  return false;
#endif
}

}  // namespace distopt::detail::tcp
