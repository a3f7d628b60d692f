// ctest-labels: torch
// Tests of distopt::interop (interop/torch.hpp) against libtorch itself: the flat buffers
// alias the module's parameters and the gradients autograd writes (pointers and values
// checked with torch's own indexing and a clone trained by plain autograd);
// one worker of algorithms::minibatch_sgd steps exactly as torch::optim::SGD; two workers
// equal one worker on the whole batch (a no-communication control does not); PowerSGD
// receives the module's layout (each weight update has rank <= 2, measured by SVD).
#include <distopt/interop/torch.hpp>  // first: the header compiles on its own

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <distopt/algorithms.hpp>
#include <distopt/transport/thread.hpp>

namespace {

// torch's vectorised (AVX2, AVX-512) kernels compute p + alpha d as one fused multiply-add;
// its default kernels, like distopt's Eigen loops, round alpha d first. Pin torch to those,
// before its first operation (it reads the variable once), so that the SGD steps can be
// compared bit for bit.
[[maybe_unused]] const bool default_kernels = setenv("ATEN_CPU_CAPABILITY", "default", 1) == 0;

using distopt::interop::flat_parameters;
using distopt::interop::module_optimizer;

// Every kind of tensor the layout names: a 4-D convolution weight, a 2-D linear weight,
// 1-D biases. Input 1 x 6 x 6, convolution 3 x 3 -> 3 x 4 x 4 = 48 features -> 5 outputs.
struct small_net_impl : torch::nn::Cloneable<small_net_impl> {
  small_net_impl() { reset(); }
  void reset() override {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 3, 3)));
    fc = register_module("fc", torch::nn::Linear(48, 5));
  }
  torch::Tensor forward(torch::Tensor x) { return fc(torch::relu(conv(x)).flatten(1)); }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE_IMPL(small_net, small_net_impl);

small_net make_net(std::uint64_t seed) {
  torch::manual_seed(seed);
  return small_net();
}

std::shared_ptr<small_net_impl> clone_of(const small_net& net) {
  return std::dynamic_pointer_cast<small_net_impl>(net->clone());
}

struct batch {
  torch::Tensor x, y;
};
batch random_batch(std::int64_t size, std::uint64_t seed) {
  torch::manual_seed(seed);
  return {torch::randn({size, 1, 6, 6}), torch::randint(0, 5, {size}, torch::kLong)};
}

torch::Tensor loss_of(small_net_impl& net, const batch& b) {
  return torch::nn::functional::cross_entropy(net.forward(b.x), b.y);
}

// Offsets of the parameters in flat order, from the module's own list.
std::vector<std::int64_t> offsets(torch::nn::Module& m) {
  std::vector<std::int64_t> out;
  std::int64_t at = 0;
  for (const auto& p : m.parameters()) {
    out.push_back(at);
    at += p.numel();
  }
  return out;
}

bool same_parameters(torch::nn::Module& a, torch::nn::Module& b) {
  const auto pa = a.parameters(), pb = b.parameters();
  for (std::size_t i = 0; i < pa.size(); ++i)
    if (!torch::equal(pa[i], pb[i])) return false;
  return true;
}

double max_difference(torch::nn::Module& a, torch::nn::Module& b) {
  const auto pa = a.parameters(), pb = b.parameters();
  double worst = 0;
  for (std::size_t i = 0; i < pa.size(); ++i) worst = std::max(worst, (pa[i] - pb[i]).abs().max().item<double>());
  return worst;
}

}  // namespace

TEST_CASE("flat_parameters keeps the values, and the parameters alias its buffer both ways") {
  small_net net = make_net(1);
  std::vector<torch::Tensor> before;
  for (const auto& p : net->parameters()) before.push_back(p.detach().clone());
  flat_parameters flat(*net);
  const auto at = offsets(*net);
  const auto params = net->parameters();
  REQUIRE(params.size() == 4);
  CHECK(flat.size() == static_cast<std::size_t>(3 * 9 + 3 + 5 * 48 + 5));
  CHECK(flat.names() == std::vector<std::string>{"conv.weight", "conv.bias", "fc.weight", "fc.bias"});
  for (std::size_t i = 0; i < params.size(); ++i) {
    CHECK(torch::equal(params[i], before[i]));
    CHECK(params[i].data_ptr<float>() == flat.values().data() + at[i]);
  }
  // A write through the flat view is a write to the parameter (row-major [5, 48] weight).
  flat.values()[static_cast<std::size_t>(at[2] + 2 * 48 + 3)] = 42.0f;
  CHECK(net->fc->weight[2][3].item<float>() == 42.0f);
  // And an in-place write to the parameter shows in the flat view.
  {
    torch::NoGradGuard no_grad;
    net->fc->bias.fill_(7.0f);
  }
  for (std::int64_t k = 0; k < 5; ++k) CHECK(flat.values()[static_cast<std::size_t>(at[3] + k)] == 7.0f);
  CHECK(flat.values_tensor().data_ptr<float>() == flat.values().data());
}

TEST_CASE("backward writes the gradients into the flat buffer, without copies, as plain autograd computes them") {
  small_net net = make_net(2);
  const auto reference = clone_of(net);  // the same module, left to autograd's own gradient tensors
  flat_parameters flat(*net);
  const auto at = offsets(*net);
  const batch b = random_batch(8, 3);
  loss_of(*net, b).backward();
  loss_of(*reference, b).backward();
  const auto params = net->parameters(), ref = reference->parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    CHECK(params[i].grad().data_ptr<float>() == flat.gradients().data() + at[i]);
    const auto slice = flat.gradients_tensor().narrow(0, at[i], params[i].numel()).view(params[i].sizes());
    CHECK(torch::equal(slice, ref[i].grad()));
  }
  // zero_grad() then backward: the old gradient is gone; backward twice: they add up, in place.
  flat.zero_grad();
  loss_of(*net, b).backward();
  for (std::size_t i = 0; i < params.size(); ++i) CHECK(torch::equal(params[i].grad(), ref[i].grad()));
  loss_of(*net, b).backward();
  for (std::size_t i = 0; i < params.size(); ++i) {
    CHECK(params[i].grad().data_ptr<float>() == flat.gradients().data() + at[i]);
    CHECK(torch::equal(params[i].grad(), ref[i].grad() + ref[i].grad()));
  }
  CHECK_NOTHROW(flat.check_attached());
}

TEST_CASE("the layout names each tensor as the column-major view of torch's [d0, d1 ... dk] matrix") {
  small_net net = make_net(4);
  flat_parameters flat(*net);
  const distopt::layout expected{{9, 3}, {3, 1}, {48, 5}, {5, 1}};  // conv [3,1,3,3], bias, fc [5,48], bias
  REQUIRE(flat.layout().size() == expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    CHECK(flat.layout()[i].rows == expected[i].rows);
    CHECK(flat.layout()[i].cols == expected[i].cols);
  }
  // Entry (i, j) of the column-major matrix is row j, column i of torch's matrix view.
  const auto at = offsets(*net);
  const auto conv = net->conv->weight.view({3, -1});
  for (std::int64_t j = 0; j < 3; ++j)
    for (std::int64_t i = 0; i < 9; ++i)
      CHECK(flat.values()[static_cast<std::size_t>(at[0] + i + j * 9)] == conv[j][i].item<float>());
}

TEST_CASE("parameters that are not dense float32 CPU tensors, or gradients replaced, are refused with the fix") {
  SUBCASE("float64") {
    small_net net = make_net(5);
    net->to(torch::kFloat64);
    CHECK_THROWS_WITH_AS(flat_parameters{*net}, doctest::Contains("'conv.weight' is Double"), distopt::config_error);
  }
  SUBCASE("zero_grad(set_to_none = true)") {
    small_net net = make_net(5);
    distopt::run_threads(1, [&](distopt::transport_ref t) {
      module_optimizer<distopt::algorithms::minibatch_sgd> opt(t, *net, {.learning_rate = 0.1f});
      net->zero_grad(/*set_to_none=*/true);
      loss_of(*net, random_batch(4, 6)).backward();
      CHECK_THROWS_WITH_AS(opt.step(), doctest::Contains("module_optimizer::zero_grad()"), distopt::config_error);
    });
  }
  SUBCASE("a graph recorded before a step") {  // as with torch's optimizers, which update in place
    small_net net = make_net(5);
    distopt::run_threads(1, [&](distopt::transport_ref t) {
      module_optimizer<distopt::algorithms::minibatch_sgd> opt(t, *net, {.learning_rate = 0.1f});
      const torch::Tensor loss = loss_of(*net, random_batch(4, 6));
      loss.backward({}, /*retain_graph=*/true);
      opt.step();
      CHECK_THROWS_WITH_AS(loss.backward(), doctest::Contains("modified by an inplace operation"), c10::Error);
    });
  }
  SUBCASE("frozen parameters are left out") {
    small_net net = make_net(5);
    net->conv->weight.set_requires_grad(false);
    flat_parameters flat(*net);
    CHECK(flat.names() == std::vector<std::string>{"conv.bias", "fc.weight", "fc.bias"});
  }
}

// torch::optim::SGD's step (torch/csrc/api/src/optim/sgd.cpp): d = g + lambda p;
// v = mu v + d (first step: v = d); d = nesterov ? d + mu v : v; p -= lr d. distopt's
// options follow the same convention; one worker's allreduce is the identity. (With torch's
// AVX2 kernels, see default_kernels above, the two differ in the last bit.)
TEST_CASE("one worker of minibatch_sgd steps exactly as torch::optim::SGD, bit for bit") {
  struct setting {
    std::string name;
    distopt::options o;
  };
  const setting settings[] = {
      {"plain", {.learning_rate = 0.1f}},
      {"momentum", {.learning_rate = 0.05f, .momentum = 0.9f}},
      {"nesterov", {.learning_rate = 0.05f, .momentum = 0.9f, .nesterov = true}},
      {"weight decay", {.learning_rate = 0.07f, .momentum = 0.5f, .weight_decay = 1e-3f}},
  };
  for (const setting& s : settings) {
    CAPTURE(s.name);
    small_net ours = make_net(7);
    const auto theirs = clone_of(ours);
    torch::optim::SGD sgd(theirs->parameters(), torch::optim::SGDOptions(s.o.learning_rate)
                                                    .momentum(s.o.momentum)
                                                    .nesterov(s.o.nesterov)
                                                    .weight_decay(s.o.weight_decay));
    distopt::run_threads(1, [&](distopt::transport_ref t) {
      module_optimizer<distopt::algorithms::minibatch_sgd> opt(t, *ours, s.o);
      for (std::uint64_t step = 0; step < 5; ++step) {
        const batch b = random_batch(16, 100 + step);
        opt.zero_grad();
        loss_of(*ours, b).backward();
        opt.step();
        sgd.zero_grad();
        loss_of(*theirs, b).backward();
        sgd.step();
        CHECK(same_parameters(*ours, *theirs));
      }
      opt.finish();
    });
    CHECK(same_parameters(*ours, *theirs));
  }
}

// The mean loss over 2 m samples is the mean of the two halves' mean losses, so two workers
// averaging their gradients take the steps of one worker on the whole batch (to rounding).
TEST_CASE("two workers, each on half the batch, take the steps of one worker on the whole batch") {
  constexpr int steps = 4;
  const distopt::options o{.learning_rate = 0.2f, .momentum = 0.5f};
  small_net whole = make_net(8);
  const auto start = clone_of(whole);
  distopt::run_threads(1, [&](distopt::transport_ref t) {
    module_optimizer<distopt::algorithms::minibatch_sgd> opt(t, *whole, o);
    for (int s = 0; s < steps; ++s) {
      opt.zero_grad();
      loss_of(*whole, random_batch(32, 200 + s)).backward();
      opt.step();
    }
  });
  // The halves differ (heterogeneous workers): alone, each drifts away from `whole`. The batches
  // are drawn here: random_batch seeds torch's global generator, which two threads would share.
  std::vector<batch> batches;
  for (int s = 0; s < steps; ++s) batches.push_back(random_batch(32, 200 + s));
  auto run = [&](int workers_talking) {
    std::vector<std::shared_ptr<small_net_impl>> nets{std::dynamic_pointer_cast<small_net_impl>(start->clone()),
                                                      std::dynamic_pointer_cast<small_net_impl>(start->clone())};
    auto train = [&](distopt::transport_ref t, int half) {
      module_optimizer<distopt::algorithms::minibatch_sgd> opt(t, *nets[half], o);
      for (int s = 0; s < steps; ++s) {
        const batch& b = batches[static_cast<std::size_t>(s)];
        opt.zero_grad();
        loss_of(*nets[half], {b.x.narrow(0, 16 * half, 16), b.y.narrow(0, 16 * half, 16)}).backward();
        opt.step();
      }
      opt.finish();
    };
    if (workers_talking == 2)
      distopt::run_threads(2, [&](distopt::transport_ref t) { train(t, t.rank()); });
    else
      for (int half = 0; half < 2; ++half) distopt::run_threads(1, [&](distopt::transport_ref t) { train(t, half); });
    return nets;
  };
  const auto together = run(2);
  CHECK(same_parameters(*together[0], *together[1]));
  CHECK(max_difference(*together[0], *whole) < 1e-6);
  const auto alone = run(1);  // control: without communication the workers do not follow `whole`
  CHECK(max_difference(*alone[0], *whole) > 1e-3);
  CHECK(max_difference(*alone[1], *whole) > 1e-3);
}

// With the module's layout, PowerSGD (rank 2) replaces each weight's gradient by a rank-2
// matrix and sends biases raw; with lr = 1 and one worker the first update is that
// approximation itself, so its singular values show the layout it was given.
TEST_CASE("PowerSGD receives the module's layout: each weight update has rank 2, biases are exact") {
  small_net net = make_net(9);
  const auto start = clone_of(net);
  const batch b = random_batch(32, 300);
  loss_of(*start, b).backward();  // the exact gradient, for comparison
  distopt::run_threads(1, [&](distopt::transport_ref t) {
    module_optimizer<distopt::algorithms::powersgd<2>> opt(t, *net, {.learning_rate = 1.0f});
    opt.zero_grad();
    loss_of(*net, b).backward();
    opt.step();
  });
  const auto singular_values = [](const torch::Tensor& m) { return torch::linalg_svdvals(m.view({m.size(0), -1})); };
  for (const std::string weight : {"conv.weight", "fc.weight"}) {
    CAPTURE(weight);
    const torch::Tensor before = start->named_parameters()[weight];
    const torch::Tensor update = before - net->named_parameters()[weight];
    const auto sv = singular_values(update), exact = singular_values(before.grad());
    CHECK(sv[2].item<float>() < 1e-5f * sv[0].item<float>());        // rank 2 (up to rounding)
    CHECK(exact[2].item<float>() > 1e-2f * exact[0].item<float>());  // the gradient itself is not
  }
  for (const std::string bias : {"conv.bias", "fc.bias"}) {
    CAPTURE(bias);
    const torch::Tensor before = start->named_parameters()[bias];
    CHECK(torch::equal(net->named_parameters()[bias], before - before.grad()));
  }
}
