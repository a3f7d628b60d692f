// optimizer::step of algorithms::minibatch_sgd (identity / allreduce / synchronous /
// every_step) against a hand-written loop doing the same arithmetic: the gradient
// averaged in place by the same ring_allreduce (reduce_op::mean), then x -= lr * g.
// 1 and 2 workers on the thread transport; 64K, 1M and 16M floats. The difference
// is what the optimizer costs over the communication and arithmetic it performs;
// hand_loop_checked also checks the gradient for Inf/NaN before communicating, as
// step() must, so step vs hand_loop_checked is the cost of the abstraction alone.
//
// The workers are threads that live for the whole benchmark run (lock_step.hpp).
// Buffers are touched and reused. bytes_per_second counts the model bytes per step.
// Both sides hold their buffers alike (Eigen vectors, x copied from x0 as the optimizer
// copies it): at 1M floats, where the step is memory-bound, the hand loop over fresh
// std::vectors measured 18-21 % faster than over these, with identical instructions —
// placement of the buffers, not the code, which would otherwise show as the abstraction's cost.
//
//   bench_optimizer --benchmark_repetitions=3 --benchmark_report_aggregates_only=true

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "distopt/algorithms.hpp"
#include "distopt/collective/ring_allreduce.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/transport/thread.hpp"
#include "lock_step.hpp"
#include "reference.hpp"

namespace {

namespace dc = distopt::collective;

constexpr float learning_rate = 0.01f;

float gradient_value(int rank) { return 1e-3f * static_cast<float>(rank + 1); }

void optimizer_step(benchmark::State& st, int workers, std::size_t floats) {
  distopt::run_threads(workers, [&](distopt::transport_ref t) {
    const Eigen::VectorXf x0 = Eigen::VectorXf::Zero(static_cast<Eigen::Index>(floats));
    const Eigen::VectorXf g = Eigen::VectorXf::Constant(static_cast<Eigen::Index>(floats), gradient_value(t.rank()));
    distopt::algorithms::minibatch_sgd opt(t, x0, {.learning_rate = learning_rate});
    distopt_bench::lock_step(st, t, [&] {
      opt.step(g);
      benchmark::DoNotOptimize(opt.parameters().data());
    });
  });
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * floats * sizeof(float)));
}

/// True iff no entry is Inf or NaN (exponent bits all ones): one read-only pass,
/// vectorised, with independent accumulators (as optimizer::step's check).
bool all_finite(const Eigen::VectorXf& g) {
  auto flag = [](float v) { return (std::bit_cast<std::uint32_t>(v) & 0x7f800000u) + 0x00800000u; };
  constexpr std::size_t lanes = 16;
  std::uint32_t flags[lanes] = {};
  std::size_t i = 0;
  const auto n = static_cast<std::size_t>(g.size());
  const float* in = g.data();
  for (; i + lanes <= n; i += lanes)
    for (std::size_t j = 0; j < lanes; ++j) flags[j] |= flag(in[i + j]);
  std::uint32_t any = 0;
  for (; i < n; ++i) any |= flag(in[i]);
  for (const std::uint32_t f : flags) any |= f;
  return (any & 0x80000000u) == 0;
}

/// The hand loop; `checked` adds the finiteness check that optimizer::step must do
/// before communicating, so the difference to the step is the cost of the abstraction.
/// Its buffers are allocated as optimizer_step's are (see the top of the file).
void hand_loop(benchmark::State& st, int workers, std::size_t floats, bool checked) {
  distopt::run_threads(workers, [&](distopt::transport_ref t) {
    const Eigen::VectorXf x0 = Eigen::VectorXf::Zero(static_cast<Eigen::Index>(floats));
    Eigen::VectorXf g = Eigen::VectorXf::Constant(static_cast<Eigen::Index>(floats), gradient_value(t.rank()));
    Eigen::VectorXf x = x0;
    dc::allreduce_workspace ws;
    distopt_bench::lock_step(st, t, [&] {
      if (checked && !all_finite(g)) throw distopt::numeric_error("hand_loop: non-finite gradient");
      dc::ring_allreduce(t, std::span<float>(g.data(), floats), dc::reduce_op::mean, ws);
      float* xp = x.data();
      const float* gp = g.data();
      for (std::size_t i = 0; i < floats; ++i) xp[i] -= learning_rate * gp[i];
      benchmark::DoNotOptimize(xp);
    });
  });
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * floats * sizeof(float)));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  for (std::size_t floats : {std::size_t{1} << 16, std::size_t{1} << 20, std::size_t{1} << 24}) {
    distopt_bench::register_references(floats);
    for (int workers : {1, 2}) {
      const std::string suffix = "/workers:" + std::to_string(workers) + "/" + std::to_string(floats);
      benchmark::RegisterBenchmark(("minibatch_sgd_step" + suffix).c_str(), [workers, floats](benchmark::State& st) {
        optimizer_step(st, workers, floats);
      })->UseRealTime();
      for (const bool checked : {false, true})
        benchmark::RegisterBenchmark(
            ((checked ? "hand_loop_checked" : "hand_loop") + suffix).c_str(),
            [workers, floats, checked](benchmark::State& st) { hand_loop(st, workers, floats, checked); })
            ->UseRealTime();
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
