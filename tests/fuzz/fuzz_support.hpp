#pragma once
// What the fuzz targets of the TCP transport's parsers share (fuzz_tcp_frame.cpp,
// fuzz_tcp_handshake.cpp, fuzz_tcp_address_table.cpp): failing with a message, the
// bounds-checked little-endian reader of their independent models, writing a seed file, and
// the entry point's guard against exceptions that should not escape, and its copy of the input.
//
// Each target defines its name in namespace distopt::fuzz, as fuzz_config.hpp does for the
// decoder targets; fail() prints it as "fuzz_<name>: <what>":
//   const char* const target_name = "tcp_frame";

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

namespace distopt::fuzz {

extern const char* const target_name;

/// A violated property: says which and aborts (what libFuzzer and corpus_driver.cpp report).
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_%s: %s\n", target_name, what.c_str());
  std::abort();
}

/// Runs one input through `body`; an exception that escapes it is a failure.
template <class Body>
int guard_input(Body&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    fail(std::string("unexpected exception: ") + e.what());
  }
  return 0;
}

/// A bounds-checked little-endian reader for the models, independent of the transport's message_reader.
struct cursor {
  std::span<const std::byte> b;
  std::size_t at = 0;
  bool ok = true;  // false once a read ran past the end; reads after that give nothing
  std::span<const std::byte> take(std::size_t n) {
    if (!ok || n > b.size() - at) {
      ok = false;
      return {};
    }
    at += n;
    return b.subspan(at - n, n);
  }
  /// An unsigned integer of `width` bytes (at most 8).
  std::uint64_t uint(std::size_t width) {
    const auto s = take(width);
    std::uint64_t v = 0;
    for (std::size_t k = 0; k < s.size(); ++k) v |= std::to_integer<std::uint64_t>(s[k]) << (8 * k);
    return v;
  }
  std::uint32_t u32() { return static_cast<std::uint32_t>(uint(4)); }
  /// A u32 length and that many bytes.
  std::string str() {
    const auto s = take(static_cast<std::size_t>(uint(4)));
    return {reinterpret_cast<const char*>(s.data()), s.size()};
  }
  /// Every byte read, and no read past the end.
  bool done() const { return ok && at == b.size(); }
};

/// The input's bytes from `offset` on (none if it is shorter), in an allocation of their own,
/// so that ASan sees a read before or after them.
inline std::vector<std::byte> bytes_from(const std::uint8_t* data, std::size_t size, std::size_t offset) {
  std::vector<std::byte> bytes(size - std::min(size, offset));
  if (!bytes.empty()) std::memcpy(bytes.data(), data + offset, bytes.size());
  return bytes;
}

/// Writes one seed input.
inline void write_file(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace distopt::fuzz
