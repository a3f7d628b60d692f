#pragma once
// launch.hpp: runs an example's worker function on the transport named by its
// --transport option:
//   threads  (default) the workers are threads of this process (distopt::run_threads)
//   mpi      this process is one rank of mpirun/srun (distopt::mpi_transport); built
//            only when MPI was found (compile definition DISTOPT_HAVE_MPI)
//   tcp      this process is one rank of scripts/distopt-launch (distopt::tcp_transport,
//            configured from the environment the launcher sets); built only with
//            distopt::tcp (compile definition DISTOPT_HAVE_TCP)
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
#ifdef DISTOPT_HAVE_TCP
#include <optional>

#include <distopt/transport/tcp.hpp>
#endif

namespace examples {

class launcher {
 public:
  /// The values --transport accepts in this build.
  static std::vector<std::string> transports() {
    std::vector<std::string> names{"threads"};
#ifdef DISTOPT_HAVE_MPI
    names.push_back("mpi");
#endif
#ifdef DISTOPT_HAVE_TCP
    names.push_back("tcp");
#endif
    return names;
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
#ifdef DISTOPT_HAVE_TCP
    if (transport_ == "tcp") {
      tcp_ = distopt::tcp_transport::options_from_environment();  // refuses a missing variable now
      return;
    }
#endif
    if (transport_ != "threads")
      throw distopt::config_error("unknown --transport '" + transport_ + "'; this build has: " + joined_transports() +
                                  (transport_ == "mpi" ? " (rebuild with libopenmpi-dev installed for mpi)"
                                   : transport_ == "tcp"
                                       ? " (rebuild with libboost-dev and libssl-dev installed for tcp)"
                                       : ""));
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
#ifdef DISTOPT_HAVE_TCP
    if (tcp_) return tcp_->size;
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
#ifdef DISTOPT_HAVE_TCP
    if (tcp_) return tcp_->rank == 0;
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
#ifdef DISTOPT_HAVE_TCP
    if (tcp_) {  // one rendezvous per run: rank 0 listens again on the launcher's port
      if (workers != tcp_->size)
        throw distopt::config_error("--workers " + std::to_string(workers) + " but the launcher started " +
                                    std::to_string(tcp_->size) + " processes; pass -n " + std::to_string(workers) +
                                    " to scripts/distopt-launch or drop --workers");
      distopt::tcp_transport t(*tcp_);
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
#ifdef DISTOPT_HAVE_TCP
  std::optional<distopt::tcp_options> tcp_;
#endif
};

}  // namespace examples
