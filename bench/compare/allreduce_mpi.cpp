// bench/compare/allreduce_mpi: the mean of a float vector over all MPI ranks, several ways,
// in one run, so the results read as ratios:
//   raw     MPI_Allreduce(MPI_IN_PLACE, ..., MPI_SUM) alone: the reference
//   sum     distopt::mpi_transport::allreduce_sum: the same through the transport
//   mean    distopt::mpi_transport::allreduce_mean, in place
//   raw in>out   MPI_Allreduce(source, v, ...): out of place, the reference for
//   mean in>out  transport_ref::native_allreduce_mean(source, v): the native path the
//                optimizer takes (it averages a const gradient into a scratch vector)
//   ring    distopt::collective::ring_allreduce over mpi_transport (point-to-point,
//           bit-reproducible, the same code as on threads and TCP)
// Sizes 4 KiB to 64 MiB (x4). For each size the six run in turn, once per
// repetition, in a rotating order; a call's time is the slowest rank's (barrier before), and the table
// shows the median over repetitions. Rank 0 prints it.
//
//   mpirun -np 4 build/bench/allreduce_mpi [--max-bytes N] [--seconds S]
//   bench/compare/allreduce_mpi.sh [build dir]        # 2 and 4 ranks

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <distopt/collective/ring_allreduce.hpp>
#include <distopt/transport/mpi.hpp>

namespace {

struct settings {
  std::size_t min_bytes = std::size_t{4} << 10;
  std::size_t max_bytes = std::size_t{64} << 20;
  double seconds = 1.0;  // budget per size, for all methods together
};

settings parse(int argc, char** argv) {
  settings s;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    if (key == "--max-bytes")
      s.max_bytes = std::strtoull(argv[i + 1], nullptr, 10);
    else if (key == "--seconds")
      s.seconds = std::strtod(argv[i + 1], nullptr);
    else
      throw distopt::config_error("allreduce_mpi: unknown option " + key + "; use --max-bytes N or --seconds S");
  }
  if (s.max_bytes < s.min_bytes || !(s.seconds > 0))
    throw distopt::config_error("allreduce_mpi: need --max-bytes >= 4096 and --seconds > 0");
  return s;
}

double slowest_rank(double seconds) {
  double max = 0;
  MPI_Allreduce(&seconds, &max, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return max;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string human_bytes(std::size_t b) {
  return b >= (std::size_t{1} << 20) ? std::to_string(b >> 20) + " MiB" : std::to_string(b >> 10) + " KiB";
}

std::string human_time(double s) {
  char text[32];
  if (s < 1e-3)
    std::snprintf(text, sizeof text, "%.1f us", s * 1e6);
  else
    std::snprintf(text, sizeof text, "%.2f ms", s * 1e3);
  return text;
}

}  // namespace

int main(int argc, char** argv) try {
  distopt::mpi_session mpi(argc, argv);
  const settings s = parse(argc, argv);
  distopt::mpi_transport t(MPI_COMM_WORLD, {.native_allreduce = true});
  const int n = t.size();
  distopt::collective::allreduce_workspace ring_workspace;

  enum method { raw, sum, mean, raw_from, mean_from, ring, methods };
  auto call = [&](method m, std::vector<float>& v, const std::vector<float>& source) {
    const int count = static_cast<int>(v.size());
    if (m == raw)
      MPI_Allreduce(MPI_IN_PLACE, v.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    else if (m == sum)
      t.allreduce_sum(v);
    else if (m == mean)
      t.allreduce_mean(v);
    else if (m == raw_from)
      MPI_Allreduce(source.data(), v.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    else if (m == mean_from)
      (void)distopt::transport_ref(t).native_allreduce_mean(source, v);
    else
      distopt::collective::ring_allreduce(t, v, distopt::collective::reduce_op::mean, ring_workspace);
  };
  // Times one call of m on a fresh copy of `source` (the copy is not timed).
  auto timed = [&](method m, std::vector<float>& v, const std::vector<float>& source) {
    std::copy(source.begin(), source.end(), v.begin());
    MPI_Barrier(MPI_COMM_WORLD);
    const auto start = std::chrono::steady_clock::now();
    call(m, v, source);
    return slowest_rank(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  };

  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int version_length = 0;
  MPI_Get_library_version(version, &version_length);
  const std::string library(version,
                            static_cast<std::size_t>(std::find(version, version + version_length, ',') - version));
  if (t.rank() == 0) {
    std::printf("\nallreduce (mean of floats), %d ranks, %s; median time of one call, slowest rank\n", n,
                library.c_str());
    std::printf("busbw = 2(n-1)/n * bytes / time\n\n");
    std::printf("%8s | %10s %7s | %10s %6s | %10s %6s | %10s | %10s %6s | %10s %7s %6s | %5s\n", "size", "raw MPI",
                "busbw", "sum", "/raw", "mean", "/raw", "raw in>out", "mean in>out", "/raw", "ring", "busbw", "/raw",
                "reps");
    std::printf("%s\n", std::string(8 + 3 + 18 + 3 + 17 + 3 + 17 + 3 + 10 + 3 + 17 + 3 + 25 + 3 + 5, '-').c_str());
  }
  for (std::size_t bytes = s.min_bytes; bytes <= s.max_bytes; bytes *= 4) {
    const std::size_t len = bytes / sizeof(float);
    std::vector<float> source(len), v(len);
    for (std::size_t i = 0; i < len; ++i)
      source[i] = static_cast<float>((i * 7 + static_cast<std::size_t>(t.rank())) % 101) * 0.01f;
    double warm = 0;
    for (int m = 0; m < methods; ++m) warm += timed(static_cast<method>(m), v, source);  // warm-up, and an estimate
    const int reps = std::clamp(static_cast<int>(s.seconds / std::max(warm, 1e-9)), 5, 1000);  // the same on every rank
    std::vector<double> times[methods];
    for (int r = 0; r < reps; ++r)
      for (int k = 0; k < methods; ++k) {  // each repetition starts with the next method: no place is favoured
        const int m = (k + r) % methods;
        times[m].push_back(timed(static_cast<method>(m), v, source));
      }
    if (t.rank() != 0) continue;
    double med[methods];
    for (int m = 0; m < methods; ++m) med[m] = median(times[m]);
    auto busbw = [&](double sec) { return 2.0 * (n - 1) / n * static_cast<double>(bytes) / sec / 1e9; };
    std::printf("%8s | %10s %5.2f G | %10s %5.2fx | %10s %5.2fx | %10s | %10s %5.2fx | %10s %5.2f G %5.2fx | %5d\n",
                human_bytes(bytes).c_str(), human_time(med[raw]).c_str(), busbw(med[raw]), human_time(med[sum]).c_str(),
                med[sum] / med[raw], human_time(med[mean]).c_str(), med[mean] / med[raw],
                human_time(med[raw_from]).c_str(), human_time(med[mean_from]).c_str(), med[mean_from] / med[raw_from],
                human_time(med[ring]).c_str(), busbw(med[ring]), med[ring] / med[raw], reps);
    std::fflush(stdout);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "allreduce_mpi: %s\n", e.what());
  return 1;
}
