#pragma once
// compress::random_k, random_k_biased, random_k_shared, random_keep — random sparsification.
//
// random_k (unbiased): keep k = max(1, ceil(ratio * n)) indices drawn uniformly without
//   replacement (every k-subset equally likely), scaled by n/k: C(x)_i = (n/k) x_i on the subset.
//   Bound: E C(x) = x and E||C(x) - x||^2 = (n/k - 1)||x||^2, so omega = n/k - 1 (paper 3's
//   alpha = n/k). Wire: the sparse format of top_k (detail/sparse_format.hpp): u32 n, u32 k,
//   k indices at ceil(log2 n) bits, k float32 values: 8 + ceil(k * ceil(log2 n) / 8) + 4k bytes.
// random_k_biased: the same subset without scaling. Bound: E||C(x) - x||^2 = (1 - k/n)||x||^2,
//   delta = k/n in expectation (not for every draw). Same wire.
// random_k_shared (unbiased, summable): the subset is a function of (seed, step) only, never of
//   the rank: the indices come from rng(seed, rank = 0xFFFFFFFF, step, purpose::compression),
//   where `seed` is this compressor's knob (not the rng passed to encode, whose stream depends
//   on the rank and is unused here), and `step` is the round. All workers holding the same
//   configuration therefore pick the same indices in the same round, send only the values, and
//   encodings of one round can be added value by value (accumulate()). The step comes from the
//   per-worker state (make_state(n), advanced by one per encode; every worker encodes once per
//   round, so the states stay in lockstep) or, for the 3-argument encode, from the knob `step`.
//   Wire: u32 n, u32 step, k float32 values: 8 + 4k bytes. omega = n/k - 1.
// random_keep (unbiased): paper 3's random sparsification with keep probabilities p_i
//   (ALGORITHMS.md §4.2, after Wangni et al.): C(x)_i = x_i / p_i with probability p_i,
//   independently, else 0. The p_i are fixed knobs, not data-dependent (paper 3's class C1
//   with alpha = max_i 1/p_i; Wangni et al. choose p_i from |x_i| instead, which is not
//   implemented here): either one `probability` for every entry, or a vector `probabilities`
//   of exactly n entries. Bound: E||C(x) - x||^2 = sum_i (1 - p_i)/p_i x_i^2, so
//   omega = max_i (1 - p_i)/p_i = alpha - 1. The count is random (mean sum_i p_i).
//   Wire: the sparse format with a variable k: 8 + ceil(k * ceil(log2 n) / 8) + 4k bytes.
//   Draws: with one probability, geometric gaps between kept entries from 53-bit uniforms (O(k)
//   random numbers); with a vector, one 32-bit uniform per entry compared with p_i * 2^32.
// Randomness: only the rng passed to encode (random_k_shared: see above). Indices use
//   rng::below (Lemire multiply-shift), whose bias is below n * 2^-32 per draw.
// Papers: S. U. Stich, J.-B. Cordonnier, M. Jaggi, "Sparsified SGD with Memory", NeurIPS 2018,
//   arXiv:1809.07599 (random-k); J. Wangni, J. Wang, J. Liu, T. Zhang, "Gradient Sparsification for
//   Communication-Efficient Distributed Optimization", NeurIPS 2018, arXiv:1710.09854 (keep
//   probabilities); S. Khirirat, H. R. Feyzmahdavian, M. Johansson, "Distributed learning with
//   compressed gradients", arXiv:1806.06573 (paper 3: alpha = max 1/p_i, the bits trade-off).
// Knobs: ratio = 0.01 (random_k*; fraction kept, in (0, 1]); seed = 0 and step = 0
//   (random_k_shared); probability = 0.01 or probabilities = {} (random_keep; each in (0, 1]).
// Working memory (a bitmap of n bits and the index list) is a member: one object per worker.
//
//   distopt::compress::random_k c{0.01};          // unbiased, omega = n/k - 1
//   c.encode(x, wire, g);                           // g's stream: seed, rank, step
//   distopt::compress::random_k_shared s{0.01, /*seed=*/42};
//   auto st = s.make_state(x.size());               // one per worker
//   s.encode(x, wire, g, st);                       // 8 + 4k bytes, same indices on every rank

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "distopt/compress/detail/scratch.hpp"
#include "distopt/compress/detail/sparse_format.hpp"
#include "distopt/compress/detail/wire.hpp"
#include "distopt/compress/top_k.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/checkpoint.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::compress {

namespace detail {

struct index_sampler {
  scratch<std::uint64_t> bits;
  scratch<std::uint32_t> indices;

  /// A uniformly random k-subset of [0, n) (n < 2^32), increasing. Draws distinct indices
  /// into a bitmap (the complement's when k > n/2, so at most ~1.4 draws per index), then
  /// reads the bitmap in order.
  std::span<const std::uint32_t> sample(std::size_t n, std::size_t k, rng& g) {
    const bool complement = k > n / 2;
    const std::size_t draws = complement ? n - k : k, words = (n + 63) / 64;
    std::uint64_t* b = bits.sized(words).data();
    std::fill_n(b, words, std::uint64_t{0});
    for (std::size_t got = 0; got < draws;) {
      const std::uint32_t i = g.below(static_cast<std::uint32_t>(n));
      const std::uint64_t bit = std::uint64_t{1} << (i % 64);
      got += (b[i / 64] & bit) == 0;
      b[i / 64] |= bit;
    }
    std::uint32_t* out = indices.sized(k).data();
    std::size_t c = 0;
    for (std::size_t w = 0; w < words; ++w) {
      std::uint64_t word = complement ? ~b[w] : b[w];
      if (w + 1 == words && n % 64 != 0) word &= (std::uint64_t{1} << (n % 64)) - 1;
      while (word != 0) {
        out[c++] = static_cast<std::uint32_t>(64 * w + static_cast<std::size_t>(std::countr_zero(word)));
        word &= word - 1;
      }
    }
    return {out, k};
  }
};

inline void check_probability(double p, const char* who, const char* knob) {
  if (!(p > 0.0 && p <= 1.0))
    throw config_error(std::string(who) + ": " + knob + " must be in (0, 1], got " + std::to_string(p) +
                       "; it is the probability that an entry is kept");
}

}  // namespace detail

/// Uniform random-k; Unbiased selects the n/k scaling (random_k) or none (random_k_biased).
template <bool Unbiased>
struct basic_random_k {
  static constexpr bool unbiased = Unbiased;
  static constexpr bool summable = false;
  static constexpr const char* name = Unbiased ? "compress::random_k" : "compress::random_k_biased";

  double ratio = 0.01;  ///< fraction of entries kept, in (0, 1]

  basic_random_k() = default;
  explicit basic_random_k(double kept_fraction) : ratio(kept_fraction) { validate(); }
  void validate() const { detail::check_ratio(ratio, name); }

  /// Entries kept for a vector of n: max(1, ceil(ratio * n)), at most n.
  std::size_t k(std::size_t n) const noexcept { return detail::kept_count(ratio, n); }

  void encode(std::span<const float> in, byte_buffer& wire, rng& g) const {
    validate();
    const std::size_t n = in.size(), kk = k(n);
    detail::check_length(n, name);
    std::span<const std::uint32_t> idx;
    if (kk > 0) idx = sampler_.sample(n, kk, g);
    const float scale = Unbiased && kk > 0 ? static_cast<float>(double(n) / double(kk)) : 1.0f;
    detail::write_sparse(
        wire, n, idx, [&](std::size_t j) { return in[idx[j]] * scale; }, name);
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    validate();
    detail::read_sparse(bytes, out, name, k(out.size()));
  }

  std::size_t max_encoded_bytes(std::size_t n) const { return detail::sparse_bytes(n, k(n)); }

  /// random_k: the variance factor n/k - 1.
  double omega(std::size_t n) const requires Unbiased { return n == 0 ? 0.0 : double(n) / double(k(n)) - 1.0; }
  /// random_k_biased: the contraction k/n, in expectation over the draw.
  double delta(std::span<const float> x) const requires(!Unbiased) { return delta_bound(x.size()); }
  /// random_k_biased: the contraction every vector of n entries gets in expectation, k/n (1 for n = 0).
  double delta_bound(std::size_t n) const noexcept requires(!Unbiased) {
    return n == 0 ? 1.0 : double(k(n)) / double(n);
  }

  mutable detail::index_sampler sampler_;  ///< working memory (not copied); one object per thread
};

using random_k = basic_random_k<true>;
using random_k_biased = basic_random_k<false>;

/// Random-k with indices shared by all workers (regenerated from seed and step; none sent).
struct random_k_shared {
  static constexpr bool unbiased = true;
  static constexpr bool summable = true;
  static constexpr std::uint32_t shared_rank = 0xFFFFFFFFu;  ///< the rank of the index stream

  double ratio = 0.01;     ///< fraction of entries kept, in (0, 1]
  std::uint64_t seed = 0;  ///< seeds the index stream; the same on every worker
  std::uint32_t step = 0;  ///< the round of the 3-argument encode, and the first round of a state

  /// Per-worker round counter.
  struct state {
    std::uint32_t step = 0;

    void save(checkpoint_writer& w) const { w.u32(step); }
    void load(checkpoint_reader& r) { step = r.u32(); }
  };

  random_k_shared() = default;
  explicit random_k_shared(double kept_fraction, std::uint64_t index_seed = 0, std::uint32_t first_step = 0)
      : ratio(kept_fraction), seed(index_seed), step(first_step) {
    validate();
  }
  void validate() const { detail::check_ratio(ratio, "compress::random_k_shared"); }

  std::size_t k(std::size_t n) const noexcept { return detail::kept_count(ratio, n); }
  state make_state(std::size_t /*n*/) const { return state{step}; }

  /// The indices of round `round` for n entries: the same on every worker.
  std::span<const std::uint32_t> indices(std::size_t n, std::uint32_t round) const {
    rng shared(seed, shared_rank, round, purpose::compression);
    return sampler_.sample(n, k(n), shared);
  }

  /// Encodes round s.step and advances it.
  void encode(std::span<const float> in, byte_buffer& wire, rng& /*unused*/, state& s) const {
    encode_round(in, wire, s.step);
    ++s.step;
  }
  /// Encodes round `step` (the knob).
  void encode(std::span<const float> in, byte_buffer& wire, rng& /*unused*/) const { encode_round(in, wire, step); }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    validate();
    detail::reader r(bytes, "compress::random_k_shared");
    const std::size_t n = out.size(), kk = k(n);
    detail::expect_length(r, n);
    const auto round = r.get<std::uint32_t>("step");
    const auto values = r.take(4 * kk, "values");
    r.expect_end();
    std::fill(out.begin(), out.end(), 0.0f);
    if (kk == 0) return;
    const auto idx = indices(n, round);
    for (std::size_t j = 0; j < kk; ++j) std::memcpy(&out[idx[j]], values.data() + 4 * j, 4);
  }

  std::size_t max_encoded_bytes(std::size_t n) const { return 8 + 4 * k(n); }
  double omega(std::size_t n) const { return n == 0 ? 0.0 : double(n) / double(k(n)) - 1.0; }

  /// Adds the values of `part` into `sum`: both encodings of the same length and round.
  /// decode(sum) is then the sum of the decodes. Throws transport_error if they differ.
  static void accumulate(std::span<std::byte> sum, std::span<const std::byte> part) {
    if (sum.size() != part.size() || sum.size() < 8 || (sum.size() - 8) % 4 != 0 ||
        std::memcmp(sum.data(), part.data(), 8) != 0)
      throw transport_error(
          "compress::random_k_shared: cannot add encodings of different lengths or rounds; every worker must "
          "encode once per round with the same configuration");
    for (std::size_t at = 8; at < sum.size(); at += 4) {
      float a, b;
      std::memcpy(&a, sum.data() + at, 4);
      std::memcpy(&b, part.data() + at, 4);
      a += b;
      std::memcpy(sum.data() + at, &a, 4);
    }
  }

  mutable detail::index_sampler sampler_;  ///< working memory (not copied); one object per thread

 private:
  void encode_round(std::span<const float> in, byte_buffer& wire, std::uint32_t round) const {
    validate();
    const std::size_t n = in.size(), kk = k(n);
    detail::put_length(wire, n, "compress::random_k_shared");
    detail::put(wire, round);
    const auto values = detail::grow(wire, 4 * kk);
    if (kk == 0) return;
    const auto idx = indices(n, round);
    const auto scale = static_cast<float>(double(n) / double(kk));
    for (std::size_t j = 0; j < kk; ++j) {
      const float v = in[idx[j]] * scale;
      std::memcpy(values.data() + 4 * j, &v, 4);
    }
  }
};

/// Paper 3's random sparsification: keep entry i with probability p_i, scaled by 1/p_i.
struct random_keep {
  static constexpr bool unbiased = true;
  static constexpr bool summable = false;

  double probability = 0.01;  ///< p_i for every i, in (0, 1]; used when `probabilities` is empty
  std::shared_ptr<const std::vector<float>> probabilities;  ///< per-entry p_i (n of them), shared on copy

  random_keep() = default;
  explicit random_keep(double p) : probability(p) { validate(); }
  explicit random_keep(std::vector<float> p) : probabilities(std::make_shared<const std::vector<float>>(std::move(p))) {
    validate();
  }
  /// Checks `probability`, or every probabilities[i] (O(n): the constructor does it; encode
  /// only checks the scalar and the length).
  void validate() const {
    if (!probabilities) return detail::check_probability(probability, "compress::random_keep", "probability");
    for (float p : *probabilities) detail::check_probability(p, "compress::random_keep", "every probabilities[i]");
  }

  void encode(std::span<const float> in, byte_buffer& wire, rng& g) const {
    const std::size_t n = in.size();
    check_size(n);
    detail::check_length(n, "compress::random_keep");
    auto& idx = indices_.get();
    idx.clear();
    if (!probabilities) {
      if (probability >= 1.0) {
        for (std::size_t i = 0; i < n; ++i) idx.push_back(static_cast<std::uint32_t>(i));
      } else {
        // Gaps between kept entries are geometric: P(gap >= m) = (1 - p)^m.
        const double log_q = std::log1p(-probability);
        for (std::size_t i = 0;;) {
          const std::uint64_t hi = g.next_u32(), lo = g.next_u32();
          const double u = double(((hi << 21) | (lo >> 11)) + 1) * 0x1.0p-53;  // (0, 1]
          const double gap = std::floor(std::log(u) / log_q);
          if (gap >= double(n - i)) break;
          i += static_cast<std::size_t>(gap);
          idx.push_back(static_cast<std::uint32_t>(i));
          if (++i >= n) break;
        }
      }
      const auto inv = static_cast<float>(1.0 / probability);
      detail::write_sparse(
          wire, n, idx, [&](std::size_t j) { return in[idx[j]] * inv; }, "compress::random_keep");
    } else {
      const auto& p = *probabilities;
      for (std::size_t i = 0; i < n; ++i)
        if (double(g.next_u32()) < double(p[i]) * 4294967296.0) idx.push_back(static_cast<std::uint32_t>(i));
      detail::write_sparse(
          wire, n, idx, [&](std::size_t j) { return in[idx[j]] / p[idx[j]]; }, "compress::random_keep");
    }
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    check_size(out.size());
    detail::read_sparse(bytes, out, "compress::random_keep");
  }

  std::size_t max_encoded_bytes(std::size_t n) const { return detail::sparse_bytes(n, n); }

  /// max_i (1 - p_i) / p_i.
  double omega(std::size_t /*n*/) const {
    if (!probabilities) return (1.0 - probability) / probability;
    double w = 0.0;
    for (float p : *probabilities) w = std::max(w, (1.0 - double(p)) / double(p));
    return w;
  }

  mutable detail::scratch<std::uint32_t> indices_;  ///< working memory (not copied); one object per thread

 private:
  void check_size(std::size_t n) const {
    if (!probabilities) detail::check_probability(probability, "compress::random_keep", "probability");
    if (probabilities && probabilities->size() != n)
      throw config_error("compress::random_keep: probabilities has " + std::to_string(probabilities->size()) +
                         " entries but the vector has " + std::to_string(n) + "; give one probability per entry");
  }
};

}  // namespace distopt::compress
