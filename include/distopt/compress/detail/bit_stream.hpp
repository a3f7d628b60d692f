#pragma once
// Variable-width bit packing: n unsigned codes of `width` bits each (0 <= width <= 32),
// stored LSB-first, back to back, in ceil(n * width / 8) bytes (the pad bits of the
// last byte are zero). Used for sparse indices (width = ceil(log2 n)) and rounding's
// grid offsets (width chosen per bucket).
//
// bitpack.hpp handles compile-time widths <= 16; this handles run-time widths <= 32.

#include <cstddef>
#include <cstdint>

namespace distopt::compress::detail {

/// Bytes for n codes of `width` bits.
constexpr std::size_t bit_stream_bytes(std::size_t n, unsigned width) noexcept { return (n * width + 7) / 8; }

/// ceil(log2 n) for n >= 2, and 0 for n <= 1: the bits of an index into n elements.
constexpr unsigned index_bits(std::size_t n) noexcept {
  unsigned b = 0;
  while (b < 64 && (std::size_t{1} << b) < n) ++b;
  return b;
}

/// Sequential writer of `width`-bit codes into a byte array of bit_stream_bytes(n, width) bytes.
class bit_writer {
 public:
  bit_writer(std::byte* out, unsigned width) noexcept : out_(out), width_(width) {}
  void put(std::uint32_t code) noexcept {
    acc_ |= std::uint64_t{code} << filled_;  // filled_ < 8 and width <= 32: fits in 40 bits
    filled_ += width_;
    while (filled_ >= 8) {
      *out_++ = static_cast<std::byte>(acc_);
      acc_ >>= 8;
      filled_ -= 8;
    }
  }
  /// Writes the last partial byte (zero-padded). Call once after the last put().
  void finish() noexcept {
    if (filled_ > 0) *out_++ = static_cast<std::byte>(acc_);
    filled_ = 0;
    acc_ = 0;
  }

 private:
  std::byte* out_;
  unsigned width_;
  unsigned filled_ = 0;
  std::uint64_t acc_ = 0;
};

/// Sequential reader of `width`-bit codes; the caller guarantees the bytes exist
/// (reader::take of bit_stream_bytes(n, width) before reading n codes).
class bit_reader {
 public:
  bit_reader(const std::byte* in, unsigned width) noexcept
      : in_(in), width_(width), mask_(width == 32 ? 0xFFFFFFFFu : (std::uint32_t{1} << width) - 1u) {}
  std::uint32_t get() noexcept {
    while (filled_ < width_) {
      acc_ |= std::uint64_t{static_cast<std::uint8_t>(*in_++)} << filled_;
      filled_ += 8;
    }
    const auto code = static_cast<std::uint32_t>(acc_) & mask_;
    acc_ >>= width_;
    filled_ -= width_;
    return code;
  }
  /// The pad bits left in the last byte after the final get(); a canonical encoding has them zero.
  std::uint64_t leftover() const noexcept { return acc_; }

 private:
  const std::byte* in_;
  unsigned width_;
  std::uint32_t mask_;
  unsigned filled_ = 0;
  std::uint64_t acc_ = 0;
};

}  // namespace distopt::compress::detail
