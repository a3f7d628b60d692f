#pragma once
// The ring allreduce's schedule, as arithmetic: where its chunks begin, how many floats
// travel per message, and what one rank sends and receives. collective::ring_allreduce
// runs it; the thread transport's native allreduce sums the same chunks in the same
// order, and metered_transport counts a native allreduce as this ring's traffic.

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace distopt::detail {

/// Floats per message by default (collective::allreduce_workspace, protocols::exact_mixer).
inline constexpr std::size_t ring_segment_floats = std::size_t{1} << 16;

/// Where chunk c of `len` floats cut into n chunks begins: c * len / n (chunk n ends at len).
constexpr std::size_t ring_chunk_begin(std::size_t len, int n, int c) {
  return len * static_cast<std::size_t>(c) / static_cast<std::size_t>(n);
}

/// What one rank sends and receives in one ring allreduce.
struct ring_traffic {
  std::uint64_t bytes_sent = 0, messages_sent = 0, bytes_received = 0, messages_received = 0;
};

/// The traffic of rank r in a ring allreduce of `len` floats over n ranks in segments of
/// `segment_floats`. Rank r sends every chunk once (its own, then the reduce-scatter's
/// partial sums, the last of which starts the allgather) and forwards finished chunk c
/// unless r is its last hop, (r - c) mod n = n - 2; a chunk travels in
/// ceil(size / segment) messages, at least one. Rank r receives what rank r - 1 sends.
inline ring_traffic ring_allreduce_traffic(std::size_t len, int n, int r,
                                           std::size_t segment_floats = ring_segment_floats) {
  ring_traffic out;
  if (n == 1) return out;
  const std::size_t seg = std::max<std::size_t>(segment_floats, 1);
  auto sent_by = [&](int rank, std::uint64_t& bytes, std::uint64_t& messages) {
    for (int c = 0; c < n; ++c) {
      const std::size_t size = ring_chunk_begin(len, n, c + 1) - ring_chunk_begin(len, n, c);
      const std::uint64_t sends = 1 + (((rank - c) % n + n) % n <= n - 3 ? 1 : 0);
      bytes += sends * size * sizeof(float);
      messages += sends * std::max<std::uint64_t>(1, (size + seg - 1) / seg);
    }
  };
  sent_by(r, out.bytes_sent, out.messages_sent);
  sent_by((r + n - 1) % n, out.bytes_received, out.messages_received);
  return out;
}

}  // namespace distopt::detail
