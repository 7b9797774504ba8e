"""``conv``: a binary convolution (XNOR, popcount, threshold per output channel).

Input: a binary tensor ``(C, H, W)``. Arrays: ``weights`` ``(O, kh, kw, C)`` 0/1 (a window's
values in the order rows, columns, channels: the stream order within the window) and
``thresholds`` ``(O,)`` in ``0 .. N + 1`` with ``N = kh * kw * C``. Stride 1, no padding
("valid"). Output: ``(O, H - kh + 1, W - kw + 1)`` binary; value ``(o, y, x)`` is 1 iff
``popcount(XNOR(window(y, x), weights[o])) >= thresholds[o]``, where ``window(y, x)`` is the
input's rows ``y .. y + kh - 1``, columns ``x .. x + kw - 1``, all channels, in that order. As
for dense layers, BatchNorm, bias, scale and sign fold into the threshold, and an output
channel whose BatchNorm gamma was negative is stored with its weights inverted.
"""

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..bits import pack_bits, packed_xnor_popcount
from ..gateware.plan import matrix_plan, window_plan
from ..tensor import Tensor
from .base import Figures, Layer

__all__ = ["ConvLayer", "windows"]

# Window rows per chunk of the golden model's im2col matrix: bounds its temporaries.
_CHUNK_VALUES = 1 << 24


def windows(x, tensor, kh, kw):
    """The im2col matrices of frames ``x`` (``(B, H * W * C)`` in stream order of
    ``tensor``): yields ``(start, stop, rows)`` for chunks of frames, ``rows`` of shape
    ``((stop - start) * OH * OW, kh * kw * C)`` with windows in stream order."""
    c, h, w = tensor.shape
    x = np.asarray(x).reshape(len(x), h, w, c)
    per_frame = (h - kh + 1) * (w - kw + 1) * kh * kw * c
    step = max(1, _CHUNK_VALUES // max(per_frame, 1))
    for start in range(0, len(x), step):
        view = sliding_window_view(x[start:start + step], (kh, kw), axis=(1, 2))
        # (B, OH, OW, C, kh, kw) -> (B, OH, OW, kh, kw, C)
        rows = view.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * c)
        yield start, min(start + step, len(x)), rows


@dataclass(frozen=True, eq=False)
class ConvLayer(Layer):
    """Binary convolution: XNOR, popcount, compare with a per-channel threshold."""
    KIND = "conv"
    ARRAYS = {"weights": "bits", "thresholds": "int"}

    weights: np.ndarray      # (O, kh, kw, C) uint8, 1 = +1
    thresholds: np.ndarray   # (O,) int64

    @property
    def out_channels(self):
        return self.weights.shape[0]

    @property
    def kernel(self):
        """``(kh, kw)``."""
        return self.weights.shape[1:3]

    @property
    def fan_in(self):
        """Inputs per output value: ``kh * kw * C``."""
        return int(np.prod(self.weights.shape[1:]))

    @property
    def matrix(self):
        """The weights as an ``(O, kh * kw * C)`` matrix over a window's values."""
        return self.weights.reshape(self.out_channels, -1)

    def check_input(self, tensor, check):
        check(tensor.encoding == "bipolar" and tensor.bits == 1,
              f"a {self.KIND} layer takes binary values, not {tensor.describe()}")

    def threshold_range(self, tensor):
        return 0, self.fan_in + 1

    def check(self, tensor, check):
        self.check_input(tensor, check)
        weights = self.weights
        check(hasattr(weights, "ndim") and weights.ndim == 4,
              f"expected a 4-D (out channels, kernel rows, kernel columns, in channels) "
              f"array, not shape {getattr(weights, 'shape', type(weights).__name__)}",
              ".weights")
        out, kh, kw, channels = weights.shape
        check(out >= 1 and kh >= 1 and kw >= 1, f"shape {weights.shape} has an empty axis",
              ".weights")
        check(channels == tensor.channels, f"{channels} input channels, but the tensor it "
                                           f"takes ({tensor.describe()}) has "
                                           f"{tensor.channels}", ".weights")
        check(kh <= tensor.height and kw <= tensor.width,
              f"a {kh}x{kw} kernel does not fit the {tensor.height}x{tensor.width} input",
              ".weights")
        check.array("weights", weights, weights.shape, binary=True)
        check.array("thresholds", self.thresholds, (out,))
        check.range("thresholds", self.thresholds, *self.threshold_range(tensor))
        return Tensor(out, tensor.height - kh + 1, tensor.width - kw + 1)

    def dot(self, rows):
        """The integer each output channel compares with its threshold, per window row (from
        :meth:`window_rows`)."""
        return packed_xnor_popcount(rows, pack_bits(self.weights).reshape(self.out_channels, -1),
                                    self.fan_in)

    def golden(self, x):
        c, h, w = self.input.shape
        kh, kw = self.kernel
        out = np.empty((len(x), (h - kh + 1) * (w - kw + 1) * self.out_channels), np.uint8)
        for start, stop, rows in self.window_rows(x):
            bits = self.dot(rows) >= self.thresholds
            out[start:stop] = bits.reshape(stop - start, -1)
        return out

    def window_rows(self, x):
        """The windows of frames ``x`` as :func:`windows` gives them, here with each pixel's
        channels packed into uint64 words first (64 times less to move around)."""
        c, h, w = self.input.shape
        packed = pack_bits(np.asarray(x, np.uint8).reshape(len(x), h, w, c))
        words = Tensor(packed.shape[-1], h, w)
        kh, kw = self.kernel
        for start, stop, rows in windows(packed.reshape(len(x), -1), words, kh, kw):
            yield start, stop, rows

    def window_logic(self, values):
        """The windows of ``values`` (a list in stream order), each a list in window order."""
        c, h, w = self.input.shape
        kh, kw = self.kernel
        at = lambda y, x, ch: values[(y * w + x) * c + ch]
        return [[at(y + dy, x + dx, ch) for dy in range(kh) for dx in range(kw)
                 for ch in range(c)] for y in range(h - kh + 1) for x in range(w - kw + 1)]

    def logic(self, values):
        return [sum((b if wt else ~b) for b, wt in zip(window, row)) >= int(t)
                for window in self.window_logic(values)
                for row, t in zip(self.matrix, self.thresholds)]

    def acc_bits(self):
        return (self.fan_in + 1).bit_length()

    def notes(self):
        kh, kw = self.kernel
        t = self.thresholds
        low, high = self.threshold_range(self.input)
        constant = int((t <= low).sum() + (t >= high).sum())
        return f"{kh}x{kw} kernel, {constant} constant channels"

    # ---- hardware ------------------------------------------------------------------------

    def fold_dims(self):
        return {"pe": (self.out_channels, "output channels"),
                "simd": (self.input.channels, "input channels")}

    def engine_options(self, fold, memory):
        return dict(weights=self.matrix, thresholds=self.thresholds, pe=fold.pe,
                    simd=fold.simd, memory=memory)

    def memory_words(self, fold, name):
        from ..gateware.weights import weight_words
        if name != "weights":
            raise ValueError(f"a {self.KIND} layer has no memory {name!r} with words to load")
        return weight_words(self.matrix, fold.pe, fold.simd)

    def windows_per_frame(self):
        _, h, w = self.input.shape
        kh, kw = self.kernel
        return (h - kh + 1) * (w - kw + 1)

    def plans(self, fold, memory="block"):
        c, h, w = self.input.shape
        kh, kw = self.kernel
        window = window_plan(height=h, width=w, channels=c, kh=kh, kw=kw, simd=fold.simd,
                             bits=self.input.bits, memory=memory)
        options = self.engine_options(fold, memory)
        options.pop("vectors", None)
        weights = options.pop("weights")
        in_bits = options.pop("in_bits", None)
        ones = None if in_bits is None else weights.sum(axis=1, dtype=np.int64)
        matrix = matrix_plan(mh=weights.shape[0], mw=weights.shape[1], in_bits=in_bits,
                             weight_ones=ones, **options)
        return window, matrix

    def figures(self, fold, memory="block"):
        fold = self.check_fold(fold)
        window, matrix = self.plans(fold, memory)
        pixels = window.out_height * window.out_width
        # The engine reads each window once per neuron group; the generator hands out a
        # window per `sf` cycles and takes the input at a beat per cycle.
        cycles = max(pixels * matrix.cycles, window.writes)
        depth = window.depth + 1 + matrix.depth
        # The first window waits for kh whole input rows.
        start = window.kh * window.width * window.words
        logic = ({"xnor": matrix.terms} if matrix.elem_width == 1
                 else {"adder_bits": matrix.terms * matrix.elem_width})
        logic["stages"] = 2
        per_window = matrix.cycles

        def stream(first_in, last_in):
            # Window row y can start once input row y + kh - 1 is in (rows arriving evenly
            # between the first and last input beat) and its window's beats are written; the
            # engine takes per_window cycles a window.
            row_time = (last_in - first_in) / window.height
            end = first_in
            for y in range(window.out_height):
                ready = first_in + (y + window.kh) * row_time + matrix.sf
                end = max(end, ready) + window.out_width * per_window
            first_out = first_in + window.kh * row_time + matrix.sf + matrix.sf + depth
            return first_out, end + depth + 1

        return Figures(kind=self.KIND, input=self.input, output=self.output, fold=fold,
                       cycles=cycles, depth=depth, latency=start + cycles + depth + 1,
                       in_count=fold.simd, out_count=fold.pe,
                       memories=window.memories + matrix.memories, logic=logic, stream=stream)

    def engine(self, fold, memory="block"):
        from ..gateware.engine import MatrixEngine
        from ..gateware.glue import Pipeline
        from ..gateware.window import WindowGenerator
        fold = self.check_fold(fold)
        c, h, w = self.input.shape
        kh, kw = self.kernel
        generator = WindowGenerator(height=h, width=w, channels=c, kh=kh, kw=kw,
                                    simd=fold.simd, bits=self.input.bits, memory=memory)
        engine = MatrixEngine(**self.engine_options(fold, memory),
                              vectors=self.windows_per_frame())
        return Pipeline([generator, engine])
