"""Stream glue between stages: a width converter, and a pipeline of stages."""

import math

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .ports import beat_layout

__all__ = ["WidthConverter", "Pipeline", "step", "check_positive"]


def step(m, counter, n, enable):
    """Step ``counter`` over ``0..n-1`` (wrapping) when ``enable``; return whether it is at
    ``n - 1``."""
    at_end = counter == n - 1
    with m.If(enable):
        m.d.sync += counter.eq(Mux(at_end, 0, counter + 1))
    return at_end


def check_positive(**values):
    """Raise ``TypeError`` naming the first of ``values`` that is not a positive integer."""
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise TypeError(f"{name} must be a positive integer, not {value!r}")


class Pipeline(wiring.Component):
    """Stream stages in a row: ``i`` is the first stage's input, ``o`` the last one's output,
    each stage's ``o`` feeds the next one's ``i``. Throughput and latency are the stages'.

    Parameters
    ----------
    stages : sequence of wiring.Component
        Each with an ``i`` and an ``o`` stream, the payloads of neighbours matching; at most
        one with a ``load`` port, which the pipeline then has too.
    """

    def __init__(self, stages):
        self.stages = list(stages)
        if not self.stages:
            raise ValueError("a pipeline needs at least one stage")
        for n, (a, b) in enumerate(zip(self.stages, self.stages[1:])):
            out, inp = a.signature.members["o"], b.signature.members["i"]
            if out.signature != inp.signature.flip():
                raise ValueError(f"stage {n} emits {out.signature!r}, but stage {n + 1} takes "
                                 f"{inp.signature!r}")
        members = {"i": self.stages[0].signature.members["i"],
                   "o": self.stages[-1].signature.members["o"]}
        # A stage's `load` port (its weights loaded at run time) is the pipeline's.
        loading = [stage for stage in self.stages if "load" in stage.signature.members]
        if len(loading) > 1:
            raise ValueError("at most one stage of a pipeline may have a load port")
        if loading:
            members["load"] = loading[0].signature.members["load"]
        self._loading = loading[0] if loading else None
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        source = wiring.flipped(self.i)
        for n, stage in enumerate(self.stages):
            m.submodules[f"stage{n}"] = stage
            wiring.connect(m, source, stage.i)
            source = stage.o
        wiring.connect(m, source, wiring.flipped(self.o))
        if self._loading is not None:
            wiring.connect(m, wiring.flipped(self.load), self._loading.load)
        return m


class WidthConverter(wiring.Component):
    """Re-pack a stream of ``in_count`` elements per beat into beats of ``out_count`` elements.

    Elements are ``elem_width`` bits; element ``k * count + j`` of a frame is field ``j`` of beat
    ``k`` on both sides, so the element order is kept. A frame must hold a whole number of beats
    on both sides (``frame`` elements, a multiple of both counts): a frame's ``last`` is carried
    to the output beat holding its final element. When neither count divides the other, it
    gathers ``lcm(in_count, out_count)`` elements and then splits them.

    Throughput: one input beat per cycle when gathering, one output beat per cycle when
    splitting; latency one cycle (two when it does both).

    Parameters
    ----------
    elem_width, in_count, out_count : int
        Positive.
    """

    def __init__(self, *, elem_width, in_count, out_count):
        for name, value in (("elem_width", elem_width), ("in_count", in_count),
                            ("out_count", out_count)):
            if not isinstance(value, int) or value <= 0:
                raise TypeError(f"{name} must be a positive integer, not {value!r}")
        self.elem_width, self.in_count, self.out_count = elem_width, in_count, out_count
        super().__init__({
            "i": In(stream.Signature(beat_layout(elem_width * in_count))),
            "o": Out(stream.Signature(beat_layout(elem_width * out_count))),
        })

    def elaborate(self, platform):
        m = Module()
        a, b, w = self.in_count, self.out_count, self.elem_width
        if a == b:
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
        elif b % a == 0:
            self._gather(m, b // a)
        elif a % b == 0:
            self._split(m, a // b)
        else:
            # Neither divides the other: gather to the least common multiple, then split.
            mid = math.lcm(a, b)
            up = m.submodules.up = WidthConverter(elem_width=w, in_count=a, out_count=mid)
            down = m.submodules.down = WidthConverter(elem_width=w, in_count=mid, out_count=b)
            wiring.connect(m, wiring.flipped(self.i), up.i)
            wiring.connect(m, up.o, down.i)
            wiring.connect(m, down.o, wiring.flipped(self.o))
        return m

    def _gather(self, m, ratio):
        # Input beats shift in from the top, so after `ratio` of them beat k is in slice k: one
        # enable for the whole register instead of a decoded one per slice (a slow path on an
        # iCE40). A new group may start in the cycle the full register is taken: the consumer
        # samples the old contents.
        piece = len(self.i.payload.data)
        count = Signal(range(ratio))
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += self.o.payload.data.eq(Cat(self.o.payload.data[piece:],
                                                   self.i.payload.data))
            with m.If(count == ratio - 1):
                m.d.sync += [count.eq(0), self.o.valid.eq(1),
                             self.o.payload.last.eq(self.i.payload.last)]
            with m.Else():
                m.d.sync += count.eq(count + 1)

    def _split(self, m, ratio):
        # Hold one input beat and hand out its slices in order; take the next input beat in the
        # cycle the final slice goes, so a steady stream loses no cycle.
        piece = len(self.o.payload.data)
        word = Signal.like(self.i.payload)
        full = Signal()
        count = Signal(range(ratio))
        final = count == ratio - 1
        m.d.comb += [
            self.o.valid.eq(full),
            self.o.payload.data.eq(word.data.word_select(count, piece)),
            self.o.payload.last.eq(word.last & final),
            self.i.ready.eq(~full | (self.o.ready & final)),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += count.eq(count + 1)
            with m.If(final):
                m.d.sync += [count.eq(0), full.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [word.eq(self.i.payload), full.eq(1)]
