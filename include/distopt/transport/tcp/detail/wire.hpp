#pragma once
// The TCP transport's wire format, free of sockets so that it can be tested and
// fuzzed on plain bytes: the data frame header (checksummed by core/crc32c.hpp), and the
// bounds-checked codec of the handshake messages. Include distopt/transport/tcp.hpp,
// not this header.
//
// Frame (all integers little-endian), 24 header bytes then `length` payload bytes:
//   0  u32 magic 0x54504F44 ("DOPT")   4  u8 version   5  u8 kind   6  u16 reserved (0)
//   8  u32 tag                         12 u32 CRC32C of header bytes [0,12) and [16,24), then the payload
//   16 u64 length
// The receiver checks magic, version, kind and length <= its maximum before it
// allocates anything, and the checksum as the payload arrives (checksum_check).
//
//   detail::tcp::frame_header h{.kind = frame_kind::data, .tag = 3, .length = n};
//   auto bytes = detail::tcp::encode_header(h, payload);    // checksum filled in
//   auto back  = detail::tcp::decode_header(bytes, max);    // throws transport_error if malformed

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/crc32c.hpp"
#include "distopt/core/errors.hpp"

namespace distopt::detail::tcp {

// The CRC32C of core/crc32c.hpp, under the names the transport's tests and fuzzers use.
using distopt::detail::crc32c;
using distopt::detail::crc32c_update;
using distopt::detail::crc32c_update_portable;

// ---- frames ----------------------------------------------------------------------

inline constexpr std::uint32_t frame_magic = 0x54504F44u;  // "DOPT" in little-endian byte order
inline constexpr std::uint8_t frame_version = 1;
inline constexpr std::size_t header_bytes = 24;

enum class frame_kind : std::uint8_t {
  data = 1,     ///< a message on `tag`
  goodbye = 2,  ///< the sender is closing the connection; the tag says why (goodbye_code)
};

/// Why a goodbye's sender closes (its tag). A code this version does not know reads as `failing`.
enum class goodbye_code : std::uint32_t {
  returned = 0,  ///< it returned normally
  failing = 1,   ///< an exception was propagating there
  refused = 2,   ///< it refused a frame this rank sent it (malformed or corrupted), and sends nothing more
};

struct frame_header {
  frame_kind kind = frame_kind::data;
  std::uint32_t tag = 0;
  std::uint64_t length = 0;
  std::uint32_t checksum = 0;
};

namespace wire_detail {
template <class T>
void store(std::byte* p, T v) noexcept {
  std::memcpy(p, &v, sizeof v);  // little-endian hosts (x86-64, aarch64)
}
template <class T>
T load(const std::byte* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
/// The raw CRC state after a header's bytes other than its checksum field.
inline std::uint32_t header_state(const std::byte* header) noexcept {
  return crc32c_update(crc32c_update(~0u, {header, 12}), {header + 16, 8});
}
/// The checksum of a header (without its checksum field) continued over the payload.
inline std::uint32_t frame_checksum(const std::byte* header, std::span<const std::byte> payload) noexcept {
  return ~crc32c_update(header_state(header), payload);
}
}  // namespace wire_detail

/// The 24 header bytes of a frame carrying `payload`, checksum included.
inline std::array<std::byte, header_bytes> encode_header(frame_kind kind, std::uint32_t tag,
                                                         std::span<const std::byte> payload) noexcept {
  std::array<std::byte, header_bytes> h{};
  wire_detail::store(h.data() + 0, frame_magic);
  wire_detail::store(h.data() + 4, frame_version);
  wire_detail::store(h.data() + 5, static_cast<std::uint8_t>(kind));
  wire_detail::store(h.data() + 8, tag);
  wire_detail::store(h.data() + 16, static_cast<std::uint64_t>(payload.size()));
  wire_detail::store(h.data() + 12, wire_detail::frame_checksum(h.data(), payload));
  return h;
}

/// Parses and validates a header; `from` names the sender in error messages.
/// Throws transport_error for a bad magic, version, kind or a length above `max_length`.
inline frame_header decode_header(std::span<const std::byte, header_bytes> h, std::uint64_t max_length,
                                  std::string_view from) {
  auto bad = [&](const std::string& what) {
    throw transport_error("tcp transport: bad frame from " + std::string(from) + ": " + what +
                          "; the peer is not a distopt process of the same version, or the stream is corrupted");
  };
  const auto magic = wire_detail::load<std::uint32_t>(h.data());
  if (magic != frame_magic) bad("wrong magic number " + std::to_string(magic));
  const auto version = wire_detail::load<std::uint8_t>(h.data() + 4);
  if (version != frame_version)
    bad("frame version " + std::to_string(version) + ", expected " + std::to_string(frame_version));
  const auto kind = wire_detail::load<std::uint8_t>(h.data() + 5);
  if (kind != static_cast<std::uint8_t>(frame_kind::data) && kind != static_cast<std::uint8_t>(frame_kind::goodbye))
    bad("unknown frame kind " + std::to_string(kind));
  if (wire_detail::load<std::uint16_t>(h.data() + 6) != 0) bad("reserved header bits are set");
  frame_header out;
  out.kind = static_cast<frame_kind>(kind);
  out.tag = wire_detail::load<std::uint32_t>(h.data() + 8);
  out.checksum = wire_detail::load<std::uint32_t>(h.data() + 12);
  out.length = wire_detail::load<std::uint64_t>(h.data() + 16);
  if (out.length > max_length)
    bad("length field says " + std::to_string(out.length) + " bytes, above the limit of " + std::to_string(max_length) +
        " (tcp_options.max_frame_bytes)");
  return out;
}

/// Checks a frame's checksum over its payload fed in pieces, so that a receiver checks each
/// piece as it arrives, while it is in cache, instead of in a second pass over the whole frame.
class checksum_check {
 public:
  explicit checksum_check(std::span<const std::byte, header_bytes> h) noexcept
      : expected_(wire_detail::load<std::uint32_t>(h.data() + 12)), state_(wire_detail::header_state(h.data())) {}
  void update(std::span<const std::byte> piece) noexcept {
    state_ = crc32c_update(state_, piece);
    length_ += piece.size();
  }
  /// Throws transport_error unless the pieces so far match the header's checksum.
  void verify(std::string_view from) const {
    if (~state_ != expected_)
      throw transport_error("tcp transport: bad frame from " + std::string(from) + ": checksum mismatch on a " +
                            std::to_string(length_) + "-byte frame; the stream is corrupted");
  }

 private:
  std::uint32_t expected_;
  std::uint32_t state_;
  std::size_t length_ = 0;
};

/// Throws transport_error unless the checksum in `h` matches the header and payload.
inline void verify_checksum(std::span<const std::byte, header_bytes> h, std::span<const std::byte> payload,
                            std::string_view from) {
  checksum_check c(h);
  c.update(payload);
  c.verify(from);
}

// ---- handshake message codec -------------------------------------------------------

/// Appends fields to a handshake message.
class message_writer {
 public:
  explicit message_writer(byte_buffer& out) noexcept : out_(&out) {}
  void u32(std::uint32_t v) { put(v); }
  void u64(std::uint64_t v) { put(v); }
  void bytes(std::span<const std::byte> b) { append(*out_, b); }
  void str(std::string_view s) {
    u32(static_cast<std::uint32_t>(s.size()));
    append(*out_, std::as_bytes(std::span<const char>(s.data(), s.size())));
  }

 private:
  template <class T>
  void put(T v) {
    std::byte b[sizeof v];
    wire_detail::store(b, v);
    append(*out_, b);
  }
  byte_buffer* out_;
};

/// Reads fields of a handshake message; every read is bounds-checked and a short
/// or oversized field throws transport_error naming the sender.
class message_reader {
 public:
  message_reader(std::span<const std::byte> bytes, std::string from) noexcept : bytes_(bytes), from_(std::move(from)) {}
  std::uint32_t u32() { return wire_detail::load<std::uint32_t>(take(4).data()); }
  std::uint64_t u64() { return wire_detail::load<std::uint64_t>(take(8).data()); }
  std::span<const std::byte> bytes(std::size_t n) { return take(n); }
  std::string str() {
    const auto b = take(u32());
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }
  /// The message must be consumed exactly.
  void finish() const {
    if (pos_ != bytes_.size()) fail(std::to_string(bytes_.size() - pos_) + " unexpected trailing bytes");
  }

 private:
  std::span<const std::byte> take(std::size_t n) {
    if (n > bytes_.size() - pos_)
      fail("truncated handshake message (" + std::to_string(n) + " bytes wanted, " +
           std::to_string(bytes_.size() - pos_) + " left)");
    const auto out = bytes_.subspan(pos_, n);
    pos_ += n;
    return out;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw transport_error("tcp transport: malformed handshake from " + std::string(from_) + ": " + what +
                          "; the peer is not a distopt process of the same version");
  }
  std::span<const std::byte> bytes_;
  std::string from_;  // owned: the caller's name for the peer may be a temporary
  std::size_t pos_ = 0;
};

}  // namespace distopt::detail::tcp
