"""A small FIFO for a producer that never overruns it (it counts credits)."""

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CreditFIFO"]


class CreditFIFO(wiring.Component):
    """``depth`` entries of ``width`` bits, written without a ready signal, read as a stream.

    The writer must hold a credit per entry (at most ``depth`` entries outstanding); the FIFO
    does not check, because the check was the slowest path of the Amaranth FIFOs on an iCE40.
    It is a shift register whose head is the output register, with the fill level one-hot:
    a read shifts every entry down, a write lands just above the last entry held. Every entry
    then chooses among three values (hold, the one above, the written word) from flip-flops,
    where a read pointer needed a multiplexer as deep as the FIFO (four LUT levels on an
    iCE40 at ten entries).

    Latency: an entry written in cycle t is on ``o`` in cycle t + 1. Throughput: one entry per
    cycle.

    Parameters
    ----------
    width, depth : int
        Positive.
    """
    def __init__(self, *, width, depth):
        for name, value in (("width", width), ("depth", depth)):
            if not isinstance(value, int) or value <= 0:
                raise TypeError(f"{name} must be a positive integer, not {value!r}")
        self.width, self.depth = width, depth
        super().__init__({
            "w_en": In(1), "w_data": In(width),
            "o": Out(stream.Signature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.depth
        entries = [Signal(self.width, name=f"entry{k}") for k in range(n)]
        # One-hot fill level: tail[j] while j entries are held. Entry k is the first free one
        # when tail[k], the last held one when tail[k + 1].
        tail = Signal(n + 1, init=1)
        pop = self.o.valid & self.o.ready
        m.d.comb += [self.o.valid.eq(~tail[0]), self.o.payload.eq(entries[0])]

        for k in range(n):
            # Both candidates come from flip-flops; the read picks one in the last LUT.
            above = entries[k + 1] if k + 1 < n else entries[k]
            shifted = Mux(self.w_en & tail[k + 1], self.w_data, above)
            kept = Mux(self.w_en & tail[k], self.w_data, entries[k])
            m.d.sync += entries[k].eq(Mux(pop, shifted, kept))
        # The fill level likewise: each bit picks between its value after a read and its
        # value without one, both from flip-flops, so the reader's `ready` (a combinational
        # path from the next stage) meets a single LUT before each flip-flop.
        for k in range(n + 1):
            below = tail[k - 1] if k > 0 else 0
            above = tail[k + 1] if k < n else 0
            m.d.sync += tail[k].eq(Mux(pop, Mux(self.w_en, tail[k], above),
                                       Mux(self.w_en, below, tail[k])))
        return m
