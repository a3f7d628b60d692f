#pragma once
// checkpoints.hpp: --checkpoint-every N and --resume DIR for the examples (the flagship).
//
// Every N steps each rank saves its optimizer (optimizer::save) followed by the example's
// own state (what `write` puts after it) to DIR/<run>/step-<S>.rank-<r>.ckpt, atomically
// (distopt/core/checkpoint_file.hpp), and keeps its three latest files. When resuming, each
// rank, once its optimizer is built, picks the latest step S for which every rank's file
// exists — the newest point all ranks reached — and loads it. Building the optimizer is a
// collective, so no rank can write a newer set before every rank has looked: all pick the
// same S. (Synchronous ranks are never three checkpoints apart, so a complete set always
// survives the pruning.) scripts/distopt-launch --restarts K restarts a killed run; given
// the same --resume DIR it continues from there, and a synchronous run ends bit for bit as
// the uninterrupted one would.
//
// Fault injection, for tests and demonstrations: DISTOPT_KILL_AT_STEP="S:R" makes rank R kill
// itself with SIGKILL right after step S, in the launcher's first attempt only (DISTOPT_RESTART
// unset or 0).
//
//   examples::checkpoints ck("ckpt", /*every=*/100, /*resume=*/true);
//   std::uint64_t step = ck.resume(opt, "sgd", rank, world, [&](std::istream& in) { ... });
//   ... opt.step(g); ++step; ck.save_if_due(opt, "sgd", rank, step, [&](std::ostream& out) { ... });

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <distopt/core/checkpoint_file.hpp>
#include <distopt/core/errors.hpp>

namespace examples {

class checkpoints {
 public:
  checkpoints() = default;  // off
  checkpoints(std::filesystem::path dir, std::uint64_t every, bool resume)
      : dir_(std::move(dir)), every_(every), resume_(resume) {
    const char* kill = std::getenv("DISTOPT_KILL_AT_STEP");
    const char* restart = std::getenv("DISTOPT_RESTART");
    if (kill != nullptr && (restart == nullptr || std::string(restart) == "0")) {
      unsigned long long step = 0;
      int rank = -1;
      if (std::sscanf(kill, "%llu:%d", &step, &rank) != 2)
        throw distopt::config_error("DISTOPT_KILL_AT_STEP must be STEP:RANK, got '" + std::string(kill) + "'");
      kill_step_ = step;
      kill_rank_ = rank;
    }
  }

  /// Loads this rank's file of the latest complete set of run `run`, then read(std::istream&)
  /// reads the example's state after it; returns the step it was saved after, 0 if there is none.
  template <class Optimizer, class Read>
  std::uint64_t resume(Optimizer& opt, const std::string& run, int rank, int world, Read&& read) const {
    if (!resume_) return 0;
    const std::uint64_t step = latest_complete(dir_ / run, world);
    if (step == 0) return 0;
    const std::filesystem::path path = file(run, step, rank);
    std::ifstream in(path, std::ios::binary);
    if (!in) throw distopt::checkpoint_error("cannot open " + path.string());
    opt.load(in);
    read(in);
    if (!in) throw distopt::checkpoint_error(path.string() + ": the example's state after the checkpoint is truncated");
    return step;
  }

  /// After `step` steps: saves every N steps (and when `last`), then obeys DISTOPT_KILL_AT_STEP.
  template <class Optimizer, class Write>
  void save_if_due(const Optimizer& opt, const std::string& run, int rank, std::uint64_t step, bool last,
                   Write&& write) const {
    if (every_ > 0 && (step % every_ == 0 || last)) {
      std::filesystem::create_directories(dir_ / run);
      distopt::write_file_atomically(file(run, step, rank), [&](std::ostream& out) {
        opt.save(out);
        write(out);
      });
      prune(run, rank);
    }
    if (step == kill_step_ && rank == kill_rank_) std::raise(SIGKILL);
  }

 private:
  std::filesystem::path file(const std::string& run, std::uint64_t step, int rank) const {
    return dir_ / run / ("step-" + std::to_string(step) + ".rank-" + std::to_string(rank) + ".ckpt");
  }

  // The steps of the files in `dir`, each with the ranks that saved it.
  static std::map<std::uint64_t, std::set<int>> saved_steps(const std::filesystem::path& dir) {
    std::map<std::uint64_t, std::set<int>> out;
    if (!std::filesystem::is_directory(dir)) return out;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      unsigned long long step = 0;
      int rank = -1, end = 0;
      const std::string name = entry.path().filename().string();
      if (std::sscanf(name.c_str(), "step-%llu.rank-%d.ckpt%n", &step, &rank, &end) == 2 &&
          static_cast<std::size_t>(end) == name.size())
        out[step].insert(rank);
    }
    return out;
  }

  static std::uint64_t latest_complete(const std::filesystem::path& dir, int world) {
    const auto steps = saved_steps(dir);
    for (auto it = steps.rbegin(); it != steps.rend(); ++it)
      if (static_cast<int>(it->second.size()) == world && *it->second.begin() == 0 && *it->second.rbegin() == world - 1)
        return it->first;
    return 0;
  }

  // Removes this rank's files but its three latest.
  void prune(const std::string& run, int rank) const {
    std::vector<std::uint64_t> mine;
    for (const auto& [step, ranks] : saved_steps(dir_ / run))
      if (ranks.count(rank)) mine.push_back(step);
    for (std::size_t k = 0; k + 3 < mine.size(); ++k) std::filesystem::remove(file(run, mine[k], rank));
  }

  std::filesystem::path dir_;
  std::uint64_t every_ = 0;
  bool resume_ = false;
  std::uint64_t kill_step_ = 0;
  int kill_rank_ = -1;
};

}  // namespace examples
