#pragma once
// transport_ref: a non-owning, type-erased reference to any transport, so that an
// optimizer type names only its four policies and the backend is chosen at run time.
// Erasure happens once per message, at the byte boundary (as in Gloo); everything
// above it stays templated.
//
//   distopt::thread_transport& endpoint = ...;
//   distopt::transport_ref t(endpoint);   // endpoint must outlive t
//   t.send(1, distopt::tag{0}, bytes);

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/tag.hpp"

namespace distopt {

namespace detail {
/// An allreduce from `in` into `out` needs them of the same length: a shorter `in` would be
/// read past its end, by this rank or (in shared memory) by its peers. `who` names the call.
inline void check_allreduce_lengths(const char* who, std::size_t in, std::size_t out, int rank) {
  if (in != out)
    throw config_error(std::string(who) + ": the input has " + std::to_string(in) + " floats and the output " +
                       std::to_string(out) + " on rank " + std::to_string(rank) + "; they must have the same length");
}
}  // namespace detail

/// A transport whose receives accept an explicit timeout (besides its default deadline).
template <class T>
concept transport_with_timeout = transport<T> &&
    requires(T& t, int peer, tag tg, byte_buffer& out, std::chrono::milliseconds d) {
  t.recv(peer, tg, out, d);
};

/// A transport with a native mean allreduce it may offer instead of the library's ring
/// (mpi_transport with mpi_options::native_allreduce: MPI_Allreduce).
template <class T>
concept native_allreduce_transport = requires(T& t, std::span<float> v) {
  { t.native_allreduce() } -> std::convertible_to<bool>;
  t.allreduce_mean(v);
};

class transport_ref {
 public:
  template <transport T>
  requires(!std::same_as<std::remove_cvref_t<T>, transport_ref>) transport_ref(T& t)
  noexcept  // NOLINT(google-explicit-constructor): a reference converts implicitly
      : object_(std::addressof(t)), vtable_(&vtable_for<T>) {}

  int rank() const { return vtable_->rank(object_); }
  int size() const { return vtable_->size(object_); }
  void send(int peer, tag tg, std::span<const std::byte> bytes) const { vtable_->send(object_, peer, tg, bytes); }
  /// Blocks until a message arrives or the transport's own deadline passes.
  void recv(int peer, tag tg, byte_buffer& out) const { vtable_->recv(object_, peer, tg, out, std::nullopt); }
  /// Blocks at most `timeout` (for transports that support it; others use their own deadline).
  void recv(int peer, tag tg, byte_buffer& out, std::chrono::milliseconds timeout) const {
    vtable_->recv(object_, peer, tg, out, timeout);
  }
  bool try_recv(int peer, tag tg, byte_buffer& out) const { return vtable_->try_recv(object_, peer, tg, out); }
  /// Replaces v by its mean over all ranks with the backend's own collective and returns
  /// true, if the backend offers one and was asked to use it; otherwise returns false.
  bool native_allreduce_mean(std::span<float> v) const { return native_allreduce_mean(v, v); }
  /// The same, reading `in` and writing the mean to `out` (`in` itself or an array of the
  /// same length: a config_error otherwise, on every backend); nothing is read or written
  /// when it returns false.
  bool native_allreduce_mean(std::span<const float> in, std::span<float> out) const {
    detail::check_allreduce_lengths("native allreduce", in.size(), out.size(), rank());
    return vtable_->native_allreduce_mean(object_, in, out);
  }
  /// A counter that changes whenever a message may have arrived for this rank, if the backend
  /// keeps one (the thread transport), else nullopt. Polling loops over many peers skip their
  /// try_recv pass while it stays the same (protocols/async_gossip.hpp).
  std::optional<std::uint64_t> arrivals() const { return vtable_->arrivals(object_); }

 private:
  struct vtable {
    int (*rank)(void*);
    int (*size)(void*);
    void (*send)(void*, int, tag, std::span<const std::byte>);
    void (*recv)(void*, int, tag, byte_buffer&, std::optional<std::chrono::milliseconds>);
    bool (*try_recv)(void*, int, tag, byte_buffer&);
    bool (*native_allreduce_mean)(void*, std::span<const float>, std::span<float>);
    std::optional<std::uint64_t> (*arrivals)(void*);
  };

  template <class T>
  static constexpr vtable vtable_for{
      [](void* o) { return static_cast<int>(static_cast<T*>(o)->rank()); },
      [](void* o) { return static_cast<int>(static_cast<T*>(o)->size()); },
      [](void* o, int peer, tag tg, std::span<const std::byte> b) { static_cast<T*>(o)->send(peer, tg, b); },
      [](void* o, int peer, tag tg, byte_buffer& out, std::optional<std::chrono::milliseconds> d) {
        if constexpr (transport_with_timeout<T>) {
          if (d) return static_cast<T*>(o)->recv(peer, tg, out, *d);
        }
        static_cast<T*>(o)->recv(peer, tg, out);
      },
      [](void* o, int peer, tag tg, byte_buffer& out) { return static_cast<T*>(o)->try_recv(peer, tg, out); },
      [](void* o, std::span<const float> in, std::span<float> out) -> bool {
        T& t = *static_cast<T*>(o);
        if constexpr (requires {
                        { t.native_allreduce_mean(in, out) } -> std::same_as<bool>;
                      }) {
          return t.native_allreduce_mean(in, out);  // a wrapper that forwards (metered_transport)
        } else if constexpr (native_allreduce_transport<T>) {
          if (!t.native_allreduce()) return false;
          if constexpr (requires { t.allreduce_mean(in, out); }) {
            t.allreduce_mean(in, out);  // reads `in` itself: no copy first
          } else {
            if (in.data() != out.data()) std::copy(in.begin(), in.end(), out.begin());
            t.allreduce_mean(out);
          }
          return true;
        } else {
          return false;
        }
      },
      [](void* o) -> std::optional<std::uint64_t> {
        if constexpr (requires(T & t) {
                        { t.arrivals() } -> std::convertible_to<std::optional<std::uint64_t>>;
                      })
          return static_cast<T*>(o)->arrivals();
        else
          return std::nullopt;
      },
  };

  void* object_;
  const vtable* vtable_;
};

static_assert(transport<transport_ref>, "transport_ref must itself satisfy the transport concept");

}  // namespace distopt
