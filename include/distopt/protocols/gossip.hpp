#pragma once
// model_exchange: the one mechanism by which gossip topologies exchange models
// (DESIGN.md "What is exchanged"). Every scheme of topology/gossip.hpp — exact D-PSGD
// in both orders, CHOCO-SGD, DCD-PSGD, ECD-PSGD, DeepSqueeze — is a configuration of
// two primitives:
//
//  exact_mixer     send the raw model to this round's peers and form
//                  out = W_ii v + sum_k W_{i,p_k} v_{p_k}   (self first, then peers in
//                  increasing rank: a fixed order, so runs are bit-reproducible).
//                  No state between rounds: works on time-varying topologies.
//  public_copies   each worker holds a public copy xh_j of itself and of each fixed
//                  neighbour. publish(v, a, b) encodes v once with the compressor C,
//                  sends the same bytes to every neighbour, and every holder of i's
//                  copy (i itself and its neighbours) applies xh_i <- a xh_i + b decode.
//                  Because all holders apply the same decoded bytes, the copies agree
//                  everywhere (CHOCO/DCD: a = b = 1; ECD: a = 1 - 2/(t+1), b = 2/(t+1);
//                  DeepSqueeze: a = 0, b = 1). weighted_sum() = sum_j W_ij xh_j.
//
// Messages: one per peer per round on an internal tag (exact_mixer: one per segment of
// segment_floats), each sent before the matching one is received, so no order of ranks
// can deadlock (sends queue; every receive has the transport's deadline).
// Memory: (degree + 1) copies of the model for the public-copy schemes.
// The wire carries exactly C's encoding (identity: 4 bytes per float).
// Compressors that decode against a reference (decode(bytes, reference, out), e.g. a
// lattice quantizer) are not wired in yet and are refused at compile time.
//
// The consensus step of CHOCO and DeepSqueeze is the scheme's, or when unset
// topology::default_consensus_step for C's guaranteed contraction (compress::delta_bound).
//
//   distopt::protocols::model_exchange<distopt::compress::top_k, distopt::topology::ring> ex(
//       t, distopt::topology::ring{}, x0, /*gamma=*/0.04f, /*seed=*/1, c);
//   ex.round(t, x, eta_times_direction, c, g);   // one CHOCO round

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include "distopt/collective/detail/float_bytes.hpp"
#include "distopt/collective/ring_allreduce.hpp"
#include "distopt/compress/contraction.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/checkpoint.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/protocol.hpp"
#include "distopt/core/ring_schedule.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/traits.hpp"
#include "distopt/core/transport_ref.hpp"
#include "distopt/topology/gossip.hpp"

namespace distopt::protocols {

inline constexpr tag gossip_tag = distopt::detail::reserved_tag(distopt::detail::reserved::gossip);

/// True if C decodes relative to a reference the receiver holds (decode(bytes, reference, out)).
template <class C>
inline constexpr bool decodes_with_reference_v = requires(const C& c, std::span<const std::byte> b,
                                                          std::span<const float> ref, std::span<float> out) {
  c.decode(b, ref, out);
};

}  // namespace distopt::protocols

namespace distopt::detail {
// x[i] = s * x[i] + w * y[i]
inline void scale_add(float* __restrict x, float s, float w, const float* __restrict y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) x[i] = s * x[i] + w * y[i];
}
// x[i] = w * y[i]; x may equal y
inline void scaled_copy(float* x, float w, const float* y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) x[i] = w * y[i];
}
}  // namespace distopt::detail

namespace distopt::protocols {

/// Exact gossip: out = W_ii v + sum_k W_{i,p_k} v_{p_k}. `out` may alias `v`.
/// A model longer than `segment_floats` travels in segments, like the ring allreduce's:
/// segment s + 1 is sent before segment s is received and mixed, so a peer can copy the
/// next piece while this worker adds the last, and each piece is still in cache when it
/// is read. The sum per entry is the same (self first, then peers in increasing rank)
/// whatever the segment size.
class exact_mixer {
 public:
  /// Floats per message (the ring allreduce's default).
  std::size_t segment_floats = distopt::detail::ring_segment_floats;

  void mix(transport_ref t, const mixing_row& row, std::span<const float> v, std::span<float> out) {
    const std::size_t n = v.size();
    const std::size_t seg = std::max<std::size_t>(segment_floats, 1);
    const std::size_t segments = n == 0 ? 1 : (n + seg - 1) / seg;  // an empty model is one empty message
    auto piece = [&](std::size_t s) { return v.subspan(s * seg, std::min(seg, n - s * seg)); };
    auto send = [&](std::size_t s) {
      for (int p : row.peers) t.send(p, gossip_tag, std::as_bytes(piece(s)));
    };
    send(0);
    for (std::size_t s = 0; s < segments; ++s) {
      if (s + 1 < segments) send(s + 1);  // peers copy the next piece while this one is mixed
      const std::span<const float> mine = piece(s);
      float* const dst = out.data() + s * seg;
      detail::scaled_copy(dst, row.self_weight, mine.data(), mine.size());
      for (std::size_t k = 0; k < row.peers.size(); ++k) {
        t.recv(row.peers[k], gossip_tag, incoming_);
        const auto theirs =
            distopt::detail::received_floats(incoming_, mine.size(), "protocols::exact_mixer", t.rank(), row.peers[k]);
        detail::scale_add(dst, 1.0f, row.weights[k], theirs.data(), mine.size());
      }
    }
  }

 private:
  byte_buffer incoming_;
};

/// Public copies of this worker (index 0) and of its fixed neighbours.
template <compressor C>
class public_copies {
 public:
  /// Copies for the peers of `row`, each of n floats, all zero (CHOCO's xh^0 = 0).
  void reset(const mixing_row& row, std::size_t n) {
    row_ = row;
    copies_.assign(row.peers.size() + 1, std::vector<float>(n, 0.0f));
    decoded_.resize(n);
  }
  std::span<float> own() noexcept { return copies_[0]; }

  /// Every holder of this worker's copy applies xh <- a xh + b decode(C(v)); this worker
  /// applies the same to its copies of the neighbours with their bytes.
  void publish(transport_ref t, std::span<const float> v, C& c, compressor_state_t<C>& state, rng& g, float a,
               float b) {
    wire_.clear();
    encode(c, v, wire_, g, state);
    for (int p : row_.peers) t.send(p, gossip_tag, wire_);
    apply(wire_, 0, c, a, b);
    for (std::size_t k = 0; k < row_.peers.size(); ++k) {
      t.recv(row_.peers[k], gossip_tag, incoming_);
      apply(incoming_, k + 1, c, a, b);
    }
  }

  /// Sets every copy to its holder's exact vector `v` (one uncompressed exchange).
  void share_exact(transport_ref t, std::span<const float> v) {
    for (int p : row_.peers) t.send(p, gossip_tag, std::as_bytes(v));
    std::copy(v.begin(), v.end(), copies_[0].begin());
    for (std::size_t k = 0; k < row_.peers.size(); ++k) {
      t.recv(row_.peers[k], gossip_tag, incoming_);
      const auto theirs =
          distopt::detail::received_floats(incoming_, v.size(), "protocols::public_copies", t.rank(), row_.peers[k]);
      std::copy(theirs.begin(), theirs.end(), copies_[k + 1].begin());
    }
  }

  /// out = W_ii xh_i + sum_k W_{i,p_k} xh_{p_k} (self first, then peers in increasing rank).
  void weighted_sum(std::span<float> out) const {
    const std::size_t n = out.size();
    detail::scaled_copy(out.data(), row_.self_weight, copies_[0].data(), n);
    for (std::size_t k = 0; k < row_.peers.size(); ++k)
      detail::scale_add(out.data(), 1.0f, row_.weights[k], copies_[k + 1].data(), n);
  }

  /// Checkpoints hold every copy (none for the exact schemes).
  void save(checkpoint_writer& w) const {
    w.u64(copies_.size());
    for (const auto& copy : copies_) w.floats(copy);
  }
  void load(checkpoint_reader& r) {
    const std::uint64_t count = r.u64();
    if (count != copies_.size())
      r.refuse(std::to_string(count) + " public copies in the checkpoint, " + std::to_string(copies_.size()) +
               " here (another gossip scheme or degree)");
    for (std::size_t k = 0; k < copies_.size(); ++k)
      r.floats(copies_[k], k == 0 ? "this worker's public copy" : "a neighbour's public copy");
  }

 private:
  void apply(const byte_buffer& bytes, std::size_t holder, C& c, float a, float b) {
    c.decode(bytes, std::span<float>(decoded_));
    detail::scale_add(copies_[holder].data(), a, b, decoded_.data(), decoded_.size());
  }

  mixing_row row_;
  std::vector<std::vector<float>> copies_;
  std::vector<float> decoded_;
  byte_buffer wire_, incoming_;
};

/// The consensus step a compressed gossip scheme runs with: `chosen` if set, otherwise
/// topology::default_consensus_step for C's guaranteed contraction on vectors of n entries.
/// Throws config_error when C guarantees none (sign, threshold, rounding, qsgd with omega >= 1).
template <compressor C>
float resolve_consensus_step(std::optional<float> chosen, const C& c, std::size_t n, const graph& g) {
  if (chosen) return *chosen;
  const double delta = compress::delta_bound(c, n);
  if (!(delta > 0.0))
    throw config_error(
        "distopt gossip: the compressor guarantees no contraction ||C(x) - x||^2 <= (1 - delta) ||x||^2 on " +
        std::to_string(n) +
        " entries, so no safe consensus step can be derived; use a contractive compressor (top_k, random_k_biased, "
        "scaled_sign, compress::scaled<C> for an unbiased C) or set the scheme's consensus_step");
  return static_cast<float>(topology::default_consensus_step(delta, g));
}

/// One worker's side of gossip over topology T with compressor C, by T's scheme.
template <compressor C, class T>
class model_exchange {
  static_assert(topology::gossip_topology<T>,
                "protocols::model_exchange<C, T>: T must be a gossip topology (ring, torus, exponential, "
                "hypercube, complete, custom, one_peer_exponential, random_pairwise)");

 public:
  using scheme = topology::scheme_t<C, T>;
  static constexpr bool exact =
      std::same_as<scheme, mixing::exact> || std::same_as<scheme, mixing::exact_step_then_mix>;

 private:
  static_assert(!exact || sends_raw_floats_v<C>,
                "distopt gossip: mixing::exact and mixing::exact_step_then_mix send the models themselves and need "
                "compress::identity; to compress models use mixing::choco (the default), dcd, ecd or deep_squeeze");
  static_assert(exact || topology::static_gossip_topology<T>,
                "distopt gossip: compressed model exchange (CHOCO, DCD, ECD, DeepSqueeze) keeps public copies of "
                "fixed neighbours; time-varying topologies (one_peer_exponential, random_pairwise) need "
                "compress::identity (exact gossip)");
  static_assert(!decodes_with_reference_v<C>,
                "distopt gossip: compressors that decode against a reference (lattice) are not supported by the "
                "model exchange yet");
  static_assert(std::same_as<scheme, mixing::exact> || std::same_as<scheme, mixing::exact_step_then_mix> ||
                    std::same_as<scheme, mixing::choco> || std::same_as<scheme, mixing::dcd> ||
                    std::same_as<scheme, mixing::ecd> || std::same_as<scheme, mixing::deep_squeeze>,
                "distopt gossip: the scheme must be one of distopt::mixing::{automatic, exact, exact_step_then_mix, "
                "choco, dcd, ecd, deep_squeeze}");

 public:
  /// Builds this worker's row (and, for DCD/ECD, shares x0 exactly so the copies start equal).
  /// `gamma`: the consensus step of CHOCO and DeepSqueeze; unset, derived (resolve_consensus_step).
  model_exchange(transport_ref t, const T& topo, std::span<const float> x0, std::optional<float> gamma,
                 std::uint64_t seed, C& c)
      : seed_(seed), state_(make_compressor_state(c, x0.size())) {
    const std::size_t n = x0.size();
    mixed_.resize(n);
    if constexpr (topology::static_gossip_topology<T>) {
      const graph g = topo.make_graph(t.size());
      row_.assign(g, t.rank());
      if constexpr (std::same_as<scheme, mixing::choco> || std::same_as<scheme, mixing::deep_squeeze>)
        gamma_ = resolve_consensus_step(gamma, c, n, g);
    } else {
      schedule_.emplace(topo.schedule(t.size()));
    }
    if constexpr (!exact) {
      copies_.reset(row_, n);
      scratch_.resize(n);
      if constexpr (std::same_as<scheme, mixing::dcd> || std::same_as<scheme, mixing::ecd>) copies_.share_exact(t, x0);
    }
  }

  /// One gossip round. `step` is the local SGD step eta * d at x (already scaled).
  void round(transport_ref t, std::span<float> x, std::span<const float> step, C& c, rng& g) {
    const std::size_t n = x.size();
    float* __restrict xs = x.data();
    const float* __restrict st = step.data();
    float* __restrict mixed = mixed_.data();
    if constexpr (!topology::static_gossip_topology<T>) schedule_->row(t.rank(), round_, seed_, row_);
    if constexpr (std::same_as<scheme, mixing::exact>) {
      mixer_.mix(t, row_, x, x);
      for (std::size_t i = 0; i < n; ++i) xs[i] -= st[i];
    } else if constexpr (std::same_as<scheme, mixing::exact_step_then_mix>) {
      for (std::size_t i = 0; i < n; ++i) xs[i] -= st[i];
      mixer_.mix(t, row_, x, x);
    } else {
      const float* own = copies_.own().data();
      float* __restrict z = scratch_.data();
      if constexpr (std::same_as<scheme, mixing::choco>) {
        copies_.weighted_sum(mixed_);
        for (std::size_t i = 0; i < n; ++i) {
          xs[i] = (xs[i] - st[i]) + gamma_ * (mixed[i] - own[i]);
          z[i] = xs[i] - own[i];
        }
        copies_.publish(t, scratch_, c, state_, g, 1.0f, 1.0f);
      } else if constexpr (std::same_as<scheme, mixing::dcd>) {
        copies_.weighted_sum(mixed_);  // own copy == x
        for (std::size_t i = 0; i < n; ++i) z[i] = (mixed[i] - st[i]) - own[i];
        copies_.publish(t, scratch_, c, state_, g, 1.0f, 1.0f);
        std::copy(own, own + n, xs);
      } else if constexpr (std::same_as<scheme, mixing::ecd>) {
        copies_.weighted_sum(mixed_);
        const float t1 = static_cast<float>(round_ + 1);
        const float c1 = 0.5f * t1;
        for (std::size_t i = 0; i < n; ++i) {
          const float half = mixed[i] - st[i];
          z[i] = xs[i] + c1 * (half - xs[i]);
          xs[i] = half;
        }
        copies_.publish(t, scratch_, c, state_, g, 1.0f - 2.0f / t1, 2.0f / t1);
      } else {  // deep_squeeze
        for (std::size_t i = 0; i < n; ++i) xs[i] -= st[i];
        copies_.publish(t, x, c, state_, g, 0.0f, 1.0f);
        copies_.weighted_sum(mixed_);
        for (std::size_t i = 0; i < n; ++i) xs[i] += gamma_ * (mixed[i] - own[i]);
      }
    }
    ++round_;
  }

  /// This round's (static topologies: every round's) row of W.
  const mixing_row& row() const noexcept { return row_; }
  /// The consensus step CHOCO and DeepSqueeze run with (1 for the schemes that have none).
  float consensus_step() const noexcept { return gamma_; }

  /// Checkpoints hold the round counter, the consensus step and the row of a static topology
  /// (both compared on load), the compressor state and the public copies.
  void save(checkpoint_writer& w) const {
    w.u64(round_);
    w.f32(gamma_);
    if constexpr (topology::static_gossip_topology<T>) {
      w.u64(row_.peers.size());
      for (const int p : row_.peers) w.u32(static_cast<std::uint32_t>(p));
      w.f32(row_.self_weight);
      w.floats(row_.weights);
    }
    save_compressor_state<C>(w, state_);
    copies_.save(w);
  }
  void load(checkpoint_reader& r) {
    const std::uint64_t round = r.u64();
    if (const float gamma = r.f32(); gamma != gamma_)
      r.refuse("the scheme's consensus_step is " + std::to_string(gamma) + " in the checkpoint, " +
               std::to_string(gamma_) + " here");
    if constexpr (topology::static_gossip_topology<T>) {
      mixing_row saved;
      saved.peers.resize(r.count(4));
      for (int& p : saved.peers) p = static_cast<int>(r.u32());
      saved.self_weight = r.f32();
      r.floats(saved.weights);
      if (saved.peers != row_.peers)
        r.refuse("this worker's gossip neighbours differ from the checkpoint's (another topology or world size)");
      auto same_bits = [](std::span<const float> a, std::span<const float> b) {
        return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), 4 * a.size()) == 0);
      };
      if (!same_bits({&saved.self_weight, 1}, {&row_.self_weight, 1}) || !same_bits(saved.weights, row_.weights))
        r.refuse("this worker's mixing weights differ from the checkpoint's (another topology)");
    }
    load_compressor_state<C>(r, state_);
    copies_.load(r);
    round_ = round;
  }

 private:
  float gamma_ = 1.0f;
  std::uint64_t seed_;
  compressor_state_t<C> state_;
  mixing_row row_;
  std::optional<topology::schedule_t<T>> schedule_;  // time-varying topologies only
  exact_mixer mixer_;
  public_copies<C> copies_;
  std::vector<float> mixed_, scratch_;
  std::uint64_t round_ = 0;
};

/// The synchronous gossip protocol (D-PSGD and its compressed relatives): a local step is
/// x <- x - eta d(g); a step that ends with a round hands eta d(g) to model_exchange, which
/// mixes by T's scheme (topology/gossip.hpp). finish() averages the models exactly (ring
/// allreduce), so every worker ends with the node average.
template <compressor C, class T>
class gossip {
 public:
  template <class S>
  gossip(protocol_context ctx, std::span<const float> x0, C c, T topo, S)
      : ctx_(ctx),
        compressor_(std::move(c)),
        exchange_(ctx.transport, topo, x0, topology::consensus_step(topo), ctx.opts.seed, compressor_),
        direction_(x0.size()) {}

  void step(std::span<float> x, std::span<const float> g, bool talk, local_update& u) {
    if (!talk) {
      u.apply(x, g);
      return;
    }
    std::copy(g.begin(), g.end(), direction_.begin());
    u.direct(direction_, x);
    const float eta = u.step_size();
    for (float& v : direction_) v *= eta;
    rng r = ctx_.round_rng();
    exchange_.round(ctx_.transport, x, direction_, compressor_, r);
    ctx_.end_round();
  }

  void finish(std::span<float> x) { collective::ring_allreduce(ctx_.transport, x, collective::reduce_op::mean, ring_); }

  void poll(std::span<float>) {}

  /// Checkpoints hold the model exchange (the direction and ring are scratch).
  void save(checkpoint_writer& w) const { exchange_.save(w); }
  void load(checkpoint_reader& r) { exchange_.load(r); }

 private:
  protocol_context ctx_;
  C compressor_;
  model_exchange<C, T> exchange_;
  std::vector<float> direction_;
  collective::allreduce_workspace ring_;
};

}  // namespace distopt::protocols
