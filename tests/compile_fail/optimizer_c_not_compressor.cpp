// A compressor missing max_encoded_bytes(n), used as C in distopt::optimizer, is
// rejected by a static_assert that names the Compressor concept and its requirements.
// Control (no DISTOPT_COMPILE_FAIL): the same type with max_encoded_bytes compiles.
// expect: C is not a Compressor: it needs .*max_encoded_bytes\(n\)

#include <cstddef>
#include <cstring>
#include <span>

#include <distopt/algorithms.hpp>
#include <distopt/core/byte_buffer.hpp>
#include <distopt/core/rng.hpp>
#include <distopt/core/transport_ref.hpp>

struct raw_floats {
  static constexpr bool unbiased = true;
  void encode(std::span<const float> in, distopt::byte_buffer& w, distopt::rng&) const {
    distopt::append(w, std::as_bytes(in));
  }
  void decode(std::span<const std::byte> b, std::span<float> out) const { std::memcpy(out.data(), b.data(), b.size()); }
#ifndef DISTOPT_COMPILE_FAIL
  std::size_t max_encoded_bytes(std::size_t n) const { return 4 * n; }
#endif
};

using sgd = distopt::optimizer<raw_floats, distopt::topology::allreduce, distopt::staleness::synchronous,
                               distopt::local_steps::every_step>;

void train(distopt::transport_ref t) {
  sgd opt(t, Eigen::VectorXf::Zero(3), {.learning_rate = 0.1f});
  opt.step(Eigen::VectorXf::Ones(3));
  opt.finish();
}
