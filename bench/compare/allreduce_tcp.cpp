// bench/compare/allreduce_tcp: distopt's ring allreduce over tcp_transport, one
// process per rank, run by scripts/distopt-launch (bench/compare/allreduce_tcp.py runs
// it next to Open MPI over TCP and PyTorch's gloo and prints the table). Rank 0 prints
//   rtt <microseconds>            1-byte ping-pong round trip through the transport
//   allreduce <bytes> <microseconds per call>   for 4 KiB, 64 KiB, 1 MiB, 16 MiB, 64 MiB
// Each size: 2 warm-up calls, then as many timed calls as fit in ~--seconds (at least 5).
//
//   scripts/distopt-launch -n 2 -- build/bench/allreduce_tcp [--seconds S]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <vector>

#include <distopt/collective/ring_allreduce.hpp>
#include <distopt/transport/tcp.hpp>

int main(int argc, char** argv) try {
  double seconds = 1.0;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::string(argv[i]) == "--seconds") seconds = std::strtod(argv[i + 1], nullptr);
  using clock = std::chrono::steady_clock;
  auto t = distopt::tcp_transport::from_environment({"bench/compare/allreduce_tcp", 0, 0});
  const distopt::tag ping{1};

  // Round trip: rank 0 and rank 1 bounce one byte.
  if (t.size() > 1 && t.rank() < 2) {
    const std::byte one[1] = {std::byte{1}};
    distopt::byte_buffer in;
    const int other = 1 - t.rank();
    constexpr int rounds = 2000;
    const auto start = clock::now();
    for (int i = 0; i < rounds; ++i) {
      if (t.rank() == 0) {
        t.send(other, ping, one);
        t.recv(other, ping, in);
      } else {
        t.recv(other, ping, in);
        t.send(other, ping, one);
      }
    }
    if (t.rank() == 0)
      std::printf("rtt %.2f\n", std::chrono::duration<double, std::micro>(clock::now() - start).count() / rounds);
  }

  distopt::collective::allreduce_workspace ws;
  for (const std::size_t bytes : {std::size_t{4} << 10, std::size_t{64} << 10, std::size_t{1} << 20,
                                  std::size_t{16} << 20, std::size_t{64} << 20}) {
    std::vector<float> x(bytes / sizeof(float), 1.0f);
    for (int i = 0; i < 2; ++i) distopt::collective::ring_allreduce(t, x, distopt::collective::reduce_op::sum, ws);
    // The number of calls is fixed by rank 0's estimate and shared, so every rank makes the same calls.
    const auto probe = clock::now();
    distopt::collective::ring_allreduce(t, x, distopt::collective::reduce_op::sum, ws);
    double calls = seconds / std::max(1e-7, std::chrono::duration<double>(clock::now() - probe).count());
    std::vector<float> c{static_cast<float>(std::min(20000.0, std::max(5.0, calls)))};
    if (t.rank() != 0) c[0] = 0;
    distopt::collective::ring_allreduce(t, c, distopt::collective::reduce_op::sum, ws);
    const int n = static_cast<int>(c[0]);
    const auto start = clock::now();
    for (int i = 0; i < n; ++i) distopt::collective::ring_allreduce(t, x, distopt::collective::reduce_op::sum, ws);
    const double us = std::chrono::duration<double, std::micro>(clock::now() - start).count() / n;
    if (t.rank() == 0) std::printf("allreduce %zu %.2f\n", bytes, us);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "allreduce_tcp: %s\n", e.what());
  return 1;
}
