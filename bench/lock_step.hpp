#pragma once
// Timing code that runs on every rank of an in-process run: the worker threads live
// for the whole benchmark run (never one spawn per iteration); rank 0 drives the
// State loop and the others run the same number of steps in lock-step.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <span>

#include "distopt/collective/broadcast.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt_bench {

/// Rank 0's value on every rank.
inline std::int64_t from_rank_0(distopt::transport_ref t, std::int64_t on_root) {
  distopt::byte_buffer bytes;
  if (t.rank() == 0) distopt::append(bytes, std::as_bytes(std::span(&on_root, 1)));
  distopt::collective::broadcast(t, 0, bytes, distopt::tag{7});
  std::int64_t value = 0;
  std::memcpy(&value, bytes.data(), sizeof value);
  return value;
}

/// Calls `step()` twice untimed (filling mailbox pools and workspaces), then as many
/// times on every rank as rank 0's State loop runs, timed there.
template <class Step>
void lock_step(benchmark::State& st, distopt::transport_ref t, Step&& step) {
  for (int warm = 0; warm < 2; ++warm) step();
  const std::int64_t rounds = from_rank_0(t, static_cast<std::int64_t>(st.max_iterations));
  if (t.rank() == 0) {
    for (auto _ : st) {
      step();
      benchmark::ClobberMemory();
    }
  } else {
    for (std::int64_t i = 0; i < rounds; ++i) step();
  }
}

}  // namespace distopt_bench
