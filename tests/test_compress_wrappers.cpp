// The wrappers scaled<C> and ef21<C>, and the reference-based lattice<Bits>: the typed suite
// (tests/compressors/wrappers_spec.hpp) plus checks against closed forms, the papers' identities
// and exact least-squares optima.
#include "compressors/wrappers_spec.hpp"

#include <Eigen/Cholesky>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include <distopt/algorithms.hpp>
#include <distopt/collective/average.hpp>
#include <distopt/core/concepts.hpp>
#include <distopt/core/traits.hpp>
#include <distopt/data/partition.hpp>
#include <distopt/problems/least_squares.hpp>
#include <distopt/problems/synthetic.hpp>
#include <distopt/transport/thread.hpp>

TEST_CASE_TEMPLATE_INVOKE(round_trip, DISTOPT_WRAPPERS_BOUNDED, DISTOPT_LATTICES);
TEST_CASE_TEMPLATE_INVOKE(bound, DISTOPT_WRAPPERS_BOUNDED);
TEST_CASE_TEMPLATE_INVOKE(determinism, DISTOPT_WRAPPERS_BOUNDED, DISTOPT_LATTICES);
TEST_CASE_TEMPLATE_INVOKE(malformed, DISTOPT_WRAPPERS_BOUNDED, DISTOPT_LATTICES);

namespace dc = distopt::compress;
using namespace std::chrono_literals;

static_assert(distopt::compressor<dc::ef21<dc::top_k>>);
static_assert(distopt::stateful_encoder<dc::ef21<dc::top_k>>);
static_assert(distopt::reduction_for_v<dc::ef21<dc::top_k>> == distopt::reduction::gather_decode);
static_assert(distopt::reduction_for_v<dc::ef21<dc::identity>> == distopt::reduction::gather_decode);
static_assert(distopt::compressor<dc::scaled<dc::qsgd<4>>> && !dc::scaled<dc::qsgd<4>>::unbiased);
static_assert(distopt::compressor<dc::scaled<dc::identity>>);
static_assert(distopt::compressor<dc::lattice<8>> && dc::lattice<8>::unbiased);
static_assert(distopt::reduction_for_v<dc::lattice<8>> == distopt::reduction::gather_decode);

namespace {

std::vector<float> decode_all(const auto& c, const distopt::byte_buffer& wire, std::size_t n) {
  std::vector<float> out(n);
  c.decode(wire, out);
  return out;
}

void run4(auto&& fn) { distopt::run_threads(4, fn, {.timeout = 60s}); }

// Least squares split over 4 workers (iid rows, noisy targets), as in test_error_feedback_convergence,
// smaller (200 rows, 20 unknowns) so that it runs quickly under the sanitizers.
constexpr Eigen::Index ls_rows = 200, ls_dim = 20;
const distopt::problems::labelled_data ls_data = distopt::problems::synthetic_regression(ls_rows, ls_dim, 0.5f, 3);
const distopt::problems::least_squares ls_global(ls_data.features, ls_data.targets);

distopt::problems::least_squares ls_shard(int rank) {
  const auto rows = distopt::data::iid_shard(ls_rows, rank, 4, 1);
  Eigen::MatrixXf a(static_cast<Eigen::Index>(rows.size()), ls_dim);
  Eigen::VectorXf b(static_cast<Eigen::Index>(rows.size()));
  for (std::size_t i = 0; i < rows.size(); ++i) {
    a.row(static_cast<Eigen::Index>(i)) = ls_data.features.row(static_cast<Eigen::Index>(rows[i]));
    b(static_cast<Eigen::Index>(i)) = ls_data.targets(static_cast<Eigen::Index>(rows[i]));
  }
  return {a, b};
}

double ls_minimum() {
  const Eigen::MatrixXd a = ls_data.features.cast<double>();
  const Eigen::VectorXd x_star = (a.transpose() * a).ldlt().solve(a.transpose() * ls_data.targets.cast<double>());
  return ls_global.loss(x_star.cast<float>());
}

/// Final global loss of rank 0's parameters after `steps` full-batch steps on 4 workers.
template <class C>
double ls_final_loss(C c, int steps, float lr) {
  double loss = 0;
  std::mutex m;
  run4([&](distopt::transport_ref t) {
    const auto shard = ls_shard(t.rank());
    distopt::optimizer<C, distopt::topology::allreduce, distopt::staleness::synchronous,
                       distopt::local_steps::every_step>
        opt(t, Eigen::VectorXf::Zero(ls_dim), {.learning_rate = lr, .seed = 1}, c);
    Eigen::VectorXf g;
    for (int s = 0; s < steps; ++s) {
      shard.gradient(opt.parameters(), g);
      opt.step(g);
    }
    if (t.rank() == 0) {
      std::lock_guard lock(m);
      loss = ls_global.loss(opt.parameters());
    }
  });
  return loss;
}

}  // namespace

// ---- scaled<C> ------------------------------------------------------------------------------

TEST_CASE("scaled: the bytes are the inner compressor's, the decode is divided by 1 + omega") {
  // qsgd<4>, one bucket of d = 300: omega = min(d / 49, sqrt(d) / 7) (ALGORITHMS.md §5.2).
  const dc::qsgd<4> inner{.bucket = 512};
  const dc::scaled<dc::qsgd<4>> c{inner};
  const auto x = suite::make_input(300, suite::shape::gaussian, 2);
  const auto wire = suite::encode_one(c, x, 4, 0, 0);
  CHECK(wire == suite::encode_one(inner, x, 4, 0, 0));
  const double omega = std::min(300.0 / 49.0, std::sqrt(300.0) / 7.0);
  const auto plain = decode_all(inner, wire, x.size());
  const auto shrunk = decode_all(c, wire, x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    CHECK(double(shrunk[i]) == doctest::Approx(plain[i] / (1.0 + omega)).epsilon(1e-6));
  CHECK(c.delta(x) == doctest::Approx(1.0 / (1.0 + omega)));
  // identity: omega = 0, so scaled<identity> is exact.
  const dc::scaled<dc::identity> exact;
  CHECK(decode_all(exact, suite::encode_one(exact, x, 4, 0, 0), x.size()) == x);
}

TEST_CASE("scaled<random_k>: keeps k entries unscaled; E||C'(x) - x||^2 = (1 - k/n)||x||^2") {
  // omega = n/k - 1, so C'(x) = x on a uniform k-subset and 0 elsewhere: each entry survives with
  // probability k/n and the expected error is (1 - k/n)||x||^2 exactly (CHOCO's delta, with equality).
  const dc::scaled<dc::random_k> c{dc::random_k{0.1}};
  for (suite::shape s : suite::all_shapes) {
    const std::string shape_name = suite::name(s);
    CAPTURE(shape_name);
    const std::size_t n = 500, k = 50;
    const auto x = suite::make_input(n, s, 8);
    const double norm2 = suite::squared_norm(x);
    constexpr int draws = 2000;
    double err2 = 0, err4 = 0;
    std::size_t not_x = 0;
    for (int d = 0; d < draws; ++d) {
      const auto out = decode_all(c, suite::encode_one(c, x, 6, 0, static_cast<std::uint32_t>(d)), n);
      double e = 0;
      for (std::size_t i = 0; i < n; ++i) {
        e += (double(out[i]) - x[i]) * (double(out[i]) - x[i]);
        not_x += out[i] != 0.0f && std::abs(double(out[i]) - x[i]) > 1e-6 * std::abs(double(x[i]));
      }
      err2 += e;
      err4 += e * e;
    }
    const double mean = err2 / draws, sd = std::sqrt(std::max(0.0, err4 / draws - mean * mean) / draws);
    CHECK(not_x == 0);
    // The sample mean of 2000 draws lies within 5 standard errors of its expectation (CLT, < 1e-6 false alarms).
    CHECK(std::abs(mean - (1.0 - double(k) / n) * norm2) <= 5.0 * sd + 1e-6 * norm2);
  }
}

// ---- ef21<C> --------------------------------------------------------------------------------

TEST_CASE("ef21<identity> equals plain averaging exactly, round after round") {
  // Inputs are multiples of 1/8 below 2^10, so every sum, difference and division by 4 is exact
  // and the EF21 aggregate must equal the plain mean bit for bit.
  constexpr std::size_t n = 33;
  constexpr int rounds = 6;
  auto input = [](int rank, int round, std::size_t i) {
    return 0.125f * static_cast<float>((rank * 37 + round * 11 + static_cast<int>(i) * 5) % 97 - 48);
  };
  std::mutex m;
  std::vector<std::vector<int>> mismatch_count(4, std::vector<int>(rounds, -1));
  run4([&](distopt::transport_ref t) {
    distopt::collective::averager<dc::ef21<dc::identity>> avg;
    dc::ef21<dc::identity> c;
    for (int r = 0; r < rounds; ++r) {
      std::vector<float> v(n);
      for (std::size_t i = 0; i < n; ++i) v[i] = input(t.rank(), r, i);
      distopt::rng g(1, static_cast<std::uint32_t>(t.rank()), static_cast<std::uint32_t>(r),
                     distopt::purpose::compression);
      avg.average(t, v, c, g);
      int bad = 0;
      for (std::size_t i = 0; i < n; ++i) {
        double mean = 0;
        for (int k = 0; k < 4; ++k) mean += input(k, r, i);
        bad += v[i] != static_cast<float>(mean / 4);
      }
      std::lock_guard lock(m);
      mismatch_count[static_cast<std::size_t>(t.rank())][static_cast<std::size_t>(r)] = bad;
    }
  });
  for (const auto& per_rank : mismatch_count)
    for (int bad : per_rank) CHECK(bad == 0);
}

TEST_CASE("ef21: g_i is the sum of the transmitted changes and contracts towards x (telescoping)") {
  // Integer inputs keep every float operation exact. top_k is deterministic and delta = k/n, so
  // with a constant input x, ||x - g_i||^2 shrinks by at least (1 - k/n) per round (EF21, Lemma 1).
  dc::ef21<dc::top_k> c{dc::top_k{0.25}};
  constexpr std::size_t n = 16;
  auto s = c.make_state(n);
  distopt::rng g(3, 0, 0, distopt::purpose::user);
  std::vector<float> x(n), sent_sum(n, 0.0f), out(n);
  for (auto& v : x) v = static_cast<float>(static_cast<int>(g.below(201)) - 100);
  double gap = suite::squared_norm(x);
  for (int t = 0; t < 12; ++t) {
    distopt::byte_buffer wire(3, std::byte{9});  // encode appends after existing bytes
    c.encode(x, wire, g, s);
    CHECK(wire[0] == std::byte{9});
    c.decode(std::span(wire).subspan(3), out);
    for (std::size_t i = 0; i < n; ++i) sent_sum[i] += out[i];
    CHECK(s.local == sent_sum);
    double next = 0;
    for (std::size_t i = 0; i < n; ++i) next += (double(x[i]) - s.local[i]) * (double(x[i]) - s.local[i]);
    CHECK(next <= (1.0 - 0.25) * gap);
    gap = next;
  }
  CHECK(gap == 0.0);  // after n/k = 4 rounds of distinct top-4 picks every coordinate is sent
  auto wrong = c.make_state(n + 1);
  distopt::byte_buffer wire;
  CHECK_THROWS_AS(c.encode(x, wire, g, wrong), distopt::config_error);
}

TEST_CASE("ef21: every rank's result is the mean of the workers' g_i, identical on all ranks") {
  // Integer inputs: the g_i are integers and their mean a multiple of 1/4, all exact in float.
  constexpr std::size_t n = 40;
  std::vector<std::vector<float>> local(4), result(4);
  std::mutex m;
  run4([&](distopt::transport_ref t) {
    dc::ef21<dc::top_k> c{dc::top_k{0.1}};
    distopt::collective::averager<dc::ef21<dc::top_k>> avg;
    distopt::rng data(10, static_cast<std::uint32_t>(t.rank()), 0, distopt::purpose::user);
    std::vector<float> v(n);
    for (int round = 0; round < 9; ++round) {
      for (auto& e : v) e = static_cast<float>(static_cast<int>(data.below(41)) - 20);
      distopt::rng g(1, static_cast<std::uint32_t>(t.rank()), static_cast<std::uint32_t>(round),
                     distopt::purpose::compression);
      avg.average(t, v, c, g);
    }
    std::lock_guard lock(m);
    local[static_cast<std::size_t>(t.rank())] = avg.state()->local;
    result[static_cast<std::size_t>(t.rank())] = v;
  });
  std::size_t off = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double mean = (double(local[0][i]) + local[1][i] + local[2][i] + local[3][i]) / 4;
    for (std::size_t r = 0; r < 4; ++r) off += double(result[r][i]) != mean;
  }
  CHECK(off == 0);
}

TEST_CASE("ef21<top_k> reaches the least-squares minimum that exact SGD reaches") {
  // Full gradients: EF21 converges to the optimum itself, not to a neighbourhood (EF21, Theorem 2).
  // Step 0.02 is inside EF21's bound 1 / (L + L~ sqrt(beta / theta)) for top-10% (delta = 0.1:
  // theta = 1 - sqrt(0.9), sqrt(beta/theta) = 18.5; L_i ~ (1 + sqrt(20/50))^2 = 2.6 for the
  // 50 x 20 shards, so the bound is ~1/51 = 0.0196). Tolerance: the exact run's own, 1e-4 relative.
  const double minimum = ls_minimum();
  const double exact = ls_final_loss(dc::identity{}, 3000, 0.02f);
  const double ef21 = ls_final_loss(dc::ef21{dc::top_k{0.1}}, 3000, 0.02f);
  const double plain = ls_final_loss(dc::top_k{0.1}, 3000, 0.02f);
  MESSAGE("final loss: minimum " << minimum << ", exact SGD " << exact << ", EF21 top-10% " << ef21
                                 << ", top-10% without EF21 " << plain << "; relative excess of EF21 "
                                 << (ef21 - minimum) / minimum);
  CHECK(exact <= 1.0001 * minimum);
  CHECK(ef21 <= 1.0001 * minimum);
  CHECK(plain >= 1.05 * minimum);  // the same compressor without EF21 stalls above (paper-1 claim)
}

TEST_CASE("algorithms::ef21_sgd is the optimizer over ef21<top_k> with allreduce") {
  static_assert(std::same_as<distopt::algorithms::ef21_sgd<>::compressor_type, dc::ef21<dc::top_k>>);
  static_assert(std::same_as<distopt::algorithms::ef21_sgd<dc::scaled<dc::qsgd<4>>>::compressor_type,
                             dc::ef21<dc::scaled<dc::qsgd<4>>>>);
  // Every rank ends with the same parameters (all apply the same aggregate).
  std::vector<Eigen::VectorXf> end(4);
  std::mutex m;
  run4([&](distopt::transport_ref t) {
    const auto shard = ls_shard(t.rank());
    distopt::algorithms::ef21_sgd<> opt(t, Eigen::VectorXf::Zero(ls_dim), {.learning_rate = 0.01f},
                                        dc::ef21{dc::top_k{0.05}});
    Eigen::VectorXf g;
    for (int s = 0; s < 50; ++s) {
      shard.gradient(opt.parameters(), g);
      opt.step(g);
    }
    std::lock_guard lock(m);
    end[static_cast<std::size_t>(t.rank())] = opt.parameters();
  });
  for (std::size_t r = 1; r < 4; ++r) CHECK(end[r] == end[0]);
  CHECK(ls_global.loss(end[0]) < ls_global.loss(Eigen::VectorXf::Zero(ls_dim)));
}

// ---- lattice<Bits> --------------------------------------------------------------------------

TEST_CASE("lattice: dithered rounding takes the two neighbouring lattice points with probability frac(x/s)") {
  // side 0.25 (x / s exact in float). For p = frac(x/s): the upper point with probability p, the
  // mean within 5 standard errors of x, E (C - x)^2 = s^2 p (1 - p) within 5 standard errors.
  const dc::lattice<8> c{.side = 0.25f};
  const std::vector<float> x = {0.3f, -0.3f, 0.0f, 0.25f, -1.0f, 7.9f, -12.06f, 0.001f, 31.7f};
  const double s = 0.25;
  constexpr int draws = 20000;
  std::vector<int> up(x.size(), 0), other(x.size(), 0);
  std::vector<double> sum(x.size(), 0), err2(x.size(), 0);
  double worst = 0;
  for (int d = 0; d < draws; ++d) {
    const auto out = decode_all(c, suite::encode_one(c, x, 12, 0, static_cast<std::uint32_t>(d)), x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double lo = s * std::floor(x[i] / s);
      up[i] += out[i] == static_cast<float>(lo + s) && lo + s != x[i];
      other[i] += out[i] != static_cast<float>(lo) && out[i] != static_cast<float>(lo + s);
      sum[i] += out[i];
      err2[i] += (double(out[i]) - x[i]) * (double(out[i]) - x[i]);
      worst = std::max(worst, std::abs(double(out[i]) - x[i]));
    }
  }
  CHECK(worst < s);
  for (std::size_t i = 0; i < x.size(); ++i) {
    CAPTURE(x[i]);
    const double p = double(x[i]) / s - std::floor(double(x[i]) / s);
    const double se = std::sqrt(p * (1 - p) / draws);
    CHECK(other[i] == 0);
    CHECK(std::abs(double(up[i]) / draws - p) <= 5 * se + 1e-9);
    CHECK(std::abs(sum[i] / draws - x[i]) <= 5 * s * se + 1e-9);
    // (C - x)^2 takes two values; its variance is below s^4/16, so its mean's standard error below s^2 / (4
    // sqrt(draws)).
    CHECK(std::abs(err2[i] / draws - s * s * p * (1 - p)) <= 5 * s * s / (4 * std::sqrt(double(draws))) + 1e-12);
    CHECK(err2[i] / draws <= s * s / 4 * (1 + 5 / std::sqrt(double(draws))));
  }
}

TEST_CASE("lattice: E||C(x) - x||^2 = s^2 sum p_i(1 - p_i) <= n s^2 / 4 on every input shape") {
  // side: the power of two at or above max|x| / 100, so that radius() = 127 s > max|x| (the
  // reference-0 decode is exact) and x / s is exact in float.
  constexpr std::size_t n = 4096;
  constexpr int draws = 50;
  for (suite::shape sh : suite::all_shapes) {
    const std::string shape_name = suite::name(sh);
    CAPTURE(shape_name);
    const auto x = suite::make_input(n, sh, 14);
    float max_abs = 0;
    for (float v : x) max_abs = std::max(max_abs, std::abs(v));
    const double s = std::exp2(std::ceil(std::log2(max_abs / 100.0)));
    const dc::lattice<8> c{.side = static_cast<float>(s)};
    double expected = 0;
    for (float v : x) {
      const double t = double(v) / s, p = t - std::floor(t);
      expected += s * s * p * (1 - p);
    }
    double err2 = 0, worst = 0;
    for (int d = 0; d < draws; ++d) {
      const auto out = decode_all(c, suite::encode_one(c, x, 2, 1, static_cast<std::uint32_t>(d)), n);
      for (std::size_t i = 0; i < n; ++i) {
        err2 += (double(out[i]) - x[i]) * (double(out[i]) - x[i]);
        worst = std::max(worst, std::abs(double(out[i]) - x[i]));
      }
    }
    err2 /= draws;
    CHECK(worst < s);
    // Per draw the error is a sum of n independent terms each of variance <= s^4/16, so the mean of
    // 50 draws has standard error <= sqrt(n / 50) s^2 / 4.
    CHECK(std::abs(err2 - expected) <= 5 * std::sqrt(double(n) / draws) * s * s / 4 + 1e-9 * s * s);
    CHECK(expected <= n * s * s / 4);
  }
}

TEST_CASE("lattice: a reference near x decodes exactly far from 0; the reference 0 is refused") {
  // Models near 1000 with side 0.01 and 8 bits: radius() = 127 * 0.01 = 1.27. References within
  // 1.2 of x give exactly the dithered point (the decode with x itself as the reference); the
  // reference 0 is ~1000 away, so it would give that point shifted by nonzero multiples of q s = 2.56:
  // the check refuses it.
  const dc::lattice<8> c{.side = 0.01f};
  CHECK(c.radius() == doctest::Approx(1.27));
  distopt::rng g(21, 0, 0, distopt::purpose::user);
  constexpr std::size_t n = 1000;
  std::vector<float> x(n), ref(n);
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = 1000.0f + 3.0f * g.normal();
    ref[i] = x[i] + 1.2f * (2.0f * g.uniform() - 1.0f);
  }
  const auto wire = suite::encode_one(c, x, 7, 0, 0);
  CHECK(wire.size() == 12 + n);
  std::vector<float> exact(n), near(n), from_zero(n);
  c.decode(wire, x, exact);
  c.decode(wire, ref, near);
  CHECK_THROWS_WITH_AS(c.decode(wire, from_zero), doctest::Contains("radius() = 1.27"), distopt::transport_error);
  CHECK(std::memcmp(exact.data(), near.data(), n * sizeof(float)) == 0);
  std::size_t far = 0;
  for (std::size_t i = 0; i < n; ++i)
    far += std::abs(double(exact[i]) - x[i]) >= 0.01 + 1e-4;  // < s, plus float rounding near 1000
  CHECK(far == 0);
  // In place: the reference buffer may receive the decode.
  std::vector<float> inplace = ref;
  c.decode(wire, inplace, inplace);
  CHECK(inplace == near);
}

TEST_CASE("lattice: one coordinate out of the radius is refused, never decoded to a wrong point") {
  // Side 0.01, q = 256: radius() = 1.27, q s = 2.56. The decoded z_j is the integer congruent to the
  // sent one closest to ref_j / s, and the sent z_j is within one step of x_j / s: a displacement
  // below radius() = (q/2 - 1) s decodes exactly, one above (q/2 + 1) s = radius() + 2 s surely
  // wraps. A single wrap always changes the check (file comment), so every case below is certain.
  const dc::lattice<8> c{.side = 0.01f};
  distopt::rng g(5, 0, 0, distopt::purpose::user);
  constexpr std::size_t n = 600;  // three chunks of the kernels
  std::vector<float> x(n), exact(n), out(n);
  for (auto& v : x) v = 10.0f + g.normal();
  const auto wire = suite::encode_one(c, x, 3, 0, 0);
  c.decode(wire, x, exact);
  const auto q_s = float(c.levels) * c.side, outside = float(c.radius()) + 2.1f * c.side;
  for (std::size_t j : {std::size_t{0}, std::size_t{255}, std::size_t{256}, n - 1}) {
    for (float sign : {1.0f, -1.0f}) {
      CAPTURE(j);
      CAPTURE(sign);
      auto ref = x;
      ref[j] = x[j] + sign * 0.99f * float(c.radius());
      c.decode(wire, ref, out);
      CHECK(out == exact);
      for (float d : {q_s, outside}) {
        CAPTURE(d);
        ref[j] = x[j] + sign * d;
        CHECK_THROWS_WITH_AS(c.decode(wire, ref, out), doctest::Contains("farther than radius() = 1.27"),
                             distopt::transport_error);
      }
    }
  }
  // The reference 0: the same with x_j itself out of the radius.
  for (float sign : {1.0f, -1.0f}) {
    CAPTURE(sign);
    std::vector<float> small(n);
    for (auto& v : small) v = 0.1f * g.normal();
    small[300] = sign * outside;
    CHECK_THROWS_WITH_AS(c.decode(suite::encode_one(c, small, 4, 0, 0), out), doctest::Contains("radius() = 1.27"),
                         distopt::transport_error);
    small[300] = sign * 0.99f * float(c.radius());
    c.decode(suite::encode_one(c, small, 4, 0, 0), out);
    CHECK(std::abs(out[300] - small[300]) < c.side);
  }
}

TEST_CASE("lattice: 1000 random wrap patterns are all refused") {
  // Each trial pushes a random set of coordinates of the reference (half the trials 1 to 4 of them,
  // half up to all 600) out by random nonzero multiples m_i of q s, so the decode gives z_i + m_i q
  // there. One wrap is always detected; several cancel in the check only if
  // sum_i m_i w_i = 0 mod 2^(32 - 8), probability about 2^-24 per pattern, so that some of the 1000
  // trials goes undetected has probability below 1000 * 2^-24 < 1e-4 (and the seed is fixed).
  const dc::lattice<8> c{.side = 0.01f};
  distopt::rng g(6, 0, 0, distopt::purpose::user);
  constexpr std::size_t n = 600;
  std::vector<float> x(n), out(n);
  for (auto& v : x) v = g.normal();
  const auto wire = suite::encode_one(c, x, 8, 0, 0);
  const float q_s = float(c.levels) * c.side;
  std::vector<std::size_t> order(n);
  std::size_t undetected = 0;
  for (int trial = 0; trial < 1000; ++trial) {
    for (std::size_t i = 0; i < n; ++i) order[i] = i;
    const std::size_t k = 1 + g.below(trial % 2 ? 4 : std::uint32_t{n});
    auto ref = x;
    for (std::size_t j = 0; j < k; ++j) {
      std::swap(order[j], order[j + g.below(static_cast<std::uint32_t>(n - j))]);
      const auto m = static_cast<float>(1 + g.below(3)) * (g.below(2) ? 1.0f : -1.0f);
      ref[order[j]] += m * q_s;
    }
    try {
      c.decode(wire, ref, out);
      ++undetected;
    } catch (const distopt::transport_error&) {
    }
  }
  CHECK(undetected == 0);
}

TEST_CASE("lattice: the portable and the SIMD kernels give identical bytes and values") {
  namespace q = dc::detail::quantize;
  for (std::size_t n : {std::size_t{1}, std::size_t{31}, std::size_t{1000}, std::size_t{70001}}) {
    CAPTURE(n);
    const auto x = suite::make_input(n, suite::shape::gaussian, 5);
    std::vector<float> ref(n);
    for (std::size_t i = 0; i < n; ++i) ref[i] = x[i] + 0.01f * static_cast<float>(i % 7);
    const dc::lattice<5> c{.side = 0.5f};
    q::kernel_isa_limit = q::kernel_isa::portable;
    const auto wire = suite::encode_one(c, x, 8, 3, 2);
    std::vector<float> out(n), out_ref(n);
    c.decode(wire, out);
    c.decode(wire, ref, out_ref);
    for (q::kernel_isa isa : {q::kernel_isa::avx2, q::kernel_isa::avx512}) {
      if (isa > q::best_kernel_isa()) continue;
      CAPTURE(static_cast<int>(isa));
      q::kernel_isa_limit = isa;
      CHECK(suite::encode_one(c, x, 8, 3, 2) == wire);
      std::vector<float> simd(n), simd_ref(n);
      c.decode(wire, simd);
      c.decode(wire, ref, simd_ref);
      CHECK(std::memcmp(simd.data(), out.data(), n * sizeof(float)) == 0);
      CHECK(std::memcmp(simd_ref.data(), out_ref.data(), n * sizeof(float)) == 0);
    }
    q::kernel_isa_limit = q::kernel_isa::avx512;
  }
}

TEST_CASE("lattice: bad configurations and malformed encodings are refused") {
  distopt::rng g;
  distopt::byte_buffer wire;
  const std::vector<float> x = {0.01f, -0.02f, 0.05f};
  CHECK_THROWS_AS(dc::lattice<8>{.side = 0.0f}.encode(x, wire, g), distopt::config_error);
  CHECK_THROWS_AS(dc::lattice<8>{.side = -1.0f}.encode(x, wire, g), distopt::config_error);
  CHECK_THROWS_AS(dc::lattice<8>{.side = std::nanf("")}.encode(x, wire, g), distopt::config_error);
  const std::vector<float> bad = {0.0f, std::numeric_limits<float>::infinity()};
  CHECK_THROWS_AS(dc::lattice<8>{}.encode(bad, wire, g), distopt::numeric_error);
  const std::vector<float> huge = {1e5f};  // 1e5 / 1e-3 > 2^24
  CHECK_THROWS_AS(dc::lattice<8>{}.encode(huge, wire, g), distopt::numeric_error);
  CHECK(wire.empty());  // a failed encode leaves the buffer as it was

  const dc::lattice<4> c{.side = 0.125f};
  c.encode(x, wire, g);
  REQUIRE(wire.size() == 12 + 2);
  std::vector<float> out(3), ref(3, 0.0f);
  for (float side : {0.0f, -0.125f, std::nanf(""), std::numeric_limits<float>::infinity(), 1e-40f, 1e38f}) {
    CAPTURE(side);
    auto mutated = wire;
    std::memcpy(mutated.data() + 4, &side, 4);
    CHECK_THROWS_AS(c.decode(mutated, out), distopt::transport_error);
    CHECK_THROWS_AS(c.decode(mutated, ref, out), distopt::transport_error);
  }
  auto padded = wire;
  padded.back() |= std::byte{0xF0};  // 3 codes of 4 bits: the top half of the second byte is padding
  CHECK_THROWS_AS(c.decode(padded, out), distopt::transport_error);
  // A corrupt check, or a corrupt code (a single changed z_i, as a wrap): refused by the check.
  for (std::size_t at : {std::size_t{8}, std::size_t{11}, std::size_t{12}}) {
    CAPTURE(at);
    auto corrupt = wire;
    corrupt[at] ^= std::byte{0x01};
    CHECK_THROWS_AS(c.decode(corrupt, out), distopt::transport_error);
    CHECK_THROWS_AS(c.decode(corrupt, ref, out), distopt::transport_error);
  }
  std::vector<float> short_ref(2);
  CHECK_THROWS_AS(c.decode(wire, short_ref, out), distopt::config_error);
  const std::vector<float> nan_ref = {0.0f, std::nanf(""), 0.0f};
  CHECK_THROWS_AS(c.decode(wire, nan_ref, out), distopt::numeric_error);
  const std::vector<float> far_ref = {3e6f, 0.0f, 0.0f};  // 3e6 / 0.125 > 2^24
  CHECK_THROWS_AS(c.decode(wire, far_ref, out), distopt::transport_error);
}

TEST_CASE("lattice<8> in the optimizer with allreduce: a small-gradient least-squares run converges") {
  // The concept decode uses the reference 0, so every gradient entry must stay within radius():
  // side = 4 max|grad_i(x0)| / 127 gives a radius of 4x the largest initial shard gradient entry.
  // Noise: each averaged gradient entry has variance <= s^2/4 / 4 (four independent ditherings), so
  // constant-step SGD on the quadratic settles at an expected excess loss
  // (1/2) eta sigma^2 tr((2I - eta H)^-1) <= eta d s^2 / 32 for eta L <= 1. The check allows
  // 20x that (Markov: >= 95%) on top of the exact run's own excess.
  float max_grad = 0;
  for (int r = 0; r < 4; ++r) {
    Eigen::VectorXf grad;
    ls_shard(r).gradient(Eigen::VectorXf::Zero(ls_dim), grad);
    max_grad = std::max(max_grad, grad.cwiseAbs().maxCoeff());
  }
  const float side = 4 * max_grad / 127;
  const float lr = 0.02f;
  const double minimum = ls_minimum();
  const double exact = ls_final_loss(dc::identity{}, 2000, lr);
  const double lat = ls_final_loss(dc::lattice<8>{.side = side}, 2000, lr);
  const double allowed = 20.0 * lr * double(ls_dim) * side * side / 32;
  MESSAGE("side " << side << ": final loss: minimum " << minimum << ", exact SGD " << exact << ", lattice<8> " << lat
                  << " (allowed excess over exact " << allowed << ")");
  CHECK(lat - minimum <= (exact - minimum) + allowed);
  CHECK(lat < 0.1 * ls_global.loss(Eigen::VectorXf::Zero(ls_dim)));
}

namespace {
// ||C(x) - x||^2 / ||x||^2 for one draw. Not inlined: GCC 12 warns (-Warray-bounds) about the
// SIMD paths of sign encoding when it sees a constant 8-entry input, paths that never run there.
template <class C>
[[gnu::noinline]] double error_ratio(const C& c, const std::vector<float>& x) {
  distopt::byte_buffer wire;
  distopt::rng g(3, 0, 0, distopt::purpose::compression);
  c.encode(x, wire, g);
  std::vector<float> out(x.size());
  c.decode(wire, out);
  double e = 0, s = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    e += (double(out[i]) - x[i]) * (double(out[i]) - x[i]);
    s += double(x[i]) * x[i];
  }
  return e / s;
}
}  // namespace

TEST_CASE("delta_bound: the contraction each compressor guarantees on n entries, from its formula") {
  // Closed forms (ALGORITHMS.md §5), each met with equality by an input of n entries.
  constexpr std::size_t n = 1000;
  // top_k: k / n, met by a constant vector.
  CHECK(dc::delta_bound(dc::top_k{0.05}, n) == doctest::Approx(0.05));
  CHECK(error_ratio(dc::top_k{0.05}, std::vector<float>(n, 1.0f)) == doctest::Approx(1.0 - 0.05));
  CHECK(dc::delta_bound(dc::random_k_biased{0.05}, n) == doctest::Approx(0.05));
  // scaled_sign and one_bit: 1 / (entries per bucket), met by e_1 in a bucket of 8.
  std::vector<float> e1(8, 0.0f);
  e1[0] = 1.0f;
  CHECK(dc::delta_bound(dc::scaled_sign{8}, n) == doctest::Approx(1.0 / 8));
  CHECK(error_ratio(dc::scaled_sign{8}, e1) == doctest::Approx(1.0 - 1.0 / 8));
  CHECK(dc::delta_bound(dc::one_bit{8}, n) == doctest::Approx(1.0 / 8));
  CHECK(error_ratio(dc::one_bit{8}, e1) == doctest::Approx(1.0 - 1.0 / 8));
  CHECK(dc::delta_bound(dc::scaled_sign{0}, n) == doctest::Approx(1.0 / n));
  CHECK(dc::delta_bound(dc::scaled_sign{512}, 100) == doctest::Approx(1.0 / 100));  // one short bucket
  // scaled<qsgd<4>>: 1 / (1 + omega), omega = min(d / s^2, sqrt(d) / s), s = 7, d = min(n, 512).
  const double omega4 = std::min(512.0 / 49.0, std::sqrt(512.0) / 7.0);
  CHECK(dc::delta_bound(dc::scaled<dc::qsgd<4>>{}, n) == doctest::Approx(1.0 / (1.0 + omega4)));
  // Unbiased with omega < 1: 1 - omega (qsgd<8>, s = 127, d = 200); omega >= 1: none.
  CHECK(dc::delta_bound(dc::qsgd<8>{}, 200) ==
        doctest::Approx(1.0 - std::min(200.0 / (127.0 * 127.0), std::sqrt(200.0) / 127.0)));
  CHECK(dc::delta_bound(dc::qsgd<4>{}, n) == 0.0);
  CHECK(dc::delta_bound(dc::identity{}, n) == 1.0);
  // error_feedback<C>: C's. No relative guarantee: sign, threshold, rounding, fp16.
  CHECK(dc::delta_bound(dc::error_feedback{dc::top_k{0.05}}, n) == doctest::Approx(0.05));
  CHECK(dc::delta_bound(dc::sign{}, n) == 0.0);
  CHECK(dc::delta_bound(dc::threshold{}, n) == 0.0);
  CHECK(dc::delta_bound(dc::rounding{}, n) == 0.0);
  CHECK(dc::delta_bound(dc::fp16{}, n) == 0.0);
}
