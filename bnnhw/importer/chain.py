"""Elementwise chains run by the QONNX executor, and the integers they fold into.

A binarized layer of an ONNX graph is a linear node (MatMul, Gemm, Conv) whose float output is
an affine function of an integer (the popcount ``p`` of a binary layer, the accumulator of a
first layer), followed by elementwise nodes (Add, Mul, Sub, Div, BatchNormalization) and a
quantizer (BipolarQuant, a 1-bit Quant, a one-threshold MultiThreshold). Rather than redo
their float arithmetic, bnnhw runs those very nodes through the QONNX executor on every value
the integer can take (or, for a wide first layer, a bisection over them) and reads off where
the output bit changes: the integer threshold is then what the executor computes, rounding
included, for every input whose linear node's output is exact.
"""

import numpy as np

from ..errors import BnnhwError

__all__ = ["ImportRefused", "Chain", "fit_thresholds", "fit_scores", "quiet_onnxruntime"]

# Domains up to this size are checked value by value after the bisection.
_EXHAUSTIVE = 1 << 14


class ImportRefused(BnnhwError):
    """An ONNX graph bnnhw cannot import (unsupported or broken), as one line."""


def quiet_onnxruntime():
    """Keep onnxruntime's own error log off the terminal: a node it cannot run becomes one
    refusal line (or, in the comparison, a traceback), not a log line too."""
    import onnxruntime
    onnxruntime.set_default_logger_severity(4)


class Chain:
    """Nodes of a graph run on a tensor of ``(K, channels, 1, ...)`` values.

    ``nodes`` are ONNX nodes taking ``tensor`` (and constants from ``constants``); the chain's
    result is the last node's first output. ``rank`` is the rank of ``tensor`` in the graph:
    values are fed as ``(K, channels)`` followed by ``rank - 2`` axes of size 1, so per-channel
    constants broadcast as they do in the graph.
    """

    def __init__(self, *, nodes, tensor, rank, constants, opsets, where):
        self.nodes, self.tensor, self.rank = list(nodes), tensor, rank
        self.constants, self.opsets, self.where = constants, opsets, where

    def run(self, values, nodes=None):
        """The chain's output for ``values`` (``(K, channels)`` float), as ``(K, channels)``."""
        from onnx import TensorProto, helper
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx
        from qonnx.transformation.infer_shapes import InferShapes
        quiet_onnxruntime()
        nodes = self.nodes if nodes is None else nodes
        values = np.asarray(values, dtype=np.float32)
        shape = list(values.shape) + [1] * (self.rank - 2)
        feeds = [name for node in nodes for name in node.input if name]
        graph = helper.make_graph(
            nodes, "chain", [helper.make_tensor_value_info(self.tensor, TensorProto.FLOAT,
                                                           shape)],
            [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
            initializer=[_tensor(name, self.constants[name]) for name in dict.fromkeys(feeds)
                         if name in self.constants])
        model = ModelWrapper(helper.make_model(
            graph, opset_imports=[helper.make_opsetid(domain, version)
                                  for domain, version in self.opsets.items()]))
        try:
            model = model.transform(InferShapes())
            out = execute_onnx(model, {self.tensor: values.reshape(shape)})
        except Exception as error:  # the executor's own words name the failing node
            node = nodes[-1]
            raise ImportRefused(f"{self.where}: node {node.name or node.output[0]} "
                                f"({node.op_type}): the QONNX executor fails on its "
                                f"per-channel values: {_first_line(error)}") from None
        result = np.asarray(out[nodes[-1].output[0]], dtype=np.float64)
        if result.size != values.size:
            node = nodes[-1]
            raise ImportRefused(f"{self.where}: node {node.name or node.output[0]} "
                                f"({node.op_type}): output of shape {result.shape} is not "
                                f"elementwise on {tuple(shape)}; supported: per-channel or "
                                f"scalar constants")
        return result.reshape(values.shape)


def _first_line(error):
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def _tensor(name, array):
    from onnx import numpy_helper
    return numpy_helper.from_array(np.asarray(array), name)


def _affine(affine, a):
    """``scale * (base + slope * a) + bias`` per channel, in float64: the integer part first,
    so that ``+-1`` activations give the exact sum ``m * (2 p - N)`` before one rounding."""
    scale, base, slope, bias = affine
    return scale * (base + slope * a) + bias


def fit_thresholds(chain, *, affine, lo, hi, high):
    """Integer thresholds of a layer whose pre-activation is ``scale * (base + slope * a) +
    bias`` (``affine``, float64 arrays per channel) for integers ``a`` in ``lo..hi``, its bit
    ``chain(value) == high``.

    Returns ``(thresholds, flipped)``: channel ``c``'s bit is ``a >= thresholds[c]``, or, when
    ``flipped[c]``, ``a' >= thresholds[c]`` with ``a' = lo + hi - a`` (the weight row inverted).
    A channel whose bit is the same for every ``a`` gets ``lo`` (always 1) or ``hi + 1``
    (never). Raises :class:`ImportRefused` if a channel's bit is not monotone in ``a``.
    """
    channels = len(affine[0])

    def bits(a):
        return chain.run(_affine(affine, a)) == high

    ends = bits(np.stack([np.full(channels, lo), np.full(channels, hi)]).astype(np.float64))
    at_lo, at_hi = ends[0], ends[1]
    rising = ~at_lo & at_hi
    falling = at_lo & ~at_hi
    # Bisection: `low` keeps the bit of `lo`, `up` that of `hi`.
    low, up = np.full(channels, lo, np.int64), np.full(channels, hi, np.int64)
    while ((up - low) > 1).any():
        mid = (low + up) // 2
        b = bits(mid[None, :].astype(np.float64))[0]
        same_as_lo = b == at_lo
        low = np.where(same_as_lo, mid, low)
        up = np.where(same_as_lo, up, mid)
    thresholds = np.where(at_lo & at_hi, lo, hi + 1).astype(np.int64)
    thresholds = np.where(rising, up, thresholds)
    # Falling: bit 1 for a <= low, that is a' >= lo + hi - low.
    thresholds = np.where(falling, lo + hi - low, thresholds)
    flipped = falling.copy()
    if hi - lo + 1 <= _EXHAUSTIVE:
        a = np.arange(lo, hi + 1, dtype=np.int64)
        got = bits(a[:, None].astype(np.float64))
        a_eff = np.where(flipped[None, :], lo + hi - a[:, None], a[:, None])
        want = a_eff >= thresholds[None, :]
        bad = np.flatnonzero((got != want).any(axis=0))
        if bad.size:
            c = int(bad[0])
            raise ImportRefused(f"{chain.where}: channel {c}'s output bit is not a threshold "
                                f"on its integer accumulator (it changes more than once over "
                                f"{lo}..{hi}); supported: monotone scales, offsets, "
                                f"BatchNormalization and one quantizer")
    else:
        # Wide first layers: the bit at each side of every threshold.
        for offset, value in ((0, True), (-1, False)):
            t = thresholds + offset
            a = np.where(flipped, lo + hi - t, t)
            inside = (t >= lo) & (t <= hi)
            got = bits(np.clip(a, lo, hi)[None, :].astype(np.float64))[0]
            bad = np.flatnonzero(inside & (got != value))
            if bad.size:
                raise ImportRefused(f"{chain.where}: channel {int(bad[0])}'s output bit is "
                                    f"not a threshold on its integer accumulator")
    return thresholds, flipped


def fit_scores(chain, *, affine, n, limit=1 << 40):
    """Integer ``scales`` and ``offsets`` of class scores ``chain(value)`` over popcounts ``p``
    in ``0..n`` (``value`` as for :func:`fit_thresholds`), as the output kind computes them:
    ``scales[c] * (2 p' - n) + offsets[c]`` with ``p' = p``, or ``n - p`` where ``flipped``.

    Exact: over every pair of classes and popcounts, a float score greater than another maps
    to a greater integer, and equal float scores of different classes to equal integers, so
    the argmax (ties to the lowest index) is the same. Returns ``(scales, offsets, flipped,
    float_ties)``: ``float_ties`` counts popcounts of one class that the floats round to one
    value (they cannot change the argmax, as one class has one popcount per frame).
    """
    classes = len(affine[0])
    p = np.arange(n + 1, dtype=np.float64)
    scores = chain.run(_affine([np.asarray(v)[None, :] for v in affine], p[:, None]))
    flipped = scores[n] < scores[0]
    scores = np.where(flipped[None, :], scores[::-1], scores)              # now over p'
    span = scores[n] - scores[0]
    flat = np.flatnonzero(span <= 0)
    if flat.size:
        raise ImportRefused(f"{chain.where}: class {int(flat[0])}'s score does not depend on "
                            f"its inputs; supported: class scores that grow or shrink with "
                            f"the popcount")
    step = span / (2 * n) if n else np.ones(classes)        # score per unit of 2 p' - n
    middle = scores[0] + span / 2                           # the score at 2 p' - n = 0
    unit = step.min()
    float_ties = int(sum((np.diff(scores[:, c]) == 0).sum() for c in range(classes)))
    for shift in range(0, 41):
        u = unit / (1 << shift)
        scales = np.rint(step / u).astype(np.int64)
        offsets = np.rint((middle - middle.min()) / u).astype(np.int64)
        if (scales < 1).any() or scales.max() * max(n, 1) + np.abs(offsets).max() >= limit:
            break
        ints = scales[None, :] * (2 * np.arange(n + 1)[:, None] - n) + offsets[None, :]
        if _same_order(scores, ints):
            return scales, offsets, flipped, float_ties
    raise ImportRefused(f"{chain.where}: the class scores' scales and offsets have no exact "
                        f"integer form below 2**40 (float scores tie or cross where integers "
                        f"cannot); supported: scales and offsets that keep the argmax")


def _same_order(floats, ints):
    """Whether ``ints`` (``(values, classes)``) orders every pair of entries of different
    classes as ``floats`` does, ties included."""
    values, classes = floats.shape
    f = floats.T.ravel()
    i = ints.T.ravel()
    c = np.repeat(np.arange(classes), values)
    order = np.lexsort((i, f))
    f, i, c = f[order], i[order], c[order]
    starts = np.flatnonzero(np.r_[True, f[1:] != f[:-1]])
    ends = np.r_[starts[1:], len(f)]
    group_lo = np.minimum.reduceat(i, starts)
    group_hi = np.maximum.reduceat(i, starts)
    # Equal floats: one integer, unless all of one class.
    for s, e, a, b in zip(starts, ends, group_lo, group_hi):
        if a != b and len(set(c[s:e].tolist())) > 1:
            return False
    # Greater floats: greater integers. Within one class order is kept by the affine form.
    if len(starts) > 1:
        if not (group_lo[1:] > group_hi[:-1]).all():
            return False
    return True
