#pragma once
// byte_buffer: growable contiguous bytes whose resize does not zero-fill, so that
// reusing a buffer for the next message costs no extra pass over memory.

#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>
#include <memory>
#include <new>
#include <span>
#include <vector>

namespace distopt {
namespace detail {

/// Allocator that default-initialises (leaves trivially constructible elements
/// uninitialised) instead of value-initialising on resize.
template <class T>
struct default_init_allocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = default_init_allocator<U>;
  };
  using std::allocator<T>::allocator;
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    std::construct_at(p, std::forward<Args>(args)...);
  }
};

}  // namespace detail

/// Contiguous bytes with `data()`, `size()`, `clear()`, `resize()` (no zero fill).
using byte_buffer = std::vector<std::byte, detail::default_init_allocator<std::byte>>;

/// Appends `bytes` to the end of `buffer`.
inline void append(byte_buffer& buffer, std::span<const std::byte> bytes) {
  const std::size_t old = buffer.size();
  buffer.resize(old + bytes.size());
  if (!bytes.empty()) std::memcpy(buffer.data() + old, bytes.data(), bytes.size());
}

}  // namespace distopt
