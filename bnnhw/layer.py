"""The binary dense layer engine (FINN's MVTU): XNOR, popcount, threshold."""

from .artifact import DenseLayer
from .engine import MatrixEngine
from .folding import check_layer, check_memory

__all__ = ["LayerEngine"]


class LayerEngine(MatrixEngine):
    """A binary dense layer, folded by ``pe`` neurons and ``simd`` input bits per cycle.

    Bit-exact with :func:`bnnhw.golden.dense_layer`: output bit ``j`` is
    ``popcount(XNOR(x, w_j)) >= thresholds[j]``.

    Streams: ``i`` takes ``MW / simd`` beats of ``simd`` bits per frame (bit ``k`` of beat
    ``b`` is input ``b * simd + k``), ``o`` gives ``MH / pe`` beats of ``pe`` bits (bit ``k``
    of beat ``g`` is neuron ``g * pe + k``) with ``last`` on the frame's final beat. The input
    ``last`` is ignored: frames are counted.

    Throughput: one frame per ``cycles = (MH / pe) * (MW / simd)`` clock cycles, taking the
    next frame's input while computing. Latency: ``depth = ceil(log2(simd)) + 3`` cycles from
    a group's last weight read to its output beat, after the whole input frame has arrived.

    Parameters
    ----------
    layer : DenseLayer
        Weights ``(MH, MW)`` and thresholds, from the network file.
    pe : int
        Neurons computed in parallel; divides ``MH``.
    simd : int
        Input bits per beat; divides ``MW``.
    memory : str
        ``"block"`` or ``"distributed"``: the RAM Yosys is asked to use for weights and the
        input buffer (see :class:`~bnnhw.engine.MatrixEngine`).

    Raises
    ------
    FoldingError
        If ``pe`` or ``simd`` does not divide its dimension.
    """

    def __init__(self, layer, *, pe, simd, memory="block"):
        if not isinstance(layer, DenseLayer):
            raise TypeError(f"layer must be a DenseLayer, not {layer!r}")
        check_layer(layer, pe, simd, where="layer")
        check_memory(memory)
        self.layer = layer
        super().__init__(weights=layer.weights, pe=pe, simd=simd, memory=memory,
                         thresholds=layer.thresholds)
