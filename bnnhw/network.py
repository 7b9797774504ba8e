"""The network top: a chain of layer engines between a pixel stream and a result stream."""

from pathlib import Path

from amaranth import Module
from amaranth.back import verilog
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .argmax import result_layout, signed_width
from .artifact import Network
from .first import FirstEngine
from .folding import FoldingError, check_folding, check_memory, default_folding, divisors
from .glue import WidthConverter, beat_layout
from .layer import LayerEngine
from .output import OutputEngine
from .perf import performance

__all__ = ["NetworkTop", "generate_verilog"]


class NetworkTop(wiring.Component):
    """A whole network in gateware, bit-exact with :func:`bnnhw.golden.run`.

    Streams:

    - ``i``: ``in_simd`` pixels per beat, ``{"data": in_bits * in_simd, "last": 1}``; pixel
      ``k * in_simd + j`` of a frame is bits ``[j * in_bits, (j + 1) * in_bits)`` of beat ``k``.
      A frame is ``n_pixels / in_simd`` beats; frames are counted, ``last`` is not checked.
    - ``o``: one beat per frame, ``{"cls": unsigned(cls_width), "scores":
      ArrayLayout(signed(score_width), classes)}``: ``scores`` equal ``golden.run(...).scores``
      and ``cls`` their argmax, ties going to the lowest class. Frames leave in order.

    Throughput: one frame per ``performance.initiation_interval`` cycles, the slowest of its
    layers' ``(MH / pe) * (MW / simd)``, the ``n_pixels / in_simd`` input beats and the
    ``classes + 1`` cycles of the argmax unit. Latency: about ``performance.latency`` cycles.

    Parameters
    ----------
    net : Network
        The network, from :func:`bnnhw.artifact.load`.
    folding : sequence of (pe, simd), optional
        One entry per layer (see :mod:`bnnhw.folding`); by default
        :func:`~bnnhw.folding.default_folding` picks one balanced against ``target``.
    in_simd : int, optional
        Pixels per input beat, dividing ``n_pixels``; by default the first layer's ``simd``.
    target : int, optional
        Cycles per frame for the default folding (ignored when ``folding`` is given).
    memory : str
        ``"block"`` (default: block RAM, for an iCE40) or ``"distributed"`` (LUT RAM, faster
        on an ECP5) for weights and input buffers.

    Attributes
    ----------
    folding : tuple of LayerFolding
    performance : Performance
        The analytic model: cycles per layer, initiation interval, latency, memory bits.
    in_bits, in_simd, n_pixels, classes, score_width, cls_width : int

    Raises
    ------
    FoldingError
        If the folding or ``in_simd`` does not fit the network; the message names the layer,
        the value and the allowed values.
    """

    def __init__(self, net, folding=None, *, in_simd=None, target=None, memory="block"):
        if not isinstance(net, Network):
            raise TypeError(f"net must be a Network, not {net!r}")
        if folding is None:
            folding = default_folding(net, target=target)
        self.folding = check_folding(net, folding)
        self.memory = check_memory(memory)
        self.net = net
        self.n_pixels, self.in_bits = net.input_size, net.input_bits
        if in_simd is None:
            in_simd = self.folding[0].simd
        if not isinstance(in_simd, int) or isinstance(in_simd, bool):
            raise FoldingError(f"in_simd must be an integer, not {in_simd!r}")
        if in_simd <= 0 or self.n_pixels % in_simd:
            raise FoldingError(f"in_simd {in_simd} does not divide the {self.n_pixels} pixels; "
                               f"allowed: {', '.join(map(str, divisors(self.n_pixels)))}")
        self.in_simd = in_simd
        self.classes = net.classes
        self.score_width = signed_width(*net.layers[-1].score_bounds)
        self.cls_width = max(1, (self.classes - 1).bit_length())
        self.performance = performance(net, self.folding, in_simd)
        super().__init__({
            "i": In(stream.Signature(beat_layout(self.in_bits * in_simd))),
            "o": Out(stream.Signature(result_layout(self.classes, self.score_width))),
        })

    def elaborate(self, platform):
        m = Module()
        # Pixels are re-packed to the first layer's SIMD, then each layer's PE output bits to
        # the next layer's SIMD. Each engine ends in a small FIFO and double-buffers its input,
        # so neighbouring layers work on successive frames at once.
        source, width, count = wiring.flipped(self.i), self.in_bits, self.in_simd
        last = len(self.net.layers) - 1
        for n, (layer, fold) in enumerate(zip(self.net.layers, self.folding)):
            if count != fold.simd:
                converter = WidthConverter(elem_width=width, in_count=count,
                                           out_count=fold.simd)
                m.submodules[f"convert{n}"] = converter
                wiring.connect(m, source, converter.i)
                source = converter.o
            engine = {0: FirstEngine, last: OutputEngine}.get(n, LayerEngine)
            engine = m.submodules[f"layer{n}"] = engine(layer, pe=fold.pe, simd=fold.simd,
                                                      memory=self.memory)
            wiring.connect(m, source, engine.i)
            source, width, count = engine.o, 1, fold.pe
        wiring.connect(m, source, wiring.flipped(self.o))
        return m


def generate_verilog(net, folding, path, *, in_simd=None, memory="block", name="bnn_top"):
    """Write Verilog of ``NetworkTop(net, folding, in_simd=in_simd, memory=memory)`` to
    ``path``.

    Ports: ``clk``, ``rst``, ``i__payload``, ``i__valid``, ``i__ready``, ``o__payload``,
    ``o__valid``, ``o__ready`` (payload fields packed LSB first in layout order). ``folding``
    may be ``None`` for the default. Returns the top's :class:`~bnnhw.perf.Performance`, whose
    ``table()`` summarises the folding, cycles and memory bits. Raises :class:`FoldingError`
    for a folding that does not fit.
    """
    top = NetworkTop(net, folding, in_simd=in_simd, memory=memory)
    text = verilog.convert(top, name=name, emit_src=False)
    Path(path).write_text(text)
    return top.performance
