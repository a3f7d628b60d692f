#pragma once
// Checkpoints: the format in which optimizer::save writes one rank's state and
// optimizer::load reads it back; the writer and the bounds-checked reader with which each
// stateful piece (local_update, statistics, protocols, compressor states) saves itself.
//
// Format, version 2 (integers little-endian, floats IEEE-754 binary32 little-endian):
//   offset 0    8 bytes  magic "DOPTCKPT"
//          8    u32      format version (2; 1 also held options.staleness_aware_lr and consensus_step)
//          12   u32      reserved, 0
//          16   u64      total length L in bytes, this header and the checksum included
//          24   sections, in a fixed order, each: str name, u64 length, `length` bytes
//          L-4  u32      CRC32C (core/crc32c.hpp) of bytes [0, L-4)
// Fields inside sections: u8, u32, u64, f32; bool = u8 0 or 1; str = u32 length + bytes;
// floats = u64 count + count f32.
// read_checkpoint() checks the magic, the version and the length — so a truncated checkpoint
// is recognised as such, and nothing is read past what the stream holds — then the checksum,
// which catches every changed byte (CRC32C detects every error burst of up to 32 bits),
// before anything is parsed. Every section must then be consumed exactly. What fails these
// checks throws checkpoint_error; a well-formed checkpoint whose contents do not fit the
// optimizer loading it throws config_error naming the difference: another optimizer type
// (its four policy types), model size, rank, world size or options (but the learning rate,
// which is state and restored, and the timeout); a gossip row (neighbours, weights) or consensus step, server
// rank, PowerSGD shapes or a state of another size. Knobs that change no state's size (a
// top_k ratio, a QSGD bucket) are not recorded: load into the configuration that saved.
// A new layout gets a new format version; this reader refuses every other version.
//
// The optimizer writes three sections (optimizer.hpp): "run" (what wrote it: its type,
// parameter count, rank, world size and options, compared on load), "optimizer" (step
// counter, parameters, local_update, statistics) and "protocol" (P::save, core/protocol.hpp).
//
//   distopt::checkpoint_writer w;
//   w.section("mine", [&] { w.u64(count); w.floats(v); });
//   out.write(...w.finish()...);                                // header and checksum filled in
//   const std::vector<std::byte> bytes = distopt::read_checkpoint(in);   // verified
//   distopt::checkpoint_reader all = distopt::checkpoint_reader::sections_of(bytes);
//   distopt::checkpoint_reader mine = all.section("mine");
//   count = mine.u64(); mine.floats(v, "my vector"); mine.expect_end();

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <istream>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/crc32c.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/options.hpp"
#include "distopt/core/traits.hpp"

namespace distopt {

namespace detail::checkpoint {
inline constexpr std::array<char, 8> magic = {'D', 'O', 'P', 'T', 'C', 'K', 'P', 'T'};
inline constexpr std::uint32_t format_version = 2;
inline constexpr std::size_t header_bytes = 24;
inline constexpr std::size_t checksum_bytes = 4;

template <class T>
void store_le(std::byte* p, T v) noexcept {
  for (std::size_t i = 0; i < sizeof v; ++i) p[i] = static_cast<std::byte>(static_cast<std::uint64_t>(v) >> (8 * i));
}
template <class T>
T load_le(const std::byte* p) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v |= std::to_integer<std::uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}
}  // namespace detail::checkpoint

/// Builds a checkpoint in memory: fields grouped in named sections, then finish().
class checkpoint_writer {
 public:
  checkpoint_writer() { bytes_.resize(detail::checkpoint::header_bytes); }

  void u8(std::uint8_t v) { put(v); }
  void u32(std::uint32_t v) { put(v); }
  void u64(std::uint64_t v) { put(v); }
  void f32(float v) { put(std::bit_cast<std::uint32_t>(v)); }
  void boolean(bool v) { put(std::uint8_t{v}); }
  void str(std::string_view s) {
    u32(static_cast<std::uint32_t>(s.size()));
    append(bytes_, std::as_bytes(std::span<const char>(s.data(), s.size())));
  }
  void floats(std::span<const float> v) {
    u64(v.size());
    const std::size_t at = bytes_.size();
    bytes_.resize(at + 4 * v.size());
    if constexpr (std::endian::native == std::endian::little) {
      if (!v.empty()) std::memcpy(bytes_.data() + at, v.data(), 4 * v.size());
    } else {
      for (std::size_t i = 0; i < v.size(); ++i)
        detail::checkpoint::store_le(bytes_.data() + at + 4 * i, std::bit_cast<std::uint32_t>(v[i]));
    }
  }

  /// Writes section `name`: whatever `body()` writes, preceded by its length.
  template <class Body>
  void section(std::string_view name, Body&& body) {
    str(name);
    const std::size_t at = bytes_.size();
    u64(0);
    body();
    detail::checkpoint::store_le(bytes_.data() + at, static_cast<std::uint64_t>(bytes_.size() - at - 8));
  }

  /// The complete checkpoint: header, sections, checksum. Call once, after the last section.
  std::span<const std::byte> finish() {
    namespace ck = detail::checkpoint;
    std::memcpy(bytes_.data(), ck::magic.data(), ck::magic.size());
    ck::store_le(bytes_.data() + 8, ck::format_version);
    ck::store_le(bytes_.data() + 12, std::uint32_t{0});
    ck::store_le(bytes_.data() + 16, static_cast<std::uint64_t>(bytes_.size() + ck::checksum_bytes));
    put(detail::crc32c(bytes_));
    return bytes_;
  }

 private:
  template <class T>
  void put(T v) {
    std::byte b[sizeof v];
    detail::checkpoint::store_le(b, v);
    append(bytes_, b);
  }

  byte_buffer bytes_;
};

/// Reads the fields of a verified checkpoint; every read is bounds-checked, and a short or
/// malformed field throws checkpoint_error naming the section.
class checkpoint_reader {
 public:
  /// The sections of `checkpoint`, which read_checkpoint() or verify_checkpoint() accepted.
  static checkpoint_reader sections_of(std::span<const std::byte> checkpoint) {
    namespace ck = detail::checkpoint;
    return checkpoint_reader(
        checkpoint.subspan(ck::header_bytes, checkpoint.size() - ck::header_bytes - ck::checksum_bytes), "checkpoint");
  }

  checkpoint_reader(std::span<const std::byte> bytes, std::string where) noexcept
      : bytes_(bytes), where_(std::move(where)) {}

  std::uint8_t u8() { return get<std::uint8_t>(); }
  std::uint32_t u32() { return get<std::uint32_t>(); }
  std::uint64_t u64() { return get<std::uint64_t>(); }
  float f32() { return std::bit_cast<float>(get<std::uint32_t>()); }
  bool boolean() {
    const std::uint8_t v = u8();
    if (v > 1) fail("a flag holds " + std::to_string(v) + ", not 0 or 1");
    return v == 1;
  }
  std::string str() {
    const auto b = take(u32(), "a string");
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }

  /// A u64 count of elements of `element_bytes` each, checked to fit in what is left.
  std::size_t count(std::size_t element_bytes) {
    const std::uint64_t n = u64();
    if (n > left() / element_bytes)
      fail("a count of " + std::to_string(n) + " elements of " + std::to_string(element_bytes) +
           " bytes runs past the section's end (" + std::to_string(left()) + " bytes left)");
    return static_cast<std::size_t>(n);
  }

  /// Reads floats into exactly `out`; a stored count other than out.size() is a config_error
  /// naming `what` (the checkpoint was written by an optimizer configured otherwise).
  void floats(std::span<float> out, std::string_view what) {
    const std::size_t n = count(4);
    if (n != out.size())
      refuse(std::string(what) + " holds " + std::to_string(n) + " floats in the checkpoint, " +
             std::to_string(out.size()) + " in this optimizer");
    read_floats(out);
  }
  /// Reads floats of any stored count into `out` (resized).
  void floats(std::vector<float>& out) {
    out.resize(count(4));
    read_floats(out);
  }

  /// The next section, which must be called `name`; this reader moves past it.
  checkpoint_reader section(std::string_view name) {
    const std::string found = str();
    if (found != name) fail("expected section '" + std::string(name) + "', found '" + found + "'");
    const std::size_t length = count(1);
    return checkpoint_reader(take(length, "a section"), "checkpoint section '" + found + "'");
  }

  /// Everything must have been read.
  void expect_end() const {
    if (pos_ != bytes_.size()) fail(std::to_string(bytes_.size() - pos_) + " unread bytes at the end");
  }

  /// Throws checkpoint_error: the bytes are malformed.
  [[noreturn]] void fail(const std::string& what) const {
    throw checkpoint_error(where_ + " is malformed: " + what +
                           "; it was not written by this version of distopt, or it is corrupted");
  }
  /// Throws config_error: the checkpoint is well formed but was written by another configuration.
  [[noreturn]] void refuse(const std::string& difference) const {
    throw config_error(where_ + " does not fit this optimizer: " + difference +
                       "; load a checkpoint into an optimizer configured as the one that saved it");
  }

 private:
  std::size_t left() const noexcept { return bytes_.size() - pos_; }
  std::span<const std::byte> take(std::size_t n, std::string_view what) {
    if (n > left())
      fail(std::string(what) + " of " + std::to_string(n) + " bytes runs past the end (" + std::to_string(left()) +
           " bytes left)");
    const auto out = bytes_.subspan(pos_, n);
    pos_ += n;
    return out;
  }
  template <class T>
  T get() {
    return detail::checkpoint::load_le<T>(take(sizeof(T), "a field").data());
  }
  void read_floats(std::span<float> out) {
    const auto b = take(4 * out.size(), "floats");
    if constexpr (std::endian::native == std::endian::little) {
      if (!out.empty()) std::memcpy(out.data(), b.data(), b.size());
    } else {
      for (std::size_t i = 0; i < out.size(); ++i)
        out[i] = std::bit_cast<float>(detail::checkpoint::load_le<std::uint32_t>(b.data() + 4 * i));
    }
  }

  std::span<const std::byte> bytes_;
  std::string where_;
  std::size_t pos_ = 0;
};

/// Checks a complete checkpoint held in memory: magic, version, length and checksum;
/// throws checkpoint_error saying what is wrong.
inline void verify_checkpoint(std::span<const std::byte> bytes) {
  namespace ck = detail::checkpoint;
  auto bad = [](const std::string& what) { throw checkpoint_error("checkpoint refused: " + what); };
  if (bytes.empty()) bad("it is empty: no checkpoint was written");
  if (std::memcmp(bytes.data(), ck::magic.data(), std::min(bytes.size(), ck::magic.size())) != 0)
    bad("it does not start with the magic \"DOPTCKPT\": not a distopt checkpoint");
  if (bytes.size() < ck::header_bytes)
    bad("it ends after " + std::to_string(bytes.size()) + " bytes, inside the " + std::to_string(ck::header_bytes) +
        "-byte header: truncated");
  const auto version = ck::load_le<std::uint32_t>(bytes.data() + 8);
  if (version != ck::format_version)
    bad("format version " + std::to_string(version) + ", this build of distopt reads version " +
        std::to_string(ck::format_version) + " (or the header is corrupted)");
  if (ck::load_le<std::uint32_t>(bytes.data() + 12) != 0) bad("a reserved header field is set: corrupted");
  const auto length = ck::load_le<std::uint64_t>(bytes.data() + 16);
  if (length < ck::header_bytes + ck::checksum_bytes)
    bad("the header announces " + std::to_string(length) + " bytes, less than a header and a checksum: corrupted");
  if (length > bytes.size())
    bad("the header announces " + std::to_string(length) + " bytes, the checkpoint has " +
        std::to_string(bytes.size()) + ": truncated (or the length field is corrupted)");
  if (length < bytes.size())
    bad("the header announces " + std::to_string(length) + " bytes, the checkpoint has " +
        std::to_string(bytes.size()) + ": trailing bytes (or the length field is corrupted)");
  const auto stored = ck::load_le<std::uint32_t>(bytes.data() + length - ck::checksum_bytes);
  if (detail::crc32c(bytes.first(length - ck::checksum_bytes)) != stored)
    bad("checksum mismatch over " + std::to_string(length) + " bytes: the checkpoint is corrupted");
}

/// Reads one checkpoint from `in` — exactly the bytes its header announces, so a stream may
/// hold more after it — and verifies it (verify_checkpoint). Memory grows with the bytes that
/// arrive, never with what a corrupted length field announces. (A std::vector: its zero fill
/// is one memset, which costs nothing next to the read, where byte_buffer's per-element
/// default construction is a slow loop in unoptimised builds.)
inline std::vector<std::byte> read_checkpoint(std::istream& in) {
  namespace ck = detail::checkpoint;
  std::vector<std::byte> bytes;
  auto read_up_to = [&](std::size_t total) {
    constexpr std::size_t chunk = std::size_t{1} << 20;
    while (bytes.size() < total && in) {
      const std::size_t at = bytes.size(), want = std::min(chunk, total - at);
      bytes.resize(at + want);
      in.read(reinterpret_cast<char*>(bytes.data() + at), static_cast<std::streamsize>(want));
      bytes.resize(at + static_cast<std::size_t>(in.gcount()));
    }
  };
  read_up_to(ck::header_bytes);
  if (bytes.size() == ck::header_bytes) {
    const auto length = ck::load_le<std::uint64_t>(bytes.data() + 16);
    if (std::memcmp(bytes.data(), ck::magic.data(), ck::magic.size()) == 0 &&
        ck::load_le<std::uint32_t>(bytes.data() + 8) == ck::format_version && length > ck::header_bytes)
      read_up_to(length);
  }
  verify_checkpoint(bytes);
  return bytes;
}

/// What wrote a checkpoint (its "run" section), compared field by field when it is loaded.
struct checkpoint_origin {
  std::string configuration;  ///< describe<Optimizer>(): the optimizer type with its four policies
  std::uint64_t parameter_count = 0;
  std::uint32_t rank = 0;
  std::uint32_t world_size = 1;
  options opts{};  ///< all compared but learning_rate (saved as state, restored) and timeout

  void save(checkpoint_writer& w) const {
    w.str(configuration);
    w.u64(parameter_count);
    w.u32(rank);
    w.u32(world_size);
    w.f32(opts.momentum);
    w.boolean(opts.nesterov);
    w.f32(opts.weight_decay);
    w.u64(opts.seed);
  }

  /// Reads the origin saved in `r`; throws config_error naming the first difference from this one.
  void expect_same(checkpoint_reader& r) const {
    const std::string saved = r.str();
    if (saved != configuration) r.refuse("it was saved by " + saved + ", this optimizer is " + configuration);
    auto same = [&r](const std::string& what, auto theirs, auto mine) {
      if (theirs != mine)
        r.refuse(what + " is " + std::to_string(theirs) + " in the checkpoint, " + std::to_string(mine) + " here");
    };
    same("the parameter count", r.u64(), parameter_count);
    same("the rank", r.u32(), rank);
    same("the world size", r.u32(), world_size);
    same("options.momentum", r.f32(), opts.momentum);
    same("options.nesterov", r.boolean(), opts.nesterov);
    same("options.weight_decay", r.f32(), opts.weight_decay);
    same("options.seed", r.u64(), opts.seed);
  }
};

/// A compressor state that saves itself: `s.save(w)` and `s.load(r)`.
template <class S>
concept checkpointable_state = requires(const S& cs, S& s, checkpoint_writer& w, checkpoint_reader& r) {
  cs.save(w);
  s.load(r);
};

namespace detail::checkpoint {
template <class C>
consteval void require_checkpointable_state() {
  static_assert(!stateful_encoder<C> || checkpointable_state<compressor_state_t<C>>,
                "distopt checkpoints: this compressor keeps per-worker state (C::state) without "
                "`void save(checkpoint_writer&) const` and `void load(checkpoint_reader&)`; add them to C::state "
                "(compress/error_feedback.hpp shows how) to save an optimizer that uses C");
}
}  // namespace detail::checkpoint

/// Saves a compressor state (nothing for a stateless compressor).
template <compressor C>
void save_compressor_state(checkpoint_writer& w, const compressor_state_t<C>& s) {
  detail::checkpoint::require_checkpointable_state<C>();
  if constexpr (stateful_encoder<C>) s.save(w);
}

/// Loads a compressor state made for this worker's vector size.
template <compressor C>
void load_compressor_state(checkpoint_reader& r, compressor_state_t<C>& s) {
  detail::checkpoint::require_checkpointable_state<C>();
  if constexpr (stateful_encoder<C>) s.load(r);
}

/// Saves a state made at the first round (collective::averager): whether it exists, then it.
template <compressor C>
void save_compressor_state(checkpoint_writer& w, const std::optional<compressor_state_t<C>>& s) {
  w.boolean(s.has_value());
  if (s) save_compressor_state<C>(w, *s);
}

/// Loads what the overload above saved; a state is made for n floats when the checkpoint has one.
template <compressor C>
void load_compressor_state(checkpoint_reader& r, std::optional<compressor_state_t<C>>& s, C& c, std::size_t n) {
  if (!r.boolean()) {
    s.reset();
    return;
  }
  if (!s) s.emplace(make_compressor_state(c, n));
  load_compressor_state<C>(r, *s);
}

}  // namespace distopt
