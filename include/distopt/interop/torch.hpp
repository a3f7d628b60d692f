#pragma once
// distopt::torch (CMake target; Debian libtorch-dev): train a torch::nn::Module with any
// distopt optimizer.
//
// flat_parameters moves the module's trainable parameters into ONE contiguous float32
// buffer that they alias (Tensor::set_data onto views of it), and gives every parameter a
// gradient that is a view of ONE contiguous gradient buffer. Autograd accumulates into an
// existing .grad in place (AccumulateGrad, when backward does not build a graph of the
// gradients), so after loss.backward() the flat gradient is there without any copy, and a
// write through the flat values changes the parameters. It also names the tensors as a
// distopt::layout for the per-tensor compressors (power_sgd):
//   a tensor of shape [d0, d1, ..., dk] (k >= 1) is the row-major matrix [d0, d1 ... dk] that
//   torch's PowerSGD hook compresses, which is the column-major {rows = d1 ... dk, cols = d0}
//   of distopt::layout (Linear [out, in] -> {in, out}; Conv2d [out, in, kh, kw] ->
//   {in kh kw, out}); a 1-D or 0-D tensor (a bias) is {numel, 1}.
//
// module_optimizer<Optimizer> wires one to a distopt::optimizer: construction hands the flat
// values over as x0 and the layout to the compressor (its `shapes`, or its inner
// compressor's, when that layout is empty); step() gives the optimizer the flat gradient,
// then writes its parameters back into the flat buffer: one contiguous copy of n floats per
// step, because the optimizer keeps its own parameter vector.
//
// Requirements: parameters on the CPU, float32, strided (dense). Parameters that do not
// require gradients are left alone; one shared by several submodules is flattened once.
// Every rank must start from the same parameters: clone one module (threads), or seed torch
// identically before building it (one process per rank). Keep the gradients where they are:
// torch's zero_grad(set_to_none = true) or an assignment to .grad() replaces them by new
// tensors, which step() refuses with a config_error; call zero_grad() of this class.
//
//   auto net = std::make_shared<my_net>();
//   distopt::interop::module_optimizer<distopt::algorithms::powersgd<2>> opt(t, *net, {.learning_rate = 0.05f});
//   for (auto& [x, y] : batches) {
//     opt.zero_grad();
//     torch::nn::functional::cross_entropy(net->forward(x), y).backward();
//     opt.step();                                  // PowerSGD per weight matrix, biases exact
//   }
//   opt.finish();

#include <torch/torch.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "distopt/core/errors.hpp"
#include "distopt/core/layout.hpp"
#include "distopt/core/options.hpp"
#include "distopt/core/statistics.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt::interop {

/// The shape distopt::layout gives a tensor of these sizes (see the header comment).
inline tensor_shape shape_of(::torch::IntArrayRef sizes) {
  std::size_t numel = 1;
  for (const std::int64_t d : sizes) numel *= static_cast<std::size_t>(d);
  if (sizes.size() < 2) return {numel, 1};
  const auto cols = static_cast<std::size_t>(sizes[0]);
  return {cols == 0 ? 0 : numel / cols, cols};
}

/// A module's trainable parameters and their gradients, each one flat buffer that the
/// parameters alias (see the header comment).
class flat_parameters {
 public:
  explicit flat_parameters(::torch::nn::Module& module) {
    std::unordered_set<const void*> seen;
    std::int64_t total = 0;
    for (const auto& item : module.named_parameters()) {
      const ::torch::Tensor& p = item.value();
      if (!p.requires_grad() || !seen.insert(p.unsafeGetTensorImpl()).second) continue;
      if (!p.device().is_cpu() || p.scalar_type() != ::torch::kFloat32 || p.layout() != ::torch::kStrided)
        throw config_error("interop::flat_parameters: parameter '" + item.key() + "' is " + describe(p) +
                           "; distopt trains dense float32 CPU parameters: call module->to(torch::kFloat32) "
                           "and keep the module on the CPU");
      entries_.push_back({item.key(), p, total});
      total += p.numel();
    }
    if (total == 0)
      throw config_error(
          "interop::flat_parameters: the module has no trainable parameters (none requires "
          "gradients); register parameters before training it");
    const auto as_float = ::torch::TensorOptions().dtype(::torch::kFloat32);
    values_ = ::torch::empty({total}, as_float);
    gradients_ = ::torch::zeros({total}, as_float);
    ::torch::NoGradGuard no_grad;
    for (entry& e : entries_) {
      ::torch::Tensor& p = e.parameter;
      ::torch::Tensor value = values_.narrow(0, e.offset, p.numel()).view(p.sizes());
      value.copy_(p);
      p.set_data(value);
      ::torch::Tensor gradient = gradients_.narrow(0, e.offset, p.numel()).view(p.sizes());
      if (p.grad().defined()) gradient.copy_(p.grad());
      p.mutable_grad() = gradient;
      layout_.push_back(shape_of(p.sizes()));
    }
  }

  flat_parameters(const flat_parameters&) = delete;  // the module's parameters alias this object's buffers
  flat_parameters& operator=(const flat_parameters&) = delete;

  /// Number of floats (trainable parameters).
  std::size_t size() const noexcept { return static_cast<std::size_t>(values_.numel()); }
  /// The tensors in flat order, as shapes for per-tensor compressors.
  const distopt::layout& layout() const noexcept { return layout_; }
  /// The parameters' names in flat order (those of module.named_parameters()).
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const entry& e : entries_) out.push_back(e.name);
    return out;
  }

  /// The parameters, aliased: a write changes the module.
  std::span<float> values() noexcept { return {values_.data_ptr<float>(), size()}; }
  std::span<const float> values() const noexcept { return {values_.data_ptr<float>(), size()}; }
  /// The gradients that backward() accumulated, aliased.
  std::span<const float> gradients() const noexcept { return {gradients_.data_ptr<float>(), size()}; }
  Eigen::Map<const Eigen::VectorXf> values_vector() const noexcept { return {values_.data_ptr<float>(), ssize()}; }
  Eigen::Map<const Eigen::VectorXf> gradients_vector() const noexcept {
    return {gradients_.data_ptr<float>(), ssize()};
  }
  /// The two buffers as 1-D tensors (views, not copies).
  const ::torch::Tensor& values_tensor() const noexcept { return values_; }
  const ::torch::Tensor& gradients_tensor() const noexcept { return gradients_; }

  /// Sets every gradient to zero, in place (before each backward()).
  void zero_grad() { gradients_.zero_(); }

  /// Records that the values were written through values(), as a torch optimizer's in-place
  /// update does: autograd then refuses to backpropagate through a graph recorded before.
  void mark_values_written() {
    for (const entry& e : entries_) ::torch::autograd::impl::bump_version(e.parameter);
  }

  /// Throws config_error unless every parameter and its gradient still alias the buffers.
  void check_attached() const {
    const float* values = values_.data_ptr<float>();
    const float* gradients = gradients_.data_ptr<float>();
    for (const entry& e : entries_) {
      if (e.parameter.data_ptr() != values + e.offset)
        throw config_error("interop::flat_parameters: parameter '" + e.name +
                           "' no longer aliases the flat buffer (its data was replaced, e.g. by module->to() or "
                           "set_data); move the module before making the flat_parameters / module_optimizer");
      const ::torch::Tensor& g = e.parameter.grad();
      if (!g.defined() || g.data_ptr() != gradients + e.offset)
        throw config_error("interop::flat_parameters: the gradient of '" + e.name +
                           "' is no longer a view of the flat gradient (zero_grad(set_to_none = true) or an "
                           "assignment to .grad() replaced it); zero the gradients with module_optimizer::zero_grad()");
    }
  }

 private:
  struct entry {
    std::string name;
    ::torch::Tensor parameter;
    std::int64_t offset;
  };

  Eigen::Index ssize() const noexcept { return static_cast<Eigen::Index>(values_.numel()); }
  static std::string describe(const ::torch::Tensor& p) {
    return std::string(c10::toString(p.scalar_type())) + " on " + p.device().str() +
           (p.layout() == ::torch::kStrided ? "" : " (not strided)");
  }

  std::vector<entry> entries_;
  ::torch::Tensor values_, gradients_;
  distopt::layout layout_;
};

/// `c` with its `shapes` (or, for a wrapper, its inner compressor's) set to `l` when it has
/// such a knob and it is empty; any other compressor unchanged.
template <class C>
C with_layout(C c, const distopt::layout& l) {
  if constexpr (requires { c.shapes = l; }) {
    if (c.shapes.empty()) c.shapes = l;
  } else if constexpr (requires { c.inner = with_layout(c.inner, l); }) {
    c.inner = with_layout(std::move(c.inner), l);
  }
  return c;
}

/// A distopt optimizer training a module (see the header comment).
template <class Optimizer>
class module_optimizer {
 public:
  using compressor_type = typename Optimizer::compressor_type;

  module_optimizer(transport_ref t, ::torch::nn::Module& module, options o = {}, compressor_type c = {})
      : flat_(module), optimizer_(t, flat_.values_vector(), o, with_layout(std::move(c), flat_.layout())) {}

  /// Zeroes the gradients in place; call it before each backward().
  void zero_grad() { flat_.zero_grad(); }

  /// One step with the gradients of the last backward(); communicates when the policies say so.
  void step() {
    flat_.check_attached();
    optimizer_.step(flat_.gradients_vector());
    store();
  }

  /// Ends the run (optimizer::finish) and leaves its final parameters in the module.
  void finish() {
    optimizer_.finish();
    store();
  }

  const statistics& stats() const { return optimizer_.stats(); }
  const flat_parameters& flat() const noexcept { return flat_; }
  /// The distopt optimizer (set_learning_rate, poll, ...). Its parameters reach the module
  /// at the next step() or finish().
  Optimizer& optimizer() noexcept { return optimizer_; }

 private:
  void store() {
    const auto x = optimizer_.parameters();
    std::copy_n(x.data(), x.size(), flat_.values().data());
    flat_.mark_values_written();
  }

  flat_parameters flat_;
  Optimizer optimizer_;
};

}  // namespace distopt::interop
