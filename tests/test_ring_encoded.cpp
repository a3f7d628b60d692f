// ctest-labels: threads
// Ring allreduce on summable encodings (collective/ring_encoded.hpp) against a serial
// reference written from the header's documented order: chunk k = [k*len/n, (k+1)*len/n)
// is summed as ((E_k + E_{k+1}) + ...) + E_{k+n-1} (ranks mod n), every rank decodes the
// sum and divides by n. The reference forms each partial sum with the compressor's plain
// encode and decode (tested against closed forms in test_compress_*), not with accumulate.

#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include <distopt/collective/average.hpp>
#include <distopt/collective/ring_encoded.hpp>
#include <distopt/compress/bf16.hpp>
#include <distopt/compress/fp16.hpp>
#include <distopt/compress/identity.hpp>
#include <distopt/compress/random_k.hpp>
#include <distopt/compress/top_k.hpp>
#include <distopt/core/errors.hpp>
#include <distopt/core/statistics.hpp>
#include <distopt/core/traits.hpp>
#include <distopt/transport/metered.hpp>
#include <distopt/transport/thread.hpp>

namespace {

using namespace std::chrono_literals;
namespace compress = distopt::compress;

static_assert(distopt::reduction_for_v<compress::identity> == distopt::reduction::ring_on_floats);
static_assert(distopt::reduction_for_v<compress::fp16> == distopt::reduction::ring_on_encodings);
static_assert(distopt::reduction_for_v<compress::bf16> == distopt::reduction::ring_on_encodings);
static_assert(distopt::reduction_for_v<compress::random_k_shared> == distopt::reduction::ring_on_encodings);
static_assert(distopt::reduction_for_v<compress::top_k> == distopt::reduction::gather_decode);

std::vector<float> input(int rank, std::size_t len) {
  distopt::rng g(17, static_cast<std::uint32_t>(rank), 0, distopt::purpose::user);
  std::vector<float> x(len);
  for (float& v : x) v = g.normal();
  return x;
}

std::pair<std::size_t, std::size_t> chunk(std::size_t len, int n, int k) {
  const auto un = static_cast<std::size_t>(n);
  return {len * static_cast<std::size_t>(k) / un, len * static_cast<std::size_t>(k + 1) / un};
}

/// Serial reference for fp16/bf16: partial sums rounded by encode after each addition.
template <class C>
std::vector<float> reference_16bit(int n, std::size_t len) {
  C c;
  distopt::rng unused(0, 0, 0, distopt::purpose::user);
  std::vector<float> out(len);
  for (int k = 0; k < n; ++k) {
    const auto [b, e] = chunk(len, n, k);
    const std::size_t m = e - b;
    std::vector<float> sum(m), part(m);
    auto round_trip = [&](std::span<const float> x, std::span<float> y) {
      distopt::byte_buffer w;
      c.encode(x, w, unused);
      c.decode(w, y);
    };
    for (int j = 0; j < n; ++j) {
      const auto x = input((k + j) % n, len);
      round_trip(std::span(x).subspan(b, m), part);
      if (j == 0) {
        sum = part;
      } else {
        for (std::size_t i = 0; i < m; ++i) sum[i] += part[i];
        round_trip(std::vector<float>(sum), sum);
      }
    }
    for (std::size_t i = 0; i < m; ++i) out[b + i] = sum[i] / static_cast<float>(n);
  }
  return out;
}

/// Serial reference for random_k_shared: chunk k of round 0 uses the index stream of round k
/// (each rank encodes its chunks in order with one state); kept entries are scaled by m/kk.
std::vector<float> reference_shared(const compress::random_k_shared& c, int n, std::size_t len) {
  std::vector<float> out(len, 0.0f);
  for (int k = 0; k < n; ++k) {
    const auto [b, e] = chunk(len, n, k);
    const std::size_t m = e - b, kk = c.k(m);
    if (kk == 0) continue;
    const auto scale = static_cast<float>(double(m) / double(kk));
    const auto idx = c.indices(m, static_cast<std::uint32_t>(k));
    for (std::size_t j = 0; j < kk; ++j) {
      float sum = 0.0f;
      for (int r = 0; r < n; ++r) {
        const float v = input((k + r) % n, len)[b + idx[j]] * scale;
        sum = r == 0 ? v : sum + v;
      }
      out[b + idx[j]] = sum / static_cast<float>(n);
    }
  }
  return out;
}

bool bitwise_equal(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

/// Runs the encoded ring on n threads; checks every rank against `expected` bit for bit and the
/// bytes each rank sent against 2(n-1) chunk encodings (all chunks equal when n divides len).
template <class C>
void check_ring(C c, int n, std::size_t len, const std::vector<float>& expected) {
  CAPTURE(n);
  CAPTURE(len);
  distopt::run_threads(n,
                       [&](distopt::transport_ref t) {
                         distopt::statistics stats;
                         distopt::metered_transport meter(t, stats, 20s);
                         C mine = c;
                         auto state = distopt::make_compressor_state(mine, len);
                         distopt::rng g(1, static_cast<std::uint32_t>(t.rank()), 0, distopt::purpose::compression);
                         distopt::collective::encoded_ring_workspace ws;
                         auto x = input(t.rank(), len);
                         distopt::collective::ring_allreduce_encoded(meter, std::span<float>(x), mine, state, g, ws);
                         CHECK(bitwise_equal(x, expected));
                         if (len % static_cast<std::size_t>(n) == 0 && n > 1)
                           CHECK(stats.bytes_sent == 2 * static_cast<std::uint64_t>(n - 1) *
                                                         c.max_encoded_bytes(len / static_cast<std::size_t>(n)));
                       },
                       {.timeout = 20s});
}

}  // namespace

TEST_CASE("ring_allreduce_encoded: fp16 and bf16 equal the serial sum in the documented order, on every rank") {
  for (int n : {1, 2, 3, 4, 5})
    for (std::size_t len : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{1000}, std::size_t{65540}}) {
      check_ring(compress::fp16{}, n, len, reference_16bit<compress::fp16>(n, len));
      check_ring(compress::bf16{}, n, len, reference_16bit<compress::bf16>(n, len));
    }
}

TEST_CASE("ring_allreduce_encoded: random_k_shared sums the kept values of every rank, sends no indices") {
  const compress::random_k_shared c{0.05, 9};
  for (int n : {1, 2, 3, 4})
    for (std::size_t len : {std::size_t{1}, std::size_t{7}, std::size_t{4000}})
      check_ring(c, n, len, reference_shared(c, n, len));
}

TEST_CASE("ring_allreduce_encoded: ranks with different lengths get transport_error, not a wrong sum") {
  CHECK_THROWS_AS(distopt::run_threads(3,
                                       [](distopt::transport_ref t) {
                                         compress::fp16 c;
                                         distopt::detail::no_state none;
                                         distopt::rng g(1, 0, 0, distopt::purpose::compression);
                                         distopt::collective::encoded_ring_workspace ws;
                                         std::vector<float> x(t.rank() == 1 ? 301 : 300, 1.0f);
                                         distopt::collective::ring_allreduce_encoded(t, std::span<float>(x), c, none, g,
                                                                                     ws);
                                       },
                                       {.timeout = 5s}),
                  distopt::transport_error);
}

TEST_CASE("averager: a summable compressor sends 2(n-1)/n of its encoding per round, not (n-1) encodings") {
  const std::size_t len = 4096;
  const int n = 4;
  distopt::run_threads(n,
                       [&](distopt::transport_ref t) {
                         distopt::statistics stats;
                         distopt::metered_transport meter(t, stats, 20s);
                         compress::fp16 c;
                         distopt::collective::averager<compress::fp16> avg;
                         distopt::rng g(1, static_cast<std::uint32_t>(t.rank()), 0, distopt::purpose::compression);
                         auto x = input(t.rank(), len);
                         avg.average(meter, std::span<float>(x), c, g);
                         CHECK(bitwise_equal(x, reference_16bit<compress::fp16>(n, len)));
                         CHECK(stats.bytes_sent == 2 * (n - 1) * (2 * len / n));  // fp16: 2 bytes per float
                       },
                       {.timeout = 20s});
}
