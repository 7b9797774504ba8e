# amaranth: UnusedElaboratable=no
"""Formal checks (SymbiYosys + Yices) of the board shell's frame parser: the stream contract on
both its outputs; every pixel frame it releases is the pixels of a good request that came in
(start byte, length, CRC-16 and pixel range as bnnhw/boards/protocol.py states them, written out
plainly here), beat by beat with ``last`` on the final beat, and no frame released twice; never
more replies (frames and errors) than start bytes; an error never says OK; and on a clean line
of back-to-back requests, every request leaves as a frame within a bounded time, without an
error. Each is also shown to catch a deliberately broken parser, with a counterexample trace."""

import pytest
from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Assume
from amaranth.lib import wiring

from bnnhw.boards import protocol
from bnnhw.boards.shell import FrameParser
from bnnhw.formal import bounded_liveness, drive, elements, run, solver_available, watch

pytestmark = pytest.mark.skipif(not solver_available(),
                                reason="no yices-smt2: install the formal extra")


def crc16(m, data):
    """The CRC-16 of the 8-bit values ``data``, as the protocol states it: polynomial 0x1021,
    initial value 0xFFFF, most significant bit first, no reflection, no final XOR. A bit at a
    time, each step a signal of its own."""
    crc = Const(0xFFFF, 16)
    for k, byte in enumerate(data):
        for bit in reversed(range(8)):
            step = Signal(16, name=f"crc_{k}_{bit}")
            m.d.comb += step.eq(Cat(0, crc[:15]) ^ Mux(crc[15] ^ byte[bit], 0x1021, 0))
            crc = step
    return crc


def good_request(m, request, n_pixels, in_bits):
    """Whether the ``n_pixels + 5`` bytes ``request`` are a request the board must accept."""
    crc = crc16(m, request[1:3 + n_pixels])
    ok = ((request[0] == protocol.REQUEST_START) & (request[1] == n_pixels & 0xFF)
          & (request[2] == n_pixels >> 8)
          & (request[3 + n_pixels] == crc[8:]) & (request[4 + n_pixels] == crc[:8]))
    for pixel in request[3:3 + n_pixels]:
        ok = ok & (pixel < (1 << in_bits))
    return ok


def clean_line(m, stream, n_pixels, in_bits):
    """Offer good requests back to back on ``stream``, a byte in every cycle, any pixels; return
    a signal that is high in the cycle a request's final byte is taken."""
    drive(m, stream, valid=1)
    size = n_pixels + 5
    position = Signal(range(size))
    taken = stream.valid & stream.ready
    final = position == size - 1
    with m.If(taken):
        m.d.sync += position.eq(Mux(final, 0, position + 1))
    pixels = [Signal(8, name=f"sent{k}") for k in range(n_pixels)]
    crc = crc16(m, [Const(n_pixels & 0xFF, 8), Const(n_pixels >> 8, 8)] + pixels)
    byte = stream.payload
    for k, value in enumerate([protocol.REQUEST_START, n_pixels & 0xFF, n_pixels >> 8]):
        with m.If(position == k):
            m.d.comb += Assume(byte == value)
    for k, pixel in enumerate(pixels):
        with m.If(position == 3 + k):
            m.d.comb += Assume(byte < (1 << in_bits))
            with m.If(taken):
                m.d.sync += pixel.eq(byte)
    with m.If(position == size - 2):
        m.d.comb += Assume(byte == crc[8:])
    with m.If(final):
        m.d.comb += Assume(byte == crc[:8])
    return taken & final


def check_parser(n_pixels, in_bits, in_simd, *, timeout=3, dut=None, clean=False, within=None):
    """The parser beside the protocol. With ``clean``, the line carries only good requests, a
    byte offered in every cycle, the network is ready and says OK, and a frame must leave at
    least every ``within`` cycles; otherwise the solver chooses bytes, stalls and status."""
    m = Module()
    dut = m.submodules.dut = dut or FrameParser(n_pixels=n_pixels, in_bits=in_bits,
                                                in_simd=in_simd, timeout=timeout)
    n_words, size = n_pixels // in_simd, n_pixels + 5
    if clean:
        sent = clean_line(m, dut.i, n_pixels, in_bits)
    else:
        drive(m, dut.i)
    m.d.comb += dut.i_status.eq(protocol.Status.OK if clean else AnySeq(len(dut.i_status)))
    watch(m, dut.o_pixels, ready=1 if clean else None)
    watch(m, dut.o_error, ready=1 if clean else None)
    taken = dut.i.valid & dut.i.ready

    # The last `size` bytes the parser took, this cycle's last: when they are a good request,
    # its pixels are the frame that may leave next (`pending` until its final beat leaves).
    # The one byte the parser may take after a request, before its frame leaves, cannot end
    # another good one (that would start with the length's low byte, not 0xA5).
    history = [Signal(8, name=f"taken{k}") for k in range(size - 1)]
    with m.If(taken):
        m.d.sync += Cat(*history).eq(Cat(*history[1:], dut.i.payload))
    window = history + [dut.i.payload]
    latest, pending = Signal(n_pixels * in_bits), Signal()
    out = dut.o_pixels
    fire = out.valid & out.ready
    beat = Signal(range(n_words))
    final = beat == n_words - 1
    with m.If(fire):
        m.d.sync += beat.eq(Mux(final, 0, beat + 1))
        m.d.comb += [Assert(pending), Assert(out.payload.last == final)]
        for k, word in enumerate(elements(latest, n_words, in_simd * in_bits)):
            with m.If(beat == k):
                m.d.comb += Assert(out.payload.data == word)
        with m.If(final):
            m.d.sync += pending.eq(0)
    with m.If(taken & good_request(m, window, n_pixels, in_bits)):
        m.d.sync += [latest.eq(Cat(pixel[:in_bits] for pixel in window[3:3 + n_pixels])),
                     pending.eq(1)]

    # Each start byte begins at most one reply: a frame released or an error.
    starts, replies = Signal(8), Signal(8)
    error_taken = dut.o_error.valid & dut.o_error.ready
    m.d.sync += [starts.eq(starts + (taken & (dut.i.payload == protocol.REQUEST_START))),
                 replies.eq(replies + (fire & final) + error_taken)]
    m.d.comb += [Assert(replies <= starts),
                 Assert(~dut.o_error.valid | (dut.o_error.payload != protocol.Status.OK))]
    if clean:
        # No request is refused, lost, or released before it is in.
        requests, released = Signal(8), Signal(8)
        m.d.sync += [requests.eq(requests + sent), released.eq(released + (fire & final))]
        m.d.comb += [Assert(~dut.o_error.valid), Assert(released <= requests)]
        bounded_liveness(m, fire & final, within=within)
    return m


# Any bytes: the solver's cost grows with the CRC's free bits and the depth (two 8-bit pixels:
# 4 minutes to depth 15, 15 more to 16), so frames of 1-bit pixels; depth 20 holds two frames of
# one pixel (a frame every 9 cycles), 18 one of two.
@pytest.mark.parametrize("n_pixels,in_bits,in_simd,depth", [(1, 1, 1, 20), (2, 1, 1, 18)])
def test_frame_parser(n_pixels, in_bits, in_simd, depth, tmp_path):
    result = run(check_parser(n_pixels, in_bits, in_simd),
                 name=f"parser_{n_pixels}_{in_bits}_{in_simd}", depth=depth,
                 directory=tmp_path)
    assert result.passed, result.describe()


@pytest.mark.parametrize("n_pixels,in_bits,in_simd", [(2, 8, 1), (4, 3, 2)])
def test_frame_parser_on_a_clean_line(n_pixels, in_bits, in_simd, tmp_path):
    # A request of n + 5 bytes, one per cycle; a cycle for the CRC register; then its beats,
    # one per two cycles (the byte after the request waits in the parser meanwhile): a frame
    # leaves every n + 6 + 2 * beats cycles, the first one that many cycles after reset.
    within = n_pixels + 7 + 2 * (n_pixels // in_simd)
    result = run(check_parser(n_pixels, in_bits, in_simd, clean=True, within=within),
                 name=f"parser_clean_{n_pixels}_{in_bits}_{in_simd}", depth=2 * within + 2,
                 directory=tmp_path)
    assert result.passed, result.describe()


def test_clean_line_bound_is_tight(tmp_path):
    # A cycle less than the bound above fails: the first frame cannot leave sooner, and the
    # line's assumptions leave traces that long.
    result = run(check_parser(2, 8, 1, clean=True, within=12), name="parser_tight", depth=14,
                 directory=tmp_path)
    assert result.status == "fail", result.describe()


class BrokenParser(wiring.Component):
    """A frame parser broken at its edges, for the checks to catch: ``"drop"`` takes bytes
    while the parser is busy and loses them (a request that follows a frame too closely is
    lost), ``"skip"`` loses the first beat of every frame."""

    def __init__(self, fault, **options):
        self.fault, self.inner = fault, FrameParser(**options)
        super().__init__(self.inner.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        m.d.comb += inner.i_status.eq(self.i_status)
        wiring.connect(m, inner.o_error, wiring.flipped(self.o_error))
        if self.fault == "drop":
            m.d.comb += [inner.i.valid.eq(self.i.valid), inner.i.payload.eq(self.i.payload),
                         self.i.ready.eq(1)]
        else:
            wiring.connect(m, wiring.flipped(self.i), inner.i)
        first, skip = Signal(init=1), Signal()     # the next beat is a frame's first
        if self.fault == "skip":
            m.d.comb += skip.eq(first)
        with m.If(inner.o_pixels.valid & inner.o_pixels.ready):
            m.d.sync += first.eq(inner.o_pixels.payload.last)
        m.d.comb += [self.o_pixels.payload.eq(inner.o_pixels.payload),
                     self.o_pixels.valid.eq(inner.o_pixels.valid & ~skip),
                     inner.o_pixels.ready.eq(self.o_pixels.ready | skip)]
        return m


@pytest.mark.parametrize("fault,clean", [("drop", True), ("skip", False)])
def test_checks_catch_a_broken_parser(fault, clean, tmp_path):
    broken = BrokenParser(fault, n_pixels=2, in_bits=1, in_simd=1, timeout=3)
    result = run(check_parser(2, 1, 1, dut=broken, clean=clean, within=13), name=fault,
                 depth=28 if clean else 18, directory=tmp_path)
    assert result.status == "fail", result.describe()
    # A counterexample a person can open in GTKWave.
    assert result.trace is not None and "$enddefinitions" in result.trace.read_text()
