#pragma once
// simulated_transport: runs any transport while keeping, per worker, a virtual clock
// of the time the same run would take on a modelled network (network_model.hpp: alpha,
// beta, one NIC per worker, compute factors for stragglers). Nothing sleeps: a
// 64-worker run on 2 cores reports the time of 64 machines on that network.
// With measure_compute = true the clock passes each worker's measured thread CPU time
// (times its factor) between transport calls; with false, only what compute() is
// given, so the same program and seed give the same times on every run.
//
//   distopt::run_threads(8, [&](distopt::transport_ref t) {
//     distopt::simulated_transport sim(t, distopt::network_model::preset("1g"));
//     distopt::algorithms::minibatch_sgd opt(sim, x0);
//     ...                                           // train
//     std::printf("%.3f s on 1 Gbit/s\n", sim.now());
//   });

#include <algorithm>

#include "distopt/transport/network_model.hpp"

namespace distopt {

/// A clock that only moves when the model says so.
struct virtual_clock {
  double time = 0.0;
  double now() const { return time; }
  void wait_until(double t) { time = std::max(time, t); }
  void pass(double s) { time += s; }
  void pass_measured(double s, double factor) { time += s * factor; }
};

using simulated_transport = modelled_transport<virtual_clock>;

}  // namespace distopt
