#pragma once
// The element-wise additions of the allreduces, in the operand order their documented sums
// fix: the ring (collective/ring_allreduce.hpp) and the thread transport's shared-memory
// allreduce (transport/thread.hpp) both use them, so both give the same bits.

#include <cstddef>

namespace distopt::detail {

// x[i] = a[i] + x[i] (then / divisor): the operand order of the documented sum. The
// arrays never overlap (a is a received message), which __restrict tells the
// compiler so that it vectorises without run-time alias checks. Division, not
// multiplication by 1/n, so that the mean is bit-identical to the reference.
inline void allreduce_add(float* __restrict x, const float* __restrict a, std::size_t m) noexcept {
  for (std::size_t i = 0; i < m; ++i) x[i] = a[i] + x[i];
}
inline void allreduce_add_divide(float* __restrict x, const float* __restrict a, std::size_t m,
                                 float divisor) noexcept {
  for (std::size_t i = 0; i < m; ++i) x[i] = (a[i] + x[i]) / divisor;
}
// Out of place: x[i] = a[i] + own[i] (then / divisor); x, own and a are three arrays.
inline void allreduce_add(float* __restrict x, const float* __restrict own, const float* __restrict a,
                          std::size_t m) noexcept {
  for (std::size_t i = 0; i < m; ++i) x[i] = a[i] + own[i];
}
inline void allreduce_add_divide(float* __restrict x, const float* __restrict own, const float* __restrict a,
                                 std::size_t m, float divisor) noexcept {
  for (std::size_t i = 0; i < m; ++i) x[i] = (a[i] + own[i]) / divisor;
}

// Accumulating into a partial sum: x[i] = x[i] + a[i] (then / divisor), the partial sum
// first, as the ring's receiver adds its own values to the partial sum it receives.
inline void allreduce_accumulate(float* __restrict x, const float* __restrict a, std::size_t m) noexcept {
  for (std::size_t i = 0; i < m; ++i) x[i] = x[i] + a[i];
}
inline void allreduce_accumulate_divide(float* __restrict x, const float* __restrict a, std::size_t m,
                                        float divisor) noexcept {
  for (std::size_t i = 0; i < m; ++i) x[i] = (x[i] + a[i]) / divisor;
}

}  // namespace distopt::detail
