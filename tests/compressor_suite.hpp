#pragma once
// The typed compressor suite: one TEST_CASE_TEMPLATE_DEFINE per property, applied
// to every compressor by TEST_CASE_TEMPLATE_INVOKE in tests/test_compress.cpp.
//
// Each compressor under test has a `spec<C>` written in the tests from the formulas
// of shared/ALGORITHMS.md §5, independently of the header:
//   static std::vector<C> configs();                                // configurations to test
//   static std::optional<std::size_t> bytes(const C&, std::size_t n); // exact encoded size, or nullopt
//   static constexpr bool randomized;                               // uses the rng
//   static double omega(const C&, std::size_t n);                   // unbiased ones: variance factor
//   static double delta(const C&, std::span<const float> x);        // biased ones: contraction on x (0: none)
// and optionally `static double exact_tolerance(const C&)`: a per-element relative
// error bound checked on every round trip (deterministic compressors).

#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <distopt/core/byte_buffer.hpp>
#include <distopt/core/errors.hpp>
#include <distopt/core/rng.hpp>

namespace suite {

template <class C>
struct spec;

/// Test inputs: the distributions on which bounds are checked.
enum class shape { gaussian, heavy_tailed, sparse, constant };
inline constexpr shape all_shapes[] = {shape::gaussian, shape::heavy_tailed, shape::sparse, shape::constant};

inline const char* name(shape s) {
  switch (s) {
    case shape::gaussian:
      return "gaussian";
    case shape::heavy_tailed:
      return "heavy-tailed";
    case shape::sparse:
      return "sparse";
    case shape::constant:
      return "constant";
  }
  return "?";
}

inline std::vector<float> make_input(std::size_t n, shape s, std::uint64_t seed) {
  distopt::rng g(seed, 99, 0, distopt::purpose::user);
  std::vector<float> x(n);
  for (auto& v : x) {
    switch (s) {
      case shape::gaussian:
        v = g.normal();
        break;
      case shape::heavy_tailed:
        v = g.normal() / std::max(0.05f, std::abs(g.normal()));
        break;  // Cauchy-like
      case shape::sparse:
        v = g.uniform() < 0.05f ? 10.0f * g.normal() : 0.0f;
        break;
      case shape::constant:
        v = -0.75f;
        break;
    }
  }
  return x;
}

inline double squared_norm(std::span<const float> x) {
  double s = 0;
  for (float v : x) s += double(v) * double(v);
  return s;
}

template <class C>
distopt::byte_buffer encode_one(C& c, std::span<const float> x, std::uint64_t seed, std::uint32_t rank,
                                std::uint32_t step) {
  distopt::rng g(seed, rank, step, distopt::purpose::compression);
  distopt::byte_buffer wire;
  c.encode(x, wire, g);
  return wire;
}

}  // namespace suite

TEST_CASE_TEMPLATE_DEFINE("compressor: round trip of every size, encoded size as documented", C, round_trip) {
  using spec = suite::spec<C>;
  for (C c : spec::configs()) {
    for (std::size_t n :
         {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{4096}, std::size_t{(1u << 20) + 3}}) {
      CAPTURE(n);
      const auto x = suite::make_input(n, suite::shape::gaussian, 1);
      const auto wire = suite::encode_one(c, x, 5, 0, 0);
      CHECK(wire.size() <= c.max_encoded_bytes(n));
      if (const auto expected = spec::bytes(c, n)) CHECK(wire.size() == *expected);
      std::vector<float> out(n, std::nanf(""));
      c.decode(wire, out);
      std::size_t non_finite = 0;
      for (float v : out) non_finite += !std::isfinite(v);
      CHECK(non_finite == 0);
      if constexpr (requires { spec::exact_tolerance(c); }) {
        const double tol = spec::exact_tolerance(c);
        std::size_t outside = 0;
        for (std::size_t i = 0; i < n; ++i)
          outside += std::abs(double(out[i]) - double(x[i])) > tol * std::abs(double(x[i]));
        CHECK(outside == 0);
      }
    }
  }
}

TEST_CASE_TEMPLATE_DEFINE("compressor: documented bound (omega or delta) holds empirically", C, bound) {
  using spec = suite::spec<C>;
  constexpr int draws = spec::randomized ? 200 : 1;
  for (C c : spec::configs()) {
    for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{4096}, std::size_t{65537}}) {
      for (suite::shape s : suite::all_shapes) {
        CAPTURE(n);
        CAPTURE(suite::name(s));
        const auto x = suite::make_input(n, s, 11);
        const double norm2 = suite::squared_norm(x);
        std::vector<float> out(n);
        std::vector<double> mean(n, 0.0);
        double err2 = 0.0;
        const int k = n > 4096 ? std::max(1, draws / 10) : draws;
        for (int d = 0; d < k; ++d) {
          const auto wire = suite::encode_one(c, x, 3, 0, static_cast<std::uint32_t>(d));
          c.decode(wire, out);
          for (std::size_t i = 0; i < n; ++i) {
            err2 += (double(out[i]) - x[i]) * (double(out[i]) - x[i]);
            mean[i] += out[i];
          }
        }
        err2 /= k;
        if constexpr (C::unbiased) {
          const double omega = spec::omega(c, n);
          // E||C(x)-x||^2 <= omega ||x||^2. The empirical mean of k draws is allowed 10%
          // slack above the bound (the bounds are worst cases; typical draws sit well below).
          CHECK(err2 <= 1.1 * omega * norm2 + 1e-9 * norm2);
          // Unbiasedness: E||mean_k - x||^2 <= omega ||x||^2 / k, so by Markov's inequality
          // ||mean_k - x||^2 <= 20 omega ||x||^2 / k with probability >= 95% (fixed seeds).
          double bias2 = 0.0;
          for (std::size_t i = 0; i < n; ++i) bias2 += (mean[i] / k - x[i]) * (mean[i] / k - x[i]);
          CHECK(bias2 <= 20.0 * omega * norm2 / k + 1e-9 * norm2);
        } else {
          const double delta = spec::delta(c, x);
          if (delta > 0.0) CHECK(err2 <= (1.0 - delta) * norm2 * (1.0 + 1e-5) + 1e-12);
        }
      }
    }
  }
}

TEST_CASE_TEMPLATE_DEFINE("compressor: same seed gives the same bytes, other ranks other streams", C, determinism) {
  using spec = suite::spec<C>;
  for (C c : spec::configs()) {
    const auto x = suite::make_input(4096, suite::shape::gaussian, 21);
    CHECK(suite::encode_one(c, x, 9, 1, 4) == suite::encode_one(c, x, 9, 1, 4));
    if constexpr (spec::randomized) {
      CHECK(suite::encode_one(c, x, 9, 1, 4) != suite::encode_one(c, x, 9, 2, 4));
      CHECK(suite::encode_one(c, x, 9, 1, 4) != suite::encode_one(c, x, 9, 1, 5));
    }
  }
}

TEST_CASE_TEMPLATE_DEFINE("compressor: malformed encodings throw transport_error, never crash", C, malformed) {
  using spec = suite::spec<C>;
  for (C c : spec::configs()) {
    for (std::size_t n : {std::size_t{1}, std::size_t{37}, std::size_t{1000}}) {
      CAPTURE(n);
      const auto x = suite::make_input(n, suite::shape::gaussian, 31);
      const auto wire = suite::encode_one(c, x, 1, 0, 0);
      std::vector<float> out(n);
      // Every truncation, and one trailing byte too many.
      for (std::size_t len = 0; len < wire.size(); ++len) {
        CAPTURE(len);
        CHECK_THROWS_AS(c.decode(std::span(wire.data(), len), out), distopt::transport_error);
      }
      auto longer = wire;
      longer.push_back(std::byte{0});
      CHECK_THROWS_AS(c.decode(longer, out), distopt::transport_error);
      // A reconstruction of the wrong length.
      std::vector<float> wrong(n + 1);
      CHECK_THROWS_AS(c.decode(wire, wrong), distopt::transport_error);
      // Mutated bytes and random bytes: only transport_error may come out (ASan/UBSan watch the rest).
      distopt::rng g(77, 0, 0, distopt::purpose::user);
      auto attempt = [&](std::span<const std::byte> bytes) {
        try {
          c.decode(bytes, out);
        } catch (const distopt::transport_error&) {
        }
      };
      for (std::size_t i = 0; i < std::min<std::size_t>(wire.size(), 24); ++i) {
        for (std::byte flip : {std::byte{0xFF}, std::byte{0x80}, std::byte{0x7F}}) {
          auto mutated = wire;
          mutated[i] ^= flip;
          attempt(mutated);
        }
      }
      for (int trial = 0; trial < 100; ++trial) {
        distopt::byte_buffer noise(g.below(static_cast<std::uint32_t>(2 * wire.size() + 16)));
        for (auto& b : noise) b = static_cast<std::byte>(g.next_u32());
        attempt(noise);
      }
    }
  }
}
