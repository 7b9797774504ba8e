"""The streaming max-pool unit on binary values: an OR over each window."""

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .glue import check_positive, step
from .plan import pool_plan
from .ports import beat_layout

__all__ = ["MaxPool"]


class MaxPool(wiring.Component):
    """Max-pool ``size x size`` windows with stride ``size`` over frames of binary values.

    The maximum of bits that encode -1/+1 is their OR. Input ``i``: a ``height x width`` frame
    of ``channels`` bits per pixel in stream order (:mod:`bnnhw.tensor`), ``simd`` bits per
    beat. Output ``o``: the ``(height // size) x (width // size)`` pooled frame, in stream
    order, ``simd`` bits per beat, ``last`` on a frame's final beat. Rows and columns beyond
    the last whole window are taken and dropped, as torch's ``MaxPool2d`` does (floor).

    Throughput: one input beat per cycle while the output register is free. Latency: the
    output beat of a window leaves a cycle after its last input beat. The partial ORs of a row
    of windows are kept in a small RAM read combinationally (LUT RAM, or flip-flops on an
    iCE40).

    Parameters
    ----------
    height, width, channels : int
        The input frame; ``size <= height`` and ``size <= width``.
    size : int
        Window rows and columns, and the stride.
    simd : int
        Bits per beat, dividing ``channels``.
    """

    def __init__(self, *, height, width, channels, size, simd):
        check_positive(height=height, width=width, channels=channels, size=size, simd=simd)
        if size > height or size > width:
            raise ValueError(f"a {size}x{size} pool does not fit a {height}x{width} frame")
        if channels % simd:
            raise ValueError(f"simd {simd} does not divide the {channels} channels")
        self.plan = pool_plan(height=height, width=width, channels=channels, size=size,
                              simd=simd, bits=1)
        super().__init__({"i": In(stream.Signature(beat_layout(simd))),
                          "o": Out(stream.Signature(beat_layout(simd)))})

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        p, words = plan.size, plan.words
        # Position of the input beat: channel word, column (as window column and offset in
        # it), row (likewise).
        word = Signal(range(words))
        dx, ox = Signal(range(p)), Signal(range(plan.width // p + 1))
        dy, oy = Signal(range(p)), Signal(range(plan.height // p + 1))
        column, row = Signal(range(plan.width)), Signal(range(plan.height))

        take = self.i.valid & self.i.ready
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        word_end = step(m, word, words, take)
        col_end = step(m, column, plan.width, take & word_end)
        step(m, row, plan.height, take & word_end & col_end)
        dx_end = step(m, dx, p, take & word_end)
        with m.If(take & word_end):
            with m.If(col_end):
                m.d.sync += [ox.eq(0), dx.eq(0)]
            with m.Elif(dx_end):
                m.d.sync += ox.eq(ox + 1)
        dy_end = dy == p - 1
        with m.If(take & word_end & col_end):
            m.d.sync += dy.eq(Mux(dy_end, 0, dy + 1))
            with m.If(row == plan.height - 1):
                m.d.sync += [oy.eq(0), dy.eq(0)]
            with m.Elif(dy_end):
                m.d.sync += oy.eq(oy + 1)

        inside = (ox < plan.out_width) & (oy < plan.out_height)
        fresh = (dx == 0) & (dy == 0)
        complete = dx_end & dy_end
        if plan.memories:
            partial = m.submodules.partial = Memory(shape=plan.memories[0].width,
                                                    depth=plan.memories[0].depth, init=[])
            rport = partial.read_port(domain="comb")
            wport = partial.write_port()
            address = ox * words + word if words > 1 else ox
            m.d.comb += [rport.addr.eq(address), wport.addr.eq(address)]
            before = rport.data
        else:
            before = Signal(plan.simd, name="partial")
        combined = self.i.payload.data | Mux(fresh, 0, before)
        with m.If(take & inside):
            with m.If(complete):
                last = (ox == plan.out_width - 1) & (oy == plan.out_height - 1) & word_end
                m.d.sync += [self.o.valid.eq(1), self.o.payload.data.eq(combined),
                             self.o.payload.last.eq(last)]
            with m.Else():
                if plan.memories:
                    m.d.comb += [wport.data.eq(combined), wport.en.eq(1)]
                else:
                    m.d.sync += before.eq(combined)
        return m
