#!/usr/bin/python3
"""bench/compare/allreduce_tcp_gloo.py: torch.distributed's gloo allreduce (float sum)
with the same sizes and timing rule as allreduce_tcp; run under scripts/distopt-launch,
whose DISTOPT_RANK / DISTOPT_WORLD_SIZE / DISTOPT_COORDINATOR it uses for the rendezvous.
Rank 0 prints "allreduce <bytes> <microseconds per call>"."""
import os
import sys
import time

import torch
import torch.distributed as dist

seconds = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 1.0
rank, size = int(os.environ["DISTOPT_RANK"]), int(os.environ["DISTOPT_WORLD_SIZE"])
dist.init_process_group("gloo", init_method="tcp://" + os.environ["DISTOPT_COORDINATOR"], rank=rank, world_size=size)
torch.set_num_threads(1)
for nbytes in (4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20):
    x = torch.ones(nbytes // 4, dtype=torch.float32)
    for _ in range(2):
        dist.all_reduce(x)
    start = time.perf_counter()
    dist.all_reduce(x)
    n = torch.tensor([min(20000, max(5, int(seconds / max(1e-7, time.perf_counter() - start))))])
    dist.broadcast(n, 0)
    start = time.perf_counter()
    for _ in range(int(n)):
        dist.all_reduce(x)
    us = (time.perf_counter() - start) / int(n) * 1e6
    if rank == 0:
        print(f"allreduce {nbytes} {us:.2f}", flush=True)
dist.destroy_process_group()
