#pragma once
// Partitioning samples across workers. Every function is a pure function of its
// arguments and the seed: each worker computes the same assignment and keeps its
// own part, so shards need no communication, and every sample lands in exactly one
// worker's shard. The order of indices inside a shard does not matter to
// minibatch_sampler, which reshuffles every epoch.
//
// * iid_shard: a seeded shuffle of 0..m-1 cut into `workers` contiguous shards
//   whose sizes differ by at most one.
// * label_sorted_shard: "pathological non-iid" shards (McMahan, Moore, Ramage,
//   Hampson, Aguera y Arcas, "Communication-efficient learning of deep networks from
//   decentralized data", AISTATS 2017, arXiv 1602.05629). The samples are sorted by
//   label (within a label in a seeded random order) and cut into
//   workers * shards_per_worker contiguous pieces whose sizes differ by at most
//   one. With shards_per_worker = 1 (the default) worker r gets piece r, so rank 0
//   holds the smallest labels; with more, each worker gets shards_per_worker pieces
//   chosen by a seeded permutation of the pieces (McMahan et al. use 2).
// * dirichlet_shard: label skew of strength alpha (Hsu, Qi, Brown, "Measuring the
//   effects of non-identical data distribution for federated visual
//   classification", arXiv 1909.06335, 2019). For each class c independently,
//   proportions p_c ~ Dir(alpha, ..., alpha) over the workers are drawn (Gamma
//   variates by Marsaglia & Tsang, ACM TOMS 26(3), 2000, normalised), the class's
//   n_c samples are put in a seeded random order and worker k gets the ones between
//   round(n_c (p_c1 + ... + p_c(k-1))) and round(n_c (p_c1 + ... + p_ck)).
//   alpha -> infinity approaches iid label proportions; alpha = 0.1 gives most of
//   each class to one or two workers. Small alpha can leave a worker with no
//   samples (minibatch_sampler refuses an empty shard).
//
//   auto mine = distopt::data::iid_shard(samples, rank, workers, seed);
//   auto skewed = distopt::data::dirichlet_shard(train.labels, rank, workers, /*alpha=*/0.5, seed);
//   auto sorted = distopt::data::label_sorted_shard(train.labels, rank, workers, seed, /*shards_per_worker=*/2);
//
// Random streams: iid_shard draws from rng(seed, 0, 0, sampling); the label-based
// partitions from rng(seed, lane, 0x7000000k, sampling) (lane = the class label
// for Dirichlet), steps minibatch_sampler reaches only after 2^30 epochs.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::data {

namespace detail {

inline void check_workers(const char* who, int workers) {
  if (workers < 1) throw config_error(std::string(who) + ": workers must be >= 1, got " + std::to_string(workers));
}

inline void check_rank(const char* who, int rank, int workers) {
  check_workers(who, workers);
  if (rank < 0 || rank >= workers)
    throw config_error(std::string(who) + ": need 0 <= rank < workers, got rank " + std::to_string(rank) + " of " +
                       std::to_string(workers));
}

// Stream steps of the label-based partitions (see the header comment).
inline constexpr std::uint32_t label_order_step = 0x70000001u;
inline constexpr std::uint32_t piece_order_step = 0x70000002u;
inline constexpr std::uint32_t dirichlet_draw_step = 0x70000003u;
inline constexpr std::uint32_t dirichlet_order_step = 0x70000004u;

// Fisher-Yates shuffle driven by g.
template <class T>
void shuffle(std::vector<T>& v, rng& g) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[g.below(static_cast<std::uint32_t>(i))]);
}

/// Uniform double in [0, 1) with 53 random bits.
inline double unit_double(rng& g) noexcept {
  const std::uint64_t hi = g.next_u32() >> 5, lo = g.next_u32() >> 6;
  return static_cast<double>((hi << 26) | lo) * 0x1.0p-53;
}

/// Standard normal in double precision (Box-Muller).
inline double standard_normal(rng& g) noexcept {
  const double u1 = 1.0 - unit_double(g);  // (0, 1]
  const double u2 = unit_double(g);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586476925 * u2);
}

/// log of a Gamma(shape, 1) variate, shape > 0 (Marsaglia & Tsang 2000; for shape < 1,
/// Gamma(a) = Gamma(a + 1) U^(1/a)). In logs so that tiny shapes do not underflow to 0.
inline double log_gamma_variate(rng& g, double shape) noexcept {
  if (shape < 1.0) {
    const double u = 1.0 - unit_double(g);  // (0, 1]
    return log_gamma_variate(g, shape + 1.0) + std::log(u) / shape;
  }
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x = 0.0, v = 0.0;
    do {
      x = standard_normal(g);
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    const double u = 1.0 - unit_double(g);  // (0, 1]
    const double x2 = x * x;
    if (u < 1.0 - 0.0331 * x2 * x2 || std::log(u) < 0.5 * x2 + d * (1.0 - v + std::log(v))) return std::log(d * v);
  }
}

/// A Gamma(shape, 1) variate.
inline double gamma_variate(rng& g, double shape) noexcept { return std::exp(log_gamma_variate(g, shape)); }

/// A Dir(alpha, ..., alpha) vector of k proportions (normalised Gamma variates).
inline std::vector<double> dirichlet_variate(rng& g, double alpha, std::size_t k) {
  std::vector<double> p(k);
  for (double& v : p) v = log_gamma_variate(g, alpha);
  const double top = *std::max_element(p.begin(), p.end());
  double sum = 0.0;
  for (double& v : p) sum += (v = std::exp(v - top));
  for (double& v : p) v /= sum;
  return p;
}

/// Sample indices grouped by label: (label, indices of that label ascending), labels ascending.
inline std::vector<std::pair<int, std::vector<std::size_t>>> group_by_label(std::span<const int> labels) {
  std::vector<std::size_t> order(labels.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return labels[a] < labels[b]; });
  std::vector<std::pair<int, std::vector<std::size_t>>> groups;
  for (std::size_t i : order) {
    if (groups.empty() || groups.back().first != labels[i]) groups.push_back({labels[i], {}});
    groups.back().second.push_back(i);
  }
  return groups;
}

}  // namespace detail

/// Indices of worker `rank`'s shard of `samples` items.
inline std::vector<std::size_t> iid_shard(std::size_t samples, int rank, int workers, std::uint64_t seed) {
  detail::check_rank("iid_shard", rank, workers);
  std::vector<std::size_t> order(samples);
  std::iota(order.begin(), order.end(), std::size_t{0});
  rng g(seed, 0, 0, purpose::sampling);
  for (std::size_t i = samples; i > 1; --i) std::swap(order[i - 1], order[g.below(static_cast<std::uint32_t>(i))]);
  const std::size_t w = static_cast<std::size_t>(workers);
  const std::size_t begin = samples * static_cast<std::size_t>(rank) / w;
  const std::size_t end = samples * static_cast<std::size_t>(rank + 1) / w;
  return {order.begin() + static_cast<std::ptrdiff_t>(begin), order.begin() + static_cast<std::ptrdiff_t>(end)};
}

/// Every worker's label-sorted shard (see the header comment); entry r is rank r's.
inline std::vector<std::vector<std::size_t>> label_sorted_partition(std::span<const int> labels, int workers,
                                                                    std::uint64_t seed, int shards_per_worker = 1) {
  detail::check_workers("label_sorted_partition", workers);
  if (shards_per_worker < 1)
    throw config_error("label_sorted_partition: shards_per_worker must be >= 1, got " +
                       std::to_string(shards_per_worker));
  // Sorted by label; ties in a seeded random order (shuffle, then a stable sort).
  std::vector<std::size_t> order(labels.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  rng ties(seed, 0, detail::label_order_step, purpose::sampling);
  detail::shuffle(order, ties);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return labels[a] < labels[b]; });
  // Pieces of sizes differing by at most one; piece j goes to owner[j].
  const std::size_t w = static_cast<std::size_t>(workers);
  const std::size_t spw = static_cast<std::size_t>(shards_per_worker);
  const std::size_t pieces = w * spw;
  std::vector<std::size_t> owner(pieces);
  for (std::size_t j = 0; j < pieces; ++j) owner[j] = j / spw;
  if (spw > 1) {
    rng g(seed, 0, detail::piece_order_step, purpose::sampling);
    detail::shuffle(owner, g);
  }
  std::vector<std::vector<std::size_t>> shards(w);
  const std::size_t m = order.size();
  for (std::size_t j = 0; j < pieces; ++j) {
    auto& dst = shards[owner[j]];
    dst.insert(dst.end(), order.begin() + static_cast<std::ptrdiff_t>(m * j / pieces),
               order.begin() + static_cast<std::ptrdiff_t>(m * (j + 1) / pieces));
  }
  return shards;
}

/// Indices of worker `rank`'s label-sorted shard (see the header comment).
inline std::vector<std::size_t> label_sorted_shard(std::span<const int> labels, int rank, int workers,
                                                   std::uint64_t seed, int shards_per_worker = 1) {
  detail::check_rank("label_sorted_shard", rank, workers);
  return std::move(label_sorted_partition(labels, workers, seed, shards_per_worker)[static_cast<std::size_t>(rank)]);
}

/// Every worker's Dirichlet(alpha) shard (see the header comment), indices ascending;
/// entry r is rank r's.
inline std::vector<std::vector<std::size_t>> dirichlet_partition(std::span<const int> labels, int workers, double alpha,
                                                                 std::uint64_t seed) {
  detail::check_workers("dirichlet_partition", workers);
  if (!(std::isfinite(alpha) && alpha > 0.0))
    throw config_error("dirichlet_partition: alpha must be finite and > 0, got " + std::to_string(alpha) +
                       " (large alpha: nearly iid; alpha = 0.1: strongly skewed)");
  const std::size_t w = static_cast<std::size_t>(workers);
  std::vector<std::vector<std::size_t>> shards(w);
  for (auto& [label, members] : detail::group_by_label(labels)) {
    const auto lane = static_cast<std::uint32_t>(label);
    rng draw(seed, lane, detail::dirichlet_draw_step, purpose::sampling);
    const std::vector<double> p = detail::dirichlet_variate(draw, alpha, w);
    rng order(seed, lane, detail::dirichlet_order_step, purpose::sampling);
    detail::shuffle(members, order);
    const double n = static_cast<double>(members.size());
    double cumulative = 0.0;
    std::size_t begin = 0;
    for (std::size_t k = 0; k < w; ++k) {
      cumulative += p[k];
      const std::size_t end = k + 1 == w
                                  ? members.size()
                                  : std::min(members.size(), static_cast<std::size_t>(std::llround(n * cumulative)));
      shards[k].insert(shards[k].end(), members.begin() + static_cast<std::ptrdiff_t>(begin),
                       members.begin() + static_cast<std::ptrdiff_t>(std::max(begin, end)));
      begin = std::max(begin, end);
    }
  }
  for (auto& s : shards) std::sort(s.begin(), s.end());
  return shards;
}

/// Indices of worker `rank`'s Dirichlet(alpha) shard, ascending (see the header comment).
inline std::vector<std::size_t> dirichlet_shard(std::span<const int> labels, int rank, int workers, double alpha,
                                                std::uint64_t seed) {
  detail::check_rank("dirichlet_shard", rank, workers);
  return std::move(dirichlet_partition(labels, workers, alpha, seed)[static_cast<std::size_t>(rank)]);
}

/// Draws mini-batches from a shard: each epoch is a fresh seeded shuffle of the
/// shard, cut into consecutive batches (the last batch of an epoch may be short).
class minibatch_sampler {
 public:
  minibatch_sampler(std::vector<std::size_t> shard, std::size_t batch, std::uint64_t seed, int rank)
      : shard_(std::move(shard)), batch_(batch), seed_(seed), rank_(static_cast<std::uint32_t>(rank)) {
    if (batch_ == 0) throw config_error("minibatch_sampler: batch size must be >= 1");
    if (shard_.empty()) throw config_error("minibatch_sampler: the shard is empty; use fewer workers or more data");
  }
  /// The next batch (valid until the next call).
  std::span<const std::size_t> next() {
    if (pos_ == 0 || pos_ >= shard_.size()) shuffle();
    const std::size_t n = std::min(batch_, shard_.size() - pos_);
    std::span<const std::size_t> out(shard_.data() + pos_, n);
    pos_ += n;
    return out;
  }
  std::size_t batches_per_epoch() const { return (shard_.size() + batch_ - 1) / batch_; }

 private:
  void shuffle() {
    rng g(seed_, rank_, epoch_++, purpose::sampling);
    for (std::size_t i = shard_.size(); i > 1; --i)
      std::swap(shard_[i - 1], shard_[g.below(static_cast<std::uint32_t>(i))]);
    pos_ = 0;
  }
  std::vector<std::size_t> shard_;
  std::size_t batch_;
  std::uint64_t seed_;
  std::uint32_t rank_;
  std::uint32_t epoch_ = 0;
  std::size_t pos_ = 0;
};

}  // namespace distopt::data
