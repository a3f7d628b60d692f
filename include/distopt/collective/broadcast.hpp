#pragma once
// Broadcast of bytes from `root` along a binomial tree (ceil(log2 n) rounds):
// virtual rank v = (rank - root) mod n receives from v - 2^k, where 2^k is the
// lowest set bit of v, then sends to v + 2^j for every 2^j below that bit.
//
//   distopt::byte_buffer model_bytes = ...;                    // filled on the root only
//   distopt::collective::broadcast(t, /*root=*/0, model_bytes); // now everywhere

#include <string>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt::collective {

inline constexpr tag broadcast_tag = detail::reserved_tag(detail::reserved::broadcast);

/// On return every rank's `data` equals the root's.
inline void broadcast(transport_ref t, int root, byte_buffer& data, tag tg = broadcast_tag) {
  const int n = t.size();
  if (root < 0 || root >= n)
    throw config_error("broadcast: root must be a rank in 0.." + std::to_string(n - 1) + ", got " +
                       std::to_string(root));
  const int v = (t.rank() - root + n) % n;
  int mask = 1;
  while (mask < n) {
    if (v & mask) {
      t.recv((v - mask + root) % n, tg, data);
      break;
    }
    mask <<= 1;
  }
  for (mask >>= 1; mask > 0; mask >>= 1)
    if (v + mask < n) t.send((v + mask + root) % n, tg, data);
}

}  // namespace distopt::collective
