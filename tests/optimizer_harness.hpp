#pragma once
// Shared by the optimizer tests: worlds of threads with a deadline, data shards as
// problem objects, every rank's result, and the closed-form least-squares solution.

#include <doctest/doctest.h>

#include <Eigen/Core>
#include <Eigen/QR>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <distopt/distopt.hpp>
#include <distopt/problems.hpp>

namespace harness {

using Eigen::Index;

// Every run has a deadline far below ctest's, so a hang fails instead of stalling.
inline constexpr std::chrono::milliseconds k_timeout = std::chrono::seconds(20);
inline const distopt::thread_options k_threads{.timeout = k_timeout};

inline bool same_bits(const Eigen::VectorXf& a, const Eigen::VectorXf& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}

inline double relative_error(const Eigen::VectorXf& x, const Eigen::VectorXd& ref) {
  return (x.cast<double>() - ref).norm() / ref.norm();
}

/// n standard normal floats from stream (seed, stream).
inline Eigen::VectorXf seeded_normal(Index n, std::uint64_t seed, std::uint32_t stream = 0) {
  distopt::rng g(seed, stream, 0, distopt::purpose::user);
  Eigen::VectorXf v(n);
  for (Index i = 0; i < n; ++i) v(i) = g.normal();
  return v;
}

// The rows `rows` of a data set.
inline distopt::problems::labelled_data take_rows(const distopt::problems::labelled_data& d,
                                                  const std::vector<std::size_t>& rows) {
  distopt::problems::labelled_data out{Eigen::MatrixXf(static_cast<Index>(rows.size()), d.features.cols()),
                                       Eigen::VectorXf(static_cast<Index>(rows.size()))};
  for (std::size_t k = 0; k < rows.size(); ++k) {
    out.features.row(static_cast<Index>(k)) = d.features.row(static_cast<Index>(rows[k]));
    out.targets(static_cast<Index>(k)) = d.targets(static_cast<Index>(rows[k]));
  }
  return out;
}

// Each worker's iid shard as its own problem object, made by make(features, targets).
template <class Make>
auto shards(const distopt::problems::labelled_data& d, int n, std::uint64_t seed, Make&& make) {
  std::vector<decltype(make(Eigen::MatrixXf{}, Eigen::VectorXf{}))> out;
  for (int r = 0; r < n; ++r) {
    auto part = take_rows(d, distopt::data::iid_shard(static_cast<std::size_t>(d.features.rows()), r, n, seed));
    out.push_back(make(std::move(part.features), std::move(part.targets)));
  }
  return out;
}

inline std::vector<distopt::problems::least_squares> ls_shards(const distopt::problems::labelled_data& d, int n,
                                                               std::uint64_t seed) {
  return shards(d, n, seed, [](Eigen::MatrixXf a, Eigen::VectorXf b) {
    return distopt::problems::least_squares(std::move(a), std::move(b));
  });
}

// The final parameters and statistics of every rank.
struct run_result {
  std::vector<Eigen::VectorXf> x;
  std::vector<distopt::statistics> stats;
};

// Runs n workers; each builds its optimizer with make(t) and calls body(rank, opt);
// gathers every rank's parameters and statistics under a mutex.
template <class Make, class Body>
run_result run_workers(int n, Make&& make, Body&& body, const distopt::thread_options& threads = k_threads) {
  run_result out;
  out.x.resize(static_cast<std::size_t>(n));
  out.stats.resize(static_cast<std::size_t>(n));
  std::mutex m;
  distopt::run_threads(
      n,
      [&](distopt::transport_ref t) {
        auto opt = make(t);
        body(t.rank(), opt);
        std::lock_guard lock(m);
        out.x[static_cast<std::size_t>(t.rank())] = opt.parameters();
        out.stats[static_cast<std::size_t>(t.rank())] = opt.stats();
      },
      threads);
  return out;
}

// The same, each rank constructing Opt(t, x0, o).
template <class Opt, class Body>
run_result run_workers(int n, const Eigen::VectorXf& x0, const distopt::options& o, Body&& body,
                       const distopt::thread_options& threads = k_threads) {
  return run_workers(
      n, [&](distopt::transport_ref t) { return Opt(t, x0, o); }, std::forward<Body>(body), threads);
}

// An optimizer's checkpoint as bytes, and loading it back (optimizer::save / load).
std::string saved(const auto& opt) {
  std::ostringstream out;
  opt.save(out);
  return out.str();
}

template <class Opt>
void load(Opt& opt, const std::string& bytes) {
  std::istringstream in(bytes);
  opt.load(in);
}

inline void check_all_ranks_identical(const run_result& r) {
  for (std::size_t k = 1; k < r.x.size(); ++k) {
    CAPTURE(k);
    CHECK(same_bits(r.x[k], r.x[0]));
  }
}

// Closed-form least squares in double: argmin ||A x - b||^2 via column-pivoted QR.
inline Eigen::VectorXd least_squares_solution(const distopt::problems::labelled_data& d) {
  return d.features.cast<double>().colPivHouseholderQr().solve(d.targets.cast<double>());
}

}  // namespace harness
