// The fuzz target of the TCP transport's handshake (distopt/transport/tcp/detail/handshake.hpp):
// detail::tcp::handshake against a peer whose messages are the fuzz input, so every parser of
// peer bytes runs (hello, auth with its run description, verdict; message_reader under them), and
// compare_runs on the run descriptions. Built with corpus_driver.cpp (the main: seed corpus,
// corpus pass, libFuzzer) into fuzz_tcp_handshake.
//
// Input: byte 0 holds flags: bit 0 "sign": the target replaces the last 32 bytes of the peer's
// auth message by the HMAC the peer would compute with the right token (the nonce of this side is
// random, so the fuzzer could not forge it, and nothing past the MAC check would be reached);
// bits 1-2 this side's rank (modulo 3, world size 3); bit 3 "strict": check_rank refuses this
// side's own rank and ranks outside the world, as the transport does. Then up to three peer
// messages (hello, auth, verdict), each a u16 little-endian length and that many bytes (clipped
// to the input); when the messages run out, the peer has closed the connection (read throws
// transport_error, as the socket channel does).
// Properties, checked on every input; a violation aborts with a message:
//  1. handshake returns or throws distopt::transport_error; nothing else.
//  2. An independent model of the protocol (exact field layout, HMAC-SHA256 via OpenSSL, the
//     comparison) predicts how far this side gets: it sends one message (hello refused), two (auth
//     malformed), three with verdict "refused" (wrong MAC, rank refused, runs differ), or three with
//     "accepted" and then returns the peer's rank exactly when the peer's verdict is an exact
//     (u32 1, str) message. In particular an unsigned auth message is never accepted.
//  3. A valid hello fits the accepting side's limit on a first message (max_incoming()).
//  4. A refusal for a wrong MAC never contains the token; compare_runs is symmetric between
//     distinct ranks, and "" exactly when world size, library version, configuration, parameter
//     count and options hash agree.

#include "fuzz_entry.hpp"
#include "fuzz_support.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/hmac.h>

#include <distopt/core/byte_buffer.hpp>
#include <distopt/core/errors.hpp>
#include <distopt/transport/tcp.hpp>

namespace distopt::fuzz {

const char* const target_name = "tcp_handshake";

namespace {

namespace w = detail::tcp;

constexpr std::string_view token = "fuzz-token";
constexpr std::string_view library_version = "0.1.0";
constexpr int world_size = 3;
const run_description my_run{"cfg", 10, 1};

constexpr std::uint8_t flag_sign = 1, flag_strict = 8;

struct hello {
  std::uint32_t rank = 0, size = 0;
  w::nonce nonce{};
};

/// The model's hello parser: nullopt when the handshake must refuse it.
std::optional<hello> parse_hello(std::span<const std::byte> m) {
  cursor c{m};
  const auto magic = c.uint(4), protocol = c.uint(4);
  hello h;
  h.rank = static_cast<std::uint32_t>(c.uint(4));
  h.size = static_cast<std::uint32_t>(c.uint(4));
  const auto n = c.take(w::nonce_bytes);
  if (!c.done() || magic != 0x48504F44u || protocol != 1 || h.rank > 0x7FFFFFFFu || h.size > 0x7FFFFFFFu)
    return std::nullopt;
  std::copy(n.begin(), n.end(), h.nonce.begin());
  return h;
}

/// HMAC-SHA256(token, label | u32 sender | u32 receiver | sender nonce | receiver nonce | fields).
w::mac model_mac(std::uint32_t sender, std::uint32_t receiver, const w::nonce& sn, const w::nonce& rn,
                 std::span<const std::byte> fields) {
  std::vector<unsigned char> msg;
  const auto put = [&](const void* p, std::size_t n) {
    msg.insert(msg.end(), static_cast<const unsigned char*>(p), static_cast<const unsigned char*>(p) + n);
  };
  put("distopt-tcp-auth-v1", 19);
  for (std::uint32_t v : {sender, receiver})
    for (int k = 0; k < 4; ++k) msg.push_back(static_cast<unsigned char>(v >> (8 * k)));
  put(sn.data(), sn.size());
  put(rn.data(), rn.size());
  put(fields.data(), fields.size());
  w::mac out{};
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), token.data(), static_cast<int>(token.size()), msg.data(), msg.size(),
           reinterpret_cast<unsigned char*>(out.data()), &len) == nullptr)
    fail("OpenSSL HMAC failed in the model");
  return out;
}

/// The peer: replays the fuzzed messages, records this side's, signs the auth message if asked.
struct fuzzed_peer {
  std::vector<byte_buffer> replies, sent;
  bool sign = false;
  std::size_t at = 0;
  void write(std::span<const std::byte> b) { sent.emplace_back(b.begin(), b.end()); }
  void read(byte_buffer& out) {
    if (at == replies.size()) throw transport_error("tcp transport: the fuzzed peer closed the connection");
    if (at == 1 && sign) sign_auth(replies[1]);  // in place: the model reads the replies
    out = replies[at++];
  }
  void sign_auth(byte_buffer& auth) const {
    const auto theirs = parse_hello(replies[0]), mine = parse_hello(sent.at(0));
    if (!theirs || !mine || auth.size() < w::mac_bytes) return;
    const auto m = model_mac(theirs->rank, mine->rank, theirs->nonce, mine->nonce,
                             std::span<const std::byte>(auth).first(auth.size() - w::mac_bytes));
    std::copy(m.begin(), m.end(), auth.end() - static_cast<std::ptrdiff_t>(w::mac_bytes));
  }
  std::string who() const { return "the fuzzed peer"; }
};

/// Property 3 for compare_runs; returns its verdict.
std::string check_compare(int rank_a, int size_a, const w::peer_auth& a, int rank_b, int size_b,
                          const w::peer_auth& b) {
  const std::string ab = w::compare_runs(rank_a, size_a, a, rank_b, size_b, b);
  // Symmetric between distinct ranks (the transport's check_rank refuses a peer claiming one's own rank).
  if (rank_a != rank_b && ab != w::compare_runs(rank_b, size_b, b, rank_a, size_a, a))
    fail("compare_runs is not symmetric");
  const bool same = size_a == size_b && a.library_version == b.library_version &&
                    a.run.configuration == b.run.configuration && a.run.parameter_count == b.run.parameter_count &&
                    a.run.options_hash == b.run.options_hash;
  if (ab.empty() != same)
    fail(std::string("compare_runs ") + (same ? "refused equal" : "accepted different") + " runs");
  return ab;
}

std::string verdict_of(std::span<const std::byte> m, bool& accepted) {
  cursor c{m};
  accepted = c.uint(4) == 1;
  std::string reason = c.str();
  if (!c.done()) fail("this side sent a malformed verdict");
  return reason;
}

/// What the model expects: the number of messages this side sends, and whether it accepts and returns.
void check_against_model(const fuzzed_peer& ch, int me, bool strict, std::optional<int> returned) {
  const auto expect_sent = [&](std::size_t n, const char* why) {
    if (ch.sent.size() != n)
      fail("this side sent " + std::to_string(ch.sent.size()) + " messages, the model " + std::to_string(n) + " (" +
           why + ")");
    if (returned) fail(std::string("handshake returned, the model refuses (") + why + ")");
  };
  const auto mine = ch.sent.empty() ? std::nullopt : parse_hello(ch.sent[0]);
  if (!mine || mine->rank != static_cast<std::uint32_t>(me) || mine->size != world_size)
    fail("this side's hello is malformed");
  const auto theirs = ch.replies.empty() ? std::nullopt : parse_hello(ch.replies[0]);
  if (!theirs) return expect_sent(1, "no valid hello");
  // The accepting side refuses a first message longer than this before reading it.
  if (ch.replies[0].size() >
      w::handshake_machine(w::handshake_identity{me, world_size, token, library_version, &my_run}).max_incoming())
    fail("a valid hello is longer than handshake_machine::max_incoming() allows for a first message");
  if (ch.replies.size() < 2) return expect_sent(2, "no auth message");
  cursor c{ch.replies[1]};
  w::peer_auth peer;
  peer.library_version = c.str();
  peer.run.configuration = c.str();
  peer.run.parameter_count = c.uint(8);
  peer.run.options_hash = c.uint(8);
  c.take(w::mac_bytes);
  if (!c.done()) return expect_sent(2, "a malformed auth message");
  if (ch.sent.size() != 3) fail("this side sent no verdict on a well-formed auth message");
  bool accepted = false;
  const std::string reason = verdict_of(ch.sent[2], accepted);
  if (accepted != reason.empty()) fail("this side's verdict and its reason disagree");
  const std::span<const std::byte> auth(ch.replies[1]);
  const auto expected_mac =
      model_mac(theirs->rank, mine->rank, theirs->nonce, mine->nonce, auth.first(auth.size() - w::mac_bytes));
  const int peer_rank = static_cast<int>(theirs->rank);
  std::string refusal;
  if (!std::equal(expected_mac.begin(), expected_mac.end(), auth.end() - static_cast<std::ptrdiff_t>(w::mac_bytes))) {
    if (accepted) fail("this side accepted a wrong MAC");
    if (reason.find(token) != std::string::npos) fail("a refusal names the token");
    return expect_sent(3, "a wrong MAC");
  }
  if (strict && (peer_rank == me || peer_rank >= world_size))
    refusal = "strict";
  else
    refusal = check_compare(me, world_size, w::peer_auth{std::string(library_version), my_run}, peer_rank,
                            static_cast<int>(theirs->size), peer);
  if (accepted != refusal.empty())
    fail(std::string("this side ") + (accepted ? "accepted" : "refused") + " a run the model " +
         (accepted ? "refuses: " + refusal : "accepts: " + reason));
  if (!accepted) return expect_sent(3, "a refused run");
  bool peer_accepts = false;
  if (ch.replies.size() >= 3) {
    cursor v{ch.replies[2]};
    peer_accepts = v.uint(4) == 1;
    v.str();
    peer_accepts = peer_accepts && v.done();
  }
  if (!peer_accepts) return expect_sent(3, "the peer refuses");
  if (returned != peer_rank) fail("handshake did not return the peer's rank on an accepted exchange");
}

std::size_t write_seed(const std::filesystem::path& file, std::uint8_t flags,
                       const std::vector<byte_buffer>& messages) {
  byte_buffer input{static_cast<std::byte>(flags)};
  for (const auto& m : messages) {
    input.push_back(static_cast<std::byte>(m.size()));
    input.push_back(static_cast<std::byte>(m.size() >> 8));
    append(input, m);
  }
  write_file(file, input);
  return 1;
}

}  // namespace

std::size_t write_seeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const auto hello_of = [](std::uint32_t rank, std::uint32_t size) {
    byte_buffer m;
    w::message_writer hw(m);
    for (std::uint32_t v : {w::hello_magic, w::protocol_version, rank, size}) hw.u32(v);
    for (std::uint64_t k = 0; k < 4; ++k) hw.u64(0x0123456789ABCDEFull * (k + 1));
    return m;
  };
  const auto auth_of = [](std::string_view version, const run_description& run) {
    byte_buffer m;
    w::message_writer aw(m);
    aw.str(version);
    aw.str(run.configuration);
    aw.u64(run.parameter_count);
    aw.u64(run.options_hash);
    aw.bytes(w::mac{});  // replaced by the target when flag_sign is set
    return m;
  };
  const auto verdict_of = [](std::uint32_t accepted, std::string_view reason) {
    byte_buffer m;
    w::message_writer vw(m);
    vw.u32(accepted);
    vw.str(reason);
    return m;
  };
  const auto ok = auth_of(library_version, my_run), yes = verdict_of(1, ""), no = verdict_of(0, "the peer says no");
  std::size_t n = 0;
  for (std::uint8_t me = 0; me < world_size; ++me) {
    const auto flags = static_cast<std::uint8_t>(flag_sign | flag_strict | (me << 1));
    const auto peer = static_cast<std::uint32_t>((me + 1) % world_size);
    const auto tag = "-me" + std::to_string(me);
    n += write_seed(dir / ("seed-accepted" + tag), flags, {hello_of(peer, world_size), ok, yes});
    n += write_seed(dir / ("seed-peer-refuses" + tag), flags, {hello_of(peer, world_size), ok, no});
    n += write_seed(dir / ("seed-unsigned" + tag), flags & ~flag_sign, {hello_of(peer, world_size), ok, yes});
    n += write_seed(dir / ("seed-lax-own-rank" + tag), flags & ~flag_strict, {hello_of(me, world_size), ok, yes});
    n += write_seed(dir / ("seed-world-size" + tag), flags, {hello_of(peer, 4), ok, yes});
    n += write_seed(dir / ("seed-version" + tag), flags, {hello_of(peer, world_size), auth_of("0.0.9", my_run), yes});
    n += write_seed(dir / ("seed-configuration" + tag), flags,
                    {hello_of(peer, world_size), auth_of(library_version, {"other", 10, 1}), yes});
    n += write_seed(dir / ("seed-parameters" + tag), flags,
                    {hello_of(peer, world_size), auth_of(library_version, {"cfg", 11, 1}), yes});
    n += write_seed(dir / ("seed-options" + tag), flags,
                    {hello_of(peer, world_size), auth_of(library_version, {"cfg", 10, 2}), yes});
    n += write_seed(dir / ("seed-closes" + tag), flags, {hello_of(peer, world_size), ok});
  }
  return n;
}

}  // namespace distopt::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace distopt::fuzz;
  const std::uint8_t flags = size > 0 ? data[0] : 0;
  fuzzed_peer ch;
  ch.sign = (flags & flag_sign) != 0;
  const bool strict = (flags & flag_strict) != 0;
  for (std::size_t at = 1; ch.replies.size() < 3 && at + 2 <= size;) {
    const std::size_t len = std::min<std::size_t>(data[at] | std::size_t{data[at + 1]} << 8, size - at - 2);
    const auto* begin = reinterpret_cast<const std::byte*>(data + at + 2);
    ch.replies.emplace_back(begin, begin + len);  // each in an allocation of its own, for ASan
    at += 2 + len;
  }
  const int me = (flags >> 1 & 3) % world_size;
  const w::handshake_identity identity{me, world_size, token, library_version, &my_run};
  std::optional<int> returned;
  try {
    returned = w::handshake(ch, identity, [&](int r) -> std::string {
      if (strict && (r == me || r >= world_size)) return "rank " + std::to_string(r) + " is not expected here";
      return {};
    });
  } catch (const distopt::transport_error&) {
  } catch (const std::exception& e) {
    fail(std::string("handshake threw something other than transport_error: ") + e.what());
  }
  check_against_model(ch, me, strict, returned);
  return 0;
}
