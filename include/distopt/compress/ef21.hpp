#pragma once
// compress::ef21<C> — EF21 (P. Richtárik, I. Sokolov, I. Fatkhullin, "EF21: A New, Simpler,
// Theoretically Better, and Practically Faster Error Feedback", NeurIPS 2021, arXiv:2106.05203;
// ALGORITHMS.md §5.13). Each worker i keeps g_i, its compressed estimate of its own vector, and
// sends only the compressed change; everyone tracks the aggregate g = (1/n) sum_i g_i:
//     worker i:  c_i = C(x_i - g_i);   g_i <- g_i + decode(c_i);   send c_i
//     everyone:  g <- g + (1/n) sum_i decode(c_i)                   (= (1/n) sum_i g_i)
// and the round's result is g, not the average of the messages. With the optimizer, x_i is the
// gradient of worker i and g the direction of the step: x^{t+1} = x^t - eta g^t.
//
// Initial state: g_i = g = 0, so the first message is C(x_i^0) and the first result is
// (1/n) sum_i C(x_i^0): the paper's initialisation g_i^0 = C(grad f_i(x^0)), one round later.
//
// Collective: the messages go through the averager's allgather like any other encoding
// (collective/average.hpp); the mean of their decodes is the mean change, which finish_round()
// adds to the tracked aggregate and writes back as the round's result. Every rank performs the
// same float operations in the same order, so all ranks hold the same g, bit for bit.
// decode gives the change decode(c_i), not g_i.
//
// Bound: needs a delta-contractive C (top_k: delta = k/n; scaled<C> for an unbiased C). With full
// gradients EF21 converges to a stationary point, not to a neighbourhood: the step size
// eta <= 1 / (L + L~ sqrt(beta / theta)), theta = 1 - sqrt(1 - delta),
// beta = (1 - delta) / (1 - sqrt(1 - delta)), L~ = sqrt((1/n) sum_i L_i^2) (Theorem 1).
// Wire size: that of C. State: four vectors of n floats (g_i, g, two scratch).
//
//   distopt::compress::ef21 c{distopt::compress::top_k{0.1}};
//   distopt::optimizer<decltype(c), distopt::topology::allreduce, distopt::staleness::synchronous,
//                      distopt::local_steps::every_step> opt(t, x0, {.learning_rate = 0.01f}, c);

#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/checkpoint.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::compress {

template <compressor C>
struct ef21 {
  static_assert(!stateful_encoder<C>,
                "compress::ef21<C>: C already keeps per-worker state; wrap a stateless compressor");

  /// The contractive compressor applied to x_i - g_i.
  C inner{};

  ef21() = default;
  explicit ef21(C c) : inner(std::move(c)) {}

  static constexpr bool unbiased = false;
  static constexpr bool summable = false;

  struct state {
    std::vector<float> local;      ///< g_i: the sum of this worker's decoded messages
    std::vector<float> aggregate;  ///< g: the tracked mean of every worker's g_i
    std::vector<float> work;       ///< x - g_i
    std::vector<float> decoded;    ///< this worker's decoded message

    /// Checkpoints hold g_i and g; the other two are scratch.
    void save(checkpoint_writer& w) const {
      w.floats(local);
      w.floats(aggregate);
    }
    void load(checkpoint_reader& r) {
      r.floats(local, "compress::ef21's g_i");
      r.floats(aggregate, "compress::ef21's aggregate g");
    }
  };

  state make_state(std::size_t n) const {
    return {std::vector<float>(n, 0.0f), std::vector<float>(n, 0.0f), std::vector<float>(n), std::vector<float>(n)};
  }

  /// Appends c = C(in - g_i) to `wire` and adds decode(c) to g_i.
  void encode(std::span<const float> in, byte_buffer& wire, rng& g, state& s) const {
    const std::size_t n = in.size();
    check_size(s, n);
    float* w = s.work.data();
    const float* local = s.local.data();
    for (std::size_t i = 0; i < n; ++i) w[i] = in[i] - local[i];
    const std::size_t start = wire.size();
    inner.encode(std::span<const float>(s.work), wire, g);
    inner.decode(std::span<const std::byte>(wire).subspan(start), std::span<float>(s.decoded));
    float* l = s.local.data();
    const float* d = s.decoded.data();
    for (std::size_t i = 0; i < n; ++i) l[i] += d[i];
  }

  /// The change decode(c_i) carried by one message (C's decode).
  void decode(std::span<const std::byte> bytes, std::span<float> out) const { inner.decode(bytes, out); }

  std::size_t max_encoded_bytes(std::size_t n) const { return inner.max_encoded_bytes(n); }

  /// Ends a round: `v` holds the mean of every worker's decoded message; it becomes the new
  /// aggregate g = g + v. The averager (collective/average.hpp) calls this after averaging.
  void finish_round(std::span<float> v, state& s) const {
    float* agg = s.aggregate.data();
    for (std::size_t i = 0; i < v.size(); ++i) {
      agg[i] += v[i];
      v[i] = agg[i];
    }
  }

 private:
  static void check_size(const state& s, std::size_t n) {
    if (s.local.size() != n)
      throw config_error("compress::ef21: state made for " + std::to_string(s.local.size()) + " floats used for " +
                         std::to_string(n) + "; make one state per vector size");
  }
};

}  // namespace distopt::compress
