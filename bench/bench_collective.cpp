// Ring allreduce (reduce_op::sum) over the thread transport, and its native shared-memory
// allreduce (the mean), 2 and 4 workers, 4 KiB to 64 MiB per rank, against memcpy of the
// same bytes in the same binary.
//
// Counters: bytes_per_second is the algorithm bandwidth (vector bytes / time);
// bus_bw = algbw * 2(n-1)/n, as nccl-tests define it, so that it compares with the
// bandwidth of one copy (memcpy) whatever n. bench/summarize.py prints bus_bw /
// memcpy bandwidth per size. reference/cross_core_handoff tells how costly it is,
// during this run, to pass bytes between the two cores (see below).
//
// The workers are threads that live for the whole benchmark run: rank 0 drives the
// State loop, the others run the same number of allreduces in lock-step
// (lock_step.hpp). Buffers are touched and reused.
//
//   bench_collective --benchmark_repetitions=3 --benchmark_report_aggregates_only=true

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "distopt/collective/ring_allreduce.hpp"
#include "distopt/transport/thread.hpp"
#include "lock_step.hpp"
#include "reference.hpp"

namespace {

namespace dc = distopt::collective;

/// `native`: the thread transport's shared-memory mean (thread_options::native_allreduce)
/// instead of the ring's sum over messages.
void ring_allreduce_sum(benchmark::State& st, int workers, std::size_t floats, bool native) {
  distopt::run_threads(workers,
                       [&](distopt::transport_ref t) {
                         std::vector<float> data(floats, 0.0f);  // touched here, reused by every round
                         dc::allreduce_workspace ws;
                         distopt_bench::lock_step(st, t, [&] {
                           if (!native || !t.native_allreduce_mean(data))
                             dc::ring_allreduce(t, data, dc::reduce_op::sum, ws);
                         });
                       },
                       {.native_allreduce = native});
  const double bytes = static_cast<double>(floats * sizeof(float));
  const double n = workers;
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations()) * static_cast<std::int64_t>(bytes));
  const double bus_bytes = static_cast<double>(st.iterations()) * bytes * 2.0 * (n - 1.0) / n;
  st.counters["bus_bw"] = benchmark::Counter(bus_bytes, benchmark::Counter::kIsRate, benchmark::Counter::kIs1024);
  st.counters["wire_bytes_per_float"] = sizeof(float) * 2.0 * (n - 1.0) / n;  // sent per rank per float of the vector
}

/// Reference for cross-core traffic: one thread memcpy's into a buffer, then another
/// memcpy's it out (ordinary stores, one direction at a time). Its bandwidth depends
/// on whether the two threads run on cores that share a cache, which on the VMs we
/// run on changes from run to run by 3-5x, and explains most of the spread of
/// ring_allreduce between runs. (The allreduce can beat it: both directions run at
/// once, and the thread transport copies large payloads with streaming stores.)
void cross_core_handoff(benchmark::State& st, std::size_t floats) {
  const std::size_t bytes = floats * sizeof(float);
  std::vector<std::byte> src(bytes, std::byte{1}), shared(bytes, std::byte{0}), dst(bytes, std::byte{0});
  std::atomic<std::int64_t> turn{0};  // even: the writer's turn; odd: the reader's; -1: stop
  auto wait_for = [&](auto ready) {
    std::int64_t v;
    while (!ready(v = turn.load(std::memory_order_acquire))) turn.wait(v, std::memory_order_acquire);
    return v;
  };
  std::thread reader([&] {
    for (;;) {
      const std::int64_t v = wait_for([](std::int64_t x) { return x < 0 || x % 2 == 1; });
      if (v < 0) return;
      std::memcpy(dst.data(), shared.data(), bytes);
      turn.store(v + 1, std::memory_order_release);
      turn.notify_one();
    }
  });
  std::int64_t round = 0;
  for (auto _ : st) {
    std::memcpy(shared.data(), src.data(), bytes);
    turn.store(round + 1, std::memory_order_release);
    turn.notify_one();
    round = wait_for([&](std::int64_t x) { return x == round + 2; });
  }
  turn.store(-1, std::memory_order_release);
  turn.notify_one();
  reader.join();
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * bytes));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  for (std::size_t bytes = std::size_t{4} << 10; bytes <= std::size_t{64} << 20; bytes *= 4) {
    const std::size_t floats = bytes / sizeof(float);
    distopt_bench::register_references(floats);
    benchmark::RegisterBenchmark(("reference/cross_core_handoff/" + std::to_string(floats)).c_str(),
                                 [floats](benchmark::State& st) { cross_core_handoff(st, floats); })
        ->UseRealTime();
    for (const bool native : {false, true})
      for (int workers : {2, 4}) {
        const std::string name = std::string(native ? "native_allreduce" : "ring_allreduce") +
                                 "/workers:" + std::to_string(workers) + "/" + std::to_string(floats);
        benchmark::RegisterBenchmark(name.c_str(), [workers, floats, native](benchmark::State& st) {
          ring_allreduce_sum(st, workers, floats, native);
        })->UseRealTime();
      }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
