// The quantizers: the typed compressor suite plus family-specific checks against
// independent references (_Float16, a bit-level bfloat16 rounding, the rounding
// probabilities of ALGORITHMS.md §5).
#include "compressors/quantizers_spec.hpp"

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

TEST_CASE_TEMPLATE_INVOKE(round_trip, DISTOPT_QUANTIZERS);
TEST_CASE_TEMPLATE_INVOKE(bound, DISTOPT_QUANTIZERS);
TEST_CASE_TEMPLATE_INVOKE(determinism, DISTOPT_QUANTIZERS);
TEST_CASE_TEMPLATE_INVOKE(malformed, DISTOPT_QUANTIZERS);

namespace dc = distopt::compress;

namespace {

std::vector<float> decode_all(const auto& c, const distopt::byte_buffer& wire, std::size_t n) {
  std::vector<float> out(n);
  c.decode(wire, out);
  return out;
}

/// Empirical distribution of decoded values, per coordinate, over `draws` encodings.
std::vector<std::map<float, int>> histogram(const auto& c, const std::vector<float>& x, int draws) {
  std::vector<std::map<float, int>> h(x.size());
  for (int d = 0; d < draws; ++d) {
    const auto wire = suite::encode_one(c, x, 42, 0, static_cast<std::uint32_t>(d));
    const auto out = decode_all(c, wire, x.size());
    for (std::size_t i = 0; i < x.size(); ++i) ++h[i][out[i]];
  }
  return h;
}

/// Checks that coordinate i takes only `lo` (probability 1 - p) and `hi` (probability p),
/// up to a relative value tolerance of 1e-5, with the frequency of `hi` within 5 standard
/// deviations of p (a false alarm has probability < 1e-6 per check).
void check_two_point(const std::map<float, int>& h, double lo, double hi, double p, int draws) {
  int n_lo = 0, n_hi = 0, other = 0;
  const auto near = [](double a, double b) { return std::abs(a - b) <= 1e-5 * std::abs(b); };
  for (const auto& [v, k] : h) {
    if (near(v, hi))
      n_hi += k;
    else if (near(v, lo))
      n_lo += k;
    else
      other += k;
  }
  CAPTURE(lo);
  CAPTURE(hi);
  CAPTURE(p);
  CHECK(other == 0);
  CHECK(n_lo + n_hi == draws);
  const double sigma = std::sqrt(p * (1.0 - p) / draws);
  CHECK(std::abs(double(n_hi) / draws - p) <= 5.0 * sigma + 1e-12);
}

/// Independent bfloat16 reference: the nearer of the two bfloat16 neighbours, ties to the even one.
std::uint16_t reference_bf16(float f) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t lo = bits & 0xFFFF0000u, hi = lo + 0x10000u;  // hi: next magnitude up
  const double d_lo = std::abs(double(f) - double(std::bit_cast<float>(lo)));
  const double d_hi = std::abs(double(std::bit_cast<float>(hi)) - double(f));
  std::uint32_t pick = d_lo < d_hi ? lo : d_hi < d_lo ? hi : ((lo >> 16) & 1u) ? hi : lo;
  if (((pick >> 23) & 0xFFu) == 0xFFu) pick = (bits & 0x80000000u) | 0x7F7F0000u;  // saturation
  return static_cast<std::uint16_t>(pick >> 16);
}

template <class C>
void check_kernels_agree(const C& c, std::size_t n) {
  CAPTURE(n);
  using dc::detail::quantize::kernel_isa;
  for (suite::shape s : suite::all_shapes) {
    const auto x = suite::make_input(n, s, 5);
    dc::detail::quantize::kernel_isa_limit = kernel_isa::portable;
    const auto portable = suite::encode_one(c, x, 8, 3, 2);
    const auto portable_out = decode_all(c, portable, n);
    for (kernel_isa isa : {kernel_isa::avx2, kernel_isa::avx512}) {
      if (isa > dc::detail::quantize::best_kernel_isa()) continue;
      CAPTURE(static_cast<int>(isa));
      dc::detail::quantize::kernel_isa_limit = isa;
      const auto simd = suite::encode_one(c, x, 8, 3, 2);
      const auto simd_out = decode_all(c, simd, n);
      CHECK(portable == simd);
      CHECK(std::memcmp(portable_out.data(), simd_out.data(), n * sizeof(float)) == 0);
    }
    dc::detail::quantize::kernel_isa_limit = kernel_isa::avx512;
  }
}

}  // namespace

TEST_CASE("quantizers: the portable and the SIMD kernels give identical bytes and values") {
  const auto isa = dc::detail::quantize::best_kernel_isa();
  MESSAGE("SIMD kernels compared with the portable ones: ",
          isa == dc::detail::quantize::kernel_isa::avx512 ? "avx2, avx512"
          : isa == dc::detail::quantize::kernel_isa::avx2 ? "avx2"
                                                          : "none (no AVX2)");
  for (std::size_t n : {std::size_t{1}, std::size_t{31}, std::size_t{1000}, std::size_t{70001}}) {
    check_kernels_agree(dc::fp16{}, n);
    check_kernels_agree(dc::bf16{}, n);
    check_kernels_agree(dc::qsgd<8>{}, n);
    check_kernels_agree(dc::qsgd<3>{.bucket = 100}, n);
    check_kernels_agree(dc::terngrad{.bucket = 333}, n);
    check_kernels_agree(dc::natural{}, n);
    check_kernels_agree(dc::min_max<8>{}, n);
    check_kernels_agree(dc::min_max<5>{.bucket = 77}, n);
    check_kernels_agree(dc::min_max<1>{.bucket = 3000}, n);
    check_kernels_agree(dc::qsgd<2>{.bucket = 3000}, n);
  }
}

TEST_CASE("fp16: matches _Float16 rounding on every half and on random floats; error <= 2^-11") {
  const dc::fp16 c;
  distopt::rng g(3, 0, 0, distopt::purpose::user);
  // Every finite half decodes to the value _Float16 gives it.
  distopt::byte_buffer halves;
  std::vector<float> expected;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    if ((h & 0x7C00u) == 0x7C00u) continue;
    const std::uint16_t bits = static_cast<std::uint16_t>(h);
    halves.push_back(static_cast<std::byte>(bits & 0xFF));
    halves.push_back(static_cast<std::byte>(bits >> 8));
    expected.push_back(static_cast<float>(std::bit_cast<_Float16>(bits)));
  }
  const auto decoded = decode_all(c, halves, expected.size());
  CHECK(std::memcmp(decoded.data(), expected.data(), expected.size() * sizeof(float)) == 0);
  // Representable values round trip exactly (encode of the decoded halves gives the halves back).
  distopt::byte_buffer again;
  c.encode(decoded, again, g);
  CHECK(again == halves);
  // Random floats across the half range (normal, subnormal, ties) round like _Float16.
  std::vector<float> x;
  for (int i = 0; i < 200000; ++i) {
    const float mag = std::ldexp(1.0f + g.uniform(), static_cast<int>(g.below(44)) - 28);  // 2^-28 .. 2^16
    x.push_back(g.uniform() < 0.5f ? -mag : mag);
  }
  for (std::uint32_t h = 0; h < 0x7BFF; h += 7)  // exact midpoints between neighbouring halves
    x.push_back(0.5f * (static_cast<float>(std::bit_cast<_Float16>(static_cast<std::uint16_t>(h))) +
                        static_cast<float>(std::bit_cast<_Float16>(static_cast<std::uint16_t>(h + 1)))));
  x.push_back(65504.0f);
  x.push_back(65519.0f);
  x.push_back(1e30f);
  x.push_back(-70000.0f);
  distopt::byte_buffer wire;
  c.encode(x, wire, g);
  REQUIRE(wire.size() == 2 * x.size());
  std::size_t mismatches = 0, too_far = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    std::uint16_t got;
    std::memcpy(&got, wire.data() + 2 * i, 2);
    const float clamped = std::max(-65504.0f, std::min(65504.0f, x[i]));  // documented saturation
    mismatches += got != std::bit_cast<std::uint16_t>(static_cast<_Float16>(clamped));
    const double a = std::abs(double(x[i]));
    if (a >= std::ldexp(1.0, -14) && a <= 65504.0) {
      const double back = double(static_cast<float>(std::bit_cast<_Float16>(got)));
      too_far += std::abs(back - double(x[i])) > std::ldexp(1.0, -11) * a;
    }
  }
  CHECK(mismatches == 0);
  CHECK(too_far == 0);
}

TEST_CASE("bf16: matches a bit-level reference rounding; error <= 2^-8; representable values exact") {
  const dc::bf16 c;
  distopt::rng g(4, 0, 0, distopt::purpose::user);
  std::vector<float> x;
  for (int i = 0; i < 300000; ++i) {
    std::uint32_t bits = g.next_u32();
    if (((bits >> 23) & 0xFFu) == 0xFFu) bits ^= 0x40000000u;  // keep it finite
    x.push_back(std::bit_cast<float>(bits));
  }
  for (std::uint32_t b = 0; b < 0x7F7F; b += 3) {  // bfloat16 values and exact ties
    x.push_back(std::bit_cast<float>(b << 16));
    x.push_back(std::bit_cast<float>((b << 16) | 0x8000u));
    x.push_back(-std::bit_cast<float>((b << 16) | 0x8000u));
  }
  x.push_back(std::numeric_limits<float>::max());
  distopt::byte_buffer wire;
  c.encode(x, wire, g);
  REQUIRE(wire.size() == 2 * x.size());
  const auto out = decode_all(c, wire, x.size());
  std::size_t mismatches = 0, too_far = 0, inexact = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    std::uint16_t got;
    std::memcpy(&got, wire.data() + 2 * i, 2);
    mismatches += got != reference_bf16(x[i]);
    const double a = std::abs(double(x[i]));
    if (a >= double(std::numeric_limits<float>::min()))
      too_far += std::abs(double(out[i]) - double(x[i])) > std::ldexp(1.0, -8) * a;
    if ((std::bit_cast<std::uint32_t>(x[i]) & 0xFFFFu) == 0) inexact += out[i] != x[i];
  }
  CHECK(mismatches == 0);
  CHECK(too_far == 0);
  CHECK(inexact == 0);
}

// The two-point tests run at unit scale and at 2^-110, where top / norm overflows float
// (a bucket of tiny values: found by tests/fuzz) and the kernels must prescale the bucket.
constexpr float tiny_unit = 0x1p-110f;

std::vector<float> scaled_by(std::vector<float> x, float unit) {
  for (float& v : x) v *= unit;  // exact: a power of two, and the results stay normal
  return x;
}

TEST_CASE("qsgd: each coordinate takes the two neighbouring levels with the QSGD probabilities") {
  // s = 7 levels (Bits = 4); one bucket; norm computed independently in double.
  for (const float unit : {1.0f, tiny_unit}) {
    CAPTURE(unit);
    const std::vector<float> x = scaled_by({0.3f, -0.5f, 0.1f, 0.8f, 0.0f, -0.05f}, unit);
    double norm2 = 0;
    for (float v : x) norm2 += double(v) * v;
    const double norm = std::sqrt(norm2), s = 7;
    constexpr int draws = 20000;
    const auto h = histogram(dc::qsgd<4>{.bucket = 8}, x, draws);
    for (std::size_t i = 0; i < x.size(); ++i) {
      CAPTURE(i);
      const double t = s * std::abs(double(x[i])) / norm, l = std::floor(t), sign = x[i] < 0 ? -1 : 1;
      check_two_point(h[i], sign * norm * l / s, sign * norm * (l + 1) / s, t - l, draws);
    }
  }
}

TEST_CASE("terngrad: each coordinate is sign * max|x| with probability |x_i| / max|x|, else 0") {
  for (const float unit : {1.0f, tiny_unit}) {
    CAPTURE(unit);
    const std::vector<float> x = scaled_by({0.2f, -0.6f, 0.0f, 1.25f, -0.01f, 0.9f, -1.25f}, unit);
    const double top = 1.25 * unit;
    constexpr int draws = 20000;
    const auto h = histogram(dc::terngrad{}, x, draws);
    for (std::size_t i = 0; i < x.size(); ++i) {
      CAPTURE(i);
      const double sign = x[i] < 0 ? -1 : 1;
      check_two_point(h[i], 0.0, sign * top, std::abs(double(x[i])) / top, draws);
    }
  }
}

TEST_CASE("natural: each coordinate rounds to the neighbouring powers of two, unbiasedly") {
  const std::vector<float> x = {0.3f, -1.5f, 5.0f, 1.0f, 0.0f, -0.75f, 3e-3f, 1e-40f};
  constexpr int draws = 20000;
  const auto h = histogram(dc::natural{}, x, draws);
  for (std::size_t i = 0; i < x.size(); ++i) {
    CAPTURE(i);
    const double a = std::abs(double(x[i])), sign = x[i] < 0 ? -1 : 1;
    if (a == 0) {
      check_two_point(h[i], 0.0, 1.0, 0.0, draws);
      continue;
    }
    // The power of two at or below |x| (float subnormals: 0 below 2^-126).
    const double lo = a < std::ldexp(1.0, -126) ? 0.0 : std::ldexp(1.0, std::ilogb(a));
    const double hi = lo == 0.0 ? std::ldexp(1.0, -126) : 2 * lo;
    check_two_point(h[i], sign * lo, sign * hi, (a - lo) / (hi - lo), draws);
  }
}

TEST_CASE("min_max: each coordinate takes the two neighbouring grid points of [min, max], unbiasedly") {
  // Bits = 2: L = 3 intervals of [-1, 2] * unit, grid {-1, 0, 1, 2} * unit.
  for (const float unit : {1.0f, tiny_unit}) {
    CAPTURE(unit);
    const std::vector<float> x = scaled_by({-1.0f, 0.37f, 0.5f, 2.0f, 1.9f, -0.2f}, unit);
    constexpr int draws = 20000;
    const auto h = histogram(dc::min_max<2>{}, x, draws);
    for (std::size_t i = 0; i < x.size(); ++i) {
      CAPTURE(i);
      const double t = double(x[i]) / unit + 1.0, l = std::min(std::floor(t), 2.0);
      check_two_point(h[i], (l - 1.0) * unit, l * unit, t - l, draws);
    }
  }
}

TEST_CASE("min_max: the absolute bound E||C(x)-x||^2 <= sum_b d (max-min)^2 / (4 L^2) holds") {
  for (suite::shape s : suite::all_shapes) {
    for (std::size_t bucket : {std::size_t{512}, std::size_t{50}}) {
      CAPTURE(suite::name(s));
      CAPTURE(bucket);
      const auto x = suite::make_input(20000, s, 13);
      const auto check = [&](const auto& c, double intervals) {
        double bound = 0;  // written from the formula, not from c.error_bound
        for (std::size_t lo = 0; lo < x.size(); lo += bucket) {
          const std::size_t d = std::min(bucket, x.size() - lo);
          float m = x[lo], big = x[lo];
          for (std::size_t i = lo; i < lo + d; ++i) m = std::min(m, x[i]), big = std::max(big, x[i]);
          bound += double(d) * (double(big) - m) * (double(big) - m) / (4 * intervals * intervals);
        }
        CHECK(c.error_bound(x) == doctest::Approx(bound).epsilon(1e-9));
        double err2 = 0;
        constexpr int draws = 20;
        for (int k = 0; k < draws; ++k) {
          const auto out = decode_all(c, suite::encode_one(c, x, 6, 0, static_cast<std::uint32_t>(k)), x.size());
          for (std::size_t i = 0; i < x.size(); ++i) err2 += (double(out[i]) - x[i]) * (double(out[i]) - x[i]);
        }
        err2 /= draws;
        // Per entry p(1-p) <= 1/4; the mean over 20 draws of 20000 entries is far inside 10% slack.
        CHECK(err2 <= 1.1 * bound + 1e-12);
      };
      check(dc::min_max<8>{.bucket = bucket}, 255.0);
      check(dc::min_max<3>{.bucket = bucket}, 7.0);
    }
  }
}

TEST_CASE("quantizers: encoded size matches the documented formula on non-trivial buckets") {
  // qsgd<3>, bucket 37: 8 + 4 * ceil(n/37) + floor(n/37) * ceil(37*3/8) + ceil((n mod 37)*3/8).
  const dc::qsgd<3> q{.bucket = 37};
  for (std::size_t n : {0, 1, 36, 37, 38, 100, 1000}) {
    CAPTURE(n);
    const auto x = suite::make_input(n, suite::shape::gaussian, 2);
    const std::size_t expected = 8 + 4 * ((n + 36) / 37) + (n / 37) * 14 + ((n % 37) * 3 + 7) / 8;
    CHECK(suite::encode_one(q, x, 1, 0, 0).size() == expected);
    CHECK(q.max_encoded_bytes(n) == expected);
  }
  // natural: 9 bits per entry + 8; terngrad: 2 bits per entry + a scale per 512.
  const dc::natural nat;
  const dc::terngrad tern;
  const dc::min_max<8> byte_grad;
  CHECK(suite::encode_one(nat, suite::make_input(1000, suite::shape::gaussian, 2), 1, 0, 0).size() == 8 + 1000 + 125);
  CHECK(suite::encode_one(tern, suite::make_input(1024, suite::shape::gaussian, 2), 1, 0, 0).size() == 8 + 8 + 256);
  CHECK(suite::encode_one(byte_grad, suite::make_input(1024, suite::shape::gaussian, 2), 1, 0, 0).size() ==
        8 + 16 + 1024);
}

TEST_CASE("quantizers: encode appends; bad knobs and non-finite input are refused clearly") {
  distopt::rng g(1, 0, 0, distopt::purpose::compression);
  const std::vector<float> x = {1.0f, -2.0f, 3.0f};
  distopt::byte_buffer wire(5, std::byte{0xAB});
  dc::qsgd<8>{}.encode(x, wire, g);
  CHECK(wire.size() == 5 + 8 + 4 + 3);
  CHECK(wire[0] == std::byte{0xAB});
  CHECK(wire[4] == std::byte{0xAB});

  distopt::byte_buffer scratch;
  CHECK_THROWS_WITH_AS(dc::qsgd<8>{.bucket = 0}.encode(x, scratch, g),
                       doctest::Contains("compress::qsgd: bucket must be >= 1, got 0"), distopt::config_error);
  CHECK_THROWS_WITH_AS(dc::terngrad{.bucket = 0}.max_encoded_bytes(3), doctest::Contains("compress::terngrad: bucket"),
                       distopt::config_error);
  CHECK_THROWS_WITH_AS(dc::min_max<8>{.bucket = 0}.omega(3), doctest::Contains("compress::min_max: bucket"),
                       distopt::config_error);

  const std::vector<float> bad = {1.0f, std::nanf(""), 2.0f};
  const std::vector<float> inf = {1.0f, -std::numeric_limits<float>::infinity()};
  const auto refuses = [&](const auto& c) {
    distopt::byte_buffer w(3, std::byte{1});
    CHECK_THROWS_AS(c.encode(bad, w, g), distopt::numeric_error);
    CHECK_THROWS_AS(c.encode(inf, w, g), distopt::numeric_error);
    CHECK(w.size() == 3);  // nothing half-written is left behind
  };
  refuses(dc::fp16{});
  refuses(dc::bf16{});
  refuses(dc::qsgd<8>{});
  refuses(dc::terngrad{});
  refuses(dc::natural{});
  refuses(dc::min_max<8>{});
  // A range beyond the float range: finite input, but max - min overflows.
  distopt::byte_buffer w;
  const std::vector<float> wide = {-3e38f, 3e38f};
  CHECK_THROWS_AS(dc::min_max<8>{}.encode(wide, w, g), distopt::numeric_error);
  // qsgd's norm is computed in double when the float sum overflows: no spurious error.
  const std::vector<float> big = {1e30f, -2e30f};
  CHECK_NOTHROW(dc::qsgd<8>{}.encode(big, w, g));
}

TEST_CASE("quantizers: hand-made malformed encodings name the compressor and the problem") {
  distopt::rng g(1, 0, 0, distopt::purpose::compression);
  const std::vector<float> x = {0.5f, -1.0f, 0.25f, 2.0f, -0.1f};
  std::vector<float> out(x.size());
  const auto encoded = [&](const auto& c) {
    distopt::byte_buffer w;
    c.encode(x, w, g);
    return w;
  };
  const auto set_float = [](distopt::byte_buffer& w, std::size_t at, float v) { std::memcpy(w.data() + at, &v, 4); };

  {  // header count disagrees with the output length
    auto w = encoded(dc::qsgd<8>{});
    const std::uint64_t lie = 4;
    std::memcpy(w.data(), &lie, 8);
    CHECK_THROWS_WITH_AS(dc::qsgd<8>{}.decode(w, out), doctest::Contains("compress::qsgd: malformed encoding"),
                         distopt::transport_error);
  }
  {  // negative and NaN norms
    auto w = encoded(dc::qsgd<8>{});
    set_float(w, 8, -1.0f);
    CHECK_THROWS_WITH_AS(dc::qsgd<8>{}.decode(w, out), doctest::Contains("norm"), distopt::transport_error);
    set_float(w, 8, std::nanf(""));
    CHECK_THROWS_AS(dc::qsgd<8>{}.decode(w, out), distopt::transport_error);
  }
  {  // pad bits after the last 4-bit code (5 codes: 20 bits, 4 pad bits)
    auto w = encoded(dc::qsgd<4>{});
    w.back() |= std::byte{0x80};
    CHECK_THROWS_WITH_AS(dc::qsgd<4>{}.decode(w, out), doctest::Contains("pad bits"), distopt::transport_error);
  }
  {  // a terngrad code 3
    auto w = encoded(dc::terngrad{});
    w[8 + 4] |= std::byte{0x03};
    CHECK_THROWS_WITH_AS(dc::terngrad{}.decode(w, out), doctest::Contains("code is 3"), distopt::transport_error);
  }
  {  // a natural exponent byte 255
    auto w = encoded(dc::natural{});
    w[8 + 1 + 2] = std::byte{0xFF};
    CHECK_THROWS_WITH_AS(dc::natural{}.decode(w, out), doctest::Contains("exponent byte is 255"),
                         distopt::transport_error);
  }
  {  // min > max, and an infinite max
    auto w = encoded(dc::min_max<8>{});
    set_float(w, 8, 3.0f);
    CHECK_THROWS_WITH_AS(dc::min_max<8>{}.decode(w, out), doctest::Contains("min <= max"), distopt::transport_error);
    set_float(w, 8, -1.0f);
    set_float(w, 12, std::numeric_limits<float>::infinity());
    CHECK_THROWS_AS(dc::min_max<8>{}.decode(w, out), distopt::transport_error);
  }
  {  // an fp16 Inf and a bf16 NaN
    auto w = encoded(dc::fp16{});
    w[1] = std::byte{0x7C}, w[0] = std::byte{0};
    CHECK_THROWS_WITH_AS(dc::fp16{}.decode(w, out), doctest::Contains("compress::fp16"), distopt::transport_error);
    auto b = encoded(dc::bf16{});
    b[1] = std::byte{0x7F}, b[0] = std::byte{0xC0};
    CHECK_THROWS_WITH_AS(dc::bf16{}.decode(b, out), doctest::Contains("compress::bf16"), distopt::transport_error);
  }
}

TEST_CASE("quantizers: omega as documented in the headers") {
  CHECK(dc::qsgd<8>{}.omega(1u << 20) == doctest::Approx(512.0 / (127.0 * 127.0)));  // min(d/s^2, sqrt(d)/s)
  CHECK(dc::qsgd<2>{.bucket = 4}.omega(100) == doctest::Approx(2.0));                // min(4/1, 2/1)
  CHECK(dc::terngrad{}.omega(100) == doctest::Approx(std::sqrt(100.0) - 1));
  CHECK(dc::natural{}.omega(7) == 0.125);
  CHECK(dc::min_max<8>{}.omega(1u << 20) == doctest::Approx(512.0 / (2 * 255.0 * 255.0)));
}
