#pragma once
// The optimizer's checkpoint, in core/checkpoint.hpp's format: three sections, "run" (what
// wrote it: type, parameter count, rank, world size, options — compared on load), "optimizer"
// (step counter, parameters, local_update, statistics) and "protocol" (P::save, core/protocol.hpp).
// optimizer::save and optimizer::load are these two functions over the optimizer's members.

#include <cstddef>
#include <cstdint>
#include <istream>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "distopt/core/checkpoint.hpp"
#include "distopt/core/local_update.hpp"
#include "distopt/core/protocol.hpp"
#include "distopt/core/statistics.hpp"

namespace distopt::detail {

/// The checkpoint of one rank's optimizer state.
template <class Protocol>
std::vector<std::byte> checkpoint_of(const checkpoint_origin& origin, std::uint64_t step, std::span<const float> x,
                                     const local_update& update, const statistics& stats, const Protocol& protocol) {
  static_assert(checkpointable_protocol<Protocol>,
                "optimizer::save/load: the protocol has no `void save(checkpoint_writer&) const` and "
                "`void load(checkpoint_reader&)` (see distopt/core/protocol.hpp, requirement 5)");
  checkpoint_writer w;
  w.section("run", [&] { origin.save(w); });
  w.section("optimizer", [&] {
    w.u64(step);
    w.floats(x);
    update.save(w);
    stats.save(w);
  });
  w.section("protocol", [&] { protocol.save(w); });
  const std::span<const std::byte> all = w.finish();
  return {all.begin(), all.end()};
}

/// optimizer::save: writes `bytes` to `out`; checkpoint_error if the stream fails.
inline void write_checkpoint(std::ostream& out, std::span<const std::byte> bytes) {
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out)
    throw checkpoint_error("optimizer::save: the stream did not take the checkpoint's " + std::to_string(bytes.size()) +
                           " bytes (disk full, or the file is not open?)");
}

/// optimizer::load: damage is found before anything changes; a refusal while reading puts back
/// what was there, so the state is either the checkpoint's or untouched.
template <class Protocol>
void load_checkpoint(std::istream& in, const checkpoint_origin& origin, std::uint64_t& step, std::span<float> x,
                     local_update& update, statistics& stats, Protocol& protocol) {
  const auto read = [&](std::span<const std::byte> checkpoint) {
    checkpoint_reader all = checkpoint_reader::sections_of(checkpoint);
    checkpoint_reader run = all.section("run");
    origin.expect_same(run);
    run.expect_end();
    checkpoint_reader mine = all.section("optimizer");
    const std::uint64_t saved_step = mine.u64();
    mine.floats(x, "the parameters");
    update.load(mine);
    stats.load(mine);
    mine.expect_end();
    checkpoint_reader theirs = all.section("protocol");
    protocol.load(theirs);
    theirs.expect_end();
    all.expect_end();
    step = saved_step;
  };
  const std::vector<std::byte> bytes = read_checkpoint(in);
  const std::vector<std::byte> undo = checkpoint_of(origin, step, x, update, stats, protocol);
  try {
    read(bytes);
  } catch (...) {
    read(undo);
    throw;
  }
}

}  // namespace distopt::detail
