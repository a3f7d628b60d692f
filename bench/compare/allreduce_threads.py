#!/usr/bin/python3
"""bench/compare/allreduce_threads.py: the mean of a float vector over 2, 4 and 8 workers on
this machine: distopt's ring and its native shared-memory allreduce over the thread transport
(build/bench/allreduce_threads), next to Open MPI's MPI_Allreduce between processes over
shared memory (build/bench/allreduce_tcp_mpi under plain mpirun: the vader BTL), all
measured in this run; prints one table of microseconds per call, medians over --runs runs
(the systems taking turns), and the native allreduce's speed-up over each.

    bench/compare/allreduce_threads.py [build dir (default: build)] [--seconds S] [--runs K]

Goal (issue 18): native >= 2x MPI_Allreduce at 1 MiB and 16 MiB with 2 workers.
"""
import os
import statistics
import subprocess
import sys

from arguments import build, option, runs

seconds = option("--seconds", "0.5")
workers = [2, 4, 8]
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")


def run(command):
    """Runs a benchmark; returns its output lines as word lists, or [] if it failed."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"{command[0]}: skipped ({e})", file=sys.stderr)
        return []
    if out.returncode != 0:
        print(f"{' '.join(command)}: failed (status {out.returncode}):\n{out.stderr[-2000:]}", file=sys.stderr)
        return []
    return [line.split() for line in out.stdout.splitlines()]


samples = {}  # (method, workers, bytes) -> [us]
for _ in range(runs):
    for words in run([os.path.join(build, "bench", "allreduce_threads"), "--seconds", seconds,
                      "--workers", ",".join(map(str, workers))]):
        samples.setdefault((words[0], int(words[1]), int(words[2])), []).append(float(words[3]))
    for n in workers:
        for words in run(["mpirun", "-np", str(n), os.path.join(build, "bench", "allreduce_tcp_mpi"),
                          "--seconds", seconds]):
            if words[:1] == ["allreduce"]:
                samples.setdefault(("mpi", n, int(words[1])), []).append(float(words[2]))
if not samples:
    sys.exit("allreduce_threads.py: nothing ran; build targets allreduce_threads and allreduce_tcp_mpi")


def median(key):
    return statistics.median(samples[key]) if key in samples else None


print(f"float allreduce (mean; MPI: sum) on {os.cpu_count()} cores; us per call, median of {runs} runs")
print(f"{'workers':>7} {'size':>8} {'ring':>12} {'native':>12} {'MPI shm':>12} {'vs MPI':>8} {'vs ring':>8}")
sizes = sorted({b for (_, _, b) in samples})
for n in workers:
    for nbytes in sizes:
        label = f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"
        ring, native, mpi = (median((m, n, nbytes)) for m in ("ring", "native", "mpi"))
        cells = "".join(f" {c:>12.1f}" if c else f" {'-':>12}" for c in (ring, native, mpi))
        ratios = "".join(f" {c / native:>7.2f}x" if c and native else f" {'-':>8}" for c in (mpi, ring))
        print(f"{n:>7} {label:>8}{cells}{ratios}")
print("vs X: X's time / native's (above 1: the native allreduce is faster)")
