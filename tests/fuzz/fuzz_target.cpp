// The fuzz target of one compressor decoder. tests/fuzz/CMakeLists.txt builds this file once per
// decoder (distopt_fuzz_decoder), each time with a generated fuzz_config.hpp that names the
// compressor (`under_test`), its header and its configurations (`configurations()`).
//
// Input: byte 0 picks the configuration (modulo their number), bytes 1-2 the output length n
// (u16, little-endian; missing header bytes read as 0), and the rest is the encoding.
// Properties, checked on every input; a violation aborts with a message, which libFuzzer and the
// corpus pass (corpus_driver.cpp) report as a failure:
//  1. decode(encoding, out) returns or throws distopt::transport_error (DESIGN.md: malformed input
//     throws transport_error). Any other exception, a crash or a sanitizer report is a bug.
//  2. It writes nothing outside `out` (guard floats on both sides) and, when it returns, it has
//     written every entry: decoding again over a different filling gives the same bits.
//  3. Round trip: m = min(n, 1024) finite floats made from the encoding bytes (|x| < 2^16, so
//     every configuration under test can represent them) encode to at most max_encoded_bytes(m)
//     bytes, which decode without an exception to m finite floats. Encode may throw
//     numeric_error, as documented for entries a configuration cannot represent.

#include "fuzz_config.hpp"
#include "fuzz_entry.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include <distopt/core/byte_buffer.hpp>
#include <distopt/core/concepts.hpp>
#include <distopt/core/errors.hpp>
#include <distopt/core/rng.hpp>

namespace distopt::fuzz {
namespace {

using C = under_test;
static_assert(compressor<C>, "fuzz_config.hpp: under_test must model distopt::compressor");

constexpr std::size_t header_bytes = 3;  // configuration, n (u16)
constexpr std::size_t round_trip_max = 1024;
constexpr std::size_t guard_floats = 16;
// Quiet-NaN bit patterns: the guards, and the two fillings of `out` before a decode.
constexpr std::uint32_t guard_bits = 0x7FDADBADu, filling_a = 0x7FC0FFEEu, filling_b = 0xFFC0FFEEu;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_%s: %s\n", target_name, what.c_str());
  std::abort();
}

/// The configurations, made once: like a worker's, one object serves every call (scratch reuse).
std::vector<C>& instances() {
  static std::vector<C> all = configurations();
  if (all.empty() || all.size() > 256) fail("configurations() must give 1 to 256 configurations (byte 0 picks one)");
  return all;
}

/// n floats between two guards of guard_floats floats each, compared as bit patterns. The storage
/// is reused from call to call: fresh pages for every input would cost more than the decode.
class guarded_output {
 public:
  guarded_output(std::vector<float>& storage, std::size_t n, std::uint32_t filling) : v_(storage) {
    v_.assign(n + 2 * guard_floats, std::bit_cast<float>(guard_bits));
    std::fill_n(v_.begin() + guard_floats, n, std::bit_cast<float>(filling));
  }
  std::span<float> out() { return {v_.data() + guard_floats, size()}; }
  std::size_t size() const { return v_.size() - 2 * guard_floats; }
  std::uint32_t bits(std::size_t i) const { return std::bit_cast<std::uint32_t>(v_[guard_floats + i]); }
  void check_guards(const char* call) const {
    for (std::size_t i = 0; i < guard_floats; ++i) {
      const bool before = std::bit_cast<std::uint32_t>(v_[i]) != guard_bits;
      if (before || std::bit_cast<std::uint32_t>(v_[v_.size() - 1 - i]) != guard_bits)
        fail(std::string(call) + " wrote outside its output of " + std::to_string(size()) + " floats (" +
             (before ? "before" : "after") + " it)");
    }
  }

 private:
  std::vector<float>& v_;
};
std::vector<float> storage_a, storage_b;

/// Properties 1 and 2.
void check_decode(const C& c, std::span<const std::byte> bytes, std::size_t n) {
  guarded_output first(storage_a, n, filling_a);
  try {
    c.decode(bytes, first.out());
  } catch (const transport_error&) {
    first.check_guards("decode (which then threw transport_error)");
    return;
  }
  first.check_guards("decode");
  guarded_output second(storage_b, n, filling_b);
  try {
    c.decode(bytes, second.out());
  } catch (const transport_error& e) {
    fail(std::string("decode accepted an encoding, then rejected the same bytes: ") + e.what());
  }
  second.check_guards("decode");
  for (std::size_t i = 0; i < n; ++i)
    if (first.bits(i) != second.bits(i))
      fail("decode accepted " + std::to_string(bytes.size()) + " bytes for " + std::to_string(n) +
           " floats but entry " + std::to_string(i) + " depends on the previous contents of out (not written)");
}

/// m finite floats from the bytes (cyclically): sign and mantissa as given, the exponent folded
/// into [2^-40, 2^16) unless it encodes zero or a subnormal. The storage is reused.
std::span<const float> values_from(std::span<const std::byte> bytes, std::size_t m) {
  static std::vector<float> x;
  x.assign(m, 0.0f);
  if (bytes.empty()) return x;
  for (std::size_t i = 0; i < m; ++i) {
    std::uint32_t bits = 0;
    for (std::size_t k = 0; k < 4; ++k)
      bits |= std::uint32_t{static_cast<std::uint8_t>(bytes[(4 * i + k) % bytes.size()])} << (8 * k);
    std::uint32_t exponent = (bits >> 23) & 0xFFu;
    if (exponent != 0) exponent = 87 + exponent % 56;  // 2^(87-127) .. 2^(142-127+1)
    x[i] = std::bit_cast<float>((bits & 0x807FFFFFu) | (exponent << 23));
  }
  return x;
}

/// Encodes with a fresh state for a compressor that keeps one (a template, so that only one
/// branch is instantiated).
template <compressor D>
void encode(D& c, std::span<const float> x, byte_buffer& wire, rng& g) {
  if constexpr (stateful_encoder<D>) {
    auto state = c.make_state(x.size());
    c.encode(x, wire, g, state);
  } else {
    c.encode(x, wire, g);
  }
}

/// Property 3.
void check_round_trip(C& c, std::span<const std::byte> bytes, std::size_t m, std::uint64_t seed) {
  const auto x = values_from(bytes, m);
  rng g(seed, 0, 0, purpose::compression);
  static byte_buffer wire;  // reused, as by a worker
  wire.clear();
  try {
    encode(c, x, wire, g);
  } catch (const numeric_error&) {
    return;
  }
  if (wire.size() > c.max_encoded_bytes(m))
    fail("encode wrote " + std::to_string(wire.size()) + " bytes for " + std::to_string(m) +
         " floats, above max_encoded_bytes = " + std::to_string(c.max_encoded_bytes(m)));
  guarded_output y(storage_a, m, filling_a);
  try {
    c.decode(wire, y.out());
  } catch (const transport_error& e) {
    fail(std::string("decode rejected a fresh encoding of ") + std::to_string(m) + " floats: " + e.what());
  }
  y.check_guards("decode of a fresh encoding");
  for (std::size_t i = 0; i < m; ++i)
    if (!std::isfinite(y.out()[i]))
      fail("the round trip of " + std::to_string(m) + " finite floats gives a non-finite entry " + std::to_string(i));
}

/// FNV-1a: the seed of the round trip's rng, a function of the whole input.
std::uint64_t fnv1a(const std::uint8_t* data, std::size_t size) {
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (std::size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 0x100000001B3ull;
  return h;
}

}  // namespace

std::size_t write_seeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  auto& all = instances();
  // Lengths around the bucket sizes of the configurations (8, 13, 37, 50, 512) and the byte edges.
  constexpr std::size_t lengths[] = {0, 1, 7, 8, 9, 37, 100, 513};
  rng g(2024, 0, 0, purpose::user);
  std::size_t written = 0;
  for (std::size_t k = 0; k < all.size(); ++k) {
    for (std::size_t n : lengths) {
      std::vector<float> x(n);
      for (std::size_t i = 0; i < n; ++i) x[i] = i % 5 == 3 ? 0.0f : i % 7 == 6 ? x[0] : g.normal();  // zeros and ties
      byte_buffer input;
      for (std::uint8_t b : {std::uint8_t(k), std::uint8_t(n), std::uint8_t(n >> 8)}) input.push_back(std::byte{b});
      encode(all[k], x, input, g);  // appended after the header, as encode appends
      std::ofstream(dir / ("seed-c" + std::to_string(k) + "-n" + std::to_string(n)), std::ios::binary)
          .write(reinterpret_cast<const char*>(input.data()), static_cast<std::streamsize>(input.size()));
      ++written;
    }
  }
  return written;
}

}  // namespace distopt::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace distopt::fuzz;
  std::uint8_t header[header_bytes] = {};
  std::copy_n(data, std::min(size, header_bytes), header);
  auto& all = instances();
  C& c = all[header[0] % all.size()];
  const std::size_t n = header[1] | std::size_t{header[2]} << 8;
  // The encoding in an allocation of its own, so that ASan sees a read before or after it.
  std::vector<std::byte> bytes(size - std::min(size, header_bytes));
  if (!bytes.empty()) std::memcpy(bytes.data(), data + header_bytes, bytes.size());
  check_decode(c, bytes, n);
  check_round_trip(c, bytes, std::min(n, round_trip_max), fnv1a(data, size));
  return 0;
}
