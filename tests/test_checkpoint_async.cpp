// ctest-labels: threads
// Checkpoints of asynchronous runs (optimizer::quiesce, then save/load): the cut must hold every
// push or interaction wholly or not at all, checked against counts worked out by hand.
//  - stale server (SSP, AsySGD; one shard, two): worker k's gradient moves coordinate k only, by
//    exactly 1/8 of the server model per push, so the final model is 1/8 x the pushes each worker
//    made before and after the cut — one lost or applied twice across it shows. A straggler, server
//    ranks that save and load late (the others push on meanwhile), and fresh optimizers built from
//    another x0 make the wrong answers reachable.
//  - pairwise gossip (AD-PSGD, SwarmSGD): averaging moves the two ends by opposite amounts, so with
//    gradients that sum to zero over the workers (each pulls its own way, so the models stay apart)
//    the sum of the models at a cut after the same number of steps equals the initial sum, up to
//    the rounding bound derived below; a half-applied interaction moves it by half the distance of
//    two models.
//  - save() outside a cut, and checkpoints of other configurations, are refused.
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <distopt/distopt.hpp>

#include "optimizer_harness.hpp"

namespace {

using namespace std::chrono_literals;
using harness::k_threads;
using harness::k_timeout;
using harness::load;
using harness::same_bits;
using harness::saved;
namespace alg = distopt::algorithms;

// ---------------------------------------------------------------------------------------------
// Stale server, counting. n = 4 workers, eta = 1/2, worker k's gradient -e_k: a push is u = e_k / 2
// and moves the server's coordinate k by u / n = 1/8 (exact in binary). Coordinate k of every model
// the server holds is x0_k + pushes_k / 8, and every quantity below is exact.

constexpr int n = 4;
constexpr float per_push = 0.125f;

Eigen::VectorXf unit(int k) {
  Eigen::VectorXf g = Eigen::VectorXf::Zero(n);
  g(k) = -1.0f;
  return g;
}

// Rank 3 is a straggler (2 ms a step, the others 100 us, and none after the cut of the first run,
// so they push while a server rank's worker may still be waking up in quiesce()); the server ranks
// save `late` after quiesce(), and load it `late` after the others (who push meanwhile).
bool is_server(int rank, int shards) { return rank < shards; }

struct counting_result {
  std::vector<Eigen::VectorXf> at_cut, first_final, resumed_final;
  std::vector<std::uint64_t> rounds_at_cut, first_rounds, resumed_rounds;
};

template <class Opt>
counting_result count_pushes(int shards, int before, int after, std::chrono::milliseconds late) {
  const Eigen::VectorXf x0 = Eigen::VectorXf::LinSpaced(n, 1.0f, 4.0f);
  const distopt::options o{.learning_rate = 0.5f, .seed = 9, .timeout = k_timeout};
  const distopt::topology::parameter_server topo{.shards = shards};
  counting_result out;
  out.at_cut.resize(n);
  out.first_final.resize(n);
  out.resumed_final.resize(n);
  out.rounds_at_cut.resize(n);
  out.first_rounds.resize(n);
  out.resumed_rounds.resize(n);
  std::vector<std::string> checkpoints(n);
  std::mutex m;
  auto train = [&](auto& opt, int r, int steps, bool paced = true) {
    for (int s = 0; s < steps; ++s) {
      if (paced || r == n - 1) std::this_thread::sleep_for(r == n - 1 ? 2ms : 100us);
      opt.step(unit(r));
    }
  };
  distopt::run_threads(
      n,
      [&](distopt::transport_ref t) {
        const int r = t.rank();
        const auto i = static_cast<std::size_t>(r);
        Opt opt(t, x0, o, {}, topo);
        train(opt, r, before);
        opt.quiesce();
        if (is_server(r, shards)) std::this_thread::sleep_for(late);  // the others push after the cut meanwhile
        std::string bytes = saved(opt);
        train(opt, r, after, /*paced=*/false);  // training goes on after the cut, at once: a shard
        opt.finish();                           // that recorded the cut late would hold these pushes
        std::lock_guard lock(m);
        checkpoints[i] = std::move(bytes);
        out.first_final[i] = opt.parameters();
        out.first_rounds[i] = opt.stats().rounds;
      },
      k_threads);
  distopt::run_threads(
      n,
      [&](distopt::transport_ref t) {
        const int r = t.rank();
        const auto i = static_cast<std::size_t>(r);
        Opt opt(t, Eigen::VectorXf::Constant(n, -7.0f), o, {}, topo);  // another x0: the checkpoint must replace it
        if (is_server(r, shards)) std::this_thread::sleep_for(late);   // the others load and push first
        std::string bytes;
        {
          std::lock_guard lock(m);
          bytes = checkpoints[i];
        }
        load(opt, bytes);
        const Eigen::VectorXf cut = opt.parameters();
        const std::uint64_t rounds = opt.stats().rounds;
        train(opt, r, after);
        opt.finish();
        std::lock_guard lock(m);
        out.at_cut[i] = cut;
        out.rounds_at_cut[i] = rounds;
        out.resumed_final[i] = opt.parameters();
        out.resumed_rounds[i] = opt.stats().rounds;
      },
      k_threads);
  return out;
}

template <class Opt>
void check_counting(int shards) {
  CAPTURE(shards);
  constexpr int before = 30, after = 20;
  const counting_result c = count_pushes<Opt>(shards, before, after, 60ms);
  const Eigen::VectorXf x0 = Eigen::VectorXf::LinSpaced(n, 1.0f, 4.0f);
  Eigen::VectorXf cut(n), first(n), resumed(n);
  for (int k = 0; k < n; ++k) {
    const auto i = static_cast<std::size_t>(k);
    // Every step is a round (local_steps::every_step) and quiesce() pushes nothing more: the rounds
    // each worker counted are its pushes, which the model must hold exactly.
    CHECK(c.rounds_at_cut[i] == before);
    CHECK(c.first_rounds[i] == before + after);
    CHECK(c.resumed_rounds[i] == before + after);
    cut(k) = x0(k) + per_push * static_cast<float>(c.rounds_at_cut[i]);
    first(k) = x0(k) + per_push * static_cast<float>(c.first_rounds[i]);
    resumed(k) = x0(k) + per_push * static_cast<float>(c.resumed_rounds[i]);
  }
  for (std::size_t r = 0; r < n; ++r) {
    CAPTURE(r);
    INFO("at the cut ", c.at_cut[r].transpose(), " expected ", cut.transpose());
    INFO("resumed final ", c.resumed_final[r].transpose(), " expected ", resumed.transpose());
    CHECK(same_bits(c.at_cut[r], cut));  // every worker saved the server's model at the cut
    CHECK(same_bits(c.first_final[r], first));
    CHECK(same_bits(c.resumed_final[r], resumed));
  }
}

}  // namespace

TEST_CASE(
    "stale server: no push is lost or applied twice across a checkpoint (ssp_sgd<2>, async_ps_sgd with 1 and 2 "
    "shards)") {
  SUBCASE("ssp_sgd<2>") { check_counting<alg::ssp_sgd<2>>(1); }
  SUBCASE("async_ps_sgd") { check_counting<alg::async_ps_sgd<>>(1); }
  SUBCASE("async_ps_sgd, two shards") { check_counting<alg::async_ps_sgd<>>(2); }
}

TEST_CASE("stale server: quiesce() pushes the pending local steps; the checkpoint holds them once") {
  // fixed<3> local steps, 7 steps: rounds after steps 3 and 6, and quiesce() pushes step 7. Each
  // worker's 7 steps of e_k / 2 are 7/8 on coordinate k of the server's model at the cut.
  using opt_t = distopt::optimizer<distopt::compress::identity, distopt::topology::parameter_server,
                                   distopt::staleness::asynchronous, distopt::local_steps::fixed<3>>;
  std::vector<Eigen::VectorXf> at_cut(n);
  std::vector<std::string> checkpoints(n);
  std::mutex m;
  distopt::run_threads(
      n,
      [&](distopt::transport_ref t) {
        opt_t opt(t, Eigen::VectorXf::Zero(n), {.learning_rate = 0.5f, .timeout = k_timeout});
        for (int s = 0; s < 7; ++s) opt.step(unit(t.rank()));
        opt.quiesce();
        {
          std::lock_guard lock(m);
          at_cut[static_cast<std::size_t>(t.rank())] = opt.parameters();
          checkpoints[static_cast<std::size_t>(t.rank())] = saved(opt);
        }
        opt.finish();
      },
      k_threads);
  std::vector<Eigen::VectorXf> resumed(n);
  distopt::run_threads(
      n,
      [&](distopt::transport_ref t) {
        opt_t opt(t, Eigen::VectorXf::Zero(n), {.learning_rate = 0.5f, .timeout = k_timeout});
        load(opt, checkpoints[static_cast<std::size_t>(t.rank())]);
        for (int s = 0; s < 2; ++s) opt.step(unit(t.rank()));  // steps 8, 9: a round after step 9
        opt.finish();
        std::lock_guard lock(m);
        resumed[static_cast<std::size_t>(t.rank())] = opt.parameters();
      },
      k_threads);
  for (std::size_t r = 0; r < n; ++r) {
    CAPTURE(r);
    CHECK(same_bits(at_cut[r], Eigen::VectorXf::Constant(n, 7 * per_push)));
    CHECK(same_bits(resumed[r], Eigen::VectorXf::Constant(n, 9 * per_push)));
  }
}

namespace {

// ---------------------------------------------------------------------------------------------
// Pairwise gossip, the sum of the models. n = 4, dim = 6, x0 of worker k: seeded normal (apart);
// worker k's gradient c_k = (k - 3/2) v, v fixed, so sum_k c_k = 0 and after the same number of
// steps on every worker the steps add nothing to the sum; eta = 1/4 keeps the models apart (each
// pulls its own way by 3/8 |v| a step at most).
//
// Rounding: an interaction moves the two ends by fl(0.5 fl(a - b)) and fl(0.5 fl(b - a)), exact
// negatives of each other (rounding to nearest is symmetric; halving is exact), so its only
// rounding is in the two additions x += move, each within half an ulp of its result, <= 2^-24 B
// with B a bound on |entries|. A step x - eta c rounds once likewise. So per coordinate
//   |sum of the models - sum of x0| <= (steps + 2 interactions) 2^-24 B,
// steps and interactions (statistics::rounds, each one interaction) summed over the workers. B is
// taken as twice the largest |entry| observed after any step (an entry moves by at most half the
// distance of two entries within a step). A half-applied interaction is off by half the distance of
// two models: ~0.1 here, some 100 times the bound.

constexpr int gdim = 6;

Eigen::VectorXf pull_of(int k) { return (static_cast<float>(k) - 1.5f) * Eigen::VectorXf::LinSpaced(gdim, 1.0f, 2.0f); }

struct gossip_cut {
  std::vector<Eigen::VectorXf> first_cut, resumed_cut, loaded;
  std::vector<std::string> checkpoints, saved_after_load;
  std::uint64_t operations = 0;  // steps + 2 interactions, both runs
  double largest = 0;            // largest |entry| observed
};

template <class Opt>
gossip_cut cut_gossip(int before, int after) {
  gossip_cut out;
  out.first_cut.resize(n);
  out.resumed_cut.resize(n);
  out.loaded.resize(n);
  out.checkpoints.resize(n);
  out.saved_after_load.resize(n);
  std::mutex m;
  const distopt::options o{.learning_rate = 0.25f, .seed = 11, .timeout = k_timeout};
  std::vector<std::uint64_t> ops(2 * n, 0);
  auto train = [&](auto& opt, int r, int steps) {
    double seen = 0;
    for (int s = 0; s < steps; ++s) {
      std::this_thread::sleep_for(r == n - 1 ? 1ms : 100us);  // rank 3 straggles
      opt.step(pull_of(r));
      seen = std::max(seen, static_cast<double>(opt.parameters().cwiseAbs().maxCoeff()));
    }
    std::lock_guard lock(m);
    out.largest = std::max(out.largest, seen);
  };
  distopt::run_threads(
      n,
      [&](distopt::transport_ref t) {
        const int r = t.rank();
        const auto i = static_cast<std::size_t>(r);
        Opt opt(t, harness::seeded_normal(gdim, 40, static_cast<std::uint32_t>(r)), o);
        train(opt, r, before);
        opt.quiesce();
        std::string bytes = saved(opt);
        const Eigen::VectorXf cut = opt.parameters();
        const auto stats = opt.stats();
        train(opt, r, 2);  // training goes on after the cut
        opt.finish();
        std::lock_guard lock(m);
        out.checkpoints[i] = std::move(bytes);
        out.first_cut[i] = cut;
        ops[i] = stats.steps + 2 * stats.rounds;
      },
      k_threads);
  distopt::run_threads(
      n,
      [&](distopt::transport_ref t) {
        const int r = t.rank();
        const auto i = static_cast<std::size_t>(r);
        Opt opt(t, Eigen::VectorXf::Constant(gdim, 5.0f), o);
        std::string bytes;
        {
          std::lock_guard lock(m);
          bytes = out.checkpoints[i];
        }
        load(opt, bytes);
        const Eigen::VectorXf loaded = opt.parameters();
        const std::string again = saved(opt);  // a loaded optimizer is at the cut: the same bytes
        const auto at_load = opt.stats();
        train(opt, r, after);
        opt.quiesce();
        const Eigen::VectorXf cut = opt.parameters();
        const auto stats = opt.stats();
        opt.finish();
        std::lock_guard lock(m);
        out.loaded[i] = loaded;
        out.saved_after_load[i] = again;
        out.resumed_cut[i] = cut;
        ops[n + i] = (stats.steps - at_load.steps) + 2 * (stats.rounds - at_load.rounds);
      },
      k_threads);
  for (const std::uint64_t k : ops) out.operations += k;
  return out;
}

// Per coordinate, the sum over the workers in double (exact for 4 floats of like magnitude).
Eigen::VectorXd sum_of(const std::vector<Eigen::VectorXf>& xs) {
  Eigen::VectorXd s = Eigen::VectorXd::Zero(xs[0].size());
  for (const auto& x : xs) s += x.cast<double>();
  return s;
}

template <class Opt>
void check_gossip_sum() {
  const gossip_cut c = cut_gossip<Opt>(40, 30);
  std::vector<Eigen::VectorXf> x0;
  for (int r = 0; r < n; ++r) x0.push_back(harness::seeded_normal(gdim, 40, static_cast<std::uint32_t>(r)));
  const Eigen::VectorXd initial = sum_of(x0);
  const double bound = static_cast<double>(c.operations) * std::ldexp(1.0, -24) * 2 * c.largest;
  const double first = (sum_of(c.first_cut) - initial).cwiseAbs().maxCoeff();
  const double resumed = (sum_of(c.resumed_cut) - initial).cwiseAbs().maxCoeff();
  double spread = 0;  // the models must stay apart, or a half-applied interaction would not show
  for (const auto& x : c.first_cut)
    spread = std::max(spread, static_cast<double>((x - c.first_cut[0]).cwiseAbs().maxCoeff()));
  INFO("sum off by ", first, " at the first cut, ", resumed, " at the second; bound ", bound, " (", c.operations,
       " operations, |entries| <= ", c.largest, "); models up to ", spread, " apart");
  CHECK(spread > 100 * bound);
  CHECK(first <= bound);
  CHECK(resumed <= bound);
  for (std::size_t r = 0; r < n; ++r) {
    CAPTURE(r);
    CHECK(same_bits(c.loaded[r], c.first_cut[r]));     // load gives back the models saved at the cut
    CHECK(c.saved_after_load[r] == c.checkpoints[r]);  // and the whole state, byte for byte
  }
}

}  // namespace

TEST_CASE("pairwise gossip: the models saved at a cut keep the sum of the models, before and after a resume") {
  SUBCASE("ad_psgd") { check_gossip_sum<alg::ad_psgd<>>(); }
  SUBCASE("swarm_sgd<2>") { check_gossip_sum<alg::swarm_sgd<2>>(); }
}

TEST_CASE(
    "save() of an asynchronous optimizer outside a cut is a config_error saying to call quiesce() on every rank") {
  auto check = [](auto tag) {
    using opt_t = typename decltype(tag)::type;
    std::atomic<int> refused{0}, after_cut{0};
    distopt::run_threads(
        n,
        [&](distopt::transport_ref t) {
          opt_t opt(t, Eigen::VectorXf::Zero(n), {.learning_rate = 0.5f, .timeout = k_timeout});
          for (int s = 0; s < 3; ++s) opt.step(unit(t.rank()));
          try {
            (void)saved(opt);
          } catch (const distopt::config_error& e) {
            const std::string what = e.what();
            INFO(what);
            if (what.find("not at a consistent point") != std::string::npos &&
                what.find("call optimizer::quiesce() on every rank") != std::string::npos)
              ++refused;
          }
          opt.quiesce();
          CHECK_NOTHROW((void)saved(opt));
          opt.step(unit(t.rank()));  // a step after the cut ends it
          try {
            (void)saved(opt);
          } catch (const distopt::config_error&) {
            ++after_cut;
          }
          opt.finish();
        },
        k_threads);
    CHECK(refused == n);
    CHECK(after_cut == n);
  };
  SUBCASE("ssp_sgd<2>") { check(std::type_identity<alg::ssp_sgd<2>>{}); }
  SUBCASE("async_ps_sgd, two shards") { check(std::type_identity<alg::async_ps_sgd<>>{}); }
  SUBCASE("ad_psgd") { check(std::type_identity<alg::ad_psgd<>>{}); }
  SUBCASE("swarm_sgd<2>") { check(std::type_identity<alg::swarm_sgd<2>>{}); }
}

TEST_CASE("pairwise gossip: poll() after quiesce() ends the cut (it answers requests from after it)") {
  std::atomic<int> refused{0};
  distopt::run_threads(
      2,
      [&](distopt::transport_ref t) {
        alg::ad_psgd<> opt(t, Eigen::VectorXf::Zero(2), {.learning_rate = 0.5f, .timeout = k_timeout});
        opt.step(Eigen::VectorXf::Ones(2));
        opt.quiesce();
        opt.poll();
        try {
          (void)saved(opt);
        } catch (const distopt::config_error&) {
          ++refused;
        }
        opt.finish();
      },
      k_threads);
  CHECK(refused == 2);
}

TEST_CASE("a checkpoint of another configuration is refused by an asynchronous optimizer with a config_error") {
  // A synchronous checkpoint, and an SSP one, into AsySGD; an AD-PSGD one into SwarmSGD.
  std::vector<std::string> sync(n), ssp(n), adpsgd(n);
  distopt::run_threads(
      n,
      [&](distopt::transport_ref t) {
        const auto i = static_cast<std::size_t>(t.rank());
        const Eigen::VectorXf x0 = Eigen::VectorXf::Zero(n);
        const distopt::options o{.learning_rate = 0.5f, .timeout = k_timeout};
        alg::minibatch_sgd a(t, x0, o);
        sync[i] = saved(a);
        alg::ssp_sgd<2> b(t, x0, o);
        ssp[i] = saved(b);  // a freshly built optimizer is at a cut (the start)
        b.finish();
        alg::ad_psgd<> c(t, x0, o);
        adpsgd[i] = saved(c);
        c.finish();
      },
      k_threads);
  std::atomic<int> refused{0};
  distopt::run_threads(
      n,
      [&](distopt::transport_ref t) {
        const auto i = static_cast<std::size_t>(t.rank());
        const Eigen::VectorXf x0 = Eigen::VectorXf::Zero(n);
        const distopt::options o{.learning_rate = 0.5f, .timeout = k_timeout};
        auto expect_refused = [&](auto& opt, const std::string& bytes) {
          try {
            load(opt, bytes);
          } catch (const distopt::config_error& e) {
            if (std::string(e.what()).find("does not fit this optimizer: it was saved by") != std::string::npos)
              ++refused;
          }
        };
        alg::async_ps_sgd<> a(t, x0, o);
        expect_refused(a, sync[i]);
        expect_refused(a, ssp[i]);
        a.finish();
        alg::swarm_sgd<2> b(t, x0, o);
        expect_refused(b, adpsgd[i]);
        b.finish();
      },
      k_threads);
  CHECK(refused == 3 * n);
}

TEST_CASE("a stale-server checkpoint is refused where the staleness policy's staleness_aware_lr differs") {
  std::vector<std::string> plain(n);
  std::atomic<int> refused{0};
  distopt::run_threads(
      n,
      [&](distopt::transport_ref t) {
        const auto i = static_cast<std::size_t>(t.rank());
        const Eigen::VectorXf x0 = Eigen::VectorXf::Zero(n);
        const distopt::options o{.learning_rate = 0.5f, .timeout = k_timeout};
        alg::ssp_sgd<2> a(t, x0, o);
        plain[i] = saved(a);  // at a cut: freshly built
        a.finish();
        alg::ssp_sgd<2> b(t, x0, o, {}, {}, {.staleness_aware_lr = true});
        try {
          load(b, plain[i]);
        } catch (const distopt::config_error& e) {
          if (std::string(e.what()).find("staleness_aware_lr is false in the checkpoint, true here") !=
              std::string::npos)
            ++refused;
        }
        b.finish();
      },
      k_threads);
  CHECK(refused == n);
}
