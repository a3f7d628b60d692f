// One gossip round vs one ring allreduce of the same model size on the thread transport:
// 4 KiB to 16 MiB per worker, 2, 4 and 8 workers, plus memcpy/read-sum references in the
// same binary (results read as ratios).
//
//   gossip_exact/ring        D-PSGD's round: send the model to both ring neighbours, form
//                            sum_j W_ij x_j (protocols::exact_mixer)
//   gossip_choco_top1/ring   CHOCO's round with top-1%: weighted sum of the public copies,
//                            encode x - xh_i, send to both neighbours, update 3 copies
//   ring_allreduce           the centralized round (mean), for comparison
// Counter bytes_per_worker_per_round: what one worker sends per round (gossip: degree *
// message; allreduce: 2(n-1)/n * M). wire_bytes_per_float: the same per float of the model.
//
//   bench_topology --benchmark_filter='/1048576$'

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "distopt/collective/ring_allreduce.hpp"
#include "distopt/compress/top_k.hpp"
#include "distopt/core/statistics.hpp"
#include "distopt/protocols/gossip.hpp"
#include "distopt/topology/ring.hpp"
#include "distopt/transport/metered.hpp"
#include "distopt/transport/thread.hpp"
#include "lock_step.hpp"
#include "reference.hpp"

namespace {

namespace dc = distopt::collective;

void report(benchmark::State& st, std::size_t floats, double bytes_per_round) {
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * floats * sizeof(float)));
  st.counters["bytes_per_worker_per_round"] = bytes_per_round;
  st.counters["wire_bytes_per_float"] = bytes_per_round / static_cast<double>(floats);
}

// Rank 0's bytes sent per round, measured through a metered transport over the timed rounds.
template <class Round>
void measured(benchmark::State& st, int workers, std::size_t floats, Round&& make_round) {
  double per_round = 0;
  distopt::run_threads(workers, [&](distopt::transport_ref inner) {
    distopt::statistics stats;
    distopt::metered_transport t(inner, stats, std::chrono::seconds(60));
    auto round = make_round(distopt::transport_ref(t), floats);
    distopt_bench::lock_step(st, inner, round);
    if (inner.rank() == 0)  // the timed rounds plus lock_step's 2 warm-up rounds
      per_round = static_cast<double>(stats.bytes_sent) / static_cast<double>(st.iterations() + 2);
  });
  report(st, floats, per_round);
}

auto exact_round = [](distopt::transport_ref t, std::size_t floats) {
  struct state {
    distopt::transport_ref t;
    std::vector<float> x;
    distopt::mixing_row row;
    distopt::protocols::exact_mixer mixer;
  };
  auto s = std::make_shared<state>(state{t, std::vector<float>(floats, 1.0f), {}, {}});
  s->row.assign(distopt::graph::ring(t.size()), t.rank());
  return [s] { s->mixer.mix(s->t, s->row, s->x, s->x); };
};

auto choco_round = [](distopt::transport_ref t, std::size_t floats) {
  struct state {
    distopt::transport_ref t;
    std::vector<float> x, step;
    distopt::compress::top_k c{0.01};
    std::unique_ptr<distopt::protocols::model_exchange<distopt::compress::top_k, distopt::topology::ring>> ex;
    distopt::rng g{1, 0, 0, distopt::purpose::compression};
  };
  auto s = std::make_shared<state>(
      state{t, std::vector<float>(floats, 1.0f), std::vector<float>(floats, 1e-3f), {}, {}, {}});
  s->ex = std::make_unique<distopt::protocols::model_exchange<distopt::compress::top_k, distopt::topology::ring>>(
      t, distopt::topology::ring{}, s->x, 0.04f, 1, s->c);
  return [s] { s->ex->round(s->t, s->x, s->step, s->c, s->g); };
};

auto allreduce_round = [](distopt::transport_ref t, std::size_t floats) {
  struct state {
    distopt::transport_ref t;
    std::vector<float> x;
    dc::allreduce_workspace ws;
  };
  auto s = std::make_shared<state>(state{t, std::vector<float>(floats, 1.0f), {}});
  return [s] { dc::ring_allreduce(s->t, s->x, dc::reduce_op::mean, s->ws); };
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  for (std::size_t bytes = std::size_t{4} << 10; bytes <= std::size_t{16} << 20; bytes *= 4) {
    const std::size_t floats = bytes / sizeof(float);
    distopt_bench::register_references(floats);
    for (int workers : {2, 4, 8}) {
      const std::string suffix = "/workers:" + std::to_string(workers) + "/" + std::to_string(floats);
      benchmark::RegisterBenchmark(("gossip_exact/ring" + suffix).c_str(), [workers, floats](benchmark::State& st) {
        measured(st, workers, floats, exact_round);
      })->UseRealTime();
      benchmark::RegisterBenchmark(("gossip_choco_top1/ring" + suffix).c_str(), [workers,
                                                                                 floats](benchmark::State& st) {
        measured(st, workers, floats, choco_round);
      })->UseRealTime();
      benchmark::RegisterBenchmark(("ring_allreduce" + suffix).c_str(), [workers, floats](benchmark::State& st) {
        measured(st, workers, floats, allreduce_round);
      })->UseRealTime();
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
