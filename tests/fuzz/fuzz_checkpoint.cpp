// The fuzz target of checkpoints (distopt/core/checkpoint.hpp, optimizer::load): reading
// untrusted bytes as a checkpoint throws checkpoint_error or config_error, never crashes, and
// leaves the optimizer as it was. Built with corpus_driver.cpp (the main: seed corpus, corpus
// pass, libFuzzer) into fuzz_checkpoint.
//
// Input: byte 0 picks the optimizer that loads (the table `configurations` below, one rank);
// byte 1, if odd, has the CRC32C of the checkpoint recomputed after the input's changes (so that
// the parser behind the checksum is reached); the rest is the checkpoint.
// Properties, checked on every input; a violation aborts with a message:
//  1. load returns, or throws distopt::checkpoint_error or distopt::config_error; nothing else.
//  2. It throws checkpoint_error whenever an independent reading of the envelope refuses the
//     bytes: magic "DOPTCKPT", version 2, reserved 0, a length field L of at least 28 and at
//     most the size, and bytes [L-4, L) equal to a bitwise CRC32C of bytes [0, L-4). (Bytes
//     after L are not the checkpoint's: a stream may hold more.)
//  3. When it throws, the optimizer is unchanged: it saves the same bytes as before.
//  4. When it returns, saving gives back exactly the L bytes loaded (the encoding is canonical).

#include "fuzz_entry.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <distopt/algorithms.hpp>
#include <distopt/core/checkpoint.hpp>
#include <distopt/core/errors.hpp>
#include <distopt/core/rng.hpp>
#include <distopt/transport/thread.hpp>

namespace distopt::fuzz {
namespace {

constexpr Eigen::Index dim = 24;  // PowerSGD<1> compresses its 4 x 6 matrix

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_checkpoint: %s\n", what.c_str());
  std::abort();
}

/// CRC32C one bit at a time: the reference for the library's table and SSE4.2 versions.
std::uint32_t bitwise_crc32c(std::span<const std::byte> bytes) {
  std::uint32_t state = ~0u;
  for (std::byte b : bytes) {
    state ^= std::to_integer<std::uint32_t>(b);
    for (int k = 0; k < 8; ++k) state = (state >> 1) ^ ((state & 1u) != 0 ? 0x82F63B78u : 0u);
  }
  return ~state;
}

template <class T>
T load_le(std::span<const std::byte> b, std::size_t at) {
  T v = 0;
  for (std::size_t k = 0; k < sizeof(T); ++k) v |= static_cast<T>(std::to_integer<T>(b[at + k]) << (8 * k));
  return v;
}

/// Property 2's reading of the envelope, independent of the library's: the length L of the
/// checkpoint at the start of `b`, or 0 if there is none.
std::size_t envelope_length(std::span<const std::byte> b) {
  if (b.size() < 28 || std::memcmp(b.data(), "DOPTCKPT", 8) != 0) return 0;
  const std::uint64_t length = load_le<std::uint64_t>(b, 16);
  if (load_le<std::uint32_t>(b, 8) != 2 || load_le<std::uint32_t>(b, 12) != 0 || length < 28 || length > b.size())
    return 0;
  const auto l = static_cast<std::size_t>(length);
  return load_le<std::uint32_t>(b, l - 4) == bitwise_crc32c(b.first(l - 4)) ? l : 0;
}

/// One rank's world on the calling thread.
struct world_of_one {
  detail::thread_world world{1, std::chrono::seconds(5)};
  thread_transport endpoint{world, 0};
};

/// Trains `opt` for `steps` steps with seeded gradients, so that every state is filled.
template <class Opt>
void train(Opt& opt, int steps) {
  for (int s = 0; s < steps; ++s) {
    rng g(7, 0, static_cast<std::uint32_t>(s), purpose::user);
    Eigen::VectorXf grad(dim);
    for (Eigen::Index i = 0; i < dim; ++i) grad(i) = g.normal();
    opt.step(grad);
  }
}

template <class Opt>
std::string saved(const Opt& opt) {
  std::ostringstream out;
  opt.save(out);
  return out.str();
}

const options plain{.learning_rate = 0.05f, .momentum = 0.5f, .seed = 3};
using local_sgd = algorithms::local_sgd<3>;
using shared_k =
    optimizer<compress::random_k_shared, topology::allreduce, staleness::synchronous, local_steps::every_step>;
using choco = algorithms::choco_sgd<compress::top_k, topology::complete>;

/// Calls f(optimizer) with configuration `which` built on `t` (the table of byte 0).
template <class F>
void with_configuration(std::size_t which, transport_ref t, F&& f) {
  const Eigen::VectorXf x0 = Eigen::VectorXf::LinSpaced(dim, -1.0f, 1.0f);
  switch (which % 8) {
    case 0: {
      algorithms::minibatch_sgd o(t, x0, plain);
      return f(o);
    }
    case 1: {
      algorithms::ef_topk_sgd o(t, x0, plain, compress::error_feedback{compress::top_k{0.25}});
      return f(o);
    }
    case 2: {
      algorithms::ef21_sgd<> o(t, x0, plain, compress::ef21{compress::top_k{0.25}});
      return f(o);
    }
    case 3: {
      algorithms::powersgd<1> o(t, x0, plain);
      return f(o);
    }
    case 4: {
      local_sgd o(t, x0, plain);
      return f(o);
    }
    case 5: {
      algorithms::double_squeeze<> o(t, x0, plain, compress::error_feedback{compress::top_k{0.25}});
      return f(o);
    }
    case 6: {
      shared_k o(t, x0, plain, compress::random_k_shared{0.25, 9});
      return f(o);
    }
    default: {
      choco o(t, x0, plain, compress::top_k{0.25});
      return f(o);
    }
  }
}

void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

std::size_t write_seeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  std::size_t written = 0;
  for (std::size_t which = 0; which < 8; ++which) {
    world_of_one w;
    with_configuration(which, w.endpoint, [&](auto& opt) {
      train(opt, 4);  // every state filled; local SGD one step into a period
      for (const char repair : {'\0', '\1'}) {
        write_file(dir / ("seed-c" + std::to_string(which) + "-r" + std::to_string(int{repair})),
                   std::string{static_cast<char>(which), repair} + saved(opt));
        ++written;
      }
    });
  }
  return written;
}

}  // namespace distopt::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace distopt::fuzz;
  const std::size_t which = size > 0 ? data[0] : 0;
  const bool repair = size > 1 && (data[1] & 1u) != 0;
  std::string bytes;
  if (size > 2) bytes.assign(reinterpret_cast<const char*>(data) + 2, size - 2);
  const auto view = [&] { return std::as_bytes(std::span<const char>(bytes.data(), bytes.size())); };
  if (repair && bytes.size() >= 4) {
    const std::uint32_t crc = bitwise_crc32c(view().first(bytes.size() - 4));
    for (std::size_t k = 0; k < 4; ++k) bytes[bytes.size() - 4 + k] = static_cast<char>(crc >> (8 * k));
  }
  world_of_one w;
  with_configuration(which, w.endpoint, [&](auto& opt) {
    train(opt, 1);
    const std::string before = saved(opt);
    std::istringstream in(bytes);
    try {
      opt.load(in);
    } catch (const distopt::checkpoint_error&) {
      if (saved(opt) != before) fail("a refused checkpoint changed the optimizer");
      return;
    } catch (const distopt::config_error& e) {
      if (envelope_length(view()) == 0)
        fail(std::string("a damaged envelope passed as a foreign checkpoint: ") + e.what());
      if (saved(opt) != before) fail("a refused checkpoint changed the optimizer");
      return;
    } catch (const std::exception& e) {
      fail(std::string("unexpected exception: ") + e.what());
    }
    const std::size_t length = envelope_length(view());
    if (length == 0) fail("a damaged envelope was loaded");
    if (saved(opt) != bytes.substr(0, length)) fail("saving what was loaded gives other bytes");
  });
  return 0;
}
