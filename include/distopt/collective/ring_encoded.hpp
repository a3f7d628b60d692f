#pragma once
// Ring allreduce on the encodings of a summable compressor (fp16, bf16,
// random_k_shared): the vector is cut into n chunks as in ring_allreduce, each
// rank encodes each chunk, and the encodings themselves travel the ring and are
// added with C::accumulate(sum, part) — no rank ever sends floats. Chunk c's
// encoded sum is formed in the fixed order
//     ((E_c + E_{c+1}) + E_{c+2}) + ... + E_{c+n-1}      (ranks mod n)
// then passed around, and every rank decodes the same bytes and divides by n, so
// the result is bit-identical on every rank, run and transport.
// Cost per rank: 2(n-1) messages of one chunk's encoding, i.e. 2(n-1)/n of the
// whole encoding, against (n-1) whole encodings for an allgather.
// Rounding: fp16/bf16 partial sums are rounded to 16 bits at each hop (as an
// fp16 NCCL allreduce does), and saturate at the format's largest finite value.
//
//   distopt::collective::encoded_ring_workspace ws;        // reuse across calls
//   distopt::collective::ring_allreduce_encoded(t, grad, fp16, state, g, ws);   // in place: the mean

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/traits.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt::collective {

/// Buffers reused across calls, so that steady-state calls allocate nothing.
struct encoded_ring_workspace {
  std::vector<byte_buffer> chunks;  ///< this rank's encoding of each chunk, then the sums
  byte_buffer incoming;
};

inline constexpr tag ring_encoded_tag = detail::reserved_tag(detail::reserved::ring_encoded);

/// Replaces `v` by the mean over all ranks of decode(encode(v_k)), reducing on the
/// encodings. Every rank must pass the same length. Each rank encodes its n chunks
/// in chunk order, so a stateful C (random_k_shared's round counter) advances alike
/// on every rank.
template <compressor C>
requires summable_encoding<C>
void ring_allreduce_encoded(transport_ref t, std::span<float> v, C& c, compressor_state_t<C>& state, rng& g,
                            encoded_ring_workspace& ws, tag tg = ring_encoded_tag) {
  const int n = t.size();
  const int r = t.rank();
  const auto un = static_cast<std::size_t>(n);
  auto chunk = [&](int k) {
    const std::size_t b = v.size() * static_cast<std::size_t>(k) / un;
    const std::size_t e = v.size() * static_cast<std::size_t>(k + 1) / un;
    return v.subspan(b, e - b);
  };
  auto mod = [n](int k) { return ((k % n) + n) % n; };
  ws.chunks.resize(un);
  for (int k = 0; k < n; ++k) {
    auto& e = ws.chunks[static_cast<std::size_t>(k)];
    e.clear();
    encode(c, chunk(k), e, g, state);
  }
  if (n > 1) {
    const int next = mod(r + 1), prev = mod(r - 1);
    auto own = [&](int k) -> byte_buffer& { return ws.chunks[static_cast<std::size_t>(k)]; };
    // Reduce-scatter: in step s rank r receives the partial sum of chunk r-1-s and adds its own.
    t.send(next, tg, own(r));
    for (int s = 0; s < n - 1; ++s) {
      const int k = mod(r - 1 - s);
      t.recv(prev, tg, ws.incoming);
      C::accumulate(own(k), ws.incoming);  // throws transport_error on a mismatched encoding
      t.send(next, tg, own(k));            // the last one starts the allgather with finished chunk r+1
    }
    // Allgather: in step s rank r receives finished chunk r-s and forwards it unless it is the last hop.
    for (int s = 0; s < n - 1; ++s) {
      const int k = mod(r - s);
      t.recv(prev, tg, own(k));
      if (s < n - 2) t.send(next, tg, own(k));
    }
  }
  const float divisor = static_cast<float>(n);
  for (int k = 0; k < n; ++k) {
    const std::span<float> piece = chunk(k);
    c.decode(ws.chunks[static_cast<std::size_t>(k)], piece);
    for (float& x : piece) x /= divisor;  // division, not * (1/n): exact for n a power of two
  }
}

}  // namespace distopt::collective
