// Encode and decode throughput of the quantizers on 16M floats, next to the
// read-only sum and memcpy of the same buffer (bench/reference.hpp): read
// "bytes_per_second" as a ratio to reference/read_sum. Buffers are reused.
//
//   build/bench/bench_compress_quantizers --benchmark_filter='qsgd|read_sum'

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <distopt/compress/bf16.hpp>
#include <distopt/compress/fp16.hpp>
#include <distopt/compress/lattice.hpp>
#include <distopt/compress/min_max.hpp>
#include <distopt/compress/natural.hpp>
#include <distopt/compress/qsgd.hpp>
#include <distopt/compress/terngrad.hpp>
#include <distopt/core/byte_buffer.hpp>
#include <distopt/core/rng.hpp>

#include "reference.hpp"

namespace {

constexpr std::size_t floats = std::size_t{1} << 24;  // 16M floats = 64 MiB

std::vector<float> gradient_like(std::size_t n) {
  distopt::rng g(1, 0, 0, distopt::purpose::user);
  std::vector<float> x(n);
  for (auto& v : x) v = 1e-3f * g.normal();
  return x;
}

template <class C>
void register_compressor(const std::string& name, C c) {
  benchmark::RegisterBenchmark(("encode/" + name + "/" + std::to_string(floats)).c_str(), [c](benchmark::State& st) {
    const auto x = gradient_like(floats);
    distopt::byte_buffer wire;
    wire.reserve(c.max_encoded_bytes(floats));
    std::uint32_t step = 0;
    for (auto _ : st) {
      wire.clear();
      distopt::rng g(7, 0, step++, distopt::purpose::compression);
      c.encode(x, wire, g);
      benchmark::DoNotOptimize(wire.data());
      benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * floats * sizeof(float)));
    st.counters["wire_bytes_per_float"] = double(wire.size()) / double(floats);
  });
  benchmark::RegisterBenchmark(("decode/" + name + "/" + std::to_string(floats)).c_str(), [c](benchmark::State& st) {
    const auto x = gradient_like(floats);
    distopt::byte_buffer wire;
    distopt::rng g(7, 0, 0, distopt::purpose::compression);
    c.encode(x, wire, g);
    std::vector<float> out(floats);
    for (auto _ : st) {
      c.decode(wire, out);
      benchmark::DoNotOptimize(out.data());
      benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * floats * sizeof(float)));
    st.counters["wire_bytes_per_float"] = double(wire.size()) / double(floats);
  });
}

}  // namespace

int main(int argc, char** argv) {
  namespace dc = distopt::compress;
  distopt_bench::register_references(floats);
  register_compressor("fp16", dc::fp16{});
  register_compressor("bf16", dc::bf16{});
  register_compressor("qsgd<8>", dc::qsgd<8>{});
  register_compressor("qsgd<4>", dc::qsgd<4>{});
  register_compressor("qsgd<2>", dc::qsgd<2>{});
  register_compressor("terngrad", dc::terngrad{});
  register_compressor("natural", dc::natural{});
  register_compressor("min_max<8>", dc::min_max<8>{});
  register_compressor("min_max<4>", dc::min_max<4>{});
  register_compressor("lattice<8>", dc::lattice<8>{});
  register_compressor("lattice<4>", dc::lattice<4>{.side = 1e-2f});
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
