"""The sliding-window generator: a stream of pixels in, the windows of a convolution out.

FINN's ConvolutionInputGenerator idea, written anew: rows of the input image go into a ring
of line buffers in RAM, and each ``kh x kw`` window (stride 1, "valid") is read out of it,
row by row, pixel by pixel, a word of ``simd`` channels at a time, for the matrix engine that
follows to take as one input vector per window.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .fifo import CreditFIFO
from .glue import check_positive, step
from .plan import window_plan
from .ports import beat_layout

__all__ = ["WindowGenerator"]


class WindowGenerator(wiring.Component):
    """Every ``kh x kw`` window of each ``height x width`` frame of ``channels``-value pixels.

    Input ``i``: a frame in stream order (:mod:`bnnhw.tensor`), ``simd`` values of ``bits``
    bits per beat (``channels / simd`` beats per pixel). Output ``o``: for each window, in
    stream order of its top-left corner (row by row, then column by column), its values in
    the order ``(ky, kx, channel)``, ``simd`` per beat: ``kh * kw * channels / simd`` beats per
    window, ``(height - kh + 1) * (width - kw + 1)`` windows per frame. ``last`` is set on a
    frame's final beat. Value ``k`` of a window is column ``k`` of the im2col matrix the golden
    model builds (:meth:`bnnhw.kinds.ConvLayer.golden`).

    Throughput: one output beat per cycle while rows are there; rows are taken at one beat per
    cycle into a ring of ``2 * kh`` line buffers, so the first rows of the next frame are
    written while the last windows of a frame are read. A window's row is read only once the
    whole input row is in. Latency: ``kh`` input rows, then three cycles (memory read,
    register, FIFO) per beat.

    Parameters
    ----------
    height, width, channels : int
        The input frame; ``kh <= height``, ``kw <= width``.
    kh, kw : int
        Window rows and columns.
    simd : int
        Values per beat, dividing ``channels``.
    bits : int
        Bits per value.
    memory : str
        ``"block"`` or ``"distributed"`` RAM for the line buffers.
    """

    def __init__(self, *, height, width, channels, kh, kw, simd, bits, memory="block"):
        check_positive(height=height, width=width, channels=channels, kh=kh, kw=kw, simd=simd,
                       bits=bits)
        if kh > height or kw > width:
            raise ValueError(f"a {kh}x{kw} window does not fit a {height}x{width} frame")
        if channels % simd:
            raise ValueError(f"simd {simd} does not divide the {channels} channels")
        self.plan = window_plan(height=height, width=width, channels=channels, kh=kh, kw=kw,
                                simd=simd, bits=bits, memory=memory)
        self.memory = memory
        super().__init__({"i": In(stream.Signature(beat_layout(simd * bits))),
                          "o": Out(stream.Signature(beat_layout(simd * bits)))})

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        words, slots, kh, kw = plan.words, plan.slots, plan.kh, plan.kw
        ring = plan.memories[0]
        lines = m.submodules.lines = Memory(shape=ring.width, depth=ring.depth, init=[],
                                            attrs={"ram_style": ring.style})
        wport, rport = lines.write_port(), lines.read_port()

        def address(word, column, slot):
            fields = [(word, plan.word_bits), (column, plan.column_bits), (slot, None)]
            return Cat(*(value if width is None else value[:width]
                         for value, width in fields if width != 0))

        # Complete rows in the ring that the reader has not released yet, as of the start of
        # the cycle: both sides see the other's last change a cycle later, never too early.
        avail = Signal(range(slots + 1))

        # Writer: pixel words in stream order into the row slot `wslot`. A row is started only
        # while a slot is free (fewer than `slots` complete rows held); once started it goes on.
        wword, wcol = Signal(range(words)), Signal(range(plan.width))
        wslot = Signal(range(slots))
        mid_row = Signal()
        m.d.comb += self.i.ready.eq(mid_row | (avail < slots))
        write = self.i.valid & self.i.ready
        m.d.comb += [wport.addr.eq(address(wword, wcol, wslot)),
                     wport.data.eq(self.i.payload.data), wport.en.eq(write)]
        word_end = step(m, wword, words, write)
        col_end = step(m, wcol, plan.width, write & word_end)
        row_end = word_end & col_end
        step(m, wslot, slots, write & row_end)
        with m.If(write):
            m.d.sync += mid_row.eq(~row_end)

        # Reader: for each output row (its rows from slot `tslot` on), each window, each of
        # its rows `ky` (slot `rslot`), columns `kx` (input column `rcol`) and channel words.
        credits = Signal(range(plan.fifo_depth + 1), init=plan.fifo_depth)
        issue = Signal()
        m.d.comb += issue.eq((avail >= kh) & (credits != 0))
        rword, rkx, rky = Signal(range(words)), Signal(range(kw)), Signal(range(kh))
        rox, roy = Signal(range(plan.out_width)), Signal(range(plan.out_height))
        tslot, rslot = Signal(range(slots)), Signal(range(slots))
        rcol = Signal(range(plan.width))
        m.d.comb += rport.addr.eq(address(rword, rcol, rslot))

        word_end = step(m, rword, words, issue)
        kx_end = step(m, rkx, kw, issue & word_end)
        ky_end = step(m, rky, kh, issue & word_end & kx_end)
        window_end = word_end & kx_end & ky_end
        ox_end = step(m, rox, plan.out_width, issue & window_end)
        oy_end = step(m, roy, plan.out_height, issue & window_end & ox_end)
        frame_end = window_end & ox_end & oy_end

        def slot_plus(slot, n):
            total = slot + n
            return Mux(total >= slots, total - slots, total)

        # An output row is done: release its top row, or at a frame's end all kh rows that are
        # left of the frame.
        release = Mux(issue & window_end & ox_end, Mux(oy_end, kh, 1), 0)
        with m.If(issue):
            with m.If(window_end & ox_end):
                m.d.sync += [tslot.eq(slot_plus(tslot, release)),
                             rslot.eq(slot_plus(tslot, release)), rcol.eq(0)]
            with m.Elif(window_end):
                m.d.sync += [rslot.eq(tslot), rcol.eq(rox + 1)]
            with m.Elif(word_end & kx_end):
                m.d.sync += [rslot.eq(slot_plus(rslot, 1)), rcol.eq(rox)]
            with m.Elif(word_end):
                m.d.sync += rcol.eq(rcol + 1)
        m.d.sync += avail.eq(avail + (write & row_end) - release)

        # Read pipeline: address -> memory -> register -> FIFO; credits count the FIFO's free
        # entries less the reads in flight, so nothing read is ever dropped.
        valid1, last1 = Signal(), Signal()
        valid2, last2 = Signal(), Signal()
        data2 = Signal(ring.width)
        m.d.sync += [valid1.eq(issue), last1.eq(issue & frame_end),
                     valid2.eq(valid1), last2.eq(last1), data2.eq(rport.data)]
        fifo = m.submodules.fifo = CreditFIFO(width=ring.width + 1, depth=plan.fifo_depth)
        m.d.comb += [fifo.w_en.eq(valid2), fifo.w_data.eq(Cat(data2, last2))]
        wiring.connect(m, fifo.o, wiring.flipped(self.o))
        taken = self.o.valid & self.o.ready
        m.d.sync += credits.eq(credits - issue + taken)
        return m
