// ctest-labels: threads
// Checkpoints (optimizer::save/load, core/checkpoint.hpp) against the run they interrupt:
// k steps, save, m more steps must equal — bit for bit, on every rank, statistics included —
// loading the checkpoint into a freshly built optimizer and taking the same m steps, for every
// synchronous protocol and every stateful compressor. A control that resumes from the
// parameters alone must differ, so the state a checkpoint carries is shown to matter.
// Damaged checkpoints (every byte changed, every truncation) are refused with
// checkpoint_error and leave the optimizer as it was; foreign ones are refused with a
// config_error naming the difference.
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <distopt/distopt.hpp>

#include "optimizer_harness.hpp"

namespace {

using namespace harness;
using distopt::transport_ref;
namespace compress = distopt::compress;
namespace topology = distopt::topology;
using distopt::local_steps::every_step;
using distopt::staleness::synchronous;

constexpr Index k_dim = 48;  // a 6 x 8 matrix for PowerSGD's default shape: rank 2 compresses it

// Worker r's gradient at x in step `step`: D_r (x - c_r) + 0.1 noise, with D_r diagonal in
// [0.5, 2] and the optimum c_r of each worker its own (workers disagree), the noise a function
// of (rank, step) as a data loader keyed by the step would draw it.
Eigen::VectorXf gradient(int rank, std::uint64_t step, const Eigen::VectorXf& x) {
  const Eigen::VectorXf c = seeded_normal(k_dim, 100, static_cast<std::uint32_t>(rank));
  const Eigen::VectorXf d = (seeded_normal(k_dim, 200, static_cast<std::uint32_t>(rank)).array().abs() * 0.5f + 0.5f)
                                .min(2.0f)
                                .matrix();
  distopt::rng noise(300, static_cast<std::uint32_t>(rank), static_cast<std::uint32_t>(step), distopt::purpose::user);
  Eigen::VectorXf g = d.cwiseProduct(x - c);
  for (Index i = 0; i < k_dim; ++i) g(i) += 0.1f * noise.normal();
  return g;
}

template <class Opt>
void train(Opt& opt, int rank, std::uint64_t from, int steps) {
  for (int s = 0; s < steps; ++s) opt.step(gradient(rank, from + static_cast<std::uint64_t>(s), opt.parameters()));
}

std::string saved(const auto& opt) {
  std::ostringstream out;
  opt.save(out);
  return out.str();
}

template <class Opt>
void load(Opt& opt, const std::string& bytes) {
  std::istringstream in(bytes);
  opt.load(in);
}

bool same_counts(const distopt::statistics& a, const distopt::statistics& b) {
  return a.bytes_sent == b.bytes_sent && a.bytes_received == b.bytes_received &&
         a.messages_sent == b.messages_sent && a.messages_received == b.messages_received && a.rounds == b.rounds &&
         a.steps == b.steps && a.staleness_histogram == b.staleness_histogram;
}

// Runs `world` workers built by make(t, x0) for k steps, saves, runs m more (the reference);
// then loads each rank's checkpoint into an optimizer built from another x0 and runs the same
// m steps: parameters and statistics must match bit for bit, before and after finish(). The
// control, built from the parameters at step k alone, must end elsewhere on some rank.
template <class Make>
void check_resume(int world, int k, int m, Make make) {
  using opt_t = decltype(make(std::declval<transport_ref>(), Eigen::VectorXf()));
  const Eigen::VectorXf x0 = seeded_normal(k_dim, 1);
  std::vector<std::string> checkpoints(static_cast<std::size_t>(world));
  std::vector<Eigen::VectorXf> at_k(static_cast<std::size_t>(world));
  std::vector<Eigen::VectorXf> before_finish(static_cast<std::size_t>(world));
  const run_result reference = run_workers(
      world, [&](transport_ref t) { return make(t, x0); },
      [&](int r, opt_t& opt) {
        train(opt, r, 0, k);
        checkpoints[static_cast<std::size_t>(r)] = saved(opt);
        at_k[static_cast<std::size_t>(r)] = opt.parameters();
        train(opt, r, static_cast<std::uint64_t>(k), m);
        before_finish[static_cast<std::size_t>(r)] = opt.parameters();
        opt.finish();
      });
  std::vector<Eigen::VectorXf> resumed_before_finish(static_cast<std::size_t>(world));
  const run_result resumed = run_workers(
      world, [&](transport_ref t) { return make(t, seeded_normal(k_dim, 2)); },
      [&](int r, opt_t& opt) {
        load(opt, checkpoints[static_cast<std::size_t>(r)]);
        train(opt, r, static_cast<std::uint64_t>(k), m);
        resumed_before_finish[static_cast<std::size_t>(r)] = opt.parameters();
        opt.finish();
      });
  const run_result control = run_workers(
      world, [&](transport_ref t) { return make(t, at_k[static_cast<std::size_t>(t.rank())]); },
      [&](int r, opt_t& opt) {
        train(opt, r, static_cast<std::uint64_t>(k), m);
        opt.finish();
      });
  bool control_differs = false;
  for (std::size_t r = 0; r < static_cast<std::size_t>(world); ++r) {
    CAPTURE(r);
    CHECK(same_bits(resumed_before_finish[r], before_finish[r]));
    CHECK(same_bits(resumed.x[r], reference.x[r]));
    CHECK(same_counts(resumed.stats[r], reference.stats[r]));
    control_differs = control_differs || !same_bits(control.x[r], reference.x[r]);
  }
  CHECK(control_differs);
}

template <class Opt>
auto built_with(distopt::options o, auto... policies) {
  return [=](transport_ref t, const Eigen::VectorXf& x0) { return Opt(t, x0, o, policies...); };
}

const distopt::options k_plain{.learning_rate = 0.05f, .seed = 5};

}  // namespace

TEST_CASE("minibatch_sgd with momentum, Nesterov and weight decay resumes bit for bit") {
  check_resume(3, 5, 6,
               built_with<distopt::algorithms::minibatch_sgd>(
                   {.learning_rate = 0.05f, .momentum = 0.9f, .nesterov = true, .weight_decay = 1e-3f, .seed = 5}));
}

TEST_CASE("a learning rate set by a schedule is restored") {
  const Eigen::VectorXf x0 = seeded_normal(k_dim, 1);
  distopt::run_threads(
      1,
      [&](transport_ref t) {
        distopt::algorithms::minibatch_sgd a(t, x0, k_plain);
        a.set_learning_rate(0.01f);
        train(a, 0, 0, 2);
        const std::string bytes = saved(a);
        train(a, 0, 2, 3);
        distopt::algorithms::minibatch_sgd b(t, x0, k_plain);
        load(b, bytes);
        train(b, 0, 2, 3);
        CHECK(same_bits(a.parameters(), b.parameters()));
      },
      k_threads);
}

TEST_CASE("error feedback with top-k resumes bit for bit") {
  check_resume(3, 5, 6, built_with<distopt::algorithms::ef_topk_sgd>(k_plain, compress::error_feedback{compress::top_k{0.1}}));
}

TEST_CASE("EF21 resumes bit for bit") {
  check_resume(3, 5, 6, built_with<distopt::algorithms::ef21_sgd<>>(k_plain, compress::ef21{compress::top_k{0.1}}));
}

TEST_CASE("PowerSGD resumes bit for bit (warm start Q and memory)") {
  check_resume(3, 4, 5, built_with<distopt::algorithms::powersgd<2>>(k_plain));
}

TEST_CASE("QSGD resumes bit for bit (its random stream follows the round counter)") {
  check_resume(3, 5, 6, built_with<distopt::algorithms::qsgd_sgd<4>>(k_plain));
}

TEST_CASE("random_k_shared resumes bit for bit (its round counter)") {
  using opt = distopt::optimizer<compress::random_k_shared, topology::allreduce, synchronous, every_step>;
  check_resume(3, 5, 6, built_with<opt>(k_plain, compress::random_k_shared{0.25, 9}));
}

TEST_CASE("local SGD resumes bit for bit from the middle of a period") {
  check_resume(3, 6, 7, built_with<distopt::algorithms::local_sgd<4>>(k_plain));  // saved 2 steps into a period
}

TEST_CASE("the parameter server resumes bit for bit, DoubleSqueeze with the server's memory") {
  SUBCASE("exact downlink, with momentum") {
    check_resume(3, 5, 6,
                 built_with<distopt::algorithms::ps_sgd<compress::qsgd<4>>>({.learning_rate = 0.05f, .momentum = 0.5f}));
  }
  SUBCASE("DoubleSqueeze, the server on rank 1") {
    check_resume(3, 5, 6,
                 built_with<distopt::algorithms::double_squeeze<>>(
                     k_plain, compress::error_feedback{compress::top_k{0.1}}, topology::compressed_parameter_server{1}));
  }
}

TEST_CASE("gossip resumes bit for bit: CHOCO, DCD, ECD, DeepSqueeze public copies, D-PSGD's schedule") {
  const distopt::options gossip{.learning_rate = 0.05f, .seed = 5, .consensus_step = 0.3f};
  SUBCASE("CHOCO-SGD with top-k on a ring") {
    check_resume(4, 5, 6, built_with<distopt::algorithms::choco_sgd<>>(gossip, compress::top_k{0.2}));
  }
  SUBCASE("DCD-PSGD") { check_resume(4, 5, 6, built_with<distopt::algorithms::dcd_psgd<>>(gossip)); }
  SUBCASE("ECD-PSGD") { check_resume(4, 5, 6, built_with<distopt::algorithms::ecd_psgd<>>(gossip)); }
  SUBCASE("DeepSqueeze") {
    check_resume(4, 5, 6,
                 built_with<distopt::algorithms::deep_squeeze<>>(gossip, compress::error_feedback{compress::top_k{0.2}}));
  }
  SUBCASE("D-PSGD on the time-varying one-peer exponential graph") {
    check_resume(4, 5, 6, built_with<distopt::algorithms::d_psgd<topology::one_peer_exponential>>(gossip));
  }
}
