// The fuzz target of the TCP transport's frame header (distopt/transport/tcp/detail/wire.hpp):
// decode_header, verify_checksum, encode_header and the CRC32C under them. Built with
// corpus_driver.cpp (the main: seed corpus, corpus pass, libFuzzer) into fuzz_tcp_frame.
//
// Input: byte 0 picks the receiver's limit max_length (modulo the table below), bytes 1-24 are the
// 24 header bytes (missing ones read as 0), and the rest is the payload that follows on the stream.
// Properties, checked on every input; a violation aborts with a message:
//  1. decode_header returns or throws distopt::transport_error, and it returns exactly when an
//     independent reading of the layout accepts the header (magic, version 1, kind data/goodbye,
//     reserved 0, length <= max_length), with the fields found at their offsets.
//  2. verify_checksum, over any payload, returns or throws transport_error, and it returns exactly
//     when a bitwise CRC32C of header bytes [0,12), [16,24) and the payload equals bytes [12,16).
//     The SSE4.2 and the table CRC32C agree with the bitwise one.
//  3. When the header is accepted and `length` payload bytes follow (what the receiver reads) and
//     their checksum matches, encode_header gives back the same 24 bytes.
//  4. Round trip: encode_header(kind, tag, payload) for the kind and tag of the input decodes with
//     max_length = the payload size to the same fields and checksum, passes verify_checksum, and is
//     refused with a max_length one below the payload size.

#include "fuzz_entry.hpp"
#include "fuzz_support.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <distopt/core/errors.hpp>
#include <distopt/core/rng.hpp>
#include <distopt/transport/tcp.hpp>

namespace distopt::fuzz {

const char* const target_name = "tcp_frame";

namespace {

namespace w = detail::tcp;
using header = std::array<std::byte, w::header_bytes>;

constexpr std::uint64_t max_lengths[] = {
    0, 1, 24, 64, 4096, std::uint64_t{1} << 20, 0xFFFFFFFFu, std::numeric_limits<std::uint64_t>::max()};
constexpr std::size_t input_header_bytes = 1 + w::header_bytes;  // max_length selector, frame header
constexpr const char* from = "the fuzzed peer";

template <class T>
T load(std::span<const std::byte> h, std::size_t at) {
  T v = 0;
  for (std::size_t k = 0; k < sizeof(T); ++k) v |= static_cast<T>(std::to_integer<T>(h[at + k]) << (8 * k));
  return v;
}

/// CRC32C one bit at a time: the reference for the table and SSE4.2 versions.
std::uint32_t bitwise_crc32c(std::uint32_t state, std::span<const std::byte> bytes) {
  for (std::byte b : bytes) {
    state ^= std::to_integer<std::uint32_t>(b);
    for (int k = 0; k < 8; ++k) state = (state >> 1) ^ ((state & 1u) != 0 ? 0x82F63B78u : 0u);
  }
  return state;
}

std::uint32_t reference_checksum(const header& h, std::span<const std::byte> payload) {
  std::uint32_t s = bitwise_crc32c(~0u, std::span(h).first(12));
  s = bitwise_crc32c(s, std::span(h).subspan(16, 8));
  return ~bitwise_crc32c(s, payload);
}

bool reference_accepts(const header& h, std::uint64_t max_length) {
  return load<std::uint32_t>(h, 0) == 0x54504F44u && load<std::uint8_t>(h, 4) == 1 &&
         (load<std::uint8_t>(h, 5) == 1 || load<std::uint8_t>(h, 5) == 2) && load<std::uint16_t>(h, 6) == 0 &&
         load<std::uint64_t>(h, 16) <= max_length;
}

std::optional<w::frame_header> decode(const header& h, std::uint64_t max_length) {
  try {
    return w::decode_header(h, max_length, from);
  } catch (const transport_error&) {
    return std::nullopt;
  }
}

bool checksum_passes(const header& h, std::span<const std::byte> payload) {
  try {
    w::verify_checksum(h, payload, from);
    return true;
  } catch (const transport_error&) {
    return false;
  }
}

/// Property 2 for one payload; returns whether the checksum matched.
bool check_checksum(const header& h, std::span<const std::byte> payload) {
  const bool matches = reference_checksum(h, payload) == load<std::uint32_t>(h, 12);
  if (checksum_passes(h, payload) != matches)
    fail(std::string("verify_checksum ") + (matches ? "refused" : "accepted") + " a " + std::to_string(payload.size()) +
         "-byte payload whose bitwise CRC32C " + (matches ? "matches" : "differs"));
  return matches;
}

/// Properties 1 to 3.
void check_received(const header& h, std::uint64_t max_length, std::span<const std::byte> rest) {
  const auto got = decode(h, max_length);
  const bool accept = reference_accepts(h, max_length);
  if (got.has_value() != accept)
    fail(std::string("decode_header ") + (accept ? "refused" : "accepted") + " a header the layout " +
         (accept ? "allows" : "forbids") + " (max_length " + std::to_string(max_length) + ")");
  if (got &&
      (static_cast<std::uint8_t>(got->kind) != load<std::uint8_t>(h, 5) || got->tag != load<std::uint32_t>(h, 8) ||
       got->checksum != load<std::uint32_t>(h, 12) || got->length != load<std::uint64_t>(h, 16)))
    fail("decode_header misread a field of an accepted header");
  check_checksum(h, rest);
  if (!got || got->length > rest.size()) return;
  const auto payload = rest.first(static_cast<std::size_t>(got->length));
  if (check_checksum(h, payload) && w::encode_header(got->kind, got->tag, payload) != h)
    fail("encode_header does not give back an accepted, checksummed header");
}

/// Property 4.
void check_round_trip(w::frame_kind kind, std::uint32_t tag, std::span<const std::byte> payload) {
  const header h = w::encode_header(kind, tag, payload);
  const auto back = decode(h, payload.size());
  if (!back) fail("decode_header refused a fresh header of a " + std::to_string(payload.size()) + "-byte frame");
  if (back->kind != kind || back->tag != tag || back->length != payload.size() ||
      back->checksum != reference_checksum(h, payload))
    fail("a fresh header does not decode to its kind, tag, length and checksum");
  if (!checksum_passes(h, payload)) fail("verify_checksum refused a fresh frame");
  if (!payload.empty() && decode(h, payload.size() - 1)) fail("decode_header accepted a length one above max_length");
  const std::uint32_t hardware = w::crc32c_update(~0u, payload);
  const std::uint32_t table = w::crc32c_update_portable(~0u, payload.data(), payload.size());
  if (hardware != table || table != bitwise_crc32c(~0u, payload)) fail("the CRC32C implementations disagree");
}

}  // namespace

std::size_t write_seeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  rng g(2024, 0, 0, purpose::user);
  std::size_t written = 0;
  // Each frame with the loosest limit (selector 7) and the tightest that accepts it.
  for (std::size_t n : {0, 1, 7, 8, 9, 24, 64, 1000}) {
    for (const auto kind : {w::frame_kind::data, w::frame_kind::goodbye}) {
      std::vector<std::byte> payload(n);
      for (auto& b : payload) b = static_cast<std::byte>(g.next_u32());
      const std::uint32_t tag = kind == w::frame_kind::goodbye ? static_cast<std::uint32_t>(n % 2) : g.next_u32();
      const header h = w::encode_header(kind, tag, payload);
      const auto tight = static_cast<std::size_t>(
          std::find_if(std::begin(max_lengths), std::end(max_lengths), [&](std::uint64_t m) { return m >= n; }) -
          std::begin(max_lengths));
      for (std::size_t selector : {tight, std::size(max_lengths) - 1}) {
        std::vector<std::byte> input{static_cast<std::byte>(selector)};
        input.insert(input.end(), h.begin(), h.end());
        input.insert(input.end(), payload.begin(), payload.end());
        write_file(dir / ("seed-k" + std::to_string(static_cast<int>(kind)) + "-n" + std::to_string(n) + "-m" +
                          std::to_string(selector)),
                   input);
        ++written;
      }
    }
  }
  return written;
}

}  // namespace distopt::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace distopt::fuzz;
  return guard_input([&] {
    const std::uint8_t selector = size > 0 ? data[0] : 0;
    header h{};
    if (size > 1) std::memcpy(h.data(), data + 1, std::min(size - 1, h.size()));
    const std::vector<std::byte> rest = bytes_from(data, size, input_header_bytes);  // the payload
    check_received(h, max_lengths[selector % std::size(max_lengths)], rest);
    check_round_trip(selector & 0x80u ? w::frame_kind::goodbye : w::frame_kind::data, load<std::uint32_t>(h, 8), rest);
  });
}
