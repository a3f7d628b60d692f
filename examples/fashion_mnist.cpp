// The flagship: several workers train a classifier on the real Fashion-MNIST data
// (Debian package dataset-fashion-mnist) under several communication strategies,
// one after another, and compare them side by side: test accuracy, bytes each
// worker sent, wall time, the time the run would take on a modelled network
// (--network; transport/simulated.hpp) and messages. Writes a CSV for scripts/plot.
//
//   build/examples/fashion_mnist --workers 4 --epochs 5 --configs sgd,local4,ef-topk
//   build/examples/fashion_mnist --list-configs
//   mpirun -np 4 build/examples/fashion_mnist --transport mpi   # one worker per MPI rank
//   scripts/distopt-launch -n 4 --restarts 2 -- build/examples/fashion_mnist --transport tcp
//       --checkpoint-every 200 --resume ckpt    # (one line) a killed rank: all restart from the last checkpoint

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <distopt/data/idx.hpp>
#include <distopt/distopt.hpp>
#include <distopt/transport/simulated.hpp>

#include "checkpoints.hpp"
#include "launch.hpp"

namespace {

namespace compress = distopt::compress;
namespace topology = distopt::topology;
namespace staleness = distopt::staleness;
namespace local_steps = distopt::local_steps;

struct settings {
  int workers = 4;
  std::string model = "mlp";
  int hidden = 128;
  int epochs = 5;
  std::size_t batch = 64;
  float learning_rate = 0.1f;
  float momentum = 0.0f;  // heavy-ball momentum on top of error feedback hurts EF (see README)
  std::uint64_t seed = 1;
  std::size_t train_samples = 0;  // 0: all
  std::string csv = "fashion_mnist.csv";
  std::string network = "1g";  // the modelled network of the "simulated" column
  distopt::network_model net = distopt::network_model::preset("1g");
  std::uint64_t checkpoint_every = 0;  // steps; 0: no checkpoints
  std::string resume;                  // directory to resume from and save into ("": start afresh)
};

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

struct experiment {
  const distopt::data::labelled_images& train;
  const distopt::data::labelled_images& test;
  const distopt::problems::mlp& net;
  const settings& s;
  const examples::launcher& launch;
  const examples::checkpoints& checkpoints;
};

// The epoch records a rank keeps, after its optimizer in a checkpoint (examples/checkpoints.hpp).
void write_records(std::ostream& out, const std::vector<epoch_record>& records) {
  const std::uint64_t n = records.size();
  out.write(reinterpret_cast<const char*>(&n), sizeof n);
  for (const epoch_record& e : records)
    for (const double v : {double(e.epoch), e.test_accuracy, e.test_loss, e.seconds, e.simulated_seconds,
                           double(e.bytes_sent)})
      out.write(reinterpret_cast<const char*>(&v), sizeof v);
}
void read_records(std::istream& in, std::vector<epoch_record>& records) {
  std::uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), sizeof n);
  records.clear();
  for (std::uint64_t k = 0; k < n && in; ++k) {
    double v[6] = {};
    in.read(reinterpret_cast<char*>(v), sizeof v);
    records.push_back({static_cast<int>(v[0]), v[1], v[2], v[3], v[4], static_cast<std::uint64_t>(v[5])});
  }
}

// Trains with one optimizer type; rank 0 evaluates on the test split after each epoch.
template <class Optimizer>
run_result train(const experiment& ex, const std::string& name, typename Optimizer::compressor_type c = {},
                 float consensus_step = 1.0f) {
  run_result result{name, {}, 0};
  const auto& s = ex.s;
  const std::size_t steps_per_epoch = ex.net.samples() / (s.batch * static_cast<std::size_t>(s.workers));
  if (steps_per_epoch == 0)
    throw distopt::config_error("fashion_mnist: fewer training samples than one batch per worker; lower --batch");
  const Eigen::VectorXf x0 = ex.net.initial_parameters(s.seed);
  ex.launch.run(s.workers, [&](distopt::transport_ref real) {
    distopt::simulated_transport t(real, s.net);  // runs on `real`, and times the run on s.net
    distopt::data::minibatch_sampler batches(distopt::data::iid_shard(ex.net.samples(), t.rank(), t.size(), s.seed),
                                             s.batch, s.seed, t.rank());
    Optimizer opt(t, x0,
                  {.learning_rate = s.learning_rate, .momentum = s.momentum, .seed = s.seed,
                   .consensus_step = consensus_step},
                  c);
    std::uint64_t step = ex.checkpoints.resume(opt, name, t.rank(), t.size(),
                                               [&](std::istream& in) { read_records(in, result.epochs); });
    for (std::uint64_t k = 0; k < step; ++k) batches.next();  // the batches drawn before the checkpoint
    auto checkpoint = [&](bool last) {
      ex.checkpoints.save_if_due(opt, name, t.rank(), step, last,
                                 [&](std::ostream& out) { write_records(out, result.epochs); });
    };
    Eigen::VectorXf g;
    const auto start = std::chrono::steady_clock::now();
    std::chrono::duration<double> evaluating{0};
    for (int epoch = static_cast<int>(step / steps_per_epoch) + 1; epoch <= s.epochs; ++epoch) {
      for (std::size_t b = step % steps_per_epoch; b < steps_per_epoch; ++b) {
        ex.net.gradient(opt.parameters(), batches.next(), g);
        opt.step(g);
        if (++step % steps_per_epoch != 0) checkpoint(false);  // an epoch's last step: after its evaluation
      }
      if (epoch == s.epochs) opt.finish();
      if (t.rank() != 0) {
        checkpoint(epoch == s.epochs);
        continue;
      }
      const auto eval_start = std::chrono::steady_clock::now();
      const auto e = ex.net.evaluate(opt.parameters(), ex.test.features, ex.test.labels);
      evaluating += std::chrono::steady_clock::now() - eval_start;
      t.exclude_compute_so_far();  // evaluation is not part of training
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start - evaluating).count();
      result.epochs.push_back({epoch, e.accuracy, e.loss, seconds, t.now(), opt.stats().bytes_sent});
      std::printf("  %-10s epoch %2d/%d  test loss %.4f  test acc %6.2f%%  sent %8.2f MB/worker  %6.1f s  "
                  "(%.1f s on %s)\n",
                  name.c_str(), epoch, s.epochs, e.loss, 100.0 * e.accuracy,
                  static_cast<double>(opt.stats().bytes_sent) / 1e6, seconds, t.now(), s.network.c_str());
      std::fflush(stdout);
      checkpoint(epoch == s.epochs);
    }
    if (t.rank() != 0) return;
    result.messages = opt.stats().messages_sent;
    const auto x = opt.parameters();
    std::printf("  %-10s final parameters: CRC32C %08x\n", name.c_str(),
                distopt::detail::crc32c(std::as_bytes(std::span<const float>(x.data(), static_cast<std::size_t>(x.size())))));
  });
  return result;
}

using config_runner = std::function<run_result(const experiment&, const std::string&)>;

struct config {
  std::string description;
  config_runner run;
};

template <class C, class T, class S, class L>
config_runner runner(C c = {}, float consensus_step = 1.0f) {
  return [c, consensus_step](const experiment& ex, const std::string& name) {
    return train<distopt::optimizer<C, T, S, L>>(ex, name, c, consensus_step);
  };
}

// The named configurations, by the name used on the command line.
std::map<std::string, config> configurations() {
  using sync = staleness::synchronous;
  using every = local_steps::every_step;
  return {
      {"sgd", {"exact synchronous SGD, ring allreduce every step",
               runner<compress::identity, topology::allreduce, sync, every>()}},
      {"local4", {"local SGD: 4 local steps, then model deltas averaged",
                  runner<compress::identity, topology::allreduce, sync, local_steps::fixed<4>>()}},
      {"qsgd8", {"QSGD, 8 bits per entry (127 levels, bucket 512), allgathered",
                 runner<compress::qsgd<8>, topology::allreduce, sync, every>()}},
      {"qsgd4", {"QSGD, 4 bits per entry (7 levels, bucket 512), allgathered",
                 runner<compress::qsgd<4>, topology::allreduce, sync, every>()}},
      {"terngrad", {"TernGrad: 2-bit ternary gradients per bucket of 512",
                    runner<compress::terngrad, topology::allreduce, sync, every>()}},
      {"bytegrad", {"Bagua ByteGrad: min_max<8> quantiser per bucket of 512",
                    runner<compress::min_max<8>, topology::allreduce, sync, every>()}},
      {"ef-sign", {"EF-signSGD: scaled sign (1 bit per entry) with error feedback",
                   runner<compress::error_feedback<compress::scaled_sign>, topology::allreduce, sync, every>()}},
      {"ef-topk", {"top-1% sparsification with error feedback",
                   runner<compress::error_feedback<compress::top_k>, topology::allreduce, sync, every>()}},
      {"topk", {"top-1% sparsification without error feedback",
                runner<compress::top_k, topology::allreduce, sync, every>()}},
      {"ef21", {"EF21 with top-1%: compressed gradient differences, tracked aggregate",
                runner<compress::ef21<compress::top_k>, topology::allreduce, sync, every>()}},
      {"powersgd", {"PowerSGD rank 2 per weight matrix (biases exact), warm start, error feedback",
                    [](const experiment& ex, const std::string& name) {
                      using C = compress::power_sgd<2>;
                      return train<distopt::optimizer<C, topology::allreduce, sync, every>>(
                          ex, name, C{.shapes = ex.net.layout()});
                    }}},
      {"dpsgd", {"D-PSGD: exact gossip with the two ring neighbours (x <- Wx - eta g)",
                 runner<compress::identity, topology::ring, sync, every>()}},
      {"choco", {"CHOCO-SGD on a ring: top-1% of model differences, consensus step 0.04",
                 runner<compress::top_k, topology::ring, sync, every>(compress::top_k{0.01}, 0.04f)}},
  };
}

std::string pad(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

// Simulated seconds at the end of the first epoch whose test accuracy reached `target`, or < 0.
double time_to_accuracy(const run_result& r, double target) {
  for (const auto& e : r.epochs)
    if (e.test_accuracy >= target) return e.simulated_seconds;
  return -1.0;
}

void print_table(const std::vector<run_result>& results, const settings& s) {
  if (results.empty() || results.front().epochs.empty()) return;
  const auto& first = results.front().epochs.back();
  const double reference = static_cast<double>(first.bytes_sent);
  const double target = first.test_accuracy - 0.005;  // the first configuration's final accuracy - 0.5 pp
  std::printf("\nFashion-MNIST, %s, %d workers, %d epochs, batch %zu per worker; simulated network: %s "
              "(%.0f us, %.3g Gbit/s)\n\n",
              s.model.c_str(), s.workers, s.epochs, s.batch, s.network.c_str(), 1e6 * s.net.latency_s,
              8e-9 * s.net.bandwidth_bytes_per_s);
  std::printf("%s  %9s  %13s  %8s  %9s  %10s  %12s  %9s\n", pad("configuration", 12).c_str(), "test acc",
              "sent/worker", "vs first", "wall time", "simulated", "to target", "messages");
  std::printf("%s\n", std::string(12 + 2 + 9 + 2 + 13 + 2 + 8 + 2 + 9 + 2 + 10 + 2 + 12 + 2 + 9, '-').c_str());
  for (const auto& r : results) {
    if (r.epochs.empty()) continue;
    const auto& last = r.epochs.back();
    const double sent = static_cast<double>(last.bytes_sent);
    const double reached = time_to_accuracy(r, target);
    char to_target[32] = "not reached";
    if (reached >= 0) std::snprintf(to_target, sizeof to_target, "%.2f s", reached);
    std::printf("%s  %8.2f%%  %10.2f MB  %7.1fx  %7.1f s  %8.1f s  %12s  %9llu\n", pad(r.name, 12).c_str(),
                100.0 * last.test_accuracy, sent / 1e6, sent > 0 ? reference / sent : 0.0, last.seconds,
                last.simulated_seconds, to_target, static_cast<unsigned long long>(r.messages));
  }
  std::printf("\n'vs first': how many times fewer bytes than the first configuration. 'simulated': the run's\n"
              "time on the modelled network (measured compute + modelled messages). 'to target': simulated time\n"
              "at the end of the first epoch whose accuracy reached %.2f%% (the first configuration's final\n"
              "accuracy - 0.5 pp).\n",
              100.0 * target);
}

void write_csv(const std::vector<run_result>& results, const std::string& path) {
  std::ofstream out(path);
  if (!out) throw distopt::config_error("fashion_mnist: cannot write " + path);
  out << "configuration,epoch,test_accuracy,test_loss,bytes_sent_per_worker,seconds,simulated_seconds\n";
  for (const auto& r : results)
    for (const auto& e : r.epochs)
      out << r.name << ',' << e.epoch << ',' << e.test_accuracy << ',' << e.test_loss << ',' << e.bytes_sent << ','
          << e.seconds << ',' << e.simulated_seconds << '\n';
}

}  // namespace

int main(int argc, char** argv) try {
  settings s;
  std::string config_list = "sgd,qsgd8,ef-sign,ef-topk,topk,powersgd,local4,dpsgd,choco";
  bool list = false;
  std::string transport = "threads";
  CLI::App app{"distopt flagship: distributed training on Fashion-MNIST, several strategies side by side"};
  app.add_option("--workers", s.workers, "workers (default 4 threads, or every MPI rank)")->check(CLI::Range(1, 64));
  app.add_option("--model", s.model, "mlp or softmax")->check(CLI::IsMember({"mlp", "softmax"}));
  app.add_option("--hidden", s.hidden, "hidden units of the MLP")->check(CLI::Range(1, 4096));
  app.add_option("--epochs", s.epochs, "epochs over the training set")->check(CLI::Range(1, 1000));
  app.add_option("--batch", s.batch, "mini-batch size per worker")->check(CLI::Range(1, 60000));
  app.add_option("--lr", s.learning_rate, "learning rate")->check(CLI::PositiveNumber);
  app.add_option("--momentum", s.momentum, "momentum")->check(CLI::Range(0.0, 0.999));
  app.add_option("--seed", s.seed, "seed of data order and initialisation");
  app.add_option("--train-samples", s.train_samples, "use only the first N training samples (0: all)");
  app.add_option("--configs", config_list, "comma-separated configurations (see --list-configs)");
  app.add_option("--csv", s.csv, "where to write the per-epoch results");
  double latency_us = -1, bandwidth_gbit = -1;
  app.add_option("--network", s.network, "modelled network of the 'simulated' column: datacenter-100g, 1g or wan")
      ->check(CLI::IsMember({"datacenter-100g", "1g", "wan"}));
  app.add_option("--latency-us", latency_us, "custom network: latency in microseconds (overrides --network)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--bandwidth-gbit", bandwidth_gbit, "custom network: bandwidth in Gbit/s (overrides --network)")
      ->check(CLI::PositiveNumber);
  app.add_option("--transport", transport, "threads, or mpi under mpirun (when built with MPI)")
      ->check(CLI::IsMember(examples::launcher::transports()));
  app.add_option("--checkpoint-every", s.checkpoint_every,
                 "save a checkpoint every N steps and after each configuration's last, into the --resume directory "
                 "(default checkpoints/), a subdirectory per configuration");
  app.add_option("--resume", s.resume,
                 "continue each configuration from its latest checkpoint in DIR, if it has one (the same command "
                 "line serves the first run and restarts: scripts/distopt-launch --restarts)");
  app.add_flag("--list-configs", list, "list the configurations and exit");
  CLI11_PARSE(app, argc, argv);

  s.net = distopt::network_model::preset(s.network);
  if (latency_us >= 0) s.net.latency_s = 1e-6 * latency_us;
  if (bandwidth_gbit > 0) s.net.bandwidth_bytes_per_s = bandwidth_gbit * 1e9 / 8;
  if (latency_us >= 0 || bandwidth_gbit > 0) s.network = "custom";
  const examples::checkpoints checkpoints(s.resume.empty() ? "checkpoints" : s.resume, s.checkpoint_every,
                                          !s.resume.empty());
  const examples::launcher launch(transport, argc, argv);
  s.workers = launch.workers(app.count("--workers") ? s.workers : 0);
  const auto configs = configurations();
  if (list) {
    if (launch.primary())
      for (const auto& [name, c] : configs) std::printf("%-10s %s\n", name.c_str(), c.description.c_str());
    return 0;
  }
  std::vector<std::string> chosen;
  std::stringstream list_stream(config_list);
  for (std::string name; std::getline(list_stream, name, ',');) {
    if (!configs.count(name))
      throw distopt::config_error("fashion_mnist: unknown configuration '" + name + "'; see --list-configs");
    chosen.push_back(name);
  }

  auto train = distopt::data::load_fashion_mnist(distopt::data::split::train);
  const auto test = distopt::data::load_fashion_mnist(distopt::data::split::test);
  if (s.train_samples > 0 && s.train_samples < train.labels.size()) {
    train.features.conservativeResize(static_cast<Eigen::Index>(s.train_samples), Eigen::NoChange);
    train.labels.resize(s.train_samples);
  }
  const std::vector<int> hidden = s.model == "mlp" ? std::vector<int>{s.hidden} : std::vector<int>{};
  const distopt::problems::mlp net(train.features, train.labels, 10, hidden);
  const bool primary = launch.primary();  // prints and writes; under MPI, rank 0 only
  if (primary)
    std::printf("Fashion-MNIST: %zu training and %zu test images; model %s with %ld parameters; %d workers (%s)\n",
                train.labels.size(), test.labels.size(), s.model.c_str(), static_cast<long>(net.dimension()),
                s.workers, transport.c_str());

  const experiment ex{train, test, net, s, launch, checkpoints};
  std::vector<run_result> results;
  for (const auto& name : chosen) {
    if (primary) std::printf("\n%s: %s\n", name.c_str(), configs.at(name).description.c_str());
    results.push_back(configs.at(name).run(ex, name));
  }
  if (!primary) return 0;
  print_table(results, s);
  write_csv(results, s.csv);
  std::printf("Per-epoch results: %s (plot with scripts/plot %s)\n", s.csv.c_str(), s.csv.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "fashion_mnist: %s\n", e.what());
  return 1;
}
