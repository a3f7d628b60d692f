#pragma once
// layout: names the tensors laid out one after another in the flat parameter
// vector (each rows x cols, column-major), for per-tensor compressors such as
// power_sgd and per-layer top_k.
//
//   distopt::layout l{{128, 784}, {128, 1}, {10, 128}, {10, 1}};   // an MLP's W1, b1, W2, b2
//   distopt::parameter_count(l) == 128*784 + 128 + 10*128 + 10

#include <cstddef>
#include <numeric>
#include <vector>

namespace distopt {

struct tensor_shape {
  std::size_t rows = 0;
  std::size_t cols = 1;
};

using layout = std::vector<tensor_shape>;

inline std::size_t parameter_count(const layout& l) {
  return std::accumulate(l.begin(), l.end(), std::size_t{0},
                         [](std::size_t s, const tensor_shape& t) { return s + t.rows * t.cols; });
}

}  // namespace distopt
