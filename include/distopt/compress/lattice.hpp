#pragma once
// compress::lattice<Bits> — SwarmSGD's reference-based lattice quantizer: a point of the cubic
// lattice s Z^n, sent modulo q = 2^Bits, decoded against a reference the receiver already holds.
// Papers: P. Davies, V. Gurunathan, N. Moshrefi, S. Ashkboos, D. Alistarh, "New Bounds for
// Distributed Mean Estimation and Variance Reduction", ICLR 2021, arXiv:2002.09268 (lattice
// quantization relative to a decoding key); G. Nadiradze, A. Sabour, P. Davies, S. Li, D. Alistarh,
// "Asynchronous Decentralized SGD with Quantized and Local Updates" (SwarmSGD), NeurIPS 2021,
// arXiv:1910.12308. This is the cubic "SimpleLattice" of ALGORITHMS.md §3.5/§5.17, made unbiased by
// random dithering.
//
// Encoding of x with side s: per coordinate v = x_i / s, z_i = floor(v) + 1 with probability
// frac(v), else floor(v) (randomly dithered rounding, so E[s z_i] = x_i); send c_i = z_i mod q.
// Decoding with a reference y: z_i is the integer congruent to c_i (mod q) closest to y_i / s, and
// the output is s z_i. It equals the dithered point s z_i exactly whenever |x_i - y_i| < (q/2 - 1) s
// (= radius()): then |z_i - y_i/s| < 1 + q/2 - 1 = q/2 and no other integer congruent to c_i is as
// close (up to the float rounding of y_i / s, relative 2^-24). Farther away it wraps by multiples of
// q s: the receiver's reference must be close to the sender's x.
// The concept form decode(bytes, out) uses the reference 0, so it is exact only for |x_i| < radius();
// it then returns s z_i with z_i in (-q/2, q/2]. The optimizer's allreduce uses this form (small
// gradients); gossip (model exchange) passes the public copy of the neighbour's model as the reference.
// Check: so that a wrap is an error rather than a silently wrong model, the wire carries
// h = sum_i z_i w_i mod 2^32 over the full indices z_i, with odd pseudo-random weights w_i; the
// decoder recomputes it over its own z_i and throws decoding_radius_error (a transport_error) if they
// differ. A wrap changes z_i by m_i q, so h by q sum_i m_i w_i: one wrapped coordinate always changes
// it (w_i is odd and 0 < |m_i| < 2^(32-Bits), both indices being below 2^24 + q in magnitude); wraps
// of several cancel with probability about 2^-(32-Bits) (2^-24 for Bits = 8).
//
// Bound (when decoding is exact): unbiased, |C(x)_i - x_i| < s, and with p_i = frac(x_i / s),
//   E||C(x) - x||^2 = s^2 sum_i p_i (1 - p_i) <= n s^2 / 4.
// The error is absolute (it scales with s, not with ||x||): there is no omega. The dithering uses
// 24 random bits per entry, so E[z_i] = x_i / s up to 2^-22 of a step and the rounding of x_i / s.
// Wire: [u32 n][float32 s][u32 h][n codes of Bits bits, LSB-first, zero pad bits], little-endian:
//   bytes(n) = 12 + ceil(n Bits / 8).
// Limits: |x_i| / s < 2^24 (a finer lattice than float resolution carries nothing): else encode throws
// numeric_error, as for NaN/Inf. A decoded side must be a normal float <= FLT_MAX * 2^-25.
// Randomness: the caller's rng seeds 32 xoshiro128+ lanes (detail/quantize_impl.hpp).
//
// Knobs: Bits in [2, 8] (template; q = 2^Bits levels); `side` = 1e-3 (s, the lattice spacing: the
// per-coordinate error is below s, and decoding is exact within radius() = (2^(Bits-1) - 1) s of the
// reference; the SwarmSGD experiments use Bits = 8 with s = 1e-4 or 3e-5 for models).
//
//   distopt::compress::lattice<8> q{.side = 1e-4f};
//   q.encode(my_model, wire, g);                      // 12 + n bytes
//   q.decode(wire, my_copy_of_their_model, theirs);   // exact if they are within q.radius() of my copy,
//                                                     // else (almost surely) decoding_radius_error

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <span>
#include <string>

#include "distopt/compress/detail/quantize_impl.hpp"
#include "distopt/compress/detail/sparse_format.hpp"
#include "distopt/compress/detail/wire.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::compress {
namespace detail::quantize {

/// |x| / s must stay below 2^24 (integers and their floats agree up to there): the IEEE bits of 2^24.
inline constexpr std::uint32_t lattice_max_units_bits = 0x4B800000u;

/// Clears a float whose magnitude reaches 2^24 (or is NaN/Inf) to 0 and records the largest magnitude
/// seen, as bit patterns, without float comparisons (which would keep the loop from vectorising).
DISTOPT_DETAIL_ALWAYS_INLINE float lattice_in_range(float v, std::uint32_t& worst) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(v), mag = bits & 0x7FFFFFFFu;
  worst = mag > worst ? mag : worst;
  return std::bit_cast<float>(bits & (0u - static_cast<std::uint32_t>(mag < lattice_max_units_bits)));
}

/// An odd hash of i (multiply-xorshift, as murmur3's finaliser).
constexpr std::uint32_t lattice_hash(std::uint32_t i) noexcept {
  std::uint32_t w = i * 0x9E3779B1u;
  w = (w ^ (w >> 16)) * 0x85EBCA6Bu;
  return (w ^ (w >> 13)) | 1u;
}

/// The check h = sum_i z_i w_i weighs entry i = c0 + k of the chunk at c0 by
/// w_i = lattice_weights[k] lattice_hash(c0): odd, pseudo-random rather than linear in i (with
/// w_i = a i + b, wraps of +q, -2q, +q at i, i + 1, i + 2 would cancel), and one multiply per entry in
/// the hot loops (hashing every i took a third of the encode's speed).
inline constexpr std::array<std::uint32_t, chunk> lattice_weights = [] {
  std::array<std::uint32_t, chunk> t{};
  for (std::uint32_t k = 0; k < chunk; ++k) t[k] = lattice_hash(k);
  return t;
}();

template <unsigned Bits>
struct lattice_encode_kernel {
  /// Writes the codes of x[0, n) and their check; false if some x_i / s is not finite or reaches 2^24.
  static DISTOPT_DETAIL_ALWAYS_INLINE bool run(const float* x, std::size_t n, float inv_side, std::byte* out,
                                               lane_bits* lanes, std::uint32_t* check) {
    constexpr std::int32_t mask = (1 << Bits) - 1;
    std::uint32_t rnd[chunk];
    std::uint8_t codes[chunk];
    std::uint32_t worst = 0, h = 0;
    for (std::size_t c0 = 0; c0 < n; c0 += chunk) {
      const std::size_t len = std::min(chunk, n - c0);
      lanes->fill_for(rnd, len);
      const float* xc = x + c0;
      std::uint32_t hc = 0;
      for (std::size_t k = 0; k < len; ++k) {
        const float v = lattice_in_range(xc[k] * inv_side, worst);
        const auto t = static_cast<std::int32_t>(v);  // towards zero
        const float f = v - static_cast<float>(t);    // in (-1, 1), exact
        // floor(f + u) in {-1, 0, 1}: up with probability f if f >= 0, down with probability -f if f < 0.
        const auto step = static_cast<std::int32_t>(f + unit_float(rnd[k]) + 1.0f) - 1;
        const std::int32_t z = t + step;
        codes[k] = static_cast<std::uint8_t>(z & mask);
        hc += static_cast<std::uint32_t>(z) * lattice_weights[k];
      }
      h += hc * lattice_hash(static_cast<std::uint32_t>(c0));
      pack_codes<Bits>(codes, len, out);
      out += packed_bytes<Bits>(len);
    }
    *check = h;
    return worst < lattice_max_units_bits;
  }
};

/// decode outcome: the codes' pad bits were set, or a reference entry / s was out of range.
enum class lattice_decode_status { ok, pad_bits, reference_out_of_range };

template <unsigned Bits, bool WithReference>
struct lattice_decode_kernel {
  /// out_i = s z_i, z_i = c_i (mod q) closest to ref_i / s (ref = 0 if !WithReference); *check = the
  /// check of these z_i.
  static DISTOPT_DETAIL_ALWAYS_INLINE lattice_decode_status run(const std::byte* in, std::size_t n, float side,
                                                                float inv_side, const float* ref, float* out,
                                                                std::uint32_t* check) {
    constexpr std::int32_t q = 1 << Bits, mask = q - 1;
    constexpr float half = static_cast<float>(q / 2);
    std::uint8_t codes[chunk];
    std::uint32_t worst = 0, h = 0;
    for (std::size_t c0 = 0; c0 < n; c0 += chunk) {
      const std::size_t len = std::min(chunk, n - c0);
      if (!unpack_codes<Bits>(in, len, codes)) return lattice_decode_status::pad_bits;
      in += packed_bytes<Bits>(len);
      float* o = out + c0;
      std::uint32_t hc = 0;
      for (std::size_t k = 0; k < len; ++k) {
        const std::int32_t c = codes[k];
        std::int32_t z;
        if constexpr (WithReference) {
          const float t = lattice_in_range(ref[c0 + k] * inv_side, worst);
          // base = floor(t), phi = t - base in [0, 1] (phi < 0 after truncation moves both by one)
          const auto trunc = static_cast<std::int32_t>(t);
          const float frac = t - static_cast<float>(trunc);
          const auto below = static_cast<std::int32_t>(std::bit_cast<std::uint32_t>(frac) >> 31);
          const std::int32_t base = trunc - below;
          const float phi = frac + static_cast<float>(below);
          // The candidates base + d and base + d - q (d = (c - base) mod q) lie either side of t, at
          // distances d - phi and q - d + phi: take the lower one iff phi - (d - q/2) < 0.
          const std::int32_t d = (c - base) & mask;
          const float margin = phi - (static_cast<float>(d) - half);
          z = base + d - q * static_cast<std::int32_t>(std::bit_cast<std::uint32_t>(margin) >> 31);
        } else {
          z = c > q / 2 ? c - q : c;
        }
        o[k] = static_cast<float>(z) * side;
        hc += static_cast<std::uint32_t>(z) * lattice_weights[k];
      }
      h += hc * lattice_hash(static_cast<std::uint32_t>(c0));
    }
    *check = h;
    return worst < lattice_max_units_bits ? lattice_decode_status::ok : lattice_decode_status::reference_out_of_range;
  }
};

}  // namespace detail::quantize

template <unsigned Bits>
struct lattice {
  static_assert(Bits >= 2 && Bits <= 8,
                "compress::lattice<Bits>: Bits must be in [2, 8] (q = 2^Bits residues; Bits = 1 leaves no exact "
                "decoding radius)");
  static constexpr bool unbiased = true;
  static constexpr bool summable = false;
  /// q, the number of residues sent per coordinate.
  static constexpr std::uint32_t levels = 1u << Bits;
  static constexpr const char* name = "compress::lattice";

  /// s, the lattice spacing. Default 1e-3.
  float side = 1e-3f;

  /// Decoding is exact when every |x_i - reference_i| < radius() = (q/2 - 1) s.
  double radius() const { return double(levels / 2 - 1) * double(side); }

  void encode(std::span<const float> in, byte_buffer& wire, rng& g) const {
    check_side();
    const std::size_t n = in.size(), start = wire.size();
    detail::put_length(wire, n, name);
    detail::put(wire, side);
    detail::put(wire, std::uint32_t{0});  // the check, known after the codes
    const auto codes = detail::grow(wire, detail::quantize::packed_bytes<Bits>(n));
    detail::quantize::lane_bits lanes(g);
    std::uint32_t check = 0;
    if (!detail::quantize::run_kernel<detail::quantize::lattice_encode_kernel<Bits>>(in.data(), n, 1.0f / side,
                                                                                     codes.data(), &lanes, &check)) {
      wire.resize(start);
      throw numeric_error(std::string(name) + ": an entry is NaN or Inf, or |x_i| / side reaches 2^24 (side = " +
                          std::to_string(side) + "); check the input, or raise side");
    }
    std::memcpy(wire.data() + start + 8, &check, sizeof check);
  }

  /// Decodes against the reference 0: exact only where |x_i| < radius(); farther, it throws
  /// decoding_radius_error (see the check in the file comment). After a throw `out` is unspecified.
  void decode(std::span<const std::byte> bytes, std::span<float> out) const { decode_impl<false>(bytes, nullptr, out); }

  /// Decodes against `reference` (the receiver's copy of what the sender encoded; reference.size() ==
  /// out.size(); the two may be the same span, to update a copy in place). Exact where
  /// |x_i - reference_i| < radius(); farther, it throws decoding_radius_error. After a throw the
  /// contents of `out` are unspecified.
  void decode(std::span<const std::byte> bytes, std::span<const float> reference, std::span<float> out) const {
    if (reference.size() != out.size())
      throw config_error(std::string(name) + ": the reference has " + std::to_string(reference.size()) +
                         " entries but the output has " + std::to_string(out.size()) +
                         "; pass the receiver's copy of the whole vector");
    decode_impl<true>(bytes, reference.data(), out);
  }

  std::size_t max_encoded_bytes(std::size_t n) const { return 12 + detail::quantize::packed_bytes<Bits>(n); }

 private:
  static constexpr float max_side = std::numeric_limits<float>::max() * 0x1.0p-25f;

  static bool valid_side(float s) { return s >= std::numeric_limits<float>::min() && s <= max_side; }

  void check_side() const {
    if (!valid_side(side))
      throw config_error(std::string(name) + ": side must be a normal float in [2^-126, FLT_MAX * 2^-25], got " +
                         std::to_string(side) + "; it is the lattice spacing, e.g. 1e-3");
  }

  template <bool WithReference>
  void decode_impl(std::span<const std::byte> bytes, const float* reference, std::span<float> out) const {
    detail::reader r(bytes, name);
    const std::size_t n = out.size();
    detail::expect_length(r, n);
    const float s = r.get<float>("side");
    if (!valid_side(s)) r.fail("side " + std::to_string(s) + " is not a normal float in [2^-126, FLT_MAX * 2^-25]");
    const auto sent_check = r.get<std::uint32_t>("check");
    const auto codes = r.take(detail::quantize::packed_bytes<Bits>(n), "codes");
    r.expect_end();
    using status = detail::quantize::lattice_decode_status;
    std::uint32_t check = 0;
    const status st = detail::quantize::run_kernel<detail::quantize::lattice_decode_kernel<Bits, WithReference>>(
        codes.data(), n, s, 1.0f / s, reference, out.data(), &check);
    if (st == status::pad_bits) r.fail("nonzero pad bits after the last code");
    if (st == status::reference_out_of_range) {
      if (std::any_of(reference, reference + n, [](float y) { return !std::isfinite(y); }))
        throw numeric_error(std::string(name) + ": the decoding reference holds NaN or Inf; pass a finite copy");
      r.fail("the side " + std::to_string(s) + " is too small for the reference (|reference_i| / side >= 2^24)");
    }
    if (check != sent_check) wrapped(s, WithReference);
  }

  /// The decoded indices are not the encoded ones: a wrap (or corrupt bytes).
  [[noreturn]] static void wrapped(float s, bool with_reference) {
    char radius[32];
    std::snprintf(radius, sizeof radius, "%g", lattice{.side = s}.radius());
    const std::string why =
        with_reference ? "some coordinates are farther than radius() = " + std::string(radius) +
                             " from the decoding reference (the models drifted apart)"
                       : "some |x_i| reach radius() = " + std::string(radius) + " (this form decodes against 0)";
    throw decoding_radius_error(std::string(name) + "<" + std::to_string(Bits) +
                                ">: the decoded point is not the one that was sent: " + why +
                                ", or the bytes are corrupt; use more Bits or a larger side");
  }
};

}  // namespace distopt::compress
