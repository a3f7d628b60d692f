#pragma once
// Reader for the LIBSVM / SVMlight sparse text format (Chang & Lin, "LIBSVM: a
// library for support vector machines", ACM TIST 2011), read into a dense matrix.
// One sample per line:
//
//   <label> <index>:<value> <index>:<value> ...      # optional comment
//
// Indices are 1-based and strictly ascending; absent features are 0. Labels and
// values are decimal or scientific floats (a leading '+' is allowed, as in "+1");
// infinities, NaN and magnitudes beyond the float range are refused. Spaces and tabs separate tokens, '#' starts a
// comment running to the end of the line, and lines that are empty once the comment
// is removed are skipped. CRLF line ends are accepted.
//
//   auto d = distopt::data::read_libsvm("heart_scale");          // features inferred
//   auto e = distopt::data::read_libsvm("a9a.t", /*features=*/123);  // fixed width
//   distopt::problems::logistic_regression p(d.features, distopt::data::binary_labels(d.labels), 1e-3f);
//
// With no explicit feature count the width is the largest index in the file; pass
// one so that a training and a test file get the same width. A real example file,
// heart_scale (270 samples, 13 features, labels +1/-1), ships with the Debian package
// liblinear-tools at /usr/share/doc/liblinear-tools/examples/heart_scale.
//
// Errors are config_error "data: <file>:<line>:<column>: <what>", line and column
// 1-based, so an editor can jump to the fault.

#include <Eigen/Core>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "distopt/core/errors.hpp"

namespace distopt::data {

/// A LIBSVM file as dense data: one sample per row of `features`, one label each.
struct libsvm_data {
  Eigen::MatrixXf features;
  Eigen::VectorXf labels;
};

namespace detail {

struct libsvm_entry {
  Eigen::Index row, col;
  float value;
};

class libsvm_line_parser {
 public:
  libsvm_line_parser(const std::filesystem::path& path, std::size_t line_no, std::string_view line)
      : path_(path), line_no_(line_no), line_(line) {}

  /// Parses the line into its label and entries (column indices 0-based); false if blank.
  bool parse(Eigen::Index row, std::optional<std::size_t> features, float& label, std::vector<libsvm_entry>& out) {
    skip_blanks();
    if (pos_ == line_.size()) return false;
    const std::size_t label_at = pos_;
    const std::string_view label_token = token();
    if (!parse_float(label_token, label))
      fail(label_at, "the label '" + std::string(label_token) + "' is not a finite number");
    std::uint64_t previous = 0;
    for (skip_blanks(); pos_ < line_.size(); skip_blanks()) {
      const std::size_t at = pos_;
      const std::string_view tok = token();
      const std::size_t colon = tok.find(':');
      if (colon == std::string_view::npos) fail(at, "'" + std::string(tok) + "' has no ':'; expected index:value");
      const std::string_view index_text = tok.substr(0, colon);
      const std::string_view value_text = tok.substr(colon + 1);
      std::uint64_t index = 0;
      const auto [end, ec] = std::from_chars(index_text.data(), index_text.data() + index_text.size(), index);
      if (index_text.empty() || ec != std::errc{} || end != index_text.data() + index_text.size())
        fail(at, "the index '" + std::string(index_text) + "' is not a positive integer");
      if (index == 0) fail(at, "index 0: indices are 1-based");
      if (index <= previous)
        fail(at, "index " + std::to_string(index) + " after index " + std::to_string(previous) +
                     ": indices must be strictly ascending");
      if (features && index > *features)
        fail(at,
             "index " + std::to_string(index) + " is beyond the explicit feature count " + std::to_string(*features));
      if (index > static_cast<std::uint64_t>(max_index))
        fail(at, "index " + std::to_string(index) + " is too large for a dense matrix");
      float value = 0.0f;
      if (!parse_float(value_text, value))
        fail(at + colon + 1, "the value '" + std::string(value_text) + "' of index " + std::to_string(index) +
                                 " is not a finite number");
      previous = index;
      out.push_back({row, static_cast<Eigen::Index>(index - 1), value});
    }
    return true;
  }

 private:
  static constexpr std::uint64_t max_index = std::uint64_t{1} << 31;

  void skip_blanks() {
    while (pos_ < line_.size() && (line_[pos_] == ' ' || line_[pos_] == '\t')) ++pos_;
  }
  std::string_view token() {
    const std::size_t begin = pos_;
    while (pos_ < line_.size() && line_[pos_] != ' ' && line_[pos_] != '\t') ++pos_;
    return line_.substr(begin, pos_ - begin);
  }
  // A whole token as a finite float, correctly rounded; a leading '+' is allowed
  // (from_chars refuses it). Magnitudes below the float range round to 0 or a
  // subnormal, as strtof would; magnitudes above it are refused.
  static bool parse_float(std::string_view text, float& out) {
    if (!text.empty() && text.front() == '+') {
      text.remove_prefix(1);
      if (!text.empty() && text.front() == '-') return false;
    }
    const char* first = text.data();
    const char* last = first + text.size();
    auto [end, ec] = std::from_chars(first, last, out);
    if (ec == std::errc::result_out_of_range) {  // too large or too small for a float: decide in double
      double wide = 0.0;
      const auto r = std::from_chars(first, last, wide);
      if (r.ec != std::errc{} || !(std::abs(wide) < 1.0)) return false;
      out = static_cast<float>(wide);
      end = r.ptr;
      ec = std::errc{};
    }
    return ec == std::errc{} && end == last && std::isfinite(out);
  }
  [[noreturn]] void fail(std::size_t offset, const std::string& what) const {
    throw config_error("data: " + path_.string() + ":" + std::to_string(line_no_) + ":" + std::to_string(offset + 1) +
                       ": " + what + " (LIBSVM format: 'label index:value ...', indices 1-based and ascending)");
  }

  const std::filesystem::path& path_;
  std::size_t line_no_;
  std::string_view line_;
  std::size_t pos_ = 0;
};

}  // namespace detail

/// Reads a LIBSVM-format file. `features`: the number of columns; by default the
/// largest index in the file. Throws config_error naming file, line and column.
inline libsvm_data read_libsvm(const std::filesystem::path& path, std::optional<std::size_t> features = std::nullopt) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    const bool exists = std::filesystem::exists(path, ec);
    throw config_error("data: cannot open " + path.string() + (exists ? " (permission problem?)" : ": no such file") +
                       "; a small real LIBSVM file, heart_scale, ships with the Debian package liblinear-tools "
                       "(/usr/share/doc/liblinear-tools/examples/heart_scale)");
  }
  std::vector<detail::libsvm_entry> entries;
  std::vector<float> labels;
  std::string line;
  std::size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    std::string_view text(line);
    if (const std::size_t hash = text.find('#'); hash != std::string_view::npos) text = text.substr(0, hash);
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    float label = 0.0f;
    detail::libsvm_line_parser parser(path, line_no, text);
    if (parser.parse(static_cast<Eigen::Index>(labels.size()), features, label, entries)) labels.push_back(label);
  }
  if (in.bad()) throw config_error("data: " + path.string() + ": read error after line " + std::to_string(line_no));

  Eigen::Index width = features ? static_cast<Eigen::Index>(*features) : 0;
  if (!features)
    for (const auto& e : entries) width = std::max(width, e.col + 1);
  libsvm_data d;
  d.features = Eigen::MatrixXf::Zero(static_cast<Eigen::Index>(labels.size()), width);
  d.labels = Eigen::Map<const Eigen::VectorXf>(labels.data(), static_cast<Eigen::Index>(labels.size()));
  for (const auto& e : entries) d.features(e.row, e.col) = e.value;
  return d;
}

/// One-vs-rest labels: +1 where the label equals `positive`, -1 elsewhere. Throws
/// if `positive` does not occur.
inline Eigen::VectorXf binary_labels(const Eigen::VectorXf& labels, float positive) {
  if (!(labels.array() == positive).any())
    throw config_error("binary_labels: the positive label " + std::to_string(positive) +
                       " does not occur; pass one of the labels present");
  return (labels.array() == positive).select(Eigen::VectorXf::Ones(labels.size()), -1.0f);
}

/// Two-class labels to {-1, +1}: the larger of the two distinct labels becomes +1,
/// the smaller -1 (so {0, 1}, {1, 2} and {-1, +1} map as expected). Throws unless
/// exactly two distinct labels occur.
inline Eigen::VectorXf binary_labels(const Eigen::VectorXf& labels) {
  if (labels.size() == 0) throw config_error("binary_labels: no labels");
  const float low = labels.minCoeff(), high = labels.maxCoeff();
  for (Eigen::Index i = 0; i < labels.size(); ++i)
    if (labels(i) != low && labels(i) != high)
      throw config_error("binary_labels: more than two distinct labels (" + std::to_string(low) + ", " +
                         std::to_string(labels(i)) + ", " + std::to_string(high) +
                         "); pass the positive label for a one-vs-rest split");
  if (low == high)
    throw config_error("binary_labels: every label is " + std::to_string(low) +
                       "; two classes are needed (or pass the positive label)");
  return binary_labels(labels, high);
}

}  // namespace distopt::data
