#pragma once
// Ring allreduce (reduce-scatter then allgather; Patarasuk & Yuan 2009), written once
// against transport_ref so it runs on every backend.
//
// The data is cut into n chunks (chunk c is [c*len/n, (c+1)*len/n)). Chunk c travels
// the ring starting at rank c, so its sum is always formed in the fixed order
//     ((x_c + x_{c+1}) + x_{c+2}) + ... + x_{c+n-1}      (indices mod n)
// and then copied to every rank: results are bit-identical on every rank, every run
// and every transport. For the mean, the owner of a chunk divides its sum by n once.
// Each chunk moves in segments of `segment_floats`, forwarded as soon as they are
// reduced, so consecutive steps overlap. Cost per rank: 2(n-1) messages per segment
// column, 2(n-1)/n * len floats sent.
//
//   distopt::collective::allreduce_workspace ws;                    // reuse across calls
//   distopt::collective::ring_allreduce(t, grad, distopt::collective::reduce_op::mean, ws);

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "distopt/collective/detail/float_bytes.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/float_sum.hpp"
#include "distopt/core/ring_schedule.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt::collective {

enum class reduce_op { sum, mean };

/// Buffers reused across calls, so that steady-state calls allocate nothing.
struct allreduce_workspace {
  byte_buffer incoming;
  /// Floats per message; chunks larger than this are pipelined.
  std::size_t segment_floats = distopt::detail::ring_segment_floats;
};

inline constexpr tag ring_allreduce_tag = detail::reserved_tag(detail::reserved::ring_allreduce);

/// Allreduce of `in` over all ranks of `t` into `data`, which may be `in` itself (in place)
/// or an array of the same length that does not overlap it; `in` is read, never written,
/// when they differ, so a caller's const gradient needs no copy. Every rank must pass the
/// same length. With one rank, `data` = `in`.
inline void ring_allreduce(transport_ref t, std::span<const float> in, std::span<float> data, reduce_op op,
                           allreduce_workspace& ws, tag tg = ring_allreduce_tag) {
  distopt::detail::check_allreduce_lengths("ring_allreduce", in.size(), data.size(), t.rank());
  const int n = t.size();
  const int r = t.rank();
  const bool in_place = in.data() == data.data();
  if (n == 1) {  // sum of one, and x / 1 == x exactly
    if (!in_place) std::copy(in.begin(), in.end(), data.begin());
    return;
  }
  const int next = (r + 1) % n;
  const int prev = (r + n - 1) % n;
  const std::size_t len = data.size();
  const std::size_t seg = std::max<std::size_t>(ws.segment_floats, 1);
  auto chunk = [&](int c) {
    const std::size_t b = distopt::detail::ring_chunk_begin(len, n, c);
    return data.subspan(b, distopt::detail::ring_chunk_begin(len, n, c + 1) - b);
  };
  // The caller's own values under an output segment.
  auto own = [&](std::span<float> piece) { return in.data() + (piece.data() - data.data()); };
  auto send = [&](std::span<const float> piece) { t.send(next, tg, std::as_bytes(piece)); };
  // Visits chunk c in segments; an empty chunk is one empty segment, so every rank
  // sends and receives the same number of messages.
  auto for_each_segment = [&](int c, auto&& visit) {
    const std::span<float> whole = chunk(c);
    std::size_t off = 0;
    do {
      const std::size_t m = std::min(seg, whole.size() - off);
      visit(whole.subspan(off, m));
      off += m;
    } while (off < whole.size());
  };
  // Calls body(piece, incoming) for each segment of chunk c as it arrives from prev.
  auto receive_chunk = [&](int c, auto&& body) {
    for_each_segment(c, [&](std::span<float> piece) {
      t.recv(prev, tg, ws.incoming);
      body(piece, detail::received_floats(ws.incoming, piece.size(), "ring_allreduce", r, prev));
    });
  };

  // Reduce-scatter: in step s, rank r receives the partial sum of chunk r-1-s and adds its own.
  for_each_segment(r, [&](std::span<float> piece) { send(std::span<const float>(own(piece), piece.size())); });
  const float divisor = static_cast<float>(n);
  for (int s = 0; s < n - 1; ++s) {
    const int c = ((r - 1 - s) % n + n) % n;
    const bool owner = s == n - 2;  // the last addition completes chunk r+1
    receive_chunk(c, [&](std::span<float> piece, std::span<const float> received) {
      const bool mean = owner && op == reduce_op::mean;
      if (in_place && mean)
        detail::allreduce_add_divide(piece.data(), received.data(), piece.size(), divisor);
      else if (in_place)
        detail::allreduce_add(piece.data(), received.data(), piece.size());
      else if (mean)
        detail::allreduce_add_divide(piece.data(), own(piece), received.data(), piece.size(), divisor);
      else
        detail::allreduce_add(piece.data(), own(piece), received.data(), piece.size());
      send(piece);  // next step's input (or, for the owner, the allgather's first message)
    });
  }
  // Allgather: in step s, rank r receives finished chunk r-s and forwards it unless it is the last hop.
  for (int s = 0; s < n - 1; ++s) {
    const int c = ((r - s) % n + n) % n;
    const bool forward = s < n - 2;
    receive_chunk(c, [&](std::span<float> piece, std::span<const float> received) {
      if (forward) send(received);  // first, so that the next rank can go on while this one copies
      std::copy(received.begin(), received.end(), piece.begin());
    });
  }
}

/// In-place allreduce of `data` over all ranks of `t`. Every rank must pass the same length.
inline void ring_allreduce(transport_ref t, std::span<float> data, reduce_op op, allreduce_workspace& ws,
                           tag tg = ring_allreduce_tag) {
  ring_allreduce(t, std::span<const float>(data), data, op, ws, tg);
}

}  // namespace distopt::collective
