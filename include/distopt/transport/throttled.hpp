#pragma once
// throttled_transport: runs any transport with real delays from a network_model
// (network_model.hpp): a message is handed to the receiver only when the modelled
// link would have delivered it, and a worker with compute factor f sleeps (f - 1)
// times its measured CPU time, so stragglers and slow links can be studied on one
// machine in wall-clock time. Times are steady_clock seconds, shared by every thread
// and process of the machine. simulated_transport applies the same model without
// sleeping; the two differ by the host's own delays (real compute slower than its CPU
// time, late wake-ups).
//
//   distopt::network_model wan = distopt::network_model::preset("wan");
//   distopt::throttled_transport slow(t, wan);     // t: any transport_ref
//   distopt::algorithms::minibatch_sgd opt(slow, x0);

#include <algorithm>
#include <chrono>
#include <thread>

#include "distopt/transport/network_model.hpp"

namespace distopt {

/// Real time: the model's clock, starting at the steady_clock time of construction, and
/// the thread sleeps until the clock's time whenever it moves. Messages are stamped with
/// the model's time, not the moment the host got round to sending them, so scheduling
/// delays of a loaded host do not accumulate along a chain of messages; the wall time of
/// a run is the model's time plus the host's lateness at the end.
struct real_clock {
  double time = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  double now() const { return time; }
  void wait_until(double t) {
    time = std::max(time, t);
    sleep();
  }
  void pass(double s) {
    time += s;
    sleep();
  }
  void pass_measured(double s, double factor) { pass(s * factor); }  // s of it have already passed

 private:
  void sleep() const {
    std::this_thread::sleep_until(std::chrono::steady_clock::time_point(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(time))));
  }
};

using throttled_transport = modelled_transport<real_clock>;

}  // namespace distopt
