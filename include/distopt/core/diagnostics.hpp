#pragma once
// The optimizer's compile-time diagnostics: for a policy that is not what its axis needs,
// exactly one static_assert that names the first requirement it misses (GCC and Clang;
// tests/compile_fail/ checks the text and that no other error follows).

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::detail {

template <class>
inline constexpr bool always_false = false;

#define DISTOPT_POLICY_PREFIX "distopt::optimizer<C, T, S, L>: "

template <class C>
consteval bool check_compressor() {
  if constexpr (!requires {
                  { C::unbiased } -> std::convertible_to<bool>;
                })
    static_assert(always_false<C>, DISTOPT_POLICY_PREFIX
                  "C is not a Compressor: it needs static unbiased (true iff E[decode(encode(x))] == x; see "
                  "distopt/core/concepts.hpp)");
  else if constexpr (!requires(C & c, std::size_t n) {
                       { c.max_encoded_bytes(n) } -> std::convertible_to<std::size_t>;
                     })
    static_assert(always_false<C>, DISTOPT_POLICY_PREFIX
                  "C is not a Compressor: it needs max_encoded_bytes(n), a bound on the bytes encode appends for n "
                  "floats (see distopt/core/concepts.hpp)");
  else if constexpr (!requires(C & c, std::span<const std::byte> b, std::span<float> out) { c.decode(b, out); })
    static_assert(always_false<C>, DISTOPT_POLICY_PREFIX
                  "C is not a Compressor: it needs decode(bytes, out) (see distopt/core/concepts.hpp)");
  else if constexpr (!stateful_encoder<C> &&
                     !requires(C & c, std::span<const float> in, byte_buffer & w, rng & g) { c.encode(in, w, g); })
    static_assert(always_false<C>, DISTOPT_POLICY_PREFIX
                  "C is not a Compressor: it needs encode(in, wire, rng), or a nested state with make_state(n) and "
                  "encode(in, wire, rng, state) (see distopt/core/concepts.hpp)");
  else if constexpr (!std::copyable<C>)
    static_assert(always_false<C>, DISTOPT_POLICY_PREFIX
                  "C is not a Compressor: it must be copyable (a configuration value; per-worker memory goes in its "
                  "nested state)");
  return compressor<C>;
}

template <class T>
consteval bool check_topology() {
  if constexpr (!requires {
                  { T::exchange } -> std::convertible_to<exchange_kind>;
                })
    static_assert(always_false<T>, DISTOPT_POLICY_PREFIX
                  "T is not a TopologyPolicy: it needs static exchange (exchange_kind::gradients or models; see "
                  "distopt/core/concepts.hpp)");
  else if constexpr (!requires(const T& t, int n) { t.validate(n); })
    static_assert(always_false<T>, DISTOPT_POLICY_PREFIX
                  "T is not a TopologyPolicy: it needs validate(world_size) const (see distopt/core/concepts.hpp)");
  else if constexpr (!std::copyable<T>)
    static_assert(always_false<T>, DISTOPT_POLICY_PREFIX "T is not a TopologyPolicy: it must be copyable");
  return topology_policy<T>;
}

template <class S>
consteval bool check_staleness() {
  if constexpr (!requires {
                  { S::max_staleness } -> std::convertible_to<std::uint64_t>;
                })
    static_assert(always_false<S>, DISTOPT_POLICY_PREFIX
                  "S is not a StalenessPolicy: it needs static max_staleness (see distopt/core/concepts.hpp)");
  else if constexpr (!std::copyable<S>)
    static_assert(always_false<S>, DISTOPT_POLICY_PREFIX "S is not a StalenessPolicy: it must be copyable");
  return staleness_policy<S>;
}

template <class L>
consteval bool check_local_steps() {
  if constexpr (!requires(const L& l, std::uint64_t k) {
                  { l.communicates_after(k) } -> std::same_as<bool>;
                })
    static_assert(always_false<L>, DISTOPT_POLICY_PREFIX
                  "L is not a LocalStepsPolicy: it needs communicates_after(step) const returning bool (see "
                  "distopt/core/concepts.hpp)");
  else if constexpr (!std::copyable<L>)
    static_assert(always_false<L>, DISTOPT_POLICY_PREFIX "L is not a LocalStepsPolicy: it must be copyable");
  return local_steps_policy<L>;
}

#undef DISTOPT_POLICY_PREFIX

/// True when all four policies meet their concepts; otherwise one static_assert has named
/// the first requirement missed (checking stops at the first bad policy).
template <class C, class T, class S, class L>
consteval bool check_policies() {
  if constexpr (!check_compressor<C>())
    return false;
  else if constexpr (!check_topology<T>())
    return false;
  else if constexpr (!check_staleness<S>())
    return false;
  else
    return check_local_steps<L>();
}

}  // namespace distopt::detail
