"""The output engine: XNOR-popcount class scores and their argmax."""

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .argmax import ArgmaxUnit, result_layout, signed_width
from .artifact import OutputLayer
from .engine import MatrixEngine, tree_levels
from .folding import check_layer, check_memory
from .glue import beat_layout

__all__ = ["OutputEngine"]


class OutputEngine(wiring.Component):
    """The output layer, folded by ``pe`` classes and ``simd`` input bits per cycle.

    Bit-exact with :func:`bnnhw.golden.output_scores` and :func:`bnnhw.golden.argmax`: for
    each frame, one ``o`` beat with ``cls`` (the argmax, ties to the lowest class) and
    ``scores[c] = scales[c] * (2 p_c - N) + offsets[c]``, ``p_c`` the XNOR-popcount of class
    ``c``. Input ``i`` as for :class:`~bnnhw.layer.LayerEngine`.

    Throughput: one frame per ``cycles = max((classes / pe) * (MW / simd), classes + 1)``
    clock cycles (the argmax unit looks at one class per cycle). Latency: the whole input
    frame, then ``depth`` cycles from the last weight read to the result.

    Parameters
    ----------
    layer : OutputLayer
        Weights ``(classes, MW)``, offsets and scales, from the network file.
    pe : int
        Classes computed in parallel; divides the number of classes.
    simd : int
        Input bits per beat; divides ``MW``.
    memory : str
        ``"block"`` or ``"distributed"`` RAM for weights and the input buffer.

    Attributes
    ----------
    classes, score_width, cls_width : int
        Shape of the result: ``cls`` is ``unsigned(cls_width)``, each score
        ``signed(score_width)``, wide enough for every score the layer can produce.

    Raises
    ------
    FoldingError
        If ``pe`` or ``simd`` does not divide its dimension.
    """

    def __init__(self, layer, *, pe, simd, memory="block"):
        if not isinstance(layer, OutputLayer):
            raise TypeError(f"layer must be an OutputLayer, not {layer!r}")
        check_layer(layer, pe, simd, where="layer")
        check_memory(memory)
        self.layer, self.pe, self.simd, self.memory = layer, pe, simd, memory
        # Children are built in elaborate(); their figures follow from the parameters.
        self.classes = layer.fan_out
        self.score_width = signed_width(*layer.score_bounds)
        self.cls_width = max(1, (self.classes - 1).bit_length())
        self.cycles = max((self.classes // pe) * (layer.fan_in // simd), self.classes + 1)
        self.depth = tree_levels(simd) + 8
        super().__init__({
            "i": In(stream.Signature(beat_layout(simd))),
            "o": Out(stream.Signature(result_layout(self.classes, self.score_width))),
        })

    def elaborate(self, platform):
        m = Module()
        layer = self.layer
        engine = m.submodules.engine = MatrixEngine(weights=layer.weights, pe=self.pe,
                                                    simd=self.simd, memory=self.memory)
        argmax = m.submodules.argmax = ArgmaxUnit(
            scales=layer.scales, offsets=layer.offsets, fan_in=layer.fan_in, lanes=self.pe,
            pop_width=engine.result_width)
        wiring.connect(m, wiring.flipped(self.i), engine.i)
        wiring.connect(m, engine.o, argmax.i)
        wiring.connect(m, argmax.o, wiring.flipped(self.o))
        return m
