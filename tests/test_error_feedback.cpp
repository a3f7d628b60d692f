// error_feedback<C>: the residual bookkeeping, checked against its defining identity.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include <distopt/compress/error_feedback.hpp>
#include <distopt/core/traits.hpp>

namespace {

// A deterministic biased compressor for the test: sends only the even coordinates.
struct keep_even {
  static constexpr bool unbiased = false;
  void encode(std::span<const float> in, distopt::byte_buffer& wire, distopt::rng&) const {
    for (std::size_t i = 0; i < in.size(); i += 2) distopt::append(wire, std::as_bytes(std::span(&in[i], 1)));
  }
  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    if (bytes.size() != (out.size() + 1) / 2 * sizeof(float)) throw distopt::transport_error("keep_even: size");
    for (std::size_t i = 0; i < out.size(); ++i)
      if (i % 2 == 0)
        std::memcpy(&out[i], bytes.data() + i / 2 * sizeof(float), sizeof(float));
      else
        out[i] = 0.0f;
  }
  std::size_t max_encoded_bytes(std::size_t n) const { return (n + 1) / 2 * sizeof(float); }
};

}  // namespace

static_assert(distopt::compressor<distopt::compress::error_feedback<keep_even>>);
static_assert(distopt::stateful_encoder<distopt::compress::error_feedback<keep_even>>);

TEST_CASE("error_feedback: transmitted sum plus final residual equals the sum of inputs (telescoping)") {
  // Integer-valued inputs keep every float operation exact, so the identity
  // sum_t decode(C(p_t)) + e_T == sum_t g_t must hold bit for bit.
  distopt::compress::error_feedback ef{keep_even{}};
  constexpr std::size_t n = 9;
  auto s = ef.make_state(n);
  std::vector<float> sent_sum(n, 0.0f), input_sum(n, 0.0f), out(n);
  distopt::rng g(1, 0, 0, distopt::purpose::user);
  for (int t = 0; t < 50; ++t) {
    std::vector<float> x(n);
    for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<float>(static_cast<int>(g.below(21)) - 10);
    distopt::byte_buffer wire;
    ef.encode(x, wire, g, s);
    ef.decode(wire, out);
    for (std::size_t i = 0; i < n; ++i) {
      sent_sum[i] += out[i];
      input_sum[i] += x[i];
    }
  }
  for (std::size_t i = 0; i < n; ++i) CHECK(sent_sum[i] + s.residual[i] == input_sum[i]);
  // The odd coordinates are never sent directly: their residual holds all of their input.
  CHECK(s.residual[1] == input_sum[1]);
}

TEST_CASE("error_feedback: encodes with the inner compressor's wire format and appends") {
  distopt::compress::error_feedback ef{keep_even{}};
  auto s = ef.make_state(4);
  const std::vector<float> x{1, 2, 3, 4};
  distopt::byte_buffer wire(3, std::byte{7});  // existing contents stay in front
  distopt::rng g;
  ef.encode(x, wire, g, s);
  REQUIRE(wire.size() == 3 + 2 * sizeof(float));
  CHECK(wire[0] == std::byte{7});
  std::vector<float> out(4);
  ef.decode(std::span(wire).subspan(3), out);
  CHECK(out == std::vector<float>{1, 0, 3, 0});
  CHECK(s.residual == std::vector<float>{0, 2, 0, 4});
}

TEST_CASE("error_feedback: a state of the wrong size is refused") {
  distopt::compress::error_feedback ef{keep_even{}};
  auto s = ef.make_state(3);
  distopt::byte_buffer wire;
  distopt::rng g;
  const std::vector<float> x(5, 1.0f);
  CHECK_THROWS_AS(ef.encode(x, wire, g, s), distopt::config_error);
}
