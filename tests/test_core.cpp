#include <doctest/doctest.h>

#include <distopt/core/rng.hpp>

// Known-answer vectors of Philox4x32-10 from Random123 (kat_vectors).
TEST_CASE("rng: philox4x32-10 matches the Random123 known-answer vectors") {
  using distopt::detail::philox4x32_10;
  CHECK(philox4x32_10({0, 0, 0, 0}, {0, 0}) ==
        distopt::detail::philox_block{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  CHECK(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}) ==
        distopt::detail::philox_block{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  CHECK(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
        distopt::detail::philox_block{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}
