#pragma once
// tag: separates independent message streams between the same two workers.
// Messages are ordered per (peer, tag).

#include <cstdint>

namespace distopt {

enum class tag : std::uint32_t {};

namespace detail {
/// Tags used by the library's own collectives; user tags should stay below this.
inline constexpr std::uint32_t reserved_tag_base = 0xD0000000u;
}  // namespace detail

}  // namespace distopt
