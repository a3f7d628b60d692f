#pragma once
// Reference benchmarks run in the same binary as the measured code, so results
// read as ratios: memcpy and a read-only sum over the same number of bytes.

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <distopt/core/rng.hpp>

namespace distopt_bench {

/// Registers "reference/memcpy/<floats>" and "reference/read_sum/<floats>".
inline void register_references(std::size_t floats) {
  benchmark::RegisterBenchmark(("reference/memcpy/" + std::to_string(floats)).c_str(), [floats](benchmark::State& st) {
    std::vector<float> a(floats, 1.0f), b(floats, 0.0f);
    for (auto _ : st) {
      std::memcpy(b.data(), a.data(), floats * sizeof(float));
      benchmark::DoNotOptimize(b.data());
      benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * floats * sizeof(float)));
  });
  benchmark::RegisterBenchmark(
      ("reference/read_sum/" + std::to_string(floats)).c_str(), [floats](benchmark::State& st) {
        std::vector<float> a(floats, 1.0f);
        for (auto _ : st) {
          float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;  // independent chains
          for (std::size_t i = 0; i + 8 <= floats; i += 8) {
            s0 += a[i];
            s1 += a[i + 1];
            s2 += a[i + 2];
            s3 += a[i + 3];
            s4 += a[i + 4];
            s5 += a[i + 5];
            s6 += a[i + 6];
            s7 += a[i + 7];
          }
          float s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
          benchmark::DoNotOptimize(s);
        }
        st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * floats * sizeof(float)));
      });
}

/// Standard normal entries, made once per size (Google Benchmark runs each body several times).
inline const std::vector<float>& gaussian(std::size_t n) {
  static std::map<std::size_t, std::vector<float>> cache;
  auto& x = cache[n];
  if (x.size() != n) {
    distopt::rng g(7, 0, 0, distopt::purpose::user);
    x.resize(n);
    for (auto& v : x) v = g.normal();
  }
  return x;
}

}  // namespace distopt_bench
