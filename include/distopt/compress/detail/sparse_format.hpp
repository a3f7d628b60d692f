#pragma once
// The wire format shared by the sparsifiers (top_k, random_k, random_keep, threshold),
// and the length header shared by every compressor of the sign/sparsifier families.
//
//   u32 n                       the dense length (decode checks it against out.size())
//   u32 k                       how many entries follow, k <= n
//   k indices, b bits each      b = index_bits(n) = ceil(log2 n); strictly increasing; LSB-first
//   k float32 values            in index order
//
// Size: 8 + ceil(k * ceil(log2 n) / 8) + 4k bytes. This is paper 3's k(32 + ceil(log2 d))
// bits plus 64 header bits plus at most 7 pad bits.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>

#include "distopt/compress/detail/bit_stream.hpp"
#include "distopt/compress/detail/wire.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"

namespace distopt::compress::detail {

/// Vectors of 2^32 or more floats cannot be encoded (u32 lengths and indices).
inline void check_length(std::size_t n, const char* who) {
  if (n > std::numeric_limits<std::uint32_t>::max())
    throw config_error(std::string(who) + ": cannot encode " + std::to_string(n) +
                       " floats in one message (at most 2^32 - 1); split the vector");
}

/// Appends the u32 dense length.
inline void put_length(byte_buffer& wire, std::size_t n, const char* who) {
  check_length(n, who);
  put(wire, static_cast<std::uint32_t>(n));
}

/// Reads the u32 dense length and checks it against the reconstruction's size.
inline void expect_length(reader& r, std::size_t n) {
  const auto sent = r.get<std::uint32_t>("length");
  if (sent != n)
    r.fail("encodes " + std::to_string(sent) + " floats but the output has " + std::to_string(n) +
           " (sender and receiver disagree on the model size)");
}

/// Encoded size of k entries out of n.
constexpr std::size_t sparse_bytes(std::size_t n, std::size_t k) noexcept {
  return 8 + bit_stream_bytes(k, index_bits(n)) + 4 * k;
}

/// Appends the sparse encoding of the entries `indices` (strictly increasing, < n), with
/// values value(j) for the j-th index.
template <class Value>
void write_sparse(byte_buffer& wire, std::size_t n, std::span<const std::uint32_t> indices, Value value,
                  const char* who) {
  put_length(wire, n, who);
  const std::size_t k = indices.size();
  put(wire, static_cast<std::uint32_t>(k));
  const unsigned b = index_bits(n);
  const auto idx_bytes = grow(wire, bit_stream_bytes(k, b));
  bit_writer w(idx_bytes.data(), b);
  for (std::uint32_t i : indices) w.put(i);
  w.finish();
  const auto val_bytes = grow(wire, 4 * k);
  for (std::size_t j = 0; j < k; ++j) {
    const float v = value(j);
    std::memcpy(val_bytes.data() + 4 * j, &v, 4);
  }
}

/// Decodes a sparse encoding into `out` (zeros where nothing was sent). If `expected_k`
/// is not SIZE_MAX the count must equal it. Rejects truncation, trailing bytes, a count
/// above n, indices >= n or not strictly increasing, and non-zero pad bits.
inline void read_sparse(std::span<const std::byte> bytes, std::span<float> out, const char* who,
                        std::size_t expected_k = static_cast<std::size_t>(-1)) {
  reader r(bytes, who);
  const std::size_t n = out.size();
  expect_length(r, n);
  const std::size_t k = r.get<std::uint32_t>("count");
  if (k > n) r.fail("count " + std::to_string(k) + " exceeds the length " + std::to_string(n));
  if (expected_k != static_cast<std::size_t>(-1) && k != expected_k)
    r.fail("count " + std::to_string(k) + " but this configuration sends " + std::to_string(expected_k) +
           " entries for " + std::to_string(n) + " floats");
  const unsigned b = index_bits(n);
  const auto idx = r.take(bit_stream_bytes(k, b), "indices");
  const auto val = r.take(4 * k, "values");
  r.expect_end();
  std::fill(out.begin(), out.end(), 0.0f);
  bit_reader br(idx.data(), b);
  std::size_t next = 0;  // the smallest index allowed next
  for (std::size_t j = 0; j < k; ++j) {
    const std::size_t i = br.get();
    if (i >= n || i < next)
      r.fail("index " + std::to_string(i) + " at position " + std::to_string(j) +
             (i >= n ? " is out of range" : " is not above the previous one"));
    next = i + 1;
    std::memcpy(&out[i], val.data() + 4 * j, 4);
  }
  if (br.leftover() != 0) r.fail("non-zero pad bits after the indices");
}

}  // namespace distopt::compress::detail
