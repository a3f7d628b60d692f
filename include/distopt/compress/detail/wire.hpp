#pragma once
// Bounds-checked reading and writing of compressor encodings. Every read checks
// the remaining length first, so a truncated or lying encoding becomes a
// transport_error naming the compressor, never an out-of-bounds access.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"

namespace distopt::compress::detail {

/// Appends the bytes of a trivially copyable value (little-endian hosts only, as x86-64 and aarch64).
template <class T>
requires std::is_trivially_copyable_v<T>
void put(byte_buffer& wire, const T& value) { append(wire, std::as_bytes(std::span<const T, 1>(&value, 1))); }

/// Reserves `n` bytes at the end of `wire` and returns them for direct writing.
inline std::span<std::byte> grow(byte_buffer& wire, std::size_t n) {
  const std::size_t old = wire.size();
  wire.resize(old + n);
  return {wire.data() + old, n};
}

/// Sequential bounds-checked reader over an encoding.
class reader {
 public:
  reader(std::span<const std::byte> bytes, const char* compressor) noexcept : bytes_(bytes), who_(compressor) {}

  template <class T>
  requires std::is_trivially_copyable_v<T> T get(const char* field) {
    T value;
    std::memcpy(&value, take(sizeof(T), field).data(), sizeof(T));
    return value;
  }
  /// A float that must be finite (scales, norms).
  float get_finite(const char* field) {
    const float v = get<float>(field);
    if (!std::isfinite(v)) fail(std::string(field) + " is not finite");
    return v;
  }
  std::span<const std::byte> take(std::size_t n, const char* field) {
    if (n > bytes_.size() - pos_)
      fail("truncated: " + std::string(field) + " needs " + std::to_string(n) + " bytes at offset " +
           std::to_string(pos_) + " but only " + std::to_string(bytes_.size() - pos_) + " remain");
    const auto out = bytes_.subspan(pos_, n);
    pos_ += n;
    return out;
  }
  std::size_t remaining() const noexcept { return bytes_.size() - pos_; }
  /// The encoding must be consumed exactly.
  void expect_end() const {
    if (pos_ != bytes_.size()) fail(std::to_string(bytes_.size() - pos_) + " trailing bytes after a complete encoding");
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw transport_error(std::string(who_) + ": malformed encoding: " + what +
                          "; the sender runs another configuration or the bytes are corrupt");
  }

 private:
  std::span<const std::byte> bytes_;
  const char* who_;
  std::size_t pos_ = 0;
};

}  // namespace distopt::compress::detail
