// A LeNet-5-like CNN, written with libtorch, trained on the real Fashion-MNIST data (Debian
// package dataset-fashion-mnist) by several workers through distopt::interop::module_optimizer
// (interop/torch.hpp), under several communication strategies side by side: the flagship's
// options (examples/fashion_mnist.cpp), its table, its CSV for scripts/plot, and one line
//   RESULT <configuration> accuracy <test accuracy %> bytes <bytes sent per worker>
// per configuration.
//
//   build/examples/torch_fashion_mnist --workers 4 --epochs 2 --train-samples 20000
//   build/examples/torch_fashion_mnist --list-configs
//   mpirun -np 4 build/examples/torch_fashion_mnist --transport mpi   # one worker per MPI rank

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdint>
#include <numbers>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <distopt/algorithms.hpp>
#include <distopt/data/idx.hpp>
#include <distopt/data/partition.hpp>
#include <distopt/interop/torch.hpp>
#include <distopt/transport/simulated.hpp>

#include "launch.hpp"
#include "report.hpp"

namespace {

namespace compress = distopt::compress;
using examples::run_result;
constexpr double pi = std::numbers::pi;

// LeNet-5 (LeCun et al. 1998) with ReLU and max pooling: 28 x 28 -> conv 5x5 (6, padded) ->
// pool -> conv 5x5 (16) -> pool -> 400 -> 120 -> 84 -> 10; 61,706 parameters.
struct lenet_impl : torch::nn::Cloneable<lenet_impl> {
  lenet_impl() { reset(); }
  void reset() override {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 6, 5).padding(2)));
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(6, 16, 5)));
    fc1 = register_module("fc1", torch::nn::Linear(16 * 5 * 5, 120));
    fc2 = register_module("fc2", torch::nn::Linear(120, 84));
    fc3 = register_module("fc3", torch::nn::Linear(84, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2(x)), 2);
    x = torch::relu(fc1(x.flatten(1)));
    return fc3(torch::relu(fc2(x)));
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};
TORCH_MODULE_IMPL(lenet, lenet_impl);

// Images as [n, 1, 28, 28] standardised with Fashion-MNIST's pixel mean and deviation, labels as int64.
struct images {
  torch::Tensor x, y;
};
images to_tensors(const distopt::data::labelled_images& d) {
  const auto n = static_cast<std::int64_t>(d.labels.size());
  const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rows = d.features;
  torch::Tensor x = torch::from_blob(const_cast<float*>(rows.data()), {n, 1, 28, 28}).clone();
  torch::Tensor y = torch::from_blob(const_cast<int*>(d.labels.data()), {n}, torch::kInt32).to(torch::kInt64);
  return {(x - 0.2860f) / 0.3530f, y};
}

struct settings {
  int workers = 4;
  int epochs = 2;
  std::size_t batch = 8;
  float learning_rate = 0.03f;
  float momentum = 0.9f;
  bool cosine = true;  // learning rate eta_t = eta (1 + cos(pi t / T)) / 2 over the T steps of the run
  std::uint64_t seed = 1;
  std::size_t train_samples = 20000;  // 0: all
  std::string csv = "torch_fashion_mnist.csv";
  examples::network_choice network;
};

struct experiment {
  const images& train;
  const images& test;
  const lenet& prototype;  // every worker starts from a clone: the same parameters
  const settings& s;
  const examples::launcher& launch;
};

struct evaluation {
  double accuracy, loss;
};
evaluation evaluate(lenet_impl& net, const images& test) {
  torch::NoGradGuard no_grad;
  double loss = 0;
  std::int64_t correct = 0;
  const std::int64_t n = test.y.size(0), chunk = 1000;
  for (std::int64_t at = 0; at < n; at += chunk) {
    const std::int64_t m = std::min(chunk, n - at);
    const torch::Tensor logits = net.forward(test.x.narrow(0, at, m)), y = test.y.narrow(0, at, m);
    loss += torch::nn::functional::cross_entropy(
                logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                .item<double>();
    correct += logits.argmax(1).eq(y).sum().item<std::int64_t>();
  }
  return {static_cast<double>(correct) / static_cast<double>(n), loss / static_cast<double>(n)};
}

// Trains with one optimizer type; rank 0 evaluates on the test split after each epoch.
template <class Optimizer>
run_result train(const experiment& ex, const std::string& name, typename Optimizer::compressor_type c = {}) {
  run_result result{name, {}, 0};
  const auto& s = ex.s;
  const auto samples = static_cast<std::size_t>(ex.train.y.size(0));
  const std::size_t steps_per_epoch = samples / (s.batch * static_cast<std::size_t>(s.workers));
  const distopt::network_model net_model = s.network.model();
  ex.launch.run(s.workers, [&](distopt::transport_ref real) {
    distopt::simulated_transport t(real, net_model);  // runs on `real`, and times the run on the modelled network
    const auto net = std::dynamic_pointer_cast<lenet_impl>(ex.prototype->clone());
    distopt::data::minibatch_sampler batches(distopt::data::iid_shard(samples, t.rank(), t.size(), s.seed), s.batch,
                                             s.seed, t.rank());
    distopt::interop::module_optimizer<Optimizer> opt(
        t, *net, {.learning_rate = s.learning_rate, .momentum = s.momentum, .seed = s.seed}, c);
    std::vector<std::int64_t> index;
    examples::epoch_log log(result, s.epochs, s.network.label());
    const double total_steps = static_cast<double>(steps_per_epoch) * s.epochs;
    for (int epoch = 1; epoch <= s.epochs; ++epoch) {
      for (std::size_t b = 0; b < steps_per_epoch; ++b) {
        if (s.cosine) {
          const double done =
              (static_cast<double>(steps_per_epoch) * (epoch - 1) + static_cast<double>(b)) / total_steps;
          opt.optimizer().set_learning_rate(static_cast<float>(s.learning_rate * 0.5 * (1 + std::cos(pi * done))));
        }
        const auto batch = batches.next();
        index.assign(batch.begin(), batch.end());
        const torch::Tensor i =
            torch::from_blob(index.data(), {static_cast<std::int64_t>(index.size())}, torch::kInt64);
        opt.zero_grad();
        torch::nn::functional::cross_entropy(net->forward(ex.train.x.index_select(0, i)), ex.train.y.index_select(0, i))
            .backward();
        opt.step();
      }
      if (epoch == s.epochs) opt.finish();
      if (t.rank() != 0) continue;
      log.after_epoch(epoch, t, opt.stats().bytes_sent, [&] { return evaluate(*net, ex.test); });
    }
    if (t.rank() == 0) result.messages = opt.stats().messages_sent;
  });
  return result;
}

struct config {
  std::string description;
  std::function<run_result(const experiment&, const std::string&)> run;
};

template <class Optimizer>
config make_config(std::string description, typename Optimizer::compressor_type c = {}) {
  return {std::move(description),
          [c](const experiment& ex, const std::string& name) { return train<Optimizer>(ex, name, c); }};
}

// The named configurations, by the name used on the command line. PowerSGD gets the
// module's layout from module_optimizer: one matrix per weight tensor.
std::map<std::string, config> configurations() {
  using namespace distopt::algorithms;
  return {
      {"sgd", make_config<minibatch_sgd>("exact synchronous SGD, ring allreduce every step")},
      {"ef-topk", make_config<ef_topk_sgd>("top-1% sparsification with error feedback",
                                           compress::error_feedback{compress::top_k{0.01}})},
      {"powersgd", make_config<powersgd<2>>("PowerSGD rank 2 per weight tensor (biases exact), warm start, "
                                            "error feedback")},
      {"powersgd1", make_config<powersgd<1>>("PowerSGD rank 1 per weight tensor (biases exact)")},
      {"powersgd4", make_config<powersgd<4>>("PowerSGD rank 4 per weight tensor (biases exact)")},
      {"ef-topk3", make_config<ef_topk_sgd>("top-3% sparsification with error feedback",
                                            compress::error_feedback{compress::top_k{0.03}})},
      {"ef-sign", make_config<ef_signsgd>("EF-signSGD: scaled sign (1 bit per entry) with error feedback")},
      {"qsgd8", make_config<qsgd_sgd<8>>("QSGD, 8 bits per entry (127 levels, bucket 512), allgathered")},
      {"local4", make_config<local_sgd<4>>("local SGD: 4 local steps, then model deltas averaged")},
  };
}

}  // namespace

int main(int argc, char** argv) try {
  settings s;
  std::string config_list = "sgd,ef-topk,ef-topk3,powersgd,powersgd4";
  bool list = false;
  std::string transport = "threads";
  CLI::App app{"distopt + libtorch: a CNN on Fashion-MNIST, several communication strategies side by side"};
  app.add_option("--workers", s.workers, "workers (default 4 threads, or every MPI rank)")->check(CLI::Range(1, 64));
  app.add_option("--epochs", s.epochs, "epochs over the training set")->check(CLI::Range(1, 1000));
  app.add_option("--batch", s.batch, "mini-batch size per worker")->check(CLI::Range(1, 60000));
  app.add_option("--lr", s.learning_rate, "learning rate")->check(CLI::PositiveNumber);
  app.add_option("--momentum", s.momentum, "momentum")->check(CLI::Range(0.0, 0.999));
  app.add_option("--cosine", s.cosine, "cosine learning-rate decay to 0 over the run (false: constant)");
  app.add_option("--seed", s.seed, "seed of data order and initialisation");
  app.add_option("--train-samples", s.train_samples, "use only the first N training samples (0: all 60,000)");
  app.add_option("--configs", config_list, "comma-separated configurations (see --list-configs)");
  app.add_option("--csv", s.csv, "where to write the per-epoch results");
  s.network.add_options(app);
  app.add_option("--transport", transport, "threads, or one rank per process with mpi or tcp (when built with them)")
      ->check(CLI::IsMember(examples::launcher::transports()));
  app.add_flag("--list-configs", list, "list the configurations and exit");
  CLI11_PARSE(app, argc, argv);

  const examples::launcher launch(transport, argc, argv);
  s.workers = launch.workers(app.count("--workers") ? s.workers : 0);
  const auto configs = configurations();
  if (list) {
    if (launch.primary()) examples::list_configurations(configs);
    return 0;
  }
  const std::vector<std::string> chosen = examples::choose_configurations(config_list, configs);

  // One thread per worker: torch's own intra-op threads would only compete with them.
  torch::set_num_threads(1);
  torch::manual_seed(s.seed);  // the same initial parameters in every process
  const lenet prototype;
  const images train = to_tensors(examples::load_training_split(s.train_samples));
  const images test = to_tensors(distopt::data::load_fashion_mnist(distopt::data::split::test));
  const bool primary = launch.primary();  // prints and writes; under MPI or TCP, rank 0 only
  std::int64_t parameters = 0;
  for (const auto& p : prototype->parameters()) parameters += p.numel();
  if (primary)
    std::printf(
        "Fashion-MNIST: %lld training and %lld test images; LeNet-5 CNN (libtorch) with %lld parameters; "
        "%d workers (%s)\n",
        static_cast<long long>(train.y.size(0)), static_cast<long long>(test.y.size(0)),
        static_cast<long long>(parameters), s.workers, transport.c_str());

  const experiment ex{train, test, prototype, s, launch};
  const std::vector<run_result> results = examples::run_configurations(chosen, configs, ex, primary);
  if (!primary) return 0;
  char title[256];
  std::snprintf(title, sizeof title,
                "Fashion-MNIST, LeNet-5 CNN (libtorch), %d workers, %d epochs, batch %zu per worker, lr %g, "
                "momentum %g; %s",
                s.workers, s.epochs, s.batch, static_cast<double>(s.learning_rate), static_cast<double>(s.momentum),
                s.network.describe().c_str());
  examples::report(results, title, s.csv);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "torch_fashion_mnist: %s\n", e.what());
  return 1;
}
