#pragma once
// Allgather of variable-length byte buffers around the ring: in step s rank r
// receives rank (r-1-s)'s bytes from its predecessor and forwards them unless
// they have reached their last hop. n-1 steps; each rank sends the other
// ranks' bytes once. This is how non-summable encodings (top_k, sign, ...) are
// exchanged: each rank then decodes every part in rank order.
//
//   std::vector<distopt::byte_buffer> parts;                // reuse across calls
//   distopt::collective::allgather(t, my_encoding, parts);  // parts[k] = rank k's bytes

#include <cstring>
#include <span>
#include <vector>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt::collective {

inline constexpr tag allgather_tag = detail::reserved_tag(detail::reserved::allgather);

/// On return `parts[k]` holds rank k's `mine`, on every rank.
inline void allgather(transport_ref t, std::span<const std::byte> mine, std::vector<byte_buffer>& parts,
                      tag tg = allgather_tag) {
  const int n = t.size();
  const int r = t.rank();
  parts.resize(static_cast<std::size_t>(n));
  auto& own = parts[static_cast<std::size_t>(r)];
  own.resize(mine.size());
  if (!mine.empty()) std::memmove(own.data(), mine.data(), mine.size());  // mine may alias parts[r]
  if (n == 1) return;
  const int next = (r + 1) % n;
  const int prev = (r + n - 1) % n;
  t.send(next, tg, mine);
  for (int s = 0; s < n - 1; ++s) {
    auto& part = parts[static_cast<std::size_t>(((r - 1 - s) % n + n) % n)];
    t.recv(prev, tg, part);
    if (s < n - 2) t.send(next, tg, part);
  }
}

}  // namespace distopt::collective
