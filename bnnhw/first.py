"""The first-layer engine: multi-bit unsigned inputs, binary weights, signed thresholds."""

from .artifact import FirstLayer
from .engine import MatrixEngine
from .folding import check_layer, check_memory

__all__ = ["FirstEngine"]


class FirstEngine(MatrixEngine):
    """The first layer, folded by ``pe`` neurons and ``simd`` input values per cycle.

    Bit-exact with :func:`bnnhw.golden.first_layer`: output bit ``j`` is
    ``sum_i (x_i if w_ji else -x_i) >= thresholds[j]``, for unsigned ``in_bits``-bit ``x``.

    Streams: ``i`` takes ``MW / simd`` beats of ``simd`` values per frame (value ``k`` of beat
    ``b``, bits ``[k * in_bits, (k + 1) * in_bits)``, is input ``b * simd + k``); ``o`` gives
    ``MH / pe`` beats of ``pe`` bits as :class:`~bnnhw.layer.LayerEngine` does. The input
    ``last`` is ignored: frames are counted.

    Throughput: one frame per ``cycles = (MH / pe) * (MW / simd)`` clock cycles. Latency:
    ``depth = ceil(log2(simd)) + 3`` cycles from a group's last weight read to its output beat,
    after the whole input frame has arrived. Each product is an XOR of ``x`` with the weight
    bit, ``x`` or ``-x - 1``; the ``-1`` of each negative weight is taken off the threshold at
    elaboration, so the adder tree needs no negations.

    Parameters
    ----------
    layer : FirstLayer
        Weights ``(MH, MW)``, thresholds and ``in_bits``, from the network file.
    pe : int
        Neurons computed in parallel; divides ``MH``.
    simd : int
        Input values per beat; divides ``MW``.
    memory : str
        ``"block"`` or ``"distributed"``: the RAM Yosys is asked to use for weights and the
        input buffer (see :class:`~bnnhw.engine.MatrixEngine`).

    Raises
    ------
    FoldingError
        If ``pe`` or ``simd`` does not divide its dimension.
    """

    def __init__(self, layer, *, pe, simd, memory="block"):
        if not isinstance(layer, FirstLayer):
            raise TypeError(f"layer must be a FirstLayer, not {layer!r}")
        check_layer(layer, pe, simd, where="layer")
        check_memory(memory)
        self.layer = layer
        super().__init__(weights=layer.weights, pe=pe, simd=simd, memory=memory,
                         in_bits=layer.in_bits, thresholds=layer.thresholds)
