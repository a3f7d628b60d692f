// The fuzz target of the TCP rendezvous's address table (distopt/transport/tcp/detail/rendezvous.hpp):
// decode_address_table, which every rank but 0 runs on what the coordinator sends, and
// encode_address_table. Built with corpus_driver.cpp (the main: seed corpus, corpus pass, libFuzzer)
// into fuzz_tcp_address_table.
//
// Input: byte 0 picks the world size n = 2 + byte % 8 (2..9); the rest is the table as received.
// Properties, checked on every input; a violation aborts with a message:
//  1. decode_address_table returns or throws distopt::transport_error; nothing else.
//  2. It returns exactly when an independent reading accepts the table: for ranks 1..n-1 in order,
//     a u32 length, that many host bytes, a u32 port; nothing left over; each host of at most 64
//     characters and an IP address in canonical form (the text inet_ntop gives back for what
//     inet_pton reads; a host with a scope "%..." is judged by Asio's own parse and print, which
//     looks interface names up); each port below 65536, and not 0 for ranks 1..n-2 (they listen).
//  3. What it returns has n entries, entry 0 empty, the hosts and ports read, and encodes back to
//     the input bytes exactly (the encoding is canonical).
//  4. Round trip: a valid table made from the input (hosts from a fixed list of IPv4 and IPv6
//     addresses, ports from the bytes) encodes and decodes to itself.

#include "fuzz_entry.hpp"
#include "fuzz_support.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <distopt/core/byte_buffer.hpp>
#include <distopt/core/errors.hpp>
#include <distopt/transport/tcp.hpp>

namespace distopt::fuzz {

const char* const target_name = "tcp_address_table";

namespace {

namespace w = detail::tcp;

constexpr int max_world = 9;
const std::string from = "the fuzzed coordinator";
const std::array<std::string, 6> valid_hosts = {"127.0.0.1", "10.1.2.3",  "255.255.255.255",
                                                "::1",       "fe80::1:2", "::ffff:192.168.0.1"};

/// The model's judgement of a host: an IP address in the form inet_ntop prints.
bool canonical_ip(const std::string& host) {
  if (host.size() > 64) return false;
  if (host.find('%') != std::string::npos) {  // scoped IPv6: Asio's parse and print (interface names)
    boost::system::error_code ec;
    const auto a = boost::asio::ip::make_address(host, ec);
    return !ec && a.to_string() == host;
  }
  if (host.find('\0') != std::string::npos) return false;
  for (const int family : {AF_INET, AF_INET6}) {
    unsigned char bytes[sizeof(in6_addr)];
    char text[INET6_ADDRSTRLEN];
    if (::inet_pton(family, host.c_str(), bytes) == 1)
      return ::inet_ntop(family, bytes, text, sizeof text) != nullptr && host == text;
  }
  return false;
}

/// The model: the table it reads, or nullopt where decode_address_table must refuse.
std::optional<std::vector<w::peer_address>> model(std::span<const std::byte> bytes, int n) {
  cursor c{bytes};
  std::vector<w::peer_address> table(static_cast<std::size_t>(n));
  for (int r = 1; r < n; ++r) {
    const auto h = c.take(c.u32());
    const std::uint32_t port = c.u32();
    if (!c.ok) return std::nullopt;
    std::string host(reinterpret_cast<const char*>(h.data()), h.size());
    if (!canonical_ip(host) || port > 65535 || (r < n - 1 && port == 0)) return std::nullopt;
    table[static_cast<std::size_t>(r)] = {std::move(host), static_cast<std::uint16_t>(port)};
  }
  if (c.at != bytes.size()) return std::nullopt;
  return table;
}

std::optional<std::vector<w::peer_address>> decode(std::span<const std::byte> bytes, int n) {
  try {
    return w::decode_address_table(bytes, n, from);
  } catch (const transport_error&) {
    return std::nullopt;
  }
}

/// Properties 1 to 3.
void check_received(std::span<const std::byte> bytes, int n) {
  const auto got = decode(bytes, n);
  const auto expected = model(bytes, n);
  if (got.has_value() != expected.has_value())
    fail(std::string("decode_address_table ") + (got ? "accepted" : "refused") + " a " + std::to_string(bytes.size()) +
         "-byte table for " + std::to_string(n) + " ranks that the model " + (expected ? "accepts" : "refuses"));
  if (!got) return;
  if (*got != *expected) fail("decode_address_table misread an accepted table");
  byte_buffer again;
  w::encode_address_table(*got, again);
  if (!std::equal(again.begin(), again.end(), bytes.begin(), bytes.end()))
    fail("an accepted table does not encode back to the bytes it was read from");
}

/// Property 4.
void check_round_trip(std::span<const std::byte> bytes, int n) {
  std::vector<w::peer_address> table(static_cast<std::size_t>(n));
  for (int r = 1; r < n; ++r) {
    const auto at = [&](std::size_t k) {
      return bytes.empty() ? 0u
                           : std::to_integer<unsigned>(bytes[(3 * static_cast<std::size_t>(r) + k) % bytes.size()]);
    };
    auto port = static_cast<std::uint16_t>(at(1) | at(2) << 8);
    if (r < n - 1 && port == 0) port = 1;
    table[static_cast<std::size_t>(r)] = {valid_hosts[at(0) % valid_hosts.size()], port};
  }
  byte_buffer wire;
  w::encode_address_table(table, wire);
  const auto back = decode(wire, n);
  if (!back || *back != table) fail("a valid table does not decode to itself");
}

}  // namespace

std::size_t write_seeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  std::size_t written = 0;
  for (int n = 2; n <= max_world; ++n) {
    for (std::size_t variant = 0; variant < valid_hosts.size(); ++variant) {
      std::vector<w::peer_address> table(static_cast<std::size_t>(n));
      for (int r = 1; r < n; ++r)
        table[static_cast<std::size_t>(r)] = {valid_hosts[(variant + static_cast<std::size_t>(r)) % valid_hosts.size()],
                                              static_cast<std::uint16_t>(r < n - 1 ? 29500 + r : 0)};
      byte_buffer input{static_cast<std::byte>(n - 2)};
      w::encode_address_table(table, input);
      write_file(dir / ("seed-n" + std::to_string(n) + "-v" + std::to_string(variant)), input);
      ++written;
    }
    // One edit away from valid, each refused: a listening rank on port 0, hosts that are not
    // canonical IP addresses; and a scoped IPv6 host, valid where interface 1 exists.
    const std::pair<std::string, std::uint16_t> near_misses[] = {
        {"127.0.0.1", 0}, {"127.000.0.1", 1}, {"localhost", 1}, {"::0001", 1}, {"fe80::1%1", 1}};
    for (std::size_t m = 0; m < std::size(near_misses); ++m) {
      std::vector<w::peer_address> table(static_cast<std::size_t>(n), {"10.0.0.1", 7});
      table[1] = {near_misses[m].first, n == 2 ? std::uint16_t{0} : near_misses[m].second};
      byte_buffer input{static_cast<std::byte>(n - 2)};
      w::encode_address_table(table, input);
      write_file(dir / ("seed-n" + std::to_string(n) + "-near-miss" + std::to_string(m)), input);
      ++written;
    }
  }
  return written;
}

}  // namespace distopt::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace distopt::fuzz;
  return guard_input([&] {
    const int n = 2 + (size > 0 ? data[0] : 0) % (max_world - 1);
    const std::vector<std::byte> table = bytes_from(data, size, 1);
    check_received(table, n);
    check_round_trip(table, n);
  });
}
