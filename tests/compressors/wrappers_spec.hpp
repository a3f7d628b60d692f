#pragma once
// suite::spec<C> for the wrappers scaled<C> and ef21<C> and for lattice<Bits>, written from
// shared/ALGORITHMS.md (§5.13, §5.15, §3.5) and the papers, never by calling the headers' omega()/delta().
// Inner compressors' sizes and omegas come from the specs of their own families.
//
// ef21<C> keeps per-worker state, so the suite (which encodes statelessly) runs it through
// ef21_first_round<C>: a fresh state per message, i.e. EF21's first round, which sends C(x - 0).
// Later rounds are tested in tests/test_compress_wrappers.cpp.
//
// lattice<Bits> has an absolute error bound (s^2/4 per coordinate), not a relative omega, so the
// suite's bound test is not applied to it; test_compress_wrappers.cpp checks it instead. Its
// configurations use a side large enough that the reference-0 decode is exact for the suite's
// inputs (|x_i| < 12.7 and < 7; the largest of 2^20 Gaussians is about 5.5).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include <distopt/compress/ef21.hpp>
#include <distopt/compress/lattice.hpp>
#include <distopt/compress/scaled.hpp>

#include "compressors/quantizers_spec.hpp"
#include "compressors/sparsifiers_spec.hpp"

namespace suite {

/// ef21<C> with a new state for every message: EF21's first round (g_i = 0).
template <class C>
struct ef21_first_round {
  static constexpr bool unbiased = false;
  distopt::compress::ef21<C> wrapped{};

  void encode(std::span<const float> in, distopt::byte_buffer& wire, distopt::rng& g) const {
    auto s = wrapped.make_state(in.size());
    wrapped.encode(in, wire, g, s);
  }
  void decode(std::span<const std::byte> bytes, std::span<float> out) const { wrapped.decode(bytes, out); }
  std::size_t max_encoded_bytes(std::size_t n) const { return wrapped.max_encoded_bytes(n); }
};

// scaled<qsgd<B>>: qsgd's wire; delta = 1 / (1 + omega_qsgd) in expectation (ALGORITHMS.md §5.15).
// qsgd's omega is a worst case, so the mean over the suite's draws sits well inside it.
template <unsigned B>
struct spec<distopt::compress::scaled<distopt::compress::qsgd<B>>> {
  using inner = distopt::compress::qsgd<B>;
  using C = distopt::compress::scaled<inner>;
  static constexpr bool randomized = true;
  static std::vector<C> configs() { return {C{}, C{inner{.bucket = 37}}}; }
  static std::optional<std::size_t> bytes(const C& c, std::size_t n) { return spec<inner>::bytes(c.inner, n); }
  static double delta(const C& c, std::span<const float> x) {
    return 1.0 / (1.0 + spec<inner>::omega(c.inner, x.size()));
  }
};

// scaled<random_k>: omega = n/k - 1, so C'(x) keeps k random entries unscaled and
// E||C'(x) - x||^2 = (1 - k/n)||x||^2 exactly: the bound is met with equality in expectation. The
// suite averages D >= 20 draws (200 for n <= 4096), so the delta checked here is k/n less 5 standard
// deviations of a 20-draw mean: a k-subset drawn without replacement has
// Var(sum_{i in S} x_i^2) = k (n - k) / (n - 1) * var_i(x_i^2). Under the CLT a false alarm has
// probability < 1e-6 per check.
template <>
struct spec<distopt::compress::scaled<distopt::compress::random_k>> {
  using C = distopt::compress::scaled<distopt::compress::random_k>;
  static constexpr bool randomized = true;
  static std::vector<C> configs() { return {C{}, C{distopt::compress::random_k{0.3}}}; }
  static std::optional<std::size_t> bytes(const C& c, std::size_t n) {
    return sparsifiers::sparse_bytes(n, sparsifiers::kept(c.inner.ratio, n));
  }
  static double delta(const C& c, std::span<const float> x) {
    const std::size_t n = x.size(), k = sparsifiers::kept(c.inner.ratio, n);
    if (n < 2) return 1.0;  // k = n: nothing dropped
    double sum = 0, sum2 = 0;
    for (float v : x) {
      const double a = double(v) * double(v);
      sum += a;
      sum2 += a * a;
    }
    if (sum == 0.0) return 0.0;
    const double var_a = sum2 / double(n) - (sum / double(n)) * (sum / double(n));
    const double var_err = double(k) * double(n - k) / double(n - 1) * std::max(var_a, 0.0);
    return double(k) / double(n) - 5.0 * std::sqrt(var_err / 20.0) / sum;
  }
};

// ef21<top_k>, first round: top_k's wire and its contraction k/n (ALGORITHMS.md §5.7).
template <>
struct spec<ef21_first_round<distopt::compress::top_k>> {
  using C = ef21_first_round<distopt::compress::top_k>;
  static constexpr bool randomized = false;
  static std::vector<C> configs() {
    return {C{}, C{distopt::compress::ef21<distopt::compress::top_k>{distopt::compress::top_k{0.25}}}};
  }
  static std::optional<std::size_t> bytes(const C& c, std::size_t n) {
    return sparsifiers::sparse_bytes(n, sparsifiers::kept(c.wrapped.inner.ratio, n));
  }
  static double delta(const C& c, std::span<const float> x) {
    return x.empty() ? 1.0 : double(sparsifiers::kept(c.wrapped.inner.ratio, x.size())) / double(x.size());
  }
};

// lattice<B>: u32 n, float32 side, u32 check, B bits per entry, packed (ALGORITHMS.md §3.5: log2 q bits per
// coordinate).
template <unsigned B>
struct spec<distopt::compress::lattice<B>> {
  using C = distopt::compress::lattice<B>;
  static constexpr bool randomized = true;
  static std::vector<C> configs() {
    if constexpr (B >= 8)
      return {C{.side = 0.1f}};  // radius 127 * 0.1
    else
      return {C{.side = 7.0f / float((1u << (B - 1)) - 1)}};  // radius 7
  }
  static std::optional<std::size_t> bytes(const C&, std::size_t n) { return 12 + ceil_div(n * B, 8); }
};

}  // namespace suite

#define DISTOPT_WRAPPERS_BOUNDED                                                                                 \
  distopt::compress::scaled<distopt::compress::qsgd<4>>, distopt::compress::scaled<distopt::compress::random_k>, \
      suite::ef21_first_round<distopt::compress::top_k>
#define DISTOPT_LATTICES distopt::compress::lattice<8>, distopt::compress::lattice<4>, distopt::compress::lattice<3>
