#pragma once
// report.hpp: what the Fashion-MNIST examples (fashion_mnist, torch_fashion_mnist) share:
// their --configs list and the --network options of the "simulated" column; the training
// split (all of it or its first --train-samples images); running the chosen configurations
// one after another, and rank 0's evaluation after each epoch; what they print and write: a
// progress line per epoch, the side-by-side table, one machine-readable line per configuration
//   RESULT <configuration> accuracy <test accuracy %> bytes <bytes sent per worker>
// and the per-epoch CSV that scripts/plot draws.
//
//   examples::network_choice network;
//   network.add_options(app);                    // --network, --latency-us, --bandwidth-gbit
//   if (list) examples::list_configurations(configurations);   // --list-configs
//   const auto chosen = examples::choose_configurations(list, configurations);
//   ... a configuration's run: an examples::epoch_log fills its examples::run_result ...
//   const auto results = examples::run_configurations(chosen, configurations, experiment, primary);
//   examples::report(results, "Fashion-MNIST, ... " + network.describe(), "fashion_mnist.csv");

#include <CLI/CLI.hpp>

#include <Eigen/Core>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <distopt/core/errors.hpp>
#include <distopt/data/idx.hpp>
#include <distopt/transport/network_model.hpp>

namespace examples {

struct epoch_record {
  int epoch;
  double test_accuracy, test_loss, seconds;
  double simulated_seconds;  // rank 0's clock on the modelled network (transport/simulated.hpp)
  std::uint64_t bytes_sent;  // per worker, cumulative
};

struct run_result {
  std::string name;
  std::vector<epoch_record> epochs;
  std::uint64_t messages = 0;
};

/// The modelled network of the "simulated" column: a preset, or a custom latency and bandwidth.
struct network_choice {
  std::string name = "1g";
  double latency_us = -1, bandwidth_gbit = -1;

  void add_options(CLI::App& app) {
    app.add_option("--network", name, "modelled network of the 'simulated' column: datacenter-100g, 1g or wan")
        ->check(CLI::IsMember({"datacenter-100g", "1g", "wan"}));
    app.add_option("--latency-us", latency_us, "custom network: latency in microseconds (overrides --network)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--bandwidth-gbit", bandwidth_gbit, "custom network: bandwidth in Gbit/s (overrides --network)")
        ->check(CLI::PositiveNumber);
  }
  bool custom() const { return latency_us >= 0 || bandwidth_gbit > 0; }
  /// "1g", or "custom" when --latency-us or --bandwidth-gbit was given.
  std::string label() const { return custom() ? "custom" : name; }
  distopt::network_model model() const {
    distopt::network_model m = distopt::network_model::preset(name);
    if (latency_us >= 0) m.latency_s = 1e-6 * latency_us;
    if (bandwidth_gbit > 0) m.bandwidth_bytes_per_s = bandwidth_gbit * 1e9 / 8;
    return m;
  }
  /// "simulated network: 1g (50 us, 1 Gbit/s)"
  std::string describe() const {
    const distopt::network_model m = model();
    char text[128];
    std::snprintf(text, sizeof text, "simulated network: %s (%.0f us, %.3g Gbit/s)", label().c_str(), 1e6 * m.latency_s,
                  8e-9 * m.bandwidth_bytes_per_s);
    return text;
  }
};

/// The names of the comma-separated `list`, each checked against the keys of `known`.
template <class Map>
std::vector<std::string> choose_configurations(const std::string& list, const Map& known) {
  std::vector<std::string> chosen;
  std::stringstream names(list);
  for (std::string name; std::getline(names, name, ',');) {
    if (!known.count(name)) throw distopt::config_error("unknown configuration '" + name + "'; see --list-configs");
    chosen.push_back(name);
  }
  return chosen;
}

/// --list-configs: each configuration's name and description.
template <class Map>
void list_configurations(const Map& known) {
  for (const auto& [name, c] : known) std::printf("%-10s %s\n", name.c_str(), c.description.c_str());
}

/// Fashion-MNIST's training split, or its first `samples` images when 0 < samples < 60,000.
inline distopt::data::labelled_images load_training_split(std::size_t samples) {
  auto train = distopt::data::load_fashion_mnist(distopt::data::split::train);
  if (samples > 0 && samples < train.labels.size()) {
    train.features.conservativeResize(static_cast<Eigen::Index>(samples), Eigen::NoChange);
    train.labels.resize(samples);
  }
  return train;
}

/// Trains the chosen configurations one after another: known.at(name).run(ex, name), each
/// announced as "<name>: <description>" (on the primary process).
template <class Map, class Experiment>
std::vector<run_result> run_configurations(const std::vector<std::string>& chosen, const Map& known,
                                           const Experiment& ex, bool primary) {
  std::vector<run_result> results;
  for (const auto& name : chosen) {
    if (primary) std::printf("\n%s: %s\n", name.c_str(), known.at(name).description.c_str());
    results.push_back(known.at(name).run(ex, name));
  }
  return results;
}

inline void print_progress(const std::string& name, const epoch_record& e, int epochs, const std::string& network) {
  std::printf(
      "  %-10s epoch %2d/%d  test loss %.4f  test acc %6.2f%%  sent %8.2f MB/worker  %6.1f s  "
      "(%.1f s on %s)\n",
      name.c_str(), e.epoch, epochs, e.test_loss, 100.0 * e.test_accuracy, static_cast<double>(e.bytes_sent) / 1e6,
      e.seconds, e.simulated_seconds, network.c_str());
  std::fflush(stdout);
}

/// Rank 0's record of a run, epoch by epoch. The wall time of training starts at construction
/// and leaves out the evaluations.
class epoch_log {
 public:
  epoch_log(run_result& result, int epochs, std::string network)
      : result_(result), epochs_(epochs), network_(std::move(network)) {}

  /// After epoch `epoch`: evaluate() gives the test accuracy and loss, outside the training time
  /// and outside the compute that t, the simulated transport, models. Appends the epoch's record
  /// (bytes_sent per worker so far) and prints its progress line.
  template <class Transport, class Evaluate>
  void after_epoch(int epoch, Transport& t, std::uint64_t bytes_sent, Evaluate evaluate) {
    const auto eval_start = clock::now();
    const auto e = evaluate();
    evaluating_ += clock::now() - eval_start;
    t.exclude_compute_so_far();  // evaluation is not part of training
    const double seconds = std::chrono::duration<double>(clock::now() - start_ - evaluating_).count();
    result_.epochs.push_back({epoch, e.accuracy, e.loss, seconds, t.now(), bytes_sent});
    print_progress(result_.name, result_.epochs.back(), epochs_, network_);
  }

 private:
  using clock = std::chrono::steady_clock;
  run_result& result_;
  int epochs_;
  std::string network_;
  clock::time_point start_ = clock::now();
  std::chrono::duration<double> evaluating_{0};
};

namespace detail {
inline std::string pad(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}
// Simulated seconds at the end of the first epoch whose test accuracy reached `target`, or < 0.
inline double time_to_accuracy(const run_result& r, double target) {
  for (const auto& e : r.epochs)
    if (e.test_accuracy >= target) return e.simulated_seconds;
  return -1.0;
}
}  // namespace detail

/// The side-by-side table, under `title` (what was trained, how, on which modelled network).
inline void print_table(const std::vector<run_result>& results, const std::string& title) {
  if (results.empty() || results.front().epochs.empty()) return;
  const auto& first = results.front().epochs.back();
  const double reference = static_cast<double>(first.bytes_sent);
  const double target = first.test_accuracy - 0.005;  // the first configuration's final accuracy - 0.5 pp
  std::printf("\n%s\n\n", title.c_str());
  std::printf("%s  %9s  %13s  %8s  %9s  %10s  %12s  %9s\n", detail::pad("configuration", 12).c_str(), "test acc",
              "sent/worker", "vs first", "wall time", "simulated", "to target", "messages");
  std::printf("%s\n", std::string(12 + 2 + 9 + 2 + 13 + 2 + 8 + 2 + 9 + 2 + 10 + 2 + 12 + 2 + 9, '-').c_str());
  for (const auto& r : results) {
    if (r.epochs.empty()) continue;
    const auto& last = r.epochs.back();
    const double sent = static_cast<double>(last.bytes_sent);
    const double reached = detail::time_to_accuracy(r, target);
    char to_target[32] = "not reached";
    if (reached >= 0) std::snprintf(to_target, sizeof to_target, "%.2f s", reached);
    std::printf("%s  %8.2f%%  %10.2f MB  %7.1fx  %7.1f s  %8.1f s  %12s  %9llu\n", detail::pad(r.name, 12).c_str(),
                100.0 * last.test_accuracy, sent / 1e6, sent > 0 ? reference / sent : 0.0, last.seconds,
                last.simulated_seconds, to_target, static_cast<unsigned long long>(r.messages));
  }
  std::printf(
      "\n'vs first': how many times fewer bytes than the first configuration. 'simulated': the run's\n"
      "time on the modelled network (measured compute + modelled messages). 'to target': simulated time\n"
      "at the end of the first epoch whose accuracy reached %.2f%% (the first configuration's final\n"
      "accuracy - 0.5 pp).\n",
      100.0 * target);
}

/// One line per configuration: RESULT <name> accuracy <final test accuracy %> bytes <sent per worker>.
inline void print_result_lines(const std::vector<run_result>& results) {
  for (const auto& r : results)
    if (!r.epochs.empty())
      std::printf("RESULT %s accuracy %.2f bytes %llu\n", r.name.c_str(), 100.0 * r.epochs.back().test_accuracy,
                  static_cast<unsigned long long>(r.epochs.back().bytes_sent));
}

/// The per-epoch results, for scripts/plot.
inline void write_csv(const std::vector<run_result>& results, const std::string& path) {
  std::ofstream out(path);
  if (!out) throw distopt::config_error("cannot write " + path + "; pass a writable --csv path");
  out << "configuration,epoch,test_accuracy,test_loss,bytes_sent_per_worker,seconds,simulated_seconds\n";
  for (const auto& r : results)
    for (const auto& e : r.epochs)
      out << r.name << ',' << e.epoch << ',' << e.test_accuracy << ',' << e.test_loss << ',' << e.bytes_sent << ','
          << e.seconds << ',' << e.simulated_seconds << '\n';
}

/// All of the above after the runs: the table under `title`, the RESULT lines, the CSV at
/// `csv_path` and a line saying where it is.
inline void report(const std::vector<run_result>& results, const std::string& title, const std::string& csv_path) {
  print_table(results, title);
  print_result_lines(results);
  write_csv(results, csv_path);
  std::printf("Per-epoch results: %s (plot with scripts/plot %s)\n", csv_path.c_str(), csv_path.c_str());
}

}  // namespace examples
