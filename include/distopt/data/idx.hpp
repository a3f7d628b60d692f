#pragma once
// Reader for the IDX format of the MNIST family (LeCun et al.), gzip-compressed or
// not (zlib reads both). Layout: two zero bytes, a type byte (0x08 = unsigned byte,
// the only type these data sets use), the number of dimensions, then each
// dimension as a big-endian uint32, then the row-major data.
//
// Fashion-MNIST (Xiao, Rasul, Vollgraf, 2017, arXiv 1708.07747) comes from the
// Debian package dataset-fashion-mnist, under /usr/share/datasets/fashion-mnist/.
//
//   auto train = distopt::data::load_fashion_mnist(distopt::data::split::train);
//   // train.features: 60000 x 784 in [0, 1]; train.labels: 60000 ints in 0..9
//
// Errors are config_error naming the file and, for malformed contents, the byte
// offset. Needs zlib: link distopt::data (CMake) or -lz.

#include <zlib.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "distopt/core/errors.hpp"

namespace distopt::data {

/// An IDX array of unsigned bytes.
struct idx_array {
  std::vector<std::uint32_t> dims;
  std::vector<std::uint8_t> values;
};

/// Images with labels: one sample per row, pixels scaled to [0, 1].
struct labelled_images {
  Eigen::MatrixXf features;
  std::vector<int> labels;
  int classes = 0;
};

namespace detail {

struct gz_closer {
  void operator()(gzFile_s* f) const noexcept { gzclose(f); }
};

class gz_reader {
 public:
  explicit gz_reader(const std::filesystem::path& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    if (!file_) {
      std::error_code ec;
      const bool exists = std::filesystem::exists(path, ec);
      throw config_error("data: cannot open " + path.string() +
                         (exists ? " (permission or format problem)" : ": no such file") +
                         "; for Fashion-MNIST install the Debian package dataset-fashion-mnist "
                         "(apt-get install dataset-fashion-mnist) or point DISTOPT_FASHION_MNIST at a directory "
                         "with the four *-ubyte(.gz) files");
    }
    gzbuffer(file_.get(), 1u << 17);
  }
  /// Reads exactly n bytes or throws naming the offset where the data ended.
  void read(void* out, std::size_t n, const char* what) {
    const std::size_t got = read_some(static_cast<unsigned char*>(out), n);
    if (got < n) truncated(what, n, offset_, offset_ + got);
    offset_ += n;
  }
  /// Reads exactly n bytes into v, growing v as the bytes arrive, so that a damaged
  /// header claiming gigabytes fails on the missing bytes rather than on memory.
  void read_into(std::vector<std::uint8_t>& v, std::size_t n, const char* what) {
    constexpr std::size_t step = std::size_t{1} << 24;
    v.clear();
    while (v.size() < n) {
      const std::size_t at = v.size(), want = std::min(step, n - at);
      v.resize(at + want);
      const std::size_t got = read_some(v.data() + at, want);
      if (got < want) truncated(what, n, offset_, offset_ + at + got);
    }
    offset_ += n;
  }
  /// True at a clean end of file. A gzip stream that is cut short (zlib returns the
  /// data it has, then 0, and flags Z_BUF_ERROR) or fails its CRC is refused here,
  /// since its last bytes were never verified.
  bool at_end() {
    unsigned char extra;
    const int got = gzread(file_.get(), &extra, 1);
    if (got < 0) {
      int code = 0;
      const char* msg = gzerror(file_.get(), &code);
      fail("corrupt compressed data after byte offset " + std::to_string(offset_) + " (" + msg + ")");
    }
    if (got == 0 && cut_short())
      fail("the compressed stream is cut short after byte offset " + std::to_string(offset_) +
           " (unexpected end of file: its checksum is missing)");
    return got == 0;
  }
  std::uint64_t offset() const noexcept { return offset_; }
  [[noreturn]] void truncated(const char* what, std::size_t n, std::uint64_t from, std::uint64_t end) {
    fail(std::string("truncated: ") + what + " needs " + std::to_string(n) + " bytes from offset " +
         std::to_string(from) + " but the file ends at offset " + std::to_string(end) +
         (cut_short() ? " (the compressed stream is cut short)" : ""));
  }
  /// zlib reached the end of the file inside a gzip stream.
  bool cut_short() {
    int code = Z_OK;
    gzerror(file_.get(), &code);
    return code == Z_BUF_ERROR;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw config_error("data: " + path_.string() + ": " + what + "; the file is damaged — reinstall it");
  }

 private:
  // Up to n bytes: fewer only at the end of the file; throws on corrupt data.
  std::size_t read_some(unsigned char* dst, std::size_t n) {
    std::size_t done = 0;
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30));
      const int got = gzread(file_.get(), dst + done, chunk);
      if (got < 0) {
        int code = 0;
        const char* msg = gzerror(file_.get(), &code);
        fail("corrupt compressed data near byte offset " + std::to_string(offset_ + done) + " (" + msg + ")");
      }
      if (got == 0) break;
      done += static_cast<std::size_t>(got);
    }
    return done;
  }

  std::filesystem::path path_;
  std::unique_ptr<gzFile_s, gz_closer> file_;
  std::uint64_t offset_ = 0;
};

}  // namespace detail

/// Reads an IDX file of unsigned bytes (plain or gzip-compressed).
inline idx_array read_idx(const std::filesystem::path& path) {
  detail::gz_reader in(path);
  unsigned char magic[4];
  in.read(magic, 4, "the magic number");
  if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] < 1 || magic[3] > 4)
    in.fail("bad magic number at offset 0: expected 00 00 08 followed by 1..4 dimensions, got " +
            std::to_string(magic[0]) + " " + std::to_string(magic[1]) + " " + std::to_string(magic[2]) + " " +
            std::to_string(magic[3]) + " (not an IDX file of unsigned bytes)");
  idx_array a;
  std::uint64_t total = 1;
  for (int d = 0; d < magic[3]; ++d) {
    unsigned char be[4];
    in.read(be, 4, "a dimension");
    const std::uint32_t dim =
        (std::uint32_t{be[0]} << 24) | (std::uint32_t{be[1]} << 16) | (std::uint32_t{be[2]} << 8) | be[3];
    a.dims.push_back(dim);
    constexpr std::uint64_t limit = std::uint64_t{1} << 34;
    if (dim != 0 && total > limit / dim)  // checked before multiplying: 2^34 * 2^32 would wrap
      in.fail("header at offset " + std::to_string(4 + 4 * d) + " claims more than 16 GiB of data");
    total *= dim;
  }
  in.read_into(a.values, static_cast<std::size_t>(total), "the data");
  if (!in.at_end()) in.fail("trailing bytes after offset " + std::to_string(in.offset()));
  return a;
}

/// Reads an image file (n x rows x cols) and its label file (n labels < classes).
inline labelled_images read_idx_dataset(const std::filesystem::path& images, const std::filesystem::path& labels,
                                        int classes = 10) {
  const idx_array img = read_idx(images);
  const idx_array lab = read_idx(labels);
  if (img.dims.size() < 2)
    throw config_error("data: " + images.string() + ": expected an image file with >= 2 dimensions, got " +
                       std::to_string(img.dims.size()));
  if (lab.dims.size() != 1 || lab.dims[0] != img.dims[0])
    throw config_error("data: " + labels.string() + ": expected " + std::to_string(img.dims[0]) +
                       " labels (one per image of " + images.string() + ")");
  const Eigen::Index n = img.dims[0];
  Eigen::Index dim = 1;  // the product of the other dimensions (not size / n: n may be 0)
  for (std::size_t d = 1; d < img.dims.size(); ++d) dim *= static_cast<Eigen::Index>(img.dims[d]);
  labelled_images out;
  out.classes = classes;
  using row_major = Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  out.features = Eigen::Map<const row_major>(img.values.data(), n, dim).cast<float>() / 255.0f;
  out.labels.resize(static_cast<std::size_t>(n));
  for (Eigen::Index i = 0; i < n; ++i) {
    const int y = lab.values[static_cast<std::size_t>(i)];
    if (y >= classes)
      throw config_error("data: " + labels.string() + ": label " + std::to_string(y) + " at byte offset " +
                         std::to_string(8 + i) + " is outside 0.." + std::to_string(classes - 1));
    out.labels[static_cast<std::size_t>(i)] = y;
  }
  return out;
}

enum class split { train, test };

/// The Fashion-MNIST directory: $DISTOPT_FASHION_MNIST, else the Debian package's.
inline std::filesystem::path fashion_mnist_dir() {
  if (const char* env = std::getenv("DISTOPT_FASHION_MNIST"); env && *env) return env;
  return "/usr/share/datasets/fashion-mnist";
}

/// Loads a Fashion-MNIST split (files named as upstream, with or without .gz).
inline labelled_images load_fashion_mnist(split s, const std::filesystem::path& dir = fashion_mnist_dir()) {
  const std::string prefix = s == split::train ? "train" : "t10k";
  auto file = [&](const std::string& kind) {
    const std::filesystem::path plain = dir / (prefix + "-" + kind + "-ubyte");
    std::filesystem::path gz = plain;
    gz += ".gz";
    return std::filesystem::exists(gz) ? gz : plain;
  };
  return read_idx_dataset(file("images-idx3"), file("labels-idx1"), 10);
}

}  // namespace distopt::data
