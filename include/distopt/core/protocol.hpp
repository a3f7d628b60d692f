#pragma once
// The Protocol concept, and protocol_context: what an optimizer hands its protocol:
// the transport it talks through (metered, so statistics count every byte), the
// statistics it records rounds and staleness in, and the optimizer's options (seed,
// timeout). A protocol keeps a copy; the statistics outlive it.

#include <concepts>
#include <cstdint>
#include <span>

#include "distopt/core/checkpoint.hpp"
#include "distopt/core/local_update.hpp"
#include "distopt/core/options.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/statistics.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt {

struct protocol_context {
  /// The optimizer's transport, metered: every byte counts in *stats.
  transport_ref transport;
  /// The same transport unmetered, for a thread a protocol runs beside the worker (the stale
  /// server's), which must not write the worker's statistics.
  transport_ref backend;
  statistics* stats;
  options opts;

  /// The compression stream of this worker's next round: a pure function of (seed, rank,
  /// round), so synchronous runs reproduce bit for bit.
  rng round_rng() const {
    return rng(opts.seed, static_cast<std::uint32_t>(transport.rank()), static_cast<std::uint32_t>(stats->rounds),
               purpose::compression);
  }
  /// Counts a finished synchronous round (staleness 0).
  void end_round() const {
    ++stats->rounds;
    stats->record_staleness(0);
  }
};

/// Protocol: the communication of one (Topology, Staleness) pair — the synchronous
/// average, gossip model exchange, the stale parameter server, asynchronous pairwise
/// gossip (protocols/). The optimizer checks the gradient, asks the LocalSteps policy
/// whether this step ends with a round, and hands the step to its protocol; it never
/// names a policy. protocols/select.hpp picks the protocol of a pair; a topology of one's
/// own may name its own with a nested `template <class C, class S> using protocol = ...`.
///
/// Requirements, for compressor C, topology T, staleness S and `P p`, `protocol_context ctx`,
/// parameters `std::span<float> x`, gradient `std::span<const float> g`, `bool talk`,
/// `local_update& u`:
///  1. `P(ctx, x0, c, t, s)` builds this worker's side (it may talk: every rank builds
///     its protocol at the same point), keeping the policies it needs.
///  2. `p.step(x, g, talk, u)` takes one local step with the finite gradient g at x —
///     `u.apply(x, g)` or the protocol's own order of it — and, if `talk`, a round.
///  3. `p.finish(x)` ends the run (drains what is in flight, final averaging).
///  4. `p.poll(x)` answers peers without stepping (asynchronous protocols; may do nothing).
/// Optional, for checkpoints (checkpointable_protocol; optimizer::save/load need it):
///  5. `p.save(w)` (const, `checkpoint_writer& w`) writes the protocol's state — compressor
///     states, public copies, counters — and `p.load(r)` (`checkpoint_reader& r`, core/checkpoint.hpp)
///     reads it back into a protocol built for the same configuration, refusing with r.refuse()
///     (config_error) what does not fit. The parameters, momentum, statistics and step counter
///     are the optimizer's.
///  6. `p.quiesce(x)`, for asynchronous protocols: collective; drains what is in flight to a cut
///     where every message exchange is wholly before or wholly after it, so that save() there is
///     consistent (docs/concepts.md, "Checkpoints of asynchronous runs"); save() elsewhere throws
///     config_error. optimizer::quiesce() calls it when P has it.
///
/// Minimal conforming type (no communication: every worker trains alone):
///   struct alone {
///     template <class C, class T, class S> alone(protocol_context, std::span<const float>, C, T, S) {}
///     void step(std::span<float> x, std::span<const float> g, bool, local_update& u) { u.apply(x, g); }
///     void finish(std::span<float>) {}
///     void poll(std::span<float>) {}
///   };
template <class P, class C, class T, class S>
concept protocol = std::constructible_from<P, protocol_context, std::span<const float>, C, T, S> &&
    requires(P& p, std::span<float> x, std::span<const float> g, bool talk, local_update& u) {
  p.step(x, g, talk, u);
  p.finish(x);
  p.poll(x);
};

/// A protocol whose state can be checkpointed: requirement 5 above.
template <class P>
concept checkpointable_protocol = requires(const P& cp, P& p, checkpoint_writer& w, checkpoint_reader& r) {
  cp.save(w);
  p.load(r);
};

}  // namespace distopt
