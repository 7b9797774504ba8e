"""What the weight-matrix kinds (first, dense, output) share: a ``(neurons, fan-in)`` binary
weight matrix, folded by ``pe`` neurons and ``simd`` inputs per cycle onto a
:class:`~bnnhw.gateware.engine.MatrixEngine`. Not a kind itself."""

from dataclasses import dataclass

from ..gateware.plan import matrix_plan
from .base import Figures, Layer

__all__ = ["MatrixLayer", "plan_for"]


@dataclass(frozen=True, eq=False)
class MatrixLayer(Layer):
    """A layer whose ``weights`` are an ``(out, in)`` 0/1 matrix, bit 1 meaning +1."""

    @property
    def fan_in(self):
        """Inputs per neuron (N)."""
        return self.weights.shape[1]

    @property
    def fan_out(self):
        """Neurons (or classes) in the layer."""
        return self.weights.shape[0]

    def check_weights(self, tensor, check):
        """Check ``weights`` against the ``tensor`` the layer takes; return ``(out, in)``."""
        weights = self.weights
        check(hasattr(weights, "ndim") and weights.ndim == 2,
              f"expected a 2-D (out, in) array, not shape "
              f"{getattr(weights, 'shape', type(weights).__name__)}", ".weights")
        out, width = weights.shape
        check(out >= 1, "the layer has no outputs", ".weights")
        check(width == tensor.size, f"fan-in {width} does not match the {tensor.size} values "
                                    f"of the tensor it takes ({tensor.describe()})", ".weights")
        check.array("weights", weights, (out, width), binary=True)
        return out, width

    def check_binary_input(self, tensor, check):
        check(tensor.encoding == "bipolar" and tensor.bits == 1,
              f"a {self.KIND} layer takes binary values, not {tensor.describe()}")

    def fold_dims(self):
        return {"pe": (self.fan_out, "neurons"), "simd": (self.fan_in, "inputs")}

    def plan(self, fold, memory="block"):
        """The :func:`~bnnhw.gateware.plan.matrix_plan` of this layer folded by ``fold``."""
        raise NotImplementedError

    def engine_options(self, fold, memory):
        """Keyword arguments of this layer's :class:`MatrixEngine`."""
        raise NotImplementedError

    def matrix_figures(self, fold, memory, *, output, cycles=None, depth=None, latency=None,
                       out_count=None):
        plan = self.plan(fold, memory)
        cycles = plan.cycles if cycles is None else cycles
        depth = plan.depth if depth is None else depth
        latency = plan.cycles + depth + 1 if latency is None else latency
        logic = ({"xnor": plan.terms} if plan.elem_width == 1 and self.input.bits == 1
                 else {"adder_bits": plan.terms * plan.elem_width})
        logic["stages"] = 1
        return Figures(kind=self.KIND, input=self.input, output=output, fold=fold,
                       cycles=cycles, depth=depth, latency=latency, in_count=fold.simd,
                       out_count=fold.pe if out_count is None else out_count,
                       memories=plan.memories, logic=logic)

    def memory_words(self, fold, name):
        from ..gateware.weights import weight_words
        if name != "weights":
            raise ValueError(f"a {self.KIND} layer has no memory {name!r} with words to load")
        return weight_words(self.weights, fold.pe, fold.simd)

    def matrix_engine(self, fold, memory):
        from ..gateware.engine import MatrixEngine
        return MatrixEngine(**self.engine_options(fold, memory))


def plan_for(layer, fold, memory, **options):
    """``matrix_plan`` for ``layer``'s weight matrix folded by ``fold``."""
    return matrix_plan(mh=layer.fan_out, mw=layer.fan_in, pe=fold.pe, simd=fold.simd,
                       memory=memory, **options)

