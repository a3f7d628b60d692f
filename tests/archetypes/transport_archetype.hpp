#pragma once
// transport_archetype: a type that meets distopt::transport (core/concepts.hpp)
// exactly and offers nothing more: no default construction, no copies or moves,
// no const members, rank()/size() return a type that only converts to int. Code
// constrained on `transport` (transport_ref first of all) must accept it; if it
// stops compiling, that code relies on more than the concept promises.
//
// Near misses, one requirement broken each, check the concept from the other side.
// Everything here is only declared: it is used in unevaluated contexts only.

#include <cstddef>
#include <span>
#include <type_traits>
#include <vector>

#include <distopt/core/byte_buffer.hpp>
#include <distopt/core/concepts.hpp>
#include <distopt/core/tag.hpp>
#include <distopt/core/transport_ref.hpp>

namespace archetypes {

/// Converts to int and does nothing else.
struct convertible_to_int {
  convertible_to_int(const convertible_to_int&) = delete;
  convertible_to_int& operator=(const convertible_to_int&) = delete;
  operator int() const;  // NOLINT(google-explicit-constructor): the conversion is the point
};

class transport_archetype {
 public:
  transport_archetype() = delete;
  transport_archetype(const transport_archetype&) = delete;
  transport_archetype& operator=(const transport_archetype&) = delete;

  convertible_to_int rank();
  convertible_to_int size();
  void send(int peer, distopt::tag tg, std::span<const std::byte> bytes);
  void recv(int peer, distopt::tag tg, distopt::byte_buffer& out);
  bool try_recv(int peer, distopt::tag tg, distopt::byte_buffer& out);
};

/// Near misses: each breaks exactly one requirement of the concept.
namespace near_miss {

struct no_rank {
  int size();
  void send(int, distopt::tag, std::span<const std::byte>);
  void recv(int, distopt::tag, distopt::byte_buffer&);
  bool try_recv(int, distopt::tag, distopt::byte_buffer&);
};

struct no_try_recv {
  int rank();
  int size();
  void send(int, distopt::tag, std::span<const std::byte>);
  void recv(int, distopt::tag, distopt::byte_buffer&);
};

/// try_recv must return exactly bool.
struct try_recv_returns_int {
  int rank();
  int size();
  void send(int, distopt::tag, std::span<const std::byte>);
  void recv(int, distopt::tag, distopt::byte_buffer&);
  int try_recv(int, distopt::tag, distopt::byte_buffer&);
};

/// send must accept any span of const bytes, not only a mutable one.
struct send_takes_mutable_bytes {
  int rank();
  int size();
  void send(int, distopt::tag, std::span<std::byte>);
  void recv(int, distopt::tag, distopt::byte_buffer&);
  bool try_recv(int, distopt::tag, distopt::byte_buffer&);
};

/// recv must fill a distopt::byte_buffer.
struct recv_into_plain_vector {
  int rank();
  int size();
  void send(int, distopt::tag, std::span<const std::byte>);
  void recv(int, distopt::tag, std::vector<std::byte>&);
  bool try_recv(int, distopt::tag, distopt::byte_buffer&);
};

/// Tags are distopt::tag, not integers.
struct integer_tags {
  int rank();
  int size();
  void send(int, int, std::span<const std::byte>);
  void recv(int, int, distopt::byte_buffer&);
  bool try_recv(int, int, distopt::byte_buffer&);
};

}  // namespace near_miss

static_assert(distopt::transport<transport_archetype>);
static_assert(std::is_constructible_v<distopt::transport_ref, transport_archetype&>);
static_assert(std::is_convertible_v<transport_archetype&, distopt::transport_ref>);
static_assert(!distopt::transport_with_timeout<transport_archetype>,
              "the archetype has no recv with a timeout; transport_ref falls back to its own deadline");

static_assert(!distopt::transport<int>);
static_assert(!std::is_constructible_v<distopt::transport_ref, int&>);
static_assert(!distopt::transport<near_miss::no_rank>);
static_assert(!distopt::transport<near_miss::no_try_recv>);
static_assert(!distopt::transport<near_miss::try_recv_returns_int>);
static_assert(!distopt::transport<near_miss::send_takes_mutable_bytes>);
static_assert(!distopt::transport<near_miss::recv_into_plain_vector>);
static_assert(!distopt::transport<near_miss::integer_tags>);
static_assert(!std::is_constructible_v<distopt::transport_ref, near_miss::no_try_recv&>);
static_assert(!std::is_constructible_v<distopt::transport_ref, near_miss::try_recv_returns_int&>);

// transport_ref is itself a transport.
static_assert(distopt::transport<distopt::transport_ref>);

}  // namespace archetypes
