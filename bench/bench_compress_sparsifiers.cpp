// Encode and decode throughput of the sign and sparsifier families and rounding on
// 16M floats, next to memcpy and a read-only sum of the same size (bench/reference.hpp),
// so results read as ratios. Buffers are reused across iterations; bytes processed are
// the input floats' bytes; wire_bytes_per_float is the encoded size over n.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <distopt/compress/one_bit.hpp>
#include <distopt/compress/random_k.hpp>
#include <distopt/compress/rounding.hpp>
#include <distopt/compress/scaled_sign.hpp>
#include <distopt/compress/sign.hpp>
#include <distopt/compress/threshold.hpp>
#include <distopt/compress/top_k.hpp>
#include <distopt/core/rng.hpp>

#include "reference.hpp"

namespace {

namespace dc = distopt::compress;

template <class C>
void register_compressor(const std::string& name, C c, std::size_t n) {
  benchmark::RegisterBenchmark(("encode/" + name + "/" + std::to_string(n)).c_str(), [c, n](benchmark::State& st) {
    const auto& x = distopt_bench::gaussian(n);
    distopt::byte_buffer wire;
    wire.reserve(c.max_encoded_bytes(n));
    std::uint32_t step = 0;
    for (auto _ : st) {
      wire.clear();
      distopt::rng g(1, 0, step++, distopt::purpose::compression);
      c.encode(x, wire, g);
      benchmark::DoNotOptimize(wire.data());
      benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * n * sizeof(float)));
    st.counters["wire_bytes_per_float"] = double(wire.size()) / double(n);
  });
  benchmark::RegisterBenchmark(("decode/" + name + "/" + std::to_string(n)).c_str(), [c, n](benchmark::State& st) {
    const auto& x = distopt_bench::gaussian(n);
    distopt::byte_buffer wire;
    distopt::rng g(1, 0, 0, distopt::purpose::compression);
    c.encode(x, wire, g);
    std::vector<float> out(n);
    for (auto _ : st) {
      c.decode(wire, out);
      benchmark::DoNotOptimize(out.data());
      benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * n * sizeof(float)));
    st.counters["wire_bytes_per_float"] = double(wire.size()) / double(n);
  });
}

}  // namespace

int main(int argc, char** argv) {
  constexpr std::size_t big = std::size_t{1} << 24;
  distopt_bench::register_references(big);
  for (std::size_t n : {std::size_t{1} << 16, big}) {
    register_compressor("sign", dc::sign{}, n);
    register_compressor("scaled_sign", dc::scaled_sign{}, n);
    register_compressor("one_bit", dc::one_bit{}, n);
    register_compressor("one_bit_whole", dc::one_bit{0}, n);
    register_compressor("top_k_1pct", dc::top_k{0.01}, n);
    register_compressor("random_k_1pct", dc::random_k{0.01}, n);
    register_compressor("random_k_shared_1pct", dc::random_k_shared{0.01}, n);
    register_compressor("random_keep_1pct", dc::random_keep{0.01}, n);
    register_compressor("threshold_2.576", dc::threshold{2.576}, n);  // ~1% of N(0, 1)
    register_compressor("rounding_2^-4", dc::rounding{0x1.0p-4}, n);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
