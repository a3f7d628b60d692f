// bench/compare/allreduce_tcp_mpi: raw MPI_Allreduce (float sum, in place) with the
// same sizes and timing rule as allreduce_tcp, for bench/compare/allreduce_tcp.py,
// which runs it with `mpirun -np 2 --mca btl tcp,self`. Rank 0 prints
//   allreduce <bytes> <microseconds per call>

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  double seconds = 1.0;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::string(argv[i]) == "--seconds") seconds = std::strtod(argv[i + 1], nullptr);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  using clock = std::chrono::steady_clock;
  for (const std::size_t bytes : {std::size_t{4} << 10, std::size_t{64} << 10, std::size_t{1} << 20,
                                  std::size_t{16} << 20, std::size_t{64} << 20}) {
    std::vector<float> x(bytes / sizeof(float), 1.0f);
    const int count = static_cast<int>(x.size());
    for (int i = 0; i < 2; ++i) MPI_Allreduce(MPI_IN_PLACE, x.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    const auto probe = clock::now();
    MPI_Allreduce(MPI_IN_PLACE, x.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    double calls = seconds / std::max(1e-7, std::chrono::duration<double>(clock::now() - probe).count());
    int n = static_cast<int>(std::min(20000.0, std::max(5.0, calls)));
    MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);
    const auto start = clock::now();
    for (int i = 0; i < n; ++i) MPI_Allreduce(MPI_IN_PLACE, x.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    const double us = std::chrono::duration<double, std::micro>(clock::now() - start).count() / n;
    if (rank == 0) std::printf("allreduce %zu %.2f\n", bytes, us);
  }
  MPI_Finalize();
  return 0;
}
