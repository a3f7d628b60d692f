#pragma once
// problems::mlp — a multi-layer perceptron classifier: ReLU hidden layers, a
// softmax output and the mean cross-entropy loss, plus (lambda/2)||W||^2 on the
// weight matrices. With no hidden layers it is multinomial logistic (softmax)
// regression, available as problems::softmax_regression.
//
//   Z_l = W_l A_{l-1} + b_l,  A_l = max(Z_l, 0) (hidden),  P = softmax(Z_L)
//   loss = -(1/B) sum_i log P[y_i, i] + (lambda/2) sum_l ||W_l||^2
// Backpropagation: dZ_L = (P - onehot(y)) / B; dW_l = dZ_l A_{l-1}^T + lambda W_l;
// db_l = dZ_l 1; dZ_{l-1} = (W_l^T dZ_l) .* [Z_{l-1} > 0].
//
// Parameters are one flat vector: W_1, b_1, W_2, b_2, ... (each W column-major),
// described by layout() for per-tensor compressors. Samples are rows of the
// feature matrix. Const member functions may be called from several workers at once.
//
//   distopt::problems::mlp net(train.features, train.labels, 10, /*hidden=*/{128});
//   Eigen::VectorXf x = net.initial_parameters(/*seed=*/1);
//   net.gradient(x, batch, g);

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "distopt/core/errors.hpp"
#include "distopt/core/layout.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::problems {

class mlp {
 public:
  /// features: one sample per row; labels in 0..classes-1; hidden: widths of the hidden layers.
  mlp(const Eigen::MatrixXf& features, std::vector<int> labels, int classes, std::vector<int> hidden,
      float lambda = 0.0f)
      : samples_(features.transpose()), labels_(std::move(labels)), classes_(classes), lambda_(lambda) {
    if (features.rows() == 0 || features.cols() == 0)
      throw config_error("mlp: the feature matrix is empty; pass one sample per row");
    if (static_cast<Eigen::Index>(labels_.size()) != features.rows())
      throw config_error("mlp: " + std::to_string(features.rows()) + " samples but " + std::to_string(labels_.size()) +
                         " labels; pass one label per row");
    if (classes_ < 2) throw config_error("mlp: classes must be >= 2, got " + std::to_string(classes_));
    if (!(lambda_ >= 0.0f && std::isfinite(lambda_)))
      throw config_error("mlp: lambda must be finite and >= 0, got " + std::to_string(lambda_));
    for (std::size_t i = 0; i < labels_.size(); ++i)
      if (labels_[i] < 0 || labels_[i] >= classes_)
        throw config_error("mlp: label " + std::to_string(labels_[i]) + " of sample " + std::to_string(i) +
                           " is outside 0.." + std::to_string(classes_ - 1));
    std::size_t in = static_cast<std::size_t>(features.cols());
    for (int h : hidden) {
      if (h < 1) throw config_error("mlp: hidden layer widths must be >= 1, got " + std::to_string(h));
      add_layer(static_cast<std::size_t>(h), in);
      in = static_cast<std::size_t>(h);
    }
    add_layer(static_cast<std::size_t>(classes_), in);
  }

  Eigen::Index dimension() const { return static_cast<Eigen::Index>(parameter_count(layout_)); }
  std::size_t samples() const { return labels_.size(); }
  int classes() const { return classes_; }
  /// W_1 (h_1 x d), b_1 (h_1 x 1), ..., W_L (classes x h_{L-1}), b_L.
  const distopt::layout& layout() const { return layout_; }

  /// He initialisation (W ~ N(0, 2/fan_in), b = 0), a pure function of the seed.
  Eigen::VectorXf initial_parameters(std::uint64_t seed) const {
    Eigen::VectorXf x = Eigen::VectorXf::Zero(dimension());
    rng g(seed, 0, 0, purpose::user);
    for (const layer& l : layers_) {
      const float scale = std::sqrt(2.0f / static_cast<float>(l.in));
      for (std::size_t i = 0; i < l.out * l.in; ++i) x(static_cast<Eigen::Index>(l.weights + i)) = scale * g.normal();
    }
    return x;
  }

  /// Mean gradient over the samples in `batch` (indices into the training rows).
  void gradient(const Eigen::Ref<const Eigen::VectorXf>& x, std::span<const std::size_t> batch,
                Eigen::VectorXf& g) const {
    check(x);
    g.setZero(dimension());
    if (batch.empty()) return;
    const Eigen::Index b = static_cast<Eigen::Index>(batch.size());
    std::vector<Eigen::MatrixXf> acts = forward(x, gather(batch));  // acts[0] = inputs, acts[L] = probabilities
    Eigen::MatrixXf dz = acts.back();
    for (Eigen::Index j = 0; j < b; ++j) dz(labels_[batch[static_cast<std::size_t>(j)]], j) -= 1.0f;
    dz /= static_cast<float>(b);
    for (std::size_t l = layers_.size(); l-- > 0;) {
      const layer& ly = layers_[l];
      auto w = weights(x, ly);
      Eigen::Map<Eigen::MatrixXf> dw(g.data() + ly.weights, static_cast<Eigen::Index>(ly.out),
                                     static_cast<Eigen::Index>(ly.in));
      Eigen::Map<Eigen::VectorXf> db(g.data() + ly.bias, static_cast<Eigen::Index>(ly.out));
      dw.noalias() = dz * acts[l].transpose();
      if (lambda_ != 0.0f) dw += lambda_ * w;
      db = dz.rowwise().sum();
      if (l > 0) {
        Eigen::MatrixXf da = w.transpose() * dz;
        dz = (acts[l].array() > 0.0f).select(da, 0.0f);  // ReLU'(Z) = [A > 0]
      }
    }
  }

  struct evaluation {
    double loss = 0;      ///< mean cross-entropy (without the regulariser)
    double accuracy = 0;  ///< fraction classified correctly
  };

  /// Loss and accuracy on a data set (e.g. the test split), in chunks.
  evaluation evaluate(const Eigen::Ref<const Eigen::VectorXf>& x, const Eigen::MatrixXf& features,
                      const std::vector<int>& labels) const {
    check(x);
    if (features.cols() != samples_.rows())
      throw config_error("mlp::evaluate: the features have " + std::to_string(features.cols()) +
                         " columns, the model takes " + std::to_string(samples_.rows()) + " inputs");
    if (static_cast<Eigen::Index>(labels.size()) != features.rows())
      throw config_error("mlp::evaluate: " + std::to_string(features.rows()) + " samples but " +
                         std::to_string(labels.size()) + " labels; pass one label per row");
    for (std::size_t i = 0; i < labels.size(); ++i)
      if (labels[i] < 0 || labels[i] >= classes_)
        throw config_error("mlp::evaluate: label " + std::to_string(labels[i]) + " of sample " + std::to_string(i) +
                           " is outside 0.." + std::to_string(classes_ - 1));
    evaluation e;
    const Eigen::Index n = features.rows();
    if (n == 0) return e;
    constexpr Eigen::Index chunk = 1024;
    for (Eigen::Index start = 0; start < n; start += chunk) {
      const Eigen::Index m = std::min(chunk, n - start);
      const Eigen::MatrixXf p = forward(x, features.middleRows(start, m).transpose()).back();
      for (Eigen::Index j = 0; j < m; ++j) {
        const int y = labels[static_cast<std::size_t>(start + j)];
        Eigen::Index best;
        p.col(j).maxCoeff(&best);
        e.accuracy += best == y;
        e.loss -= std::log(std::max(p(y, j), 1e-30f));
      }
    }
    e.loss /= static_cast<double>(n);
    e.accuracy /= static_cast<double>(n);
    return e;
  }

  /// Loss (with the regulariser) on the training samples in `batch`.
  double loss(const Eigen::Ref<const Eigen::VectorXf>& x, std::span<const std::size_t> batch) const {
    check(x);
    const Eigen::MatrixXf p = forward(x, gather(batch)).back();
    double s = 0;
    for (std::size_t j = 0; j < batch.size(); ++j)
      s -= std::log(std::max(p(labels_[batch[j]], static_cast<Eigen::Index>(j)), 1e-30f));
    double reg = 0;
    for (const layer& l : layers_) reg += weights(x, l).cast<double>().squaredNorm();
    return s / static_cast<double>(std::max<std::size_t>(batch.size(), 1)) + 0.5 * lambda_ * reg;
  }

 private:
  struct layer {
    std::size_t out, in, weights, bias;  // sizes and offsets into the flat vector
  };

  void add_layer(std::size_t out, std::size_t in) {
    const std::size_t at = parameter_count(layout_);
    layers_.push_back({out, in, at, at + out * in});
    layout_.push_back({out, in});
    layout_.push_back({out, 1});
  }
  static Eigen::Map<const Eigen::MatrixXf> weights(const Eigen::Ref<const Eigen::VectorXf>& x, const layer& l) {
    return {x.data() + l.weights, static_cast<Eigen::Index>(l.out), static_cast<Eigen::Index>(l.in)};
  }
  void check(const Eigen::Ref<const Eigen::VectorXf>& x) const {
    if (x.size() != dimension())
      throw config_error("mlp: parameter vector has " + std::to_string(x.size()) + " entries, the model needs " +
                         std::to_string(dimension()));
  }
  Eigen::MatrixXf gather(std::span<const std::size_t> batch) const {
    Eigen::MatrixXf in(samples_.rows(), static_cast<Eigen::Index>(batch.size()));
    for (std::size_t j = 0; j < batch.size(); ++j)
      in.col(static_cast<Eigen::Index>(j)) = samples_.col(static_cast<Eigen::Index>(batch[j]));
    return in;
  }
  // Activations of every layer for the samples in the columns of `in`; the last is softmax probabilities.
  std::vector<Eigen::MatrixXf> forward(const Eigen::Ref<const Eigen::VectorXf>& x, Eigen::MatrixXf in) const {
    std::vector<Eigen::MatrixXf> acts;
    acts.reserve(layers_.size() + 1);
    acts.push_back(std::move(in));
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const layer& ly = layers_[l];
      Eigen::Map<const Eigen::VectorXf> bias(x.data() + ly.bias, static_cast<Eigen::Index>(ly.out));
      Eigen::MatrixXf z = weights(x, ly) * acts.back();
      z.colwise() += bias;
      if (l + 1 < layers_.size()) {
        acts.push_back(z.cwiseMax(0.0f));
      } else {  // softmax, shifted by the column max for stability
        z.rowwise() -= z.colwise().maxCoeff();
        z = z.array().exp();
        z.array().rowwise() /= z.colwise().sum().array();
        acts.push_back(std::move(z));
      }
    }
    return acts;
  }

  Eigen::MatrixXf samples_;  // one sample per column
  std::vector<int> labels_;
  int classes_;
  float lambda_;
  std::vector<layer> layers_;
  distopt::layout layout_;
};

/// Multinomial logistic regression: an mlp without hidden layers.
class softmax_regression : public mlp {
 public:
  softmax_regression(const Eigen::MatrixXf& features, std::vector<int> labels, int classes, float lambda = 0.0f)
      : mlp(features, std::move(labels), classes, {}, lambda) {}
};

}  // namespace distopt::problems
