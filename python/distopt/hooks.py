"""DDP communication hooks on distopt's compressors.

    import distopt.hooks
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ddp.register_comm_hook(distopt.hooks.ef_topk(ratio=0.01), distopt.hooks.allgather_hook)

A state (ef_topk, ef_sign, qsgd, powersgd, or CompressionState with any codec) holds one
codec per DDP bucket, so the error-feedback memory and PowerSGD's warm start are per bucket;
allgather_hook encodes the bucket's gradient with it, allgathers the encodings over the
process group (one asynchronous all_gather: every rank's encoding of a bucket has the same
size), and every rank decodes them in rank order and averages. That is distopt's
centralized round for a non-summable compressor (collective/average.hpp): the same bits on
every rank. PowerSGD is sent as each rank's factors P and Q (its encoding), so each rank
orthogonalises its own P; for 2 ranks the bytes equal those of allreducing the factors.

Random streams: rank r encodes bucket b at its i-th call with
distopt.Codec.encode(seed=state.seed + b * 2**32, rank=r, step=i), the stream
distopt::rng(seed, rank, step, compression) of C++.

DDP rebuilds its buckets after the first iteration; a bucket whose tensors change gets a
fresh codec (its memory starts from zero again).

state.bytes_sent counts what this rank sends under a ring allgather: (world size - 1) times
its encoding, per bucket and step.
"""

import torch
import torch.distributed as dist

from . import _distopt

__all__ = ["CompressionState", "allgather_hook", "ef_topk", "ef_sign", "qsgd", "powersgd", "layout_of"]


def layout_of(tensors):
    """distopt's layout of tensors laid out one after another: a tensor of shape [d0, d1 ... dk]
    (k >= 1) is the row-major matrix [d0, d1 ... dk], i.e. the column-major (d1 ... dk, d0);
    a 1-D or 0-D tensor is (numel, 1). As interop/torch.hpp."""
    shapes = []
    for t in tensors:
        if t.dim() < 2:
            shapes.append((t.numel(), 1))
        else:
            shapes.append((t.numel() // t.shape[0], t.shape[0]))
    return shapes


class _Bucket:
    def __init__(self, layout, codec, numel, world):
        self.layout = layout
        self.codec = codec
        self.size = codec.max_encoded_bytes(numel)
        self.wire = torch.empty(self.size, dtype=torch.uint8)
        self.gathered = [torch.empty(self.size, dtype=torch.uint8) for _ in range(world)]
        self.step = 0


class CompressionState:
    """The state of allgather_hook: make_codec(layout) makes a bucket's codec from the layout
    of its tensors (a list of (rows, cols); see layout_of)."""

    def __init__(self, make_codec, name, process_group=None, seed=0):
        self.make_codec = make_codec
        self.name = name
        self.process_group = process_group
        self.seed = seed
        self.bytes_sent = 0
        self._buckets = {}

    def _bucket(self, bucket, world):
        layout = layout_of(bucket.parameters())
        numel = bucket.buffer().numel()
        if sum(rows * cols for rows, cols in layout) != numel:
            raise _distopt.ConfigError(
                f"distopt.hooks: bucket {bucket.index()} holds {numel} floats but its parameters {layout} do not "
                "add up to that; this DDP version lays buckets out differently")
        state = self._buckets.get(bucket.index())
        if state is None or state.layout != layout:
            state = _Bucket(layout, self.make_codec(layout), numel, world)
            self._buckets[bucket.index()] = state
        return state


def allgather_hook(state, bucket):
    """DDP communication hook: compress, allgather, decode and average (see the module doc)."""
    group = state.process_group if state.process_group is not None else dist.group.WORLD
    world = group.size()
    rank = dist.get_rank(group)
    b = state._bucket(bucket, world)
    gradient = bucket.buffer()
    size = b.codec.encode(gradient, b.wire, seed=(state.seed + bucket.index() * 2**32) % 2**64, rank=rank,
                          step=b.step)
    if size != b.size:
        raise _distopt.ConfigError(f"distopt.hooks: {b.codec.name} encoded {size} bytes, not the "
                                   f"max_encoded_bytes {b.size} that every rank allgathers")
    b.step += 1
    state.bytes_sent += (world - 1) * size
    future = dist.all_gather(b.gathered, b.wire, group=group, async_op=True).get_future()

    def average(_):
        b.codec.decode_mean(b.gathered, gradient)
        return gradient

    return future.then(average)


def ef_topk(ratio=0.01, process_group=None, seed=0):
    """Top-k (the ratio of entries of largest magnitude) with error feedback (Stich et al. 2018)."""
    return CompressionState(lambda layout: _distopt.error_feedback(_distopt.top_k(ratio)), "distopt-ef-topk",
                            process_group, seed)


def ef_sign(bucket=512, process_group=None, seed=0):
    """Scaled sign per bucket of entries with error feedback: EF-signSGD (Karimireddy et al. 2019)."""
    return CompressionState(lambda layout: _distopt.error_feedback(_distopt.scaled_sign(bucket)), "distopt-ef-sign",
                            process_group, seed)


def qsgd(bits=8, bucket=512, process_group=None, seed=0):
    """QSGD (Alistarh et al. 2017): unbiased stochastic quantisation to `bits` bits per entry."""
    return CompressionState(lambda layout: _distopt.qsgd(bits, bucket), "distopt-qsgd", process_group, seed)


def powersgd(rank=2, process_group=None, seed=0):
    """PowerSGD (Vogels et al. 2019) of every weight matrix of the bucket, with its own error
    feedback and warm start; biases are sent raw."""
    return CompressionState(lambda layout: _distopt.power_sgd(rank, layout, True, seed), "distopt-powersgd",
                            process_group, seed)
