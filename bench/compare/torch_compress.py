#!/usr/bin/python3
"""distopt's compressors next to the same operations written with torch ops, in one run.

  bench/compare/torch_compress.py [build/bench] [--threads N]

Runs bench_compress_sparsifiers and bench_compress_quantizers (Google Benchmark, JSON)
for the encoders of 16M standard-normal floats, then times the torch versions on an
input of the same size and distribution (median of several calls after a warm-up):
  top_k 1%     torch.topk(|x|, k) and a gather of the kept values (exact top-k)
  qsgd<8>      per-bucket (512) L2 norm, stochastic rounding to 127 levels, int8 codes
  sign         x >= 0 packed 8 per byte
  scaled_sign  the same plus the scale ||x||_1 / n
Torch runs with --threads threads (default 1: distopt's encoders are single-threaded).
Prints milliseconds per call for each and the speed-up of distopt over torch.
Needs python3-torch (Debian); /usr/bin/python3 so that Debian's torch is the one found.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

N = 1 << 24
BUCKET = 512
LEVELS = 127


def distopt_times(bench_dir):
    """{name: ms per encode} from the two compressor benchmarks."""
    wanted = {
        ("bench_compress_sparsifiers", "encode/top_k_1pct/16777216"): "top_k 1%",
        ("bench_compress_sparsifiers", "encode/sign/16777216"): "sign",
        ("bench_compress_sparsifiers", "encode/scaled_sign/16777216"): "scaled_sign",
        ("bench_compress_quantizers", "encode/qsgd<8>/16777216"): "qsgd<8>",
    }
    out = {}
    for binary in ("bench_compress_sparsifiers", "bench_compress_quantizers"):
        names = [n for (b, n) in wanted if b == binary]
        regex = "^(" + "|".join(names) + ")$"
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            subprocess.run([os.path.join(bench_dir, binary), "--benchmark_filter=" + regex,
                            "--benchmark_repetitions=3", "--benchmark_report_aggregates_only=true",
                            "--benchmark_out=" + f.name, "--benchmark_out_format=json"],
                           check=True, stdout=subprocess.DEVNULL)
            doc = json.load(open(f.name))
        for b in doc["benchmarks"]:
            if b.get("aggregate_name") != "median":
                continue
            key = (binary, b["run_name"])
            if key in wanted:
                scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
                out[wanted[key]] = b["real_time"] * scale
    return out


def timed(fn, repeats=7):
    fn()  # warm-up: allocations, first touch
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def torch_times(x):
    k = max(1, -(-N // 100))
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)

    def top_k():
        idx = torch.topk(x.abs(), k, sorted=False).indices
        return idx, x[idx]

    def qsgd8():
        b = x.view(-1, BUCKET)
        norms = b.norm(dim=1, keepdim=True)
        scaled = b.abs() / norms * LEVELS
        low = scaled.floor()
        level = low + (torch.rand_like(scaled) < scaled - low).float()
        return norms, (level * b.sign()).to(torch.int8)

    def pack(bits):
        return (bits.view(-1, 8).to(torch.uint8) * weights).sum(dim=1, dtype=torch.uint8)

    def sign():
        return pack(x >= 0)

    def scaled_sign():
        return x.abs().sum() / N, pack(x >= 0)

    return {"top_k 1%": timed(top_k), "qsgd<8>": timed(qsgd8), "sign": timed(sign),
            "scaled_sign": timed(scaled_sign)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench_dir", nargs="?", default="build/bench")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    mine = distopt_times(a.bench_dir)
    theirs = torch_times(torch.randn(N))
    print(f"encode of {N} floats (64 MiB); torch {torch.__version__} with {a.threads} thread(s)")
    print(f"{'operation':<12} {'distopt ms':>11} {'torch ms':>10} {'distopt speed-up':>17}")
    for op in ("top_k 1%", "qsgd<8>", "sign", "scaled_sign"):
        if op not in mine:
            sys.exit(f"torch_compress: {op} missing from the distopt benchmarks in {a.bench_dir}")
        print(f"{op:<12} {mine[op]:>11.2f} {theirs[op]:>10.2f} {theirs[op] / mine[op]:>16.1f}x")


if __name__ == "__main__":
    main()
