// bench/compare/allreduce_threads: the mean of a float vector over n worker threads, through
// the ring over the thread transport and through its native shared-memory allreduce
// (thread_options::native_allreduce); bench/compare/allreduce_threads.py runs it next to
// Open MPI's MPI_Allreduce over shared memory and prints the table. Prints
//   <method> <workers> <bytes> <microseconds per call>     method: ring, native
// Each size: 2 warm-up calls, then as many timed calls as fit in ~--seconds (at least 5),
// timed on rank 0 (all ranks make the same calls; the last barrier of a call is shared).
//
//   build/bench/allreduce_threads [--workers 2,4,8] [--seconds S]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include <distopt/collective/broadcast.hpp>
#include <distopt/collective/ring_allreduce.hpp>
#include <distopt/transport/thread.hpp>

int main(int argc, char** argv) try {
  double seconds = 1.0;
  std::vector<int> workers{2, 4, 8};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string arg = argv[i];
    if (arg == "--seconds") seconds = std::strtod(argv[i + 1], nullptr);
    if (arg == "--workers") {
      workers.clear();
      for (const char* p = argv[i + 1]; *p != '\0';) {
        char* end = nullptr;
        workers.push_back(static_cast<int>(std::strtol(p, &end, 10)));
        p = *end == ',' ? end + 1 : end;
      }
    }
  }
  using clock = std::chrono::steady_clock;
  namespace dc = distopt::collective;
  for (const int n : workers)
    for (const bool native : {false, true})
      distopt::run_threads(
          n,
          [&](distopt::transport_ref t) {
            dc::allreduce_workspace ws;
            for (const std::size_t bytes : {std::size_t{4} << 10, std::size_t{64} << 10, std::size_t{1} << 20,
                                            std::size_t{16} << 20, std::size_t{64} << 20}) {
              std::vector<float> x(bytes / sizeof(float), 1.0f);
              const auto call = [&] {
                if (!native || !t.native_allreduce_mean(x)) dc::ring_allreduce(t, x, dc::reduce_op::mean, ws);
              };
              for (int i = 0; i < 2; ++i) call();
              const auto probe = clock::now();
              call();
              // Rank 0's count, on every rank.
              const double guess =
                  seconds / std::max(1e-7, std::chrono::duration<double>(clock::now() - probe).count());
              distopt::byte_buffer count;
              if (t.rank() == 0) {
                const int c = static_cast<int>(std::min(20000.0, std::max(5.0, guess)));
                distopt::append(count, std::as_bytes(std::span(&c, 1)));
              }
              dc::broadcast(t, 0, count, distopt::tag{1});
              int calls = 0;
              std::memcpy(&calls, count.data(), sizeof calls);
              const auto start = clock::now();
              for (int i = 0; i < calls; ++i) call();
              const double us = std::chrono::duration<double, std::micro>(clock::now() - start).count() / calls;
              if (t.rank() == 0) std::printf("%s %d %zu %.2f\n", native ? "native" : "ring", n, bytes, us);
            }
          },
          {.native_allreduce = native});
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "allreduce_threads: %s\n", e.what());
  return 1;
}
