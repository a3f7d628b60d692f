#pragma once
// Internals shared by the quantizers (fp16, bf16, qsgd, terngrad, natural, min_max):
// bulk random bits, kernel dispatch, bucket arithmetic and fixed-width packing.
// Not public API: include the compressor headers instead.
//
// Random bits. Stochastic rounding needs one random number per entry; Philox4x32-10
// costs ~20 ns per block, too slow per entry. Each encode call therefore draws 128
// words from the caller's Philox stream (`rng&`) to seed 32 independent xoshiro128+
// generators (Blackman & Vigna, "Scrambled linear pseudorandom number generators",
// ACM TOMS 2021), one per lane; entry k of a group of 32 uses lane k. Only the top
// 24 bits of each output are used (the low bits of xoshiro128+ are weak). A stream
// is thus still a pure function of (seed, rank, step, purpose) and of the position
// of the call in that stream: the same rng gives the same bytes.
//
// Kernels. Every hot loop is written once, as plain loops over lanes that compilers
// vectorise, and compiled three times: for the x86-64 baseline (SSE2) and, where the
// CPU has them, for AVX2 and AVX-512 via __attribute__((target(...))), picked at run
// time (__builtin_cpu_supports) by run_kernel. The three
// builds perform the same IEEE-754 operations in the same order, so they give
// identical bytes; tests/test_compress_quantizers.cpp checks this with
// `kernel_isa_limit`. Where a multiply feeds an add (which a compiler may fuse
// into an FMA on one target and not on another), the product is computed in double,
// where a product of a float and a float or small integer is exact, so fusing cannot
// change the result.

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "distopt/compress/detail/wire.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define DISTOPT_DETAIL_HAVE_AVX2_KERNELS 1
#define DISTOPT_DETAIL_TARGET_AVX2 __attribute__((target("avx2")))
#if defined(__clang__)
#define DISTOPT_DETAIL_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"), min_vector_width(512)))
#else
#define DISTOPT_DETAIL_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")))
#endif
#else
#define DISTOPT_DETAIL_HAVE_AVX2_KERNELS 0
#define DISTOPT_DETAIL_TARGET_AVX2
#define DISTOPT_DETAIL_TARGET_AVX512
#endif
#if defined(__GNUC__) || defined(__clang__)
#define DISTOPT_DETAIL_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define DISTOPT_DETAIL_ALWAYS_INLINE inline
#endif

namespace distopt::compress::detail::quantize {

/// The instruction sets the kernels are compiled for, in increasing order.
enum class kernel_isa { portable, avx2, avx512 };

/// Testing and benchmarking hook: the kernels never use more than this instruction set.
inline std::atomic<kernel_isa> kernel_isa_limit{kernel_isa::avx512};

/// The best instruction set this CPU supports.
inline kernel_isa best_kernel_isa() noexcept {
#if DISTOPT_DETAIL_HAVE_AVX2_KERNELS
  static const kernel_isa best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
      return kernel_isa::avx512;
    return __builtin_cpu_supports("avx2") ? kernel_isa::avx2 : kernel_isa::portable;
  }();
  return best;
#else
  return kernel_isa::portable;
#endif
}

/// The kernels in use: the best supported, capped by kernel_isa_limit.
inline kernel_isa active_kernel_isa() noexcept {
  return std::min(best_kernel_isa(), kernel_isa_limit.load(std::memory_order_relaxed));
}

/// Runs the always-inline `Kernel::run(args...)` compiled for the best instruction set.
template <class Kernel, class... Args>
DISTOPT_DETAIL_TARGET_AVX512 auto run_avx512(Args... args) {
  return Kernel::run(args...);
}
template <class Kernel, class... Args>
DISTOPT_DETAIL_TARGET_AVX2 auto run_avx2(Args... args) {
  return Kernel::run(args...);
}
template <class Kernel, class... Args>
auto run_portable(Args... args) {
  return Kernel::run(args...);
}
template <class Kernel, class... Args>
auto run_kernel(Args... args) {
#if DISTOPT_DETAIL_HAVE_AVX2_KERNELS
  switch (active_kernel_isa()) {
    case kernel_isa::avx512:
      return run_avx512<Kernel>(args...);
    case kernel_isa::avx2:
      return run_avx2<Kernel>(args...);
    case kernel_isa::portable:
      break;
  }
#endif
  return run_portable<Kernel>(args...);
}

/// Entries processed per inner chunk (a multiple of 8; scratch stays in L1).
inline constexpr std::size_t chunk = 256;

/// 32 lanes of xoshiro128+, seeded from the Philox stream (see the file comment).
/// 32 lanes give 4 (AVX2) or 8 (SSE2) independent dependency chains per step.
struct lane_bits {
  static constexpr int lanes = 32;
  std::uint32_t s[4][lanes];

  explicit lane_bits(rng& g) noexcept {
    for (auto& word : s)
      for (auto& lane : word) lane = g.next_u32();
    for (auto& lane : s[0]) lane |= 1u;  // a xoshiro state must not be all zero
  }

  /// Writes 32 * groups random words: out[32 * i + k] is step i of lane k.
  DISTOPT_DETAIL_ALWAYS_INLINE void fill(std::uint32_t* out, std::size_t groups) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    // GCC/Clang vector extension, lowered to whatever the target has.
    typedef std::uint32_t u32xl __attribute__((vector_size(4 * lanes)));
    u32xl s0, s1, s2, s3;
    std::memcpy(&s0, s[0], sizeof s0), std::memcpy(&s1, s[1], sizeof s1);
    std::memcpy(&s2, s[2], sizeof s2), std::memcpy(&s3, s[3], sizeof s3);
    for (std::size_t i = 0; i < groups; ++i) {
      const u32xl r = s0 + s3;
      std::memcpy(out + lanes * i, &r, sizeof r);
      const u32xl t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >> 21);
    }
    std::memcpy(s[0], &s0, sizeof s0), std::memcpy(s[1], &s1, sizeof s1);
    std::memcpy(s[2], &s2, sizeof s2), std::memcpy(s[3], &s3, sizeof s3);
#else
    for (std::size_t i = 0; i < groups; ++i) {
      for (int k = 0; k < lanes; ++k) {
        out[lanes * i + k] = s[0][k] + s[3][k];
        const std::uint32_t t = s[1][k] << 9;
        s[2][k] ^= s[0][k];
        s[3][k] ^= s[1][k];
        s[1][k] ^= s[2][k];
        s[0][k] ^= s[3][k];
        s[2][k] ^= t;
        s[3][k] = (s[3][k] << 11) | (s[3][k] >> 21);
      }
    }
#endif
  }
  /// Random words for the next d entries (d <= chunk): whole groups of 32.
  DISTOPT_DETAIL_ALWAYS_INLINE void fill_for(std::uint32_t* out, std::size_t d) noexcept {
    fill(out, (d + lanes - 1) / lanes);
  }
};

/// Uniform float in [0, 1) from the top 24 bits of a random word.
DISTOPT_DETAIL_ALWAYS_INLINE float unit_float(std::uint32_t bits) noexcept {
  return static_cast<float>(static_cast<std::int32_t>(bits >> 8)) * 0x1.0p-24f;
}

/// Lanes of the per-bucket reductions: entry i goes to lane i mod 32, so 4 (AVX2) or
/// 8 (SSE2) independent vector chains hide the add latency; lanes combine in a fixed order.
inline constexpr int reduction_lanes = 32;

/// Combines 32 lanes pairwise in a fixed tree order (the same on every target).
template <class T, class Op>
DISTOPT_DETAIL_ALWAYS_INLINE T combine_lanes(T* acc, Op op) noexcept {
  for (int width = reduction_lanes / 2; width >= 1; width /= 2)
    for (int k = 0; k < width; ++k) acc[k] = op(acc[k], acc[k + width]);
  return acc[0];
}

/// ||x||^2 of d entries, in double lanes. Products of floats are exact in double, so
/// the result is the same whether or not the compiler contracts a * a + acc into an FMA
/// (which it may do for AVX-512 targets or -ffp-contract=fast): the kernels stay
/// bit-identical across instruction sets.
DISTOPT_DETAIL_ALWAYS_INLINE double sum_of_squares(const float* x, std::size_t d) noexcept {
  double acc[reduction_lanes] = {};
  std::size_t i = 0;
  for (; i + reduction_lanes <= d; i += reduction_lanes)
    for (int k = 0; k < reduction_lanes; ++k) acc[k] += double(x[i + k]) * double(x[i + k]);
  for (int k = 0; i < d; ++i, ++k) acc[k] += double(x[i]) * double(x[i]);
  return combine_lanes(acc, [](double a, double b) { return a + b; });
}

/// Fraction bits of the fixed-point stochastic rounding: a value t (in units of the
/// quantisation step, t < 256) becomes T = floor(t * 2^23) and rounds up to the next
/// level iff T mod 2^23 + (23 random bits) >= 2^23, i.e. with probability exactly
/// frac(T / 2^23). Unbiased up to the rounding of t and 2^-23 of a step.
inline constexpr int fraction_bits = 23;

/// Lane-wise max of the IEEE bit patterns of |x_i| (NaN and Inf patterns exceed every finite one).
DISTOPT_DETAIL_ALWAYS_INLINE std::uint32_t max_abs_bits(const float* x, std::size_t d) noexcept {
  std::uint32_t acc[reduction_lanes] = {};
  std::size_t i = 0;
  for (; i + reduction_lanes <= d; i += reduction_lanes)
    for (int k = 0; k < reduction_lanes; ++k) {
      const std::uint32_t a = std::bit_cast<std::uint32_t>(x[i + k]) & 0x7FFFFFFFu;
      acc[k] = a > acc[k] ? a : acc[k];
    }
  for (int k = 0; i < d; ++i, ++k) {
    const std::uint32_t a = std::bit_cast<std::uint32_t>(x[i]) & 0x7FFFFFFFu;
    acc[k] = a > acc[k] ? a : acc[k];
  }
  return combine_lanes(acc, [](std::uint32_t a, std::uint32_t b) { return a > b ? a : b; });
}

/// Number of buckets of `bucket` entries (the last one may be shorter) covering n.
constexpr std::size_t bucket_count(std::size_t n, std::size_t bucket) noexcept { return (n + bucket - 1) / bucket; }

/// Bytes of `d` codes of `Bits` bits, packed LSB-first.
template <unsigned Bits>
constexpr std::size_t packed_bytes(std::size_t d) noexcept {
  return (d * Bits + 7) / 8;
}

/// Bytes of the codes of n entries in buckets: each bucket starts on a byte boundary.
template <unsigned Bits>
constexpr std::size_t bucketed_code_bytes(std::size_t n, std::size_t bucket) noexcept {
  const std::size_t full = n / bucket;
  return full * packed_bytes<Bits>(bucket) + packed_bytes<Bits>(n - full * bucket);
}

/// Packs the 8 codes held in the bytes of `v` (code k in byte k, each < 2^Bits) into
/// the low 8 * Bits bits, code k at bit k * Bits.
template <unsigned Bits>
DISTOPT_DETAIL_ALWAYS_INLINE std::uint64_t pack8(std::uint64_t v) noexcept {
  if constexpr (Bits == 8) {
    return v;
  } else {
    v = (v & 0x00FF00FF00FF00FFull) | (((v >> 8) & 0x00FF00FF00FF00FFull) << Bits);
    v = (v & 0x0000FFFF0000FFFFull) | (((v >> 16) & 0x0000FFFF0000FFFFull) << (2 * Bits));
    return (v & 0xFFFFFFFFull) | ((v >> 32) << (4 * Bits));
  }
}

/// Inverse of pack8: spreads the low 8 * Bits bits of `v` back to one code per byte.
template <unsigned Bits>
DISTOPT_DETAIL_ALWAYS_INLINE std::uint64_t unpack8(std::uint64_t v) noexcept {
  if constexpr (Bits == 8) {
    return v;
  } else {
    constexpr std::uint64_t m4 = (std::uint64_t{1} << (4 * Bits)) - 1;
    constexpr std::uint64_t m2 = ((std::uint64_t{1} << (2 * Bits)) - 1) * 0x0000000100000001ull;
    constexpr std::uint64_t m1 = ((std::uint64_t{1} << Bits) - 1) * 0x0001000100010001ull;
    v = (v & m4) | (((v >> (4 * Bits)) & m4) << 32);
    v = (v & m2) | (((v >> (2 * Bits)) & m2) << 16);
    return (v & m1) | (((v >> Bits) & m1) << 8);
  }
}

/// Packs d codes (one per byte) into packed_bytes<Bits>(d) bytes; the pad bits are zero.
template <unsigned Bits>
DISTOPT_DETAIL_ALWAYS_INLINE void pack_codes(const std::uint8_t* codes, std::size_t d, std::byte* out) noexcept {
  if constexpr (8 % Bits == 0) {  // 1, 2, 4, 8 bits: whole codes per byte, a loop that vectorises
    constexpr std::size_t per = 8 / Bits;
    const std::size_t whole = d / per;
    auto* o = reinterpret_cast<std::uint8_t*>(out);
    for (std::size_t j = 0; j < whole; ++j) {
      unsigned v = 0;
      for (std::size_t q = 0; q < per; ++q) v |= unsigned{codes[per * j + q]} << (q * Bits);
      o[j] = static_cast<std::uint8_t>(v);
    }
    if (const std::size_t rest = d - per * whole) {
      unsigned v = 0;
      for (std::size_t q = 0; q < rest; ++q) v |= unsigned{codes[per * whole + q]} << (q * Bits);
      o[whole] = static_cast<std::uint8_t>(v);
    }
    return;
  }
  const std::size_t groups = d / 8;
  for (std::size_t i = 0; i < groups; ++i) {
    std::uint64_t v;
    std::memcpy(&v, codes + 8 * i, 8);
    v = pack8<Bits>(v);
    std::memcpy(out + Bits * i, &v, Bits);
  }
  if (const std::size_t rest = d - 8 * groups) {
    std::uint64_t v = 0;
    std::memcpy(&v, codes + 8 * groups, rest);
    v = pack8<Bits>(v);
    std::memcpy(out + Bits * groups, &v, packed_bytes<Bits>(rest));
  }
}

/// Unpacks d codes; returns false if the pad bits after the last code are not zero.
template <unsigned Bits>
DISTOPT_DETAIL_ALWAYS_INLINE bool unpack_codes(const std::byte* in, std::size_t d, std::uint8_t* codes) noexcept {
  if constexpr (Bits == 4) {  // (for 1 and 2 bits the 64-bit spreading below is faster)
    constexpr std::size_t per = 8 / Bits;
    constexpr unsigned mask = (1u << Bits) - 1;
    const std::size_t whole = d / per;
    const auto* p = reinterpret_cast<const std::uint8_t*>(in);
    for (std::size_t j = 0; j < whole; ++j)
      for (std::size_t q = 0; q < per; ++q) codes[per * j + q] = static_cast<std::uint8_t>((p[j] >> (q * Bits)) & mask);
    if (const std::size_t rest = d - per * whole) {
      const unsigned v = p[whole];
      if ((v >> (rest * Bits)) != 0) return false;
      for (std::size_t q = 0; q < rest; ++q)
        codes[per * whole + q] = static_cast<std::uint8_t>((v >> (q * Bits)) & mask);
    }
    return true;
  }
  const std::size_t groups = d / 8;
  for (std::size_t i = 0; i < groups; ++i) {
    std::uint64_t v = 0;
    std::memcpy(&v, in + Bits * i, Bits);
    v = unpack8<Bits>(v);
    std::memcpy(codes + 8 * i, &v, 8);
  }
  if (const std::size_t rest = d - 8 * groups) {
    std::uint64_t v = 0;
    std::memcpy(&v, in + Bits * groups, packed_bytes<Bits>(rest));
    if ((v >> (rest * Bits)) != 0) return false;
    v = unpack8<Bits>(v);
    std::memcpy(codes + 8 * groups, &v, rest);
  }
  return true;
}

/// Throws config_error unless bucket >= 1.
inline void check_bucket(const char* who, std::size_t bucket) {
  if (bucket == 0) throw config_error(std::string(who) + ": bucket must be >= 1, got 0; use e.g. the default 512");
}

/// Reads the entry count that opens every bucketed encoding and checks it against out.size().
inline void expect_count(reader& r, std::size_t n) {
  const auto count = r.get<std::uint64_t>("entry count");
  if (count != n)
    r.fail("the header says " + std::to_string(count) + " entries but the output has " + std::to_string(n));
}

/// Throws numeric_error for a non-finite input.
[[noreturn]] inline void non_finite_input(const char* who) {
  throw numeric_error(std::string(who) +
                      ": the input holds NaN or Inf (or a bucket whose norm exceeds the float range); "
                      "check the gradient for divergence before compressing it");
}

/// The fixed-point scaling of a bucket: t = (|v| * pre) * scale with scale = top / (extent * pre),
/// where extent bounds |v| (the norm, range or max). A bucket whose extent is below 2^-60 is first
/// multiplied by pre = 2^64, exact for a power of two, so that top / extent cannot overflow to Inf
/// (Inf * 0 would be NaN and its conversion to int undefined; found by tests/fuzz). Buckets of
/// ordinary size get pre = 1 and the plain top / extent.
struct bucket_scale {
  float pre;
  float scale;
};
DISTOPT_DETAIL_ALWAYS_INLINE bucket_scale scale_for(float top, float extent) noexcept {
  const float pre = extent < 0x1p-60f ? 0x1p64f : 1.0f;
  return {pre, extent > 0.0f ? top / (extent * pre) : 0.0f};
}

/// The summable 16-bit formats' accumulate: sum[i] = code(value(sum[i]) + value(part[i])),
/// added in float and rounded back once per call. Format supplies to_float_bits(code),
/// from_float_bits(bits) (finite input, saturating) and exponent_mask (all ones: Inf/NaN,
/// which the encoders never send).
template <class Format>
void accumulate_16bit(std::span<std::byte> sum, std::span<const std::byte> part, const char* who) {
  if (sum.size() != part.size() || sum.size() % 2 != 0)
    throw transport_error(std::string(who) + ": cannot add encodings of " + std::to_string(sum.size()) + " and " +
                          std::to_string(part.size()) + " bytes; every rank must encode the same length");
  std::uint32_t top = 0;
  for (std::size_t i = 0; i < sum.size(); i += 2) {
    std::uint16_t a, b;
    std::memcpy(&a, sum.data() + i, 2);
    std::memcpy(&b, part.data() + i, 2);
    const std::uint32_t ea = a & Format::exponent_mask, eb = b & Format::exponent_mask;
    top = std::max(top, std::max(ea, eb));
    const float x = std::bit_cast<float>(Format::to_float_bits(a)) + std::bit_cast<float>(Format::to_float_bits(b));
    const auto c = static_cast<std::uint16_t>(Format::from_float_bits(std::bit_cast<std::uint32_t>(x)));
    std::memcpy(sum.data() + i, &c, 2);
  }
  if (top == Format::exponent_mask)
    throw transport_error(std::string(who) + ": an encoding to add holds Inf or NaN, which the encoder never sends");
}

/// The wire of the bucketed quantizers (qsgd, terngrad, min_max):
///   [u64 n][HeaderBytes per bucket: its scale(s)][codes of each bucket, Bits each, byte-aligned]
template <unsigned Bits, std::size_t HeaderBytes>
struct bucketed_wire {
  static std::size_t bytes(std::size_t n, std::size_t bucket) noexcept {
    return 8 + HeaderBytes * bucket_count(n, bucket) + bucketed_code_bytes<Bits>(n, bucket);
  }

  /// bytes(n, bucket) after check_bucket: the compressors' max_encoded_bytes.
  static std::size_t max_encoded_bytes(const char* who, std::size_t n, std::size_t bucket) {
    check_bucket(who, bucket);
    return bytes(n, bucket);
  }

  /// Appends the encoding that Kernel::run(x, n, bucket, headers, codes, lanes) writes; if it
  /// returns false (non-finite input), `wire` is left as it was and numeric_error is thrown.
  template <class Kernel>
  static void encode(const char* who, std::size_t bucket, std::span<const float> in, byte_buffer& wire, rng& g) {
    check_bucket(who, bucket);
    const std::size_t n = in.size(), start = wire.size();
    const std::span<std::byte> out = grow(wire, bytes(n, bucket));
    const std::uint64_t count = n;
    std::memcpy(out.data(), &count, 8);
    lane_bits lanes(g);
    std::byte* headers = out.data() + 8;
    if (!run_kernel<Kernel>(in.data(), n, bucket, headers, headers + HeaderBytes * bucket_count(n, bucket), &lanes)) {
      wire.resize(start);
      non_finite_input(who);
    }
  }

  struct parts {
    std::span<const std::byte> headers, codes;
  };
  /// Splits an encoding of n entries into the bucket headers and the codes, checking the
  /// entry count and the length.
  static parts split(reader& r, std::size_t n, std::size_t bucket, const char* headers_name) {
    expect_count(r, n);
    const auto headers = r.take(HeaderBytes * bucket_count(n, bucket), headers_name);
    const auto codes = r.take(bucketed_code_bytes<Bits>(n, bucket), "codes");
    r.expect_end();
    return {headers, codes};
  }

  /// Decodes `bytes` into `out` (n = out.size() entries): splits them (headers named
  /// `headers_name` in errors), has check_header(r, b, header) refuse a bad header of bucket b
  /// through r.fail, then runs Kernel::run(headers, codes, n, bucket, out); if it returns false,
  /// fails with `kernel_refusal`.
  template <class Kernel, class CheckHeader>
  static void decode(const char* who, std::size_t bucket, std::span<const std::byte> bytes, std::span<float> out,
                     const char* headers_name, CheckHeader check_header, const char* kernel_refusal) {
    check_bucket(who, bucket);
    reader r(bytes, who);
    const std::size_t n = out.size(), buckets = bucket_count(n, bucket);
    const auto [headers, codes] = split(r, n, bucket, headers_name);
    for (std::size_t b = 0; b < buckets; ++b) check_header(r, b, headers.data() + HeaderBytes * b);
    if (!run_kernel<Kernel>(headers.data(), codes.data(), n, bucket, out.data())) r.fail(kernel_refusal);
  }
};

}  // namespace distopt::compress::detail::quantize
