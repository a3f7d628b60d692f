#pragma once
// launch.hpp: runs an example's worker function on the transport named by its
// --transport option:
//   threads  (default) the workers are threads of this process (distopt::run_threads)
//   mpi      this process is one rank of mpirun/srun (distopt::mpi_transport); built
//            only when MPI was found (compile definition DISTOPT_HAVE_MPI)
// Another transport is one more name in transports() and one more branch in run().
//
//   examples::launcher launch("mpi", argc, argv);  // starts MPI (and stops it at the end)
//   const int workers = launch.workers(0);         // 0: the default (4 threads, or every MPI rank)
//   launch.run(workers, [&](distopt::transport_ref t) { ... });
//   if (launch.primary()) print_summary();         // once, not once per rank

#include <string>
#include <utility>
#include <vector>

#include <distopt/core/errors.hpp>
#include <distopt/core/transport_ref.hpp>
#include <distopt/transport/thread.hpp>
#ifdef DISTOPT_HAVE_MPI
#include <optional>

#include <distopt/transport/mpi.hpp>
#endif

namespace examples {

class launcher {
 public:
  /// The values --transport accepts in this build.
  static std::vector<std::string> transports() {
#ifdef DISTOPT_HAVE_MPI
    return {"threads", "mpi"};
#else
    return {"threads"};
#endif
  }

  /// Starts MPI for "mpi" (argc and argv go to MPI_Init_thread). Throws config_error
  /// for a transport this build does not have.
  launcher(std::string transport, [[maybe_unused]] int& argc, [[maybe_unused]] char**& argv)
      : transport_(std::move(transport)) {
#ifdef DISTOPT_HAVE_MPI
    if (transport_ == "mpi") {
      mpi_.emplace(argc, argv);
      return;
    }
#endif
    if (transport_ != "threads")
      throw distopt::config_error("unknown --transport '" + transport_ + "'; this build has: " + joined_transports() +
                                  (transport_ == "mpi" ? " (rebuild with libopenmpi-dev installed for mpi)" : ""));
  }

  const std::string& transport() const noexcept { return transport_; }

  /// The number of workers: `requested`, or if 0 the default (4 threads; under MPI,
  /// every rank). Under MPI a requested number must equal the number of ranks (run checks).
  int workers(int requested) const {
    if (requested != 0) return requested;
#ifdef DISTOPT_HAVE_MPI
    if (mpi_) {
      int ranks = 0;
      MPI_Comm_size(MPI_COMM_WORLD, &ranks);
      return ranks;
    }
#endif
    return 4;
  }

  /// True in the one process that prints results: always with threads, rank 0 under MPI.
  bool primary() const {
#ifdef DISTOPT_HAVE_MPI
    if (mpi_) {
      int rank = 0;
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      return rank == 0;
    }
#endif
    return true;
  }

  /// Runs fn(transport_ref) on every worker: `workers` threads here, or this rank once.
  template <class F>
  void run(int workers, F&& fn) const {
#ifdef DISTOPT_HAVE_MPI
    if (mpi_) {
      distopt::mpi_transport t(MPI_COMM_WORLD, {.expected_size = workers});
      fn(distopt::transport_ref(t));
      return;
    }
#endif
    distopt::run_threads(workers, std::forward<F>(fn));
  }

 private:
  static std::string joined_transports() {
    std::string all;
    for (const auto& name : transports()) all += (all.empty() ? "" : ", ") + name;
    return all;
  }

  std::string transport_;
#ifdef DISTOPT_HAVE_MPI
  std::optional<distopt::mpi_session> mpi_;
#endif
};

}  // namespace examples
