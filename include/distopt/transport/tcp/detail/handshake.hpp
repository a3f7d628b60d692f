#pragma once
// The TCP transport's handshake, run on every new connection before any data:
// mutual authentication by challenge-response over the shared token, then a
// comparison of what both sides run. Written against an abstract message
// channel, so tests and fuzzers can drive it without sockets. Include
// distopt/transport/tcp.hpp, not this header.
//
// Protocol (each line: both sides send, then both read; messages are length-prefixed
// by the channel; integers little-endian):
//   1. hello   u32 magic "DOPH", u32 protocol, u32 rank, u32 world size, 32-byte random nonce
//   2. auth    str library version, str configuration, u64 parameter count, u64 options hash,
//              32-byte HMAC-SHA256(token, "distopt-tcp-auth-v1" | u32 sender | u32 receiver |
//              sender nonce | receiver nonce | the auth fields before the MAC)
//   3. verdict u32 accepted (1/0), str reason
// The token never crosses the wire; the fresh nonces make a recorded exchange
// useless later, and the ranks in the MAC stop a reflected one. After checking
// the MAC each side compares world size, library version, configuration, parameter
// count and options hash, and builds the same message from them ("rank 2 runs X,
// rank 0 runs Y": higher rank first), so a mismatch is refused on both sides alike.
//
//   Channel ch;  // ch.write(std::span<const std::byte>), ch.read(byte_buffer&), ch.who() -> string
//   int peer = detail::tcp::handshake(ch, me, [](int r) { return r == 1 ? "" : "unexpected rank"; });
// or, without a blocking channel, handshake_machine (what the accepting side of the rendezvous runs).

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/transport/tcp/detail/wire.hpp"

namespace distopt {

/// What a rank runs, compared in the handshake so that ranks started with different
/// programs or arguments refuse each other. Make one with describe_run<Optimizer>().
struct run_description {
  /// Free text, typically the optimizer's type (its four policies): describe<Optimizer>().
  std::string configuration{};
  /// Number of model parameters.
  std::uint64_t parameter_count = 0;
  /// Hash of the options every rank must share (options_hash(options)).
  std::uint64_t options_hash = 0;
};

}  // namespace distopt

namespace distopt::detail::tcp {

inline constexpr std::uint32_t hello_magic = 0x48504F44u;  // "DOPH"
inline constexpr std::uint32_t protocol_version = 1;
inline constexpr std::size_t nonce_bytes = 32;
inline constexpr std::size_t mac_bytes = 32;

/// This side of a handshake.
struct handshake_identity {
  int rank = 0;
  int size = 1;
  std::string_view token;
  std::string_view library_version;
  const run_description* run = nullptr;
};

using nonce = std::array<std::byte, nonce_bytes>;
using mac = std::array<std::byte, mac_bytes>;

inline nonce fresh_nonce() {
  nonce n{};
  if (RAND_bytes(reinterpret_cast<unsigned char*>(n.data()), static_cast<int>(n.size())) != 1)
    throw transport_error("tcp transport: OpenSSL RAND_bytes failed to produce a handshake nonce");
  return n;
}

inline mac compute_mac(std::string_view token, int sender, int receiver, const nonce& sender_nonce,
                       const nonce& receiver_nonce, std::span<const std::byte> fields) {
  byte_buffer msg;
  message_writer w(msg);
  constexpr std::string_view label = "distopt-tcp-auth-v1";
  w.bytes(std::as_bytes(std::span<const char>(label.data(), label.size())));
  w.u32(static_cast<std::uint32_t>(sender));
  w.u32(static_cast<std::uint32_t>(receiver));
  w.bytes(sender_nonce);
  w.bytes(receiver_nonce);
  w.bytes(fields);
  mac out{};
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), token.data(), static_cast<int>(token.size()),
           reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), reinterpret_cast<unsigned char*>(out.data()),
           &len) == nullptr ||
      len != out.size())
    throw transport_error("tcp transport: OpenSSL HMAC-SHA256 failed during the handshake");
  return out;
}

inline std::string hex64(std::uint64_t v) {
  char b[19];
  std::snprintf(b, sizeof b, "0x%016llx", static_cast<unsigned long long>(v));
  return b;
}

struct peer_auth {
  std::string library_version;
  run_description run;
};

/// The reason two ranks cannot work together, or "" if they can. Symmetric: both
/// sides build the same text (the higher rank is named first).
inline std::string compare_runs(int rank_a, int size_a, const peer_auth& a, int rank_b, int size_b,
                                const peer_auth& b) {
  if (rank_a < rank_b) return compare_runs(rank_b, size_b, b, rank_a, size_a, a);
  const std::string ra = "rank " + std::to_string(rank_a), rb = "rank " + std::to_string(rank_b);
  if (size_a != size_b)
    return ra + " was started with world size " + std::to_string(size_a) + ", " + rb + " with " +
           std::to_string(size_b) + "; start every rank with the same DISTOPT_WORLD_SIZE";
  if (a.library_version != b.library_version)
    return ra + " runs distopt " + a.library_version + ", " + rb + " runs distopt " + b.library_version +
           "; build every rank against the same distopt version";
  if (a.run.configuration != b.run.configuration)
    return ra + " runs " + a.run.configuration + ", " + rb + " runs " + b.run.configuration +
           "; every rank must run the same optimizer configuration";
  if (a.run.parameter_count != b.run.parameter_count)
    return ra + " has " + std::to_string(a.run.parameter_count) + " parameters, " + rb + " has " +
           std::to_string(b.run.parameter_count) + "; every rank must train the same model";
  if (a.run.options_hash != b.run.options_hash)
    return ra + " has options hash " + hex64(a.run.options_hash) + ", " + rb + " has " + hex64(b.run.options_hash) +
           "; the optimizer options (learning rate, momentum, weight decay, seed, ...) differ between ranks";
  return {};
}

/// Largest handshake message accepted (the endpoint table of a large world fits easily).
inline constexpr std::size_t max_handshake_message = std::size_t{1} << 20;
/// Size of a hello: magic, protocol, rank, world size, nonce.
inline constexpr std::size_t hello_bytes = 4 * sizeof(std::uint32_t) + nonce_bytes;

/// One side of the handshake, free of I/O: it makes this side's messages and takes the peer's, so
/// that the blocking handshake() below (outgoing connections, tests, fuzzers) and the rendezvous's
/// concurrent accepting side (rendezvous.hpp) run the same protocol code.
///
///   handshake_machine m(me);
///   for (;;) {
///     send(m.outgoing());
///     if (m.refused()) fail(m.refusal());
///     if (m.receive(next_message(), who, check_rank)) return m.peer_rank();  // both sides accepted
///   }
class handshake_machine {
 public:
  explicit handshake_machine(const handshake_identity& me) : me_(me), mine_(fresh_nonce()) {
    message_writer w(out_);
    w.u32(hello_magic);
    w.u32(protocol_version);
    w.u32(static_cast<std::uint32_t>(me.rank));
    w.u32(static_cast<std::uint32_t>(me.size));
    w.bytes(mine_);
  }

  /// What to send now: the hello, then after each receive() the auth message, then the verdict.
  std::span<const std::byte> outgoing() const noexcept { return out_; }
  /// The longest next message of the peer that can be valid: a hello first (so a stranger's length
  /// field is refused before anything is allocated), then max_handshake_message.
  std::size_t max_incoming() const noexcept { return stage_ == stage::hello ? hello_bytes : max_handshake_message; }
  /// True once this side refuses: outgoing() is then the verdict to send, and refusal() the error.
  bool refused() const noexcept { return !refusal_.empty(); }
  const std::string& refusal() const noexcept { return refusal_; }
  /// True once the peer has proven that it holds the token (its MAC matched): from then on a
  /// failure is a real rank's, not a stranger's.
  bool authenticated() const noexcept { return authenticated_; }
  /// The rank the peer announced in its hello (valid after the first receive()).
  int peer_rank() const noexcept { return peer_rank_; }

  /// Takes the peer's next message, `who` naming the peer; returns true when the handshake is
  /// complete (the peer accepted too). `check_rank(peer_rank)` returns "" if that rank is expected
  /// on this connection, else why not. Throws transport_error for a malformed message or the
  /// peer's refusal; when this side refuses, it returns false and refused() becomes true.
  template <class CheckRank>
  bool receive(std::span<const std::byte> in, const std::string& who, CheckRank&& check_rank) {
    switch (stage_) {
      case stage::hello:
        take_hello(in, who);
        return false;
      case stage::auth:
        take_auth(in, who, check_rank);
        return false;
      case stage::verdict:
        take_verdict(in);
        return true;
      case stage::done:
        break;
    }
    throw transport_error("tcp transport: " + who + " sent a message after the handshake had ended");
  }

 private:
  enum class stage { hello, auth, verdict, done };

  void take_hello(std::span<const std::byte> in, const std::string& who) {
    message_reader hello(in, who);
    const std::uint32_t magic = hello.u32();
    if (magic != hello_magic)
      throw transport_error("tcp transport: " + who +
                            " is not a distopt tcp transport (wrong handshake magic); check DISTOPT_COORDINATOR");
    const std::uint32_t protocol = hello.u32();
    if (protocol != protocol_version)
      throw transport_error("tcp transport: " + who + " speaks handshake protocol " + std::to_string(protocol) +
                            ", this process speaks " + std::to_string(protocol_version) +
                            "; build every rank against the same distopt version");
    const std::uint32_t peer_rank = hello.u32();
    const std::uint32_t peer_size = hello.u32();
    const auto nb = hello.bytes(nonce_bytes);
    std::copy(nb.begin(), nb.end(), theirs_.begin());
    hello.finish();
    if (peer_rank > 0x7FFFFFFFu || peer_size > 0x7FFFFFFFu)
      throw transport_error("tcp transport: " + who + " announced an impossible rank or world size");
    peer_rank_ = static_cast<int>(peer_rank);
    peer_size_ = static_cast<int>(peer_size);
    out_.clear();
    message_writer w(out_);
    w.str(me_.library_version);
    w.str(me_.run->configuration);
    w.u64(me_.run->parameter_count);
    w.u64(me_.run->options_hash);
    const mac m = compute_mac(me_.token, me_.rank, peer_rank_, mine_, theirs_, out_);
    w.bytes(m);
    stage_ = stage::auth;
  }

  template <class CheckRank>
  void take_auth(std::span<const std::byte> in, const std::string& who, CheckRank& check_rank) {
    peer_name_ = "rank " + std::to_string(peer_rank_) + " (" + who + ")";
    message_reader auth(in, peer_name_);
    peer_auth theirs;
    theirs.library_version = auth.str();
    theirs.run.configuration = auth.str();
    theirs.run.parameter_count = auth.u64();
    theirs.run.options_hash = auth.u64();
    const auto their_mac = auth.bytes(mac_bytes);
    auth.finish();
    const std::size_t fields = in.size() - mac_bytes;  // the reads above proved in.size() >= mac_bytes
    const mac expected = compute_mac(me_.token, peer_rank_, me_.rank, theirs_, mine_, in.first(fields));
    std::string refusal;
    authenticated_ = CRYPTO_memcmp(expected.data(), their_mac.data(), mac_bytes) == 0;
    if (!authenticated_) {
      refusal = "rank " + std::to_string(peer_rank_) + " and rank " + std::to_string(me_.rank) +
                " hold different tokens (the HMAC of the challenge does not match); give every rank the same "
                "DISTOPT_TOKEN (tcp_options.token)";
    } else {
      refusal = check_rank(peer_rank_);
      if (refusal.empty())
        refusal = compare_runs(me_.rank, me_.size, peer_auth{std::string(me_.library_version), *me_.run}, peer_rank_,
                               peer_size_, theirs);
    }
    out_.clear();
    message_writer w(out_);
    w.u32(refusal.empty() ? 1u : 0u);
    w.str(refusal);
    if (!refusal.empty()) refusal_ = "tcp transport: handshake with " + peer_name_ + " refused: " + refusal;
    stage_ = stage::verdict;
  }

  void take_verdict(std::span<const std::byte> in) {
    message_reader verdict(in, peer_name_);
    const std::uint32_t accepted = verdict.u32();
    const std::string reason = verdict.str();
    verdict.finish();
    if (accepted != 1u) throw transport_error("tcp transport: " + peer_name_ + " refused the handshake: " + reason);
    out_.clear();
    stage_ = stage::done;
  }

  handshake_identity me_;
  nonce mine_;
  nonce theirs_{};
  stage stage_ = stage::hello;
  byte_buffer out_;
  std::string refusal_;
  std::string peer_name_;
  int peer_rank_ = -1;
  int peer_size_ = 0;
  bool authenticated_ = false;
};

/// Runs the handshake on a blocking channel `ch` for `me`; `check_rank(peer_rank)` returns "" if
/// that rank is expected on this connection, else why not. Returns the peer's rank; throws
/// transport_error (naming what differs) if either side refuses.
template <class Channel, class CheckRank>
int handshake(Channel& ch, const handshake_identity& me, CheckRank&& check_rank) {
  handshake_machine m(me);
  byte_buffer in;
  for (;;) {
    ch.write(m.outgoing());
    if (m.refused()) throw transport_error(m.refusal());
    ch.read(in);
    if (m.receive(in, ch.who(), check_rank)) return m.peer_rank();
  }
}

}  // namespace distopt::detail::tcp
