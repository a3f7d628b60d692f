// ctest-labels: threads
// Checkpoints over TCP with every rank a process of its own: a world of 3 processes trains
// k steps, each saves its checkpoint file, and trains m more (the reference); a new world of
// 3 processes, each loading its rank's file into a freshly built optimizer, trains the same
// m steps. The final parameters must be bit-identical on every rank, for minibatch_sgd with
// momentum (ring allreduce) and CHOCO-SGD on a ring (public copies).

#if DISTOPT_TEST_TCP

#include <doctest/doctest.h>

#include <Eigen/Core>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include <poll.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <distopt/algorithms.hpp>
#include <distopt/core/checkpoint_file.hpp>
#include <distopt/transport/tcp.hpp>

#include "checkpoint_scenario.hpp"

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace scenario = checkpoint_scenario;
constexpr int world = 3;

void write_floats(const fs::path& p, const Eigen::VectorXf& x) {
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(x.data()), static_cast<std::streamsize>(sizeof(float) * x.size()));
}

std::string contents(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs body(t, rank) in `world` forked processes on one TCP world; rank 0 hands its port to
// the others through a pipe. Returns how many processes failed (each prints why).
int run_processes(const std::function<void(distopt::transport_ref, int)>& body) {
  int port_pipe[2];
  REQUIRE(::pipe(port_pipe) == 0);
  std::vector<pid_t> children;
  for (int r = 0; r < world; ++r) {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child != 0) {
      children.push_back(child);
      continue;
    }
    int status = 0;
    try {
      distopt::tcp_options o;  // assigned, not designated: gcc 12 warns falsely on the defaulted strings
      o.rank = r;
      o.size = world;
      o.coordinator = "127.0.0.1:0";
      o.token = "checkpoint";
      o.timeout = 20s;
      o.connect_timeout = 20s;
      if (r == 0) {
        o.on_listening = [&](std::uint16_t port) {
          for (int k = 1; k < world; ++k)
            if (::write(port_pipe[1], &port, sizeof port) != sizeof port) ::_exit(3);
        };
      } else {
        std::uint16_t port = 0;
        pollfd p{port_pipe[0], POLLIN, 0};
        if (::poll(&p, 1, 20000) != 1 || ::read(port_pipe[0], &port, sizeof port) != sizeof port) ::_exit(2);
        o.coordinator = "127.0.0.1:" + std::to_string(port);
      }
      distopt::tcp_transport t(std::move(o));
      body(t, r);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank %d: %s\n", r, e.what());
      status = 1;
    }
    std::fflush(stderr);
    ::_exit(status);
  }
  ::close(port_pipe[0]);
  ::close(port_pipe[1]);
  int failed = 0;
  for (const pid_t child : children) {
    int status = 0;
    ::waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }
  return failed;
}

template <class Opt>
void check_resume_over_tcp(const distopt::options& o, auto... policies) {
  using scenario::k, scenario::m;
  std::string pattern = (fs::temp_directory_path() / "distopt-checkpoint-tcp-XXXXXX").string();
  REQUIRE(::mkdtemp(pattern.data()) != nullptr);
  const fs::path dir = pattern;
  auto file = [&](const char* what, int r) { return dir / (what + std::to_string(r)); };
  const Eigen::VectorXf x0 = scenario::x0();
  CHECK(run_processes([&](distopt::transport_ref t, int r) {
          Opt opt(t, x0, o, policies...);
          scenario::train(opt, r, 0, k);
          distopt::save_checkpoint(opt, file("rank-", r));
          scenario::train(opt, r, k, m);
          write_floats(file("reference-", r), opt.parameters());  // before finish(): gossip ranks still differ
          opt.finish();
        }) == 0);
  CHECK(run_processes([&](distopt::transport_ref t, int r) {
          Opt opt(t, Eigen::VectorXf::Zero(scenario::dim), o, policies...);
          distopt::load_checkpoint(opt, file("rank-", r));
          scenario::train(opt, r, k, m);
          write_floats(file("resumed-", r), opt.parameters());
          opt.finish();
        }) == 0);
  for (int r = 0; r < world; ++r) {
    CAPTURE(r);
    const std::string reference = contents(file("reference-", r)), resumed = contents(file("resumed-", r));
    CHECK(reference.size() == sizeof(float) * scenario::dim);
    CHECK(resumed == reference);
  }
  fs::remove_all(dir);
}

}  // namespace

TEST_CASE("tcp, 3 processes: minibatch_sgd with momentum resumes from its checkpoint files bit for bit") {
  check_resume_over_tcp<distopt::algorithms::minibatch_sgd>(scenario::momentum_options);
}

TEST_CASE("tcp, 3 processes: CHOCO-SGD on a ring resumes from its checkpoint files bit for bit") {
  check_resume_over_tcp<distopt::algorithms::choco_sgd<>>(scenario::choco_options, scenario::choco_compressor,
                                                          scenario::choco_ring);
}

#else

#include <doctest/doctest.h>

TEST_CASE("tcp checkpoints: skipped") {
  MESSAGE("skipped: distopt::tcp was not built (it needs libboost-dev and libssl-dev)");
}

#endif
