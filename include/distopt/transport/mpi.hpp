#pragma once
// mpi_transport: the transport concept over an MPI communicator, for programs
// launched by mpirun or srun, one rank per process. This is the only distopt
// header that includes <mpi.h>; link distopt::mpi to use it.
//
//   int main(int argc, char** argv) {
//     distopt::mpi_session mpi(argc, argv);          // MPI_Init_thread .. MPI_Finalize, unless MPI is already up
//     distopt::mpi_transport t;                      // over a duplicate of MPI_COMM_WORLD
//     distopt::algorithms::minibatch_sgd opt(t, x0, {.learning_rate = 0.1f});
//     ...
//   }
//   mpirun -np 4 ./program
//
// Wire: a message is one MPI message on a private duplicate of the user's
// communicator (MPI_Comm_dup, collective: every rank constructs its transport
// together), so our tags never meet the user's. A distopt tag is 32 bits and MPI
// tags are smaller (MPI_TAG_UB >= 32767), so user tags map to the lower half of
// the MPI tag range and the library's reserved tags to the upper half, both
// modulo the half. Two distopt tags may then share an MPI tag; each message
// carries its full tag in a 4-byte trailer, and a receive that meets a message
// of another tag keeps it for later, so every tag remains its own ordered stream.
// Ranks must share one byte order (a homogeneous cluster).
//
// send copies the payload into a pooled buffer and starts MPI_Isend, so `bytes`
// may be reused on return; completed sends return their buffers to the pool.
// recv polls MPI_Improbe until the message is there or the deadline passes
// (MPI has no deadline of its own), then throws transport_error naming the peer.
// A matched message is received with MPI_Mrecv straight into `out`.
//
// When a rank dies, mpirun aborts the whole job: the survivors are killed rather
// than left waiting, so there is no "peer lost" error to catch under MPI.
//
// Native collectives: allreduce_sum / allreduce_mean call MPI_Allreduce, which
// is usually faster than collective::ring_allreduce over this transport. Its
// addition order is the MPI library's choice, so its results are NOT
// bit-identical to the ring (and so to the thread or TCP transports); they
// repeat only for the same library, world size and message size. MPI cannot
// cancel a collective, so these calls have no deadline. The optimizer keeps
// the ring unless mpi_options::native_allreduce asks for the native path. The
// mean reads a const input and writes another array without copying it first,
// and (power-of-two worlds) scales on the way in: within 1-5 % of a raw
// out-of-place MPI_Allreduce at 4 KiB-1 MiB (bench/compare/allreduce_mpi).
//
// Threads: one transport is used by one thread at a time; mpi_session asks for
// MPI_THREAD_FUNNELED by default, which is enough when MPI is called only from
// the thread that started it.

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/deadline.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/tag.hpp"
#include "distopt/core/transport_ref.hpp"
#include "distopt/transport/thread.hpp"  // detail::describe_tag

namespace distopt {

struct mpi_options {
  /// Default deadline of a receive.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  /// The world size the program was configured for (e.g. --workers); 0 accepts any.
  /// A communicator of another size is a config_error naming both.
  int expected_size = 0;
  /// Let the optimizer's uncompressed averaging use MPI_Allreduce instead of the
  /// ring (faster; not bit-identical to other transports; no deadline).
  bool native_allreduce = false;
};

namespace detail {

inline std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(length));
}

inline bool mpi_is_up() {
  int initialised = 0, finalised = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  return initialised && !finalised;
}

inline std::string mpi_thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
    default:
      return "thread level " + std::to_string(level);
  }
}

}  // namespace detail

/// RAII owner of MPI's initialisation: MPI_Init_thread in the constructor and
/// MPI_Finalize in the destructor, unless MPI was already initialised by someone
/// else (then it does neither). Make one at the top of main, before any transport.
class mpi_session {
 public:
  explicit mpi_session(int required = MPI_THREAD_FUNNELED) { start(nullptr, nullptr, required); }
  mpi_session(int& argc, char**& argv, int required = MPI_THREAD_FUNNELED) { start(&argc, &argv, required); }
  mpi_session(const mpi_session&) = delete;
  mpi_session& operator=(const mpi_session&) = delete;
  ~mpi_session() {
    if (owns_ && detail::mpi_is_up()) MPI_Finalize();
  }

  /// True if this session initialised MPI (and will finalise it).
  bool owns_mpi() const noexcept { return owns_; }
  /// The thread support MPI provides (MPI_THREAD_*).
  int thread_support() const noexcept { return provided_; }

 private:
  void start(int* argc, char*** argv, int required) {
    int finalised = 0;
    MPI_Finalized(&finalised);
    if (finalised)
      throw config_error(
          "mpi_session: MPI has already been finalised and cannot be started again; "
          "make one mpi_session at the top of main that lives until the end");
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (initialised) {
      MPI_Query_thread(&provided_);
    } else {
      const int rc = MPI_Init_thread(argc, argv, required, &provided_);
      if (rc != MPI_SUCCESS) throw config_error("mpi_session: MPI_Init_thread failed: " + detail::mpi_error_text(rc));
      owns_ = true;
    }
    if (provided_ < required) {
      const std::string message = "mpi_session: MPI provides " + detail::mpi_thread_level_name(provided_) + " but " +
                                  detail::mpi_thread_level_name(required) +
                                  " was required; use an MPI built with thread support or require less";
      if (owns_) MPI_Finalize();
      owns_ = false;
      throw config_error(message);
    }
  }

  bool owns_ = false;
  int provided_ = MPI_THREAD_SINGLE;
};

/// One rank's endpoint of an MPI communicator; meets the transport concept.
class mpi_transport {
 public:
  /// Duplicates `comm` (collective over it). Throws config_error if MPI is not
  /// initialised or the size differs from o.expected_size.
  explicit mpi_transport(MPI_Comm comm = MPI_COMM_WORLD, mpi_options o = {}) : options_(o) {
    if (!detail::mpi_is_up())
      throw config_error(
          "mpi_transport: MPI is not initialised (or already finalised); create a "
          "distopt::mpi_session (or call MPI_Init_thread) first and keep it alive while "
          "transports exist");
    if (comm == MPI_COMM_NULL) throw config_error("mpi_transport: the communicator is MPI_COMM_NULL");
    if (o.timeout.count() <= 0)
      throw config_error("mpi_transport: mpi_options.timeout must be > 0 ms, got " + std::to_string(o.timeout.count()));
    int size = 0;
    check(MPI_Comm_size(comm, &size), "MPI_Comm_size");
    if (o.expected_size < 0)
      throw config_error("mpi_transport: mpi_options.expected_size must be >= 0 (0: any), got " +
                         std::to_string(o.expected_size));
    if (o.expected_size != 0 && o.expected_size != size)
      throw config_error("mpi_transport: the configuration expects " + std::to_string(o.expected_size) +
                         " workers but the MPI communicator has " + std::to_string(size) +
                         " ranks; launch with mpirun -np " + std::to_string(o.expected_size) + " or configure " +
                         std::to_string(size) + " workers");
    check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);  // errors become transport_error, not an abort
    MPI_Comm_rank(comm_, &rank_);
    size_ = size;
    void* attribute = nullptr;
    int found = 0;
    MPI_Comm_get_attr(comm_, MPI_TAG_UB, &attribute, &found);
    const long tag_ub = found ? *static_cast<int*>(attribute) : 32767;  // the standard's minimum
    tag_half_ = static_cast<std::uint32_t>((tag_ub + 1) / 2);
  }

  mpi_transport(const mpi_transport&) = delete;
  mpi_transport& operator=(const mpi_transport&) = delete;

  /// Waits (up to the deadline) until the sent messages have left, then frees the
  /// duplicate communicator.
  ~mpi_transport() {
    if (!detail::mpi_is_up()) return;  // the user finalised first: nothing may be called
    drain();
    MPI_Comm_free(&comm_);
  }

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  /// The private communicator (a duplicate of the one given).
  MPI_Comm communicator() const noexcept { return comm_; }
  /// True if mpi_options::native_allreduce asked the optimizer to average with MPI_Allreduce.
  bool native_allreduce() const noexcept { return options_.native_allreduce; }

  void send(int peer, tag tg, std::span<const std::byte> bytes) {
    check_peer(peer, "send to");
    if (bytes.size() > static_cast<std::size_t>(INT_MAX) - trailer_bytes)
      throw config_error("mpi transport: a message of " + std::to_string(bytes.size()) +
                         " bytes exceeds MPI's limit of 2 GiB per message; send it in parts");
    reap();
    byte_buffer frame = pooled();
    frame.resize(bytes.size() + trailer_bytes);
    if (!bytes.empty()) std::memcpy(frame.data(), bytes.data(), bytes.size());
    const auto value = static_cast<std::uint32_t>(tg);
    std::memcpy(frame.data() + bytes.size(), &value, trailer_bytes);
    MPI_Request request = MPI_REQUEST_NULL;
    // The frame's heap block does not move when the vector holding it grows.
    const int rc =
        MPI_Isend(frame.data(), static_cast<int>(frame.size()), MPI_BYTE, peer, mpi_tag(tg), comm_, &request);
    if (rc != MPI_SUCCESS) fail(rc, "MPI_Isend to rank " + std::to_string(peer));
    requests_.push_back(request);
    frames_.push_back(std::move(frame));
  }

  void recv(int peer, tag tg, byte_buffer& out) { recv(peer, tg, out, options_.timeout); }

  void recv(int peer, tag tg, byte_buffer& out, std::chrono::milliseconds timeout) {
    check_peer(peer, "receive from");
    if (take_kept(peer, tg, out)) return;
    const auto start = std::chrono::steady_clock::now();
    for (unsigned polls = 0;; ++polls) {
      if (poll(peer, tg, out)) return;
      reap();
      const auto waited = std::chrono::steady_clock::now() - start;
      if (waited >= timeout)
        throw transport_error("mpi transport: rank " + std::to_string(rank_) + " waited " +
                              std::to_string(timeout.count()) + " ms for a message from rank " + std::to_string(peer) +
                              " (" + detail::describe_tag(tg) +
                              ") and none came; the peer is stuck or slow (raise the timeout if it is only slow)");
      back_off(polls, waited);
    }
  }

  bool try_recv(int peer, tag tg, byte_buffer& out) {
    check_peer(peer, "receive from");
    reap();
    return take_kept(peer, tg, out) || poll(peer, tg, out);
  }

  /// Native MPI_Allreduce (sum) of `in` over all ranks into `out` (`in` itself, or an array of
  /// the same length). See the header comment: not bit-identical to the ring, no deadline.
  void allreduce_sum(std::span<const float> in, std::span<float> out) {
    distopt::detail::check_allreduce_lengths("mpi transport: allreduce_sum", in.size(), out.size(), rank_);
    const bool in_place = in.data() == out.data();
    // MPI counts are int: reduce in parts of at most INT_MAX floats.
    for (std::size_t off = 0; off < out.size(); off += static_cast<std::size_t>(INT_MAX)) {
      const int count = static_cast<int>(std::min<std::size_t>(out.size() - off, INT_MAX));
      check(
          MPI_Allreduce(in_place ? MPI_IN_PLACE : in.data() + off, out.data() + off, count, MPI_FLOAT, MPI_SUM, comm_),
          "MPI_Allreduce");
    }
  }
  void allreduce_sum(std::span<float> data) { allreduce_sum(data, data); }

  /// The sum times 1/size(), from `in` into `out` (`in` itself, or an array of the same length).
  /// With a power-of-two size, 1/size() is a power of two and scaling commutes with every
  /// rounding of the sum, so the inputs are scaled on their way into `out` (where the copy
  /// would go anyway): the same bits as scaling the sum, without a second pass over the
  /// result, which MPI has just written and this core's cache does not hold. Other sizes
  /// scale the sum. A multiplication, not the ring's division: this path is not
  /// bit-identical to the ring anyway.
  void allreduce_mean(std::span<const float> in, std::span<float> out) {
    distopt::detail::check_allreduce_lengths("mpi transport: allreduce_mean", in.size(), out.size(), rank_);
    const float scale = 1.0f / static_cast<float>(size_);
    if ((size_ & (size_ - 1)) == 0) {
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = in[i] * scale;
      allreduce_sum(out);
      return;
    }
    allreduce_sum(in, out);
    for (float& x : out) x *= scale;
  }
  void allreduce_mean(std::span<float> data) { allreduce_mean(data, data); }

 private:
  static constexpr std::size_t trailer_bytes = sizeof(std::uint32_t);
  static constexpr std::size_t max_pooled = 64;

  /// User tags go to [0, half), reserved tags to [half, 2 half), each modulo half.
  int mpi_tag(tag tg) const noexcept {
    const auto v = static_cast<std::uint32_t>(tg);
    return static_cast<int>(v < detail::reserved_tag_base ? v % tag_half_
                                                          : tag_half_ + (v - detail::reserved_tag_base) % tag_half_);
  }
  static std::uint64_t key(int peer, tag tg) noexcept {
    return (std::uint64_t(static_cast<std::uint32_t>(peer)) << 32) | static_cast<std::uint32_t>(tg);
  }

  /// Receives, if one is there, the next message from `peer` on tg's MPI tag; a
  /// message of another distopt tag sharing that MPI tag is kept for later.
  bool poll(int peer, tag tg, byte_buffer& out) {
    for (;;) {
      int found = 0;
      MPI_Message message = MPI_MESSAGE_NULL;
      MPI_Status status;
      check(MPI_Improbe(peer, mpi_tag(tg), comm_, &found, &message, &status), "MPI_Improbe");
      if (!found) return false;
      int count = 0;
      MPI_Get_count(&status, MPI_BYTE, &count);
      out.resize(static_cast<std::size_t>(count));
      check(MPI_Mrecv(out.data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE), "MPI_Mrecv");
      if (static_cast<std::size_t>(count) < trailer_bytes)
        throw transport_error("mpi transport: rank " + std::to_string(rank_) + " received a " + std::to_string(count) +
                              "-byte message from rank " + std::to_string(peer) +
                              ", shorter than its tag trailer; is another program using this communicator?");
      std::uint32_t value = 0;
      std::memcpy(&value, out.data() + count - trailer_bytes, trailer_bytes);
      out.resize(static_cast<std::size_t>(count) - trailer_bytes);
      if (value == static_cast<std::uint32_t>(tg)) return true;
      kept_[key(peer, tag{value})].push_back(std::move(out));  // another stream's: keep it in order
      out = byte_buffer{};
    }
  }

  bool take_kept(int peer, tag tg, byte_buffer& out) {
    if (kept_.empty()) return false;
    const auto it = kept_.find(key(peer, tg));
    if (it == kept_.end()) return false;
    std::swap(out, it->second.front());
    it->second.pop_front();
    if (it->second.empty()) kept_.erase(it);
    return true;
  }

  /// Waiting: the first polls are back to back (the message is often microseconds
  /// away), then each poll yields the core (under --oversubscribe ranks outnumber
  /// cores), and after 10 ms each sleeps 100 us, so a long wait does not burn a core.
  static void back_off(unsigned polls, std::chrono::steady_clock::duration waited) {
    if (polls < 64) return;
    if (waited < std::chrono::milliseconds(10))
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(100));
  }

  /// Returns the buffers of completed sends to the pool.
  void reap() {
    if (requests_.empty()) return;
    int done = 0;
    indices_.resize(requests_.size());
    check(
        MPI_Testsome(static_cast<int>(requests_.size()), requests_.data(), &done, indices_.data(), MPI_STATUSES_IGNORE),
        "MPI_Testsome");
    if (done <= 0) return;  // MPI_UNDEFINED: no active request
    std::size_t kept = 0;
    for (std::size_t i = 0; i < requests_.size(); ++i) {
      if (requests_[i] == MPI_REQUEST_NULL) {
        if (pool_.size() < max_pooled) pool_.push_back(std::move(frames_[i]));
        continue;
      }
      if (kept != i) {
        requests_[kept] = requests_[i];
        frames_[kept] = std::move(frames_[i]);
      }
      ++kept;
    }
    requests_.resize(kept);
    frames_.resize(kept);
  }

  byte_buffer pooled() {
    if (pool_.empty()) return {};
    byte_buffer b = std::move(pool_.back());
    pool_.pop_back();
    return b;
  }

  /// Lets the last sends reach their receivers (up to the deadline). Messages no
  /// one received by then are abandoned: their requests are freed and their buffers
  /// deliberately leaked, because MPI may still read them.
  void drain() noexcept {
    const auto deadline = distopt::detail::deadline_after(options_.timeout);
    try {
      for (unsigned polls = 0; !requests_.empty() && std::chrono::steady_clock::now() < deadline; ++polls) {
        reap();
        back_off(polls, std::chrono::milliseconds(10));
      }
    } catch (const transport_error&) {  // MPI failed: abandon what is left
    }
    if (requests_.empty()) return;
    for (MPI_Request& r : requests_) MPI_Request_free(&r);
    for (byte_buffer& f : frames_) (void)new byte_buffer(std::move(f));  // leaked on purpose, see above
  }

  void check_peer(int peer, const char* what) const {
    if (peer < 0 || peer >= size_)
      throw config_error("mpi transport: rank " + std::to_string(rank_) + " cannot " + what + " rank " +
                         std::to_string(peer) + ": ranks are 0.." + std::to_string(size_ - 1));
  }
  void check(int rc, const std::string& what) const {
    if (rc != MPI_SUCCESS) fail(rc, what);
  }
  [[noreturn]] void fail(int rc, const std::string& what) const {
    throw transport_error("mpi transport: rank " + std::to_string(rank_) + ": " + what +
                          " failed: " + detail::mpi_error_text(rc));
  }

  mpi_options options_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 0;
  std::uint32_t tag_half_ = 16384;
  std::vector<MPI_Request> requests_;  // sends in flight ...
  std::vector<byte_buffer> frames_;    // ... and their buffers, index for index
  std::vector<int> indices_;           // MPI_Testsome's output, reused
  std::vector<byte_buffer> pool_;      // buffers of completed sends, reused by the next sends
  std::unordered_map<std::uint64_t, std::deque<byte_buffer>> kept_;  // received ahead of their turn
};

static_assert(transport<mpi_transport>);
static_assert(transport_with_timeout<mpi_transport>);

}  // namespace distopt
