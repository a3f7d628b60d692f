#pragma once
// compress::error_feedback<C> — error compensation (Seide et al., Interspeech 2014;
// Stich, Cordonnier, Jaggi, NeurIPS 2018, arXiv 1809.07599; Karimireddy et al.,
// ICML 2019, arXiv 1901.09847). Each worker keeps the residual e of what
// compression dropped and adds it back before the next compression:
//     p = g + e;   send C(p);   e <- p - decode(C(p))
// so every coordinate is eventually transmitted: sum_t decode(C(p_t)) + e_T = sum_t g_t.
// The memory holds gradients, not learning-rate-scaled steps (the "residual"
// variant of ChocoSGD and GRACE): the step size is applied after averaging.
//
// Bound: with a delta-contractive C, EF-SGD converges at the SGD rate plus a
// higher-order O((1-delta)/delta^2) term, so biased compressors (sign, top_k) work.
// Wire size: that of C. State: three vectors of n floats per worker.
//
//   distopt::compress::error_feedback ef{distopt::compress::top_k{0.01}};
//   distopt::optimizer<decltype(ef), distopt::topology::allreduce, ...> opt(t, x0, {}, ef);

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
struct error_feedback {
  static_assert(!stateful_encoder<C>,
                "compress::error_feedback<C>: C already keeps per-worker state; wrap a stateless compressor");

  /// The compressor whose error is fed back.
  C inner{};

  error_feedback() = default;
  explicit error_feedback(C c) : inner(std::move(c)) {}

  static constexpr bool unbiased = false;  // the residual makes single messages biased by design
  static constexpr bool summable = false;

  struct state {
    std::vector<float> residual;   // e
    std::vector<float> corrected;  // p = g + e
    std::vector<float> sent;       // decode(C(p))

    /// Checkpoints hold the residual; the other two are scratch.
    void save(checkpoint_writer& w) const { w.floats(residual); }
    void load(checkpoint_reader& r) { r.floats(residual, "compress::error_feedback's residual"); }
  };

  state make_state(std::size_t n) const {
    return {std::vector<float>(n, 0.0f), std::vector<float>(n), std::vector<float>(n)};
  }

  void encode(std::span<const float> in, byte_buffer& wire, rng& g, state& s) const {
    const std::size_t n = in.size();
    if (s.residual.size() != n)
      throw config_error("compress::error_feedback: state made for " + std::to_string(s.residual.size()) +
                         " floats used for " + std::to_string(n) + "; make one state per vector size");
    float* p = s.corrected.data();
    float* e = s.residual.data();
    for (std::size_t i = 0; i < n; ++i) p[i] = in[i] + e[i];
    const std::size_t start = wire.size();
    inner.encode(std::span<const float>(s.corrected), wire, g);
    inner.decode(std::span<const std::byte>(wire).subspan(start), std::span<float>(s.sent));
    const float* d = s.sent.data();
    for (std::size_t i = 0; i < n; ++i) e[i] = p[i] - d[i];
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const { inner.decode(bytes, out); }
  std::size_t max_encoded_bytes(std::size_t n) const { return inner.max_encoded_bytes(n); }
};

}  // namespace distopt::compress
