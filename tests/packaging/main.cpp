// The program every consumer project under tests/packaging/ builds: it uses
// distopt as a user would and checks one run against a closed form, so each
// packaging test proves the library is found, compiles, links and computes.
//
// Two workers (threads) run distopt::algorithms::minibatch_sgd on
//   f_r(x) = 1/2 ||x - c_r||^2,   gradient g_r(x) = x - c_r,
// from x_0 = 0 with step eta and no momentum. Averaging the gradients gives
//   x_{k+1} = x_k - eta (x_k - cbar),  cbar = (c_0 + c_1) / 2,
// so x_k = cbar (1 - (1 - eta)^k) on both workers. Without the averaging each
// worker would approach its own c_r instead. Exits 1 on any mismatch.
//
// With DISTOPT_CONSUMER_DATA (the find_package consumer, when distopt::data is
// installed) it also runs data.cpp, which needs distopt::data's zlib.

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>

#include <distopt/distopt.hpp>

#ifdef DISTOPT_CONSUMER_DATA
bool data_component_works();  // data.cpp
#endif

int main() try {
  constexpr int workers = 2;
  constexpr int steps = 5;
  constexpr float eta = 0.25f;
  std::array<Eigen::VectorXf, workers> c;
  c[0] = Eigen::Vector3f(1.0f, 2.0f, 3.0f);
  c[1] = Eigen::Vector3f(5.0f, -2.0f, 0.0f);
  std::array<Eigen::VectorXf, workers> result;
  std::array<std::uint64_t, workers> rounds{};

  distopt::run_threads(
      workers,
      [&](distopt::transport_ref t) {
        const auto r = static_cast<std::size_t>(t.rank());
        distopt::algorithms::minibatch_sgd opt(t, Eigen::VectorXf::Zero(3), {.learning_rate = eta});
        for (int k = 0; k < steps; ++k) opt.step(opt.parameters() - c[r]);
        opt.finish();
        result[r] = opt.parameters();
        rounds[r] = opt.stats().rounds;
      },
      distopt::thread_options{.timeout = std::chrono::seconds(10)});

  const Eigen::VectorXf cbar = (c[0] + c[1]) / 2.0f;  // (3, 0, 1.5)
  const double shrink = 1.0 - std::pow(1.0 - static_cast<double>(eta), steps);
  int failures = 0;
  for (int r = 0; r < workers; ++r) {
    const auto i = static_cast<std::size_t>(r);
    for (Eigen::Index j = 0; j < cbar.size(); ++j) {
      const double expected = static_cast<double>(cbar[j]) * shrink;
      const double got = result[i][j];
      if (std::abs(got - expected) > 1e-5 * std::max(1.0, std::abs(expected))) {
        std::fprintf(stderr, "consumer: rank %d x[%ld] = %.9g, expected %.9g\n", r, static_cast<long>(j), got,
                     expected);
        ++failures;
      }
    }
    if (rounds[i] != steps) {
      std::fprintf(stderr, "consumer: rank %d took %llu rounds, expected %d\n", r,
                   static_cast<unsigned long long>(rounds[i]), steps);
      ++failures;
    }
  }
#ifdef DISTOPT_CONSUMER_DATA
  if (data_component_works())
    std::printf("consumer: distopt::data reads through zlib\n");
  else
    ++failures;
#endif
  if (failures != 0) return 1;
  std::printf("consumer: %d workers x %d steps of minibatch_sgd match the closed form\n", workers, steps);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "consumer: %s\n", e.what());
  return 1;
}
