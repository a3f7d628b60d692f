#pragma once
// The error hierarchy. Every message names what was wrong and how to fix it.

#include <stdexcept>
#include <string>

namespace distopt {

/// Base of every exception distopt throws.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Bad options, shapes or policy parameters; thrown at construction.
class config_error : public error {
 public:
  using error::error;
};

/// A peer was lost, a deadline passed, a frame was malformed or a handshake refused.
class transport_error : public error {
 public:
  using error::error;
};

/// A reference-based decoding (compress::lattice) found the receiver's reference too far from
/// the sender's point: the bytes are well formed, but they do not decode to the point sent.
/// Asynchronous gossip answers it with a full-precision exchange.
class decoding_radius_error : public transport_error {
 public:
  using transport_error::transport_error;
};

/// Non-finite values (NaN or Inf) where finite ones are required.
class numeric_error : public error {
 public:
  using error::error;
};

/// A checkpoint that cannot be read: not a checkpoint, another format version, truncated or
/// corrupted (core/checkpoint.hpp). A readable checkpoint of another configuration is a config_error.
class checkpoint_error : public error {
 public:
  using error::error;
};

}  // namespace distopt
