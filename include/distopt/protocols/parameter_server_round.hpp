#pragma once
// ps_averager<C, D>: the synchronous round of topology::parameter_server, run by
// protocols::centralized (see that header for the
// algorithm and its cost). Same interface as collective::averager<C>: average(t, v, c, g)
// replaces v, on every rank, by the same vector:
//   exact downlink:      (1/n) sum_k decode(C(v_k)), summed in rank order;
//   compressed downlink: decode(C_s((1/n) sum_k decode(C(v_k)))), where C_s is C run with
//                        the server's own compressor state (its error-feedback memory when
//                        C = error_feedback<X>).
// Point-to-point messages only: n-1 pushes into the server, n-1 pulls out of it.
//
//   distopt::protocols::ps_averager<distopt::compress::identity> avg(/*server_rank=*/0);
//   avg.average(t, gradient, compressor, g);   // in place

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/checkpoint.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/traits.hpp"
#include "distopt/core/transport_ref.hpp"
#include "distopt/topology/parameter_server.hpp"

namespace distopt::protocols {

inline constexpr tag ps_push_tag = distopt::detail::reserved_tag(distopt::detail::reserved::ps_push);
inline constexpr tag ps_pull_tag = distopt::detail::reserved_tag(distopt::detail::reserved::ps_pull);

template <compressor C, topology::downlink D = topology::downlink::exact>
class ps_averager {
  static_assert(!drives_own_collective_v<C>,
                "topology::parameter_server: C runs its own collective (power_sgd); use topology::allreduce");
  static_assert(
      D == topology::downlink::exact ||
          !requires(C & c, std::span<float> v, compressor_state_t<C>& s) { c.finish_round(v, s); },
      "topology::compressed_parameter_server: C tracks an aggregate (ef21); use the exact downlink");

 public:
  explicit ps_averager(int server_rank = 0) : server_(server_rank) {}
  explicit ps_averager(const topology::basic_parameter_server<D>& topo) : server_(topo.server_rank) {}

  /// Replaces `v` by the server's result (see the header comment), identical on every rank.
  void average(transport_ref t, std::span<float> v, C& c, rng& g) {
    const int n = t.size();
    const int r = t.rank();
    if (server_ < 0 || server_ >= n)
      throw config_error("parameter_server: server_rank must be a rank in 0.." + std::to_string(n - 1) + ", got " +
                         std::to_string(server_));
    if (!state_) state_.emplace(make_compressor_state(c, v.size()));
    wire_.clear();
    encode(c, v, wire_, g, *state_);
    if (r != server_) {
      t.send(server_, ps_push_tag, wire_);
      t.recv(server_, ps_pull_tag, down_);
      if constexpr (D == topology::downlink::exact) {
        if (down_.size() != v.size() * sizeof(float))
          throw transport_error("parameter_server: rank " + std::to_string(r) + " got a downlink of " +
                                std::to_string(down_.size()) + " bytes from the server, expected " +
                                std::to_string(v.size() * sizeof(float)));
        std::memcpy(v.data(), down_.data(), down_.size());
      } else {
        c.decode(down_, v);
      }
    } else {
      serve(t, v, c, g);
    }
    if constexpr (requires { c.finish_round(v, *state_); }) c.finish_round(v, *state_);  // ef21: v -> aggregate
  }

  /// The same, out of place: `in` is left unchanged, the result is `scratch` (resized).
  std::span<const float> average(transport_ref t, std::span<const float> in, std::vector<float>& scratch, C& c,
                                 rng& g) {
    scratch.assign(in.begin(), in.end());
    average(t, scratch, c, g);
    return scratch;
  }

  /// This worker's compressor state (residuals, EF21's g_i, ...); null before the first round.
  const compressor_state_t<C>* state() const { return state_ ? &*state_ : nullptr; }
  /// The server's downlink state (its error-feedback memory); null on other ranks, with the
  /// exact downlink, and before the first round.
  const compressor_state_t<C>* server_state() const { return server_state_ ? &*server_state_ : nullptr; }
  int server_rank() const { return server_; }

  /// Checkpoints hold the server's rank (compared on load), this worker's state and the
  /// server's downlink state (DoubleSqueeze's e_s).
  void save(checkpoint_writer& w) const {
    w.u32(static_cast<std::uint32_t>(server_));
    save_compressor_state<C>(w, state_);
    save_compressor_state<C>(w, server_state_);
  }
  /// Loads them; states are made for vectors of n floats.
  void load(checkpoint_reader& r, C& c, std::size_t n) {
    const std::uint32_t server = r.u32();
    if (server != static_cast<std::uint32_t>(server_))
      r.refuse("the parameter server is rank " + std::to_string(server) + " in the checkpoint, rank " +
               std::to_string(server_) + " here (topology server_rank)");
    load_compressor_state(r, state_, c, n);
    load_compressor_state(r, server_state_, c, n);
  }

 private:
  void serve(transport_ref t, std::span<float> v, C& c, rng& g) {
    const int n = t.size();
    decoded_.resize(v.size());
    for (int k = 0; k < n; ++k) {  // rank order, whatever the server's rank
      if (k == server_) {
        c.decode(wire_, decoded_);
      } else {
        t.recv(k, ps_push_tag, part_);
        c.decode(part_, decoded_);
      }
      if (k == 0)
        std::copy(decoded_.begin(), decoded_.end(), v.begin());
      else
        for (std::size_t i = 0; i < v.size(); ++i) v[i] += decoded_[i];
    }
    const float nf = static_cast<float>(n);
    for (float& x : v) x /= nf;
    std::span<const std::byte> down;
    if constexpr (D == topology::downlink::exact) {
      down = std::as_bytes(std::span<const float>(v));
    } else {
      if (!server_state_) server_state_.emplace(make_compressor_state(c, v.size()));
      down_.clear();
      encode(c, std::span<const float>(v), down_, g, *server_state_);
      c.decode(down_, v);  // the server steps with what the workers decode
      down = down_;
    }
    for (int k = 0; k < n; ++k)
      if (k != server_) t.send(k, ps_pull_tag, down);
  }

  int server_;
  std::optional<compressor_state_t<C>> state_;         // this worker's (uplink) state
  std::optional<compressor_state_t<C>> server_state_;  // the server's downlink state (EF memory e_s)
  byte_buffer wire_;
  byte_buffer part_;
  byte_buffer down_;
  std::vector<float> decoded_;
};

}  // namespace distopt::protocols
