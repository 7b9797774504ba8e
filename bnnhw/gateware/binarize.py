"""The input stage that binarizes unsigned values by per-channel thresholds."""

import math

from amaranth import Array, C, Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .glue import check_positive, step
from .ports import beat_layout

__all__ = ["Binarize"]


class Binarize(wiring.Component):
    """Bit ``x >= thresholds[c]`` for each ``bits``-bit unsigned value ``x`` of channel ``c``;
    bit-exact with :meth:`bnnhw.kinds.BinarizeLayer.golden`.

    Input ``i``: values in stream order (:mod:`bnnhw.tensor`), ``simd`` of ``bits`` bits per
    beat, value ``j`` in bits ``[j * bits, (j + 1) * bits)``; the channel of a frame's value
    ``n`` is ``n % len(thresholds)``. Output ``o``: ``simd`` bits per beat, bit ``j`` for value
    ``j``, ``last`` passed through. One beat per cycle; each output beat one cycle after its
    input beat (a register stage).

    Parameters
    ----------
    thresholds : list of int
        One per channel, each in ``0 .. 2**bits``.
    bits : int
        Bits of an input value.
    simd : int
        Values per beat.
    """

    def __init__(self, *, thresholds, bits, simd):
        check_positive(bits=bits, simd=simd)
        self.thresholds = [int(t) for t in thresholds]
        if not self.thresholds:
            raise ValueError("thresholds must name at least one channel")
        for t in self.thresholds:
            if not 0 <= t <= 1 << bits:
                raise ValueError(f"threshold {t} is outside 0..{1 << bits} for {bits}-bit values")
        self.bits, self.simd = bits, simd
        channels = len(self.thresholds)
        # Lane j of beat k sees channel (k * simd + j) % channels: a pattern that repeats
        # every `phases` beats, whatever the frame size.
        self.phases = channels // math.gcd(simd, channels)
        super().__init__({"i": In(stream.Signature(beat_layout(simd * bits))),
                          "o": Out(stream.Signature(beat_layout(simd)))})

    def elaborate(self, platform):
        m = Module()
        channels, simd, bits = len(self.thresholds), self.simd, self.bits
        phase = Signal(range(self.phases))
        take = self.i.valid & self.i.ready
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        step(m, phase, self.phases, take)

        def compare(value, t):
            # Thresholds are constants: 0 always holds, 2**bits never does.
            if t == 0:
                return C(1, 1)
            if t >= 1 << bits:
                return C(0, 1)
            return value >= t

        out = []
        for j in range(simd):
            value = self.i.payload.data[j * bits:(j + 1) * bits]
            lane = [compare(value, self.thresholds[(q * simd + j) % channels])
                    for q in range(self.phases)]
            out.append(lane[0] if self.phases == 1 else Array(lane)[phase])
        with m.If(take):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.data.eq(Cat(*out)),
                         self.o.payload.last.eq(self.i.payload.last)]
        return m
