#pragma once
// Fixed-width bit packing: n unsigned codes of `Bits` bits each (1 <= Bits <= 16)
// stored LSB-first in ceil(n * Bits / 8) bytes. Groups of 8 codes fill exactly
// `Bits` bytes, so the group loop has no branches and vectorises.
//
//   std::vector<std::uint8_t> codes = ...;               // each < 2^Bits
//   distopt::compress::pack<4>(codes, out_bytes);        // out_bytes.size() == packed_bytes<4>(n)
//   distopt::compress::unpack<4>(in_bytes, codes);

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

namespace distopt::compress {

/// Bytes needed for n codes of Bits bits.
template <unsigned Bits>
constexpr std::size_t packed_bytes(std::size_t n) noexcept {
  return (n * Bits + 7) / 8;
}

/// The unsigned type that holds one code.
template <unsigned Bits>
using code_t = std::conditional_t<(Bits <= 8), std::uint8_t, std::uint16_t>;

/// Packs `codes` (each < 2^Bits) into `out` (size >= packed_bytes<Bits>(codes.size())).
template <unsigned Bits>
void pack(std::span<const code_t<Bits>> codes, std::span<std::byte> out) noexcept {
  static_assert(Bits >= 1 && Bits <= 16, "pack<Bits>: Bits must be in [1, 16]");
  const std::size_t n = codes.size();
  const std::size_t groups = n / 8;
  const code_t<Bits>* c = codes.data();
  std::byte* o = out.data();
  for (std::size_t g = 0; g < groups; ++g) {
    unsigned __int128 acc = 0;  // 8 codes * 16 bits = 128 bits at most
    for (unsigned j = 0; j < 8; ++j) acc |= static_cast<unsigned __int128>(c[8 * g + j]) << (j * Bits);
    for (unsigned b = 0; b < Bits; ++b) o[Bits * g + b] = static_cast<std::byte>(acc >> (8 * b));
  }
  const std::size_t rest = n - 8 * groups;
  if (rest == 0) return;
  unsigned __int128 acc = 0;
  for (std::size_t j = 0; j < rest; ++j) acc |= static_cast<unsigned __int128>(c[8 * groups + j]) << (j * Bits);
  const std::size_t tail_bytes = (rest * Bits + 7) / 8;
  for (std::size_t b = 0; b < tail_bytes; ++b) o[Bits * groups + b] = static_cast<std::byte>(acc >> (8 * b));
}

/// Unpacks codes.size() codes from `in` (size >= packed_bytes<Bits>(codes.size())).
template <unsigned Bits>
void unpack(std::span<const std::byte> in, std::span<code_t<Bits>> codes) noexcept {
  static_assert(Bits >= 1 && Bits <= 16, "unpack<Bits>: Bits must be in [1, 16]");
  constexpr unsigned mask = (1u << Bits) - 1u;
  const std::size_t n = codes.size();
  const std::size_t groups = n / 8;
  const std::byte* p = in.data();
  code_t<Bits>* c = codes.data();
  for (std::size_t g = 0; g < groups; ++g) {
    unsigned __int128 acc = 0;
    for (unsigned b = 0; b < Bits; ++b) acc |= static_cast<unsigned __int128>(p[Bits * g + b]) << (8 * b);
    for (unsigned j = 0; j < 8; ++j) c[8 * g + j] = static_cast<code_t<Bits>>((acc >> (j * Bits)) & mask);
  }
  const std::size_t rest = n - 8 * groups;
  if (rest == 0) return;
  const std::size_t tail_bytes = (rest * Bits + 7) / 8;
  unsigned __int128 acc = 0;
  for (std::size_t b = 0; b < tail_bytes; ++b) acc |= static_cast<unsigned __int128>(p[Bits * groups + b]) << (8 * b);
  for (std::size_t j = 0; j < rest; ++j) c[8 * groups + j] = static_cast<code_t<Bits>>((acc >> (j * Bits)) & mask);
}

}  // namespace distopt::compress
