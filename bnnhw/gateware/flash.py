"""Reading an SPI NOR flash once after reset: the source of the weight image.

:class:`SPIFlashReader` speaks the two commands every SPI NOR flash has (SPI mode 0, one data
line each way, most significant bit first): ``0xAB`` (release from deep power-down; an iCE40
may leave its configuration flash powered down), then, after ``wake`` cycles, ``0x03`` (read)
with a 24-bit address, followed by ``length`` bytes, handed out on a byte stream. The flash on
the iCEBreaker (a Winbond W25Q128JV) takes ``0x03`` at up to 50 MHz.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FLASH_SIGNATURE", "READ", "RELEASE", "SPIFlashReader"]

READ, RELEASE = 0x03, 0xAB

# The flash pins as the reader drives them: ``cs`` high selects the flash (the board's pin is
# active low; the platform inverts it).
FLASH_SIGNATURE = wiring.Signature({"sck": Out(1), "cs": Out(1), "copi": Out(1),
                                    "cipo": In(1)})


class SPIFlashReader(wiring.Component):
    """Read ``length`` bytes from address ``offset`` of an SPI flash, once, after reset.

    ``flash``: the pins (:data:`FLASH_SIGNATURE`). ``o``: the bytes in order, one beat each;
    while a byte waits there, the clock to the flash stops (SPI allows that). ``done`` rises
    after the last byte was taken. The flash clock is ``half`` clock cycles high and ``half``
    low (``half = 2``: a quarter of the system clock); ``cipo`` is sampled in the cycle ``sck``
    rises, half an SPI period after the flash changed it.

    Parameters
    ----------
    offset : int
        Flash address of the first byte, ``0 .. 2**24 - 1``.
    length : int
        Bytes to read, positive, ``offset + length <= 2**24``.
    half : int
        Clock cycles per half SPI clock period, positive.
    wake : int
        Clock cycles between the release command and the read command (the flash's
        ``tRES1``, 3 us for the W25Q128JV), and before the release command, positive.
    """

    def __init__(self, *, offset, length, half=2, wake=1024):
        for name, value in (("offset", offset), ("length", length), ("half", half),
                            ("wake", wake)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {value!r}")
        if not 0 <= offset < 1 << 24:
            raise ValueError(f"offset must be in 0..{(1 << 24) - 1}, not {offset}")
        if length < 1 or offset + length > 1 << 24:
            raise ValueError(f"length must be positive and end within 16 MiB, not {length}")
        for name, value in (("half", half), ("wake", wake)):
            if value < 1:
                raise ValueError(f"{name} must be positive, not {value}")
        self.offset, self.length, self.half, self.wake = offset, length, half, wake
        super().__init__({"flash": Out(FLASH_SIGNATURE), "o": Out(stream.Signature(8)),
                          "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        flash = self.flash
        # The bit engine: data goes out on `copi` from the top of `out` (changed while `sck` is
        # low), comes in from `cipo` into the bottom of `inp` (sampled as `sck` rises). `phase`
        # counts the cycles of each half of the SPI clock; `shifting` and `final` (this is the
        # last bit) are flip-flops, so that no compare lies on the way to the state machine.
        out = Signal(32)
        inp = Signal(8)
        count = Signal(range(33))
        final = Signal()
        shifting = Signal()
        phase = Signal(range(self.half))
        m.d.comb += flash.copi.eq(out[-1])
        with m.If(shifting):
            m.d.sync += phase.eq(Mux(phase == 0, self.half - 1, phase - 1))
            with m.If(phase == 0):
                with m.If(~flash.sck):
                    m.d.sync += [flash.sck.eq(1), inp.eq(Cat(flash.cipo, inp[:-1]))]
                with m.Else():
                    m.d.sync += [flash.sck.eq(0), out.eq(out << 1), count.eq(count - 1),
                                 final.eq(count == 2)]
                    with m.If(final):
                        m.d.sync += shifting.eq(0)

        def shift(bits, value=0):
            return [out.eq(value << (32 - bits)), count.eq(bits), final.eq(bits == 1),
                    shifting.eq(1), phase.eq(self.half - 1)]

        # Waits of `wake` cycles: an up counter cleared at their start, its end registered.
        timer = Signal(range(self.wake + 1))
        waited = Signal()
        m.d.sync += [timer.eq(timer + 1), waited.eq(timer == max(0, self.wake - 2))]
        left = Signal(range(self.length + 1), init=self.length)
        last = Signal(init=self.length == 1)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("POWER_UP"):
                # The flash deselected for a while before the first command.
                with m.If(waited):
                    m.d.sync += [flash.cs.eq(1), *shift(8, RELEASE)]
                    m.next = "RELEASE"
            with m.State("RELEASE"):
                with m.If(~shifting):
                    m.d.sync += [flash.cs.eq(0), timer.eq(0), waited.eq(0)]
                    m.next = "WAKE"
            with m.State("WAKE"):
                with m.If(waited):
                    m.d.sync += [flash.cs.eq(1), *shift(32, READ << 24 | self.offset)]
                    m.next = "COMMAND"
            with m.State("COMMAND"):
                with m.If(~shifting):
                    m.next = "READ"
            with m.State("READ"):
                # Shift in a byte once the previous one was taken; hand it out when complete.
                with m.If(~self.o.valid):
                    m.d.sync += shift(8)
                    m.next = "BYTE"
            with m.State("BYTE"):
                with m.If(~shifting):
                    m.d.sync += [self.o.payload.eq(inp), self.o.valid.eq(1), left.eq(left - 1),
                                 last.eq(left == 2)]
                    m.next = "READ"
                    with m.If(last):
                        m.next = "END"
            with m.State("END"):
                with m.If(~self.o.valid):
                    m.d.sync += [flash.cs.eq(0), self.done.eq(1)]
        return m
