// The sign and sparsifier families and rounding: the typed suite plus family tests.
#include "compressors/sparsifiers_spec.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include <distopt/core/concepts.hpp>
#include <distopt/core/traits.hpp>
#include <distopt/collective/average.hpp>
#include <distopt/compress/majority_sign.hpp>
#include <distopt/compress/one_bit.hpp>
#include <distopt/compress/random_k.hpp>
#include <distopt/compress/rounding.hpp>
#include <distopt/compress/scaled_sign.hpp>
#include <distopt/compress/sign.hpp>
#include <distopt/compress/threshold.hpp>
#include <distopt/compress/top_k.hpp>
#include <distopt/transport/thread.hpp>

#define DISTOPT_SPARSIFIER_COMPRESSORS                                                                                 \
  distopt::compress::sign, distopt::compress::majority_sign, distopt::compress::scaled_sign, distopt::compress::top_k, \
      distopt::compress::random_k, distopt::compress::random_k_biased, distopt::compress::random_k_shared,             \
      distopt::compress::random_keep, distopt::compress::one_bit, distopt::compress::threshold,                        \
      distopt::compress::rounding

// Each type meets the concept; random_k_shared through its per-worker state; traits as documented.
static_assert(distopt::compressor<distopt::compress::sign> && distopt::compressor<distopt::compress::scaled_sign> &&
              distopt::compressor<distopt::compress::one_bit> && distopt::compressor<distopt::compress::top_k> &&
              distopt::compressor<distopt::compress::random_k> &&
              distopt::compressor<distopt::compress::random_k_biased> &&
              distopt::compressor<distopt::compress::random_keep> &&
              distopt::compressor<distopt::compress::threshold> && distopt::compressor<distopt::compress::rounding> &&
              distopt::compressor<distopt::compress::random_k_shared>);
static_assert(distopt::stateful_encoder<distopt::compress::random_k_shared>);
static_assert(distopt::is_summable_v<distopt::compress::random_k_shared>);
static_assert(!distopt::is_summable_v<distopt::compress::random_k> &&
              !distopt::is_summable_v<distopt::compress::top_k>);
static_assert(distopt::compress::random_k::unbiased && distopt::compress::random_keep::unbiased &&
              !distopt::compress::random_k_biased::unbiased && !distopt::compress::top_k::unbiased);
static_assert(!distopt::compressor<int>);

TEST_CASE_TEMPLATE_INVOKE(round_trip, DISTOPT_SPARSIFIER_COMPRESSORS);
TEST_CASE_TEMPLATE_INVOKE(bound, DISTOPT_SPARSIFIER_COMPRESSORS);
TEST_CASE_TEMPLATE_INVOKE(determinism, DISTOPT_SPARSIFIER_COMPRESSORS);
TEST_CASE_TEMPLATE_INVOKE(malformed, DISTOPT_SPARSIFIER_COMPRESSORS);

namespace {

namespace dc = distopt::compress;

std::vector<float> decode_all(const auto& c, const distopt::byte_buffer& wire, std::size_t n) {
  std::vector<float> out(n, std::nanf(""));
  c.decode(wire, out);
  return out;
}

distopt::byte_buffer encode(const auto& c, std::span<const float> x, std::uint64_t seed = 1, std::uint32_t rank = 0,
                            std::uint32_t step = 0) {
  distopt::rng g(seed, rank, step, distopt::purpose::compression);
  distopt::byte_buffer wire;
  c.encode(x, wire, g);
  return wire;
}

}  // namespace

TEST_CASE("sign: hand-computed reconstruction, sgn(0) = +1") {
  const std::vector<float> x{3.5f, -0.25f, 0.0f, -0.0f, -7.0f, 1e-30f, -1e-30f, 2.0f, -1.0f};
  const auto out = decode_all(dc::sign{}, encode(dc::sign{}, x), x.size());
  CHECK(out == std::vector<float>{1, -1, 1, 1, -1, 1, -1, 1, -1});
  // Wire: length 9, then bits LSB-first: byte 0 = 0b01010010 (positions 1, 4, 6), byte 1 = 0b1.
  const auto wire = encode(dc::sign{}, x);
  REQUIRE(wire.size() == 6);
  CHECK(wire[4] == std::byte{0x52});
  CHECK(wire[5] == std::byte{0x01});
}

TEST_CASE("sign kernels: portable and AVX2 paths give identical bytes and sums") {
  for (std::size_t n : {0u, 1u, 7u, 8u, 31u, 32u, 33u, 1000u, 4099u, 70001u}) {
    CAPTURE(n);
    auto x = suite::make_input(n, suite::shape::gaussian, n + 3);
    for (std::size_t i = 0; i < n; i += 5) x[i] = (i % 2) ? 0.0f : -0.0f;
    std::vector<std::byte> a(dc::detail::mask_bytes(n) + 1, std::byte{0xAB}), b = a;
    dc::detail::pack_negative_mask_portable(x.data(), n, a.data());
    for (std::size_t i = 0; i < n; ++i)
      CHECK(((static_cast<unsigned>(a[i / 8]) >> (i % 8)) & 1u) == unsigned{x[i] < 0.0f});
    CHECK(a.back() == std::byte{0xAB});  // nothing written past the mask
    std::vector<float> ea(n), eb(n);
    dc::detail::expand_mask_portable(a.data(), n, -2.5f, 0.5f, ea.data());
    for (std::size_t i = 0; i < n; ++i) CHECK(ea[i] == (x[i] < 0.0f ? -2.5f : 0.5f));
    // one_bit's fused sums + mask: the mask equals pack_negative_mask's, the sums a double reference.
    std::vector<std::byte> fused(a.size(), std::byte{0xAB});
    const auto sp = dc::detail::sum_split_portable(x.data(), n, fused.data());
    CHECK(fused == a);
    double neg = 0.0, pos = 0.0;
    for (float v : x) (std::signbit(v) ? neg : pos) += v;
    CHECK(sp.negative == doctest::Approx(neg).epsilon(1e-5));
    CHECK(sp.non_negative == doctest::Approx(pos).epsilon(1e-5));
#if DISTOPT_COMPRESS_X86
    if (dc::detail::cpu_has_avx2()) {
      std::vector<std::byte> fused2(a.size(), std::byte{0xAB});
      const auto sa = dc::detail::sum_split_avx2(x.data(), n, fused2.data());
      CHECK(fused2 == a);
      CHECK(std::bit_cast<std::uint64_t>(sa.negative) == std::bit_cast<std::uint64_t>(sp.negative));
      CHECK(std::bit_cast<std::uint64_t>(sa.non_negative) == std::bit_cast<std::uint64_t>(sp.non_negative));
      dc::detail::pack_negative_mask_avx2(x.data(), n, b.data());
      CHECK(a == b);
      dc::detail::expand_mask_avx2(a.data(), n, -2.5f, 0.5f, eb.data());
      CHECK(ea == eb);
    } else {
      MESSAGE("no AVX2 on this CPU: only the portable path was tested");
    }
#endif
  }
}

TEST_CASE("majority_sign: every worker sends its signs, the round's result is their vote (0 on a tie)") {
  // Four workers' vectors and the vote sgn(sum_i sgn(x_i)) worked out by hand; the mean of the
  // signs (what plain sign averaging gives) differs wherever the vote is not unanimous.
  const std::vector<std::vector<float>> x = {{3.0f, -1.0f, 0.5f, -2.0f, 7.0f},
                                             {1.0f, -4.0f, -0.5f, 2.0f, -1.0f},
                                             {2.0f, 1.0f, -0.25f, -1.0f, -3.0f},
                                             {-5.0f, -2.0f, 0.0f, 3.0f, -1.0f}};
  const std::vector<float> vote = {1.0f, -1.0f, 0.0f, 0.0f, -1.0f};  // 3:1, 1:3, tie (sgn 0 = +1), tie, 1:3
  std::vector<std::vector<float>> out(4);
  distopt::run_threads(4, [&](distopt::transport_ref t) {
    distopt::collective::averager<dc::majority_sign> avg;
    dc::majority_sign c;
    std::vector<float> v = x[static_cast<std::size_t>(t.rank())];
    distopt::rng g(1, static_cast<std::uint32_t>(t.rank()), 0, distopt::purpose::compression);
    avg.average(t, v, c, g);
    out[static_cast<std::size_t>(t.rank())] = v;
  });
  for (const auto& o : out) CHECK(o == vote);
  static_assert(distopt::momentum_before_compression_v<dc::majority_sign>);
  static_assert(!distopt::momentum_before_compression_v<dc::sign>);
}

TEST_CASE("scaled_sign: hand-computed reconstruction per bucket, exact error") {
  const std::vector<float> x{1.0f, -3.0f, 0.0f, 2.0f, 0.5f, -0.5f, 4.0f, -8.0f, 6.0f, -2.0f};
  // One bucket: ||x||_1 / d = 27 / 10 = 2.7.
  auto out = decode_all(dc::scaled_sign{0}, encode(dc::scaled_sign{0}, x), x.size());
  const float s = 2.7f;
  CHECK(out == std::vector<float>{s, -s, s, s, s, -s, s, -s, s, -s});
  // Buckets of 8: 19 / 8 = 2.375 on the first eight, 8 / 2 = 4 on the last two.
  out = decode_all(dc::scaled_sign{8}, encode(dc::scaled_sign{8}, x), x.size());
  CHECK(out == std::vector<float>{2.375f, -2.375f, 2.375f, 2.375f, 2.375f, -2.375f, 2.375f, -2.375f, 4.0f, -4.0f});
  // ||C(x)-x||^2 = ||x||^2 - sum_b ||x_b||_1^2 / d_b = 134.5 - (19^2/8 + 8^2/2) = 57.375.
  double err = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) err += (double(out[i]) - x[i]) * (double(out[i]) - x[i]);
  CHECK(err == doctest::Approx(57.375).epsilon(1e-9));
  CHECK(dc::scaled_sign{8}.delta(x) == doctest::Approx(1.0 - 57.375 / 134.5).epsilon(1e-12));
}

TEST_CASE("scaled_sign, one_bit: bad knobs and non-finite input are refused") {
  CHECK_THROWS_AS(dc::scaled_sign{12}, distopt::config_error);
  std::vector<float> x{1.0f, std::nanf(""), 2.0f};
  CHECK_THROWS_AS(encode(dc::scaled_sign{}, x), distopt::numeric_error);
  CHECK_THROWS_AS(dc::one_bit{4}, distopt::config_error);
  CHECK_THROWS_AS(encode(dc::one_bit{}, x), distopt::numeric_error);
}

TEST_CASE("one_bit: hand-computed group means, exact error, never worse than scaled_sign") {
  const std::vector<float> x{1.0f, -3.0f, 0.0f, 2.0f, -1.0f, 4.0f, -2.0f, 0.5f, -6.0f, 6.0f};
  // One bucket: negatives {-3, -1, -2, -6} mean -3; the rest {1, 0, 2, 4, 0.5, 6} mean 13.5 / 6 = 2.25.
  auto out = decode_all(dc::one_bit{0}, encode(dc::one_bit{0}, x), x.size());
  CHECK(out == std::vector<float>{2.25f, -3, 2.25f, 2.25f, -3, 2.25f, -3, 2.25f, -3, 2.25f});
  // Buckets of 8: first eight: negatives {-3, -1, -2} mean -2, rest {1, 0, 2, 4, 0.5} mean 1.5;
  // last two: -6 and 6 alone, so reconstructed exactly.
  out = decode_all(dc::one_bit{8}, encode(dc::one_bit{8}, x), x.size());
  CHECK(out == std::vector<float>{1.5f, -2, 1.5f, 1.5f, -2, 1.5f, -2, 1.5f, -6, 6});
  // ||C(x)-x||^2 = ||x||^2 - sum (S^2 / count) = 107.25 - (36/3 + 56.25/5 + 36 + 36) = 12.
  double err = 0.0, norm2 = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    err += (double(out[i]) - x[i]) * (double(out[i]) - x[i]);
    norm2 += double(x[i]) * x[i];
  }
  CHECK(norm2 == 107.25);
  CHECK(err == doctest::Approx(12.0).epsilon(1e-9));
  CHECK(dc::one_bit{8}.delta(x) == doctest::Approx(1.0 - 12.0 / 107.25).epsilon(1e-12));
  // The Cauchy-Schwarz guarantee: one_bit contracts at least as much as scaled_sign, >= 1/bucket.
  for (suite::shape s : suite::all_shapes) {
    const auto y = suite::make_input(5000, s, 3);
    CHECK(dc::one_bit{512}.delta(y) >= dc::scaled_sign{512}.delta(y) - 1e-12);
    CHECK(dc::scaled_sign{512}.delta(y) >= 1.0 / 512);
  }
}

namespace {

/// The reference top-k: indices ordered by |x| descending, ties by index ascending, via
/// std::partial_sort; the first k, sorted by index.
std::vector<std::uint32_t> reference_top_k(const std::vector<float>& x, std::size_t k) {
  std::vector<std::uint32_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), 0u);
  std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k), idx.end(),
                    [&](std::uint32_t a, std::uint32_t b) {
                      const float fa = std::abs(x[a]), fb = std::abs(x[b]);
                      return fa > fb || (fa == fb && a < b);
                    });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

TEST_CASE("top_k: equals a partial_sort reference, ties to the lower index") {
  distopt::rng g(2024, 0, 0, distopt::purpose::user);
  // Sizes below and above the sampled path (n >= 65536); inputs with many exact ties.
  for (std::size_t n : {1u, 2u, 9u, 1000u, 65536u, 100003u}) {
    for (int kind = 0; kind < 5; ++kind) {
      std::vector<float> x(n);
      for (std::size_t i = 0; i < n; ++i) {
        const float u = g.normal();
        switch (kind) {
          case 0:
            x[i] = u;
            break;  // continuous
          case 1:
            x[i] = std::round(4.0f * u) / 4.0f;
            break;  // few levels: many ties
          case 2:
            x[i] = g.uniform() < 0.9f ? 0.0f : u;
            break;  // mostly zeros (and -0.0)
          case 3:
            x[i] = (i % 64 == 0) ? 100.0f : (i % 2 ? 1.0f : -1.0f);
            break;  // periodic: fools a strided sample
          case 4:
            x[i] = float(i % 7) - 3.0f;
            break;  // exact ties everywhere
        }
        if (kind == 2 && x[i] == 0.0f && (i % 3 == 0)) x[i] = -0.0f;
      }
      for (double ratio : {0.001, 0.01, 0.3, 1.0}) {
        if (ratio == 1.0 && n > 1000) continue;  // a full sort of the reference adds nothing
        CAPTURE(n);
        CAPTURE(kind);
        CAPTURE(ratio);
        const dc::top_k c{ratio};
        const std::size_t k = c.k(n);
        const auto want = reference_top_k(x, k);
        const auto out = decode_all(c, encode(c, x), n);
        // The decoded vector: x on the reference set, zero elsewhere.
        std::size_t wrong = 0;
        std::size_t next = 0;
        for (std::size_t i = 0; i < n; ++i) {
          const bool kept = next < want.size() && want[next] == i;
          next += kept;
          const float expected = kept ? x[i] : 0.0f;
          wrong += std::bit_cast<std::uint32_t>(out[i]) != std::bit_cast<std::uint32_t>(expected) &&
                   !(expected == 0.0f && out[i] == 0.0f);
        }
        CHECK(wrong == 0);
        CHECK(next == k);
      }
    }
  }
}

TEST_CASE("top_k: a bad ratio is refused with a message naming the knob") {
  CHECK_THROWS_WITH_AS(dc::top_k{1.5}, doctest::Contains("compress::top_k: ratio must be in (0, 1], got 1.5"),
                       distopt::config_error);
  CHECK_THROWS_AS(dc::top_k{0.0}, distopt::config_error);
  CHECK_THROWS_AS(dc::top_k{std::nan("")}, distopt::config_error);
}

TEST_CASE("top_k: the sampled path is exact and taken on smooth inputs; collect kernels agree") {
  const auto x = suite::make_input(300000, suite::shape::gaussian, 5);
  dc::top_k c{0.01};
  const auto out = decode_all(c, encode(c, x), x.size());
  CHECK(c.scratch_.full_selections == 0);  // the sample bracketed the threshold
  const auto want = reference_top_k(x, c.k(x.size()));
  std::size_t kept = 0;
  for (float v : out) kept += v != 0.0f;
  CHECK(kept == want.size());
  for (auto i : want) CHECK(out[i] == x[i]);

  const std::uint32_t lo = dc::detail::magnitude_key(2.0f);
  std::vector<std::uint32_t> ia(x.size() + 64), ka(x.size() + 64), ib = ia, kb = ka;
  const std::size_t na = dc::detail::collect_at_least_portable(x.data(), x.size(), lo, ia.data(), ka.data(), x.size());
  std::size_t expected = 0;
  for (float v : x) expected += std::abs(v) >= 2.0f;
  CHECK(na == expected);
#if DISTOPT_COMPRESS_X86
  if (dc::detail::cpu_has_avx2()) {
    const std::size_t nb = dc::detail::collect_at_least_avx2(x.data(), x.size(), lo, ib.data(), kb.data(), x.size());
    REQUIRE(na == nb);
    CHECK(std::equal(ia.begin(), ia.begin() + std::ptrdiff_t(na), ib.begin()));
    CHECK(std::equal(ka.begin(), ka.begin() + std::ptrdiff_t(na), kb.begin()));
    // A small cap stops both early with a count above the cap.
    CHECK(dc::detail::collect_at_least_avx2(x.data(), x.size(), lo, ib.data(), kb.data(), 100) > 100);
  }
#endif
  CHECK(dc::detail::collect_at_least_portable(x.data(), x.size(), lo, ia.data(), ka.data(), 100) > 100);
}

namespace {

struct moments {
  std::vector<double> mean;  ///< mean reconstruction
  std::vector<double> kept;  ///< fraction of draws in which entry i was sent (non-zero)
  double err2 = 0.0;         ///< mean ||C(x) - x||^2
};

/// Encodes x with `draws` different steps of rank 0 and averages.
template <class C>
moments sample_moments(const C& c, const std::vector<float>& x, int draws) {
  moments m{std::vector<double>(x.size()), std::vector<double>(x.size()), 0.0};
  std::vector<float> out(x.size());
  for (int d = 0; d < draws; ++d) {
    const auto wire = encode(c, x, 17, 0, static_cast<std::uint32_t>(d));
    c.decode(wire, out);
    for (std::size_t i = 0; i < x.size(); ++i) {
      m.mean[i] += out[i];
      m.kept[i] += out[i] != 0.0f;
      m.err2 += (double(out[i]) - x[i]) * (double(out[i]) - x[i]);
    }
  }
  for (auto& v : m.mean) v /= draws;
  for (auto& v : m.kept) v /= draws;
  m.err2 /= draws;
  return m;
}

std::vector<float> nonzero_input(std::size_t n) {
  auto x = suite::make_input(n, suite::shape::gaussian, 404);
  for (auto& v : x) v = v >= 0.0f ? v + 0.5f : v - 0.5f;  // no zeros: kept <=> non-zero output
  return x;
}

}  // namespace

// Tolerances: a frequency estimated from D independent draws has standard deviation
// sqrt(p(1-p)/D); we allow 5 of them (two-sided miss probability 6e-7 per entry, fixed seeds).
TEST_CASE("random_k: exactly k entries, keep frequencies k/d, unbiased, mean error (d/k - 1)||x||^2") {
  const std::size_t n = 50;
  const dc::random_k c{0.1};  // k = 5
  const int draws = 20000;
  const auto x = nonzero_input(n);
  const auto m = sample_moments(c, x, draws);
  const double p = 0.1, tol = 5.0 * std::sqrt(p * (1 - p) / draws);
  for (std::size_t i = 0; i < n; ++i) CHECK(std::abs(m.kept[i] - p) <= tol);
  // Each draw sends exactly k: the mean number sent is exactly 5.
  CHECK(std::accumulate(m.kept.begin(), m.kept.end(), 0.0) == doctest::Approx(5.0).epsilon(1e-12));
  // E C(x)_i = x_i: the mean of D draws has sd |x_i| sqrt((d/k - 1)/D); 5 sd.
  for (std::size_t i = 0; i < n; ++i)
    CHECK(std::abs(m.mean[i] - x[i]) <= 5.0 * std::abs(x[i]) * std::sqrt(9.0 / draws));
  // E||C(x)-x||^2 = (d/k - 1)||x||^2 = 9||x||^2 exactly; the mean of 20000 draws within 3%.
  CHECK(m.err2 == doctest::Approx(9.0 * suite::squared_norm(x)).epsilon(0.03));
  CHECK(c.omega(n) == doctest::Approx(9.0));
}

TEST_CASE("random_k_biased: no scaling, mean error (1 - k/d)||x||^2") {
  const std::size_t n = 40;
  const dc::random_k_biased c{0.25};  // k = 10
  const auto x = nonzero_input(n);
  const auto m = sample_moments(c, x, 20000);
  CHECK(m.err2 == doctest::Approx(0.75 * suite::squared_norm(x)).epsilon(0.02));
  const auto out = decode_all(c, encode(c, x), n);
  for (std::size_t i = 0; i < n; ++i) CHECK((out[i] == 0.0f || out[i] == x[i]));
}

TEST_CASE("random_keep: keep frequencies match p_i, values x_i / p_i, unbiased") {
  const std::size_t n = 40;
  std::vector<float> p(n);
  for (std::size_t i = 0; i < n; ++i) p[i] = 0.05f + 0.95f * float(i) / float(n - 1);  // 0.05 .. 1
  const dc::random_keep c{p};
  const int draws = 20000;
  const auto x = nonzero_input(n);
  const auto m = sample_moments(c, x, draws);
  for (std::size_t i = 0; i < n; ++i) {
    CAPTURE(i);
    CHECK(std::abs(m.kept[i] - p[i]) <= 5.0 * std::sqrt(p[i] * (1 - p[i]) / draws) + 1e-12);
    // mean of D draws of x_i/p_i * Bernoulli(p_i): sd |x_i| sqrt((1-p_i)/(p_i D)).
    CHECK(std::abs(m.mean[i] - x[i]) <= 5.0 * std::abs(x[i]) * std::sqrt((1 - p[i]) / (p[i] * draws)) + 1e-6);
  }
  double expected = 0.0;  // E||C(x)-x||^2 = sum_i (1 - p_i)/p_i x_i^2
  for (std::size_t i = 0; i < n; ++i) expected += (1.0 - p[i]) / p[i] * double(x[i]) * x[i];
  CHECK(m.err2 == doctest::Approx(expected).epsilon(0.05));
  CHECK(c.omega(n) == doctest::Approx((1.0 - 0.05) / 0.05).epsilon(1e-6));
  // The sent values are x_i / p_i.
  const auto out = decode_all(c, encode(c, x), n);
  for (std::size_t i = 0; i < n; ++i) CHECK((out[i] == 0.0f || out[i] == x[i] / p[i]));
  // Wrong length and bad probabilities are refused.
  std::vector<float> shorter(n - 1, 1.0f);
  CHECK_THROWS_AS(encode(c, shorter), distopt::config_error);
  CHECK_THROWS_AS(dc::random_keep(std::vector<float>{0.5f, 0.0f}), distopt::config_error);
  CHECK_THROWS_AS(dc::random_keep{1.5}, distopt::config_error);
}

TEST_CASE("random_keep: one probability, geometric gaps give frequency p everywhere") {
  const std::size_t n = 3000;
  const int draws = 1000;
  for (double p : {0.01, 0.3}) {
    CAPTURE(p);
    const dc::random_keep c{p};
    const auto x = nonzero_input(n);
    const auto m = sample_moments(c, x, draws);
    // The mean count n p over D draws has sd sqrt(n p (1-p) / D); 5 sd.
    const double count = std::accumulate(m.kept.begin(), m.kept.end(), 0.0);
    CHECK(std::abs(count - n * p) <= 5.0 * std::sqrt(n * p * (1 - p) / draws));
    // Per-entry frequencies, pooled over the first and last 100 entries (no edge effects).
    double first = 0, last = 0;
    for (std::size_t i = 0; i < 100; ++i) {
      first += m.kept[i];
      last += m.kept[n - 1 - i];
    }
    const double tol = 5.0 * std::sqrt(p * (1 - p) / (100.0 * draws));
    CHECK(std::abs(first / 100 - p) <= tol);
    CHECK(std::abs(last / 100 - p) <= tol);
    CHECK(m.err2 == doctest::Approx((1 / p - 1) * suite::squared_norm(x)).epsilon(0.06));
  }
}

TEST_CASE("random_k_shared: same indices on every rank, none sent, summable, unbiased over steps") {
  const std::size_t n = 1000;
  const dc::random_k_shared c{0.05, 42};  // k = 50
  const auto x = nonzero_input(n), y = suite::make_input(n, suite::shape::gaussian, 8);
  auto s0 = c.make_state(n), s3 = c.make_state(n);
  distopt::rng g0(5, 0, 0, distopt::purpose::compression), g3(5, 3, 0, distopt::purpose::compression);
  distopt::byte_buffer w0, w3, w0b;
  c.encode(x, w0, g0, s0);
  c.encode(y, w3, g3, s3);
  CHECK(w0.size() == 8 + 4 * 50);  // length, step, values: no indices
  const auto d0 = decode_all(c, w0, n), d3 = decode_all(c, w3, n);
  for (std::size_t i = 0; i < n; ++i) CHECK((d0[i] != 0.0f) == (d3[i] != 0.0f || y[i] == 0.0f));
  // Summable: adding the values of two encodings of one round decodes to the sum.
  auto sum = w0;
  dc::random_k_shared::accumulate(sum, w3);
  const auto ds = decode_all(c, sum, n);
  for (std::size_t i = 0; i < n; ++i) CHECK(ds[i] == d0[i] + d3[i]);
  // The next round picks other indices; rounds of different steps cannot be added.
  c.encode(x, w0b, g0, s0);
  CHECK(decode_all(c, w0b, n) != d0);
  CHECK_THROWS_AS(dc::random_k_shared::accumulate(sum, w0b), distopt::transport_error);
  // The 3-argument encode is round `step` (the knob).
  CHECK(encode(dc::random_k_shared{0.05, 42, 1}, x, 99, 7) == w0b);
  // Over many rounds: frequencies k/d, unbiased, mean error (d/k - 1)||x||^2.
  const int draws = 4000;
  std::vector<double> mean(n), kept(n);
  double err2 = 0.0;
  auto st = c.make_state(n);
  std::vector<float> out(n);
  for (int d = 0; d < draws; ++d) {
    distopt::byte_buffer w;
    distopt::rng g(5, 0, 0, distopt::purpose::compression);
    c.encode(x, w, g, st);
    c.decode(w, out);
    for (std::size_t i = 0; i < n; ++i) {
      mean[i] += out[i] / draws;
      kept[i] += (out[i] != 0.0f) / double(draws);
      err2 += (double(out[i]) - x[i]) * (double(out[i]) - x[i]) / draws;
    }
  }
  const double p = 0.05;
  std::size_t bad_freq = 0, bad_mean = 0;
  for (std::size_t i = 0; i < n; ++i) {
    bad_freq += std::abs(kept[i] - p) > 5.0 * std::sqrt(p * (1 - p) / draws);
    bad_mean += std::abs(mean[i] - x[i]) > 5.0 * std::abs(x[i]) * std::sqrt(19.0 / draws);
  }
  CHECK(bad_freq == 0);
  CHECK(bad_mean == 0);
  CHECK(err2 == doctest::Approx(19.0 * suite::squared_norm(x)).epsilon(0.03));
}

TEST_CASE("threshold: exactly the entries with |x_i| > tau, error at most tau per dropped entry") {
  for (double tau : {0.0, 0.1, 0.5, 1.0, 3.0}) {
    for (suite::shape s : suite::all_shapes) {
      for (std::size_t n : {5u, 1000u, 30000u}) {
        CAPTURE(tau);
        CAPTURE(n);
        auto x = suite::make_input(n, s, 12);
        if (n > 3) {
          x[0] = float(tau);  // at the threshold (float-rounded): sent iff float(tau) > tau
          x[1] = -float(tau);
          x[2] = std::nextafter(float(tau), 10.0f);
        }
        const dc::threshold c{tau};
        const auto wire = encode(c, x);
        const auto out = decode_all(c, wire, n);
        std::size_t wrong = 0, sent = 0, dropped = 0;
        double err2 = 0.0;
        for (std::size_t i = 0; i < n; ++i) {
          const bool send = std::abs(double(x[i])) > tau;  // the reference, in double
          sent += send;
          dropped += !send;
          wrong += send ? out[i] != x[i] : out[i] != 0.0f;
          err2 += (double(out[i]) - x[i]) * (double(out[i]) - x[i]);
        }
        CHECK(wrong == 0);
        CHECK(wire.size() == 8 + (sent * suite::sparsifiers::log2_ceil(n) + 7) / 8 + 4 * sent);
        CHECK(err2 <= tau * tau * double(dropped) * (1 + 1e-12));
        CHECK(std::sqrt(err2) <= c.epsilon(n) * (1 + 1e-12));
      }
    }
  }
  CHECK_THROWS_AS(dc::threshold{-1.0}, distopt::config_error);
  CHECK_THROWS_AS(dc::threshold{std::numeric_limits<double>::infinity()}, distopt::config_error);
}

TEST_CASE("rounding: ||C(x) - x|| <= epsilon = sqrt(d) step / 2 on many inputs") {
  distopt::rng g(31337, 0, 0, distopt::purpose::user);
  std::size_t cases = 0;
  for (double step : {0x1.0p-10, 0x1.0p-3, 1.0, 0.1, 3e-3, 7.77}) {
    for (std::size_t bucket : {std::size_t{0}, std::size_t{1}, std::size_t{37}, std::size_t{512}}) {
      for (suite::shape s : suite::all_shapes) {
        for (std::size_t n : {1u, 6u, 513u, 5000u}) {
          CAPTURE(step);
          CAPTURE(bucket);
          CAPTURE(n);
          auto x = suite::make_input(n, s, g.next_u32());
          const double scale = std::exp2(double(g.below(20)) - 10.0);  // magnitudes from 2^-10 to 2^9
          for (auto& v : x) v = float(v * scale);
          const dc::rounding c{step, bucket};
          const auto out = decode_all(c, encode(c, x), n);
          // Power-of-two steps give grid points that are floats: the bound holds exactly.
          // Other steps: float rounding of step * q adds at most 2^-24 |out_i| per entry.
          const bool exact_grid = std::exp2(std::round(std::log2(step))) == step;
          double err2 = 0.0, float_slack2 = 0.0;
          std::size_t outside = 0;
          for (std::size_t i = 0; i < n; ++i) {
            const double e = std::abs(double(out[i]) - x[i]);
            const double slack = exact_grid ? 0.0 : 0x1.0p-24 * std::abs(double(out[i]));
            outside += e > step / 2 + slack;
            err2 += e * e;
            float_slack2 += slack * slack;
          }
          CHECK(outside == 0);
          CHECK(std::sqrt(err2) <= c.epsilon(n) + std::sqrt(float_slack2) * std::sqrt(double(n)) + 1e-300);
          if (exact_grid) CHECK(std::sqrt(err2) <= std::sqrt(double(n)) * step / 2);
          ++cases;
        }
      }
    }
  }
  CHECK(cases == 384);
  // for_epsilon picks the step that guarantees epsilon for n entries.
  const auto c = dc::rounding::for_epsilon(1e-2, 10000);
  CHECK(c.step == doctest::Approx(2e-4));
  CHECK(c.epsilon(10000) == doctest::Approx(1e-2));
}

TEST_CASE("rounding: hand-computed grid, compact widths, refusals") {
  const dc::rounding c{0.5, 4};
  const std::vector<float> x{0.2f, 0.3f, -0.74f, 1.25f, 7.0f, 7.1f, 7.2f, 6.9f};
  // q = round(x / 0.5) = {0, 1, -1, 2 (2.5 ties to even)}, {14, 14, 14, 14}.
  const auto wire = encode(c, x);
  CHECK(decode_all(c, wire, x.size()) == std::vector<float>{0.0f, 0.5f, -0.5f, 1.0f, 7.0f, 7.0f, 7.0f, 7.0f});
  // 4 (length) + bucket 1: base -1, width 2 (span 3), 4 codes in 1 byte + bucket 2: width 0, no bytes.
  CHECK(wire.size() == 4 + (5 + 1) + (5 + 0));
  std::vector<float> big{1e9f};
  CHECK_THROWS_AS(encode(dc::rounding{1e-3}, big), distopt::numeric_error);
  std::vector<float> nan{std::nanf("")};
  CHECK_THROWS_AS(encode(dc::rounding{}, nan), distopt::numeric_error);
  CHECK_THROWS_AS(dc::rounding{0.0}, distopt::config_error);
  CHECK_THROWS_AS(dc::rounding{-1.0}, distopt::config_error);
}
