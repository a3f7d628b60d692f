#pragma once
// topology::one_peer_exponential — time-varying, one peer per round: in round t rank i
// averages with p = i xor 2^k, k = t mod tau, tau = ceil(log2 n):
//   x_i <- (x_i + x_p) / 2,   or x_i unchanged when p >= n (possible only when n is not a power of two).
// Each W_t is symmetric and doubly stochastic; the union over tau rounds is connected
// (clearing one bit at a time walks any rank down to 0). For n a power of two the
// product of tau consecutive rounds is exactly 11^T / n: exact averaging in log2 n
// rounds of one message each, the property of the one-peer exponential graph of
// Ying et al., "Exponential Graph is Provably Efficient for Decentralized Deep
// Training", NeurIPS 2021, arXiv 2110.13363. Their graph is directed
// (i -> i + 2^k mod n); this symmetric pairing is used instead so that both ends of a
// message agree on the round's weights.
// Public copies need fixed neighbours, so this topology runs the exact schemes
// (compress::identity); a compressor is refused at compile time.
//
//   distopt::optimizer<distopt::compress::identity, distopt::topology::one_peer_exponential,
//                      distopt::staleness::synchronous, distopt::local_steps::every_step> opt(t, x0);

#include <bit>
#include <cstdint>
#include <string>

#include "distopt/core/errors.hpp"
#include "distopt/topology/gossip.hpp"

namespace distopt::topology {

struct one_peer_exponential {
  static constexpr exchange_kind exchange = exchange_kind::models;

  struct schedule_type {
    int n;
    int tau;  // ceil(log2 n); 0 for n = 1
    void row(int rank, std::uint64_t round, std::uint64_t /*seed*/, mixing_row& out) const {
      if (tau == 0) return out.assign_pair(-1);
      const int partner = rank ^ (1 << static_cast<int>(round % static_cast<std::uint64_t>(tau)));
      out.assign_pair(partner < n ? partner : -1);
    }
  };

  schedule_type schedule(int n) const {
    validate(n);
    return {n, static_cast<int>(std::bit_width(static_cast<unsigned>(n - 1)))};
  }
  void validate(int n) const {
    if (n < 1)
      throw config_error("topology::one_peer_exponential: the world size must be >= 1, got " + std::to_string(n));
  }
};

}  // namespace distopt::topology
