// network_study: what one communication round of each strategy costs on a modelled
// network (transport/simulated.hpp), for n = 2..64 workers, two model sizes and three
// networks, next to the Hockney formulas; prints which strategy wins where and writes a
// CSV that scripts/plot turns into one plot per network.
//
//   build/examples/network_study [--csv network_study.csv] [--max-workers 32]
//
// Strategies, each averaging one vector of M bytes of floats per worker:
//   ring          ring allreduce of the floats           2(n-1) alpha + 2(n-1)/n M beta
//   ring-fp16     ring allreduce on fp16 encodings       2(n-1) alpha + (n-1)/n M beta
//   ps            rank 0 is the server: push, then pull  2 alpha + 2(n-1) M beta
//   top1%-gather  allgather of top_k 1% encodings        (n-1)(alpha + M_k beta), M_k ~ 2% of M
//   gossip        one exchange with one peer (rank^1)    alpha + M beta
// Every run carries the three networks at once: the simulated transports are nested, each
// keeping its own clock and its own trailer. Compute is not measured (measure_compute =
// false), so the times are deterministic.

#include <cstdio>
#include <fstream>
#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <distopt/collective/allgather.hpp>
#include <distopt/collective/average.hpp>
#include <distopt/collective/ring_allreduce.hpp>
#include <distopt/compress/fp16.hpp>
#include <distopt/compress/top_k.hpp>
#include <distopt/transport/simulated.hpp>
#include <distopt/transport/thread.hpp>

namespace {

const char* const networks[] = {"datacenter-100g", "1g", "wan"};
const char* const strategies[] = {"ring", "ring-fp16", "ps", "top1%-gather", "gossip"};

distopt::network_model model(const char* name) {
  auto m = distopt::network_model::preset(name);
  m.measure_compute = false;
  return m;
}

/// One round of `strategy` through transport t on a vector of `len` floats.
void round_of(const std::string& strategy, distopt::transport_ref t, std::vector<float>& x) {
  distopt::rng g(1, static_cast<std::uint32_t>(t.rank()), 0, distopt::purpose::compression);
  if (strategy == "ring") {
    distopt::collective::allreduce_workspace ws;
    distopt::collective::ring_allreduce(t, std::span<float>(x), distopt::collective::reduce_op::mean, ws);
  } else if (strategy == "ring-fp16") {
    distopt::collective::averager<distopt::compress::fp16> avg;
    distopt::compress::fp16 c;
    avg.average(t, std::span<float>(x), c, g);
  } else if (strategy == "top1%-gather") {
    distopt::collective::averager<distopt::compress::top_k> avg;
    distopt::compress::top_k c{0.01};
    avg.average(t, std::span<float>(x), c, g);
  } else if (strategy == "ps") {
    const auto bytes = std::as_bytes(std::span<const float>(x));
    distopt::byte_buffer in;
    if (t.rank() == 0) {
      for (int w = 1; w < t.size(); ++w) t.recv(w, distopt::tag{1}, in);
      for (int w = 1; w < t.size(); ++w) t.send(w, distopt::tag{2}, bytes);
    } else {
      t.send(0, distopt::tag{1}, bytes);
      t.recv(0, distopt::tag{2}, in);
    }
  } else {  // gossip: pairs (0,1), (2,3), ...; with odd n the last rank sits out
    const int peer = t.rank() ^ 1;
    if (peer >= t.size()) return;
    distopt::byte_buffer in;
    t.send(peer, distopt::tag{3}, std::as_bytes(std::span<const float>(x)));
    t.recv(peer, distopt::tag{3}, in);
  }
}

/// The Hockney formula of a strategy, or a negative number where it has none.
double formula(const std::string& strategy, int n, double bytes, const distopt::network_model& m) {
  const double a = m.latency_s, b = 1.0 / m.bandwidth_bytes_per_s;
  if (strategy == "ring") return 2.0 * (n - 1) * a + 2.0 * (n - 1) / n * bytes * b;
  if (strategy == "ring-fp16") return 2.0 * (n - 1) * a + (n - 1.0) / n * bytes * b;
  if (strategy == "ps") return 2.0 * a + 2.0 * (n - 1) * bytes * b;
  if (strategy == "gossip") return a + bytes * b;
  return -1.0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"distopt network study: one round of each strategy on modelled networks"};
  std::string csv_path = "network_study.csv";
  int max_workers = 32;
  app.add_option("--csv", csv_path, "where to write the results");
  app.add_option("--max-workers", max_workers, "largest worker count (powers of two from 2)")->check(CLI::Range(2, 64));
  CLI11_PARSE(app, argc, argv);

  std::ofstream csv(csv_path);
  csv << "network,model_bytes,workers,strategy,seconds,formula_seconds\n";
  for (const std::size_t floats : {std::size_t{1} << 18, std::size_t{1} << 22}) {  // 1 MiB, 16 MiB
    const double bytes = double(floats * sizeof(float));
    // results[network][n][strategy] = seconds (slowest rank)
    std::map<std::string, std::map<int, std::map<std::string, double>>> results;
    for (int n = 2; n <= max_workers; n *= 2) {
      for (const std::string strategy : strategies) {
        std::vector<double> slowest(3, 0.0);
        std::mutex mu;
        distopt::run_threads(n,
                             [&](distopt::transport_ref t) {
                               distopt::simulated_transport dc(t, model(networks[0]));
                               distopt::simulated_transport gig(dc, model(networks[1]));
                               distopt::simulated_transport wan(gig, model(networks[2]));
                               std::vector<float> x(floats, 1.0f + float(t.rank()));
                               round_of(strategy, wan, x);
                               std::lock_guard lock(mu);
                               const double times[] = {dc.now(), gig.now(), wan.now()};
                               for (int k = 0; k < 3; ++k) slowest[k] = std::max(slowest[k], times[k]);
                             },
                             {.timeout = std::chrono::minutes(10)});  // 64 threads moving 16 MiB each on 2 cores
        for (int k = 0; k < 3; ++k) {
          results[networks[k]][n][strategy] = slowest[k];
          const double f = formula(strategy, n, bytes, model(networks[k]));
          csv << networks[k] << ',' << bytes << ',' << n << ',' << strategy << ',' << slowest[k] << ',';
          if (f >= 0) csv << f;
          csv << '\n';
        }
      }
    }
    for (const char* net : networks) {
      std::printf("\n%s, model %.0f MiB: milliseconds per round (slowest worker)\n", net, bytes / (1 << 20));
      std::printf("%8s", "workers");
      for (const char* s : strategies) std::printf(" %13s", s);
      std::printf("   fastest\n");
      for (auto& [n, row] : results[net]) {
        std::printf("%8d", n);
        std::string best;
        for (const char* s : strategies) {
          std::printf(" %13.3f", 1e3 * row[s]);
          if (best.empty() || row[s] < row[best]) best = s;
        }
        std::printf("   %s\n", best.c_str());
      }
    }
  }
  std::printf("\nwrote %s (plot with scripts/plot %s)\n", csv_path.c_str(), csv_path.c_str());
  return 0;
}
