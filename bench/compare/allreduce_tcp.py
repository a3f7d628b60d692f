#!/usr/bin/python3
"""bench/compare/allreduce_tcp.py: float allreduce between 2 processes on loopback,
4 KiB to 64 MiB, through distopt's ring over tcp_transport, Open MPI over TCP
(`mpirun --mca btl tcp,self`, raw MPI_Allreduce) and PyTorch's gloo backend, next to
the loopback floor, all measured in this run; prints one table of microseconds per call
(medians over --runs runs, the systems taking turns) and distopt's ratios.

    bench/compare/allreduce_tcp.py [build dir (default: build)] [--seconds S] [--runs K]
                                   [--baseline PROGRAM]

The floor comes from allreduce_tcp's raw blocking socket (TCP_NODELAY, no framing):
"floor" is half a ping-pong of the allreduce's size, the time to move it one way on one
stream; "exchange" moves it both ways at once, which a 2-rank allreduce must do (each
rank sends and receives its size). --baseline runs another build of allreduce_tcp (an
older tree) as one more column. Goals (issue 18): 1 MiB and 16 MiB >= 1.2x both Open MPI
and gloo; 16 MiB within 1.5x the floor; 4 KiB within 2x the 8-byte round trip.
"""
import os
import statistics
import subprocess
import sys

from arguments import build, here, option, root, runs

seconds = option("--seconds", "1")
baseline = option("--baseline", None)
launch = [os.path.join(root, "scripts", "distopt-launch"), "-n", "2", "--"]
mpi_env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
program = os.path.join(build, "bench", "allreduce_tcp")
systems = {"distopt": launch + [program, "--seconds", seconds]}
if baseline:
    systems["baseline"] = launch + [baseline, "--seconds", seconds, "--floor", "0"]
systems["Open MPI (tcp)"] = ["mpirun", "-np", "2", "--mca", "btl", "tcp,self",
                             os.path.join(build, "bench", "allreduce_tcp_mpi"), "--seconds", seconds]
systems["gloo"] = launch + ["/usr/bin/python3", os.path.join(here, "allreduce_tcp_gloo.py"), "--seconds", seconds]


def run(name, command):
    """Runs a benchmark; returns {(measure, bytes): microseconds}, or None if it failed."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=600, env=mpi_env)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"{name}: skipped ({e})", file=sys.stderr)
        return None
    if out.returncode != 0:
        print(f"{name}: failed (status {out.returncode}):\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    values = {}
    for line in out.stdout.splitlines():
        words = line.replace("[rank 0] ", "").split()
        if len(words) == 3:  # allreduce, floor, exchange: <bytes> <us>
            values[(words[0], int(words[1]))] = float(words[2])
        elif len(words) == 2:  # rtt, raw_rtt: <us>
            values[(words[0], 0)] = float(words[1])
    return values


samples = {name: [] for name in systems}
for _ in range(runs):
    for name, command in systems.items():
        result = run(name, command)
        if result:
            samples[name].append(result)
if not samples["distopt"]:
    sys.exit("allreduce_tcp.py: the distopt run failed; build targets allreduce_tcp and allreduce_tcp_mpi")


def median(name, key):
    got = [s[key] for s in samples[name] if key in s]
    return statistics.median(got) if got else None


peers = [s for s in systems if s != "distopt" and samples[s]]
print(f"float allreduce, 2 processes on loopback, {os.cpu_count()} cores; us per call, median of "
      f"{len(samples['distopt'])} runs")
columns = ["distopt"] + peers + ["floor", "exchange"]
print(f"{'size':>8} " + " ".join(f"{c:>14}" for c in columns) + "".join(
    f" {'vs ' + p:>18}" for p in peers) + f" {'/ floor':>9} {'/ exchange':>11}")
for nbytes in sorted(b for (m, b) in samples["distopt"][0] if m == "allreduce"):
    label = f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"
    ours = median("distopt", ("allreduce", nbytes))
    cells = [median(p, ("allreduce", nbytes)) for p in ["distopt"] + peers]
    cells += [median("distopt", ("floor", nbytes)), median("distopt", ("exchange", nbytes))]
    line = f"{label:>8} " + " ".join(f"{c:>14.1f}" if c else f"{'-':>14}" for c in cells)
    line += "".join(f" {c / ours:>17.2f}x" if c else f" {'-':>18}" for c in cells[1:1 + len(peers)])
    line += "".join(f" {ours / c:>{w}.2f}x" if c else f" {'-':>{w + 1}}" for c, w in zip(cells[-2:], (8, 10)))
    print(line)
rtt, raw_rtt = median("distopt", ("rtt", 0)), median("distopt", ("raw_rtt", 0))
four_k = median("distopt", ("allreduce", 4096))
if rtt and four_k:
    print(f"8-byte round trip: {rtt:.1f} us through tcp_transport ({raw_rtt:.1f} us on the raw socket); "
          f"4 KiB allreduce = {four_k / rtt:.2f}x the transport's round trip")
print("vs X: X's time / distopt's (above 1: distopt is faster); / floor, / exchange: distopt's time over the "
      "raw socket's")
