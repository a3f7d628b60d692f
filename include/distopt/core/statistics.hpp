#pragma once
// statistics: what one worker's communication cost, gathered as it runs.

#include <chrono>
#include <cstdint>
#include <utility>
#include <vector>

#include "distopt/core/checkpoint.hpp"

namespace distopt {

struct statistics {
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
  std::uint64_t messages_sent = 0;
  std::uint64_t messages_received = 0;
  /// Communication rounds this worker took part in: one per averaging; asynchronous pairwise
  /// gossip counts the interactions this worker started (not those it answered).
  std::uint64_t rounds = 0;
  /// Local optimizer steps taken.
  std::uint64_t steps = 0;
  /// Wall time spent blocked in receives.
  std::chrono::nanoseconds time_blocked{0};
  /// Largest staleness observed (rounds between a contribution and its use).
  std::uint64_t max_staleness = 0;
  /// staleness_histogram[s] counts contributions used s rounds late.
  std::vector<std::uint64_t> staleness_histogram;
  /// Peers this worker gave up on (asynchronous policies only: dead, or silent past
  /// options.timeout while it waited to finish), in the order it did.
  std::vector<int> lost_peers;

  void record_staleness(std::uint64_t s) {
    if (s > max_staleness) max_staleness = s;
    if (staleness_histogram.size() <= s) staleness_histogram.resize(s + 1, 0);
    ++staleness_histogram[s];
  }

  /// Checkpoints hold every field, so a resumed run counts on from where it stopped.
  void save(checkpoint_writer& w) const {
    for (const std::uint64_t v : {bytes_sent, bytes_received, messages_sent, messages_received, rounds, steps})
      w.u64(v);
    w.u64(static_cast<std::uint64_t>(time_blocked.count()));
    w.u64(max_staleness);
    w.u64(staleness_histogram.size());
    for (const std::uint64_t v : staleness_histogram) w.u64(v);
    w.u64(lost_peers.size());
    for (const int p : lost_peers) w.u32(static_cast<std::uint32_t>(p));
  }
  void load(checkpoint_reader& r) {
    statistics s;
    for (std::uint64_t* v :
         {&s.bytes_sent, &s.bytes_received, &s.messages_sent, &s.messages_received, &s.rounds, &s.steps})
      *v = r.u64();
    s.time_blocked = std::chrono::nanoseconds(static_cast<std::chrono::nanoseconds::rep>(r.u64()));
    s.max_staleness = r.u64();
    s.staleness_histogram.resize(r.count(8));
    for (std::uint64_t& v : s.staleness_histogram) v = r.u64();
    s.lost_peers.resize(r.count(4));
    for (int& p : s.lost_peers) p = static_cast<int>(r.u32());
    *this = std::move(s);
  }
};

}  // namespace distopt
