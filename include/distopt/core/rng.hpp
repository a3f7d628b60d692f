#pragma once
// rng: a counter-based generator (Philox4x32-10; Salmon, Moraes, Dror, Shaw,
// "Parallel random numbers: as easy as 1, 2, 3", SC 2011). A stream is a pure
// function of (seed, rank, step, purpose): the key is the 64-bit seed, the
// 128-bit counter is (block, rank, step, purpose). Any worker can therefore
// regenerate any other worker's stream (random_k's shared indices) and a run
// reproduces exactly. Each block yields four 32-bit words; block indices are
// independent, so bulk generation (`fill_uniform`) vectorises.
//
//   distopt::rng g(seed, rank, step, distopt::purpose::compression);
//   float u = g.uniform();          // in [0, 1)
//   g.fill_uniform(buffer);         // bulk, same values as repeated uniform()

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

namespace distopt {

/// Why a stream is drawn; keeps streams for different uses independent.
enum class purpose : std::uint32_t {
  sampling = 1,     ///< mini-batch selection and data shuffling
  compression = 2,  ///< stochastic rounding, random sparsification
  topology = 3,     ///< random peer choice
  user = 4,         ///< free for applications; add an offset for more streams
};

namespace detail {

struct philox_key {
  std::uint32_t k0, k1;
};
using philox_block = std::array<std::uint32_t, 4>;

/// Philox4x32 with 10 rounds, as in Random123.
constexpr philox_block philox4x32_10(philox_block c, philox_key k) noexcept {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = std::uint64_t{m0} * c[0];
    const std::uint64_t p1 = std::uint64_t{m1} * c[2];
    c = {static_cast<std::uint32_t>(p1 >> 32) ^ c[1] ^ k.k0, static_cast<std::uint32_t>(p1),
         static_cast<std::uint32_t>(p0 >> 32) ^ c[3] ^ k.k1, static_cast<std::uint32_t>(p0)};
    k.k0 += w0;
    k.k1 += w1;
  }
  return c;
}

/// Maps 32 random bits to a float uniformly in [0, 1) using the top 24 bits.
constexpr float to_unit_float(std::uint32_t bits) noexcept { return static_cast<float>(bits >> 8) * 0x1.0p-24f; }

}  // namespace detail

/// Counter-based random stream. Cheap to construct; copy to fork.
class rng {
 public:
  rng() noexcept : rng(0, 0, 0, purpose::user) {}
  rng(std::uint64_t seed, std::uint32_t rank, std::uint32_t step, purpose p) noexcept
      : key_{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)},
        rank_(rank),
        step_(step),
        purpose_(static_cast<std::uint32_t>(p)) {}

  /// The next 32 random bits.
  std::uint32_t next_u32() noexcept {
    if (used_ == 4) refill();
    return words_[used_++];
  }
  /// Uniform float in [0, 1).
  float uniform() noexcept { return detail::to_unit_float(next_u32()); }
  /// Uniform integer in [0, n), n >= 1 (Lemire's multiply-shift; bias below 2^-32 * n).
  std::uint32_t below(std::uint32_t n) noexcept {
    return static_cast<std::uint32_t>((std::uint64_t{next_u32()} * n) >> 32);
  }
  /// Standard normal (Box-Muller; uses two uniforms per call).
  float normal() noexcept {
    const float u1 = 1.0f - uniform();  // (0, 1]
    const float u2 = uniform();
    return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.28318530717958647692f * u2);
  }

  /// Fills `out` with uniform floats in [0, 1): the same values, in order, as
  /// `out.size()` calls of `uniform()` from the current position.
  void fill_uniform(std::span<float> out) noexcept {
    std::size_t i = 0;
    while (i < out.size() && used_ != 4) out[i++] = uniform();
    const std::size_t whole = (out.size() - i) / 4;
    float* dst = out.data() + i;
    for (std::size_t b = 0; b < whole; ++b) {  // independent blocks: vectorisable
      const auto w = detail::philox4x32_10(counter(block_ + b), key_);
      for (int j = 0; j < 4; ++j) dst[4 * b + j] = detail::to_unit_float(w[j]);
    }
    block_ += whole;
    for (i += 4 * whole; i < out.size(); ++i) out[i] = uniform();
  }

  /// The raw block function, for tests and for generating at random offsets.
  detail::philox_block block(std::uint32_t index) const noexcept { return detail::philox4x32_10(counter(index), key_); }

 private:
  detail::philox_block counter(std::uint64_t block) const noexcept {
    return {static_cast<std::uint32_t>(block), rank_, step_, purpose_};
  }
  void refill() noexcept {
    words_ = detail::philox4x32_10(counter(block_++), key_);
    used_ = 0;
  }

  detail::philox_key key_;
  std::uint32_t rank_, step_, purpose_;
  std::uint64_t block_ = 0;
  detail::philox_block words_{};
  int used_ = 4;
};

}  // namespace distopt
