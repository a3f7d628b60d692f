#pragma once
// compress::power_sgd<Rank> — rank-Rank gradient compression by one step of power
// iteration with a warm start (Vogels, Karimireddy, Jaggi, "PowerSGD: Practical Low-Rank
// Gradient Compression for Distributed Optimization", NeurIPS 2019, arXiv 1905.13727;
// ALGORITHMS.md §5.9).
//
// Each matrix tensor M (rows x cols, column-major in the flat vector) of a worker, plus its
// error-feedback memory e, is replaced by a rank-Rank approximation:
//     M = g + e;  P = M Q;  P = orthonormalise(P)  (modified Gram-Schmidt, twice);
//     Q = M^T P;  approximation = P Q^T;  e = M - P Q^T
// Q (cols x Rank) is kept between rounds (warm start): repeated on the same M this is
// subspace iteration, so the approximation tends to the best rank-Rank one (truncated SVD).
// Tensors with rows == 1 or cols == 1 (biases) or too small to gain, Rank (rows + cols) >=
// rows cols, are sent as raw floats, as in the paper. A column of P that Gram-Schmidt
// reduces to exactly zero stays zero.
//
// Two ways to use it:
//  * As a compressor (encode / decode), one worker's encoding: P and Q of every tensor.
//  * Through its own two-round collective `average(t, v, state, g)`, which the averager
//    (collective/average.hpp, reduction::compressor_driven) calls: round 1 is one ring
//    allreduce-mean of every tensor's P_i = M_i Q (and of the raw tensors' floats); every rank
//    then orthonormalises the same mean P; round 2 is one ring allreduce-mean of every
//    Q_i = M_i^T P. Every rank ends with the same v = P Q^T (= P P^T mean_i(M_i)), and keeps
//    e_i = M_i - P Q^T. The averaged Q is the next round's warm start. The result depends on
//    the ranks only through mean_i M_i (the algebra is linear in M_i), and mean_i e_i follows
//    single-worker error feedback on the mean gradient; a rank's own e_i also accumulates its
//    drift g_i - mean_i g_i, which cancels in the mean. Raw tensors keep no memory.
//
// Shapes: the knob `shapes` (a distopt::layout) names the tensors, which must cover the vector
//   exactly. Empty (the default) treats the vector of n floats as ONE matrix of
//   default_shape(n): rows = the largest divisor of n that is <= sqrt(n), cols = n / rows
//   (4096*4096 -> 4096 x 4096, 100 -> 10 x 10, 96 -> 8 x 12; a prime n -> 1 x n, which is
//   sent uncompressed: give a layout then).
// Initial Q of tensor t (its index in the layout): standard normals from
//   rng(seed, 0xFFFFFFFF, t, purpose::compression), in Q's storage order (row-major: the Rank
//   entries of Q's row 0, then row 1, ...), the same on every rank.
//
// Encoding: u32 n, u32 Rank, u32 T (tensor count), T x (u32 rows, u32 cols), then per tensor
//   in order: compressed -> P (rows x Rank, column-major) then Q (cols x Rank, row-major) as
//   float32; raw -> its rows cols floats. decode checks n against `out`, Rank, and the shapes
//   against its own layout (so both sides must configure the same `shapes`).
// Wire size: 12 + 8 T + 4 sum_t w_t bytes, w_t = Rank (rows_t + cols_t) if compressed, else
//   rows_t cols_t (4096 x 4096 at Rank 2: 65,556 bytes for 64 MiB of floats).
//   The collective sends, per rank, two ring allreduces: of sum_t (compressed ? Rank rows_t :
//   rows_t cols_t) floats and of sum_{t compressed} Rank cols_t floats.
// Bound: biased (unbiased = false); needs error feedback. With orthonormal P the approximation
//   is the orthogonal projection P P^T M, so ||M - C(M)||^2 = ||M||^2 - ||C(M)||^2 <= ||M||^2
//   (delta >= 0; no uniform delta > 0 for one step, but after warm iterations the error nears
//   that of the truncated SVD, sum_{i > Rank} sigma_i^2).
// Summable: its encodings are not (each worker's P is orthonormalised alone); its collective
//   sums the factors instead.
// Knobs: shapes = {} (one near-square matrix), error_feedback = true, seed = 0.
// State (make_state(n)): per compressed tensor Q; the memory e (n floats with error feedback);
//   the packed P buffer of round 1; the ring workspace. No allocation once made.
//
//   distopt::compress::power_sgd<2> c{.shapes = {{128, 784}, {128, 1}, {10, 128}, {10, 1}}};
//   auto s = c.make_state(n);
//   c.encode(g, wire, r, s);            // single worker: P and Q of each tensor
//   c.average(t, g, s, r);              // or: two allreduces, g becomes the mean approximation
//   distopt::optimizer<distopt::compress::power_sgd<2>, distopt::topology::allreduce,
//                      distopt::staleness::synchronous, distopt::local_steps::every_step> opt(t, x0, {}, c);

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "distopt/collective/ring_allreduce.hpp"
#include "distopt/compress/detail/scratch.hpp"
#include "distopt/compress/detail/sparse_format.hpp"
#include "distopt/compress/detail/wire.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/checkpoint.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/layout.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt::compress {

template <unsigned Rank = 2>
struct power_sgd {
  static_assert(Rank >= 1, "compress::power_sgd<Rank>: Rank must be >= 1 (the paper uses 1, 2 or 4)");

  static constexpr unsigned rank = Rank;
  static constexpr bool unbiased = false;
  static constexpr bool summable = false;

  layout shapes{};             ///< tensors of the flat vector; empty: one matrix of default_shape(n)
  bool error_feedback = true;  ///< keep e = M - P Q^T and add it to the next input
  std::uint64_t seed = 0;      ///< key of the initial Gaussian Q (same on every rank)
  /// decode's aligned copy of P and Q: working memory, never copied; one object per thread.
  mutable detail::scratch<float> factors_{};

  /// The matrix shape given to n floats when `shapes` is empty (see the header comment).
  static tensor_shape default_shape(std::size_t n) noexcept {
    std::size_t r = 1;
    while ((r + 1) * (r + 1) <= n) ++r;  // floor(sqrt(n)); at most 65536 steps for n < 2^32
    while (r > 1 && n % r != 0) --r;
    return {n == 0 ? 0 : r, n == 0 ? 0 : n / r};
  }
  /// True if a rows x cols tensor is sent as factors: rows, cols > 1 and Rank (rows + cols) < rows cols.
  static constexpr bool compressed(tensor_shape t) noexcept {
    return t.rows > 1 && t.cols > 1 && std::uint64_t{Rank} * (t.rows + t.cols) < std::uint64_t{t.rows} * t.cols;
  }

  struct tensor_plan {
    std::size_t offset, rows, cols;
    bool compressed;
    std::size_t slot;    // start of P (compressed) or of the raw floats in `packed`
    std::size_t q_slot;  // start of Q in `q` (compressed only)
  };
  struct state {
    std::size_t n = 0;
    std::vector<tensor_plan> tensors;
    std::vector<float> q;       // every compressed tensor's Q, row-major: the warm start
    std::vector<float> packed;  // every compressed tensor's P, then every raw tensor's floats
    std::vector<float> memory;  // e (n floats with error feedback, else empty)
    collective::allreduce_workspace ring;

    /// Checkpoints hold the tensor shapes (compared on load), the warm start Q and the memory e;
    /// P and the ring are scratch.
    void save(checkpoint_writer& w) const {
      w.u64(n);
      w.u64(tensors.size());
      for (const tensor_plan& t : tensors) {
        w.u64(t.rows);
        w.u64(t.cols);
      }
      w.floats(q);
      w.floats(memory);
    }
    void load(checkpoint_reader& r) {
      const std::uint64_t saved_n = r.u64();
      if (saved_n != n)
        r.refuse("compress::power_sgd's state is for " + std::to_string(saved_n) + " floats, this one for " +
                 std::to_string(n));
      if (r.u64() != tensors.size()) r.refuse("compress::power_sgd's shapes have another number of tensors");
      for (std::size_t i = 0; i < tensors.size(); ++i) {
        const std::uint64_t rows = r.u64(), cols = r.u64();
        if (rows != tensors[i].rows || cols != tensors[i].cols)
          r.refuse("compress::power_sgd's tensor " + std::to_string(i) + " is " + std::to_string(rows) + " x " +
                   std::to_string(cols) + " in the checkpoint, " + std::to_string(tensors[i].rows) + " x " +
                   std::to_string(tensors[i].cols) + " here (its `shapes`)");
      }
      r.floats(q, "compress::power_sgd's warm start Q");
      r.floats(memory, "compress::power_sgd's error-feedback memory (its `error_feedback` knob)");
    }
  };

  state make_state(std::size_t n) const {
    const layout ts = tensors_for(n);
    state s;
    s.n = n;
    std::size_t offset = 0, q_size = 0, p_size = 0, raw_size = 0;
    for (const tensor_shape& t : ts) {
      const bool c = compressed(t);
      s.tensors.push_back({offset, t.rows, t.cols, c, 0, q_size});
      offset += t.rows * t.cols;
      if (c) {
        q_size += Rank * t.cols;
        p_size += Rank * t.rows;
      } else {
        raw_size += t.rows * t.cols;
      }
    }
    std::size_t p_next = 0, raw_next = p_size;
    for (tensor_plan& t : s.tensors)
      t.slot = t.compressed ? std::exchange(p_next, p_next + Rank * t.rows)
                            : std::exchange(raw_next, raw_next + t.rows * t.cols);
    s.q.resize(q_size);
    for (std::size_t i = 0; i < s.tensors.size(); ++i) {
      const tensor_plan& t = s.tensors[i];
      if (!t.compressed) continue;
      rng g(seed, 0xFFFFFFFFu, static_cast<std::uint32_t>(i), purpose::compression);
      for (std::size_t j = 0; j < Rank * t.cols; ++j) s.q[t.q_slot + j] = g.normal();
    }
    s.packed.resize(p_size + raw_size);
    if (error_feedback) s.memory.assign(n, 0.0f);
    return s;
  }

  /// One worker's encoding of `in` (see the format above); advances the warm start and the memory.
  void encode(std::span<const float> in, byte_buffer& wire, rng& /*unused*/, state& s) const {
    check_state(s, in.size());
    detail::put_length(wire, s.n, who);
    detail::put(wire, static_cast<std::uint32_t>(Rank));
    detail::put(wire, static_cast<std::uint32_t>(s.tensors.size()));
    for (const tensor_plan& t : s.tensors) {
      detail::put(wire, static_cast<std::uint32_t>(t.rows));
      detail::put(wire, static_cast<std::uint32_t>(t.cols));
    }
    for (const tensor_plan& t : s.tensors) {
      if (!t.compressed) {
        append(wire, std::as_bytes(in.subspan(t.offset, t.rows * t.cols)));
        continue;
      }
      multiply_p(in.data(), t, s);
      orthonormalise(p_map(s, t));
      multiply_q(matrix(in.data(), s, t), t, s);
      append(wire, std::as_bytes(std::span<const float>(s.packed).subspan(t.slot, Rank * t.rows)));
      append(wire, std::as_bytes(std::span<const float>(s.q).subspan(t.q_slot, Rank * t.cols)));
      if (error_feedback) reconstruct<true>(p_map(s, t), q_map(s, t), matrix_map(s.memory.data() + t.offset, t));
    }
  }

  /// Writes P Q^T of every compressed tensor and the raw floats of the others into `out`.
  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    detail::reader r(bytes, who);
    detail::expect_length(r, out.size());
    const auto sent_rank = r.get<std::uint32_t>("rank");
    if (sent_rank != Rank)
      r.fail("sent with rank " + std::to_string(sent_rank) + " but this is power_sgd<" + std::to_string(Rank) + ">");
    check_layout(out.size());
    const auto count = r.get<std::uint32_t>("tensor count");
    const std::size_t expected_count = shapes.empty() ? std::size_t{!out.empty()} : shapes.size();
    if (count != expected_count)
      r.fail("sent " + std::to_string(count) + " tensors but the layout here has " + std::to_string(expected_count));
    const auto header = r.take(8 * std::size_t{count}, "tensor shapes");
    // First pass: the shapes must be this layout's and the payload complete, before out is written.
    std::size_t index = 0, payload = 0;
    for_each_shape(header, [&](tensor_shape t) {
      const tensor_shape want = shapes.empty() ? default_shape(out.size()) : shapes[index];
      if (t.rows != want.rows || t.cols != want.cols)
        r.fail("tensor " + std::to_string(index) + " is sent as " + std::to_string(t.rows) + " x " +
               std::to_string(t.cols) + " but the layout here says " + std::to_string(want.rows) + " x " +
               std::to_string(want.cols));
      ++index;
      payload += compressed(t) ? Rank * (t.rows + t.cols) : t.rows * t.cols;
    });
    if (r.remaining() != 4 * payload)
      r.fail("the factors need " + std::to_string(4 * payload) + " bytes but " + std::to_string(r.remaining()) +
             " follow the header");
    std::size_t offset = 0;
    for_each_shape(header, [&](tensor_shape t) {
      float* dst = out.data() + offset;
      offset += t.rows * t.cols;
      if (!compressed(t)) {
        std::memcpy(dst, r.take(4 * t.rows * t.cols, "raw tensor").data(), 4 * t.rows * t.cols);
        return;
      }
      std::vector<float>& f = factors_.sized(Rank * (t.rows + t.cols));  // aligned copies of P and Q
      std::memcpy(f.data(), r.take(4 * Rank * (t.rows + t.cols), "factors").data(), 4 * Rank * (t.rows + t.cols));
      const tensor_plan plan{0, t.rows, t.cols, true, 0, 0};
      reconstruct(const_p_map(f.data(), plan), const_q_map(f.data() + Rank * t.rows, plan), matrix_map(dst, plan));
    });
  }

  /// Exact encoded size for n floats (throws config_error if `shapes` does not cover n).
  std::size_t max_encoded_bytes(std::size_t n) const {
    const layout ts = tensors_for(n);
    std::size_t bytes = 12 + 8 * ts.size();
    for (const tensor_shape& t : ts) bytes += 4 * (compressed(t) ? Rank * (t.rows + t.cols) : t.rows * t.cols);
    return bytes;
  }

  /// The two-round collective: replaces v on every rank by the same P Q^T built from the
  /// mean factors of all ranks (see above), and keeps this rank's memory e = M - P Q^T.
  void average(transport_ref t, std::span<float> v, state& s, rng& /*unused*/) const {
    check_state(s, v.size());
    for (const tensor_plan& p : s.tensors) {
      if (p.compressed)
        multiply_p(v.data(), p, s);
      else
        std::copy_n(v.data() + p.offset, p.rows * p.cols, s.packed.data() + p.slot);
    }
    if (!s.packed.empty()) collective::ring_allreduce(t, s.packed, collective::reduce_op::mean, s.ring);
    for (const tensor_plan& p : s.tensors) {
      if (!p.compressed) {
        std::copy_n(s.packed.data() + p.slot, p.rows * p.cols, v.data() + p.offset);
        continue;
      }
      orthonormalise(p_map(s, p));
      multiply_q(matrix(v.data(), s, p), p, s);
    }
    if (!s.q.empty()) collective::ring_allreduce(t, s.q, collective::reduce_op::mean, s.ring);
    for (const tensor_plan& p : s.tensors) {
      if (!p.compressed) continue;
      auto out = matrix_map(v.data() + p.offset, p);
      reconstruct(p_map(s, p), q_map(s, p), out);
      if (error_feedback) matrix_map(s.memory.data() + p.offset, p) -= out;
    }
  }

 private:
  static constexpr const char* who = "compress::power_sgd";
  static constexpr int rank_cols = static_cast<int>(Rank);
  using p_matrix = Eigen::Matrix<float, Eigen::Dynamic, rank_cols>;
  using q_matrix = Eigen::Matrix<float, Eigen::Dynamic, rank_cols, Rank == 1 ? Eigen::ColMajor : Eigen::RowMajor>;
  using matrix_view = Eigen::Map<Eigen::MatrixXf>;

  static matrix_view matrix_map(float* data, const tensor_plan& t) {
    return {data, static_cast<Eigen::Index>(t.rows), static_cast<Eigen::Index>(t.cols)};
  }
  static Eigen::Map<const Eigen::MatrixXf> const_matrix_map(const float* data, const tensor_plan& t) {
    return {data, static_cast<Eigen::Index>(t.rows), static_cast<Eigen::Index>(t.cols)};
  }
  static Eigen::Map<p_matrix> p_map(state& s, const tensor_plan& t) {
    return {s.packed.data() + t.slot, static_cast<Eigen::Index>(t.rows), rank_cols};
  }
  static Eigen::Map<q_matrix> q_map(state& s, const tensor_plan& t) {
    return {s.q.data() + t.q_slot, static_cast<Eigen::Index>(t.cols), rank_cols};
  }
  static Eigen::Map<const p_matrix> const_p_map(const float* data, const tensor_plan& t) {
    return {data, static_cast<Eigen::Index>(t.rows), rank_cols};
  }
  static Eigen::Map<const q_matrix> const_q_map(const float* data, const tensor_plan& t) {
    return {data, static_cast<Eigen::Index>(t.cols), rank_cols};
  }

  layout tensors_for(std::size_t n) const {
    check_layout(n);
    if (shapes.empty()) return n == 0 ? layout{} : layout{default_shape(n)};
    return shapes;
  }
  // config_error unless the tensors (`shapes`, or one default_shape matrix) cover n floats.
  void check_layout(std::size_t n) const {
    detail::check_length(n, who);
    if (shapes.empty()) return;
    for (const tensor_shape& t : shapes)
      if (t.rows == 0 || t.cols == 0)
        throw config_error(std::string(who) + ": a tensor of the layout is " + std::to_string(t.rows) + " x " +
                           std::to_string(t.cols) + "; every tensor needs at least one row and one column");
    if (parameter_count(shapes) != n)
      throw config_error(std::string(who) + ": the layout covers " + std::to_string(parameter_count(shapes)) +
                         " floats but the vector has " + std::to_string(n) +
                         "; give shapes that add up to the model size, or an empty layout for one matrix");
  }

  void check_state(const state& s, std::size_t n) const {
    if (s.n != n || s.memory.size() != (error_feedback ? n : 0))
      throw config_error(std::string(who) + ": state made for " + std::to_string(s.n) + " floats (error feedback " +
                         (s.memory.empty() ? "off" : "on") + ") used for " + std::to_string(n) + " (error feedback " +
                         (error_feedback ? "on" : "off") + "); make the state with this compressor's make_state(n)");
  }

  template <class F>
  static void for_each_shape(std::span<const std::byte> header, F&& f) {
    detail::reader h(header, who);
    while (h.remaining() > 0) {
      const auto rows = h.get<std::uint32_t>("rows");
      const auto cols = h.get<std::uint32_t>("cols");
      f(tensor_shape{rows, cols});
    }
  }

  // M of a compressed tensor after multiply_p: the memory (which absorbed the input) or the input.
  const float* matrix(const float* in, const state& s, const tensor_plan& t) const {
    return (error_feedback ? s.memory.data() : in) + t.offset;
  }

  // P = M Q, one column of M at a time (one pass over M; P stays in cache). With error
  // feedback M = e + g is formed in e in the same pass; e then holds M until reconstruct.
  void multiply_p(const float* g, const tensor_plan& t, state& s) const {
    const auto in = const_matrix_map(g + t.offset, t);
    auto e = matrix_map(error_feedback ? s.memory.data() + t.offset : nullptr, t);
    auto p = p_map(s, t);
    const auto q = q_map(s, t);
    p.setZero();
    for (Eigen::Index j = 0; j < in.cols(); ++j) {
      if (error_feedback) {
        e.col(j) += in.col(j);
        p.noalias() += e.col(j) * q.row(j);
      } else {
        p.noalias() += in.col(j) * q.row(j);
      }
    }
  }
  // Q = M^T P, one row of Q per column of M.
  static void multiply_q(const float* m_data, const tensor_plan& t, state& s) {
    const auto m = const_matrix_map(m_data, t);
    const auto p = p_map(s, t);
    auto q = q_map(s, t);
    for (Eigen::Index j = 0; j < m.cols(); ++j) q.row(j).noalias() = m.col(j).transpose() * p;
  }
  // out = P Q^T (Subtract: out -= P Q^T), one column at a time.
  template <bool Subtract = false, class PMap, class QMap>
  static void reconstruct(const PMap& p, const QMap& q, matrix_view out) {
    for (Eigen::Index j = 0; j < out.cols(); ++j) {
      if constexpr (Subtract)
        out.col(j).noalias() -= p * q.row(j).transpose();
      else
        out.col(j).noalias() = p * q.row(j).transpose();
    }
  }
  // Modified Gram-Schmidt, each column orthogonalised twice ("twice is enough": Giraud,
  // Langou, Rozloznik 2005): when a column of P depends on the previous ones (M of rank below
  // Rank), one pass leaves rounding noise with O(1) components along them. A column reduced
  // to exactly zero stays zero.
  static void orthonormalise(Eigen::Map<p_matrix> p) {
    for (int k = 0; k < rank_cols; ++k) {
      auto c = p.col(k);
      for (int pass = 0; pass < 2; ++pass)
        for (int l = 0; l < k; ++l) c -= p.col(l).dot(c) * p.col(l);
      const float norm = c.stableNorm();
      if (norm > 0.0f)
        c /= norm;
      else
        c.setZero();
    }
  }
};

}  // namespace distopt::compress
