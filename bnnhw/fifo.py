"""A small FIFO for a producer that never overruns it (it counts credits)."""

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CreditFIFO"]


class CreditFIFO(wiring.Component):
    """``depth`` entries of ``width`` bits, written without a ready signal, read as a stream.

    The writer must hold a credit per entry (at most ``depth`` entries outstanding, counting
    the one in the output register); the FIFO does not check, because the check was the
    slowest path of the Amaranth FIFOs on an iCE40. Write and read pointers are one-hot rings
    and the fill level is a thermometer code, so every control signal is a flip-flop or one LUT
    away from flip-flops. ``o`` is registered.

    Latency: an entry written in cycle t is on ``o`` in cycle t + 2. Throughput: one entry per
    cycle.

    Parameters
    ----------
    width, depth : int
        Positive; ``depth`` counts the output register.
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
        n = max(1, self.depth - 1)           # entries besides the output register
        storage = [Signal(self.width, name=f"entry{k}") for k in range(n)]
        produce = Signal(n, init=1)
        consume = Signal(n, init=1)
        level = Signal(n)                    # thermometer: bit k set while more than k held

        for k in range(n):
            with m.If(self.w_en & produce[k]):
                m.d.sync += storage[k].eq(self.w_data)
        with m.If(self.w_en):
            m.d.sync += produce.eq(Cat(produce[-1], produce[:-1]))

        # Refill the output register when it is empty or being taken.
        pop = level[0] & (~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(pop):
            m.d.sync += [self.o.valid.eq(1), consume.eq(Cat(consume[-1], consume[:-1]))]
            # An AND-OR multiplexer: the one-hot pointer needs no decoder.
            selected = 0
            for k in range(n):
                selected = selected | (storage[k] & consume[k].replicate(self.width))
            m.d.sync += self.o.payload.eq(selected)
        with m.If(self.w_en & ~pop):
            m.d.sync += level.eq(Cat(1, level[:-1]))
        with m.If(pop & ~self.w_en):
            m.d.sync += level.eq(Cat(level[1:], 0))
        return m
