#pragma once
// The interface between a fuzz target (fuzz_target.cpp, built once per decoder) and the
// program around it: corpus_driver.cpp's main, or libFuzzer.

#include <cstddef>
#include <cstdint>
#include <filesystem>

/// Runs one input: returns 0, or aborts with a message when a property fails (libFuzzer's entry point).
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace distopt::fuzz {

/// Writes the seed corpus into `dir` (created if missing): for every configuration and several
/// lengths, one input whose encoding is valid. Returns the number of files written.
std::size_t write_seeds(const std::filesystem::path& dir);

}  // namespace distopt::fuzz
