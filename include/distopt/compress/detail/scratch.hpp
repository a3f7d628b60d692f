#pragma once
// scratch<T>: a compressor's reusable working memory. It keeps its capacity between
// calls (no allocation per call once warm) but is never copied: a copy of a
// compressor starts with empty scratch, so configurations stay cheap to copy.
// A compressor holding scratch is used by one thread at a time (one object per worker).

#include <cstddef>
#include <vector>

namespace distopt::compress::detail {

template <class T>
class scratch {
 public:
  scratch() = default;
  scratch(const scratch&) noexcept {}
  scratch(scratch&&) noexcept {}
  scratch& operator=(const scratch&) noexcept { return *this; }
  scratch& operator=(scratch&&) noexcept { return *this; }
  ~scratch() = default;

  /// The buffer, resized to n elements (contents unspecified).
  std::vector<T>& sized(std::size_t n) {
    if (v_.size() < n) v_.resize(n);
    return v_;
  }
  std::vector<T>& get() noexcept { return v_; }

 private:
  std::vector<T> v_;
};

}  // namespace distopt::compress::detail
