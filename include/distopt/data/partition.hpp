#pragma once
// Partitioning samples across workers. iid: a seeded shuffle of 0..m-1 cut into
// `workers` contiguous shards whose sizes differ by at most one; every worker
// computes the same permutation from the seed, so shards need no communication.
//
//   auto mine = distopt::data::iid_shard(samples, rank, workers, seed);

#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::data {

/// Indices of worker `rank`'s shard of `samples` items.
inline std::vector<std::size_t> iid_shard(std::size_t samples, int rank, int workers, std::uint64_t seed) {
  if (workers < 1 || rank < 0 || rank >= workers)
    throw config_error("iid_shard: need 0 <= rank < workers, got rank " + std::to_string(rank) + " of " +
                       std::to_string(workers));
  std::vector<std::size_t> order(samples);
  std::iota(order.begin(), order.end(), std::size_t{0});
  rng g(seed, 0, 0, purpose::sampling);
  for (std::size_t i = samples; i > 1; --i) std::swap(order[i - 1], order[g.below(static_cast<std::uint32_t>(i))]);
  const std::size_t w = static_cast<std::size_t>(workers);
  const std::size_t begin = samples * static_cast<std::size_t>(rank) / w;
  const std::size_t end = samples * static_cast<std::size_t>(rank + 1) / w;
  return {order.begin() + static_cast<std::ptrdiff_t>(begin), order.begin() + static_cast<std::ptrdiff_t>(end)};
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
