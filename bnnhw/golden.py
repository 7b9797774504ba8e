"""The golden model: the bit-exact specification of what a bnnhw network computes.

Pure numpy and integers. Every other stage (torch in eval mode, Amaranth's simulator, Verilator,
the board) is judged against :func:`run` with ``==``. The semantics, per layer kind, are those
documented in :mod:`bnnhw.artifact`.

Binary layers work on bit-packed vectors: XNOR-popcount is ``N - popcount(x ^ w)`` over 64-bit
words, vectorised over the batch. The first layer's integer dot product runs through a float32
or float64 matrix product, which is exact because every partial sum is an integer well inside
the format's range of exactly representable integers (checked, with an int64 fallback).
"""

from dataclasses import dataclass

import numpy as np

from .artifact import ArtifactError

__all__ = [
    "Result", "run", "pack_bits", "first_layer", "dense_layer", "output_scores", "argmax",
    "fold", "unfold", "words",
]

# Frames per chunk: bounds the (chunk, out, words) XOR temporaries to tens of megabytes.
_CHUNK = 2048


@dataclass(frozen=True)
class Result:
    """Everything the golden model computes for a batch of ``B`` frames.

    ``activations[n]`` is layer ``n``'s output, ``(B, out)`` uint8 bits, for every layer but the
    last; ``scores`` is ``(B, classes)`` int64; ``classes`` is ``(B,)`` int64.
    """
    activations: list
    scores: np.ndarray
    classes: np.ndarray


def pack_bits(bits):
    """Pack a ``(..., N)`` array of 0/1 into ``(..., ceil(N / 64))`` uint64 words (zero padded)."""
    bits = np.asarray(bits, dtype=np.uint8)
    n = bits.shape[-1]
    padded = -n % 64
    if padded:
        bits = np.concatenate([bits, np.zeros(bits.shape[:-1] + (padded,), np.uint8)], axis=-1)
    packed = np.packbits(bits, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view(np.uint64)


def _xnor_popcount(x_packed, w_packed, fan_in):
    """``popcount(XNOR(x_b, w_j))`` for every frame b and row j: ``(B, out)`` int64."""
    out = np.empty((x_packed.shape[0], w_packed.shape[0]), np.int64)
    for start in range(0, x_packed.shape[0], _CHUNK):
        x = x_packed[start:start + _CHUNK, None, :]
        differ = np.bitwise_count(x ^ w_packed[None, :, :]).sum(axis=-1, dtype=np.int64)
        out[start:start + _CHUNK] = fan_in - differ
    return out


def first_layer(x, layer):
    """Output bits of a ``first`` layer for unsigned integer inputs ``x`` of shape (B, N)."""
    x = np.asarray(x)
    bound = layer.acc_bound
    w = layer.weights.astype(np.int64) * 2 - 1
    if bound < (1 << 24):      # every partial sum is an exactly representable float32 integer
        acc = (x.astype(np.float32) @ w.T.astype(np.float32)).astype(np.int64)
    elif bound < (1 << 53):
        acc = (x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)
    else:
        acc = x.astype(np.int64) @ w.T
    return (acc >= layer.thresholds).astype(np.uint8)


def dense_layer(bits, layer):
    """Output bits of a binary ``dense`` layer for input bits of shape (B, N)."""
    p = _xnor_popcount(pack_bits(bits), pack_bits(layer.weights), layer.fan_in)
    return (p >= layer.thresholds).astype(np.uint8)


def output_scores(bits, layer):
    """Integer class scores ``scales * (2 p - N) + offsets`` for input bits (B, N)."""
    p = _xnor_popcount(pack_bits(bits), pack_bits(layer.weights), layer.fan_in)
    return layer.scales * (2 * p - layer.fan_in) + layer.offsets


def argmax(scores):
    """Index of the largest score per row; ties go to the lowest index (as numpy's argmax)."""
    return np.argmax(scores, axis=-1).astype(np.int64)


def _check_inputs(net, x):
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != net.input_size:
        raise ArtifactError(f"inputs of shape {x.shape} do not match the network's input of "
                            f"{net.input_size} values per frame")
    if x.dtype.kind not in "iub":
        raise ArtifactError(f"inputs must be integers, not {x.dtype}")
    if x.size and (x.min() < 0 or x.max() >= 1 << net.input_bits):
        raise ArtifactError(f"input values must be {net.input_bits}-bit unsigned integers "
                            f"(0..{(1 << net.input_bits) - 1}), not {x.min()}..{x.max()}")
    return x


def run(net, x):
    """Run frames ``x`` (``(B, input_size)`` unsigned ints, or one frame) through ``net``."""
    x = _check_inputs(net, x)
    activations = []
    bits = first_layer(x, net.layers[0])
    activations.append(bits)
    for layer in net.layers[1:-1]:
        bits = dense_layer(bits, layer)
        activations.append(bits)
    scores = output_scores(bits, net.layers[-1])
    return Result(activations=activations, scores=scores, classes=argmax(scores))


def fold(values, simd):
    """Split a vector of ``N = k * simd`` features into ``k`` beats of ``simd`` features.

    Feature ``k * simd + i`` lands in column ``i`` of row ``k``: returns ``(N // simd, simd)``.
    """
    values = np.asarray(values)
    if values.shape[-1] % simd:
        raise ValueError(f"simd {simd} does not divide the vector length {values.shape[-1]}")
    return values.reshape(values.shape[:-1] + (values.shape[-1] // simd, simd))


def unfold(beats):
    """Inverse of :func:`fold`."""
    beats = np.asarray(beats)
    return beats.reshape(beats.shape[:-2] + (beats.shape[-2] * beats.shape[-1],))


def words(values, simd, width=1):
    """Fold ``values`` by ``simd`` and pack each beat into a Python integer.

    Element ``i`` of a beat occupies bits ``[i * width, (i + 1) * width)``, so feature
    ``k * simd + i`` is field ``i`` of word ``k``: the layout of stream payloads and weight
    memories. Values must be non-negative and fit ``width`` bits.
    """
    beats = fold(np.asarray(values, dtype=np.int64), simd)
    shifts = np.arange(simd, dtype=object) * width
    return [sum(int(v) << int(s) for v, s in zip(beat, shifts))
            for beat in beats.reshape(-1, simd)]
