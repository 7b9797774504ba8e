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


class UARTReceiver(wiring.Component):
    """8N1 UART receiver: the ``rx`` pin in, one stream beat per byte out.

    ``rx`` may be asynchronous (it goes through a 2-flip-flop synchroniser). Each bit is sampled
    once, in its middle, so the sender's rate may differ by a few percent. A byte whose stop bit
    is 0 (framing error, or a break) is dropped and reception resumes once the line is idle
    (high). The output register holds one byte: a byte that completes while the previous one has
    not been taken is dropped (overrun), because a stream must not change its payload.

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

        timer = Signal(range(self.divisor))
        index = Signal(range(8))
        shift = Signal(8)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)

        with m.FSM():
            with m.State("IDLE"):
                # Wait half a bit after the falling edge, then sample every bit in its middle.
                with m.If(~rx):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), index.eq(0)]
                    m.next = "DATA"
                    with m.If(rx):
                        m.next = "IDLE"             # a glitch, not a start bit
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), shift.eq(Cat(shift[1:], rx)),
                                 index.eq(index + 1)]
                    with m.If(index == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(~rx):
                        m.next = "BREAK"
                    with m.Else():
                        with m.If(~self.o.valid | self.o.ready):
                            m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                        m.next = "IDLE"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTransmitter(wiring.Component):
    """8N1 UART transmitter: one stream beat per byte in, the ``tx`` pin out (idle high).

    Back-to-back bytes take exactly ``10 * divisor`` cycles each; ``i.ready`` rises in the last
    cycle of a stop bit.

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
        timer = Signal(range(self.divisor))
        left = Signal(range(11))        # bits still to finish, start bit included
        shift = Signal(9)               # data bits, then the stop bit

        m.d.comb += self.i.ready.eq((left == 0) | ((left == 1) & (timer == 0)))
        with m.If(self.i.ready):
            with m.If(self.i.valid):
                m.d.sync += [self.tx.eq(0), shift.eq(Cat(self.i.payload, 1)), left.eq(10),
                             timer.eq(self.divisor - 1)]
            with m.Else():
                m.d.sync += left.eq(0)
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [self.tx.eq(shift[0]), shift.eq(Cat(shift[1:], 1)), left.eq(left - 1),
                         timer.eq(self.divisor - 1)]
        return m
