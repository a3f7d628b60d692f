#pragma once
// statistics: what one worker's communication cost, gathered as it runs.

#include <chrono>
#include <cstdint>
#include <vector>

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
};

}  // namespace distopt
