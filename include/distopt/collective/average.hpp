#pragma once
// average: the centralized round. Every rank ends with the same vector,
// (1/n) sum_k decode(encode_k(v_k)) with the sum taken in a fixed order, so
// synchronous runs are bit-reproducible. The reduction is chosen by
// reduction_for_v<C> (core/traits.hpp): raw floats go around the ring; summable
// encodings go around the ring and are added as encodings; a compressor with its
// own collective (power_sgd) runs it; other encodings are allgathered and every
// rank decodes them in rank order. A compressor that tracks an aggregate (ef21)
// declares finish_round(v, state), which turns the mean of the decodes into the result.
//
//   distopt::collective::averager<distopt::compress::identity> avg;
//   avg.average(t, gradient, compressor, g);   // in place

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "distopt/collective/allgather.hpp"
#include "distopt/collective/ring_allreduce.hpp"
#include "distopt/collective/ring_encoded.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/checkpoint.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/traits.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt::collective {

template <compressor C>
class averager {
 public:
  /// Replaces `v` by the average over all ranks of the (compressed) vectors.
  void average(transport_ref t, std::span<float> v, C& c, rng& g) {
    if constexpr (reduction_for_v<C> == reduction::ring_on_floats) {
      if (!t.native_allreduce_mean(v)) ring_allreduce(t, v, reduce_op::mean, ring_);  // native: MPI_Allreduce
    } else {
      if (!state_) state_.emplace(make_compressor_state(c, v.size()));
      if constexpr (reduction_for_v<C> == reduction::compressor_driven)
        c.average(t, v, *state_, g);
      else if constexpr (reduction_for_v<C> == reduction::ring_on_encodings)
        ring_allreduce_encoded(t, v, c, *state_, g, encoded_ring_);
      else
        gather_decode(t, v, c, g);
    }
  }

  /// The average over all ranks of `in`, which is left unchanged: `in` itself when nothing
  /// changes it (one rank, raw floats), otherwise `scratch` (resized to in.size()). Raw
  /// floats go around the ring straight from `in`, so the caller's gradient is not copied.
  std::span<const float> average(transport_ref t, std::span<const float> in, std::vector<float>& scratch, C& c,
                                 rng& g) {
    if constexpr (reduction_for_v<C> == reduction::ring_on_floats)
      if (t.size() == 1) return in;
    scratch.resize(in.size());
    if constexpr (reduction_for_v<C> == reduction::ring_on_floats) {
      if (!t.native_allreduce_mean(in, scratch)) ring_allreduce(t, in, scratch, reduce_op::mean, ring_);
    } else {
      std::copy(in.begin(), in.end(), scratch.begin());
      average(t, scratch, c, g);
    }
    return scratch;
  }

  /// This worker's compressor state (residuals, EF21's g_i, ...); null before the first round.
  const compressor_state_t<C>* state() const { return state_ ? &*state_ : nullptr; }

  /// Checkpoints hold the compressor state (the workspaces are scratch).
  void save(checkpoint_writer& w) const { save_compressor_state<C>(w, state_); }
  /// Loads it; a state is made for vectors of n floats.
  void load(checkpoint_reader& r, C& c, std::size_t n) { load_compressor_state(r, state_, c, n); }

 private:
  void gather_decode(transport_ref t, std::span<float> v, C& c, rng& g) {
    wire_.clear();
    encode(c, v, wire_, g, *state_);
    allgather(t, wire_, parts_);
    decoded_.resize(v.size());
    const float n = static_cast<float>(t.size());
    for (std::size_t k = 0; k < parts_.size(); ++k) {
      c.decode(parts_[k], decoded_);
      if (k == 0)
        std::copy(decoded_.begin(), decoded_.end(), v.begin());
      else
        for (std::size_t i = 0; i < v.size(); ++i) v[i] += decoded_[i];
    }
    for (float& x : v) x /= n;
    if constexpr (requires { c.finish_round(v, *state_); }) c.finish_round(v, *state_);  // ef21: v -> aggregate
  }

  allreduce_workspace ring_;
  encoded_ring_workspace encoded_ring_;
  std::optional<compressor_state_t<C>> state_;  // made at the first round, when the size is known
  byte_buffer wire_;
  std::vector<byte_buffer> parts_;
  std::vector<float> decoded_;
};

}  // namespace distopt::collective
