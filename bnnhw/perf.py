"""The analytic performance model of a folded network (DESIGN.md section 4)."""

from dataclasses import dataclass

from .engine import shape_of, tree_levels
from .folding import check_folding

__all__ = ["LayerFigures", "Performance", "performance"]


@dataclass(frozen=True)
class LayerFigures:
    """One layer's engine: folding, cycles per frame, pipeline depth, memory bits."""
    kind: str
    fan_in: int
    fan_out: int
    pe: int
    simd: int
    cycles: int             # (fan_out / pe) * (fan_in / simd)
    depth: int              # cycles from a group's last weight read to its output beat
    weight_bits: int        # in pe banks of (fan_out / pe) * (fan_in / simd) x simd bits
    threshold_bits: int
    buffer_bits: int        # the double-buffered input vector


@dataclass(frozen=True)
class Performance:
    """Cycles per frame of every stage of a network, and what follows from them.

    Layers work on successive frames at once, so the network takes a new frame every
    :attr:`initiation_interval` cycles: the slowest of the input stream
    (``n_pixels / in_simd`` beats), the layers and the argmax unit (one class per cycle, and
    a cycle to hand the result over).
    :attr:`latency` estimates the cycles from a frame's first input beat to its result in an
    otherwise idle network: each engine needs its whole input vector before it starts.
    """
    input_beats: int
    classes: int
    layers: tuple

    @property
    def initiation_interval(self):
        return max(self.input_beats, self.classes + 1, *(layer.cycles for layer in self.layers))

    @property
    def latency(self):
        # Per engine: its cycles, its pipeline depth and a cycle to mark its input buffer full;
        # the output FIFO and width converters overlap with the next engine's input.
        engines = sum(layer.cycles + layer.depth + 1 for layer in self.layers)
        return self.input_beats + engines + self.layers[-1].pe + 2

    @property
    def memory_bits(self):
        """Weight, threshold and input buffer bits over all layers."""
        return sum(layer.weight_bits + layer.threshold_bits + layer.buffer_bits
                   for layer in self.layers)

    def frames_per_second(self, clock_hz):
        return clock_hz / self.initiation_interval

    def table(self):
        """The model as a short text table, one row per layer, then the totals."""
        rows = [("layer", "kind", "shape", "pe", "simd", "cycles", "depth", "memory bits")]
        for n, layer in enumerate(self.layers):
            bits = layer.weight_bits + layer.threshold_bits + layer.buffer_bits
            rows.append((f"{n}", layer.kind, f"{layer.fan_in}->{layer.fan_out}",
                         str(layer.pe), str(layer.simd), str(layer.cycles), str(layer.depth),
                         f"{bits:,}"))
        widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
        lines.append(f"input beats {self.input_beats}, argmax {self.classes + 1} cycles; "
                     f"initiation interval {self.initiation_interval} cycles/frame, "
                     f"latency about {self.latency} cycles, memory {self.memory_bits:,} bits")
        return "\n".join(lines)


def _figures(layer, pe, simd):
    mh, mw = layer.fan_out, layer.fan_in
    nf, sf = mh // pe, mw // simd
    elem_width, threshold_width = 1, 0
    if layer.kind == "first":
        elem_width = layer.in_bits
        bound = layer.acc_bound
        threshold_width = shape_of(-bound - mw, bound + 1).width
    elif layer.kind == "dense":
        threshold_width = shape_of(0, mw + 1).width
    depth = tree_levels(simd) + 3
    if layer.kind == "output":
        depth += 5          # the argmax unit: score, compare, update, combine, result
    buffer_words = 2 << (sf - 1).bit_length()
    return LayerFigures(
        kind=layer.kind, fan_in=mw, fan_out=mh, pe=pe, simd=simd, cycles=nf * sf, depth=depth,
        weight_bits=mh * mw, threshold_bits=mh * threshold_width,
        buffer_bits=buffer_words * simd * elem_width)


def performance(net, folding, in_simd):
    """The :class:`Performance` of ``net`` folded by ``folding`` with ``in_simd`` pixels/beat."""
    folding = check_folding(net, folding)
    layers = tuple(_figures(layer, f.pe, f.simd) for layer, f in zip(net.layers, folding))
    return Performance(input_beats=net.input_size // in_simd, classes=net.classes,
                       layers=layers)

