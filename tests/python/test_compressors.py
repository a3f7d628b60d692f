"""The Python codecs against the C++ compressors and against numpy.

Every case of CASES is built here with the distopt module and in compressor_reference
(the C++ program of this directory, path in $DISTOPT_COMPRESSOR_REFERENCE) the same way; on
the same inputs and seeds, over three rounds of one state (error feedback, PowerSGD's warm
start), the encodings and the decodings must be equal byte for byte, from numpy arrays and
from torch tensors alike. Then: top_k, scaled_sign and error feedback against their formulas
written in numpy; decode_mean against numpy's sum; the buffers are used in place; bad input
raises the documented errors.
"""

import math
import os
import subprocess
import unittest

import numpy as np
import torch

import distopt

# name -> (n, factory): the same compressors as compressor_reference.cpp.
CASES = {
    "identity": (300, lambda: distopt.identity()),
    "top_k": (1000, lambda: distopt.top_k(0.05)),
    "ef_top_k": (1000, lambda: distopt.error_feedback(distopt.top_k(0.05))),
    "scaled_sign": (1000, lambda: distopt.scaled_sign(64)),
    "ef_scaled_sign": (1000, lambda: distopt.error_feedback(distopt.scaled_sign(64))),
    "qsgd8": (1000, lambda: distopt.qsgd(8, 128)),
    "qsgd4": (1000, lambda: distopt.qsgd(4, 100)),
    "qsgd2": (1000, lambda: distopt.qsgd(2, 512)),
    "ef_qsgd4": (1000, lambda: distopt.error_feedback(distopt.qsgd(4, 100))),
    "power_sgd": (170, lambda: distopt.power_sgd(2, [(12, 10), (10, 1), (7, 5), (5, 1)], True, 5)),
    "power_sgd1_no_ef": (170, lambda: distopt.power_sgd(1, [(17, 10)], error_feedback=False, seed=3)),
    "power_sgd4": (400, lambda: distopt.power_sgd(4)),
}
ROUNDS, SEED, RANK = 3, 11, 2


def reference(case, inputs):
    """[(wire bytes, decoded float32)] per round from the C++ program."""
    n = inputs.shape[1]
    run = subprocess.run([os.environ["DISTOPT_COMPRESSOR_REFERENCE"], case, str(n), str(len(inputs)), str(SEED),
                          str(RANK)], input=inputs.astype(np.float32).tobytes(), capture_output=True, check=True,
                         timeout=60)
    out, at, rounds = run.stdout, 0, []
    for _ in inputs:
        size = int(np.frombuffer(out, np.uint64, 1, at)[0])
        at += 8
        wire = np.frombuffer(out, np.uint8, size, at)
        at += size
        decoded = np.frombuffer(out, np.float32, n, at)
        at += 4 * n
        rounds.append((wire, decoded))
    assert at == len(out)
    return rounds


def python_rounds(codec, inputs, as_torch):
    rounds = []
    for step, x in enumerate(inputs):
        size_bound = codec.max_encoded_bytes(len(x))
        if as_torch:
            x, wire, out = torch.from_numpy(x.copy()), torch.empty(size_bound, dtype=torch.uint8), torch.empty(len(x))
        else:
            wire, out = np.empty(size_bound, np.uint8), np.empty(len(x), np.float32)
        size = codec.encode(x, wire, seed=SEED, rank=RANK, step=step)
        codec.decode(wire[:size], out)
        wire, out = (wire.numpy(), out.numpy()) if as_torch else (wire, out)
        rounds.append((wire[:size].copy(), out.copy()))
    return rounds


def numpy_top_k(x, ratio):
    k = max(1, math.ceil(ratio * len(x)))
    keep = np.argsort(-np.abs(x), kind="stable")[:k]
    out = np.zeros_like(x)
    out[keep] = x[keep]
    return out


class SameAsCpp(unittest.TestCase):
    def test_every_case_encodes_and_decodes_as_cpp(self):
        rng = np.random.default_rng(1)
        for case, (n, factory) in CASES.items():
            inputs = rng.standard_normal((ROUNDS, n)).astype(np.float32)
            inputs[1] *= 1e-3  # rounds of different scales: the state matters
            expected = reference(case, inputs)
            for as_torch in (False, True):
                with self.subTest(case=case, torch=as_torch):
                    got = python_rounds(factory(), inputs, as_torch)
                    for r, ((wire, out), (cpp_wire, cpp_out)) in enumerate(zip(got, expected)):
                        self.assertTrue(np.array_equal(wire, cpp_wire), f"round {r}: encodings differ")
                        self.assertTrue(np.array_equal(out.view(np.uint32), cpp_out.view(np.uint32)),
                                        f"round {r}: decodings differ")
                        self.assertEqual(len(wire), factory().max_encoded_bytes(n), "max_encoded_bytes is exact")


class AgainstFormulas(unittest.TestCase):
    def roundtrip(self, codec, x, step=0):
        wire = np.empty(codec.max_encoded_bytes(len(x)), np.uint8)
        size = codec.encode(x, wire, step=step)
        out = np.empty_like(x)
        codec.decode(wire[:size], out)
        return out, size

    def test_top_k_keeps_the_largest_magnitudes_and_its_size_is_the_documented_one(self):
        x = np.random.default_rng(2).standard_normal(1000).astype(np.float32)
        out, size = self.roundtrip(distopt.top_k(0.03), x)
        self.assertTrue(np.array_equal(out, numpy_top_k(x, 0.03)))
        k = 30
        self.assertEqual(size, 8 + math.ceil(k * math.ceil(math.log2(1000)) / 8) + 4 * k)

    def test_error_feedback_sends_the_residual_next_round(self):
        rng = np.random.default_rng(3)
        x1, x2 = rng.standard_normal((2, 500)).astype(np.float32)
        codec = distopt.error_feedback(distopt.top_k(0.02))
        out1, _ = self.roundtrip(codec, x1)
        out2, _ = self.roundtrip(codec, x2, step=1)
        sent1 = numpy_top_k(x1, 0.02)
        self.assertTrue(np.array_equal(out1, sent1))
        self.assertTrue(np.array_equal(out2, numpy_top_k(x2 + (x1 - sent1), 0.02)))

    def test_scaled_sign_is_the_mean_magnitude_times_the_sign_per_bucket(self):
        x = np.random.default_rng(4).standard_normal(200).astype(np.float32)
        x[7] = 0.0  # sgn(0) = +1
        out, size = self.roundtrip(distopt.scaled_sign(64), x)
        expected = np.empty_like(x)
        for begin in range(0, 200, 64):
            b = x[begin:begin + 64]
            scale = np.float32(np.abs(b.astype(np.float64)).sum() / len(b))
            expected[begin:begin + 64] = np.where(b < 0, -scale, scale)
        np.testing.assert_allclose(out, expected, rtol=2e-7, atol=0)  # the l1 sum's order: 1 ulp
        self.assertEqual(out[7], expected[7])
        self.assertEqual(size, 4 + 4 * 4 + 25)

    def test_decode_mean_is_the_mean_of_the_decodings_in_list_order(self):
        rng = np.random.default_rng(5)
        codec = distopt.qsgd(4, 64)
        xs = rng.standard_normal((3, 256)).astype(np.float32)
        wires, decoded = [], []
        for rank, x in enumerate(xs):
            wire = np.empty(codec.max_encoded_bytes(256), np.uint8)
            codec.encode(x, wire, seed=1, rank=rank)
            out = np.empty(256, np.float32)
            codec.decode(wire, out)
            wires.append(torch.from_numpy(wire))
            decoded.append(out)
        mean = torch.empty(256)
        codec.decode_mean(wires, mean)
        expected = ((decoded[0] + decoded[1]) + decoded[2]) / np.float32(3)
        self.assertTrue(np.array_equal(mean.numpy(), expected))


class Buffers(unittest.TestCase):
    def test_torch_tensors_are_read_and_written_in_place(self):
        codec = distopt.identity()
        x = torch.randn(64, requires_grad=True)  # a parameter-like tensor: read through detach()
        wire = torch.zeros(codec.max_encoded_bytes(64), dtype=torch.uint8)
        size = codec.encode(x, wire)  # written into the tensor, which decode then reads
        base = torch.zeros(3, 64)
        codec.decode(wire[:size], base[1])  # a view: decode writes into the base tensor's memory
        self.assertTrue(torch.equal(base[1], x.detach()))
        self.assertEqual(float(base[0].abs().sum() + base[2].abs().sum()), 0.0)
        with self.assertRaises(distopt.TransportError):
            codec.decode(wire[:size], torch.zeros(32))  # 64 floats encoded, 32 to write

    def test_bad_input_raises_errors_that_say_what_to_do(self):
        codec = distopt.top_k(0.1)
        wire = np.empty(codec.max_encoded_bytes(100), np.uint8)
        with self.assertRaisesRegex(TypeError, "float32"):
            codec.encode(np.zeros(100), wire)  # float64
        with self.assertRaisesRegex(ValueError, "contiguous"):
            codec.encode(torch.zeros(100, 2)[:, 0], wire)
        with self.assertRaisesRegex(distopt.ConfigError, "max_encoded_bytes"):
            codec.encode(np.zeros(100, np.float32), wire[:10])
        with self.assertRaises(distopt.TransportError):
            codec.decode(np.zeros(5, np.uint8), np.zeros(100, np.float32))
        with self.assertRaisesRegex(distopt.ConfigError, "stateless"):
            distopt.error_feedback(distopt.power_sgd(2))
        with self.assertRaisesRegex(distopt.ConfigError, "bits must be 2, 4 or 8"):
            distopt.qsgd(3)
        ef = distopt.error_feedback(codec)
        ef.encode(np.zeros(100, np.float32), wire)
        with self.assertRaisesRegex(distopt.ConfigError, "one codec per tensor"):
            ef.encode(np.zeros(50, np.float32), wire)
        ef.reset()
        ef.encode(np.zeros(50, np.float32), wire)
        self.assertTrue(issubclass(distopt.ConfigError, distopt.Error))
        self.assertEqual(repr(ef), "distopt.error_feedback(top_k(ratio=0.1))")


class FashionMnist(unittest.TestCase):
    def test_the_test_split_has_10000_images_of_784_pixels(self):
        features, labels = distopt.load_fashion_mnist("test")
        self.assertEqual(features.shape, (10000, 784))
        self.assertEqual(features.dtype, np.float32)
        self.assertTrue(0.0 <= features.min() and features.max() <= 1.0)
        self.assertEqual(sorted(set(labels.tolist())), list(range(10)))


if __name__ == "__main__":
    unittest.main()
