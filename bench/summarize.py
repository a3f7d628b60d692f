#!/usr/bin/env python3
"""Prints the ratios that bench_collective and bench_optimizer are read by.

  bench/summarize.py build/bench/bench_collective     # runs it (3 repetitions), then prints
  bench/summarize.py results.json                      # from --benchmark_out=results.json

bench_collective: per size and worker count, bus bandwidth / memcpy bandwidth (and the
                  cross-core handoff bandwidth of the run, which bounds any copying transport).
bench_optimizer:  per size and worker count, optimizer step time / hand loop time - 1,
                  against the plain hand loop and the one that also checks for Inf/NaN.
Medians over repetitions when there are several.
"""
import json
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict


def load(arg, extra):
    if arg.endswith(".json"):
        with open(arg) as f:
            return json.load(f)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([arg, "--benchmark_repetitions=3", "--benchmark_out=" + out.name,
                        "--benchmark_out_format=json", *extra], check=True)
        return json.load(open(out.name))


def medians(doc):
    """{run_name: {field: median}}: over the repetitions, or the median aggregates
    when only those were reported (--benchmark_report_aggregates_only)."""
    runs = defaultdict(lambda: defaultdict(list))
    aggregates = {}
    for b in doc["benchmarks"]:
        name = b.get("run_name", b["name"])
        fields = {k: v for k, v in b.items() if isinstance(v, (int, float))}
        if b.get("run_type", "iteration") == "iteration":
            for k, v in fields.items():
                runs[name][k].append(v)
        elif b.get("aggregate_name") == "median":
            aggregates[name] = fields
    out = {name: {k: statistics.median(v) for k, v in f.items()} for name, f in runs.items()}
    return {**aggregates, **out}


def size_label(floats):
    b = floats * 4
    return f"{b >> 20} MiB" if b >= 1 << 20 else f"{b >> 10} KiB"


def collective(m):
    def reference(kind):
        return {int(re.search(r"/(\d+)(/real_time)?$", n).group(1)): r["bytes_per_second"]
                for n, r in m.items() if n.startswith(f"reference/{kind}/")}
    memcpy, handoff = reference("memcpy"), reference("cross_core_handoff")
    rows = defaultdict(dict)
    for n, r in m.items():
        g = re.match(r"ring_allreduce/workers:(\d+)/(\d+)", n)
        if g:
            rows[int(g.group(2))][int(g.group(1))] = r["bus_bw"]
    workers = sorted({w for row in rows.values() for w in row})
    print("size      memcpy GB/s  handoff GB/s  " + "  ".join(f"busbw{w} GB/s  ratio{w}" for w in workers))
    for floats in sorted(rows):
        line = (f"{size_label(floats):9} {memcpy.get(floats, float('nan')) / 1e9:11.2f}  "
                f"{handoff.get(floats, float('nan')) / 1e9:12.2f}  ")
        for w in workers:
            bw = rows[floats].get(w, float("nan"))
            line += f"{bw / 1e9:11.2f}  {bw / memcpy.get(floats, float('nan')):6.2f}  "
        print(line)


def optimizer(m):
    rows = defaultdict(dict)
    for n, r in m.items():
        g = re.match(r"(minibatch_sgd_step|hand_loop|hand_loop_checked)/workers:(\d+)/(\d+)", n)
        if g:
            rows[(int(g.group(3)), int(g.group(2)))][g.group(1)] = r["real_time"]
    nan = float("nan")
    print("floats     workers  step us   hand us  overhead   checked us  overhead")
    for (floats, w), r in sorted(rows.items()):
        s, h, c = (r.get(k, nan) for k in ("minibatch_sgd_step", "hand_loop", "hand_loop_checked"))
        print(f"{floats:<10} {w:<8} {s / 1e3:8.1f}  {h / 1e3:8.1f}  {100 * (s / h - 1):+7.1f} %"
              f"  {c / 1e3:10.1f}  {100 * (s / c - 1):+7.1f} %")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    m = medians(load(sys.argv[1], sys.argv[2:]))
    if any(n.startswith("ring_allreduce/") for n in m):
        collective(m)
    if any(n.startswith("minibatch_sgd_step/") for n in m):
        optimizer(m)


if __name__ == "__main__":
    main()
