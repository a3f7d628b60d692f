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
// delta_bound(n) is C's (compress/contraction.hpp): DeepSqueeze derives its consensus step from it.
// Wire size: that of C. State: three vectors of n floats per worker.
//
// Momentum (options.momentum mu > 0). Heavy-ball momentum applied to the average of the
// compressed gradients stalls or diverges: the residual-held part of every coordinate is
// amplified by 1/(1 - mu) out of step with the rest. So when a round averages gradients the
// optimizer applies momentum on each worker BEFORE compression (momentum_before_compression) and
// steps along the average as it is, DGC's momentum correction (Y. Lin, S. Han, H. Mao, Y. Wang,
// W. J. Dally, "Deep Gradient Compression", ICLR 2018, arXiv 1712.01887):
//     u <- mu u + g;   p = u + e;   send C(p);   e <- p - decode(C(p));   x <- x - eta (1/n) sum decode(C(p))
// (Nesterov: p = g + mu u + e; weight decay is part of g). This is error feedback on each
// worker's momentum, dist-EF-SGDM (S. Zheng, Z. Huang, J. T. Kwok, NeurIPS 2019, arXiv
// 1905.10936), whose distance to the optimum shrinks with the step.
// factor_masking = true adds DGC's momentum factor masking: u_i <- 0 where e_i == 0, i.e. where
// the accumulated value went out in full (a sparsifier's sent coordinates; a dense lossy C such
// as scaled_sign sends none in full, so masking does nothing there). Off by default: masking
// weighs each worker's gradient by how often its coordinates are sent (a coordinate sent every
// round passes g, one sent rarely up to g / (1 - mu)), so when the workers' data differ the
// iterates stop at a distance that does not shrink with the step (tests/
// test_error_feedback_momentum.cpp, least squares, top-10%: 1.2% at eta = 0.01 and 7% at
// eta = 0.001 masked; 1.3% and 0.16% unmasked). Rounds that average model deltas (local
// steps, gossip, stale parameter servers) carry the momentum the local steps applied.
//
//   distopt::compress::error_feedback ef{distopt::compress::top_k{0.01}};
//   distopt::optimizer<decltype(ef), distopt::topology::allreduce, ...> opt(t, x0, {.momentum = 0.9f}, ef);

#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "distopt/compress/contraction.hpp"
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
  /// DGC's momentum factor masking (see above); off: error feedback on the momentum (dist-EF-SGDM).
  bool factor_masking = false;

  error_feedback() = default;
  explicit error_feedback(C c) : inner(std::move(c)) {}

  static constexpr bool unbiased = false;  // the residual makes single messages biased by design
  static constexpr bool summable = false;
  /// The optimizer applies momentum before encoding, then calls mask_momentum (see above).
  static constexpr bool momentum_before_compression = true;

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

  /// Factor masking (when factor_masking): clears the momentum of the coordinates the last
  /// encode sent in full (residual exactly 0).
  void mask_momentum(std::span<float> velocity, const state& s) const {
    if (!factor_masking) return;
    if (velocity.size() != s.residual.size())
      throw config_error("compress::error_feedback: mask_momentum got " + std::to_string(velocity.size()) +
                         " momentum entries for a state of " + std::to_string(s.residual.size()));
    const float* e = s.residual.data();
    for (std::size_t i = 0; i < velocity.size(); ++i) velocity[i] = e[i] == 0.0f ? 0.0f : velocity[i];
  }

  /// C's guaranteed contraction for n entries (compress/contraction.hpp).
  double delta_bound(std::size_t n) const { return compress::delta_bound(inner, n); }
};

}  // namespace distopt::compress
