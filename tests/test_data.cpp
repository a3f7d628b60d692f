// Tests of the data readers (IDX over zlib, LIBSVM) and of the partitions (iid,
// label-sorted, Dirichlet). Every file read here is written by the test itself, byte
// by byte, so the expected contents are known independently of the readers; the
// partitions are checked against their definitions and the Gamma/Dirichlet draws
// against closed-form moments and tails.
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <distopt/core/errors.hpp>
#include <distopt/core/rng.hpp>
#include <distopt/data/idx.hpp>
#include <distopt/data/libsvm.hpp>
#include <distopt/data/partition.hpp>

namespace {

namespace fs = std::filesystem;
using bytes = std::vector<std::uint8_t>;
using distopt::config_error;

// A fresh directory under the system temp dir, removed at scope exit.
struct temp_dir {
  fs::path path;
  temp_dir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("distopt_test_data_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  fs::path operator/(const std::string& name) const { return path / name; }
};

void write_plain(const fs::path& p, const bytes& b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(out.good());
}

void write_gzip(const fs::path& p, const bytes& b) {
  gzFile f = gzopen(p.c_str(), "wb");
  REQUIRE(f != nullptr);
  if (!b.empty()) REQUIRE(gzwrite(f, b.data(), static_cast<unsigned>(b.size())) == static_cast<int>(b.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

bytes read_plain(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
  REQUIRE(out.good());
}

// An IDX file of unsigned bytes, built from the format's definition:
// 00 00 08 <ndims>, each dimension big-endian, then the data.
bytes idx_file(const std::vector<std::uint32_t>& dims, const bytes& values) {
  bytes b{0x00, 0x00, 0x08, static_cast<std::uint8_t>(dims.size())};
  for (std::uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<std::uint8_t>(d >> shift));
  b.insert(b.end(), values.begin(), values.end());
  return b;
}

// Deterministic test bytes covering 0 and 255.
bytes test_values(std::size_t n, std::uint32_t salt) {
  bytes v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>((i * 37u + salt * 101u) % 256u);
  if (n > 0) v[0] = 0;
  if (n > 1) v[1] = 255;
  return v;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Runs f, requires config_error, returns its message.
template <class F>
std::string config_error_message(F&& f) {
  try {
    f();
  } catch (const config_error& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("expected config_error, got another exception: " << e.what());
    return {};
  }
  FAIL("expected config_error, nothing was thrown");
  return {};
}

enum class compression { plain, gzip };
void write_idx(const fs::path& p, const bytes& b, compression c) {
  if (c == compression::plain)
    write_plain(p, b);
  else
    write_gzip(p, b);
}
std::string name(compression c) { return c == compression::plain ? "plain" : "gzip"; }

}  // namespace

// ---- IDX: round trips ------------------------------------------------------------

TEST_CASE("read_idx: plain and gzip files round-trip exactly (dims and every byte)") {
  temp_dir dir;
  const std::vector<std::vector<std::uint32_t>> shapes = {{7}, {3, 5}, {4, 2, 3}, {2, 3, 2, 2}, {0, 28, 28}, {300, 17}};
  for (compression c : {compression::plain, compression::gzip}) {
    for (std::size_t s = 0; s < shapes.size(); ++s) {
      const auto& dims = shapes[s];
      std::size_t n = 1;
      for (auto d : dims) n *= d;
      const bytes values = test_values(n, static_cast<std::uint32_t>(s));
      fs::path p = dir / ("array_" + std::to_string(s));
      if (c == compression::gzip) p += ".gz";
      write_idx(p, idx_file(dims, values), c);
      CAPTURE(name(c));
      CAPTURE(s);
      const auto a = distopt::data::read_idx(p);
      CHECK(a.dims == dims);
      CHECK(a.values == values);
    }
  }
}

TEST_CASE("read_idx_dataset: pixels become v/255 in row-major order, labels are kept") {
  temp_dir dir;
  constexpr std::uint32_t n = 5, rows = 3, cols = 4;
  const bytes pixels = test_values(n * rows * cols, 7);
  const bytes labels = {3, 0, 9, 9, 1};
  for (compression c : {compression::plain, compression::gzip}) {
    CAPTURE(name(c));
    write_idx(dir / "img", idx_file({n, rows, cols}, pixels), c);
    write_idx(dir / "lab", idx_file({n}, labels), c);
    const auto d = distopt::data::read_idx_dataset(dir / "img", dir / "lab", 10);
    REQUIRE(d.features.rows() == n);
    REQUIRE(d.features.cols() == rows * cols);
    CHECK(d.classes == 10);
    bool exact = true;
    for (std::uint32_t i = 0; i < n; ++i)
      for (std::uint32_t r = 0; r < rows; ++r)
        for (std::uint32_t k = 0; k < cols; ++k) {
          // v/255 correctly rounded to float: the double quotient rounded once.
          const double v = pixels[(i * rows + r) * cols + k];
          exact = exact && d.features(i, r * cols + k) == static_cast<float>(v / 255.0);
        }
    CHECK(exact);
    CHECK(d.features.minCoeff() == 0.0f);
    CHECK(d.features.maxCoeff() == 1.0f);
    CHECK(d.labels == std::vector<int>{3, 0, 9, 9, 1});
  }
}

TEST_CASE("read_idx_dataset: an empty image file gives an empty 0 x (rows*cols) set") {
  temp_dir dir;
  write_plain(dir / "img", idx_file({0, 28, 28}, {}));
  write_plain(dir / "lab", idx_file({0}, {}));
  const auto d = distopt::data::read_idx_dataset(dir / "img", dir / "lab");
  CHECK(d.features.rows() == 0);
  CHECK(d.features.cols() == 28 * 28);
  CHECK(d.labels.empty());
}

TEST_CASE("load_fashion_mnist: finds the upstream file names, .gz or not") {
  temp_dir dir;
  const bytes train_px = test_values(3 * 2 * 2, 1), test_px = test_values(2 * 2 * 2, 2);
  write_gzip(dir / "train-images-idx3-ubyte.gz", idx_file({3, 2, 2}, train_px));
  write_gzip(dir / "train-labels-idx1-ubyte.gz", idx_file({3}, {1, 2, 3}));
  write_plain(dir / "t10k-images-idx3-ubyte", idx_file({2, 2, 2}, test_px));
  write_plain(dir / "t10k-labels-idx1-ubyte", idx_file({2}, {9, 0}));
  const auto train = distopt::data::load_fashion_mnist(distopt::data::split::train, dir.path);
  const auto test = distopt::data::load_fashion_mnist(distopt::data::split::test, dir.path);
  CHECK(train.features.rows() == 3);
  CHECK(train.labels == std::vector<int>{1, 2, 3});
  CHECK(train.features(2, 3) == static_cast<float>(train_px[11] / 255.0));
  CHECK(test.features.rows() == 2);
  CHECK(test.labels == std::vector<int>{9, 0});
  CHECK(test.features(1, 0) == static_cast<float>(test_px[4] / 255.0));
}

// ---- IDX: malformed files ----------------------------------------------------------

TEST_CASE("read_idx: a file truncated at every byte length is refused, naming the file and offset") {
  temp_dir dir;
  const bytes image = idx_file({2, 2, 3}, test_values(12, 3));  // 16-byte header + 12 bytes
  const bytes label = idx_file({4}, {1, 2, 3, 4});              // 8-byte header + 4 bytes
  for (const bytes* whole : {&image, &label}) {
    for (compression c : {compression::plain, compression::gzip}) {
      for (std::size_t len = 0; len < whole->size(); ++len) {
        const fs::path p = dir / ("cut_" + std::to_string(len));
        write_idx(p, bytes(whole->begin(), whole->begin() + static_cast<std::ptrdiff_t>(len)), c);
        CAPTURE(name(c));
        CAPTURE(len);
        const std::string msg = config_error_message([&] { (void)distopt::data::read_idx(p); });
        CHECK(contains(msg, p.string()));
        CHECK(contains(msg, "truncated"));
        CHECK(contains(msg, "the file ends at offset " + std::to_string(len)));
      }
    }
  }
}

TEST_CASE("read_idx: a gzip stream cut at every byte length is refused, naming the file") {
  // The compressed bytes themselves cut short: zlib either reports the damaged stream
  // or yields fewer bytes than the header promises; both must be config_error.
  temp_dir dir;
  write_gzip(dir / "whole.gz", idx_file({2, 2, 3}, test_values(12, 4)));
  const bytes gz = read_plain(dir / "whole.gz");
  REQUIRE(gz.size() > 20);
  for (std::size_t len = 0; len < gz.size(); ++len) {
    const fs::path p = dir / ("gzcut_" + std::to_string(len));
    write_plain(p, bytes(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(len)));
    CAPTURE(len);
    const std::string msg = config_error_message([&] { (void)distopt::data::read_idx(p); });
    CHECK(contains(msg, p.string()));
    CHECK(contains(msg, "offset"));
    // Cut in the 8-byte trailer, all the data decompresses: only the missing checksum tells.
    if (len >= gz.size() - 8) CHECK(contains(msg, "cut short"));
  }
}

TEST_CASE("read_idx: a corrupted gzip payload or checksum is refused, naming the file") {
  temp_dir dir;
  write_gzip(dir / "whole.gz", idx_file({2, 2, 3}, test_values(12, 5)));
  const bytes gz = read_plain(dir / "whole.gz");
  // Bytes 0..9 are the gzip header (flags, mtime, OS are not checked by zlib); from 10 on
  // every byte is deflate data, CRC-32 or length, so any flip there must be detected.
  for (std::size_t at = 10; at < gz.size(); ++at) {
    bytes bad = gz;
    bad[at] ^= 0x5A;
    const fs::path p = dir / ("flip_" + std::to_string(at) + ".gz");
    write_plain(p, bad);
    CAPTURE(at);
    const std::string msg = config_error_message([&] { (void)distopt::data::read_idx(p); });
    CHECK(contains(msg, p.string()));
  }
}

TEST_CASE("read_idx: a wrong magic number (each of the first 4 bytes) is refused") {
  temp_dir dir;
  const bytes good = idx_file({2, 2, 3}, test_values(12, 6));
  for (std::size_t at = 0; at < 4; ++at) {
    for (int v = 0; v < 256; ++v) {
      if (v == good[at]) continue;
      bytes bad = good;
      bad[at] = static_cast<std::uint8_t>(v);
      const fs::path p = dir / "magic";
      write_plain(p, bad);
      CAPTURE(at);
      CAPTURE(v);
      const std::string msg = config_error_message([&] { (void)distopt::data::read_idx(p); });
      CHECK(contains(msg, p.string()));
      // A dimension count of 1, 2 or 4 is a valid magic number: those files fail on size instead.
      if (at < 3 || v == 0 || v > 4) CHECK(contains(msg, "bad magic number at offset 0"));
    }
  }
}

TEST_CASE("read_idx: IDX types other than unsigned byte are refused by name") {
  temp_dir dir;
  // Type bytes of the IDX format: 09 signed byte, 0B short, 0C int, 0D float, 0E double.
  for (std::uint8_t type : {0x09, 0x0B, 0x0C, 0x0D, 0x0E}) {
    bytes b = idx_file({3}, {1, 2, 3});
    b[2] = type;
    write_plain(dir / "typed", b);
    CAPTURE(int{type});
    const std::string msg = config_error_message([&] { (void)distopt::data::read_idx(dir / "typed"); });
    CHECK(contains(msg, (dir / "typed").string()));
    CHECK(contains(msg, "not an IDX file of unsigned bytes"));
  }
}

TEST_CASE("read_idx: trailing bytes are refused with their offset") {
  temp_dir dir;
  const bytes good = idx_file({2, 3}, test_values(6, 7));  // 12 + 6 = 18 bytes
  for (compression c : {compression::plain, compression::gzip}) {
    for (std::size_t extra : {1u, 2u, 100u}) {
      bytes bad = good;
      bad.resize(good.size() + extra, 0);
      write_idx(dir / "trail", bad, c);
      CAPTURE(name(c));
      CAPTURE(extra);
      const std::string msg = config_error_message([&] { (void)distopt::data::read_idx(dir / "trail"); });
      CHECK(contains(msg, (dir / "trail").string()));
      CHECK(contains(msg, "trailing bytes after offset 18"));
    }
  }
}

TEST_CASE("read_idx: a header whose size overflows or is absurd is refused") {
  temp_dir dir;
  // 2^31 * 8 * 2^30 = 2^64: wraps to 0 in 64-bit arithmetic; the file has no data.
  write_plain(dir / "wrap", idx_file({1u << 31, 8, 1u << 30}, {}));
  std::string msg = config_error_message([&] { (void)distopt::data::read_idx(dir / "wrap"); });
  CHECK(contains(msg, (dir / "wrap").string()));
  CHECK(contains(msg, "16 GiB"));
  write_plain(dir / "huge", idx_file({1u << 20, 1u << 20}, {}));
  msg = config_error_message([&] { (void)distopt::data::read_idx(dir / "huge"); });
  CHECK(contains(msg, "16 GiB"));
  CHECK(contains(msg, "offset 8"));
  // 4 GiB claimed, 3 bytes present: refused for the missing bytes, without first
  // allocating 4 GiB (which would abort under AddressSanitizer or exhaust a small machine).
  write_plain(dir / "claims_4gib", idx_file({1u << 16, 1u << 16}, {1, 2, 3}));
  msg = config_error_message([&] { (void)distopt::data::read_idx(dir / "claims_4gib"); });
  CHECK(contains(msg, "the data needs 4294967296 bytes from offset 12 but the file ends at offset 15"));
}

TEST_CASE("read_idx_dataset: a label >= classes is refused with its byte offset") {
  temp_dir dir;
  write_plain(dir / "img", idx_file({4, 2, 2}, test_values(16, 8)));
  write_plain(dir / "lab", idx_file({4}, {0, 9, 10, 1}));
  std::string msg = config_error_message([&] { (void)distopt::data::read_idx_dataset(dir / "img", dir / "lab", 10); });
  CHECK(contains(msg, (dir / "lab").string()));
  CHECK(contains(msg, "label 10 at byte offset 10"));
  msg = config_error_message([&] { (void)distopt::data::read_idx_dataset(dir / "img", dir / "lab", 5); });
  CHECK(contains(msg, "label 9 at byte offset 9"));
  CHECK(contains(msg, "outside 0..4"));
}

TEST_CASE("read_idx_dataset: label count != image count, and a 1-D image file, are refused") {
  temp_dir dir;
  write_plain(dir / "img", idx_file({4, 2, 2}, test_values(16, 9)));
  for (std::uint32_t count : {3u, 5u, 0u}) {
    write_plain(dir / "lab", idx_file({count}, bytes(count, 1)));
    CAPTURE(count);
    const std::string msg =
        config_error_message([&] { (void)distopt::data::read_idx_dataset(dir / "img", dir / "lab"); });
    CHECK(contains(msg, (dir / "lab").string()));
    CHECK(contains(msg, "expected 4 labels"));
  }
  write_plain(dir / "lab2d", idx_file({4, 1}, bytes(4, 1)));
  CHECK(contains(config_error_message([&] { (void)distopt::data::read_idx_dataset(dir / "img", dir / "lab2d"); }),
                 "expected 4 labels"));
  write_plain(dir / "flat", idx_file({4}, bytes(4, 1)));
  write_plain(dir / "lab", idx_file({4}, bytes(4, 1)));
  const std::string msg =
      config_error_message([&] { (void)distopt::data::read_idx_dataset(dir / "flat", dir / "lab"); });
  CHECK(contains(msg, (dir / "flat").string()));
  CHECK(contains(msg, ">= 2 dimensions"));
}

TEST_CASE("read_idx and load_fashion_mnist: a missing file names the path and the Debian package") {
  temp_dir dir;
  std::string msg = config_error_message([&] { (void)distopt::data::read_idx(dir / "absent-ubyte"); });
  CHECK(contains(msg, (dir / "absent-ubyte").string()));
  CHECK(contains(msg, "no such file"));
  CHECK(contains(msg, "dataset-fashion-mnist"));
  msg = config_error_message(
      [&] { (void)distopt::data::load_fashion_mnist(distopt::data::split::test, dir / "nowhere"); });
  CHECK(contains(msg, (dir / "nowhere" / "t10k-images-idx3-ubyte").string()));
  CHECK(contains(msg, "dataset-fashion-mnist"));
}

// ---- LIBSVM -------------------------------------------------------------------------

namespace {

std::string float_text(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));  // 9 digits: round-trips a float
  return buf;
}

}  // namespace

TEST_CASE("read_libsvm: files written by the test round-trip exactly") {
  temp_dir dir;
  constexpr Eigen::Index m = 40, d = 12;
  distopt::rng g(11, 0, 0, distopt::purpose::user);
  Eigen::MatrixXf a = Eigen::MatrixXf::Zero(m, d);
  Eigen::VectorXf y(m);
  for (Eigen::Index i = 0; i < m; ++i) {
    y(i) = static_cast<float>(static_cast<int>(g.below(5)) - 2);  // -2..2
    if (i == 3) continue;                                         // a sample with no features
    for (Eigen::Index j = 0; j < d; ++j)
      if (g.uniform() < 0.4f) a(i, j) = g.normal() * std::pow(10.0f, static_cast<float>(g.below(9)) - 4.0f);
  }
  a(5, d - 1) = 1e-42f;  // a subnormal survives
  a(6, d - 1) = -3.0f;   // so the largest index (d) occurs
  // Varied but legal layout: comments, blank lines, tabs, runs of spaces, CRLF, '+' signs.
  std::string text = "# written by test_data.cpp\n\n";
  for (Eigen::Index i = 0; i < m; ++i) {
    text += (y(i) > 0 ? "+" : "") + float_text(y(i));
    for (Eigen::Index j = 0; j < d; ++j)
      if (a(i, j) != 0.0f)
        text += (j % 3 == 0 ? "\t" : (j % 3 == 1 ? "  " : " ")) + std::to_string(j + 1) + ":" +
                (a(i, j) > 0 && i % 2 == 0 ? "+" : "") + float_text(a(i, j));
    if (i % 5 == 0) text += "   # comment after the data";
    if (i % 4 == 1) text += " \t";
    text += i % 7 == 2 ? "\r\n" : "\n";
    if (i % 9 == 4) text += "   \n#\n";
  }
  write_text(dir / "data.svm", text);

  const auto got = distopt::data::read_libsvm(dir / "data.svm");
  REQUIRE(got.features.rows() == m);
  REQUIRE(got.features.cols() == d);
  CHECK(got.features == a);
  CHECK(got.labels == y);

  const auto wide = distopt::data::read_libsvm(dir / "data.svm", std::size_t{d + 5});
  REQUIRE(wide.features.cols() == d + 5);
  CHECK(wide.features.leftCols(d) == a);
  CHECK(wide.features.rightCols(5).isZero(0.0f));

  write_text(dir / "empty.svm", "# nothing\n\n");
  const auto empty = distopt::data::read_libsvm(dir / "empty.svm");
  CHECK(empty.features.rows() == 0);
  CHECK(empty.labels.size() == 0);
}

TEST_CASE("read_libsvm: every malformed line is refused with file, line and column") {
  struct bad_line {
    const char* text;
    int column;  // 1-based column of the offending token or value
    const char* says;
    std::size_t features = 0;  // explicit feature count, 0 = none
  };
  const bad_line cases[] = {
      {"abc 1:2", 1, "label 'abc' is not a finite number"},
      {"1x 1:2", 1, "label '1x'"},
      {"+-1 1:2", 1, "label '+-1'"},
      {"nan 1:2", 1, "label 'nan'"},
      {"inf 1:2", 1, "label 'inf'"},
      {"1 0:2", 3, "index 0: indices are 1-based"},
      {"1 3:1 2:1", 7, "index 2 after index 3"},
      {"1 3:1  3:1", 8, "index 3 after index 3"},
      {"1 3", 3, "'3' has no ':'"},
      {"1 2:1 3 4:1", 7, "'3' has no ':'"},
      {"1 :5", 3, "the index '' is not a positive integer"},
      {"1 -3:1", 3, "the index '-3'"},
      {"1 +3:1", 3, "the index '+3'"},
      {"1 qid:3 1:1", 3, "the index 'qid'"},
      {"1 3:x", 5, "the value 'x' of index 3"},
      {"1 3:", 5, "the value '' of index 3"},
      {"1 3:1:2", 5, "the value '1:2'"},
      {"1 3:1e50", 5, "the value '1e50'"},
      {"1 10:nan", 6, "the value 'nan'"},
      {"1 3:-inf", 5, "the value '-inf'"},
      {"1 2:1,5", 5, "the value '1,5'"},
      {"1 5:1", 3, "index 5 is beyond the explicit feature count 4", 4},
  };
  temp_dir dir;
  // Line 1 data, line 2 a comment, line 3 blank, line 4 data with CRLF: the bad line is line 5.
  const std::string head = "1 1:1\n# comment 1:x\n\n-1 2:0.5\r\n";
  for (const bad_line& c : cases) {
    const fs::path p = dir / "bad.svm";
    write_text(p, head + c.text + " # trailing comment\n+1 1:2\n");
    const std::string line = c.text;
    CAPTURE(line);
    const std::string msg = config_error_message([&] {
      if (c.features != 0)
        (void)distopt::data::read_libsvm(p, c.features);
      else
        (void)distopt::data::read_libsvm(p);
    });
    CHECK(contains(msg, p.string() + ":5:" + std::to_string(c.column) + ": "));
    CHECK(contains(msg, c.says));
  }
  // The same check on line 1 of a file without a trailing newline.
  write_text(dir / "one.svm", "1 2:1 1:1");
  CHECK(contains(config_error_message([&] { (void)distopt::data::read_libsvm(dir / "one.svm"); }),
                 (dir / "one.svm").string() + ":1:7: index 1 after index 2"));
}

TEST_CASE("read_libsvm: a missing file names the path and where a real file ships") {
  temp_dir dir;
  const std::string msg = config_error_message([&] { (void)distopt::data::read_libsvm(dir / "absent.svm"); });
  CHECK(contains(msg, (dir / "absent.svm").string()));
  CHECK(contains(msg, "no such file"));
  CHECK(contains(msg, "liblinear-tools"));
}

TEST_CASE("read_libsvm: the real heart_scale file (Debian package liblinear-tools), when installed") {
  const fs::path heart = "/usr/share/doc/liblinear-tools/examples/heart_scale";
  if (!fs::exists(heart)) {
    MESSAGE("skipped: " << heart.string() << " is absent; apt-get install liblinear-tools ships this real LIBSVM file");
    return;
  }
  const auto d = distopt::data::read_libsvm(heart);
  // heart_scale (Statlog heart, scaled to [-1, 1]): 270 samples, 13 features, 120 of class +1.
  REQUIRE(d.features.rows() == 270);
  REQUIRE(d.features.cols() == 13);
  CHECK((d.labels.array() == 1.0f).count() == 120);
  CHECK((d.labels.array() == -1.0f).count() == 150);
  CHECK(d.features.cwiseAbs().maxCoeff() <= 1.0f);
  // Its first line: "+1 1:0.708333 2:1 3:1 4:-0.320755 ... 10:-0.225806 12:1 13:-1".
  CHECK(d.labels(0) == 1.0f);
  CHECK(d.features(0, 0) == 0.708333f);
  CHECK(d.features(0, 3) == -0.320755f);
  CHECK(d.features(0, 10) == 0.0f);
  CHECK(d.features(0, 12) == -1.0f);
  CHECK(distopt::data::binary_labels(d.labels) == d.labels);
}

TEST_CASE("binary_labels: two classes map to -1/+1, one-vs-rest by a positive label") {
  Eigen::VectorXf zero_one(5), one_two(3), three(4);
  zero_one << 0, 1, 1, 0, 1;
  one_two << 2, 1, 2;
  three << 1, 2, 3, 2;
  Eigen::VectorXf e1(5), e2(3), e3(4);
  e1 << -1, 1, 1, -1, 1;
  e2 << 1, -1, 1;
  e3 << -1, 1, -1, 1;
  CHECK(distopt::data::binary_labels(zero_one) == e1);
  CHECK(distopt::data::binary_labels(one_two) == e2);
  CHECK(distopt::data::binary_labels(three, 2.0f) == e3);
  CHECK(contains(config_error_message([&] { (void)distopt::data::binary_labels(three); }), "more than two"));
  CHECK(contains(config_error_message([&] { (void)distopt::data::binary_labels(three, 7.0f); }), "does not occur"));
  CHECK(contains(config_error_message([&] { (void)distopt::data::binary_labels(Eigen::VectorXf::Ones(3)); }),
                 "every label is"));
  CHECK_THROWS_AS((void)distopt::data::binary_labels(Eigen::VectorXf()), config_error);
}

// ---- partitions --------------------------------------------------------------------

namespace {

// Every index 0..m-1 appears in exactly one shard, and nothing else appears.
void check_exact_partition(const std::vector<std::vector<std::size_t>>& shards, std::size_t m) {
  std::vector<int> seen(m, 0);
  std::size_t total = 0;
  bool in_range = true;
  for (const auto& s : shards) {
    total += s.size();
    for (std::size_t i : s) {
      if (i >= m) {
        in_range = false;
        continue;
      }
      ++seen[i];
    }
  }
  CHECK(in_range);
  CHECK(total == m);
  CHECK(std::all_of(seen.begin(), seen.end(), [](int k) { return k == 1; }));
}

std::vector<int> random_labels(std::size_t m, int classes, std::uint64_t seed) {
  distopt::rng g(seed, 0, 0, distopt::purpose::user);
  std::vector<int> y(m);
  for (auto& v : y) v = static_cast<int>(g.below(static_cast<std::uint32_t>(classes)));
  return y;
}

// classes blocks of `per_class` samples each, interleaved: label of sample i is i % classes.
std::vector<int> balanced_labels(int classes, int per_class) {
  std::vector<int> y(static_cast<std::size_t>(classes * per_class));
  for (std::size_t i = 0; i < y.size(); ++i) y[i] = static_cast<int>(i % static_cast<std::size_t>(classes));
  return y;
}

// share[c][k]: fraction of class c's samples held by worker k.
std::vector<std::vector<double>> class_shares(const std::vector<int>& y, const std::vector<std::vector<std::size_t>>& s,
                                              int classes) {
  std::vector<std::vector<double>> share(static_cast<std::size_t>(classes), std::vector<double>(s.size(), 0.0));
  std::vector<double> count(static_cast<std::size_t>(classes), 0.0);
  for (int v : y) count[static_cast<std::size_t>(v)] += 1;
  for (std::size_t k = 0; k < s.size(); ++k)
    for (std::size_t i : s[k]) share[static_cast<std::size_t>(y[i])][k] += 1;
  for (std::size_t c = 0; c < share.size(); ++c)
    for (double& v : share[c]) v /= count[c];
  return share;
}

}  // namespace

TEST_CASE("iid_shard: an exact partition, deterministic in the seed") {
  for (std::size_t m : {0u, 1u, 7u, 103u, 1000u}) {
    for (int w : {1, 2, 3, 4, 8}) {
      std::vector<std::vector<std::size_t>> s;
      for (int r = 0; r < w; ++r) s.push_back(distopt::data::iid_shard(m, r, w, 99));
      CAPTURE(m);
      CAPTURE(w);
      check_exact_partition(s, m);
      for (int r = 0; r < w; ++r) CHECK(distopt::data::iid_shard(m, r, w, 99) == s[static_cast<std::size_t>(r)]);
    }
  }
  CHECK(distopt::data::iid_shard(1000, 0, 4, 1) != distopt::data::iid_shard(1000, 0, 4, 2));
}

TEST_CASE("label_sorted_shard: contiguous label ranges, an exact partition, deterministic") {
  const std::vector<int> y = random_labels(1003, 10, 5);
  for (int w : {1, 2, 3, 4, 7}) {
    CAPTURE(w);
    std::vector<std::vector<std::size_t>> s;
    for (int r = 0; r < w; ++r) s.push_back(distopt::data::label_sorted_shard(y, r, w, 42));
    check_exact_partition(s, y.size());
    CHECK(s == distopt::data::label_sorted_partition(y, w, 42));
    CHECK(s == distopt::data::label_sorted_partition(y, w, 42));
    for (int r = 0; r < w; ++r) {
      const auto& mine = s[static_cast<std::size_t>(r)];
      // Sizes differ by at most one: floor or ceil of m/w.
      CHECK(mine.size() >= y.size() / static_cast<std::size_t>(w));
      CHECK(mine.size() <= (y.size() + static_cast<std::size_t>(w) - 1) / static_cast<std::size_t>(w));
      // Rank order is label order: every label of rank r is <= every label of rank r + 1.
      if (r + 1 < w) {
        int max_here = -1, min_next = 100;
        for (std::size_t i : mine) max_here = std::max(max_here, y[i]);
        for (std::size_t i : s[static_cast<std::size_t>(r + 1)]) min_next = std::min(min_next, y[i]);
        CHECK(max_here <= min_next);
      }
    }
  }
  // Ties are broken by the seed: the same label range, a different choice of samples.
  const std::vector<int> y2 = balanced_labels(2, 100);
  CHECK(distopt::data::label_sorted_shard(y2, 0, 4, 1) != distopt::data::label_sorted_shard(y2, 0, 4, 2));
}

TEST_CASE("label_sorted_shard with 2 shards per worker: each worker holds exactly 2 whole classes") {
  // 10 classes of 50 samples, 5 workers, 10 pieces of 50: every piece is one class.
  const std::vector<int> y = balanced_labels(10, 50);
  std::set<std::vector<std::vector<std::size_t>>> distinct;
  for (std::uint64_t seed : {1u, 2u, 3u, 4u}) {
    const auto s = distopt::data::label_sorted_partition(y, 5, seed, 2);
    check_exact_partition(s, y.size());
    distinct.insert(s);
    std::set<int> all;
    for (int r = 0; r < 5; ++r) {
      CHECK(distopt::data::label_sorted_shard(y, r, 5, seed, 2) == s[static_cast<std::size_t>(r)]);
      std::map<int, int> count;
      for (std::size_t i : s[static_cast<std::size_t>(r)]) ++count[y[i]];
      CHECK(count.size() == 2);
      for (auto [label, n] : count) {
        CHECK(n == 50);
        all.insert(label);
      }
    }
    CHECK(all.size() == 10);
  }
  CHECK(distinct.size() > 1);  // the pieces' owners depend on the seed
}

TEST_CASE("dirichlet_shard: an exact partition for every alpha, deterministic in the seed") {
  std::vector<int> y = random_labels(997, 7, 3);
  y[0] = -4;  // labels need not be 0..C-1
  y[1] = 1000000;
  for (double alpha : {0.001, 0.1, 1.0, 1000.0}) {
    for (int w : {1, 2, 4, 7}) {
      CAPTURE(alpha);
      CAPTURE(w);
      std::vector<std::vector<std::size_t>> s;
      for (int r = 0; r < w; ++r) s.push_back(distopt::data::dirichlet_shard(y, r, w, alpha, 8));
      check_exact_partition(s, y.size());
      CHECK(s == distopt::data::dirichlet_partition(y, w, alpha, 8));
      for (const auto& mine : s) CHECK(std::is_sorted(mine.begin(), mine.end()));
      if (w > 1) CHECK(s != distopt::data::dirichlet_partition(y, w, alpha, 9));
    }
  }
  check_exact_partition(distopt::data::dirichlet_partition(std::vector<int>{}, 3, 0.5, 1), 0);
}

TEST_CASE("dirichlet_shard: alpha = 1000 gives nearly uniform label proportions, alpha = 0.1 skewed ones") {
  // 10 classes x 1000 samples, 4 workers. Reference values from Dir(alpha 1_4):
  // * alpha = 1000: each share p_ck ~ Beta(1000, 3000), sd 0.0068 (2.7% of 1/4), so worker
  //   k's fraction q_kc of label c is 0.1 with sd ~0.0026; the bound |q_kc - 0.1| <= 0.015
  //   is 5.8 sd, failing with probability < 40 * 7e-9 over the 40 (k, c) pairs (a simulation
  //   of 20000 draws had max 0.0126).
  // * S = mean over classes of max_k p_ck (the share of a class's biggest holder) is 0.25 for
  //   an even split; alpha = 1000 gives 0.258 +- 0.0012, so S <= 0.27 (9 sd). alpha = 0.1 gives
  //   0.847 +- 0.053, and in 100000 simulated draws fewer than 10 had S < 0.635: S >= 0.6
  //   fails with probability < 1e-4. Rounding counts to whole samples moves S by < 0.001.
  const std::vector<int> y = balanced_labels(10, 1000);
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    const auto flat = distopt::data::dirichlet_partition(y, 4, 1000.0, seed);
    double worst = 0.0;
    for (const auto& mine : flat) {
      std::vector<double> count(10, 0.0);
      for (std::size_t i : mine) count[static_cast<std::size_t>(y[i])] += 1;
      for (double c : count) worst = std::max(worst, std::abs(c / static_cast<double>(mine.size()) - 0.1));
    }
    CHECK(worst <= 0.015);
    auto biggest_share = [&](const std::vector<std::vector<std::size_t>>& s) {
      double sum = 0.0;
      for (const auto& row : class_shares(y, s, 10)) sum += *std::max_element(row.begin(), row.end());
      return sum / 10.0;
    };
    CHECK(biggest_share(flat) <= 0.27);
    CHECK(biggest_share(distopt::data::dirichlet_partition(y, 4, 0.1, seed)) >= 0.6);
  }
}

TEST_CASE("Gamma and Dirichlet variates match closed-form moments and tails") {
  constexpr int n = 100000;
  // Gamma(a, 1): mean a, variance a, fourth central moment 3a^2 + 6a. Bounds: 5 standard
  // errors (sd of the sample mean sqrt(a/n), of the sample variance sqrt((2a^2 + 6a)/n)).
  for (double a : {0.1, 0.5, 1.0, 2.5, 10.0}) {
    distopt::rng g(21, 0, static_cast<std::uint32_t>(a * 10), distopt::purpose::user);
    double sum = 0.0, sum2 = 0.0;
    std::vector<double> x(n);
    for (double& v : x) {
      v = distopt::data::detail::gamma_variate(g, a);
      sum += v;
    }
    const double mean = sum / n;
    for (double v : x) sum2 += (v - mean) * (v - mean);
    const double var = sum2 / (n - 1);
    CAPTURE(a);
    CHECK(std::abs(mean - a) <= 5.0 * std::sqrt(a / n));
    CHECK(std::abs(var - a) <= 5.0 * std::sqrt((2.0 * a * a + 6.0 * a) / n));
  }
  // Small shapes, through the log: P(G <= t) = t^a / Gamma(a + 1) (1 + O(t)) for small t. For
  // a = 0.1, t = 1e-10: 0.1051; for a = 0.001, t = e^-1000 (G itself underflows a double): 0.3681.
  // Bound: 5 binomial standard errors.
  struct tail {
    double a, log_t;
  };
  for (const tail tl : {tail{0.1, std::log(1e-10)}, tail{0.001, -1000.0}}) {
    distopt::rng g(22, 0, 0, distopt::purpose::user);
    int below = 0;
    for (int i = 0; i < n; ++i) below += distopt::data::detail::log_gamma_variate(g, tl.a) <= tl.log_t;
    const double p = std::exp(tl.a * tl.log_t) / std::tgamma(tl.a + 1.0);
    CAPTURE(tl.a);
    CHECK(std::abs(below / static_cast<double>(n) - p) <= 5.0 * std::sqrt(p * (1 - p) / n));
  }
  // Dir(alpha 1_k): each component ~ Beta(alpha, (k-1) alpha), mean 1/k, variance
  // (1/k)(1 - 1/k)/(k alpha + 1); components sum to 1.
  for (double alpha : {0.1, 1.0, 50.0}) {
    constexpr std::size_t k = 4;
    constexpr int draws = 20000;
    distopt::rng g(23, 0, 0, distopt::purpose::user);
    double sum = 0.0, sum2 = 0.0, worst_total = 0.0;
    for (int i = 0; i < draws; ++i) {
      const auto p = distopt::data::detail::dirichlet_variate(g, alpha, k);
      double total = 0.0;
      for (double v : p) total += v;
      worst_total = std::max(worst_total, std::abs(total - 1.0));
      sum += p[0];
      sum2 += p[0] * p[0];
    }
    const double mean = sum / draws, var = sum2 / draws - mean * mean;
    const double want_var = 0.25 * 0.75 / (4.0 * alpha + 1.0);
    CAPTURE(alpha);
    CHECK(worst_total <= 1e-12);
    CHECK(std::abs(mean - 0.25) <= 5.0 * std::sqrt(want_var / draws));
    // Sample variance of a [0, 1] variable: sd of the estimate <= sqrt(var / draws).
    CHECK(std::abs(var - want_var) <= 5.0 * std::sqrt(want_var / draws));
  }
}

TEST_CASE("partitions: bad arguments are config_error with the function's name") {
  const std::vector<int> y = {0, 1, 2};
  CHECK(contains(config_error_message([&] { (void)distopt::data::iid_shard(3, 2, 2, 0); }), "iid_shard"));
  CHECK(contains(config_error_message([&] { (void)distopt::data::iid_shard(3, -1, 2, 0); }), "iid_shard"));
  CHECK(contains(config_error_message([&] { (void)distopt::data::label_sorted_shard(y, 0, 0, 0); }),
                 "workers must be >= 1"));
  CHECK(contains(config_error_message([&] { (void)distopt::data::label_sorted_shard(y, 3, 3, 0); }),
                 "label_sorted_shard"));
  CHECK(contains(config_error_message([&] { (void)distopt::data::label_sorted_shard(y, 0, 3, 0, 0); }),
                 "shards_per_worker"));
  CHECK(contains(config_error_message([&] { (void)distopt::data::dirichlet_shard(y, 0, 2, 0.0, 0); }),
                 "alpha must be finite and > 0"));
  CHECK(contains(config_error_message([&] { (void)distopt::data::dirichlet_shard(y, 0, 2, -1.0, 0); }), "alpha"));
  CHECK(
      contains(config_error_message([&] { (void)distopt::data::dirichlet_shard(y, 0, 2, std::nan(""), 0); }), "alpha"));
  CHECK(contains(config_error_message([&] { (void)distopt::data::dirichlet_shard(y, 0, 2, HUGE_VAL, 0); }), "alpha"));
  CHECK(contains(config_error_message([&] { (void)distopt::data::dirichlet_shard(y, 2, 2, 1.0, 0); }),
                 "dirichlet_shard"));
  CHECK(contains(config_error_message([&] { (void)distopt::data::dirichlet_partition(y, 0, 1.0, 0); }),
                 "workers must be >= 1"));
}
