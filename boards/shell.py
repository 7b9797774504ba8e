"""The board shell: frame parser, reply writer and LEDs around a network, behind a UART.

The bytes on the line follow :mod:`bnnhw.boards.protocol` (its docstring is the format). The
network the shell wraps speaks the network top's port contract, :mod:`bnnhw.gateware.ports`:
its ``ports`` attribute (a :class:`~bnnhw.gateware.ports.Ports`) gives the widths, and its
signature is ``ports.signature()``.

Data path: ``rx pin -> UARTReceiver -> FrameParser -> net -> ReplyWriter -> UARTTransmitter -> tx
pin``, with the parser's error replies going straight to the writer. The UART is
:mod:`bnnhw.boards.uart`.
"""

from amaranth import Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import crc, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..gateware.ports import Ports, beat_layout, cls_width, result_layout
from . import protocol
from .uart import UARTReceiver, UARTTransmitter, _check_divisor

__all__ = ["STATUS_SHAPE", "CRC16", "crc16_processor", "FrameParser", "ReplyWriter", "Shell"]

STATUS_SHAPE = unsigned(3)      # holds every protocol.Status
CRC16 = crc.catalog.CRC16_IBM_3740(data_width=8)    # :func:`protocol.crc16`, a byte per word


def crc16_processor(restart):
    """Return an :mod:`amaranth.lib.crc` processor of :func:`protocol.crc16`, one byte per clock.

    Its register goes back to 0xFFFF in each cycle ``restart`` (a signal) is high, and takes
    ``data`` in each cycle ``valid`` is high and ``restart`` low; ``crc`` shows it one cycle
    later.
    ``match_detected`` is high when the bytes taken end with their own CRC, high byte first
    (the register is 0, the residue). Its ``start`` input is left unused.
    """
    # Restarted by a reset, not by `start`: `start` would be one more input to every bit's XOR
    # (on an iCE40, about 20 more LUTs in the reply writer, and its byte mux -> CRC path is
    # the writer's critical one); a reset goes into the flip-flops' own set or reset input.
    return ResetInserter(restart)(CRC16.create())


class FrameParser(wiring.Component):
    """Request frames in (bytes), checked pixel frames out; an error status for bad frames.

    Follows :mod:`bnnhw.boards.protocol`. A frame is buffered whole (a memory of ``n_pixels``
    pixels of ``in_bits``, one word of ``in_simd`` pixels per beat) and released on
    ``o_pixels`` only once its length, CRC and pixel range are good, so the network never sees
    a bad frame. A bad frame puts its :class:`protocol.Status` on ``o_error`` instead; if an
    earlier one is still waiting there, the new one is dropped. Inside a frame, ``timeout``
    cycles without a byte end it with ``TIMEOUT``; after any error the parser looks for the
    next start byte at once.
    ``i.ready`` is high except from the last checksum byte until the frame is released (one
    cycle, then ``n_pixels / in_simd`` beats if the network does not stall); the frame is
    released one beat per cycle.

    Parameters
    ----------
    n_pixels : int
        Pixels per frame, ``1 .. 65535``, a multiple of ``in_simd``.
    in_bits : int
        Bits per pixel, ``1 .. 8``.
    in_simd : int
        Pixels per output beat.
    timeout : int
        Clock cycles without a byte that end a frame, positive.
    """

    def __init__(self, *, n_pixels, in_bits, in_simd, timeout):
        for name, value in (("n_pixels", n_pixels), ("in_bits", in_bits),
                            ("in_simd", in_simd), ("timeout", timeout)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {value!r}")
        if not 1 <= in_bits <= 8:
            raise ValueError(f"in_bits must be in 1..8, not {in_bits}")
        if in_simd < 1:
            raise ValueError(f"in_simd must be positive, not {in_simd}")
        if not 1 <= n_pixels <= protocol.MAX_PIXELS or n_pixels % in_simd:
            raise ValueError(f"n_pixels must be a multiple of in_simd = {in_simd} in "
                             f"1..{protocol.MAX_PIXELS}, not {n_pixels}")
        if timeout < 1:
            raise ValueError(f"timeout must be positive, not {timeout}")
        self.n_pixels, self.in_bits, self.in_simd = n_pixels, in_bits, in_simd
        self.timeout = timeout
        super().__init__({
            "i": In(stream.Signature(8)),
            "o_pixels": Out(stream.Signature(beat_layout(in_bits * in_simd))),
            "o_error": Out(stream.Signature(STATUS_SHAPE)),
        })

    def elaborate(self, platform):
        m = Module()
        n_words = self.n_pixels // self.in_simd
        m.submodules.buffer = buffer = memory.Memory(
            shape=self.in_bits * self.in_simd, depth=n_words, init=[])
        write = buffer.write_port(granularity=self.in_bits)
        read = buffer.read_port()

        # The CRC register restarts while hunting for a start byte and takes every byte after it.
        restart = Signal()
        m.submodules.crc = checksum = crc16_processor(restart)
        byte = self.i.payload
        m.d.comb += checksum.data.eq(byte)

        word = Signal(range(n_words))
        lane = Signal(range(self.in_simd))
        timer = Signal(range(self.timeout))
        length_low_ok = Signal()
        bad_pixel = Signal()

        with m.If(self.o_error.ready):
            m.d.sync += self.o_error.valid.eq(0)

        def report(status):
            with m.If(~self.o_error.valid | self.o_error.ready):
                m.d.sync += [self.o_error.payload.eq(int(status)), self.o_error.valid.eq(1)]
            m.next = "HUNT"

        def in_frame():
            # Every byte after the start byte goes through the CRC and restarts the timeout.
            m.d.comb += [self.i.ready.eq(1), checksum.valid.eq(self.i.valid)]
            with m.If(self.i.valid):
                m.d.sync += timer.eq(self.timeout - 1)
            with m.Elif(timer == 0):
                report(protocol.Status.TIMEOUT)
            with m.Else():
                m.d.sync += timer.eq(timer - 1)

        # The pixel being written goes to every lane; the write enable picks its lane.
        m.d.comb += [write.addr.eq(word),
                     write.data.eq(byte[:self.in_bits].replicate(self.in_simd))]
        # The read port shows the word of the current beat, and the next one after a transfer.
        last = word == n_words - 1
        advance = self.o_pixels.valid & self.o_pixels.ready & ~last
        m.d.comb += [read.addr.eq(Mux(advance, word + 1, word)),
                     self.o_pixels.payload.data.eq(read.data),
                     self.o_pixels.payload.last.eq(last)]

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += [self.i.ready.eq(1), restart.eq(1)]
                with m.If(self.i.valid & (byte == protocol.REQUEST_START)):
                    m.d.sync += timer.eq(self.timeout - 1)
                    m.next = "LENGTH_LOW"
            with m.State("LENGTH_LOW"):
                in_frame()
                with m.If(self.i.valid):
                    m.d.sync += length_low_ok.eq(byte == self.n_pixels & 0xFF)
                    m.next = "LENGTH_HIGH"
            with m.State("LENGTH_HIGH"):
                in_frame()
                with m.If(self.i.valid):
                    m.d.sync += [word.eq(0), lane.eq(0), bad_pixel.eq(0)]
                    m.next = "PIXELS"
                    with m.If(~length_low_ok | (byte != self.n_pixels >> 8)):
                        report(protocol.Status.BAD_LENGTH)
            with m.State("PIXELS"):
                in_frame()
                with m.If(self.i.valid):
                    for j in range(self.in_simd):
                        m.d.comb += write.en[j].eq(lane == j)
                    if self.in_bits < 8:
                        with m.If(byte[self.in_bits:] != 0):
                            m.d.sync += bad_pixel.eq(1)
                    with m.If(lane == self.in_simd - 1):
                        m.d.sync += [lane.eq(0), word.eq(word + 1)]
                        with m.If(last):
                            m.d.sync += word.eq(0)
                            m.next = "CHECK_HIGH"
                    with m.Else():
                        m.d.sync += lane.eq(lane + 1)
            with m.State("CHECK_HIGH"):
                in_frame()
                with m.If(self.i.valid):
                    m.next = "CHECK_LOW"
            with m.State("CHECK_LOW"):
                in_frame()
                with m.If(self.i.valid):
                    m.next = "VERIFY"
            with m.State("VERIFY"):
                # The CRC of everything after the start byte, checksum included, is 0.
                with m.If(~checksum.match_detected):
                    report(protocol.Status.BAD_CHECKSUM)
                with m.Elif(bad_pixel):
                    report(protocol.Status.BAD_PIXEL)
                with m.Else():
                    m.next = "RELEASE"
            with m.State("RELEASE"):
                m.d.comb += self.o_pixels.valid.eq(1)
                with m.If(self.o_pixels.ready):
                    m.d.sync += word.eq(word + 1)
                    with m.If(last):
                        m.d.sync += word.eq(0)
                        m.next = "HUNT"
        return m


class ReplyWriter(wiring.Component):
    """Network results and parser errors in, reply bytes out (:mod:`bnnhw.boards.protocol`).

    A reply is written while its input beat waits: ``i_result`` (or ``i_error``) is taken only
    in the cycle its last byte is taken, so no copy of the scores is kept. A result waiting at
    the same time as an error goes first. Scores are sign-extended to 16 bits; with ``scores``
    False, replies carry none (``n_scores`` = 0).

    Parameters
    ----------
    classes : int
        Number of classes (and of scores), ``1 .. 255``; the class field is as wide as the
        network top's (:func:`bnnhw.gateware.ports.cls_width`).
    score_width : int
        Width of a signed score, ``1 .. 16`` (any positive width if ``scores`` is False).
    scores : bool
        Whether replies carry the scores.
    """

    def __init__(self, *, classes, score_width, scores=True):
        for name, value in (("classes", classes), ("score_width", score_width)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {value!r}")
        if not 1 <= classes <= 255:
            raise ValueError(f"classes must be in 1..255, not {classes}")
        if score_width < 1 or (scores and score_width > protocol.SCORE_BITS):
            raise ValueError(f"score_width must be in 1..{protocol.SCORE_BITS} for replies "
                             f"with scores, not {score_width}")
        self.classes, self.score_width = classes, score_width
        self.cls_width = cls_width(classes)
        self.scores = bool(scores)
        super().__init__({
            "i_result": In(stream.Signature(result_layout(classes, score_width))),
            "i_error": In(stream.Signature(STATUS_SHAPE)),
            "o": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        result = self.i_result.payload
        is_error = Signal()
        # The CRC register restarts while idle and takes every body byte as it is sent.
        restart = Signal()
        m.submodules.crc = checksum = crc16_processor(restart)
        m.d.comb += checksum.data.eq(self.o.payload)

        # Bytes after the start byte and before the checksum; an error reply has the first 3.
        body = [Mux(is_error, self.i_error.payload, int(protocol.Status.OK)),
                Mux(is_error, 0, result.cls),
                Mux(is_error, 0, self.classes if self.scores else 0)]
        if self.scores:
            for score in result.scores:
                wide = Signal(signed(protocol.SCORE_BITS))
                m.d.comb += wide.eq(score)
                body += [wide[:8], wide[8:]]
        position = Signal(range(len(body)))

        transfer = self.o.valid & self.o.ready
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += restart.eq(1)
                with m.If(self.i_result.valid | self.i_error.valid):
                    m.d.sync += [is_error.eq(~self.i_result.valid), position.eq(0)]
                    m.next = "START"
            with m.State("START"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(protocol.REPLY_START)]
                with m.If(self.o.ready):
                    m.next = "BODY"
            with m.State("BODY"):
                m.d.comb += self.o.valid.eq(1)
                with m.Switch(position):
                    for index, value in enumerate(body):
                        with m.Case(index):
                            m.d.comb += self.o.payload.eq(value)
                m.d.comb += checksum.valid.eq(transfer)
                with m.If(transfer):
                    m.d.sync += position.eq(position + 1)
                    with m.If(position == Mux(is_error, 2, len(body) - 1)):
                        m.next = "CHECK_HIGH"
            with m.State("CHECK_HIGH"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(checksum.crc[8:])]
                with m.If(self.o.ready):
                    m.next = "CHECK_LOW"
            with m.State("CHECK_LOW"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(checksum.crc[:8])]
                with m.If(self.o.ready):
                    m.d.comb += [self.i_result.ready.eq(~is_error),
                                 self.i_error.ready.eq(is_error)]
                    m.next = "IDLE"
        return m


class Shell(wiring.Component):
    """A network behind a UART: the board's whole design apart from clocks and pins.

    Requests on ``rx`` are answered on ``tx`` as :mod:`bnnhw.boards.protocol` says; ``leds``
    holds the class of the last frame the network answered (binary, 0 after reset). One request
    at a time: bytes sent while a frame is handed to the network may be lost.

    Parameters
    ----------
    net : wiring.Component
        The network, speaking :mod:`bnnhw.gateware.ports` (a ``ports`` attribute and the
        signature it gives); the shell elaborates it as its submodule ``net``.
    divisor : int
        Clock cycles per UART bit, at least 4 (``clock frequency / baud rate``).
    timeout : int or None
        Clock cycles without a byte that end a frame in progress (answered ``TIMEOUT``); at
        least 2 byte times (``20 * divisor``). None means 1024 byte times (89 ms at 115200 baud).
    scores : bool
        Whether replies carry the class scores (``net.score_width`` must then be at most 16).
    """

    def __init__(self, net, *, divisor, timeout=None, scores=True):
        _check_divisor(divisor)
        if timeout is None:
            timeout = 1024 * 10 * divisor
        if not isinstance(timeout, int) or isinstance(timeout, bool):
            raise TypeError(f"timeout must be an integer or None, not {timeout!r}")
        if timeout < 20 * divisor:
            raise ValueError(f"timeout must be at least 2 byte times ({20 * divisor} clock "
                             f"cycles), not {timeout}")
        ports = getattr(net, "ports", None)
        if not isinstance(ports, Ports):
            raise TypeError(f"net must speak the network top's port contract (a `ports` "
                            f"attribute of type bnnhw.gateware.ports.Ports), not {net!r}")
        score_limit = protocol.SCORE_BITS if scores else 1 << 16
        for name, high in (("in_bits", 8), ("in_simd", protocol.MAX_PIXELS),
                           ("n_pixels", protocol.MAX_PIXELS), ("classes", 255),
                           ("score_width", score_limit)):
            value = getattr(ports, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"net.ports.{name} must be an integer, not {value!r}")
            if not 1 <= value <= high:
                too_wide = name == "score_width" and scores and value > high
                hint = "; pass scores=False" if too_wide else ""
                raise ValueError(f"net.ports.{name} must be in 1..{high}, not {value}{hint}")
        if ports.n_pixels % ports.in_simd:
            raise ValueError(f"net.ports.n_pixels must be a multiple of net.ports.in_simd = "
                             f"{ports.in_simd}, not {ports.n_pixels}")
        signature = getattr(net, "signature", None)
        members = signature.members if isinstance(signature, wiring.Signature) else {}
        for name, member in ports.signature().members.items():
            if members.get(name) != member:
                raise ValueError(f"net.{name} must be {member!r}, not {members.get(name)!r}")
        self.net, self.ports = net, ports
        self.divisor, self.timeout, self.scores = divisor, timeout, bool(scores)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1),
                          "leds": Out(ports.cls_width)})

    def elaborate(self, platform):
        m = Module()
        net, ports = self.net, self.ports
        m.submodules.net = net
        m.submodules.receiver = receiver = UARTReceiver(divisor=self.divisor)
        m.submodules.parser = parser = FrameParser(
            n_pixels=ports.n_pixels, in_bits=ports.in_bits, in_simd=ports.in_simd,
            timeout=self.timeout)
        m.submodules.writer = writer = ReplyWriter(
            classes=ports.classes, score_width=ports.score_width, scores=self.scores)
        m.submodules.transmitter = transmitter = UARTTransmitter(divisor=self.divisor)

        m.d.comb += [receiver.rx.eq(self.rx), self.tx.eq(transmitter.tx)]
        wiring.connect(m, receiver.o, parser.i)
        wiring.connect(m, parser.o_pixels, net.i)
        wiring.connect(m, net.o, writer.i_result)
        wiring.connect(m, parser.o_error, writer.i_error)
        wiring.connect(m, writer.o, transmitter.i)

        with m.If(net.o.valid & net.o.ready):
            m.d.sync += self.leds.eq(net.o.payload.cls)
        return m
