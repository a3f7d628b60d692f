// The flagship: several workers train a classifier on the real Fashion-MNIST data
// (Debian package dataset-fashion-mnist) under several communication strategies,
// one after another, and compare them side by side: test accuracy, bytes each
// worker sent, wall time, the time the run would take on a modelled network
// (--network; transport/simulated.hpp) and messages. Writes a CSV for scripts/plot.
//
//   build/examples/fashion_mnist --workers 4 --epochs 5 --configs sgd,local4,ef-topk
//   build/examples/fashion_mnist --preset full   # 8 workers, 30 epochs, 256 hidden, cosine decay (README)
//   build/examples/fashion_mnist --list-configs
//   mpirun -np 4 build/examples/fashion_mnist --transport mpi   # one worker per MPI rank
//   scripts/distopt-launch -n 4 --restarts 2 -- build/examples/fashion_mnist --transport tcp
//       --checkpoint-every 200 --resume ckpt    # (one line) a killed rank: all restart from the last checkpoint

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <numbers>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <distopt/data/idx.hpp>
#include <distopt/distopt.hpp>
#include <distopt/problems.hpp>
#include <distopt/transport/simulated.hpp>

#include "checkpoints.hpp"
#include "launch.hpp"
#include "report.hpp"

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
  float learning_rate = 0.05f;
  float momentum = 0.9f;  // error feedback compresses each worker's momentum (compress/error_feedback.hpp)
  bool cosine = false;    // learning rate eta_t = eta (1 + cos(pi t / T)) / 2 over the T steps of a run
  std::uint64_t seed = 1;
  std::size_t train_samples = 0;  // 0: all
  std::string csv = "fashion_mnist.csv";
  examples::network_choice network;    // the modelled network of the "simulated" column
  std::uint64_t checkpoint_every = 0;  // steps; 0: no checkpoints
  std::string resume;                  // directory to resume from and save into ("": start afresh)
};

struct experiment {
  const distopt::data::labelled_images& train;
  const distopt::data::labelled_images& test;
  const distopt::problems::mlp& net;
  const settings& s;
  const examples::launcher& launch;
  const examples::checkpoints& checkpoints;
};

using examples::epoch_record;
using examples::run_result;

// The epoch records a rank keeps, after its optimizer in a checkpoint (examples/checkpoints.hpp).
void write_records(std::ostream& out, const std::vector<epoch_record>& records) {
  const std::uint64_t n = records.size();
  out.write(reinterpret_cast<const char*>(&n), sizeof n);
  for (const epoch_record& e : records)
    for (const double v :
         {double(e.epoch), e.test_accuracy, e.test_loss, e.seconds, e.simulated_seconds, double(e.bytes_sent)})
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
                 typename Optimizer::topology_type topo = {}) {
  run_result result{name, {}, 0};
  const auto& s = ex.s;
  const std::size_t steps_per_epoch = ex.net.samples() / (s.batch * static_cast<std::size_t>(s.workers));
  if (steps_per_epoch == 0)
    throw distopt::config_error("fashion_mnist: fewer training samples than one batch per worker; lower --batch");
  const std::uint64_t total_steps = steps_per_epoch * static_cast<std::uint64_t>(s.epochs);
  const Eigen::VectorXf x0 = ex.net.initial_parameters(s.seed);
  const distopt::network_model net = s.network.model();
  ex.launch.run(s.workers, [&](distopt::transport_ref real) {
    distopt::simulated_transport t(real, net);  // runs on `real`, and times the run on the modelled network
    distopt::data::minibatch_sampler batches(distopt::data::iid_shard(ex.net.samples(), t.rank(), t.size(), s.seed),
                                             s.batch, s.seed, t.rank());
    Optimizer opt(t, x0, {.learning_rate = s.learning_rate, .momentum = s.momentum, .seed = s.seed}, c, topo);
    std::uint64_t step = ex.checkpoints.resume(opt, name, t.rank(), t.size(),
                                               [&](std::istream& in) { read_records(in, result.epochs); });
    for (std::uint64_t k = 0; k < step; ++k) batches.next();  // the batches drawn before the checkpoint
    auto checkpoint = [&](bool last) {
      ex.checkpoints.save_if_due(opt, name, t.rank(), step, last,
                                 [&](std::ostream& out) { write_records(out, result.epochs); });
    };
    Eigen::VectorXf g;
    examples::epoch_log log(result, s.epochs, s.network.label());
    for (int epoch = static_cast<int>(step / steps_per_epoch) + 1; epoch <= s.epochs; ++epoch) {
      for (std::size_t b = step % steps_per_epoch; b < steps_per_epoch; ++b) {
        if (s.cosine)
          opt.set_learning_rate(static_cast<float>(
              s.learning_rate * 0.5 * (1 + std::cos(std::numbers::pi * double(step) / double(total_steps)))));
        ex.net.gradient(opt.parameters(), batches.next(), g);
        opt.step(g);
        if (++step % steps_per_epoch != 0) checkpoint(false);  // an epoch's last step: after its evaluation
      }
      if (epoch == s.epochs) opt.finish();
      if (t.rank() != 0) {
        checkpoint(epoch == s.epochs);
        continue;
      }
      log.after_epoch(epoch, t, opt.stats().bytes_sent,
                      [&] { return ex.net.evaluate(opt.parameters(), ex.test.features, ex.test.labels); });
      checkpoint(epoch == s.epochs);
    }
    if (t.rank() != 0) return;
    result.messages = opt.stats().messages_sent;
    const auto x = opt.parameters();
    std::printf(
        "  %-10s final parameters: CRC32C %08x\n", name.c_str(),
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
config_runner runner(C c = {}, T topo = {}) {
  return [c, topo](const experiment& ex, const std::string& name) {
    return train<distopt::optimizer<C, T, S, L>>(ex, name, c, topo);
  };
}

// The named configurations, by the name used on the command line.
std::map<std::string, config> configurations() {
  using sync = staleness::synchronous;
  using every = local_steps::every_step;
  return {
      {"sgd",
       {"exact synchronous SGD, ring allreduce every step",
        runner<compress::identity, topology::allreduce, sync, every>()}},
      {"local4",
       {"local SGD: 4 local steps, then model deltas averaged",
        runner<compress::identity, topology::allreduce, sync, local_steps::fixed<4>>()}},
      {"qsgd8",
       {"QSGD, 8 bits per entry (127 levels, bucket 512), allgathered",
        runner<compress::qsgd<8>, topology::allreduce, sync, every>()}},
      {"qsgd4",
       {"QSGD, 4 bits per entry (7 levels, bucket 512), allgathered",
        runner<compress::qsgd<4>, topology::allreduce, sync, every>()}},
      {"terngrad",
       {"TernGrad: 2-bit ternary gradients per bucket of 512",
        runner<compress::terngrad, topology::allreduce, sync, every>()}},
      {"bytegrad",
       {"Bagua ByteGrad: min_max<8> quantiser per bucket of 512",
        runner<compress::min_max<8>, topology::allreduce, sync, every>()}},
      {"ef-sign",
       {"EF-signSGD: scaled sign (1 bit per entry) with error feedback",
        runner<compress::error_feedback<compress::scaled_sign>, topology::allreduce, sync, every>()}},
      {"ef-topk",
       {"top-1% sparsification with error feedback",
        runner<compress::error_feedback<compress::top_k>, topology::allreduce, sync, every>()}},
      {"topk",
       {"top-1% sparsification without error feedback", runner<compress::top_k, topology::allreduce, sync, every>()}},
      {"ef21",
       {"EF21 with top-1%: compressed gradient differences, tracked aggregate",
        runner<compress::ef21<compress::top_k>, topology::allreduce, sync, every>()}},
      {"powersgd",
       {"PowerSGD rank 2 per weight matrix (biases exact), warm start, error feedback",
        [](const experiment& ex, const std::string& name) {
          using C = compress::power_sgd<2>;
          return train<distopt::optimizer<C, topology::allreduce, sync, every>>(ex, name, C{.shapes = ex.net.layout()});
        }}},
      {"dpsgd",
       {"D-PSGD: exact gossip with the two ring neighbours (x <- Wx - eta g)",
        runner<compress::identity, topology::ring, sync, every>()}},
      {"choco",
       {"CHOCO-SGD on a ring: top-1% of model differences, consensus step 0.04",
        runner<compress::top_k, topology::gossip<topology::ring, distopt::mixing::choco>, sync, every>(
            compress::top_k{0.01}, {{}, {.consensus_step = 0.04f}})}},
  };
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
  app.add_option("--cosine", s.cosine, "cosine learning-rate decay to 0 over each run (false: constant)");
  std::string preset = "demo";
  app.add_option("--preset", preset,
                 "demo: the defaults above (4 workers, 5 epochs, 128 hidden units, lr 0.05, constant); full: 8 "
                 "workers, 30 epochs, 256 hidden units, lr 0.1 with cosine decay, the README's table (flags given "
                 "explicitly still win)")
      ->check(CLI::IsMember({"demo", "full"}));
  app.add_option("--seed", s.seed, "seed of data order and initialisation");
  app.add_option("--train-samples", s.train_samples, "use only the first N training samples (0: all)");
  app.add_option("--configs", config_list, "comma-separated configurations (see --list-configs)");
  app.add_option("--csv", s.csv, "where to write the per-epoch results");
  s.network.add_options(app);
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
  if (preset == "full") {
    if (app.count("--workers") == 0) s.workers = 8;
    if (app.count("--epochs") == 0) s.epochs = 30;
    if (app.count("--hidden") == 0) s.hidden = 256;
    if (app.count("--lr") == 0) s.learning_rate = 0.1f;
    if (app.count("--cosine") == 0) s.cosine = true;
  }

  const examples::checkpoints checkpoints(s.resume.empty() ? "checkpoints" : s.resume, s.checkpoint_every,
                                          !s.resume.empty());
  const examples::launcher launch(transport, argc, argv);
  s.workers = launch.workers(app.count("--workers") || preset == "full" ? s.workers : 0);
  const auto configs = configurations();
  if (list) {
    if (launch.primary()) examples::list_configurations(configs);
    return 0;
  }
  const std::vector<std::string> chosen = examples::choose_configurations(config_list, configs);

  const auto train = examples::load_training_split(s.train_samples);
  const auto test = distopt::data::load_fashion_mnist(distopt::data::split::test);
  const std::vector<int> hidden = s.model == "mlp" ? std::vector<int>{s.hidden} : std::vector<int>{};
  const distopt::problems::mlp net(train.features, train.labels, 10, hidden);
  const bool primary = launch.primary();  // prints and writes; under MPI, rank 0 only
  if (primary)
    std::printf("Fashion-MNIST: %zu training and %zu test images; model %s with %ld parameters; %d workers (%s)\n",
                train.labels.size(), test.labels.size(), s.model.c_str(), static_cast<long>(net.dimension()), s.workers,
                transport.c_str());

  const experiment ex{train, test, net, s, launch, checkpoints};
  const std::vector<run_result> results = examples::run_configurations(chosen, configs, ex, primary);
  if (!primary) return 0;
  char title[256];
  std::snprintf(title, sizeof title, "Fashion-MNIST, %s, %d workers, %d epochs, batch %zu per worker; %s",
                s.model.c_str(), s.workers, s.epochs, s.batch, s.network.describe().c_str());
  examples::report(results, title, s.csv);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "fashion_mnist: %s\n", e.what());
  return 1;
}
