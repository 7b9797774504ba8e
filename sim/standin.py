"""A reference network top: golden-exact, fully unfolded, slow and obviously right.

:class:`ReferenceTop` has the ports of ``bnnhw.gateware.top.NetworkTop`` but computes a whole
frame in one combinational cloud from a frame register. The benches are tested against it, so
that a bench bug and a gateware bug cannot hide each other, and it stands in for the real top
where that is not available. Meant for small networks (tens to a few hundred neurons).
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring

from ..gateware.ports import Ports

__all__ = ["ReferenceTop"]


class ReferenceTop(wiring.Component):
    """Whole-network reference, bit-exact with :func:`bnnhw.golden.run`.

    Accepts one frame of ``n_pixels / in_simd`` beats (one per cycle), then spends ``delay``
    cycles idle and offers the result; the next frame is accepted once the result is taken.
    Cycles per frame with no stalls: ``beats + delay + 2`` (:attr:`cycles_per_frame`); latency
    from the first beat's transfer to the result's: ``beats + delay + 1`` (:attr:`latency`).
    Each layer is its kind's plain combinational logic (:meth:`bnnhw.kinds.Layer.logic`).

    Parameters
    ----------
    net : bnnhw.artifact.Network
        The network.
    in_simd : int
        Pixels per input beat, dividing ``net.input_size``.
    delay : int
        Idle cycles between a frame's last beat and its result, ``>= 0``.
    """
    def __init__(self, net, *, in_simd=1, delay=0):
        if not isinstance(in_simd, int) or in_simd <= 0 or net.input_size % in_simd:
            raise ValueError(f"in_simd must be a positive divisor of {net.input_size}, "
                             f"not {in_simd!r}")
        if not isinstance(delay, int) or delay < 0:
            raise ValueError(f"delay must be a non-negative integer, not {delay!r}")
        self.net, self.delay = net, delay
        self.ports = Ports.for_network(net, in_simd)
        self.in_bits, self.in_simd, self.n_pixels = net.input_bits, in_simd, net.input_size
        self.classes, self.score_width = self.ports.classes, self.ports.score_width
        self.cls_width = self.ports.cls_width
        self.cycles_per_frame = self.n_pixels // in_simd + delay + 2
        self.latency = self.n_pixels // in_simd + delay + 1
        super().__init__(dict(self.ports.signature().members))

    def _forward(self, pixels):
        """The scores of the frame ``pixels`` (a list of unsigned values), as logic."""
        values = pixels
        for layer in self.net.layers:
            values = layer.logic(values)
        return values

    def elaborate(self, platform):
        m = Module()
        beats = self.n_pixels // self.in_simd
        frame = Signal(self.n_pixels * self.in_bits)
        beat = Signal(range(beats))
        busy = Signal()
        wait = Signal(range(self.delay + 1))

        # Collect one frame; beat k lands in bits [k * in_simd * in_bits, ...) of `frame`.
        m.d.comb += self.i.ready.eq(~busy)
        with m.If(self.i.valid & self.i.ready):
            width = self.in_simd * self.in_bits
            with m.Switch(beat):
                for k in range(beats):
                    with m.Case(k):
                        m.d.sync += frame[k * width:(k + 1) * width].eq(self.i.payload.data)
            m.d.sync += beat.eq(beat + 1)
            with m.If(self.i.payload.last):
                m.d.sync += [beat.eq(0), busy.eq(1), wait.eq(self.delay)]

        pixels = [frame[k * self.in_bits:(k + 1) * self.in_bits] for k in range(self.n_pixels)]
        scores = [Signal(signed(self.score_width), name=f"score{c}")
                  for c in range(self.classes)]
        for signal, value in zip(scores, self._forward(pixels)):
            m.d.comb += signal.eq(value)
        # Argmax, ties to the lowest class: a later class wins only if strictly larger.
        best, best_score = 0, scores[0]
        for c in range(1, self.classes):
            better = scores[c] > best_score
            best = Mux(better, c, best)
            best_score = Mux(better, scores[c], best_score)

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [self.o.valid.eq(0), busy.eq(0)]
        with m.Elif(busy & ~self.o.valid):
            with m.If(wait == 0):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.cls.eq(best)]
                m.d.sync += [self.o.payload.scores[c].eq(scores[c])
                             for c in range(self.classes)]
            with m.Else():
                m.d.sync += wait.eq(wait - 1)
        return m
