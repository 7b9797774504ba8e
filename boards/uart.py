"""8N1 UART gateware: a receiver (the ``rx`` pin to a byte stream) and a transmitter (a byte
stream to the ``tx`` pin), one stream beat per byte.

The board shell (:mod:`bnnhw.boards.shell`) puts them on both ends of its frame parser and reply
writer; they know nothing of frames.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTReceiver", "UARTTransmitter"]


def _check_divisor(divisor):
    if not isinstance(divisor, int) or isinstance(divisor, bool):
        raise TypeError(f"divisor must be an integer, not {divisor!r}")
    if divisor < 4:
        raise ValueError(f"divisor must be at least 4 clock cycles per bit, not {divisor}")


def _bit_timer(m, divisor):
    """A timer of ``divisor`` cycles or less, whose ``tick`` is a flip-flop (no compare on
    its way to the state machine). Return ``(start, tick)``: ``start(n)`` (a statement list)
    makes ``tick`` high in the ``n``-th cycle from the next one on (``n >= 2``)."""
    count = Signal(range(-2, divisor), name="timer")     # a borrow bit on top
    tick = Signal(name="tick")
    pre = count < 0                                      # the borrow bit: a flip-flop
    with m.If(~pre):
        m.d.sync += count.eq(count - 1)
    m.d.sync += tick.eq(pre & ~tick)

    def start(n):
        return [count.eq(n - 3), tick.eq(0)]
    return start, tick


class UARTReceiver(wiring.Component):
    """8N1 UART receiver: the ``rx`` pin in, one stream beat per byte out.

    ``rx`` may be asynchronous (it goes through a 2-flip-flop synchroniser). Each bit is sampled
    once, in its middle, so the sender's rate may differ by a few percent. A byte whose stop bit
    is 0 (framing error, or a break) is dropped and reception resumes once the line is idle
    (high). The output register holds one byte: a byte that completes while the previous one is
    still there is dropped (overrun), because a stream must not change its payload.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4 (``clock frequency / baud rate``).
    """

    def __init__(self, *, divisor):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        start, tick = _bit_timer(m, self.divisor)
        # Data bits shift in from the top behind a marker bit: once the marker is at the
        # bottom, eight bits are in.
        shift = Signal(9)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                # Wait half a bit after the falling edge, then sample every bit in its middle.
                with m.If(~rx):
                    m.d.sync += start(self.divisor // 2)
                    m.next = "START"
            with m.State("START"):
                with m.If(tick):
                    m.d.sync += [start(self.divisor), shift.eq(1 << 8)]
                    m.next = "DATA"
                    with m.If(rx):
                        m.next = "IDLE"             # a glitch, not a start bit
            with m.State("DATA"):
                with m.If(tick):
                    m.d.sync += [start(self.divisor), shift.eq(Cat(shift[1:], rx))]
                    with m.If(shift[1]):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(tick):
                    with m.If(~rx):
                        m.next = "BREAK"
                    with m.Else():
                        with m.If(~self.o.valid):
                            m.d.sync += [self.o.payload.eq(shift[1:]), self.o.valid.eq(1)]
                        m.next = "IDLE"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTransmitter(wiring.Component):
    """8N1 UART transmitter: one stream beat per byte in, the ``tx`` pin out (idle high).

    Back-to-back bytes take exactly ``10 * divisor`` cycles each; ``i.ready`` rises in the last
    cycle of a stop bit. ``i.ready`` and ``tx`` come from flip-flops through at most one LUT.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4 (``clock frequency / baud rate``).
    """

    def __init__(self, *, divisor):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        start, tick = _bit_timer(m, self.divisor)
        # The line's bits from the current one on (ones when idle), and a thermometer of the
        # bits still to send: bit 0 set while sending, bit 1 clear in the stop bit.
        bits = Signal(10, init=(1 << 10) - 1)
        busy = Signal(10)
        m.d.comb += [self.tx.eq(bits[0]),
                     self.i.ready.eq(~busy[0] | (~busy[1] & tick))]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [bits.eq(Cat(0, self.i.payload, 1)), busy.eq((1 << 10) - 1),
                         start(self.divisor)]
        with m.Elif(tick & busy[0]):
            m.d.sync += [bits.eq(Cat(bits[1:], 1)), busy.eq(busy[1:]), start(self.divisor)]
        return m
