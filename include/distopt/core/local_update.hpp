#pragma once
// local_update: the optimizer's own arithmetic, the SGD step every protocol applies
// (PyTorch's convention, ensmallen's MomentumUpdate):
//   d = g + lambda x                                  (weight decay)
//   v = mu v + d;  d = nesterov ? d + mu v : v        (heavy-ball or Nesterov momentum)
//   x = x - eta s d                                   (s: a protocol's step scale, e.g. 1/(1+staleness))
// apply() does all of it in one pass over x, g and v, reading g where it lies, so the
// uncompressed synchronous step touches each vector once (bench_optimizer measures it
// against a hand-written loop).
//
//   distopt::local_update u(options, n);
//   u.apply(x, g);          // x -= eta d(g)
//   u.direct(d, x);         // d <- d(d) in place, for protocols that mix eta d with peers
//   u.descend(x, d);        // x -= eta s d, d already a direction (momentum applied before compression)

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "distopt/core/checkpoint.hpp"
#include "distopt/core/options.hpp"

namespace distopt {

namespace detail {

// True iff no entry is Inf or NaN, in one vectorised read-only pass. An entry is Inf or
// NaN iff its exponent bits are all ones, iff adding one to the exponent field carries
// into the sign bit; 16 independent accumulators keep the OR chain off the critical path
// (Eigen's allFinite() is a scalar loop that cost more than a whole SGD step).
inline bool all_finite(std::span<const float> v) noexcept {
  const float* __restrict in = v.data();
  const std::size_t n = v.size();
  auto flag = [](float x) { return (std::bit_cast<std::uint32_t>(x) & 0x7f800000u) + 0x00800000u; };
  constexpr std::size_t lanes = 16;
  std::uint32_t flags[lanes] = {};
  std::size_t i = 0;
  for (; i + lanes <= n; i += lanes)
    for (std::size_t j = 0; j < lanes; ++j) flags[j] |= flag(in[i + j]);
  std::uint32_t any = 0;
  for (; i < n; ++i) any |= flag(in[i]);
  for (const std::uint32_t f : flags) any |= f;
  return (any & 0x80000000u) == 0;
}

}  // namespace detail

class local_update {
 public:
  local_update(const options& o, std::size_t n)
      : eta_(o.learning_rate), mu_(o.momentum), lambda_(o.weight_decay), nesterov_(o.nesterov) {
    if (mu_ != 0.0f) velocity_.assign(n, 0.0f);
  }

  /// x <- x - eta s d(g), updating the momentum buffer; g may alias nothing else.
  void apply(std::span<float> x, std::span<const float> g) {
    const float step = step_size();
    float* __restrict xp = x.data();
    const float* __restrict gp = g.data();
    const std::size_t n = x.size();
    if (mu_ == 0.0f && lambda_ == 0.0f) {
      descend(x, g);
      return;
    }
    float* __restrict vp = velocity_.data();
    for (std::size_t i = 0; i < n; ++i) {
      float d = gp[i];
      if (lambda_ != 0.0f) d += lambda_ * xp[i];
      if (mu_ != 0.0f) {
        vp[i] = mu_ * vp[i] + d;
        d = nesterov_ ? d + mu_ * vp[i] : vp[i];
      }
      xp[i] -= step * d;
    }
  }

  /// d <- d(d) in place (decay with x, then momentum), without stepping.
  void direct(std::span<float> d, std::span<const float> x) {
    float* __restrict dp = d.data();
    const float* __restrict xp = x.data();
    float* __restrict vp = velocity_.data();
    const std::size_t n = d.size();
    if (lambda_ != 0.0f)
      for (std::size_t i = 0; i < n; ++i) dp[i] += lambda_ * xp[i];
    if (mu_ != 0.0f)
      for (std::size_t i = 0; i < n; ++i) {
        vp[i] = mu_ * vp[i] + dp[i];
        dp[i] = nesterov_ ? dp[i] + mu_ * vp[i] : vp[i];
      }
  }

  /// x <- x - eta s d for a direction d that direct() made (and a round averaged).
  void descend(std::span<float> x, std::span<const float> d) const {
    const float step = step_size();
    float* __restrict xp = x.data();
    const float* __restrict dp = d.data();
    for (std::size_t i = 0; i < x.size(); ++i) xp[i] -= step * dp[i];
  }

  /// The momentum buffer v (empty without momentum), for a compressor that masks it (DGC).
  std::span<float> velocity() noexcept { return velocity_; }

  /// eta s: the step a protocol multiplies a direction by.
  float step_size() const noexcept { return eta_ * scale_; }
  float learning_rate() const noexcept { return eta_; }
  void set_learning_rate(float eta) noexcept { eta_ = eta; }
  /// A protocol's factor on eta (1/(1 + staleness) under staleness-aware steps), 1 by default.
  void set_scale(float s) noexcept { scale_ = s; }

  /// Checkpoints hold the step size, the scale and the momentum buffer; the other knobs are
  /// options, compared by the optimizer.
  void save(checkpoint_writer& w) const {
    w.f32(eta_);
    w.f32(scale_);
    w.floats(velocity_);
  }
  void load(checkpoint_reader& r) {
    const float eta = r.f32(), scale = r.f32();
    if (!(std::isfinite(eta) && eta > 0.0f && std::isfinite(scale) && scale >= 0.0f))
      r.fail("the learning rate " + std::to_string(eta) + " or step scale " + std::to_string(scale) +
             " is not a finite positive number");
    r.floats(velocity_, "the momentum buffer (options.momentum)");
    eta_ = eta;
    scale_ = scale;
  }

 private:
  float eta_, mu_, lambda_;
  bool nesterov_;
  float scale_ = 1.0f;
  std::vector<float> velocity_;
};

}  // namespace distopt
