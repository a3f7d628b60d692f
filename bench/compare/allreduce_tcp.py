#!/usr/bin/python3
"""bench/compare/allreduce_tcp.py: float allreduce between 2 processes on loopback,
4 KiB to 64 MiB, through distopt's ring over tcp_transport, Open MPI over TCP
(`mpirun --mca btl tcp,self`, raw MPI_Allreduce) and PyTorch's gloo backend, all
measured in this run; prints time per call, bus bandwidth (for 2 ranks, bytes / time)
and distopt's speed-up over each, plus the transport's 1-byte round trip.

    bench/compare/allreduce_tcp.py [build dir (default: build)] [--seconds S]

Use a Release build. Targets (issue 7): >= 1.0x Open MPI over TCP and >= 5x gloo from
1 MiB up; a 4 KiB allreduce within 3x the round trip.
"""
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
args = sys.argv[1:]
build = args.pop(0) if args and not args[0].startswith("--") else os.path.join(root, "build")
seconds = args[args.index("--seconds") + 1] if "--seconds" in args else "1"
launch = [os.path.join(root, "scripts", "distopt-launch"), "-n", "2", "--"]


def run(name, command, env=None):
    """Runs a benchmark; returns ({bytes: microseconds}, rtt or None), or None if it failed."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"{name}: skipped ({e})", file=sys.stderr)
        return None
    if out.returncode != 0:
        print(f"{name}: failed (status {out.returncode}):\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    times, rtt = {}, None
    for line in out.stdout.splitlines():
        words = line.replace("[rank 0] ", "").split()
        if words[:1] == ["allreduce"]:
            times[int(words[1])] = float(words[2])
        elif words[:1] == ["rtt"]:
            rtt = float(words[1])
    return times, rtt


results = {}
program = os.path.join(build, "bench", "allreduce_tcp")
results["distopt"] = run("distopt", launch + [program, "--seconds", seconds])
mpi_env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
results["Open MPI (tcp)"] = run("Open MPI", ["mpirun", "-np", "2", "--mca", "btl", "tcp,self",
                                             os.path.join(build, "bench", "allreduce_tcp_mpi"), "--seconds", seconds],
                                env=mpi_env)
results["gloo"] = run("gloo", launch + ["/usr/bin/python3", os.path.join(here, "allreduce_tcp_gloo.py"),
                                        "--seconds", seconds])

if not results["distopt"]:
    sys.exit("allreduce_tcp.py: the distopt run failed; build target allreduce_tcp (needs distopt::tcp)")
systems = [s for s in results if results[s]]
print(f"float allreduce, 2 processes on loopback, {os.cpu_count()} cores; us per call (bus bandwidth GB/s)")
header = f"{'size':>8} " + " ".join(f"{s:>24}" for s in systems) + "".join(
    f" {'vs ' + s:>16}" for s in systems[1:])
print(header)
for nbytes in sorted(results["distopt"][0]):
    label = f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"
    cells, ours = [], results["distopt"][0][nbytes]
    for s in systems:
        us = results[s][0].get(nbytes)
        cells.append(f"{us:>12.1f} ({nbytes / us / 1e3:>6.2f} GB/s)" if us else f"{'-':>24}")
    ratios = [f"{results[s][0][nbytes] / ours:>15.2f}x" if nbytes in results[s][0] else f"{'-':>16}"
              for s in systems[1:]]
    print(f"{label:>8} " + " ".join(f"{c:>24}" for c in cells) + " " + " ".join(ratios))
rtt = results["distopt"][1]
if rtt:
    four_k = results["distopt"][0].get(4096)
    print(f"distopt 1-byte round trip through tcp_transport: {rtt:.1f} us; 4 KiB allreduce = {four_k / rtt:.2f}x that")
