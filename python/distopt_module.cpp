// _distopt: the compiled part of the Python package `distopt` (python/distopt/). It exposes
// distopt's compressors as codecs that read and write torch tensors and numpy arrays in
// place, through the buffer protocol (a torch tensor through .detach().numpy(), which
// shares its memory), and the Fashion-MNIST reader (data/idx.hpp).
//
//   c = distopt.error_feedback(distopt.top_k(0.01))       # a codec; its state is made at the first encode
//   wire = torch.empty(c.max_encoded_bytes(x.numel()), dtype=torch.uint8)
//   size = c.encode(x, wire, seed=0, rank=0, step=0)      # rng(seed, rank, step, compression), as in C++
//   c.decode(wire[:size], out)                            # out: float32, x.numel() entries
//
// A codec keeps one state (error-feedback residual, PowerSGD's Q and memory) for vectors of
// the size it first encoded; use one codec per tensor (the DDP hooks keep one per bucket).
// The GIL is released while a codec encodes or decodes.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <distopt/compress.hpp>
#include <distopt/core/errors.hpp>
#include <distopt/core/traits.hpp>
#include <distopt/data/idx.hpp>

namespace py = pybind11;

namespace {

// A C-contiguous view of a Python object's memory as T (float or std::uint8_t, const for
// read-only use). Holds the buffer while the view lives.
template <class T>
class view {
  using value = std::remove_const_t<T>;

 public:
  view(py::handle obj, const char* what) {
    py::object o = py::reinterpret_borrow<py::object>(obj);
    if (!PyObject_CheckBuffer(o.ptr())) {
      if (!py::hasattr(o, "detach") || !py::hasattr(o, "numpy"))
        throw py::type_error(std::string(what) +
                             ": expected a torch tensor or an object with the buffer protocol "
                             "(numpy array, bytearray), got " +
                             std::string(py::str(o.get_type())));
      o = o.attr("detach")().attr("numpy")();  // a torch CPU tensor: numpy array on the same memory
    }
    info_ = py::buffer(o).request(/*writable=*/!std::is_const_v<T>);
    if (info_.itemsize != sizeof(value) || info_.format != py::format_descriptor<value>::format())
      throw py::type_error(std::string(what) + ": expected " +
                           (std::is_same_v<value, float> ? "float32 (torch.float32, numpy.float32)"
                                                         : "uint8 (torch.uint8, numpy.uint8)") +
                           " elements, got format '" + info_.format + "' of " + std::to_string(info_.itemsize) +
                           " bytes");
    py::ssize_t stride = info_.itemsize;
    for (py::ssize_t d = info_.ndim - 1; d >= 0; --d) {
      if (info_.shape[d] > 1 && info_.strides[d] != stride)
        throw py::value_error(std::string(what) + ": the memory is not contiguous; pass x.contiguous()");
      stride *= info_.shape[d];
    }
    span_ = {static_cast<T*>(info_.ptr), static_cast<std::size_t>(info_.size)};
  }
  std::span<T> span() const noexcept { return span_; }

 private:
  py::buffer_info info_;
  std::span<T> span_;
};

std::span<const std::byte> as_bytes(std::span<const std::uint8_t> s) { return std::as_bytes(s); }

// A compressor with its state, behind one interface (type erasure at the Python boundary:
// one virtual call per vector, never per element).
class codec {
 public:
  virtual ~codec() = default;
  virtual const std::string& name() const noexcept = 0;
  virtual bool unbiased() const noexcept = 0;
  virtual std::size_t max_encoded_bytes(std::size_t n) const = 0;
  /// Replaces `wire` by the encoding of `in`, with the stream rng(seed, rank, step, compression).
  virtual void encode(std::span<const float> in, distopt::byte_buffer& wire, distopt::rng& g) = 0;
  virtual void decode(std::span<const std::byte> bytes, std::span<float> out) = 0;
  /// error_feedback<C> around this codec's compressor (a new codec, fresh state).
  virtual std::shared_ptr<codec> with_error_feedback() const = 0;
  /// Forgets the state; the next encode makes a fresh one.
  virtual void reset() = 0;

  // Python-facing operations: buffers in, GIL released while computing.
  std::size_t encode_into(py::handle x, py::handle out, std::uint64_t seed, std::uint32_t rank, std::uint32_t step) {
    const view<const float> in(x, "encode: x");
    const view<std::uint8_t> dst(out, "encode: out");
    py::gil_scoped_release unlocked;
    std::lock_guard lock(mutex_);
    distopt::rng g(seed, rank, step, distopt::purpose::compression);
    wire_.clear();
    encode(in.span(), wire_, g);
    if (wire_.size() > dst.span().size())
      throw distopt::config_error(name() + ": the encoding takes " + std::to_string(wire_.size()) +
                                  " bytes but out has " + std::to_string(dst.span().size()) +
                                  "; allocate max_encoded_bytes(n) bytes");
    std::memcpy(dst.span().data(), wire_.data(), wire_.size());
    return wire_.size();
  }

  void decode_from(py::handle wire, py::handle out) {
    const view<const std::uint8_t> bytes(wire, "decode: wire");
    const view<float> dst(out, "decode: out");
    py::gil_scoped_release unlocked;
    std::lock_guard lock(mutex_);
    decode(as_bytes(bytes.span()), dst.span());
  }

  // out = (1/k) sum_r decode(wires[r]), summed in list order: collective/average.hpp's
  // gather_decode, so every rank of a DDP hook gets the same bits.
  void decode_mean(const py::list& wires, py::handle out) {
    if (wires.empty()) throw distopt::config_error(name() + ": decode_mean needs at least one encoding");
    std::vector<view<const std::uint8_t>> parts;
    for (const py::handle w : wires) parts.emplace_back(w, "decode_mean: wires[i]");
    const view<float> dst(out, "decode_mean: out");
    py::gil_scoped_release unlocked;
    std::lock_guard lock(mutex_);
    const std::span<float> v = dst.span();
    decoded_.resize(v.size());
    for (std::size_t k = 0; k < parts.size(); ++k) {
      decode(as_bytes(parts[k].span()), k == 0 ? v : std::span<float>(decoded_));
      if (k > 0)
        for (std::size_t i = 0; i < v.size(); ++i) v[i] += decoded_[i];
    }
    const auto count = static_cast<float>(parts.size());
    for (float& x : v) x /= count;
  }

 private:
  std::mutex mutex_;  // a DDP hook's future callbacks may run on another thread
  distopt::byte_buffer wire_;
  std::vector<float> decoded_;
};

template <distopt::compressor C>
class codec_of final : public codec {
 public:
  codec_of(C c, std::string name) : c_(std::move(c)), name_(std::move(name)) {}

  const std::string& name() const noexcept override { return name_; }
  bool unbiased() const noexcept override { return C::unbiased; }
  std::size_t max_encoded_bytes(std::size_t n) const override { return c_.max_encoded_bytes(n); }

  void encode(std::span<const float> in, distopt::byte_buffer& wire, distopt::rng& g) override {
    if (!state_) {
      state_.emplace(distopt::make_compressor_state(c_, in.size()));
      state_size_ = in.size();
    } else if (distopt::stateful_encoder<C> && state_size_ != in.size()) {
      throw distopt::config_error(name_ + ": this codec keeps state for vectors of " + std::to_string(state_size_) +
                                  " floats but got " + std::to_string(in.size()) +
                                  "; use one codec per tensor, or reset() it");
    }
    distopt::encode(c_, in, wire, g, *state_);
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) override { c_.decode(bytes, out); }

  std::shared_ptr<codec> with_error_feedback() const override {
    if constexpr (distopt::stateful_encoder<C>)
      throw distopt::config_error("error_feedback: " + name_ +
                                  " keeps its own state already; wrap a stateless codec (top_k, scaled_sign, qsgd)");
    else
      return std::make_shared<codec_of<distopt::compress::error_feedback<C>>>(distopt::compress::error_feedback<C>(c_),
                                                                              "error_feedback(" + name_ + ")");
  }

  void reset() override { state_.reset(); }

 private:
  C c_;
  std::string name_;
  std::optional<distopt::compressor_state_t<C>> state_;
  std::size_t state_size_ = 0;
};

template <class C>
std::shared_ptr<codec> make(C c, std::string name) {
  return std::make_shared<codec_of<C>>(std::move(c), std::move(name));
}

std::shared_ptr<codec> make_qsgd(unsigned bits, std::size_t bucket) {
  const std::string name = "qsgd(bits=" + std::to_string(bits) + ", bucket=" + std::to_string(bucket) + ")";
  if (bucket == 0) throw distopt::config_error("qsgd: bucket must be >= 1, got 0");
  switch (bits) {
    case 2:
      return make(distopt::compress::qsgd<2>{.bucket = bucket}, name);
    case 4:
      return make(distopt::compress::qsgd<4>{.bucket = bucket}, name);
    case 8:
      return make(distopt::compress::qsgd<8>{.bucket = bucket}, name);
    default:
      throw distopt::config_error("qsgd: bits must be 2, 4 or 8, got " + std::to_string(bits));
  }
}

std::shared_ptr<codec> make_power_sgd(unsigned rank, const std::vector<std::pair<std::size_t, std::size_t>>& shapes,
                                      bool error_feedback, std::uint64_t seed) {
  distopt::layout l;
  for (const auto& [rows, cols] : shapes) l.push_back({rows, cols});
  const std::string name = "power_sgd(rank=" + std::to_string(rank) + ", " + std::to_string(l.size()) +
                           " tensors, error_feedback=" + (error_feedback ? "True" : "False") + ")";
  auto build = [&]<unsigned R>() {
    return make(distopt::compress::power_sgd<R>{.shapes = l, .error_feedback = error_feedback, .seed = seed}, name);
  };
  switch (rank) {
    case 1:
      return build.operator()<1>();
    case 2:
      return build.operator()<2>();
    case 4:
      return build.operator()<4>();
    default:
      throw distopt::config_error("power_sgd: rank must be 1, 2 or 4, got " + std::to_string(rank));
  }
}

py::tuple load_fashion_mnist(const std::string& split) {
  if (split != "train" && split != "test")
    throw distopt::config_error("load_fashion_mnist: split must be 'train' or 'test', got '" + split + "'");
  const auto data =
      distopt::data::load_fashion_mnist(split == "train" ? distopt::data::split::train : distopt::data::split::test);
  const auto n = static_cast<py::ssize_t>(data.features.rows()), d = static_cast<py::ssize_t>(data.features.cols());
  py::array_t<float> features({n, d});
  py::array_t<std::int64_t> labels(n);
  using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<row_major>(features.mutable_data(), n, d) = data.features;
  for (py::ssize_t i = 0; i < n; ++i) labels.mutable_at(i) = data.labels[static_cast<std::size_t>(i)];
  return py::make_tuple(features, labels);
}

}  // namespace

PYBIND11_MODULE(_distopt, m) {
  m.doc() = "distopt's compressors on torch tensors and numpy arrays (see the package distopt)";

  const py::object base = py::register_exception<distopt::error>(m, "Error", PyExc_RuntimeError);
  py::register_exception<distopt::config_error>(m, "ConfigError", base);
  py::register_exception<distopt::transport_error>(m, "TransportError", base);
  py::register_exception<distopt::numeric_error>(m, "NumericError", base);

  py::class_<codec, std::shared_ptr<codec>>(m, "Codec", "A distopt compressor with its per-vector state")
      .def_property_readonly("name", &codec::name)
      .def_property_readonly("unbiased", &codec::unbiased, "True if E[decode(encode(x))] == x")
      .def("max_encoded_bytes", &codec::max_encoded_bytes, py::arg("n"),
           "Bytes encode() needs for n floats (exact for every codec of this module)")
      .def("encode", &codec::encode_into, py::arg("x"), py::arg("out"), py::kw_only(), py::arg("seed") = 0,
           py::arg("rank") = 0, py::arg("step") = 0,
           "Encodes float32 x into the uint8 buffer out; returns the bytes written. The random stream is "
           "distopt::rng(seed, rank, step, purpose::compression), as in C++.")
      .def("decode", &codec::decode_from, py::arg("wire"), py::arg("out"),
           "Writes the reconstruction of one encoding (exactly its bytes) into float32 out")
      .def("decode_mean", &codec::decode_mean, py::arg("wires"), py::arg("out"),
           "out = mean of the decodings of the encodings in wires, summed in list order")
      .def("reset", &codec::reset, "Forgets the state (residual, warm start); the next encode starts afresh")
      .def("__repr__", [](const codec& c) { return "distopt." + c.name(); });

  m.def(
      "identity", [] { return make(distopt::compress::identity{}, "identity()"); }, "Raw float32");
  m.def(
      "top_k",
      [](double ratio) {
        return make(distopt::compress::top_k(ratio), "top_k(ratio=" + std::string(py::repr(py::float_(ratio))) + ")");
      },
      py::arg("ratio") = 0.01, "The ceil(ratio n) entries of largest magnitude (compress/top_k.hpp)");
  m.def(
      "scaled_sign",
      [](std::size_t bucket) {
        return make(distopt::compress::scaled_sign(bucket), "scaled_sign(bucket=" + std::to_string(bucket) + ")");
      },
      py::arg("bucket") = 512, "Signs times the mean magnitude per bucket (compress/scaled_sign.hpp)");
  m.def("qsgd", &make_qsgd, py::arg("bits") = 8, py::arg("bucket") = 512,
        "QSGD: unbiased stochastic quantisation, bits in {2, 4, 8} (compress/qsgd.hpp)");
  m.def("power_sgd", &make_power_sgd, py::arg("rank") = 2,
        py::arg("shapes") = std::vector<std::pair<std::size_t, std::size_t>>{}, py::arg("error_feedback") = true,
        py::arg("seed") = 0,
        "PowerSGD, rank in {1, 2, 4}; shapes: (rows, cols) column-major tensors covering the vector "
        "(compress/power_sgd.hpp)");
  m.def(
      "error_feedback", [](const codec& inner) { return inner.with_error_feedback(); }, py::arg("inner"),
      "Error feedback around a stateless codec: p = x + e; send C(p); e = p - decode(C(p))");
  m.def("load_fashion_mnist", &load_fashion_mnist, py::arg("split"),
        "(features float32 [n, 784] in [0, 1], labels int64 [n]) of Fashion-MNIST's 'train' or 'test' split, "
        "from $DISTOPT_FASHION_MNIST or the Debian package dataset-fashion-mnist");
}
