// The main of every fuzz binary fuzz_<decoder> (see fuzz_target.cpp for the input format):
//
//   fuzz_<decoder> --write-seeds DIR     writes the seed corpus (valid encodings) into DIR
//   fuzz_<decoder> --corpus PATH...      the deterministic corpus pass that ctest runs (label 'fuzz'):
//                                        every file (PATH or the files in it), each truncation of it,
//                                        it with one more byte, huge values written over every
//                                        position of its first 24 bytes (the length fields), and 64
//                                        seeded random mutations of it (bit flips, byte overwrites,
//                                        huge values, truncations, insertions, deletions)
//   fuzz_<decoder> [-flag=value...] [DIR...]    Clang builds only: libFuzzer (scripts/fuzz runs it)
//
// `--write-seeds DIR --corpus DIR` makes the seeds, then runs the pass over them. When an input
// of the pass fails, it is written to fuzz-failure-<decoder>.bin in the working directory:
// `fuzz_<decoder> --corpus fuzz-failure-<decoder>.bin` reproduces it.

#include "fuzz_entry.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include <distopt/core/rng.hpp>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DISTOPT_FUZZ_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DISTOPT_FUZZ_SANITIZED 1
#endif
#endif
#ifdef DISTOPT_FUZZ_SANITIZED
#include <sanitizer/common_interface_defs.h>
#endif

#ifdef DISTOPT_FUZZ_LIBFUZZER
extern "C" int LLVMFuzzerRunDriver(int* argc, char*** argv, int (*callback)(const std::uint8_t*, std::size_t));
#endif

namespace {

using bytes = std::vector<std::uint8_t>;

/// The input being run and where it came from, for the crash report.
struct current_input {
  bytes data;
  std::string label;
  std::string failure_path;
} current;

/// On a crash, an abort or a sanitizer report: say which input failed and save it
/// (async-signal-safe calls only, on strings made before the input ran).
void report_failure() {
  const auto say = [](std::string_view s) { (void)!::write(2, s.data(), s.size()); };
  say("\nfailing input: ");
  say(current.label);
  const int fd = ::open(current.failure_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    (void)!::write(fd, current.data.data(), current.data.size());
    ::close(fd);
    say("\nwritten to ");
    say(current.failure_path);
    say("; reproduce with --corpus and that file");
  }
  say("\n");
}

void install_failure_report(const std::string& program) {
  current.failure_path = "fuzz-failure-" + program.substr(program.starts_with("fuzz_") ? 5 : 0) + ".bin";
  struct sigaction action {};
  action.sa_handler = [](int) { report_failure(); };
  action.sa_flags = static_cast<int>(SA_RESETHAND);  // the default action follows (abort, core)
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) sigaction(sig, &action, nullptr);
#ifdef DISTOPT_FUZZ_SANITIZED
  __sanitizer_set_death_callback(report_failure);
#endif
}

std::size_t runs = 0;

void run(const bytes& input, std::string label) {
  current.data = input;
  current.label = std::move(label);
  LLVMFuzzerTestOneInput(input.data(), input.size());
  ++runs;
}

/// Writes `value`'s low `width` bytes at `at` (little-endian), clipped to the input.
void overwrite(bytes& b, std::size_t at, std::uint64_t value, std::size_t width) {
  for (std::size_t k = 0; k < width && at + k < b.size(); ++k) b[at + k] = static_cast<std::uint8_t>(value >> (8 * k));
}

/// Values a lying length or count field might hold, with their widths.
struct huge_value {
  std::uint64_t value;
  std::size_t width;
};
constexpr huge_value huge_values[] = {{0xFFFFFFFFu, 4},           {0x80000000u, 4},       {0x7FFFFFFFu, 4},
                                      {0x00010001u, 4},           {~std::uint64_t{0}, 8}, {std::uint64_t{1} << 32, 8},
                                      {std::uint64_t{1} << 63, 8}};

/// One to three random edits.
bytes mutate(bytes b, distopt::rng& g) {
  const auto below = [&](std::size_t n) { return n == 0 ? std::size_t{0} : std::size_t{g.below(std::uint32_t(n))}; };
  for (std::uint32_t edits = 1 + g.below(3); edits > 0; --edits) {
    switch (g.below(6)) {
      case 0:
        if (!b.empty()) b[below(b.size())] ^= static_cast<std::uint8_t>(1u << g.below(8));
        break;
      case 1: {
        constexpr std::uint8_t extremes[] = {0x00, 0xFF, 0x80, 0x7F};
        if (!b.empty()) b[below(b.size())] = extremes[g.below(4)];
        break;
      }
      case 2: {
        const auto& h = huge_values[g.below(std::size(huge_values))];
        overwrite(b, below(b.size()), h.value, h.width);
        break;
      }
      case 3:
        b.resize(below(b.size()));
        break;
      case 4:
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(below(b.size() + 1)), std::uint8_t(g.next_u32()));
        break;
      case 5:
        if (!b.empty()) b.erase(b.begin() + static_cast<std::ptrdiff_t>(below(b.size())));
        break;
    }
  }
  return b;
}

/// The pass over one file: the file, its truncations, one byte more, huge length fields, mutations.
void pass(const std::filesystem::path& file, std::uint64_t seed) {
  std::ifstream in(file, std::ios::binary);
  const bytes original{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const std::string name = file.filename().string();
  run(original, name);
  for (std::size_t len = 0; len < original.size(); ++len)
    run(bytes(original.begin(), original.begin() + static_cast<std::ptrdiff_t>(len)),
        name + " truncated to " + std::to_string(len) + " bytes");
  bytes longer = original;
  longer.push_back(0);
  run(longer, name + " with a trailing zero byte");
  for (std::size_t at = 0; at < std::min<std::size_t>(original.size(), 24); ++at)
    for (const auto& h : huge_values) {
      bytes b = original;
      overwrite(b, at, h.value, h.width);
      run(b, name + " with " + std::to_string(h.value) + " (" + std::to_string(h.width) + " bytes) at offset " +
                 std::to_string(at));
    }
  distopt::rng g(seed, 0, 0, distopt::purpose::user);
  for (int trial = 0; trial < 64; ++trial)
    run(mutate(original, g), name + " mutation " + std::to_string(trial) + " (seed " + std::to_string(seed) + ")");
}

int corpus_pass(const std::vector<std::filesystem::path>& paths, const std::string& program) {
  std::vector<std::filesystem::path> files;
  for (const auto& p : paths) {
    if (std::filesystem::is_directory(p)) {
      for (const auto& entry : std::filesystem::directory_iterator(p))
        if (entry.is_regular_file()) files.push_back(entry.path());
    } else if (std::filesystem::is_regular_file(p)) {
      files.push_back(p);
    } else {
      std::fprintf(stderr, "%s: no such file or directory: %s\n", program.c_str(), p.c_str());
      return 2;
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "%s: the corpus is empty (make one with --write-seeds DIR)\n", program.c_str());
    return 2;
  }
  std::sort(files.begin(), files.end());  // a deterministic order
  install_failure_report(program);
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < files.size(); ++i) pass(files[i], i + 1);
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  std::printf("%s: %zu inputs from %zu corpus files passed in %.2f s\n", program.c_str(), runs, files.size(),
              took.count());
  return 0;
}

int usage(const std::string& program) {
  std::fprintf(stderr,
               "usage: %s --write-seeds DIR     write the seed corpus\n"
               "       %s --corpus PATH...      run every file, its truncations and mutations\n",
               program.c_str(), program.c_str());
#ifdef DISTOPT_FUZZ_LIBFUZZER
  std::fprintf(stderr, "       %s [libFuzzer flags] [CORPUS_DIR...]\n", program.c_str());
#else
  std::fprintf(stderr, "(built without libFuzzer: build with clang++ and its libFuzzer runtime to fuzz)\n");
#endif
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string program = std::filesystem::path(argv[0]).filename().string();
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || (args[0] != "--write-seeds" && args[0] != "--corpus")) {
#ifdef DISTOPT_FUZZ_LIBFUZZER
    return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput);
#else
    return usage(program);
#endif
  }
  std::size_t i = 0;
  if (args[0] == "--write-seeds") {
    if (args.size() < 2) return usage(program);
    const std::size_t n = distopt::fuzz::write_seeds(args[1]);
    std::printf("%s: %zu seeds written to %s\n", program.c_str(), n, args[1].c_str());
    i = 2;
  }
  if (i == args.size()) return 0;
  if (args[i] != "--corpus" || i + 1 == args.size()) return usage(program);
  return corpus_pass(std::vector<std::filesystem::path>(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end()),
                     program);
}
