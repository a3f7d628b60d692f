// The typed compressor suite (tests/compressor_suite.hpp) over every compressor.
#include "compressor_suite.hpp"

#include <distopt/compress.hpp>

namespace suite {

template <>
struct spec<distopt::compress::identity> {
  using C = distopt::compress::identity;
  static constexpr bool randomized = false;
  static std::vector<C> configs() { return {C{}}; }
  static std::optional<std::size_t> bytes(const C&, std::size_t n) { return 4 * n; }
  static double omega(const C&, std::size_t) { return 0.0; }
  static double exact_tolerance(const C&) { return 0.0; }
};

}  // namespace suite

#define DISTOPT_ALL_COMPRESSORS distopt::compress::identity

TEST_CASE_TEMPLATE_INVOKE(round_trip, DISTOPT_ALL_COMPRESSORS);
TEST_CASE_TEMPLATE_INVOKE(bound, DISTOPT_ALL_COMPRESSORS);
TEST_CASE_TEMPLATE_INVOKE(determinism, DISTOPT_ALL_COMPRESSORS);
TEST_CASE_TEMPLATE_INVOKE(malformed, DISTOPT_ALL_COMPRESSORS);
