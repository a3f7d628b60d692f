#!/usr/bin/python3
"""bench/compare/gossip_threads.py: one exact gossip round (D-PSGD's: send the model to both
ring neighbours and form sum_j W_ij x_j) on the thread transport against its alpha-beta cost,
measured in this run by build/bench/bench_topology; medians over --runs runs.

The alpha-beta model is network_model's (transport/network_model.hpp): a worker's link sends
one message at a time and receives one at a time, so a ring allreduce of M bytes on n workers
costs 2(n-1) alpha + 2(n-1)/n M beta and a gossip round with d neighbours alpha + d M beta.
alpha and beta are fitted per worker count from the ring allreduce at 4 KiB and at 16 MiB
(the same transport, the same run); the table shows the gossip round, that prediction, and
their ratio.

    bench/compare/gossip_threads.py [build dir (default: build)] [--seconds S] [--runs K]

Goal (issue 18): a 16 MiB exact gossip round within 1.5x of its alpha-beta cost.
"""
import json
import os
import statistics
import subprocess

from arguments import build, option, runs

seconds = option("--seconds", "0.5")
small, sizes = 4 << 10, [1 << 20, 16 << 20]
floats = "|".join(str(b // 4) for b in [small] + sizes)

samples = {}  # (kind, workers, bytes) -> [seconds per round]
for _ in range(runs):
    out = subprocess.run([os.path.join(build, "bench", "bench_topology"), "--benchmark_format=json",
                          f"--benchmark_min_time={seconds}",
                          f"--benchmark_filter=^(gossip_exact/ring|ring_allreduce)/workers:[0-9]+/({floats})/"],
                         capture_output=True, text=True, check=True)
    for b in json.loads(out.stdout)["benchmarks"]:
        parts = b["run_name"].split("/")  # gossip_exact/ring/workers:2/4194304, ring_allreduce/workers:2/4194304
        at = next(i for i, p in enumerate(parts) if p.startswith("workers:"))
        kind = "gossip" if parts[0] == "gossip_exact" else "ring"
        unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
        samples.setdefault((kind, int(parts[at][8:]), 4 * int(parts[at + 1])), []).append(b["real_time"] * unit)

def median(key):
    return statistics.median(samples[key])


print(f"exact gossip round on a ring, thread transport, {os.cpu_count()} cores; ms, median of {runs} runs")
print(f"{'workers':>7} {'size':>7} {'gossip':>9} {'alpha-beta':>10} {'ratio':>7} {'ring allreduce':>14}"
      f" {'alpha us':>8} {'beta GB/s':>9}")
for n in sorted({w for (_, w, _) in samples}):
    # 2(n-1) alpha + 2(n-1)/n M beta at two sizes -> alpha, beta
    a, b = 2 * (n - 1), 2 * (n - 1) / n
    t_small, t_large = median(("ring", n, small)), median(("ring", n, sizes[-1]))
    beta = (t_large - t_small) / (b * (sizes[-1] - small))
    alpha = (t_small - b * small * beta) / a
    degree = 1 if n == 2 else 2
    for m in sizes:
        gossip, predicted = median(("gossip", n, m)), alpha + degree * m * beta
        print(f"{n:>7} {m >> 20:>3} MiB {gossip * 1e3:>9.2f} {predicted * 1e3:>10.2f} {gossip / predicted:>6.2f}x"
              f" {median(('ring', n, m)) * 1e3:>14.2f} {alpha * 1e6:>8.1f} {1 / beta / 1e9:>9.2f}")
print("alpha-beta: alpha + d M beta (d = 1 neighbour for 2 workers, else 2), alpha and beta fitted from the ring")
