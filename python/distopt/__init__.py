"""distopt from Python: its compressors on torch tensors and numpy arrays, and DDP
communication hooks built on them (distopt.hooks).

Built by CMake into <build>/python (README, "PyTorch"):

    import torch, distopt
    c = distopt.error_feedback(distopt.top_k(0.01))
    x = torch.randn(1000)
    wire = torch.empty(c.max_encoded_bytes(x.numel()), dtype=torch.uint8)
    size = c.encode(x, wire, seed=0, rank=0, step=0)   # reads x in place
    out = torch.empty_like(x)
    c.decode(wire[:size], out)                         # writes out in place

Codecs: identity(), top_k(ratio), scaled_sign(bucket), qsgd(bits, bucket),
power_sgd(rank, shapes, error_feedback, seed), error_feedback(codec). Each is the C++
compressor of the same name (include/distopt/compress/), with the same bytes for the same
input and seed. Errors: distopt.Error and its subclasses ConfigError, TransportError,
NumericError.
"""

from ._distopt import (Codec, ConfigError, Error, NumericError, TransportError, error_feedback, identity,
                       load_fashion_mnist, power_sgd, qsgd, scaled_sign, top_k)

__all__ = ["Codec", "ConfigError", "Error", "NumericError", "TransportError", "error_feedback", "identity",
           "load_fashion_mnist", "power_sgd", "qsgd", "scaled_sign", "top_k"]
