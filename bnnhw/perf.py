"""The analytic performance model of a folded network (DESIGN.md section 4).

Every figure comes from the layer kinds' :meth:`~bnnhw.kinds.Layer.figures`, which are the
plans the gateware sizes itself by (:mod:`bnnhw.gateware.plan`); nothing is re-derived here.
"""

from dataclasses import dataclass

from .folding import check_folding

__all__ = ["Performance", "performance"]


@dataclass(frozen=True)
class Performance:
    """Cycles per frame of every stage of a network, and what follows from them.

    Stages work on successive frames at once, so the network takes a new frame every
    :attr:`initiation_interval` cycles: the slowest of the input stream (``input_beats``) and
    its layers. :attr:`latency` estimates the cycles from a frame's first input beat to its
    result in an otherwise idle network, following each frame through the stages'
    :meth:`~bnnhw.kinds.base.Figures.timeline`: a dense stage needs its whole input, a
    convolution starts once its first rows are in.
    ``layers`` holds each layer's :class:`~bnnhw.kinds.base.Figures`.
    """
    input_beats: int
    layers: tuple

    @property
    def initiation_interval(self):
        return max(self.input_beats, *(layer.cycles for layer in self.layers))

    @property
    def latency(self):
        first, last = 0, self.input_beats
        for layer in self.layers:
            first, last = layer.timeline(first, last)
        return round(last)

    @property
    def memory_bits(self):
        """Bits in the memories of every stage (weights, thresholds, input buffers)."""
        return sum(layer.memory_bits for layer in self.layers)

    @property
    def register_bits(self):
        """Bits of input buffers built from flip-flops."""
        return sum(layer.register_bits for layer in self.layers)

    def bottleneck(self):
        """What sets the initiation interval: ``"input"`` or ``"layers[N]"``."""
        if self.input_beats == self.initiation_interval:
            return "input"
        n = max(range(len(self.layers)), key=lambda k: self.layers[k].cycles)
        return f"layers[{n}]"

    def frames_per_second(self, clock_hz):
        return clock_hz / self.initiation_interval

    def rows(self):
        """One row per layer: layer, kind, shape, folding, cycles, depth, memory bits."""
        rows = []
        for n, layer in enumerate(self.layers):
            out = layer.output.describe() if layer.output is not None else "scores"
            fold = layer.fold.as_dict()
            rows.append((f"{n}", layer.kind, f"{layer.input.describe()} -> {out}",
                         str(fold.get("pe", "-")), str(fold.get("simd", "-")),
                         str(layer.cycles), str(layer.depth), f"{layer.memory_bits:,}"))
        return rows

    def table(self):
        """The model as a short text table, one row per layer, then the totals."""
        rows = [("layer", "kind", "tensors", "pe", "simd", "cycles", "depth", "memory bits")]
        rows += self.rows()
        widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
        left = {1, 2}
        lines = ["  ".join(cell.ljust(w) if k in left else cell.rjust(w)
                           for k, (cell, w) in enumerate(zip(row, widths))).rstrip()
                 for row in rows]
        registers = (f" (+{self.register_bits:,} in flip-flops)" if self.register_bits else "")
        lines.append(f"input beats {self.input_beats}; initiation interval "
                     f"{self.initiation_interval} cycles/frame ({self.bottleneck()}), latency "
                     f"about {self.latency} cycles, memory {self.memory_bits:,} bits"
                     f"{registers}")
        return "\n".join(lines)


def performance(net, folding, in_simd=None, *, memory="block"):
    """The :class:`Performance` of ``net`` folded by ``folding`` with ``in_simd`` input values
    per beat (by default what the first layer takes per beat); ``memory`` is one memory style
    or one per layer."""
    from .gateware.plan import check_memories
    folding = check_folding(net, folding)
    memory = check_memories(memory, len(net.layers))
    layers = tuple(layer.figures(fold, style)
                   for layer, fold, style in zip(net.layers, folding, memory))
    if in_simd is None:
        in_simd = layers[0].in_count
    return Performance(input_beats=net.input.size // in_simd, layers=layers)
