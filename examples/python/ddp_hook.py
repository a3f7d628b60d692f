#!/usr/bin/env python3
"""torch DDP with distopt's communication hooks: the LeNet-5-like CNN of
examples/torch/fashion_mnist_cnn.cpp on Fashion-MNIST, 2 processes over gloo on this machine
(torch.multiprocessing), trained once per hook, and for each one line

    RESULT <hook> accuracy <test accuracy %> bytes <bytes sent per worker>

Hooks: allreduce (torch's default: DDP's own averaging), torch-powersgd (torch's PowerSGD
hook, same rank as distopt's, compressing from iteration --torch-powersgd-start), and
distopt's hooks (python/distopt/hooks.py): distopt-ef-topk (top-1% + error feedback),
distopt-powersgd (rank 2), distopt-ef-sign (scaled sign + error feedback), distopt-qsgd
(4 bits). Bytes are counted the same way for every hook, at the collectives they call
(dist.all_reduce of b bytes: 2 (W-1)/W b, a ring; dist.all_gather of a b-byte piece: (W-1) b).

    PYTHONPATH=build/python /usr/bin/python3 examples/python/ddp_hook.py --epochs 2 --train-samples 20000
"""

import argparse
import datetime
import os
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.nn.parallel import DistributedDataParallel as DDP

import distopt
import distopt.hooks

WORLD = 2


class LeNet(torch.nn.Module):
    """28 x 28 -> conv 5x5 (6, padded) -> pool -> conv 5x5 (16) -> pool -> 400 -> 120 -> 84 -> 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = torch.nn.Conv2d(6, 16, 5)
        self.fc1 = torch.nn.Linear(16 * 5 * 5, 120)
        self.fc2 = torch.nn.Linear(120, 84)
        self.fc3 = torch.nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


def hook_for(name, args):
    """(state, hook) of a hook name."""
    if name == "allreduce":
        return None, default_hooks.allreduce_hook
    if name == "torch-powersgd":
        state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=args.rank,
                                            start_powerSGD_iter=args.torch_powersgd_start, random_seed=args.seed)
        return state, powerSGD_hook.powerSGD_hook
    states = {
        "distopt-ef-topk": lambda: distopt.hooks.ef_topk(ratio=0.01, seed=args.seed),
        "distopt-powersgd": lambda: distopt.hooks.powersgd(rank=args.rank, seed=args.seed),
        "distopt-ef-sign": lambda: distopt.hooks.ef_sign(seed=args.seed),
        "distopt-qsgd": lambda: distopt.hooks.qsgd(bits=4, seed=args.seed),
    }
    if name not in states:
        raise SystemExit(f"ddp_hook.py: unknown hook '{name}'; choose from allreduce, torch-powersgd, "
                         + ", ".join(states))
    return states[name](), distopt.hooks.allgather_hook


class ByteMeter:
    """Counts the bytes this rank sends through dist.all_reduce and dist.all_gather (ring model)."""

    def __init__(self):
        self.bytes = 0
        all_reduce, all_gather = dist.all_reduce, dist.all_gather

        def metered_all_reduce(tensor, *args, **kwargs):
            world = dist.get_world_size(kwargs.get("group"))
            self.bytes += 2 * (world - 1) * tensor.numel() * tensor.element_size() // world
            return all_reduce(tensor, *args, **kwargs)

        def metered_all_gather(tensors, tensor, *args, **kwargs):
            self.bytes += (dist.get_world_size(kwargs.get("group")) - 1) * tensor.numel() * tensor.element_size()
            return all_gather(tensors, tensor, *args, **kwargs)

        dist.all_reduce, dist.all_gather = metered_all_reduce, metered_all_gather


def load(split, samples):
    features, labels = distopt.load_fashion_mnist(split)
    if samples:
        features, labels = features[:samples], labels[:samples]
    x = (torch.from_numpy(features).view(-1, 1, 28, 28) - 0.2860) / 0.3530
    return x, torch.from_numpy(labels)


def evaluate(model, x, y):
    with torch.no_grad():
        correct = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(y), 1000))
    return correct / len(y)


def worker(rank, args, store):
    torch.set_num_threads(1)  # one core per process
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    meter = ByteMeter()
    train_x, train_y = load("train", args.train_samples)
    test_x, test_y = load("test", 0)
    shard = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(args.seed))[rank::WORLD]
    steps = len(shard) // args.batch
    results = []
    for name in args.hooks.split(","):
        state, hook = hook_for(name, args)
        torch.manual_seed(args.seed)  # the same initial model for every hook
        model = LeNet()
        ddp = DDP(model)
        ddp.register_comm_hook(state, hook)
        sgd = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=args.momentum)
        # Cosine decay to 0 over the run, as examples/torch/fashion_mnist_cnn.cpp.
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=args.epochs * steps)
        meter.bytes = 0
        start = time.perf_counter()
        if rank == 0:
            print(f"\n{name}", flush=True)
        for epoch in range(args.epochs):
            order = shard[torch.randperm(len(shard), generator=torch.Generator().manual_seed(1000 * epoch + rank))]
            for step in range(steps):
                batch = order[step * args.batch:(step + 1) * args.batch]
                sgd.zero_grad()
                F.cross_entropy(ddp(train_x[batch]), train_y[batch]).backward()
                sgd.step()
                schedule.step()
            if rank == 0:
                accuracy = evaluate(model, test_x, test_y)
                print(f"  {name:18s} epoch {epoch + 1}/{args.epochs}  test acc {100 * accuracy:6.2f}%  "
                      f"sent {meter.bytes / 1e6:8.2f} MB/worker  {time.perf_counter() - start:6.1f} s", flush=True)
        if isinstance(state, distopt.hooks.CompressionState) and state.bytes_sent != meter.bytes:
            raise RuntimeError(f"{name}: the hook counted {state.bytes_sent} bytes, the meter {meter.bytes}")
        if rank == 0:
            results.append((name, 100 * accuracy, meter.bytes, time.perf_counter() - start))
        dist.barrier()
    if rank == 0:
        reference = results[0][2]
        print(f"\nFashion-MNIST, LeNet-5 CNN, torch DDP over gloo, {WORLD} processes, {args.epochs} epochs of "
              f"{2 * len(shard)} images, batch {args.batch} per process, lr {args.lr}, momentum {args.momentum}\n")
        print(f"{'hook':18s}  {'test acc':>8s}  {'sent/worker':>13s}  {'vs first':>8s}  {'wall time':>9s}")
        for name, accuracy, sent, seconds in results:
            print(f"{name:18s}  {accuracy:7.2f}%  {sent / 1e6:10.2f} MB  {reference / max(sent, 1):7.1f}x  "
                  f"{seconds:7.1f} s")
        print()
        for name, accuracy, sent, _ in results:
            print(f"RESULT {name} accuracy {accuracy:.2f} bytes {sent}")
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=20000, help="first N training images (0: all 60,000)")
    parser.add_argument("--batch", type=int, default=16, help="mini-batch per process")
    parser.add_argument("--lr", type=float, default=0.03, help="learning rate, decayed to 0 by a cosine")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--rank", type=int, default=2, help="PowerSGD's rank, torch's and distopt's")
    parser.add_argument("--torch-powersgd-start", type=int, default=10,
                        help="iteration where torch's PowerSGD starts compressing (vanilla allreduce before)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hooks", default="allreduce,torch-powersgd,distopt-ef-topk,distopt-powersgd,distopt-ef-sign,"
                                           "distopt-qsgd")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        mp.spawn(worker, args=(args, os.path.join(directory, "store")), nprocs=WORLD, join=True)


if __name__ == "__main__":
    main()
