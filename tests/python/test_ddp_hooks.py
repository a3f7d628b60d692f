"""distopt's DDP communication hooks under torch DDP: 2 processes over gloo
(torch.multiprocessing), a small CNN, different data on each rank.

References, computed in each process with plain autograd on a replica and exchanged with
dist.all_gather: the default allreduce gives the exact mean gradient; EF top-k gives the
mean of numpy/torch top-k selections, with the residual carried to the next step; scaled
sign gives the mean of the formula; QSGD stays within its documented variance bound (a
statistical check, fixed seeds); PowerSGD of rank 1 makes each weight's mean gradient of
rank <= 2 (measured by SVD; the exact one is not) and leaves biases exact. Also: the
buffer holds the bucket's tensors in the order of bucket.parameters() (the layout the hooks
give PowerSGD), bytes_sent follows the encodings' documented sizes, and every hook keeps
the replicas identical through training.
"""

import copy
import datetime
import math
import os
import tempfile
import unittest

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel as DDP

import distopt.hooks as hooks

WORLD = 2


class Net(torch.nn.Module):
    """As tests/torch/test_torch.cpp: 1 x 6 x 6 -> conv 3x3 -> 3 x 4 x 4 -> linear -> 5."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 3)
        self.fc = torch.nn.Linear(48, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def batch(rank, step):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(8, 1, 6, 6, generator=g), torch.randint(0, 5, (8,), generator=g)


def fresh_net():
    torch.manual_seed(0)
    return Net()


def gather(t):
    parts = [torch.empty_like(t) for _ in range(WORLD)]
    dist.all_gather(parts, t.contiguous())
    return parts


def local_gradients(rank, steps):
    """[step][parameter] this rank's gradients at the initial parameters."""
    net = fresh_net()
    out = []
    for step in range(steps):
        net.zero_grad()
        x, y = batch(rank, step)
        F.cross_entropy(net(x), y).backward()
        out.append([p.grad.clone() for p in net.parameters()])
    return out


def ddp_gradients(state, hook, steps, **ddp_options):
    """[step][parameter] the gradients DDP leaves after each backward (parameters not stepped)."""
    net = fresh_net()
    ddp = DDP(net, **ddp_options)
    if hook is not None:
        ddp.register_comm_hook(state, hook)
    out = []
    for step in range(steps):
        ddp.zero_grad()
        x, y = batch(dist.get_rank(), step)
        F.cross_entropy(ddp(x), y).backward()
        out.append([p.grad.clone() for p in net.parameters()])
    return out


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def top_k(x, ratio):
    k = max(1, math.ceil(ratio * x.numel()))
    out = torch.zeros_like(x)
    keep = x.abs().topk(k).indices
    out[keep] = x[keep]
    return out


def check(condition, message):
    if not condition:
        raise AssertionError(f"rank {dist.get_rank()}: {message}")


def check_allreduce(rank, mine, everyone):
    got = ddp_gradients(None, None, 1)[0]
    for p, g in enumerate(got):
        expected = (everyone[0][0][p] + everyone[1][0][p]) / 2
        check(torch.equal(g, expected), f"default allreduce: parameter {p} is not the mean gradient")


def check_ef_topk(rank, mine, everyone):
    # find_unused_parameters: no bucket rebuild after step 1, so the residual carries over.
    state = hooks.ef_topk(ratio=0.1)
    got = ddp_gradients(state, hooks.allgather_hook, 2, find_unused_parameters=True)
    check(len(state._buckets) == 1, "the small net should make one bucket")
    residual = [torch.zeros_like(flat(everyone[r][0])) for r in range(WORLD)]
    for step in range(2):
        sent = []
        for r in range(WORLD):
            p = flat(everyone[r][step]) + residual[r]
            sent.append(top_k(p, 0.1))
            residual[r] = p - sent[-1]
        check(torch.equal(flat(got[step]), (sent[0] + sent[1]) / 2), f"EF top-k step {step}: not mean_r top-k(g_r + e_r)")
    n = flat(mine[0]).numel()
    k = math.ceil(0.1 * n)
    size = 8 + math.ceil(k * math.ceil(math.log2(n)) / 8) + 4 * k  # compress/top_k.hpp
    check(state.bytes_sent == 2 * (WORLD - 1) * size, f"EF top-k sent {state.bytes_sent} bytes, not 2 x {size}")


def check_ef_sign(rank, mine, everyone):
    state = hooks.ef_sign(bucket=0)  # one scale for the whole bucket: the order of its tensors does not matter
    got = flat(ddp_gradients(state, hooks.allgather_hook, 1)[0])
    sent = []
    for r in range(WORLD):
        g = flat(everyone[r][0])
        scale = (g.double().abs().sum() / g.numel()).float()
        sent.append(torch.where(g < 0, -scale, scale))
    expected = (sent[0] + sent[1]) / 2
    check(torch.allclose(got, expected, rtol=3e-7, atol=0), "EF sign: not the mean of ||g||_1 / n sign(g)")


def check_qsgd(rank, mine, everyone):
    got = flat(ddp_gradients(hooks.qsgd(bits=8, bucket=512), hooks.allgather_hook, 1)[0])
    exact = (flat(everyone[0][0]) + flat(everyone[1][0])) / 2
    # compress/qsgd.hpp: E||C(x) - x||^2 <= omega ||x||^2, omega = min(d / s^2, sqrt(d) / s), s = 127,
    # d = the bucket; the mean of W independent ones has E||error||^2 <= omega / W^2 sum_r ||g_r||^2.
    # Markov: a draw exceeds 4x that with probability <= 1/4; the seeds are fixed.
    d = min(512, exact.numel())
    omega = min(d / 127**2, math.sqrt(d) / 127)
    bound = omega / WORLD**2 * sum(float(flat(everyone[r][0]).square().sum()) for r in range(WORLD))
    error = float((got - exact).square().sum())
    check(0 < error <= 4 * bound, f"QSGD: squared error {error} not in (0, 4 x {bound}]")
    others = gather(got)
    check(torch.equal(others[0], others[1]), "QSGD: the ranks disagree on the mean")


def check_powersgd(rank, mine, everyone):
    state = hooks.powersgd(rank=1)
    got = ddp_gradients(state, hooks.allgather_hook, 1)[0]
    names = [name for name, _ in fresh_net().named_parameters()]
    for p, name in enumerate(names):
        exact = (everyone[0][0][p] + everyone[1][0][p]) / 2
        if name.endswith("bias"):
            check(torch.equal(got[p], exact), f"PowerSGD: {name} should be sent exactly")
            continue
        sv = torch.linalg.svdvals(got[p].reshape(got[p].shape[0], -1))
        sv_exact = torch.linalg.svdvals(exact.reshape(exact.shape[0], -1))
        check(sv[2] < 1e-5 * sv[0], f"PowerSGD rank 1 on 2 ranks: {name} should have rank <= 2, singular values {sv}")
        check(sv_exact[2] > 1e-2 * sv_exact[0], f"{name}: the exact gradient should not be of rank 2")
    # compress/power_sgd.hpp: 12 + 8 T + 4 sum_t (compressed ? R (rows + cols) : rows cols)
    size = 12 + 8 * 4 + 4 * ((9 + 3) + 3 + (48 + 5) + 5)
    check(state.bytes_sent == (WORLD - 1) * size, f"PowerSGD sent {state.bytes_sent} bytes, not {size}")


def check_bucket_layout(rank, mine, everyone):
    seen = []

    def recording_hook(_, bucket):
        buffer, at = bucket.buffer(), 0
        for p, g in zip(bucket.parameters(), bucket.gradients()):
            seen.append(g.shape == p.shape and g.data_ptr() == buffer.data_ptr() + 4 * at)
            at += p.numel()
        seen.append(at == buffer.numel())
        return allreduce_hook(None, bucket)

    ddp_gradients(None, recording_hook, 2, gradient_as_bucket_view=True)
    check(seen and all(seen), f"the bucket does not hold bucket.parameters() in order: {seen}")


def check_training_keeps_replicas_equal(rank, mine, everyone):
    for state in (hooks.ef_topk(0.05), hooks.ef_sign(), hooks.qsgd(4), hooks.powersgd(2)):
        net = fresh_net()
        ddp = DDP(net)  # default options: buckets are rebuilt after the first step
        ddp.register_comm_hook(state, hooks.allgather_hook)
        sgd = torch.optim.SGD(ddp.parameters(), lr=0.1)
        for step in range(4):
            sgd.zero_grad()
            x, y = batch(rank, step)
            F.cross_entropy(ddp(x), y).backward()
            sgd.step()
        params = flat([p.detach() for p in net.parameters()])
        others = gather(params)
        check(torch.equal(others[0], others[1]), f"{state.name}: the replicas differ after training")
        check(not torch.equal(params, flat([p.detach() for p in fresh_net().parameters()])), f"{state.name}: no update")


CHECKS = [check_allreduce, check_ef_topk, check_ef_sign, check_qsgd, check_powersgd, check_bucket_layout,
          check_training_keeps_replicas_equal]


def worker(rank, store):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        mine = local_gradients(rank, 2)
        everyone = [[None] * 2 for _ in range(WORLD)]
        for step in range(2):
            per_param = [gather(g) for g in mine[step]]
            for r in range(WORLD):
                everyone[r][step] = [parts[r] for parts in per_param]
        for check_fn in CHECKS:
            check_fn(rank, mine, everyone)
    finally:
        dist.destroy_process_group()


class DdpHooks(unittest.TestCase):
    def test_hooks_under_ddp_on_two_processes(self):
        with tempfile.TemporaryDirectory() as directory:
            mp.spawn(worker, args=(os.path.join(directory, "store"),), nprocs=WORLD, join=True)


if __name__ == "__main__":
    unittest.main()
