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
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

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
  const Eigen::VectorXf d =
      (seeded_normal(k_dim, 200, static_cast<std::uint32_t>(rank)).array().abs() * 0.5f + 0.5f).min(2.0f).matrix();
  distopt::rng noise(300, static_cast<std::uint32_t>(rank), static_cast<std::uint32_t>(step), distopt::purpose::user);
  Eigen::VectorXf g = d.cwiseProduct(x - c);
  for (Index i = 0; i < k_dim; ++i) g(i) += 0.1f * noise.normal();
  return g;
}

template <class Opt>
void train(Opt& opt, int rank, std::uint64_t from, int steps) {
  for (int s = 0; s < steps; ++s) opt.step(gradient(rank, from + static_cast<std::uint64_t>(s), opt.parameters()));
}

bool same_counts(const distopt::statistics& a, const distopt::statistics& b) {
  return a.bytes_sent == b.bytes_sent && a.bytes_received == b.bytes_received && a.messages_sent == b.messages_sent &&
         a.messages_received == b.messages_received && a.rounds == b.rounds && a.steps == b.steps &&
         a.staleness_histogram == b.staleness_histogram;
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
const topology::gossip<topology::ring, distopt::mixing::choco> k_choco_ring{{}, {.consensus_step = 0.3f}};

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
  check_resume(3, 5, 6,
               built_with<distopt::algorithms::ef_topk_sgd>(k_plain, compress::error_feedback{compress::top_k{0.1}}));
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
    check_resume(
        3, 5, 6,
        built_with<distopt::algorithms::ps_sgd<compress::qsgd<4>>>({.learning_rate = 0.05f, .momentum = 0.5f}));
  }
  SUBCASE("DoubleSqueeze, the server on rank 1") {
    check_resume(
        3, 5, 6,
        built_with<distopt::algorithms::double_squeeze<>>(k_plain, compress::error_feedback{compress::top_k{0.1}},
                                                          topology::compressed_parameter_server{1}));
  }
}

TEST_CASE("gossip resumes bit for bit: CHOCO, DCD, ECD, DeepSqueeze public copies, D-PSGD's schedule") {
  const distopt::options gossip{.learning_rate = 0.05f, .seed = 5};
  SUBCASE("CHOCO-SGD with top-k on a ring") {
    check_resume(4, 5, 6, built_with<distopt::algorithms::choco_sgd<>>(gossip, compress::top_k{0.2}, k_choco_ring));
  }
  SUBCASE("DCD-PSGD") { check_resume(4, 5, 6, built_with<distopt::algorithms::dcd_psgd<>>(gossip)); }
  SUBCASE("ECD-PSGD") { check_resume(4, 5, 6, built_with<distopt::algorithms::ecd_psgd<>>(gossip)); }
  SUBCASE("DeepSqueeze") {
    check_resume(4, 5, 6,
                 built_with<distopt::algorithms::deep_squeeze<>>(
                     gossip, compress::error_feedback{compress::top_k{0.2}},
                     topology::gossip<topology::ring, distopt::mixing::deep_squeeze>{{}, {.consensus_step = 0.3f}}));
  }
  SUBCASE("D-PSGD on the time-varying one-peer exponential graph") {
    check_resume(4, 5, 6, built_with<distopt::algorithms::d_psgd<topology::one_peer_exponential>>(gossip));
  }
}

namespace {

// An istream over bytes held elsewhere (no copy, so thousands of truncations stay cheap).
struct memory_buffer : std::streambuf {
  memory_buffer(const char* p, std::size_t n) {
    char* b = const_cast<char*>(p);  // only read: std::streambuf's get area takes char*
    setg(b, b, b + n);
  }
};

template <class Opt>
void load_bytes(Opt& opt, const char* p, std::size_t n) {
  memory_buffer buffer(p, n);
  std::istream in(&buffer);
  opt.load(in);
}

// Every position of `bytes` if there are at most `limit`, else `limit` positions drawn with a fixed seed.
std::vector<std::size_t> positions(std::size_t size, std::size_t limit, std::uint32_t stream) {
  std::vector<std::size_t> out;
  if (size <= limit) {
    for (std::size_t i = 0; i < size; ++i) out.push_back(i);
    return out;
  }
  distopt::rng g(400, stream, 0, distopt::purpose::user);
  for (std::size_t k = 0; k < limit; ++k)
    out.push_back(static_cast<std::size_t>(g.uniform() * static_cast<float>(size)) % size);
  return out;
}

struct damage_report {
  std::size_t tried = 0, refused = 0, loaded = 0, other = 0;
  bool unchanged = false;
};

// Loads into `opt` its own checkpoint `good` with byte i changed (xor 0xFF) and cut at every
// length: each must throw checkpoint_error. Afterwards opt must save `good` again: nothing changed.
template <class Opt>
damage_report refuse_damage(Opt& opt, const std::string& good, std::uint32_t stream) {
  damage_report out;
  auto attempt = [&](const char* p, std::size_t n) {
    ++out.tried;
    try {
      load_bytes(opt, p, n);
      ++out.loaded;
    } catch (const distopt::checkpoint_error&) {
      ++out.refused;
    } catch (...) {
      ++out.other;
    }
  };
  std::string bad = good;
  for (const std::size_t i : positions(good.size(), 10000, stream)) {
    bad[i] = static_cast<char>(bad[i] ^ 0xFF);
    attempt(bad.data(), bad.size());
    bad[i] = good[i];
  }
  for (const std::size_t n : positions(good.size(), 10000, stream + 1)) attempt(good.data(), n);
  out.unchanged = saved(opt) == good;
  return out;
}

template <class Opt>
void check_damage_refused(int world, distopt::options o, auto... policies) {
  std::vector<damage_report> reports(static_cast<std::size_t>(world));
  distopt::run_threads(
      world,
      [&](transport_ref t) {
        Opt opt(t, seeded_normal(k_dim, 1), o, policies...);
        train(opt, t.rank(), 0, 5);
        reports[static_cast<std::size_t>(t.rank())] =
            refuse_damage(opt, saved(opt), static_cast<std::uint32_t>(2 * t.rank()));
      },
      k_threads);
  for (const damage_report& r : reports) {
    CHECK(r.tried > 1000);
    CHECK(r.refused == r.tried);
    CHECK(r.loaded == 0);
    CHECK(r.other == 0);
    CHECK(r.unchanged);
  }
}

}  // namespace

TEST_CASE("every changed byte and every truncation is refused with checkpoint_error, and changes nothing") {
  SUBCASE("DoubleSqueeze: worker and server memories") {
    check_damage_refused<distopt::algorithms::double_squeeze<>>(3, k_plain,
                                                                compress::error_feedback{compress::top_k{0.1}});
  }
  SUBCASE("CHOCO-SGD: public copies") {
    check_damage_refused<distopt::algorithms::choco_sgd<>>(3, {.learning_rate = 0.05f}, compress::top_k{0.2},
                                                           k_choco_ring);
  }
  SUBCASE("local SGD mid-period, with momentum") {
    check_damage_refused<distopt::algorithms::local_sgd<3>>(2, {.learning_rate = 0.05f, .momentum = 0.9f});
  }
  SUBCASE("PowerSGD") { check_damage_refused<distopt::algorithms::powersgd<2>>(2, k_plain); }
}

TEST_CASE("a large checkpoint: 10 000 seeded byte changes and truncations are refused") {
  distopt::run_threads(
      1,
      [&](transport_ref t) {
        constexpr Index n = 2600;  // 21 kB of parameters and momentum: above 10 000 bytes
        distopt::algorithms::minibatch_sgd opt(t, seeded_normal(n, 1), {.learning_rate = 0.05f, .momentum = 0.9f});
        opt.step(seeded_normal(n, 2));
        const std::string good = saved(opt);
        CHECK(good.size() > 2 * 4 * n);
        const damage_report r = refuse_damage(opt, good, 7);
        CHECK(r.tried == 20000);
        CHECK(r.refused == r.tried);
        CHECK(r.unchanged);
      },
      k_threads);
}

TEST_CASE("a checkpoint whose checksum was repaired after a change loads or throws distopt::error, never crashes") {
  // The parser behind the checksum, reached only by crafted input: flip each byte, recompute
  // the CRC32C, and load. Damaged counts and lengths must be refused without reading out of
  // bounds (run under ASan/UBSan by scripts/test --sanitize); changed floats may load.
  distopt::run_threads(
      2,
      [&](transport_ref t) {
        distopt::algorithms::double_squeeze<> opt(t, seeded_normal(k_dim, 1), k_plain,
                                                  compress::error_feedback{compress::top_k{0.1}});
        train(opt, t.rank(), 0, 3);
        const std::string good = saved(opt);
        distopt::algorithms::double_squeeze<> scratch(t, seeded_normal(k_dim, 1), k_plain,
                                                      compress::error_feedback{compress::top_k{0.1}});
        std::size_t loaded = 0, refused = 0, other = 0;
        std::string bad = good;
        for (std::size_t i = 24; i + 4 < good.size(); ++i) {
          bad[i] = static_cast<char>(bad[i] ^ 0x55);
          const std::uint32_t crc =
              distopt::detail::crc32c(std::as_bytes(std::span<const char>(bad.data(), bad.size() - 4)));
          for (int b = 0; b < 4; ++b)
            bad[bad.size() - 4 + static_cast<std::size_t>(b)] = static_cast<char>(crc >> (8 * b));
          try {
            load(scratch, bad);
            ++loaded;
          } catch (const distopt::error&) {
            ++refused;
          } catch (...) {
            ++other;
          }
          bad = good;
        }
        CHECK(other == 0);
        CHECK(loaded > 0);   // the floats
        CHECK(refused > 0);  // names, counts, lengths, flags, the configuration
      },
      k_threads);
}

namespace {

// The config_error message with which rank 0 refuses the checkpoint of rank source(r, world)
// that a Saver wrote after 3 steps, loaded into a fresh Loader ("" if it loads). Every rank that
// refuses must be left as it was (its next save unchanged); ranks whose part fits may load.
template <class Saver, class Loader>
std::string refusal(int save_world, int load_world, auto make_saver, auto make_loader, int (*source)(int, int)) {
  std::vector<std::string> checkpoints(static_cast<std::size_t>(save_world));
  distopt::run_threads(
      save_world,
      [&](transport_ref t) {
        Saver opt = make_saver(t);
        train(opt, t.rank(), 0, 3);
        checkpoints[static_cast<std::size_t>(t.rank())] = saved(opt);
      },
      k_threads);
  std::string message;
  bool unchanged = true;
  distopt::run_threads(
      load_world,
      [&](transport_ref t) {
        Loader opt = make_loader(t);
        const std::string before = saved(opt);
        try {
          load(opt, checkpoints[static_cast<std::size_t>(source(t.rank(), save_world))]);
        } catch (const distopt::config_error& e) {
          if (t.rank() == 0) message = e.what();
          if (saved(opt) != before) unchanged = false;  // ranks write false only: no race on a changed value
        }
      },
      k_threads);
  CHECK(unchanged);
  return message;
}

int same_rank(int r, int) { return r; }
int next_rank(int r, int world) { return (r + 1) % world; }

template <class Opt>
auto maker(distopt::options o, Index n, auto... policies) {
  return [=](transport_ref t) { return Opt(t, seeded_normal(n, 1), o, policies...); };
}

bool names(const std::string& message, const std::string& what) {
  CAPTURE(message);
  return message.find(what) != std::string::npos;
}

}  // namespace

TEST_CASE("a checkpoint of another configuration is refused with a config_error naming the difference") {
  using distopt::algorithms::minibatch_sgd;
  const distopt::options o = k_plain;
  SUBCASE("optimizer type") {
    const auto m = refusal<minibatch_sgd, distopt::algorithms::qsgd_sgd<4>>(
        1, 1, maker<minibatch_sgd>(o, k_dim), maker<distopt::algorithms::qsgd_sgd<4>>(o, k_dim), same_rank);
    CHECK(names(m, "compress::identity"));
    CHECK(names(m, "compress::qsgd<4"));
  }
  SUBCASE("model size") {
    const auto m = refusal<minibatch_sgd, minibatch_sgd>(1, 1, maker<minibatch_sgd>(o, k_dim),
                                                         maker<minibatch_sgd>(o, 40), same_rank);
    CHECK(names(m, "the parameter count is 48 in the checkpoint, 40 here"));
  }
  SUBCASE("another rank's checkpoint") {
    const auto m = refusal<minibatch_sgd, minibatch_sgd>(2, 2, maker<minibatch_sgd>(o, k_dim),
                                                         maker<minibatch_sgd>(o, k_dim), next_rank);
    CHECK(names(m, "the rank is 1 in the checkpoint, 0 here"));
  }
  SUBCASE("world size") {
    const auto m = refusal<minibatch_sgd, minibatch_sgd>(1, 2, maker<minibatch_sgd>(o, k_dim),
                                                         maker<minibatch_sgd>(o, k_dim), [](int, int) { return 0; });
    CHECK(names(m, "the world size is 1 in the checkpoint, 2 here"));
  }
  SUBCASE("options") {
    distopt::options other = o;
    other.momentum = 0.5f;
    CHECK(names(refusal<minibatch_sgd, minibatch_sgd>(1, 1, maker<minibatch_sgd>(o, k_dim),
                                                      maker<minibatch_sgd>(other, k_dim), same_rank),
                "options.momentum"));
    other = o;
    other.seed = 6;
    CHECK(names(refusal<minibatch_sgd, minibatch_sgd>(1, 1, maker<minibatch_sgd>(o, k_dim),
                                                      maker<minibatch_sgd>(other, k_dim), same_rank),
                "options.seed is 5 in the checkpoint, 6 here"));
  }
  SUBCASE("the parameter server's rank") {
    using ds = distopt::algorithms::double_squeeze<>;
    const compress::error_feedback ef{compress::top_k{0.1}};
    const auto m = refusal<ds, ds>(2, 2, maker<ds>(o, k_dim, ef, topology::compressed_parameter_server{0}),
                                   maker<ds>(o, k_dim, ef, topology::compressed_parameter_server{1}), same_rank);
    CHECK(names(m, "the parameter server is rank 0 in the checkpoint, rank 1 here"));
  }
  SUBCASE("the gossip graph") {
    using choco = distopt::algorithms::choco_sgd<compress::top_k, topology::custom>;
    const topology::custom cycle{distopt::graph::from_edges(4, {{0, 1}, {1, 2}, {2, 3}, {3, 0}})};
    const topology::custom path{distopt::graph::from_edges(4, {{0, 1}, {1, 2}, {2, 3}})};
    const compress::top_k c{0.2};
    const auto m =
        refusal<choco, choco>(4, 4, maker<choco>(o, k_dim, c, cycle), maker<choco>(o, k_dim, c, path), same_rank);
    CHECK(names(m, "gossip neighbours differ"));  // rank 0: 1 and 3 on the cycle, 1 on the path
  }
  SUBCASE("the consensus step") {
    using choco = distopt::algorithms::choco_sgd<>;
    const compress::top_k c{0.2};
    const topology::gossip<topology::ring, distopt::mixing::choco> other{{}, {.consensus_step = 0.5f}};
    const auto m = refusal<choco, choco>(3, 3, maker<choco>(o, k_dim, c, k_choco_ring),
                                         maker<choco>(o, k_dim, c, other), same_rank);
    CHECK(names(m, "consensus_step is 0.300000 in the checkpoint, 0.500000 here"));
  }
  SUBCASE("PowerSGD's tensor shapes") {
    using psgd = distopt::algorithms::powersgd<2>;
    const auto m = refusal<psgd, psgd>(1, 1, maker<psgd>(o, k_dim),
                                       maker<psgd>(o, k_dim, compress::power_sgd<2>{.shapes = {{8, 6}}}), same_rank);
    CHECK(names(m, "tensor 0 is 6 x 8 in the checkpoint, 8 x 6 here"));
  }
}

namespace {

// A fresh directory under the system's temporary directory, removed at the end of the test.
struct scratch_directory {
  std::filesystem::path path;
  scratch_directory() {
    std::string pattern = (std::filesystem::temp_directory_path() / "distopt-checkpoint-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~scratch_directory() { std::filesystem::remove_all(path); }
  std::vector<std::filesystem::path> files() const {
    std::vector<std::filesystem::path> out;
    for (const auto& e : std::filesystem::directory_iterator(path)) out.push_back(e.path());
    return out;
  }
};

std::string contents(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("checkpoint files: saved atomically, loaded, and never half-written") {
  const scratch_directory dir;
  const std::filesystem::path file = dir.path / "rank-0.ckpt";
  // One rank on the test's own thread, so that the fork below copies a single-threaded process.
  distopt::detail::thread_world world(1, k_timeout);
  distopt::thread_transport endpoint(world, 0);
  const transport_ref t(endpoint);
  using opt_t = distopt::algorithms::ef_topk_sgd;
  const compress::error_feedback ef{compress::top_k{0.1}};
  opt_t a(t, seeded_normal(k_dim, 1), k_plain, ef);
  train(a, 0, 0, 3);
  distopt::save_checkpoint(a, file);
  const std::string first = saved(a);
  CHECK(contents(file) == first);
  CHECK(dir.files().size() == 1);  // no temporary left

  // A writer that fails halfway: the file keeps the previous checkpoint, the temporary is removed.
  train(a, 0, 3, 2);
  CHECK_THROWS_AS(distopt::write_file_atomically(file,
                                                 [&](std::ostream& out) {
                                                   const std::string next = saved(a);
                                                   out.write(next.data(),
                                                             static_cast<std::streamsize>(next.size() / 2));
                                                   throw std::runtime_error("the disk is full");
                                                 }),
                  std::runtime_error);
  CHECK(contents(file) == first);
  CHECK(dir.files().size() == 1);

  // A process killed while writing: nothing cleans up, yet the file is the previous
  // checkpoint, and the temporary left behind is refused as truncated.
  const std::string next = saved(a);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    try {
      distopt::write_file_atomically(file, [&](std::ostream& out) {
        out.write(next.data(), static_cast<std::streamsize>(next.size() / 2));
        out.flush();
        ::_exit(0);  // dies here, before the rename
      });
    } catch (...) {
    }
    ::_exit(1);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(contents(file) == first);
  std::size_t leftovers = 0;
  for (const auto& p : dir.files()) {
    if (p == file) continue;
    ++leftovers;
    opt_t c(t, seeded_normal(k_dim, 1), k_plain, ef);
    CHECK_THROWS_WITH_AS(distopt::load_checkpoint(c, p), doctest::Contains("truncated"), distopt::checkpoint_error);
  }
  CHECK(leftovers == 1);

  // The file resumes the run.
  opt_t b(t, seeded_normal(k_dim, 2), k_plain, ef);
  distopt::load_checkpoint(b, file);
  CHECK(saved(b) == first);

  CHECK_THROWS_WITH_AS(distopt::load_checkpoint(b, dir.path / "missing.ckpt"),
                       doctest::Contains("missing.ckpt: cannot open it"), distopt::checkpoint_error);
  CHECK_THROWS_WITH_AS(distopt::save_checkpoint(b, dir.path / "no-such-dir" / "x.ckpt"),
                       doctest::Contains("cannot create a temporary file"), distopt::checkpoint_error);
}
