// PowerSGD (compress::power_sgd<Rank>) on one square matrix, next to memcpy and a read-only
// sum of the same size (bench/reference.hpp), so results read as ratios:
//   encode/...  one worker's encoding with error feedback (e += g, P = M Q, Gram-Schmidt,
//               Q = M^T P, e -= P Q^T: five passes over n floats, two of them read-write);
//   decode/...  P Q^T into n floats;
//   round/...   average() on a 1-rank transport: the local algebra of one collective round
//               (the allreduces return at once), error feedback on.
// Bytes processed are the input floats' bytes; wire_bytes_per_float is the encoding over n.
// State and buffers are made once, outside the timed loop.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <distopt/compress/power_sgd.hpp>
#include <distopt/core/rng.hpp>
#include <distopt/transport/thread.hpp>

#include "reference.hpp"

namespace {

template <unsigned Rank>
void register_rank(std::size_t side, bool error_feedback) {
  using C = distopt::compress::power_sgd<Rank>;
  const std::size_t n = side * side;
  const C c{.shapes = {{side, side}}, .error_feedback = error_feedback};
  const std::string suffix = "power_sgd<" + std::to_string(Rank) + ">" + (error_feedback ? "" : "/no_ef") + "/" +
                             std::to_string(side) + "x" + std::to_string(side);
  const double wire_per_float = double(c.max_encoded_bytes(n)) / double(n);
  benchmark::RegisterBenchmark(("encode/" + suffix).c_str(), [c, n, wire_per_float](benchmark::State& st) {
    const auto& x = distopt_bench::gaussian(n);
    auto s = c.make_state(n);
    distopt::byte_buffer wire;
    wire.reserve(c.max_encoded_bytes(n));
    distopt::rng g;
    for (auto _ : st) {
      wire.clear();
      c.encode(x, wire, g, s);
      benchmark::DoNotOptimize(wire.data());
      benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * n * sizeof(float)));
    st.counters["wire_bytes_per_float"] = wire_per_float;
  });
  if (!error_feedback) return;
  benchmark::RegisterBenchmark(("decode/" + suffix).c_str(), [c, n, wire_per_float](benchmark::State& st) {
    auto s = c.make_state(n);
    distopt::byte_buffer wire;
    distopt::rng g;
    c.encode(distopt_bench::gaussian(n), wire, g, s);
    std::vector<float> out(n);
    for (auto _ : st) {
      c.decode(wire, out);
      benchmark::DoNotOptimize(out.data());
      benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * n * sizeof(float)));
    st.counters["wire_bytes_per_float"] = wire_per_float;
  });
  benchmark::RegisterBenchmark(("round/" + suffix).c_str(), [c, n, wire_per_float](benchmark::State& st) {
    auto s = c.make_state(n);
    std::vector<float> v = distopt_bench::gaussian(n);  // overwritten by each round's approximation: same cost
    distopt::rng g;
    distopt::run_threads(1, [&](distopt::transport_ref t) {
      for (auto _ : st) {
        c.average(t, v, s, g);
        benchmark::DoNotOptimize(v.data());
        benchmark::ClobberMemory();
      }
    });
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * n * sizeof(float)));
    st.counters["wire_bytes_per_float"] = wire_per_float;
  });
}

}  // namespace

int main(int argc, char** argv) {
  constexpr std::size_t big = 4096;
  distopt_bench::register_references(big * big);
  for (std::size_t side : {std::size_t{256}, big}) {
    register_rank<1>(side, true);
    register_rank<2>(side, true);
    register_rank<4>(side, true);
    register_rank<2>(side, false);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
