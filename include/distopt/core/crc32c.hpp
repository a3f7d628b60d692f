#pragma once
// CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum of the TCP transport's
// frames (transport/tcp/detail/wire.hpp) and of checkpoints (core/checkpoint.hpp). Detects
// every error burst of up to 32 bits, so every changed byte.
//
//   std::uint32_t c = distopt::detail::crc32c(bytes);   // crc32c("123456789") == 0xE3069283

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace distopt::detail {

inline constexpr std::array<std::uint32_t, 256> crc32c_table = [] {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    t[i] = c;
  }
  return t;
}();

/// Portable byte-at-a-time update of a raw (pre-/post-inversion left to the caller) CRC state.
inline std::uint32_t crc32c_update_portable(std::uint32_t state, const std::byte* p, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i)
    state = (state >> 8) ^ crc32c_table[(state ^ std::to_integer<std::uint32_t>(p[i])) & 0xFFu];
  return state;
}

#if defined(__x86_64__)
// SSE4.2 has a CRC32C instruction: 8 bytes per instruction, ~10x the table, so the
// checksum costs little next to the copies it accompanies.
__attribute__((target("sse4.2"))) inline std::uint32_t crc32c_update_sse42(std::uint32_t state, const std::byte* p,
                                                                           std::size_t n) noexcept {
  std::uint64_t s = state;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t word;
    std::memcpy(&word, p + i, 8);
    s = _mm_crc32_u64(s, word);
  }
  auto s32 = static_cast<std::uint32_t>(s);
  for (; i < n; ++i) s32 = _mm_crc32_u8(s32, std::to_integer<std::uint8_t>(p[i]));
  return s32;
}
#endif

/// Raw CRC32C state update; the checksum of bytes b is ~crc32c_update(~0u, b).
inline std::uint32_t crc32c_update(std::uint32_t state, std::span<const std::byte> bytes) noexcept {
#if defined(__x86_64__)
  static const bool hardware = __builtin_cpu_supports("sse4.2");
  if (hardware) return crc32c_update_sse42(state, bytes.data(), bytes.size());
#endif
  return crc32c_update_portable(state, bytes.data(), bytes.size());
}

inline std::uint32_t crc32c(std::span<const std::byte> bytes) noexcept { return ~crc32c_update(~0u, bytes); }

}  // namespace distopt::detail
