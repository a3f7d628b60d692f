#pragma once
// describe<T>(): the name of a type as the compiler spells it, which says what a process
// runs: the TCP handshake compares it between ranks (transport/tcp.hpp, describe_run) and a
// checkpoint records it, so that one of another optimizer type is refused (core/checkpoint.hpp).
//
//   distopt::describe<distopt::algorithms::minibatch_sgd>()
//   // "distopt::optimizer<distopt::compress::identity, distopt::topology::allreduce, ...>"

#include <algorithm>
#include <string>
#include <string_view>
#include <typeinfo>

namespace distopt {

/// The name of type T as the compiler spells it (e.g. "distopt::compress::top_k"),
/// from __PRETTY_FUNCTION__; typeid's name where that is not available.
template <class T>
std::string describe() {
#if defined(__GNUC__) || defined(__clang__)
  const std::string_view f = __PRETTY_FUNCTION__;
  const auto start = f.find("T = ");
  if (start != std::string_view::npos) {
    auto name = f.substr(start + 4);
    name = name.substr(0, std::min(name.find(';'), name.rfind(']')));
    return std::string(name);
  }
#endif
  return typeid(T).name();
}

}  // namespace distopt
