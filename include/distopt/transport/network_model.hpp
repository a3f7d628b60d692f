#pragma once
// network_model and modelled_transport: the Hockney (alpha-beta) cost model of a
// network, applied to the messages of any transport. simulated.hpp applies it to a
// virtual clock per worker (no sleeping); throttled.hpp applies it in real time.
//
// The model. Each worker has one NIC that sends one message at a time and receives one
// at a time (full duplex). The directed link i -> j (sender i, receiver j) has a
// latency alpha(i, j) and a time per byte beta(i, j) = 1 / bandwidth(i, j): the model's
// latency_s and bandwidth_bytes_per_s, unless network_model::links gives the link its
// own. A message of B payload bytes from i to j sent when i's clock reads t:
//   send start  s = max(t, i's NIC free);                i's NIC free = s + B beta(i, j)
//   receive     r = max(s + alpha(i, j), j's NIC free);  j's NIC free = r + B beta(i, j)
//   j's clock becomes max(its clock, r + B beta(i, j)) when it takes the message.
// So one message costs alpha(i, j) + B beta(i, j), and a slow link keeps both of its
// NICs busy for its whole B beta(i, j); with every link at the defaults alpha and beta,
// k messages into one NIC cost alpha + k B beta.
// Sends do not block the sender (as the transport concept promises). Local compute
// between transport calls advances the clock by the thread's CPU time times the
// worker's compute factor (factor 2 = a worker twice as slow), or, with
// measure_compute = false, only by what the program passes to compute().
// Receiver serialisation follows the order in which a worker takes messages, which for
// the library's collectives is their arrival order.
// Each message carries its send start as an 8-byte trailer (one copy of the payload
// per send into a reused buffer: this is a model, not a fast path).
//
//   distopt::network_model net = distopt::network_model::preset("1g");   // 50 us, 1 Gbit/s
//   distopt::simulated_transport sim(t, net);        // t: any transport_ref
//   optimizer opt(sim, x0);  ...  sim.now();         // seconds on the modelled network
//
//   net.links = {{.from = 0, .to = 1, .latency_s = 20e-3, .bandwidth_bytes_per_s = 12.5e6}};
//   // rank 0 -> rank 1 is a WAN link; 1 -> 0 and every other link keep the defaults

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <ctime>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt {

namespace detail {
/// A number for an error message: %g keeps small latencies readable (5e-07, not 0.000000).
inline std::string model_number(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}
}  // namespace detail

struct network_model {
  /// One directed link with its own latency and bandwidth: messages sent by rank `from`
  /// to rank `to` (the reverse direction is a separate link). Both numbers must be set;
  /// left out they are NaN, which validate() refuses.
  struct link {
    int from = -1;
    int to = -1;
    double latency_s = std::numeric_limits<double>::quiet_NaN();
    double bandwidth_bytes_per_s = std::numeric_limits<double>::quiet_NaN();
  };

  /// alpha: seconds from send start to the first byte at the receiver, on every link
  /// that `links` does not list.
  double latency_s = 50e-6;
  /// 1 / beta: bytes per second of every NIC, each direction, on every link that `links`
  /// does not list.
  double bandwidth_bytes_per_s = 125e6;
  /// Links that differ from the defaults above, at most one entry per (from, to); a
  /// message from i to j occupies i's and j's NICs at the bandwidth of link i -> j. Ranks
  /// must lie in the world, which modelled_transport checks at construction.
  std::vector<link> links{};
  /// Compute slowdown per rank (stragglers); ranks beyond the list run at factor 1.
  std::vector<double> compute_factors{};
  /// If > 0, every rank's factor is further multiplied by 1 + u * straggler_spread with u
  /// uniform in [0, 1) drawn from rng(straggler_seed, rank): random, reproducible stragglers.
  double straggler_spread = 0.0;
  std::uint64_t straggler_seed = 0;
  /// Advance the clock by the measured CPU time between transport calls; if false only
  /// compute() advances it (deterministic runs).
  bool measure_compute = true;

  /// Presets: "datacenter-100g" (5 us, 100 Gbit/s), "1g" (50 us, 1 Gbit/s),
  /// "wan" (20 ms, 100 Mbit/s).
  static network_model preset(std::string_view name) {
    network_model m;
    if (name == "datacenter-100g") {
      m.latency_s = 5e-6;
      m.bandwidth_bytes_per_s = 12.5e9;
    } else if (name == "1g") {
      m.latency_s = 50e-6;
      m.bandwidth_bytes_per_s = 125e6;
    } else if (name == "wan") {
      m.latency_s = 20e-3;
      m.bandwidth_bytes_per_s = 12.5e6;
    } else {
      throw config_error("network_model::preset: unknown network '" + std::string(name) +
                         "'; use datacenter-100g, 1g or wan, or set latency_s and bandwidth_bytes_per_s");
    }
    return m;
  }

  void validate() const {
    if (!(latency_s >= 0.0) || !std::isfinite(latency_s))
      throw config_error("network_model: latency_s must be finite and >= 0, got " + std::to_string(latency_s));
    if (!(bandwidth_bytes_per_s > 0.0))
      throw config_error("network_model: bandwidth_bytes_per_s must be > 0, got " +
                         std::to_string(bandwidth_bytes_per_s));
    for (const double f : compute_factors)
      if (!(f > 0.0) || !std::isfinite(f))
        throw config_error("network_model: every compute factor must be finite and > 0, got " + std::to_string(f));
    if (!(straggler_spread >= 0.0) || !std::isfinite(straggler_spread))
      throw config_error("network_model: straggler_spread must be finite and >= 0");
    for (std::size_t i = 0; i < links.size(); ++i) {
      const link& l = links[i];
      if (l.from < 0 || l.to < 0)
        throw config_error("network_model: " + describe_link(i) +
                           ": ranks must be >= 0; set from to the sending rank and to to the receiving rank");
      if (!(l.latency_s >= 0.0) || !std::isfinite(l.latency_s))
        throw config_error("network_model: " + describe_link(i) + ": latency_s must be finite and >= 0, got " +
                           detail::model_number(l.latency_s) + "; set it to the link's latency in seconds");
      if (!(l.bandwidth_bytes_per_s > 0.0) || !std::isfinite(l.bandwidth_bytes_per_s))
        throw config_error(
            "network_model: " + describe_link(i) + ": bandwidth_bytes_per_s must be finite and > 0, got " +
            detail::model_number(l.bandwidth_bytes_per_s) + "; set it to the link's bandwidth in bytes per second");
    }
    if (links.size() > 1) {  // duplicates: sort the indices by (from, to), compare neighbours
      std::vector<std::size_t> order(links.size());
      std::iota(order.begin(), order.end(), std::size_t{0});
      const auto key = [&](std::size_t i) { return std::pair(links[i].from, links[i].to); };
      std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return key(a) < key(b); });
      for (std::size_t k = 1; k < order.size(); ++k)
        if (key(order[k - 1]) == key(order[k]))
          throw config_error("network_model: links[" + std::to_string(order[k - 1]) + "] and links[" +
                             std::to_string(order[k]) + "] both describe the link " +
                             std::to_string(links[order[k]].from) + " -> " + std::to_string(links[order[k]].to) +
                             "; keep one entry per directed link (from sender to receiver)");
    }
  }

  /// validate(), and a config_error if a link names a rank outside a world of
  /// `world_size` ranks (modelled_transport calls this with its transport's size).
  void validate(int world_size) const {
    validate();
    for (std::size_t i = 0; i < links.size(); ++i)
      if (links[i].from >= world_size || links[i].to >= world_size)
        throw config_error("network_model: " + describe_link(i) + " names rank " +
                           std::to_string(std::max(links[i].from, links[i].to)) + ", but the world has " +
                           std::to_string(world_size) + " ranks (0.." + std::to_string(world_size - 1) +
                           "); remove the link or fix its ranks");
  }

  /// The latency of the link from -> to in seconds: its entry in `links`, else latency_s.
  /// A search of `links`; modelled_transport looks each peer up once, at construction.
  double latency(int from, int to) const {
    const link* l = find(from, to);
    return l ? l->latency_s : latency_s;
  }
  /// The bandwidth of the link from -> to in bytes per second: its entry in `links`,
  /// else bandwidth_bytes_per_s.
  double bandwidth(int from, int to) const {
    const link* l = find(from, to);
    return l ? l->bandwidth_bytes_per_s : bandwidth_bytes_per_s;
  }

  /// The compute factor of `rank`.
  double compute_factor(int rank) const {
    const auto r = static_cast<std::size_t>(rank);
    double f = r < compute_factors.size() ? compute_factors[r] : 1.0;
    if (straggler_spread > 0.0) {
      rng g(straggler_seed, static_cast<std::uint32_t>(rank), 0, purpose::user);
      f *= 1.0 + straggler_spread * g.uniform();
    }
    return f;
  }

 private:
  const link* find(int from, int to) const {
    for (const link& l : links)
      if (l.from == from && l.to == to) return &l;
    return nullptr;
  }
  std::string describe_link(std::size_t i) const {
    return "links[" + std::to_string(i) + "] (" + std::to_string(links[i].from) + " -> " + std::to_string(links[i].to) +
           ")";
  }
};

/// A transport that charges every message the network model's cost on a clock.
/// Clock policy: `double now()`; `void wait_until(double t)`: the clock reaches t;
/// `void pass(double s)`: s seconds of modelled compute that did not happen;
/// `void pass_measured(double s, double factor)`: s seconds of CPU time that did happen,
/// which the model counts as s * factor.
template <class Clock>
class modelled_transport {
 public:
  modelled_transport(transport_ref inner, network_model model, Clock clock = {})
      : inner_(inner),
        model_((model.validate(inner.size()), std::move(model))),
        clock_(std::move(clock)),
        factor_(model_.compute_factor(inner.rank())),
        cpu_mark_(thread_cpu_seconds()) {
    // Per-peer link parameters, indexed by peer rank, so a message costs no search.
    const auto n = static_cast<std::size_t>(size());
    const double beta = 1.0 / model_.bandwidth_bytes_per_s;
    tx_beta_.assign(n, beta);
    rx_alpha_.assign(n, model_.latency_s);
    rx_beta_.assign(n, beta);
    const int me = rank();
    for (const network_model::link& l : model_.links) {
      if (l.from == me) tx_beta_[static_cast<std::size_t>(l.to)] = 1.0 / l.bandwidth_bytes_per_s;
      if (l.to == me) {
        rx_alpha_[static_cast<std::size_t>(l.from)] = l.latency_s;
        rx_beta_[static_cast<std::size_t>(l.from)] = 1.0 / l.bandwidth_bytes_per_s;
      }
    }
  }

  int rank() const { return inner_.rank(); }
  int size() const { return inner_.size(); }

  void send(int peer, tag tg, std::span<const std::byte> bytes) {
    account_compute();
    const double start = std::max(clock_.now(), tx_free_);
    outgoing_.resize(bytes.size() + trailer_bytes);
    if (!bytes.empty()) std::memcpy(outgoing_.data(), bytes.data(), bytes.size());
    std::memcpy(outgoing_.data() + bytes.size(), &start, trailer_bytes);
    inner_.send(peer, tg, outgoing_);  // checks peer first
    tx_free_ = start + static_cast<double>(bytes.size()) * tx_beta_[slot(peer)];
    mark_cpu();
  }
  void recv(int peer, tag tg, byte_buffer& out) {
    account_compute();
    inner_.recv(peer, tg, out);
    take(peer, out);
  }
  void recv(int peer, tag tg, byte_buffer& out, std::chrono::milliseconds timeout) {
    account_compute();
    inner_.recv(peer, tg, out, timeout);
    take(peer, out);
  }
  bool try_recv(int peer, tag tg, byte_buffer& out) {
    account_compute();
    const bool got = inner_.try_recv(peer, tg, out);
    if (got)
      take(peer, out);
    else
      mark_cpu();
    return got;
  }

  /// Local compute of `seconds` (at factor 1) that the clock should pass, besides measured CPU time.
  void compute(double seconds) { clock_.pass(seconds * factor_); }
  /// Leaves the CPU time since the last transport call out of the clock (work outside the
  /// modelled run, such as evaluating the model on a test set).
  void exclude_compute_so_far() { mark_cpu(); }

  /// This worker's clock, in seconds.
  double now() const { return clock_.now(); }
  const network_model& model() const { return model_; }

 private:
  static constexpr std::size_t trailer_bytes = sizeof(double);

  static double thread_cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }
  void mark_cpu() {
    if (model_.measure_compute) cpu_mark_ = thread_cpu_seconds();
  }
  void account_compute() {
    if (model_.measure_compute) clock_.pass_measured(thread_cpu_seconds() - cpu_mark_, factor_);
  }

  // The index of a peer the inner transport has accepted (a guard against one that did not check).
  std::size_t slot(int peer) const {
    if (peer < 0 || peer >= size())
      throw transport_error("modelled_transport: rank " + std::to_string(rank()) + " exchanged a message with rank " +
                            std::to_string(peer) + " outside 0.." + std::to_string(size() - 1));
    return static_cast<std::size_t>(peer);
  }

  // Strips the trailer and applies the receive side of the model.
  void take(int peer, byte_buffer& out) {
    if (out.size() < trailer_bytes)
      throw transport_error("modelled_transport: rank " + std::to_string(rank()) + " got a " +
                            std::to_string(out.size()) + "-byte message from rank " + std::to_string(peer) +
                            " without the send-time trailer; every rank must wrap its transport the same way");
    double start;
    std::memcpy(&start, out.data() + out.size() - trailer_bytes, trailer_bytes);
    out.resize(out.size() - trailer_bytes);
    if (!std::isfinite(start))
      throw transport_error("modelled_transport: rank " + std::to_string(rank()) +
                            " got a non-finite send time from rank " + std::to_string(peer));
    const std::size_t p = slot(peer);
    const double received = std::max(start + rx_alpha_[p], rx_free_);
    rx_free_ = received + static_cast<double>(out.size()) * rx_beta_[p];
    clock_.wait_until(rx_free_);
    mark_cpu();
  }

  transport_ref inner_;
  network_model model_;
  Clock clock_;
  double factor_;
  std::vector<double> tx_beta_;   // [p]: beta(me, p), seconds per byte this NIC sends to p
  std::vector<double> rx_alpha_;  // [p]: alpha(p, me)
  std::vector<double> rx_beta_;   // [p]: beta(p, me)
  double tx_free_ = 0.0;
  double rx_free_ = 0.0;
  double cpu_mark_;
  byte_buffer outgoing_;
};

}  // namespace distopt
