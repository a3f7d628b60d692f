// The transport conformance suite (transport_conformance.hpp) on mpi_transport,
// one rank per process under `mpirun -np N`, plus what is particular to MPI: tags
// that share an MPI tag, the native allreduce, and the configuration checks.
//
// World sizes up to N run on the first ranks of MPI_COMM_WORLD (a sub-communicator
// from MPI_Comm_split) while the others wait; larger ones are skipped with a message.

#include "transport_conformance.hpp"

#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <distopt/collective/ring_allreduce.hpp>
#include <distopt/transport/mpi.hpp>

namespace {

using namespace std::chrono_literals;

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world_size() {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

/// MPI_Barrier with a deadline (MPI's own has none), so a rank that is stuck
/// fails the test instead of hanging it.
void barrier(std::chrono::milliseconds deadline) {
  MPI_Request request = MPI_REQUEST_NULL;
  MPI_Ibarrier(MPI_COMM_WORLD, &request);
  const auto until = std::chrono::steady_clock::now() + deadline;
  for (int done = 0;;) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    if (std::chrono::steady_clock::now() > until) {
      MPI_Request_free(&request);
      throw distopt::transport_error("test barrier: the other ranks did not arrive in time");
    }
    std::this_thread::sleep_for(50us);
  }
}

/// Runs fn on ranks 0..n-1 of MPI_COMM_WORLD, each over its own mpi_transport;
/// every rank waits for all before returning, and rethrows what its fn threw.
class mpi_runner {
 public:
  static constexpr std::string_view name = "mpi";
  static constexpr bool all_ranks_in_process = false;

  explicit mpi_runner(std::chrono::milliseconds timeout) : timeout_(timeout) {}

  template <class F>
  void run(int n, F fn) {
    if (n > world_size()) {
      MESSAGE("world size ", n, " skipped: mpirun started ", world_size(), " ranks");
      return;
    }
    MPI_Comm sub = MPI_COMM_NULL;
    MPI_Comm_split(MPI_COMM_WORLD, world_rank() < n ? 0 : MPI_UNDEFINED, world_rank(), &sub);
    std::exception_ptr failure;
    if (sub != MPI_COMM_NULL) {
      try {
        distopt::mpi_transport t(sub, {.timeout = timeout_});
        fn(distopt::transport_ref(t));
      } catch (...) {
        failure = std::current_exception();
      }
      MPI_Comm_free(&sub);
    }
    barrier(5min);  // idle ranks wait here for the whole run
    if (failure) std::rethrow_exception(failure);
  }

 private:
  std::chrono::milliseconds timeout_;
};

static_assert(distopt::transport<distopt::mpi_transport>);
static_assert(distopt::transport_with_timeout<distopt::mpi_transport>);
static_assert(conformance::runner<mpi_runner>);

}  // namespace

TYPE_TO_STRING_AS("mpi", mpi_runner);
DISTOPT_TRANSPORT_CONFORMANCE(mpi_runner);

TEST_CASE("mpi transport: distopt tags that share an MPI tag remain separate ordered streams") {
  // The transport maps user tags modulo half of MPI_TAG_UB + 1, and reserved tags
  // likewise above that half: v and v + half collide on purpose here.
  void* attribute = nullptr;
  int found = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &attribute, &found);
  REQUIRE(found);
  const auto half = static_cast<std::uint32_t>((static_cast<long>(*static_cast<int*>(attribute)) + 1) / 2);
  const std::uint32_t reserved = distopt::detail::reserved_tag_base;
  REQUIRE(std::uint64_t{5} + half < reserved);  // both user tags stay user tags
  const distopt::tag pairs[][2] = {{distopt::tag{5}, distopt::tag{5 + half}},
                                   {distopt::tag{reserved + 3}, distopt::tag{reserved + 3 + half}}};
  mpi_runner(conformance::normal_timeout).run(world_size(), [&](distopt::transport_ref t) {
    const int n = t.size(), r = t.rank();
    constexpr int count = 10;
    conformance::pattern_buffer make;
    distopt::byte_buffer out;
    for (const auto& pair : pairs) {
      for (const int p : conformance::peers_of(r, n))
        for (int seq = 0; seq < count; ++seq)
          for (int k = 0; k < 2; ++k)
            t.send(p, pair[k],
                   make(r, p, 100 + static_cast<std::size_t>(seq), static_cast<std::uint64_t>(2 * seq + k)));
      // The stream sent second in each pair is received first.
      for (const int p : conformance::peers_of(r, n))
        for (int k = 1; k >= 0; --k) {
          int in_order = 0;
          for (int seq = 0; seq < count; ++seq) {
            t.recv(p, pair[k], out);
            in_order += conformance::same_bytes(
                out, make(p, r, 100 + static_cast<std::size_t>(seq), static_cast<std::uint64_t>(2 * seq + k)));
          }
          INFO("rank ", r, " from rank ", p, ", tag ", static_cast<std::uint32_t>(pair[k]));
          CHECK(in_order == count);
        }
      for (const int p : conformance::peers_of(r, n)) CHECK_FALSE(t.try_recv(p, pair[0], out));
    }
  });
}

TEST_CASE("mpi transport: the native allreduce agrees with an exact sum, on every rank") {
  // Inputs are small integers times 2^-10 (so float sums of up to 4 ranks are
  // exact) in the first half and irregular values whose float sums round in the second.
  constexpr std::size_t len = 100'003;  // odd, so MPI's and the ring's chunks differ
  auto value = [](int rank, std::size_t i) {
    const auto h = conformance::splitmix64(i * 31 + static_cast<std::uint64_t>(rank));
    if (i < len / 2) return static_cast<float>(static_cast<int>(h % 2001) - 1000) / 1024.0f;
    return static_cast<float>(static_cast<double>(h >> 11) * 0x1.0p-53 * 2.0 - 1.0) * 3.7f;
  };
  {
    distopt::mpi_transport t(MPI_COMM_WORLD, {.timeout = conformance::normal_timeout});
    const int n = t.size();
    std::vector<float> sum(len), mean(len), ring(len);
    for (std::size_t i = 0; i < len; ++i) sum[i] = mean[i] = ring[i] = value(t.rank(), i);
    t.allreduce_sum(sum);
    t.allreduce_mean(mean);
    distopt::collective::allreduce_workspace ws;
    distopt::collective::ring_allreduce(t, ring, distopt::collective::reduce_op::mean, ws);
    std::size_t exact_wrong = 0, bound_exceeded = 0, differs_from_ring = 0;
    for (std::size_t i = 0; i < len; ++i) {
      double exact = 0, magnitude = 0;
      for (int k = 0; k < n; ++k) {
        exact += value(k, i);
        magnitude += std::abs(static_cast<double>(value(k, i)));
      }
      // Recursive summation error bound: (n - 1) u sum |x_k|, u = 2^-24; the mean (times
      // a rounded 1/n) adds two roundings.
      const double u = std::numeric_limits<float>::epsilon() / 2;
      if (i < len / 2)
        exact_wrong += sum[i] != static_cast<float>(exact);
      else
        bound_exceeded += std::abs(sum[i] - exact) > (n - 1) * u * magnitude * 1.0001;
      bound_exceeded +=
          std::abs(mean[i] - exact / n) > ((n - 1) * u * magnitude + 2 * u * std::abs(exact)) / n * 1.0001;
      differs_from_ring += std::memcmp(&mean[i], &ring[i], sizeof(float)) != 0;
    }
    CHECK(exact_wrong == 0);
    CHECK(bound_exceeded == 0);
    // The mean is the sum times 1/n, bit for bit, in place and from a const input into another
    // array (the optimizer's path, through transport_ref): a power-of-two n scales the inputs
    // before the sum, which must not change a bit.
    std::vector<float> input(len), from(len);
    for (std::size_t i = 0; i < len; ++i) input[i] = value(t.rank(), i);
    distopt::mpi_transport native(MPI_COMM_WORLD, {.timeout = conformance::normal_timeout, .native_allreduce = true});
    CHECK(distopt::transport_ref(native).native_allreduce_mean(input, from));
    const float scale = 1.0f / static_cast<float>(n);
    std::size_t not_scaled_sum = 0, from_differs = 0;
    for (std::size_t i = 0; i < len; ++i) {
      const float expected = sum[i] * scale;
      not_scaled_sum += std::memcmp(&mean[i], &expected, sizeof(float)) != 0;
      from_differs += std::memcmp(&from[i], &mean[i], sizeof(float)) != 0;
    }
    CHECK(not_scaled_sum == 0);
    CHECK(from_differs == 0);
    CHECK(input[len - 1] == value(t.rank(), len - 1));  // read, never written
    // An input shorter than the output would be read past its end: refused on the rank that passes it.
    std::vector<float> longer(len + 1);
    CHECK_THROWS_WITH_AS(native.allreduce_sum(input, longer), doctest::Contains("same length"), distopt::config_error);
    CHECK_THROWS_WITH_AS(native.allreduce_mean(input, longer), doctest::Contains("same length"), distopt::config_error);
    // Every rank must hold the same result, or the workers' models would drift apart.
    std::vector<float> first(mean);
    MPI_Bcast(first.data(), static_cast<int>(len), MPI_FLOAT, 0, t.communicator());
    CHECK(std::memcmp(first.data(), mean.data(), len * sizeof(float)) == 0);
    if (t.rank() == 0)
      MESSAGE("native MPI_Allreduce mean vs ring mean, ", n, " ranks: ", differs_from_ring, " of ", len,
              " entries differ in their last bits (the addition orders differ)");
  }
  barrier(5min);
}

TEST_CASE("mpi transport: configuration errors are config_error with a message that says what to do") {
  const int n = world_size();
  try {
    distopt::mpi_transport t(MPI_COMM_WORLD, {.expected_size = n + 1});
    FAIL("a world size mismatch was accepted");
  } catch (const distopt::config_error& e) {
    INFO("what(): ", e.what());
    CHECK(conformance::contains(e.what(), "expects " + std::to_string(n + 1) + " workers"));
    CHECK(conformance::contains(e.what(), "has " + std::to_string(n) + " ranks"));
    CHECK(conformance::contains(e.what(), "mpirun -np " + std::to_string(n + 1)));
  }
  CHECK_THROWS_AS(distopt::mpi_transport(MPI_COMM_WORLD, {.expected_size = -1}), distopt::config_error);
  CHECK_THROWS_AS(distopt::mpi_transport(MPI_COMM_WORLD, {.timeout = 0ms}), distopt::config_error);
  CHECK_THROWS_AS(distopt::mpi_transport(MPI_COMM_NULL), distopt::config_error);
  // The matching size is accepted; a session made while MPI is up neither owns nor finalises it.
  distopt::mpi_transport t(MPI_COMM_WORLD, {.expected_size = n});
  CHECK(t.size() == n);
  distopt::mpi_session nested;
  CHECK_FALSE(nested.owns_mpi());
  CHECK(nested.thread_support() >= MPI_THREAD_FUNNELED);
}
