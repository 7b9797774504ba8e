"""Bit-level helpers shared by the golden model and the gateware generators.

``fold``/``words`` are the folding convention of streams and weight memories (feature
``k * simd + i`` is field ``i`` of word ``k``, see :mod:`bnnhw.tensor`); ``pack_bits`` and
``xnor_popcount`` are the golden model's vectorised XNOR-popcount.
"""

import numpy as np

__all__ = ["pack_bits", "xnor_popcount", "packed_xnor_popcount", "bipolar_dot", "fold", "unfold", "words", "base_bits"]

# Frames per chunk: bounds the (chunk, out, words) XOR temporaries to tens of megabytes.
_CHUNK = 2048


def pack_bits(bits):
    """Pack a ``(..., N)`` array of 0/1 into ``(..., ceil(N / 64))`` uint64 words (zero padded)."""
    bits = np.asarray(bits, dtype=np.uint8)
    n = bits.shape[-1]
    padded = -n % 64
    if padded:
        bits = np.concatenate([bits, np.zeros(bits.shape[:-1] + (padded,), np.uint8)], axis=-1)
    packed = np.packbits(bits, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view(np.uint64)


def xnor_popcount(bits, weights):
    """``popcount(XNOR(x_b, w_j))`` for every frame ``b`` of ``bits`` ``(B, N)`` and row ``j``
    of ``weights`` ``(out, N)``: an ``(B, out)`` int64 array."""
    return packed_xnor_popcount(pack_bits(bits), pack_bits(weights), np.shape(weights)[-1])


def packed_xnor_popcount(x_packed, w_packed, fan_in):
    """:func:`xnor_popcount` of operands packed into uint64 words the same way, zero padded
    alike (padding bits agree, so they count as no difference): ``x_packed`` ``(B, words)``,
    ``w_packed`` ``(out, words)``, ``fan_in`` the number of real bits."""
    out = np.empty((x_packed.shape[0], w_packed.shape[0]), np.int64)
    for start in range(0, x_packed.shape[0], _CHUNK):
        x = x_packed[start:start + _CHUNK, None, :]
        differ = np.bitwise_count(x ^ w_packed[None, :, :]).sum(axis=-1, dtype=np.int64)
        out[start:start + _CHUNK] = fan_in - differ
    return out


def bipolar_dot(values, weights):
    """``sum_i w_ji x_i`` with ``w`` in {-1, +1} (bit 1 is +1) for integer ``values`` ``(B, N)``:
    an ``(B, out)`` int64 array, exact.

    Runs as a float32 or float64 matrix product where every partial sum is an integer the
    format represents exactly, else in int64.
    """
    x = np.asarray(values)
    w = np.asarray(weights).astype(np.int64) * 2 - 1
    bound = int(np.abs(x).max(initial=0)) * w.shape[-1]
    if bound < (1 << 24):
        return (x.astype(np.float32) @ w.T.astype(np.float32)).astype(np.int64)
    if bound < (1 << 53):
        return (x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)
    return x.astype(np.int64) @ w.T


def base_bits(values, n):
    """Base ``n`` (bit ``n``) of multi-base values: a 0/1 uint8 array of the same shape."""
    return ((np.asarray(values) >> n) & 1).astype(np.uint8)


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
