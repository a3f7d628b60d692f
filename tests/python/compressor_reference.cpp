// The C++ side of tests/python/test_compressors.py: encodes and decodes with the C++
// compressors the cases that the Python test builds with the distopt module, so that the
// two can be compared byte for byte.
//
//   compressor_reference <case> <n> <rounds> <seed> <rank>  < rounds x n float32  > output
// Round r encodes input r with rng(seed, rank, r, compression), one state across rounds, and
// writes: u64 encoded size, the encoding, the n decoded floats.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include <distopt/compress.hpp>
#include <distopt/core/traits.hpp>

namespace {

namespace compress = distopt::compress;

template <class C>
int run(C c, std::size_t n, std::size_t rounds, std::uint64_t seed, std::uint32_t rank) {
  auto state = distopt::make_compressor_state(c, n);
  std::vector<float> in(n), out(n);
  distopt::byte_buffer wire;
  for (std::size_t r = 0; r < rounds; ++r) {
    if (std::fread(in.data(), sizeof(float), n, stdin) != n) {
      std::fprintf(stderr, "compressor_reference: stdin ended before round %zu\n", r);
      return 1;
    }
    distopt::rng g(seed, rank, static_cast<std::uint32_t>(r), distopt::purpose::compression);
    wire.clear();
    distopt::encode(c, std::span<const float>(in), wire, g, state);
    c.decode(wire, out);
    const std::uint64_t size = wire.size();
    std::fwrite(&size, sizeof size, 1, stdout);
    std::fwrite(wire.data(), 1, wire.size(), stdout);
    std::fwrite(out.data(), sizeof(float), n, stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 6) {
    std::fprintf(stderr, "usage: compressor_reference <case> <n> <rounds> <seed> <rank> < input > output\n");
    return 2;
  }
  const std::string name = argv[1];
  const std::size_t n = std::strtoull(argv[2], nullptr, 10), rounds = std::strtoull(argv[3], nullptr, 10);
  const std::uint64_t seed = std::strtoull(argv[4], nullptr, 10);
  const auto rank = static_cast<std::uint32_t>(std::strtoul(argv[5], nullptr, 10));
  // The cases of test_compressors.py (CASES), built the same way there.
  if (name == "identity") return run(compress::identity{}, n, rounds, seed, rank);
  if (name == "top_k") return run(compress::top_k(0.05), n, rounds, seed, rank);
  if (name == "ef_top_k") return run(compress::error_feedback(compress::top_k(0.05)), n, rounds, seed, rank);
  if (name == "scaled_sign") return run(compress::scaled_sign(64), n, rounds, seed, rank);
  if (name == "ef_scaled_sign") return run(compress::error_feedback(compress::scaled_sign(64)), n, rounds, seed, rank);
  if (name == "qsgd8") return run(compress::qsgd<8>{.bucket = 128}, n, rounds, seed, rank);
  if (name == "qsgd4") return run(compress::qsgd<4>{.bucket = 100}, n, rounds, seed, rank);
  if (name == "qsgd2") return run(compress::qsgd<2>{.bucket = 512}, n, rounds, seed, rank);
  if (name == "ef_qsgd4") return run(compress::error_feedback(compress::qsgd<4>{.bucket = 100}), n, rounds, seed, rank);
  if (name == "power_sgd")
    return run(compress::power_sgd<2>{.shapes = {{12, 10}, {10, 1}, {7, 5}, {5, 1}}, .seed = 5}, n, rounds, seed, rank);
  if (name == "power_sgd1_no_ef")
    return run(compress::power_sgd<1>{.shapes = {{17, 10}}, .error_feedback = false, .seed = 3}, n, rounds, seed, rank);
  if (name == "power_sgd4") return run(compress::power_sgd<4>{}, n, rounds, seed, rank);
  std::fprintf(stderr, "compressor_reference: unknown case '%s'\n", name.c_str());
  return 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "compressor_reference: %s\n", e.what());
  return 1;
}
