// ctest-labels: threads
// The collectives (ring allreduce, broadcast, allgather) on the thread transport,
// against independent serial references. Ring allreduce is checked bit for bit
// against the reduction order its header documents:
//   chunk c = [c*len/n, (c+1)*len/n) is summed as ((x_c + x_{c+1}) + ...) + x_{c+n-1}
//   (indices mod n), and the mean divides that sum by n once.

#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <distopt/collective.hpp>
#include <distopt/core/byte_buffer.hpp>
#include <distopt/core/errors.hpp>
#include <distopt/core/rng.hpp>
#include <distopt/transport/thread.hpp>

namespace {

using namespace std::chrono_literals;
using distopt::collective::reduce_op;

/// Every test world gets a deadline, so a broken collective fails instead of hanging.
template <class F>
void run(int n, F&& fn) {
  distopt::run_threads(n, std::forward<F>(fn), {.timeout = 20s});
}

// ---- reference data ----------------------------------------------------------

std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// `size` bytes that depend only on (owner, size, salt).
std::vector<std::byte> pattern(int owner, std::size_t size, std::uint64_t salt) {
  const std::uint64_t key = splitmix64(splitmix64(splitmix64(static_cast<std::uint64_t>(owner) + 1) ^ size) ^ salt);
  std::vector<std::uint64_t> words((size + 7) / 8);
  for (std::size_t i = 0; i < words.size(); ++i) words[i] = splitmix64(key + i);
  std::vector<std::byte> bytes(size);
  if (size != 0) std::memcpy(bytes.data(), words.data(), size);
  return bytes;
}

bool same_bytes(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

/// Bitwise equality of float vectors (distinguishes -0 from +0, compares NaN payloads).
bool same_bits(std::span<const float> a, std::span<const float> b) {
  return same_bytes(std::as_bytes(a), std::as_bytes(b));
}

/// Rank `rank`'s input to call `call`: uniform in [-1, 1) scaled by a per-rank power
/// of two between 2^-5 and 2^5, so that the order of the additions changes the rounding.
std::vector<float> rank_input(int rank, std::uint32_t call, std::size_t len) {
  distopt::rng g(2024, static_cast<std::uint32_t>(rank), call, distopt::purpose::user);
  const float scale = std::ldexp(1.0f, (rank * 7) % 11 - 5);
  std::vector<float> x(len);
  g.fill_uniform(x);
  for (float& v : x) v = (2.0f * v - 1.0f) * scale;
  return x;
}

/// The documented ring reduction, computed serially.
std::vector<float> ring_reference(const std::vector<std::vector<float>>& xs, reduce_op op) {
  const std::size_t n = xs.size();
  const std::size_t len = xs[0].size();
  std::vector<float> out(len);
  for (std::size_t c = 0; c < n; ++c) {
    for (std::size_t i = len * c / n; i < len * (c + 1) / n; ++i) {
      float s = xs[c][i];
      for (std::size_t j = 1; j < n; ++j) s = s + xs[(c + j) % n][i];
      if (op == reduce_op::mean) s = s / static_cast<float>(n);
      out[i] = s;
    }
  }
  return out;
}

/// The plain rank-order sum x_0 + x_1 + ... + x_{n-1}: a different order, used only to
/// show that the inputs are sensitive to the order (so the bitwise check means something).
std::vector<float> rank_order_sum(const std::vector<std::vector<float>>& xs) {
  std::vector<float> out(xs[0]);
  for (std::size_t k = 1; k < xs.size(); ++k)
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = out[i] + xs[k][i];
  return out;
}

struct allreduce_call {
  std::size_t len;
  reduce_op op;
};

std::vector<allreduce_call> allreduce_calls(const std::vector<std::size_t>& lengths) {
  std::vector<allreduce_call> calls;
  for (const std::size_t len : lengths)
    for (const reduce_op op : {reduce_op::sum, reduce_op::mean}) calls.push_back({len, op});
  return calls;
}

const char* name(reduce_op op) { return op == reduce_op::sum ? "sum" : "mean"; }

/// Runs `calls` in order on n ranks with one workspace per rank (reused by every
/// call) and checks every rank's result against the serial reference, bit for bit.
void check_ring_allreduce(int n, std::size_t segment_floats, const std::vector<allreduce_call>& calls) {
  CAPTURE(n);
  CAPTURE(segment_floats);
  // inputs[call][rank], made before the run and read by the workers and the reference.
  std::vector<std::vector<std::vector<float>>> inputs(calls.size());
  for (std::size_t k = 0; k < calls.size(); ++k)
    for (int r = 0; r < n; ++r) inputs[k].push_back(rank_input(r, static_cast<std::uint32_t>(k), calls[k].len));
  // results[rank][call]
  std::vector<std::vector<std::vector<float>>> results(static_cast<std::size_t>(n),
                                                       std::vector<std::vector<float>>(calls.size()));
  run(n, [&](distopt::transport_ref t) {
    const auto r = static_cast<std::size_t>(t.rank());
    distopt::collective::allreduce_workspace ws;
    ws.segment_floats = segment_floats;
    for (std::size_t k = 0; k < calls.size(); ++k) {
      std::vector<float> data = inputs[k][r];
      distopt::collective::ring_allreduce(t, data, calls[k].op, ws);
      results[r][k] = std::move(data);
    }
  });
  for (std::size_t k = 0; k < calls.size(); ++k) {
    CAPTURE(calls[k].len);
    INFO("op = ", name(calls[k].op), ", call ", k);
    const std::vector<float> expected = ring_reference(inputs[k], calls[k].op);
    for (int r = 0; r < n; ++r) {
      INFO("rank ", r);
      CHECK(same_bits(results[static_cast<std::size_t>(r)][k], expected));
    }
  }
}

constexpr int ring_world_sizes[] = {1, 2, 3, 4, 8};

}  // namespace

TEST_CASE("ring_allreduce: the test inputs are sensitive to the order of the additions") {
  // Guards the bitwise tests below: with these inputs, summing in another order
  // changes the result, so a wrong order cannot pass them by luck.
  for (const int n : {3, 4, 8}) {
    CAPTURE(n);
    std::vector<std::vector<float>> xs;
    for (int r = 0; r < n; ++r) xs.push_back(rank_input(r, 0, 1000));
    CHECK_FALSE(same_bits(ring_reference(xs, reduce_op::sum), rank_order_sum(xs)));
  }
}

TEST_CASE("ring_allreduce: sum and mean equal the documented serial order bit for bit, on every rank") {
  for (const int n : ring_world_sizes) {
    const auto un = static_cast<std::size_t>(n);
    // Default segments (one per chunk), with the workspace reused across all calls.
    check_ring_allreduce(n, distopt::collective::allreduce_workspace{}.segment_floats,
                         allreduce_calls({0, 1, 7, un - 1, 1000, 100003}));
  }
}

TEST_CASE("ring_allreduce: pipelined in tiny segments, same results") {
  for (const int n : ring_world_sizes) {
    const auto un = static_cast<std::size_t>(n);
    check_ring_allreduce(n, 3, allreduce_calls({0, 1, 7, un - 1, 1000}));
    check_ring_allreduce(n, 4099, allreduce_calls({100003}));  // many segments per chunk, a ragged last one
  }
}

TEST_CASE("ring_allreduce: repeated calls on the same data with one workspace give the same bits") {
  constexpr int n = 4;
  constexpr std::size_t len = 1001;
  std::vector<std::vector<float>> xs;
  for (int r = 0; r < n; ++r) xs.push_back(rank_input(r, 0, len));
  const std::vector<float> expected = ring_reference(xs, reduce_op::mean);
  std::vector<int> matches(n, 0);
  run(n, [&](distopt::transport_ref t) {
    const int r = t.rank();
    distopt::collective::allreduce_workspace ws;
    ws.segment_floats = 17;
    for (int repeat = 0; repeat < 5; ++repeat) {
      std::vector<float> data = xs[static_cast<std::size_t>(r)];
      distopt::collective::ring_allreduce(t, data, reduce_op::mean, ws);
      matches[static_cast<std::size_t>(r)] += same_bits(data, expected);
    }
  });
  for (int r = 0; r < n; ++r) CHECK(matches[static_cast<std::size_t>(r)] == 5);
}

TEST_CASE("ring_allreduce: ranks passing different lengths get transport_error, not a crash or a hang") {
  struct mismatch {
    std::vector<std::size_t> lengths;  // per rank
    std::size_t segment_floats;
  };
  const mismatch cases[] = {
      {{100, 101}, 1 << 16},
      {{10, 10, 11}, 1 << 16},
      {{0, 5, 5, 5}, 1 << 16},
      {{12, 12, 13}, 3},
      {{64, 64, 64, 64, 64, 64, 64, 63}, 1 << 16},
      {{1000, 1000, 1000, 0}, 7},
  };
  for (const mismatch& m : cases) {
    const int n = static_cast<int>(m.lengths.size());
    CAPTURE(n);
    CAPTURE(m.segment_floats);
    CAPTURE(m.lengths.back());
    CHECK_THROWS_AS(run(n,
                        [&](distopt::transport_ref t) {
                          distopt::collective::allreduce_workspace ws;
                          ws.segment_floats = m.segment_floats;
                          std::vector<float> data(m.lengths[static_cast<std::size_t>(t.rank())], 1.0f);
                          distopt::collective::ring_allreduce(t, data, reduce_op::sum, ws);
                        }),
                    distopt::transport_error);
  }
  // The plain two-rank case names the problem.
  CHECK_THROWS_WITH_AS(run(2,
                           [](distopt::transport_ref t) {
                             distopt::collective::allreduce_workspace ws;
                             std::vector<float> data(t.rank() == 0 ? 100 : 101, 1.0f);
                             distopt::collective::ring_allreduce(t, data, reduce_op::sum, ws);
                           }),
                       doctest::Contains("same length"), distopt::transport_error);
  // An input shorter than the output is refused on the rank that passes it, before it is read.
  CHECK_THROWS_WITH_AS(run(1,
                           [](distopt::transport_ref t) {
                             distopt::collective::allreduce_workspace ws;
                             const std::vector<float> in(10, 1.0f);
                             std::vector<float> out(100);
                             distopt::collective::ring_allreduce(t, in, out, reduce_op::sum, ws);
                           }),
                       doctest::Contains("same length"), distopt::config_error);
}

TEST_CASE("broadcast: every root, sizes 0 B, 1 B, 4 KiB, n = 1..8") {
  for (int n = 1; n <= 8; ++n) {
    CAPTURE(n);
    run(n, [n](distopt::transport_ref t) {
      const int r = t.rank();
      distopt::byte_buffer data;
      for (int root = 0; root < n; ++root) {
        for (const std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{4096}}) {
          const auto expected = pattern(root, size, static_cast<std::uint64_t>(root));
          if (r == root) {
            data.assign(expected.begin(), expected.end());
          } else {
            data.assign(5000, std::byte{0xEE});  // stale contents must be replaced
          }
          distopt::collective::broadcast(t, root, data);
          INFO("n = ", n, ", root ", root, ", size ", size, ", rank ", r);
          CHECK(same_bytes(data, expected));
        }
      }
    });
  }
}

TEST_CASE("broadcast: a root outside 0..n-1 is a config_error on every rank") {
  for (const int n : {1, 3}) {
    CAPTURE(n);
    run(n, [n](distopt::transport_ref t) {
      distopt::byte_buffer data(8, std::byte{1});
      CHECK_THROWS_AS(distopt::collective::broadcast(t, -1, data), distopt::config_error);
      CHECK_THROWS_AS(distopt::collective::broadcast(t, n, data), distopt::config_error);
      // Nothing was sent: a valid broadcast afterwards still works.
      if (t.rank() == n - 1) data.assign(3, std::byte{7});
      distopt::collective::broadcast(t, n - 1, data);
      CHECK(same_bytes(data, std::vector<std::byte>(3, std::byte{7})));
    });
  }
}

TEST_CASE("allgather: variable-length parts, some empty, n = 1..8") {
  // Round 0: rank k sends k*3+1 bytes. Round 1: odd ranks send nothing. Round 2:
  // nobody sends anything. Round 3: larger parts (4 KiB + k).
  auto size_of = [](int round, int k) -> std::size_t {
    const auto uk = static_cast<std::size_t>(k);
    switch (round) {
      case 0:
        return uk * 3 + 1;
      case 1:
        return k % 2 == 1 ? 0 : uk * 3 + 1;
      case 2:
        return 0;
      default:
        return 4096 + uk;
    }
  };
  for (int n = 1; n <= 8; ++n) {
    CAPTURE(n);
    run(n, [n, &size_of](distopt::transport_ref t) {
      const int r = t.rank();
      // Stale parts, too many of them: all must be replaced and the vector resized to n.
      std::vector<distopt::byte_buffer> parts(static_cast<std::size_t>(n) + 2,
                                              distopt::byte_buffer(9, std::byte{0xEE}));
      for (int round = 0; round < 4; ++round) {
        const auto round_salt = static_cast<std::uint64_t>(round);
        const auto mine = pattern(r, size_of(round, r), round_salt);
        distopt::collective::allgather(t, mine, parts);
        INFO("n = ", n, ", round ", round, ", rank ", r);
        CHECK(parts.size() == static_cast<std::size_t>(n));
        int correct = 0;
        for (int k = 0; k < n && k < static_cast<int>(parts.size()); ++k)
          correct += same_bytes(parts[static_cast<std::size_t>(k)], pattern(k, size_of(round, k), round_salt));
        CHECK(correct == n);
      }
    });
  }
}
