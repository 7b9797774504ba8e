"""MatMul, Gemm and Conv nodes of the graph walk: binary weights, and the affine map from a
layer's integer accumulator to the node's float output."""

import numpy as np

from ..kinds import ConvLayer, DenseLayer, FirstConvLayer, FirstLayer, OutputLayer
from .nodes import _Acc, _stream_perm

__all__ = []


class _Linear:
    """Folding of linear nodes (a mixin of the walk)."""

    def binary_weights(self, node, w, axis):
        """Sign bits and magnitude of each output's weights: ``w`` with outputs along
        ``axis`` must be ``+-m`` per output."""
        w = np.moveaxis(np.asarray(w, np.float64), axis, 0).reshape(w.shape[axis], -1)
        m = np.abs(w).max(axis=1)
        bad = np.flatnonzero((m == 0) | (np.abs(w) != m[:, None]).any(axis=1))
        if bad.size:
            self.refuse(node, f"output {int(bad[0])}'s weights are not binary (values "
                              f"{np.unique(w[bad[0]])[:4].tolist()}); supported: +-m per output, "
                              f"as BipolarQuant or a 1-bit Quant makes them")
        return (w > 0).astype(np.uint8), m

    def linear(self, node, state, *, binary, raw_scale):
        """The ``_Acc`` state after MatMul, Gemm or Conv ``node`` on ``state``: on binary
        values ``binary = (v0, v1)``, or on the input ``x = u * raw_scale``."""
        op = node.op_type
        if node.input[0] != state.name:
            self.refuse(node, "takes the data as its second operand; supported: data first, "
                              "constant weights second")
        bias = 0.0
        if op == "Conv":
            if len(state.shape) != 3:
                self.refuse(node, f"convolves a tensor of shape {state.shape}; supported: "
                                  f"(C, H, W)")
            w = self.const(node, 1, "weights")
            group = self.attr(node, "group", 1)
            strides = list(self.attr(node, "strides", [1, 1]))
            pads = list(self.attr(node, "pads", [0, 0, 0, 0]))
            dilations = list(self.attr(node, "dilations", [1, 1]))
            if (w.ndim != 4 or group != 1 or strides != [1, 1] or any(pads)
                    or dilations != [1, 1]
                    or self.attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID")):
                self.refuse(node, f"group {group}, strides {strides}, pads {pads}, dilations "
                                  f"{dilations}; supported: 2-D convolution, stride 1, no "
                                  f"padding, one group")
            if len(node.input) > 2 and node.input[2]:
                bias = self.const(node, 2, "bias").astype(np.float64)
            c, h, wd = state.shape
            o, ci, kh, kw = w.shape
            if ci != c or kh > h or kw > wd:
                self.refuse(node, f"weights of shape {w.shape} do not fit the input {state.shape}")
            bits, m = self.binary_weights(node, w, 0)
            bits = bits.reshape(o, ci, kh, kw).transpose(0, 2, 3, 1)      # (O, kh, kw, C)
            fan_in = c * kh * kw
            out_shape = (o, h - kh + 1, wd - kw + 1)
            rank = 4
            image = out_shape
        else:
            c, h, wd = state.image
            if len(state.shape) != 1 and not (len(state.shape) == 3 and state.shape[1:] == (1, 1)):
                self.refuse(node, f"multiplies a tensor of shape {state.shape}; supported: a "
                                  f"flattened (1, N) input")
            w = self.const(node, 1, "weights")
            if op == "Gemm":
                if self.attr(node, "transA", 0):
                    self.refuse(node, "transA is set; supported: transA 0")
                if self.attr(node, "transB", 0):
                    w = w.T
                alpha = float(self.attr(node, "alpha", 1.0))
                w = w * alpha
                if len(node.input) > 2 and node.input[2]:
                    bias = (self.const(node, 2, "bias").astype(np.float64)
                            * float(self.attr(node, "beta", 1.0)))
            if w.ndim != 2 or w.shape[0] != c * h * wd:
                self.refuse(node, f"weights of shape {w.shape} do not fit the {c * h * wd} "
                                  f"input values")
            sign, m = self.binary_weights(node, w, 1)
            bits = np.empty_like(sign)
            bits[:, _stream_perm(state.image)] = sign
            o = bits.shape[0]
            fan_in = bits.shape[1]
            out_shape = (o,)
            rank = 2
            image = (o, 1, 1)
        bias = np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (o,)) \
            if np.size(bias) in (1, o) else None
        if bias is None:
            self.refuse(node, f"its bias does not have one value per output ({o})")
        ones = bits.reshape(o, -1).sum(axis=1).astype(np.float64)
        signs_sum = 2 * ones - fan_in                                     # sum of +-1 weights
        if binary is None:
            # Unsigned inputs x = u * scale: the value is m * scale * acc + bias.
            bound = fan_in * ((1 << self.input_bits) - 1)
            base, slope, lo, hi = np.zeros(o), np.full(o, raw_scale), -bound, bound
            kinds = (FirstLayer, dict(in_bits=self.input_bits)) if op != "Conv" else (
                FirstConvLayer, dict(in_bits=self.input_bits))
            scores = False
        else:
            v0, v1 = binary
            mid, half = (v0 + v1) / 2, (v1 - v0) / 2
            # x_i = mid + half s_i: the value is m (mid S + half (2 p - N)) + bias.
            base = mid * signs_sum - half * fan_in
            slope, lo, hi = np.full(o, 2 * half), 0, fan_in
            kinds = (DenseLayer, {}) if op != "Conv" else (ConvLayer, {})
            scores = op != "Conv"
        kind, extra = kinds

        def build(thresholds, flipped):
            flip = flipped.reshape((-1,) + (1,) * (bits.ndim - 1))
            weights = np.where(flip, 1 - bits, bits).astype(np.uint8)
            return kind(weights=weights, thresholds=thresholds, **extra)

        def build_output(scales, offsets, flipped):
            weights = np.where(flipped[:, None], 1 - bits, bits).astype(np.uint8)
            return OutputLayer(weights=weights, offsets=offsets, scales=scales)

        return _Acc(name=node.output[0], source=node.output[0], shape=out_shape,
                    build=(build, build_output),
                    affine=(m, base, slope, np.array(bias, np.float64)), lo=lo,
                    hi=hi, rank=rank, image=image, scores=scores)

    # ---- linear outputs -------------------------------------------------------------------
