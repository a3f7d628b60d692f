// ctest-labels: numeric
// compress::power_sgd<Rank>: checked against Eigen's SVD (JacobiSVD) and Householder QR in double, and
// against the documented wire format, initial draw and ring-allreduce cost, never against
// its own output.
#include <doctest/doctest.h>

#include <Eigen/Cholesky>
#include <Eigen/QR>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <span>
#include <vector>

#include <distopt/algorithms.hpp>
#include <distopt/compress/power_sgd.hpp>
#include <distopt/core/concepts.hpp>
#include <distopt/core/traits.hpp>
#include <distopt/data/partition.hpp>
#include <distopt/problems/least_squares.hpp>
#include <distopt/problems/synthetic.hpp>
#include <distopt/transport/thread.hpp>

namespace {

using namespace distopt;
template <unsigned R>
using psgd = compress::power_sgd<R>;

static_assert(compressor<psgd<1>> && compressor<psgd<2>> && compressor<psgd<4>>);
static_assert(stateful_encoder<psgd<2>>);
static_assert(drives_own_collective_v<psgd<2>>);
static_assert(reduction_for_v<psgd<2>> == reduction::compressor_driven);
static_assert(!psgd<2>::unbiased && !is_summable_v<psgd<2>>);

Eigen::MatrixXd gaussian(Eigen::Index rows, Eigen::Index cols, rng g) {
  Eigen::MatrixXd m(rows, cols);
  for (Eigen::Index j = 0; j < cols; ++j)
    for (Eigen::Index i = 0; i < rows; ++i) m(i, j) = g.normal();
  return m;
}

std::vector<float> flat(const Eigen::MatrixXd& m) {
  std::vector<float> v(static_cast<std::size_t>(m.size()));
  Eigen::Map<Eigen::MatrixXf>(v.data(), m.rows(), m.cols()) = m.cast<float>();
  return v;
}

Eigen::MatrixXd as_matrix(std::span<const float> v, std::size_t offset, std::size_t rows, std::size_t cols) {
  return Eigen::Map<const Eigen::MatrixXf>(v.data() + offset, Eigen::Index(rows), Eigen::Index(cols)).cast<double>();
}

template <unsigned R>
std::vector<float> round_trip(const psgd<R>& c, std::span<const float> x, typename psgd<R>::state& s) {
  byte_buffer wire;
  rng g;
  c.encode(x, wire, g, s);
  std::vector<float> out(x.size());
  c.decode(wire, out);
  return out;
}

/// Error of the best rank-r approximation (Eckart-Young): sqrt(sum_{i > r} sigma_i^2).
double truncated_svd_error(const Eigen::MatrixXd& m, int r) {
  const Eigen::VectorXd s = Eigen::JacobiSVD<Eigen::MatrixXd>(m).singularValues();
  return std::sqrt(s.tail(s.size() - r).squaredNorm());
}

/// The documented initial Q of tensor t: normals from rng(seed, 0xFFFFFFFF, t, compression),
/// row-major (cols x R).
Eigen::MatrixXd initial_q(std::uint64_t seed, std::uint32_t t, Eigen::Index cols, int r) {
  rng g(seed, 0xFFFFFFFFu, t, purpose::compression);
  Eigen::MatrixXd q(cols, r);
  for (Eigen::Index i = 0; i < cols; ++i)
    for (int k = 0; k < r; ++k) q(i, k) = g.normal();
  return q;
}

/// Orthonormal basis of P's columns by Householder QR (a different algorithm from the
/// header's Gram-Schmidt; P Q^T depends only on the span, not on column signs).
Eigen::MatrixXd orthonormal(const Eigen::MatrixXd& p) {
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(p);
  return qr.householderQ() * Eigen::MatrixXd::Identity(p.rows(), p.cols());
}

}  // namespace

TEST_CASE("power_sgd: warm-started repetitions reach the truncated-SVD error (Eckart-Young)") {
  // A 60 x 40 matrix: rank-4 signal with singular values 20, 12, 8, 5 plus N(0, 0.1^2) noise.
  const Eigen::MatrixXd u = orthonormal(gaussian(60, 4, rng(1, 0, 0, purpose::user)));
  const Eigen::MatrixXd v = orthonormal(gaussian(40, 4, rng(2, 0, 0, purpose::user)));
  const Eigen::MatrixXd m = u * Eigen::Vector4d(20, 12, 8, 5).asDiagonal() * v.transpose() +
                            0.1 * gaussian(60, 40, rng(3, 0, 0, purpose::user));
  const auto x = flat(m);
  const Eigen::MatrixXd mf = as_matrix(x, 0, 60, 40);
  auto check = [&](auto c) {
    constexpr int r = decltype(c)::rank;
    CAPTURE(r);
    c.shapes = {{60, 40}};
    c.error_feedback = false;
    auto s = c.make_state(x.size());
    // Cold start: P P^T M is an orthogonal projection, so ||M - C(M)|| <= ||M||.
    const Eigen::MatrixXd first = as_matrix(round_trip(c, x, s), 0, 60, 40);
    CHECK((mf - first).norm() <= mf.norm());
    // 30 repetitions of subspace iteration: sigma_{r+1}/sigma_r <= 0.6 per step, 0.6^30 ~ 2e-7,
    // so the subspace is converged far below the 5% allowed (float rounding is ~1e-6).
    std::vector<float> out;
    for (int i = 0; i < 30; ++i) out = round_trip(c, x, s);
    const Eigen::MatrixXd approx = as_matrix(out, 0, 60, 40);
    const double err = (mf - approx).norm(), best = truncated_svd_error(mf, r);
    MESSAGE("rank " << r << ": error " << err << ", truncated SVD " << best);
    CHECK(err <= 1.05 * best);
    CHECK(err >= (1 - 1e-4) * best);  // no rank-r matrix beats the SVD
    // Pythagoras holds iff the approximation is an orthogonal projection of M (P orthonormal).
    CHECK(std::abs(mf.squaredNorm() - approx.squaredNorm() - err * err) <= 1e-5 * mf.squaredNorm());
  };
  check(psgd<1>{});
  check(psgd<2>{});
  check(psgd<4>{});
}

TEST_CASE("power_sgd: rank >= the true rank reconstructs exactly; raw tensors pass bit for bit") {
  // Layout: a 50 x 30 matrix of rank 2, a 7 x 1 bias and a 3 x 3 matrix (2 (3 + 3) >= 9: raw).
  const Eigen::MatrixXd low =
      gaussian(50, 2, rng(4, 0, 0, purpose::user)) * gaussian(30, 2, rng(5, 0, 0, purpose::user)).transpose();
  std::vector<float> x = flat(low);
  const auto bias = flat(gaussian(7, 1, rng(6, 0, 0, purpose::user)));
  const auto small = flat(gaussian(3, 3, rng(7, 0, 0, purpose::user)));
  x.insert(x.end(), bias.begin(), bias.end());
  x.insert(x.end(), small.begin(), small.end());
  auto check = [&](auto c) {
    CAPTURE(decltype(c)::rank);
    c.shapes = {{50, 30}, {7, 1}, {3, 3}};
    auto s = c.make_state(x.size());
    const auto out = round_trip(c, x, s);  // one cold step, with error feedback (memory starts at 0)
    const Eigen::MatrixXd m = as_matrix(x, 0, 50, 30);
    // Float rounding of P = M Q, Gram-Schmidt and Q = M^T P: a few ulps of max|M| per entry.
    CHECK((as_matrix(out, 0, 50, 30) - m).cwiseAbs().maxCoeff() <= 1e-5 * m.cwiseAbs().maxCoeff());
    CHECK(std::equal(out.begin() + 1500, out.end(), x.begin() + 1500));
  };
  check(psgd<2>{});
  check(psgd<4>{});
}

TEST_CASE("power_sgd: two-round average over 1-4 threads equals the algebra done in double") {
  // Tensors: 24 x 16 (compressed), a 16-bias (raw), 10 x 20 (compressed); 3 rounds with error
  // feedback, a different input on every rank and round.
  const layout shapes{{24, 16}, {16, 1}, {10, 20}};
  const std::size_t n = parameter_count(shapes);
  constexpr int rounds = 3;
  auto input = [&](int rank, int round) {
    return gaussian(Eigen::Index(n), 1, rng(40, std::uint32_t(rank), std::uint32_t(round), purpose::user));
  };
  for (int world = 1; world <= 4; ++world) {
    CAPTURE(world);
    std::vector<std::vector<std::vector<float>>> result(rounds, std::vector<std::vector<float>>(world));
    std::vector<std::vector<float>> memory(world);
    run_threads(world, [&](transport_ref t) {
      const psgd<2> c{.shapes = shapes, .seed = 11};
      auto s = c.make_state(n);
      rng g;
      for (int r = 0; r < rounds; ++r) {
        auto v = flat(input(t.rank(), r));
        c.average(t, v, s, g);
        result[r][std::size_t(t.rank())] = v;
      }
      memory[std::size_t(t.rank())] = s.memory;
    });
    // Reference: M_i = g_i + e_i; P = mean_i M_i Q; P <- orthonormal(P); Q = mean_i M_i^T P;
    // v = P Q^T; e_i = M_i - v. Raw tensors: the mean, and no memory.
    std::vector<Eigen::VectorXd> e(world, Eigen::VectorXd::Zero(Eigen::Index(n)));
    std::vector<Eigen::MatrixXd> q{initial_q(11, 0, 16, 2), Eigen::MatrixXd(), initial_q(11, 2, 20, 2)};
    double total_input = 0;
    for (int r = 0; r < rounds; ++r) {
      CAPTURE(r);
      std::vector<Eigen::VectorXd> m(world);
      for (int i = 0; i < world; ++i) m[i] = input(i, r) + e[i];
      Eigen::VectorXd expected = Eigen::VectorXd::Zero(Eigen::Index(n));
      std::size_t offset = 0;
      for (std::size_t t = 0; t < shapes.size(); ++t) {
        const auto rows = Eigen::Index(shapes[t].rows), cols = Eigen::Index(shapes[t].cols);
        auto mat = [&](int i) { return Eigen::Map<const Eigen::MatrixXd>(m[i].data() + offset, rows, cols); };
        Eigen::MatrixXd mean = Eigen::MatrixXd::Zero(rows, cols);
        for (int i = 0; i < world; ++i) mean += mat(i) / world;
        Eigen::Map<Eigen::MatrixXd> out(expected.data() + offset, rows, cols);
        if (cols == 1) {
          out = mean;
        } else {
          const Eigen::MatrixXd p = orthonormal(mean * q[t]);
          q[t] = mean.transpose() * p;
          out = p * q[t].transpose();
        }
        offset += shapes[t].rows * shapes[t].cols;
      }
      for (int i = 0; i < world; ++i) {
        e[i] = m[i] - expected;
        e[i].segment(384, 16).setZero();  // the raw bias is sent exactly: it keeps no memory
      }
      total_input += expected.cwiseAbs().maxCoeff();
      for (int i = 0; i < world; ++i) {
        CAPTURE(i);
        CHECK(result[r][i] == result[r][0]);  // bit-identical on every rank
        const Eigen::VectorXd got = as_matrix(result[r][i], 0, n, 1);
        // Float rounding through two products and Gram-Schmidt on well-conditioned random P.
        CHECK((got - expected).cwiseAbs().maxCoeff() <= 1e-4 * expected.cwiseAbs().maxCoeff());
      }
    }
    for (int i = 0; i < world; ++i)
      CHECK((as_matrix(memory[i], 0, n, 1) - e[i]).cwiseAbs().maxCoeff() <= 1e-4 * total_input);
  }
}

TEST_CASE("power_sgd: error feedback telescopes: sent + final memory = sum of inputs") {
  const psgd<2> c{.shapes = {{30, 20}, {5, 1}}};
  const std::size_t n = 605;
  auto s = c.make_state(n);
  Eigen::VectorXd inputs = Eigen::VectorXd::Zero(n), sent = Eigen::VectorXd::Zero(n);
  double scale = 0;
  for (int t = 0; t < 6; ++t) {
    const auto x = flat(gaussian(Eigen::Index(n), 1, rng(50, 0, std::uint32_t(t), purpose::user)));
    inputs += as_matrix(x, 0, n, 1);
    sent += as_matrix(round_trip(c, x, s), 0, n, 1);
    scale += as_matrix(x, 0, n, 1).cwiseAbs().maxCoeff();
  }
  const Eigen::VectorXd residual = sent + as_matrix(s.memory, 0, n, 1) - inputs;
  // Each round's e = M - P Q^T is exact up to float rounding of the entries (~1e-6 relative).
  CHECK(residual.cwiseAbs().maxCoeff() <= 1e-5 * scale);
  CHECK(as_matrix(s.memory, 600, 5, 1).isZero(0.0));   // the raw bias is sent exactly: no memory
  CHECK(as_matrix(s.memory, 0, 600, 1).norm() > 0.1);  // the matrix's memory holds what was dropped
}

TEST_CASE("power_sgd: encoded size as documented; default shape; max_encoded_bytes") {
  // Independent: rows = the largest divisor of n with rows^2 <= n.
  auto default_rows = [](std::size_t n) {
    std::size_t best = 1;
    for (std::size_t d = 1; d * d <= n; ++d)
      if (n % d == 0) best = d;
    return best;
  };
  auto expected = [](unsigned r, const layout& l) {
    std::size_t bytes = 12 + 8 * l.size();
    for (const auto& t : l) {
      const bool comp = t.rows > 1 && t.cols > 1 && r * (t.rows + t.cols) < t.rows * t.cols;
      bytes += 4 * (comp ? r * (t.rows + t.cols) : t.rows * t.cols);
    }
    return bytes;
  };
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{96}, std::size_t{100},
                        std::size_t{4096}, std::size_t{4099}, std::size_t{1} << 20}) {
    CAPTURE(n);
    const layout l = n == 0 ? layout{} : layout{{default_rows(n), n / default_rows(n)}};
    if (n > 0) {
      CHECK(psgd<2>::default_shape(n).rows == l[0].rows);
      CHECK(psgd<2>::default_shape(n).cols == l[0].cols);
    }
    const auto x = flat(gaussian(Eigen::Index(n), 1, rng(60, 0, 0, purpose::user)));
    psgd<2> c;
    auto s = c.make_state(n);
    byte_buffer wire;
    rng g;
    c.encode(x, wire, g, s);
    CHECK(wire.size() == expected(2, l));
    CHECK(c.max_encoded_bytes(n) == expected(2, l));
  }
  CHECK(psgd<2>::default_shape(4096 * 4096).rows == 4096);
  CHECK(psgd<2>{}.max_encoded_bytes(4096 * 4096) == 12 + 8 + 4 * 2 * 8192);
  const layout mlp{{128, 784}, {128, 1}, {10, 128}, {10, 1}};
  CHECK(psgd<4>{.shapes = mlp}.max_encoded_bytes(parameter_count(mlp)) == expected(4, mlp));
}

TEST_CASE("power_sgd: malformed encodings throw transport_error; bad configurations config_error") {
  const psgd<2> c{.shapes = {{12, 10}, {6, 1}, {2, 2}}};
  const std::size_t n = 130;
  const auto x = flat(gaussian(Eigen::Index(n), 1, rng(70, 0, 0, purpose::user)));
  auto s = c.make_state(n);
  byte_buffer wire;
  rng g;
  c.encode(x, wire, g, s);
  std::vector<float> out(n);
  c.decode(wire, out);
  for (std::size_t len = 0; len < wire.size(); ++len) {
    CAPTURE(len);
    CHECK_THROWS_AS(c.decode(std::span(wire.data(), len), out), transport_error);
  }
  auto longer = wire;
  longer.push_back(std::byte{0});
  CHECK_THROWS_AS(c.decode(longer, out), transport_error);
  std::vector<float> wrong(n + 1);
  CHECK_THROWS_AS(c.decode(wire, wrong), transport_error);
  CHECK_THROWS_AS(psgd<4>{}.decode(wire, out), transport_error);  // another rank
  auto with_field = [&](std::size_t offset, std::uint32_t value) {
    auto w = wire;
    std::memcpy(w.data() + offset, &value, 4);
    return w;
  };
  CHECK_THROWS_AS(c.decode(with_field(0, 125), out), transport_error);  // n
  CHECK_THROWS_AS(c.decode(with_field(4, 1), out), transport_error);    // rank
  CHECK_THROWS_AS(c.decode(with_field(8, 2), out), transport_error);    // tensor count
  CHECK_THROWS_AS(c.decode(with_field(8, 4), out), transport_error);
  CHECK_THROWS_AS(c.decode(with_field(8, 0xFFFFFFFF), out), transport_error);
  // Shapes other than this layout's: zero rows, 10 x 10, 12 x 2^32-1, and 10 x 12 (the same
  // floats and the same factor bytes as 12 x 10, so only the layout check can tell).
  CHECK_THROWS_AS(c.decode(with_field(12, 0), out), transport_error);
  CHECK_THROWS_AS(c.decode(with_field(12, 10), out), transport_error);
  CHECK_THROWS_AS(c.decode(with_field(16, 0xFFFFFFFF), out), transport_error);
  {
    auto w = with_field(12, 10);
    const std::uint32_t twelve = 12;
    std::memcpy(w.data() + 16, &twelve, 4);
    CHECK_THROWS_AS(c.decode(w, out), transport_error);
  }
  // Random bytes and bit flips: transport_error or a decode, nothing else (ASan/UBSan watch).
  rng noise(71, 0, 0, purpose::user);
  auto attempt = [&](std::span<const std::byte> bytes) {
    try {
      c.decode(bytes, out);
    } catch (const transport_error&) {
    }
  };
  for (std::size_t i = 0; i < 28; ++i) {
    auto w = wire;
    w[i] ^= std::byte{0xFF};
    attempt(w);
  }
  for (int trial = 0; trial < 200; ++trial) {
    byte_buffer bytes(noise.below(64));
    for (auto& b : bytes) b = static_cast<std::byte>(noise.next_u32());
    attempt(bytes);
  }

  // Configuration: layouts that do not cover n, zero dimensions, states of another size.
  CHECK_THROWS_AS(c.make_state(n + 1), config_error);
  CHECK_THROWS_AS(c.max_encoded_bytes(n - 1), config_error);
  const psgd<2> zero_rows{.shapes = {{0, 3}}};
  CHECK_THROWS_AS(zero_rows.make_state(0), config_error);
  auto other = psgd<2>{}.make_state(n + 1);
  byte_buffer w2;
  CHECK_THROWS_AS(c.encode(x, w2, g, other), config_error);
  auto no_ef = psgd<2>{.shapes = c.shapes, .error_feedback = false}.make_state(n);
  CHECK_THROWS_AS(c.encode(x, w2, g, no_ef), config_error);
  run_threads(1, [&](transport_ref t) {
    std::vector<float> v(n + 1);
    CHECK_THROWS_AS(c.average(t, v, s, g), config_error);
  });
  try {
    c.make_state(n + 1);
  } catch (const config_error& e) {
    CHECK(std::string(e.what()).find("compress::power_sgd") != std::string::npos);
  }
}

TEST_CASE("power_sgd in the optimizer: least squares reaches the optimum; 2 ring allreduces per round") {
  // 400 x 100 least squares, noisy targets (shards disagree at the optimum), split over 4 workers,
  // full-batch gradients, step 0.01. The 100 parameters are laid out as an 8 x 12 matrix
  // (compressed at rank 2) and a 4-bias (raw).
  // Why it reaches x*: the approximation depends on the workers only through the mean M, and
  // mean e follows single-worker error feedback on the mean gradient, whose fixed point has
  // mean gradient 0. Measured: ||x - x*|| = 0.094 after 1000 steps, 0.004 after 2000, 2e-4 after
  // 3000 (exact SGD's rate); 4000 steps with a 1e-3 relative tolerance leave float rounding room
  // (each worker's own e grows like t * (g_i - mean g), so rounding slowly rises).
  const problems::labelled_data d = problems::synthetic_regression(400, 100, 0.5f, 3);
  const Eigen::MatrixXd a = d.features.cast<double>();
  const Eigen::VectorXd x_star = (a.transpose() * a).ldlt().solve(a.transpose() * d.targets.cast<double>());
  const problems::least_squares global(d.features, d.targets);
  const double minimum = global.loss(x_star.cast<float>());
  constexpr int workers = 4, steps = 4000;
  std::vector<Eigen::VectorXf> finals(workers);
  std::vector<statistics> stats(workers);
  run_threads(workers, [&](transport_ref t) {
    const auto rows = data::iid_shard(400, t.rank(), workers, 1);
    Eigen::MatrixXf sa(Eigen::Index(rows.size()), 100);
    Eigen::VectorXf sb(Eigen::Index(rows.size()));
    for (std::size_t i = 0; i < rows.size(); ++i) {
      sa.row(Eigen::Index(i)) = d.features.row(Eigen::Index(rows[i]));
      sb(Eigen::Index(i)) = d.targets(Eigen::Index(rows[i]));
    }
    const problems::least_squares shard(sa, sb);
    algorithms::powersgd<2> opt(t, Eigen::VectorXf::Zero(100), {.learning_rate = 0.01f, .seed = 1},
                                psgd<2>{.shapes = {{8, 12}, {4, 1}}});
    Eigen::VectorXf grad;
    for (int s = 0; s < steps; ++s) {
      shard.gradient(opt.parameters(), grad);
      opt.step(grad);
    }
    finals[std::size_t(t.rank())] = opt.parameters();
    stats[std::size_t(t.rank())] = opt.stats();
  });
  const double dist = (finals[0].cast<double>() - x_star).norm();
  MESSAGE("||x - x*|| = " << dist << " of ||x*|| = " << x_star.norm() << "; loss " << global.loss(finals[0])
                          << ", minimum " << minimum);
  CHECK(dist <= 1e-3 * x_star.norm());
  CHECK(global.loss(finals[0]) <= 1.0001 * minimum);
  // Round 1 reduces P (8 x 2) and the bias (4): 20 floats; round 2 reduces Q (12 x 2): 24 floats.
  // Both divide by 4 ranks, so each rank sends 2 (n - 1) / n of each (ring allreduce), in
  // 2 (n - 1) messages per allreduce.
  const std::uint64_t per_round = 4 * (2 * 3 * 20 / 4 + 2 * 3 * 24 / 4);
  for (int i = 0; i < workers; ++i) {
    CAPTURE(i);
    CHECK(finals[i] == finals[0]);
    CHECK(stats[i].rounds == steps);
    CHECK(stats[i].bytes_sent == steps * per_round);
    CHECK(stats[i].messages_sent == steps * 2 * 2 * 3);
  }
}
