#pragma once
// topology::parameter_server — a centralized topology (exchange_kind::gradients): one
// rank, `server_rank` (default 0), is the server and also a worker. Each round
//   push: every worker k != server sends its encoding C(g_k) to the server;
//   server: decodes the n encodings in rank order (its own included), sums them in
//           that order and divides by n: v = (1/n) sum_k decode(C(g_k));
//   pull: the server sends the result to every other worker, and all ranks step with it.
// The downlink is
//  - downlink::exact (parameter_server): the floats of v, 4 d bytes (bit-exact);
//  - downlink::compressed (compressed_parameter_server): the server encodes v with the
//    same compressor C but with its OWN compressor state. With C = error_feedback<X>
//    that state is the server's error-feedback memory e_s:
//        p = v + e_s;  send X(p);  e_s <- p - decode(X(p))
//    which with EF on the workers as well is DoubleSqueeze (Tang, Yu, Lian, Zhang, Liu,
//    ICML 2019, arXiv 1905.05957; ALGORITHMS.md §2.4, §5.14). With a stateless C (top_k)
//    the downlink is compressed without error feedback on either side. Every rank, the
//    server included, steps with decode(downlink bytes), so all ranks hold the same bits.
//
// Cost per round, d floats, up = size of one uplink encoding, down = 4 d (exact) or the
// size of the server's encoding (compressed):
//   server: sends (n-1) messages, (n-1)·down bytes; receives (n-1) messages, (n-1)·up bytes;
//   other worker: sends 1 message of up bytes; receives 1 message of down bytes.
// Latency: 2 alpha (one push, one pull), but the server's link carries (n-1)(up + down)
// bytes, which is the bottleneck the ring allreduce avoids.
//
// Shards (staleness::bounded and staleness::asynchronous only; protocols/stale_server.hpp):
// with `shards` = S > 1 the S ranks server_rank .. server_rank + S - 1 each own a contiguous
// 1/S of the coordinates (shard s: [s d / S, (s + 1) d / S)), so the server's link carries 1/S of
// the traffic (ALGORITHMS.md §2.4). The synchronous round has one server and refuses S > 1.
// Compressors that drive their own collective (power_sgd) are refused at compile time, as are
// compressors that track an aggregate (ef21) with a compressed downlink.
//
//   distopt::optimizer<distopt::compress::identity, distopt::topology::parameter_server,
//                      distopt::staleness::synchronous, distopt::local_steps::every_step>
//       opt(t, x0, {}, {}, {.server_rank = 2});
//   distopt::algorithms::async_ps_sgd<> sharded(t, x0, {}, {}, {.shards = 2});   // ranks 0 and 1 serve half each

#include <string>

#include "distopt/core/concepts.hpp"
#include "distopt/core/errors.hpp"

namespace distopt::topology {

/// What the parameter server sends back.
enum class downlink {
  exact,       ///< the average as floats
  compressed,  ///< the average encoded with C and the server's own compressor state (EF memory)
};

template <downlink D>
struct basic_parameter_server {
  static constexpr exchange_kind exchange = exchange_kind::gradients;
  static constexpr downlink downlink_mode = D;
  /// The rank that acts as the server (it is also a worker); with shards > 1 the first of the
  /// server ranks.
  int server_rank = 0;
  /// Server shards S >= 1 (stale protocol only): ranks server_rank .. server_rank + S - 1 each
  /// serve 1/S of the coordinates.
  int shards = 1;

  /// Any world size >= 1 works; the server ranks must be ranks of it.
  void validate(int world_size) const {
    if (server_rank < 0 || server_rank >= world_size)
      throw config_error("topology::parameter_server: server_rank must be a rank in 0.." +
                         std::to_string(world_size - 1) + ", got " + std::to_string(server_rank));
    if (shards < 1 || shards > world_size - server_rank)
      throw config_error("topology::parameter_server: shards must be in 1.." +
                         std::to_string(world_size - server_rank) +
                         " so that the server ranks server_rank .. server_rank + shards - 1 exist in a world of " +
                         std::to_string(world_size) + ", got " + std::to_string(shards));
  }
};

/// Parameter server with an exact downlink.
using parameter_server = basic_parameter_server<downlink::exact>;
/// Parameter server whose downlink is compressed with the server's own state (DoubleSqueeze with
/// C = error_feedback<X>).
using compressed_parameter_server = basic_parameter_server<downlink::compressed>;

}  // namespace distopt::topology
