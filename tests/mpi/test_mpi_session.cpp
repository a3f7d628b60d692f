// mpi_transport and mpi_session without mpirun: constructing a transport before
// MPI is initialised, or after it is finalised, is a config_error that says what to
// do; a session started here initialises MPI (a world of one) and finalises it.

#include <doctest/doctest.h>

#include <string>

#include <distopt/transport/mpi.hpp>

namespace {
bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }
}  // namespace

TEST_CASE("mpi_session: no transport before MPI starts or after it ends; a session starts and ends it") {
  int flag = 1;
  MPI_Initialized(&flag);
  REQUIRE_FALSE(flag);  // this program must run without mpirun and without MPI_Init

  try {
    distopt::mpi_transport t;
    FAIL("a transport was made without MPI");
  } catch (const distopt::config_error& e) {
    INFO("what(): ", e.what());
    CHECK(contains(e.what(), "MPI is not initialised"));
    CHECK(contains(e.what(), "mpi_session"));
  }

  {
    distopt::mpi_session mpi;
    CHECK(mpi.owns_mpi());
    CHECK(mpi.thread_support() >= MPI_THREAD_FUNNELED);
    distopt::mpi_transport t;
    CHECK(t.rank() == 0);
    CHECK(t.size() == 1);
    // A world of one can still send to itself.
    const std::string text = "to myself";
    distopt::byte_buffer out;
    t.send(0, distopt::tag{3}, std::as_bytes(std::span(text.data(), text.size())));
    t.recv(0, distopt::tag{3}, out);
    CHECK(std::string(reinterpret_cast<const char*>(out.data()), out.size()) == text);
    CHECK_FALSE(t.try_recv(0, distopt::tag{3}, out));
  }  // the transport, then the session (MPI_Finalize)

  MPI_Finalized(&flag);
  CHECK(flag);
  CHECK_THROWS_AS(distopt::mpi_transport{}, distopt::config_error);
  CHECK_THROWS_WITH_AS(distopt::mpi_session{}, doctest::Contains("already been finalised"), distopt::config_error);
}
