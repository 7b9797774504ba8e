"""The board shell: frame parser, reply writer and LEDs around a network, behind a UART.

The bytes on the line follow :mod:`bnnhw.boards.protocol` (its docstring is the format). The
network the shell wraps speaks the network top's port contract, :mod:`bnnhw.gateware.ports`:
its ``ports`` attribute (a :class:`~bnnhw.gateware.ports.Ports`) gives the widths, and its
signature is ``ports.signature()``.

Data path: ``rx pin -> UARTReceiver -> FrameParser -> net -> ReplyWriter -> UARTTransmitter -> tx
pin``, with the parser's error replies going straight to the writer. The UART is
:mod:`bnnhw.boards.uart`.
"""

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal, Value, signed, unsigned
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


def _timeout_counter(m, limit, restart):
    """A timer that expires ``limit`` cycles after the last cycle ``restart`` was high: return
    ``expired``, a flip-flop that stays set until the next ``restart``.

    An up counter cleared by ``restart`` (the flip-flops' own reset input), compared with a
    constant into a register: each counter bit is then one LUT beside its carry cell on an
    iCE40. A reload value, or an enable, merged into the sum LUT kept nextpnr from packing it
    with the carry, and the chain, broken at every bit, was the design's slowest path.
    """
    count = Signal(max(1, (limit - 1).bit_length()), name="timer")
    expired = Signal(name="expired")
    m.d.sync += [count.eq(Mux(restart, 0, count + 1)),
                 expired.eq(~restart & (expired | (count == limit - 2)))]
    return expired


class FrameParser(wiring.Component):
    """Request frames in (bytes), checked pixel frames out; an error status for bad frames.

    Follows :mod:`bnnhw.boards.protocol`. A frame is buffered whole (a memory of ``n_pixels``
    pixels of ``in_bits``, one word of ``in_simd`` pixels per beat) and released on
    ``o_pixels`` only once its length, CRC and pixel range are good and ``i_status`` (the
    network's state, a :class:`protocol.Status`) is ``OK``, so the network never sees a bad
    frame. A bad frame puts its :class:`protocol.Status` on ``o_error`` instead (a good frame
    while ``i_status`` is not ``OK``, that status); if an earlier one is still waiting there,
    the new one is dropped. Inside a frame, ``timeout`` cycles without a byte end it with
    ``TIMEOUT``; after any error the parser looks for the next start byte at once.

    Each byte is taken into a register with what it says (start byte, length bytes, pixel in
    range) and acted on a cycle later, so that every decision starts at flip-flops. ``i.ready``
    is high except from the cycle after the last checksum byte until the frame is released
    (three cycles, then ``n_pixels / in_simd`` beats if the network does not stall; one byte
    more can wait in the register meanwhile); the frame is released one beat per two cycles.

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
            "i_status": In(STATUS_SHAPE, init=int(protocol.Status.OK)),
            "o_pixels": Out(stream.Signature(beat_layout(in_bits * in_simd))),
            "o_error": Out(stream.Signature(STATUS_SHAPE)),
        })

    def elaborate(self, platform):
        m = Module()
        n_words = self.n_pixels // self.in_simd
        # Read and write never meet: the frame is released only once it is written whole.
        m.submodules.buffer = buffer = memory.Memory(
            shape=self.in_bits * self.in_simd, depth=n_words, init=[],
            attrs={"no_rw_check": 1})
        write = buffer.write_port(granularity=self.in_bits)
        read = buffer.read_port()

        # The byte register: `got` says it holds a byte the state machine has not used yet.
        # A state that uses bytes empties it, and it takes the next byte in the same cycle.
        byte, got = Signal(8), Signal()
        is_start, low_ok, high_ok, out_of_range = Signal(), Signal(), Signal(), Signal()
        # Whether the state machine is in a state that uses bytes (a flip-flop: decoded from
        # the state, it was the start of the slowest path).
        use = Signal(init=1)
        m.d.comb += self.i.ready.eq(~got | use)
        with m.If(use):
            m.d.sync += got.eq(0)
        with m.If(self.i.valid & self.i.ready):
            payload = self.i.payload
            m.d.sync += [byte.eq(payload), got.eq(1),
                         is_start.eq(payload == protocol.REQUEST_START),
                         low_ok.eq(payload == self.n_pixels & 0xFF),
                         high_ok.eq(payload == self.n_pixels >> 8),
                         out_of_range.eq(payload[self.in_bits:] != 0 if self.in_bits < 8
                                         else 0)]

        # The CRC register restarts while hunting for a start byte and takes every byte after it.
        restart = Signal()
        m.submodules.crc = checksum = crc16_processor(restart)
        m.d.comb += checksum.data.eq(byte)
        crc_ok = Signal()
        m.d.sync += crc_ok.eq(checksum.match_detected)

        restart_timer = Signal()
        expired = _timeout_counter(m, self.timeout, restart_timer)
        # Pixel lanes one-hot, words counted with a flag for the last one (from flip-flops).
        lane = Signal(self.in_simd, init=1)
        word = Signal(range(n_words))
        word_next = Signal(range(n_words + 1), init=1)
        last = Signal(init=n_words == 1)
        length_low_ok = Signal()
        bad_pixel = Signal()

        # One flip-flop per state (Amaranth's binary state number cost LUT levels on every
        # path): hunting for a start byte, the two length bytes, the pixels, the two checksum
        # bytes, a cycle for the CRC register to take the last byte, a decision, the release.
        names = ("hunt", "length_low", "length_high", "pixels", "check_high", "check_low",
                 "verify", "decide", "release")
        st = {name: Signal(name=f"state_{name}", init=name == "hunt") for name in names}
        framing = Signal()                   # in a state from `length_low` to `check_low`
        begin = st["hunt"] & got & is_start
        timed_out = framing & ~got & expired
        length_bad = st["length_high"] & got & ~(length_low_ok & high_ok)
        end_pixels = st["pixels"] & got & lane[-1] & last
        status_bad = self.i_status != protocol.Status.OK
        refused = st["decide"] & (~crc_ok | bad_pixel | status_bad)
        released = self.o_pixels.valid & self.o_pixels.ready & last
        wait = ~got & ~expired               # a state inside a frame with no byte to use
        m.d.sync += [
            st["hunt"].eq((st["hunt"] & ~begin) | timed_out | length_bad | refused | released),
            st["length_low"].eq(begin | (st["length_low"] & wait)),
            st["length_high"].eq((st["length_low"] & got) | (st["length_high"] & wait)),
            st["pixels"].eq((st["length_high"] & got & ~length_bad)
                            | (st["pixels"] & ((got & ~(lane[-1] & last)) | wait))),
            st["check_high"].eq(end_pixels | (st["check_high"] & wait)),
            st["check_low"].eq((st["check_high"] & got) | (st["check_low"] & wait)),
            st["verify"].eq(st["check_low"] & got),
            st["decide"].eq(st["verify"]),
            st["release"].eq((st["decide"] & ~refused) | (st["release"] & ~released)),
            framing.eq(begin | (framing & ~timed_out & ~length_bad
                                & ~(st["check_low"] & got))),
            use.eq(timed_out | length_bad | refused | released
                   | (use & ~(st["check_low"] & got))),
        ]

        # Every byte after the start byte goes through the CRC and restarts the timeout.
        m.d.comb += [restart.eq(st["hunt"]), checksum.valid.eq(framing & got)]
        m.d.comb += restart_timer.eq(begin | (framing & got))
        with m.If(st["length_low"] & got):
            m.d.sync += length_low_ok.eq(low_ok)
        with m.If(st["length_high"] & got):
            m.d.sync += [bad_pixel.eq(0), lane.eq(1), word.eq(0), word_next.eq(1),
                         last.eq(n_words == 1)]
        with m.If(st["pixels"] & got):
            m.d.comb += write.en.eq(lane)
            m.d.sync += lane.eq(lane.rotate_left(1))
            with m.If(out_of_range):
                m.d.sync += bad_pixel.eq(1)
        with m.If((st["pixels"] & got & lane[-1]) | (self.o_pixels.valid & self.o_pixels.ready)):
            m.d.sync += [word.eq(Mux(last, 0, word_next)),
                         word_next.eq(Mux(last, 1, word_next + 1)),
                         last.eq(Mux(last, n_words == 1, word_next == n_words - 1))]

        # An error goes out a cycle later (registered with its status first), unless an
        # earlier one still waits there.
        error, status = Signal(), Signal(STATUS_SHAPE)
        m.d.sync += [error.eq(timed_out | length_bad | refused),
                     status.eq(Mux(timed_out, protocol.Status.TIMEOUT,
                                   Mux(length_bad, protocol.Status.BAD_LENGTH,
                                       Mux(~crc_ok, protocol.Status.BAD_CHECKSUM,
                                           Mux(bad_pixel, protocol.Status.BAD_PIXEL,
                                               self.i_status)))))]
        with m.If(self.o_error.ready):
            m.d.sync += self.o_error.valid.eq(0)
        with m.If(error & ~self.o_error.valid):
            m.d.sync += [self.o_error.valid.eq(1), self.o_error.payload.eq(status)]

        # The pixel being written goes to every lane; the write enable picks its lane.
        m.d.comb += [write.addr.eq(word),
                     write.data.eq(byte[:self.in_bits].replicate(self.in_simd))]
        # The read port reads the word of the current beat from a register (not from the
        # network's `ready` through a multiplexer, a slow path into the block RAM's address):
        # after a transfer, the next word shows a cycle later (`fresh`), so a beat per two
        # cycles.
        fresh = Signal()
        transfer = self.o_pixels.valid & self.o_pixels.ready
        m.d.sync += fresh.eq(st["decide"] | ~transfer)
        m.d.comb += [self.o_pixels.valid.eq(st["release"] & fresh),
                     read.addr.eq(word),
                     self.o_pixels.payload.data.eq(read.data),
                     self.o_pixels.payload.last.eq(last)]
        return m


class ReplyWriter(wiring.Component):
    """Network results and parser errors in, reply bytes out (:mod:`bnnhw.boards.protocol`).

    A reply is written while its input beat waits: ``i_result`` (or ``i_error``) is taken only
    in the cycle after its last byte is taken, so no copy of the scores is kept. A result waiting at
    the same time as an error goes first. Scores are sign-extended to 16 bits; with ``scores``
    False, replies carry none (``n_scores`` = 0).

    Every byte leaves from a register, and the state machine moves on in the cycle after a
    byte is taken (a flip-flop, ``sent``, says so), so that nothing waits on ``o.ready``
    through logic. A byte per four cycles at most: a UART takes one per ten bit times.

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
        body = [Value.cast(byte).as_unsigned() for byte in body]
        body = [Cat(byte, Const(0, 8 - len(byte))) if len(byte) < 8 else byte for byte in body]
        groups = [Signal(8, name=f"group{g}") for g in range((len(body) + 3) // 4)]
        position = Signal(max(3, (len(body) - 1).bit_length()))
        final = Signal()                     # `position` is at the reply's last body byte
        transfer = self.o.valid & self.o.ready
        sent = Signal()                      # a byte was taken in the previous cycle
        m.d.sync += sent.eq(transfer)

        # One flip-flop per state (with Amaranth's binary state number, the next-state logic
        # was five LUT levels on an iCE40): idle, a cycle to open a reply, the start byte, then
        # per body byte a
        # pick in two steps (`next`, `pick`) and a wait, then the two checksum bytes.
        names = ("idle", "open", "start", "next", "pick", "body", "crc_high", "check_high",
                 "crc_low", "check_low")
        st = {name: Signal(name=f"state_{name}", init=name == "idle") for name in names}
        request = self.i_result.valid | self.i_error.valid
        begin = st["idle"] & request
        m.d.sync += [
            st["idle"].eq((st["idle"] & ~request) | (st["check_low"] & sent)),
            st["open"].eq(begin),
            st["start"].eq(st["open"] | (st["start"] & ~sent)),
            st["next"].eq((st["start"] & sent) | (st["body"] & sent & ~final)),
            st["pick"].eq(st["next"]),
            st["body"].eq(st["pick"] | (st["body"] & ~sent)),
            st["crc_high"].eq(st["body"] & sent & final),
            st["check_high"].eq(st["crc_high"] | (st["check_high"] & ~sent)),
            st["crc_low"].eq(st["check_high"] & sent),
            st["check_low"].eq(st["crc_low"] | (st["check_low"] & ~sent)),
        ]

        # The CRC register restarts while idle, and takes each body byte in the cycle after it
        # was taken (the output register still holds it).
        m.d.comb += [restart.eq(st["idle"]), checksum.valid.eq(st["body"] & sent)]
        with m.If(st["open"]):
            m.d.sync += [is_error.eq(~self.i_result.valid), position.eq(0), final.eq(0)]
        with m.If(st["body"] & sent):
            m.d.sync += [position.eq(position + 1),
                         final.eq(position == Mux(is_error, 1, len(body) - 2))]

        # The byte at `position`, picked in two steps (one multiplexer over the whole body was
        # six LUT levels on an iCE40): first within each group of four bytes (the scores come
        # from afar: two LUT levels), then among the groups, from these registers.
        with m.If(st["next"]):
            for group, register in enumerate(groups):
                part = body[4 * group:4 * group + 4]
                m.d.sync += register.eq(Cat(*part).word_select(position[:2], 8)
                                        if len(part) > 1 else part[0])
        picked = Cat(*groups).word_select(position[2:], 8) if len(groups) > 1 else groups[0]

        # The output register is loaded only in states that wait for nothing, so that its
        # enable does not come through `o.ready`.
        with m.If(transfer):
            m.d.sync += self.o.valid.eq(0)
        for load, value in ((st["open"], protocol.REPLY_START), (st["pick"], picked),
                            (st["crc_high"], checksum.crc[8:]), (st["crc_low"], checksum.crc[:8])):
            with m.If(load):
                m.d.sync += [self.o.payload.eq(value), self.o.valid.eq(1)]
        with m.If(st["check_low"] & sent):
            m.d.comb += [self.i_result.ready.eq(~is_error), self.i_error.ready.eq(is_error)]
        return m


class Shell(wiring.Component):
    """A network behind a UART: the board's whole design apart from clocks and pins.

    Requests on ``rx`` are answered on ``tx`` as :mod:`bnnhw.boards.protocol` says; ``leds``
    holds the class of the last frame the network answered (binary, 0 after reset). One request
    at a time: bytes sent while a frame is handed to the network may be lost. A network that
    loads its weights from the board's flash (``ports.image``) gets the pins through the
    shell's ``flash``; until its image is checked, requests are answered ``LOADING`` (or
    ``BAD_IMAGE``).

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
        members = {"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(ports.cls_width)}
        if ports.image:
            from ..gateware.flash import FLASH_SIGNATURE
            members["flash"] = Out(FLASH_SIGNATURE)
        super().__init__(members)

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

        if ports.image:
            # The network reads its weights from the board's flash; until they are checked,
            # good frames are answered with the load's status.
            from ..gateware.weights import LoadStatus
            wiring.connect(m, net.flash, wiring.flipped(self.flash))
            status = Signal(STATUS_SHAPE, init=protocol.Status.LOADING)
            m.d.sync += status.eq(Mux(net.status == LoadStatus.READY, protocol.Status.OK,
                                      Mux(net.status == LoadStatus.BAD,
                                          protocol.Status.BAD_IMAGE,
                                          protocol.Status.LOADING)))
            m.d.comb += parser.i_status.eq(status)
        return m
