// doctest main of the programs mpirun starts: every rank initialises MPI, runs the
// same test cases (which talk to each other), and reports its own failures; mpirun
// fails if any rank does.

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <distopt/transport/mpi.hpp>

int main(int argc, char** argv) {
  distopt::mpi_session mpi(argc, argv);
  doctest::Context context(argc, argv);
  return context.run();
}
