#pragma once
// Views between float spans and the bytes a transport carries.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"

namespace distopt::detail {

/// Reads a received message as `expected` floats; a size mismatch is a transport_error.
inline std::span<const float> received_floats(const byte_buffer& message, std::size_t expected, const char* who,
                                              int self, int peer) {
  if (message.size() != expected * sizeof(float))
    throw transport_error(std::string(who) + ": rank " + std::to_string(self) + " expected " +
                          std::to_string(expected * sizeof(float)) + " bytes from rank " + std::to_string(peer) +
                          ", got " + std::to_string(message.size()) + "; every rank must call it with the same length");
  // byte_buffer storage comes from operator new, aligned for any scalar type.
  return {reinterpret_cast<const float*>(message.data()), expected};
}

}  // namespace distopt::detail
