// bench/compare/allreduce_tcp: distopt's ring allreduce over tcp_transport, one
// process per rank, run by scripts/distopt-launch (bench/compare/allreduce_tcp.py runs
// it next to Open MPI over TCP and PyTorch's gloo and prints the table). Rank 0 prints
//   rtt <microseconds>                 8-byte ping-pong round trip through the transport
//   raw_rtt <microseconds>             the same on a plain blocking socket (TCP_NODELAY)
//   floor <bytes> <microseconds>       half a ping-pong of <bytes> on that socket: moving
//                                      them one way on one stream, which is what a 2-rank
//                                      allreduce must at least do (each rank sends and
//                                      receives (n-1)/n * 2 * bytes = bytes)
//   exchange <bytes> <microseconds>    <bytes> each way at once on that socket
//   allreduce <bytes> <microseconds per call>   for 4 KiB, 64 KiB, 1 MiB, 16 MiB, 64 MiB
//   cpu <bytes> <microseconds per call>         rank 0's CPU time (all threads, user + system)
// Each size: 2 warm-up calls, then as many timed calls as fit in ~--seconds (at least 5).
// --sizes a,b,... replaces the sizes (bytes); --repeat k runs the allreduce sizes k times;
// --segment F sets the ring's segment (floats); --floor 0 skips the round trips and the floor (to profile the allreduce
// alone).
//
//   scripts/distopt-launch -n 2 -- build/bench/allreduce_tcp [--seconds S] [--sizes B,...]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <distopt/collective/ring_allreduce.hpp>
#include <distopt/transport/tcp.hpp>

namespace {

using clock_type = std::chrono::steady_clock;

double cpu_seconds() {  // this process's, all threads, user + system
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  const auto seconds = [](timeval v) { return static_cast<double>(v.tv_sec) + static_cast<double>(v.tv_usec) * 1e-6; };
  return seconds(u.ru_utime) + seconds(u.ru_stime);
}

struct timing {
  double wall_us;  // per call
  double cpu_us;   // this process's CPU time per call
};

// Calls f as many times as fit in ~`seconds` (at least 5, after 2 warm-ups). Rank 0's
// estimate of the count is shared through `agree`, so every rank makes the same calls.
timing time_calls(double seconds, const std::function<void()>& f, const std::function<int(int)>& agree) {
  for (int i = 0; i < 2; ++i) f();
  const auto probe = clock_type::now();
  f();
  const double calls = seconds / std::max(1e-7, std::chrono::duration<double>(clock_type::now() - probe).count());
  const int n = agree(static_cast<int>(std::min(20000.0, std::max(5.0, calls))));
  const double cpu = cpu_seconds();
  const auto start = clock_type::now();
  for (int i = 0; i < n; ++i) f();
  return {std::chrono::duration<double, std::micro>(clock_type::now() - start).count() / n,
          (cpu_seconds() - cpu) * 1e6 / n};
}

void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
}

// A plain blocking loopback connection between ranks 0 and 1: rank 0 listens on an
// ephemeral port and tells rank 1 through the transport.
int raw_connection(distopt::tcp_transport& t) {
  const distopt::tag port_tag{2};
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int fd = -1;
  if (t.rank() == 0) {
    const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    check(listener >= 0 && ::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
              ::listen(listener, 1) == 0 && ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) == 0,
          "raw socket: listen");
    t.send(1, port_tag, std::as_bytes(std::span(&a.sin_port, 1)));
    fd = ::accept(listener, nullptr, nullptr);
    ::close(listener);
  } else {
    distopt::byte_buffer port;
    t.recv(0, port_tag, port);
    std::memcpy(&a.sin_port, port.data(), sizeof a.sin_port);
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    check(fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "raw socket: connect");
  }
  check(fd >= 0, "raw socket: accept");
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

void raw_send(int fd, const std::byte* p, std::size_t n) {
  for (std::size_t done = 0; done < n;) {
    const ssize_t k = ::send(fd, p + done, n - done, MSG_NOSIGNAL);
    check(k > 0, "raw socket: send");
    done += static_cast<std::size_t>(k);
  }
}

void raw_recv(int fd, std::byte* p, std::size_t n) {
  for (std::size_t done = 0; done < n;) {
    const ssize_t k = ::recv(fd, p + done, n - done, 0);
    check(k > 0, "raw socket: recv");
    done += static_cast<std::size_t>(k);
  }
}

// Sends n bytes and receives n bytes at once, in one thread: non-blocking calls, poll()
// for whichever direction can move.
void raw_exchange(int fd, const std::byte* out, std::byte* in, std::size_t n) {
  std::size_t sent = 0, got = 0;
  while (sent < n || got < n) {
    if (sent < n) {
      const ssize_t k = ::send(fd, out + sent, n - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      check(k > 0 || errno == EAGAIN, "raw socket: send");
      if (k > 0) sent += static_cast<std::size_t>(k);
    }
    if (got < n) {
      const ssize_t k = ::recv(fd, in + got, n - got, MSG_DONTWAIT);
      check(k > 0 || (k < 0 && errno == EAGAIN), "raw socket: recv");
      if (k > 0) got += static_cast<std::size_t>(k);
    }
    pollfd p{fd, static_cast<short>((sent < n ? POLLOUT : 0) | (got < n ? POLLIN : 0)), 0};
    if (sent < n || got < n) ::poll(&p, 1, 1000);
  }
}

std::vector<std::size_t> parse_sizes(const std::string& s) {
  std::vector<std::size_t> out;
  for (std::size_t at = 0; at < s.size();) {
    const std::size_t comma = std::min(s.find(',', at), s.size());
    out.push_back(std::stoull(s.substr(at, comma - at)));
    at = comma + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  double seconds = 1.0;
  int repeat = 1;
  bool floor = true;
  std::size_t segment = distopt::collective::allreduce_workspace{}.segment_floats;
  std::vector<std::size_t> sizes{std::size_t{4} << 10, std::size_t{64} << 10, std::size_t{1} << 20,
                                 std::size_t{16} << 20, std::size_t{64} << 20};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string arg = argv[i];
    if (arg == "--seconds") seconds = std::strtod(argv[i + 1], nullptr);
    if (arg == "--sizes") sizes = parse_sizes(argv[i + 1]);
    if (arg == "--repeat") repeat = std::max(1, std::atoi(argv[i + 1]));
    if (arg == "--floor") floor = std::atoi(argv[i + 1]) != 0;
    if (arg == "--segment") segment = std::strtoull(argv[i + 1], nullptr, 10);
  }
  auto t = distopt::tcp_transport::from_environment({"bench/compare/allreduce_tcp", 0, 0});
  distopt::collective::allreduce_workspace ws;
  ws.segment_floats = segment;
  // The call count rank 0 picked, summed over the ranks (the others contribute 0).
  const auto agree = [&](int n) {
    std::vector<float> c{t.rank() == 0 ? static_cast<float>(n) : 0.0f};
    distopt::collective::ring_allreduce(t, c, distopt::collective::reduce_op::sum, ws);
    return static_cast<int>(c[0]);
  };
  const bool pair = floor && t.size() > 1 && t.rank() < 2;
  const int other = 1 - t.rank();

  if (pair) {  // 8-byte round trips, through the transport and on a raw socket, then the floor
    const distopt::tag ping{1};
    std::vector<std::byte> eight(8);
    distopt::byte_buffer in;
    const auto through_transport = [&] {
      for (int i = 0; i < 100; ++i) {
        if (t.rank() == 0) t.send(other, ping, eight);
        t.recv(other, ping, in);
        if (t.rank() == 1) t.send(other, ping, eight);
      }
    };
    const double rtt = time_calls(seconds, through_transport, agree).wall_us / 100;
    const int fd = raw_connection(t);
    std::vector<std::byte> buffer(std::max<std::size_t>(8, *std::max_element(sizes.begin(), sizes.end())));
    const auto ping_pong = [&](std::size_t n, int rounds) {
      return [&, n, rounds] {
        for (int i = 0; i < rounds; ++i) {
          if (t.rank() == 0) raw_send(fd, buffer.data(), n);
          raw_recv(fd, buffer.data(), n);
          if (t.rank() == 1) raw_send(fd, buffer.data(), n);
        }
      };
    };
    const double raw_rtt = time_calls(seconds, ping_pong(8, 100), agree).wall_us / 100;
    if (t.rank() == 0) std::printf("rtt %.2f\nraw_rtt %.2f\n", rtt, raw_rtt);
    std::vector<std::byte> incoming(buffer.size());
    for (const std::size_t bytes : sizes) {
      const double us = time_calls(seconds, ping_pong(bytes, 1), agree).wall_us / 2;
      const double both = time_calls(
                              seconds, [&] { raw_exchange(fd, buffer.data(), incoming.data(), bytes); }, agree)
                              .wall_us;
      if (t.rank() == 0) std::printf("floor %zu %.2f\nexchange %zu %.2f\n", bytes, us, bytes, both);
    }
    ::close(fd);
  }

  for (int k = 0; k < repeat; ++k)
    for (const std::size_t bytes : sizes) {
      std::vector<float> x(bytes / sizeof(float), 1.0f);
      const timing r = time_calls(
          seconds, [&] { distopt::collective::ring_allreduce(t, x, distopt::collective::reduce_op::sum, ws); }, agree);
      if (t.rank() == 0) std::printf("allreduce %zu %.2f\ncpu %zu %.2f\n", bytes, r.wall_us, bytes, r.cpu_us);
    }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "allreduce_tcp: %s\n", e.what());
  return 1;
}
