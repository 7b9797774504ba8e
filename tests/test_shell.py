# amaranth: UnusedElaboratable=no
"""Tests of the serial protocol (boards/protocol.py), the UART (boards/uart.py) and the board
shell (boards/shell.py)."""

import dataclasses
import random
import re

import numpy as np
import pytest
from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from bnnhw.boards import protocol
from bnnhw.boards.protocol import Reply, Status
from bnnhw.boards.shell import CRC16, FrameParser, ReplyWriter, Shell, crc16_processor
from bnnhw.gateware.ports import Ports, beat_layout, result_layout
from bnnhw.boards.uart import UARTReceiver, UARTTransmitter
from bnnhw.testing import stream_get, stream_put


def simulate(dut, *testbenches, limit=60_000):
    """Run ``testbenches`` on ``dut`` (1 MHz clock); fail if they take over ``limit`` cycles."""
    async def watchdog(ctx):
        await ctx.delay(limit * 1e-6)
        raise AssertionError(f"testbenches still running after {limit} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    sim.add_testbench(watchdog, background=True)
    sim.run()


# --- protocol.py ------------------------------------------------------------------------------

def test_crc16_check_value():
    assert protocol.crc16(b"123456789") == 0x29B1
    assert protocol.crc16(b"56789", crc=protocol.crc16(b"1234")) == 0x29B1
    rng = np.random.default_rng(16)
    for size in [0, 1, 2, 17, 784]:     # the same CRC as the catalogue entry the gateware uses
        data = rng.integers(0, 256, size).astype(np.uint8).tobytes()
        assert protocol.crc16(data) == CRC16.compute(data)


def test_gateware_crc16_check_value():
    """The shell's CRC processor: a byte per clock, the check value, the residue of a frame."""
    restart = Signal()
    dut = crc16_processor(restart)
    request = protocol.encode_request(np.arange(20) * 13 % 256)
    reply = protocol.encode_reply(Status.OK, 3, [-300, 7, 0x5A5A])

    async def testbench(ctx):
        ctx.set(restart, 1)
        await ctx.tick()
        ctx.set(restart, 0)
        assert ctx.get(dut.crc) == 0xFFFF
        data = b"123456789"
        ctx.set(dut.valid, 1)
        for k, byte in enumerate(data):             # one byte per clock, the CRC one clock later
            ctx.set(dut.data, byte)
            await ctx.tick()
            assert ctx.get(dut.crc) == protocol.crc16(data[:k + 1]), f"byte {k}"
        ctx.set(dut.valid, 0)
        await ctx.tick().repeat(3)                  # held while valid is low
        assert ctx.get(dut.crc) == 0x29B1 and not ctx.get(dut.match_detected)
        for frame in (request, reply):              # everything after the start byte: residue 0
            ctx.set(restart, 1)
            await ctx.tick()
            ctx.set(restart, 0)
            ctx.set(dut.valid, 1)
            for byte in frame[1:]:
                ctx.set(dut.data, byte)
                await ctx.tick()
            ctx.set(dut.valid, 0)
            assert ctx.get(dut.crc) == 0 and ctx.get(dut.match_detected)

    simulate(dut, testbench)


@pytest.mark.parametrize("n_pixels,in_bits", [(1, 1), (12, 4), (784, 8), (300, 8)])
def test_request_round_trip(n_pixels, in_bits):
    rng = np.random.default_rng(n_pixels)
    pixels = rng.integers(0, 1 << in_bits, n_pixels)
    frame = protocol.encode_request(pixels, in_bits=in_bits)
    assert len(frame) == n_pixels + 5
    assert frame[0] == protocol.REQUEST_START
    assert frame[1] | frame[2] << 8 == n_pixels
    assert protocol.crc16(frame[1:]) == 0
    status, decoded = protocol.decode_request(frame, n_pixels=n_pixels, in_bits=in_bits)
    assert status == Status.OK and (decoded == pixels).all()


def test_request_corruption_detected():
    rng = np.random.default_rng(7)
    frame = protocol.encode_request(rng.integers(0, 256, 50))
    for position in range(1, len(frame)):               # every single-bit error
        for bit in range(8):
            bad = bytearray(frame)
            bad[position] ^= 1 << bit
            status, _ = protocol.decode_request(bad, n_pixels=50, in_bits=8)
            expected = Status.BAD_LENGTH if position in (1, 2) else Status.BAD_CHECKSUM
            assert status == expected, (position, bit)
    for _ in range(200):                                # random bursts and multi-byte errors
        bad = bytearray(frame)
        for position in rng.choice(np.arange(3, len(frame)), int(rng.integers(1, 4)), False):
            bad[position] ^= int(rng.integers(1, 256))
        assert protocol.decode_request(bad, n_pixels=50, in_bits=8)[0] == Status.BAD_CHECKSUM
    # 0x00 <-> 0xFF swaps, which a mod-255 Fletcher sum would miss
    frame = protocol.encode_request([0, 255, 0, 255])
    swapped = frame[:3] + bytes([255, 0, 0, 255]) + frame[7:]
    assert protocol.decode_request(swapped, n_pixels=4, in_bits=8)[0] == Status.BAD_CHECKSUM


def test_decode_request_statuses():
    frame = protocol.encode_request([1, 2, 3, 15], in_bits=4)
    assert protocol.decode_request(frame, n_pixels=5, in_bits=4) == (Status.BAD_LENGTH, None)
    assert protocol.decode_request(frame[:6], n_pixels=4, in_bits=4) == (Status.TIMEOUT, None)
    assert protocol.decode_request(frame[:2], n_pixels=4, in_bits=4) == (Status.TIMEOUT, None)
    assert protocol.decode_request(frame, n_pixels=4, in_bits=3) == (Status.BAD_PIXEL, None)
    message = r"^a request starts with 0xA5, not b'\\x00'$"
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.decode_request(b"\x00" + frame[1:], n_pixels=4, in_bits=4)


@pytest.mark.parametrize("pixels,in_bits,message", [
    ([0, 16], 4, r"^pixels must be in 0\.\.15 for in_bits=4$"),
    ([-1], 8, r"^pixels must be in 0\.\.255 for in_bits=8$"),
    ([[1]], 8, r"^pixels must be 1-D with 1\.\.65535 entries, not of shape \(1, 1\)$"),
    ([], 8, r"^pixels must be 1-D with 1\.\.65535 entries, not of shape \(0,\)$"),
    ([0.5], 8, r"^pixels must be integers, not of dtype float64$"),
    ([1], 9, r"^in_bits must be an integer in 1\.\.8, not 9$"),
])
def test_encode_request_rejects(pixels, in_bits, message):
    with pytest.raises(ValueError, match=message):
        protocol.encode_request(pixels, in_bits=in_bits)


@pytest.mark.parametrize("reply", [
    Reply(Status.OK, 3, (-1, 5, 300, -32768, 32767)), Reply(Status.OK, 0), Reply(Status.OK, 255),
    *(Reply(status) for status in Status if status != Status.OK),
])
def test_reply_round_trip(reply):
    frame = protocol.encode_reply(reply.status, reply.cls, reply.scores)
    assert len(frame) == 6 + 2 * len(reply.scores) and frame[0] == protocol.REPLY_START
    assert protocol.decode_reply(frame) == reply


@pytest.mark.parametrize("args,message", [
    ((Status.TIMEOUT, 1), r"^an error reply \(TIMEOUT\) carries no class or scores$"),
    ((Status.OK, 256), r"^cls must be in 0\.\.255, not 256$"),
    ((Status.OK, 0, [40000]), r"^scores must be in -32768\.\.32767, not \[40000\]$"),
    ((Status.OK, 0, [0] * 256), r"^a reply carries at most 255 scores, not 256$"),
])
def test_encode_reply_rejects(args, message):
    with pytest.raises(ValueError, match=message):
        protocol.encode_reply(*args)


def test_decode_reply_rejects_corruption():
    frame = protocol.encode_reply(Status.OK, 2, [1, -2])
    for position in range(len(frame)):
        for bit in range(8):
            bad = bytearray(frame)
            bad[position] ^= 1 << bit
            with pytest.raises(protocol.ProtocolError):
                protocol.decode_reply(bad)
    message = r"^a reply with 2 scores is 10 bytes, not 9$"
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.decode_reply(frame[:-1])


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_reply_parser_resynchronises(chunk):
    rng = random.Random(chunk)
    replies = [Reply(Status.OK, 1, (5, -7, 0)), Reply(Status.BAD_CHECKSUM),
               Reply(Status.OK, 2, (0x5A5A, 0x5A, -0x5A5A)), Reply(Status.TIMEOUT)]
    stream_bytes = bytearray()
    for reply in replies:
        # garbage with false start bytes (and a truncated reply) before every real reply
        stream_bytes += bytes([0x5A, 0x00, 0x01, 0x03, 0x5A, rng.randrange(256)])
        stream_bytes += protocol.encode_reply(reply.status, reply.cls, reply.scores)[:-3]
        stream_bytes += protocol.encode_reply(reply.status, reply.cls, reply.scores)
    parser = protocol.ReplyParser(max_scores=3)
    decoded = []
    for start in range(0, len(stream_bytes), chunk):
        decoded += parser.feed(stream_bytes[start:start + chunk])
    assert decoded == replies
    assert parser.pending == b""


def test_reply_parser_rejects_max_scores():
    with pytest.raises(ValueError, match=r"^max_scores must be an integer in 0\.\.255, not 256$"):
        protocol.ReplyParser(max_scores=256)


# --- UART, against a bit-level model ----------------------------------------------------------

async def uart_send(ctx, pin, byte, divisor, *, stop=1):
    """Drive one 8N1 character on ``pin``: start bit, 8 data bits LSB first, stop bit."""
    for bit in [0, *((byte >> k) & 1 for k in range(8)), stop]:
        ctx.set(pin, bit)
        await ctx.tick().repeat(divisor)
    ctx.set(pin, 1)


async def uart_receive(ctx, pin, divisor):
    """Wait for a start bit on ``pin``; return its character, sampled in the middle of bits."""
    await ctx.tick().until(pin == 0)
    return await uart_sample(ctx, pin, divisor)


async def uart_sample(ctx, pin, divisor):
    """Return the character whose start bit began on ``pin`` in this cycle."""
    await ctx.tick().repeat(divisor // 2)
    assert ctx.get(pin) == 0, "start bit too short"
    bits = []
    for _ in range(9):
        await ctx.tick().repeat(divisor)
        bits.append(ctx.get(pin))
    assert bits[8] == 1, "framing error (stop bit 0)"
    return sum(bit << k for k, bit in enumerate(bits[:8]))


@pytest.mark.parametrize("divisor", [4, 5, 8])
@pytest.mark.parametrize("stalls", [False, True])
def test_uart_receiver_matches_model(divisor, stalls):
    rng = random.Random(divisor)
    data = [0x00, 0xFF, 0x55, 0xA5, *(rng.randrange(256) for _ in range(12))]
    dut = UARTReceiver(divisor=divisor)
    stall = random.Random(1) if stalls else None

    async def line(ctx):
        await ctx.tick().repeat(3)
        for n, byte in enumerate(data):
            await uart_send(ctx, dut.rx, byte, divisor)
            if n == 3:      # a character with a 0 stop bit, then a break: both dropped
                await uart_send(ctx, dut.rx, 0x12, divisor, stop=0)
                ctx.set(dut.rx, 0)
                await ctx.tick().repeat(25 * divisor)
                ctx.set(dut.rx, 1)
                await ctx.tick().repeat(divisor)
            if gap := rng.choice([0, 0, 1, divisor // 2, 3 * divisor]):
                await ctx.tick().repeat(gap)

    async def consumer(ctx):
        for n, byte in enumerate(data):
            assert await stream_get(ctx, dut.o, rng=stall) == byte, f"byte {n}"

    simulate(dut, line, consumer)


@pytest.mark.parametrize("divisor", [4, 7])
@pytest.mark.parametrize("stalls", [False, True])
def test_uart_transmitter_matches_model(divisor, stalls):
    rng = random.Random(divisor)
    data = [0x00, 0xFF, 0x5A, *(rng.randrange(256) for _ in range(12))]
    dut = UARTTransmitter(divisor=divisor)
    stall = random.Random(2) if stalls else None

    async def producer(ctx):
        for byte in data:
            await stream_put(ctx, dut.i, byte, rng=stall)

    async def line(ctx):
        assert ctx.get(dut.tx) == 1
        cycles = 0
        for n, byte in enumerate(data):
            while ctx.get(dut.tx):
                await ctx.tick()
                cycles += n > 0
            assert await uart_sample(ctx, dut.tx, divisor) == byte, f"byte {n}"
            cycles += (divisor // 2 + 9 * divisor) * (n < len(data) - 1)
        if not stalls:      # back to back: exactly 10 bit times per byte
            assert cycles == (len(data) - 1) * 10 * divisor

    simulate(dut, producer, line)


@pytest.mark.parametrize("cls", [UARTReceiver, UARTTransmitter])
@pytest.mark.parametrize("divisor,error,message", [
    (3, ValueError, r"^divisor must be at least 4 clock cycles per bit, not 3$"),
    (4.0, TypeError, r"^divisor must be an integer, not 4\.0$"),
])
def test_uart_rejects_divisor(cls, divisor, error, message):
    with pytest.raises(error, match=message):
        cls(divisor=divisor)


# --- FrameParser and ReplyWriter, at the stream level -----------------------------------------

def frames_for_parser(rng, n_pixels, in_bits):
    """Return ``[(bytes, expected status, pixels or None)]``: good and broken requests.

    Every item is followed on the line by a gap longer than the timeout, so a broken frame
    never swallows the next one.
    """
    def good():
        return rng.integers(0, 1 << in_bits, n_pixels)
    items = []
    for _ in range(3):
        pixels = good()
        items.append((protocol.encode_request(pixels, in_bits=in_bits), Status.OK, pixels))
    frame = bytearray(protocol.encode_request(good(), in_bits=in_bits))
    frame[3 + n_pixels // 2] ^= 0x10
    items.append((bytes(frame), Status.BAD_CHECKSUM, None))
    frame = bytearray(protocol.encode_request(good(), in_bits=in_bits))
    frame[-1] ^= 0x01
    items.append((bytes(frame), Status.BAD_CHECKSUM, None))
    wrong = protocol.encode_request(np.ones(n_pixels + 1, np.int64), in_bits=in_bits)
    items.append((wrong[:3], Status.BAD_LENGTH, None))      # the rest would be hunted through
    items.append((protocol.encode_request(good(), in_bits=in_bits)[:n_pixels // 2 + 3],
                  Status.TIMEOUT, None))
    items.append((bytes([protocol.REQUEST_START]), Status.TIMEOUT, None))
    garbage = bytes(b for b in rng.integers(0, 256, 20).tolist() if b != protocol.REQUEST_START)
    items.append((garbage, None, None))                      # dropped without a reply
    if in_bits < 8:
        pixels = good()
        pixels[-1] = 1 << in_bits
        items.append((protocol.encode_request(pixels, in_bits=8), Status.BAD_PIXEL, None))
    pixels = good()
    items.append((protocol.encode_request(pixels, in_bits=in_bits), Status.OK, pixels))
    return items


@pytest.mark.parametrize("n_pixels,in_bits,in_simd", [(1, 8, 1), (12, 8, 3), (10, 4, 5),
                                                      (9, 1, 1), (16, 7, 4)])
@pytest.mark.parametrize("stalls", [False, True])
def test_parser_checks_frames(n_pixels, in_bits, in_simd, stalls):
    rng = np.random.default_rng([n_pixels, in_bits, in_simd])
    items = frames_for_parser(rng, n_pixels, in_bits)
    timeout = 40
    dut = FrameParser(n_pixels=n_pixels, in_bits=in_bits, in_simd=in_simd, timeout=timeout)
    stall = random.Random(3) if stalls else None
    outcomes = []       # statuses, and the pixels of each released frame

    async def producer(ctx):
        for frame, _, _ in items:
            for byte in frame:
                await stream_put(ctx, dut.i, byte, rng=stall, p=0.2)
            await ctx.tick().repeat(timeout + n_pixels + 10)

    expected = [(status, None if pixels is None else pixels.tolist())
                for _, status, pixels in items if status is not None]

    async def pixels(ctx):
        for _ in range(sum(status == Status.OK for status, _ in expected)):
            frame = []
            for k in range(n_pixels // in_simd):
                beat = await stream_get(ctx, dut.o_pixels, rng=stall)
                assert beat.last == (k == n_pixels // in_simd - 1)
                frame += [(beat.data >> j * in_bits) & ((1 << in_bits) - 1)
                          for j in range(in_simd)]
            outcomes.append((Status.OK, frame))

    async def errors(ctx):
        for _ in range(sum(status != Status.OK for status, _ in expected)):
            outcomes.append((Status(await stream_get(ctx, dut.o_error, rng=stall)), None))

    simulate(dut, producer, pixels, errors)
    assert outcomes == expected
    for frame, status, _ in items:   # the reference agrees on the complete frames
        if status not in (None, Status.TIMEOUT):
            assert protocol.decode_request(frame, n_pixels=n_pixels, in_bits=in_bits)[0] == status


@pytest.mark.parametrize("status", [Status.LOADING, Status.BAD_IMAGE])
def test_parser_answers_good_frames_with_the_network_status(status):
    n_pixels, in_bits = 6, 4
    rng = np.random.default_rng(5)
    dut = FrameParser(n_pixels=n_pixels, in_bits=in_bits, in_simd=2, timeout=40)
    frames = [rng.integers(0, 1 << in_bits, n_pixels) for _ in range(2)]
    seen = []

    async def producer(ctx):
        ctx.set(dut.i_status, status)
        for frame in (protocol.encode_request(frames[0], in_bits=in_bits),
                      bytes([0x13]) + protocol.encode_request(frames[0], in_bits=8)[1:]):
            for byte in frame:                     # a good frame, then one with a bad start
                await stream_put(ctx, dut.i, byte)
            await ctx.tick().repeat(60)
        ctx.set(dut.i_status, Status.OK)           # loaded: now frames go through
        for byte in protocol.encode_request(frames[1], in_bits=in_bits):
            await stream_put(ctx, dut.i, byte)

    async def errors(ctx):
        seen.append(Status(await stream_get(ctx, dut.o_error)))

    async def pixels(ctx):
        beats = [await stream_get(ctx, dut.o_pixels) for _ in range(n_pixels // 2)]
        seen.append([(beat.data >> 4 * j) & 15 for beat in beats for j in range(2)])

    simulate(dut, producer, errors, pixels)
    assert seen == [status, frames[1].tolist()]


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(n_pixels=12, in_bits=8, in_simd=5, timeout=9),
     ValueError, r"^n_pixels must be a multiple of in_simd = 5 in 1\.\.65535, not 12$"),
    (dict(n_pixels=65536, in_bits=8, in_simd=1, timeout=9),
     ValueError, r"^n_pixels must be a multiple of in_simd = 1 in 1\.\.65535, not 65536$"),
    (dict(n_pixels=12, in_bits=9, in_simd=1, timeout=9),
     ValueError, r"^in_bits must be in 1\.\.8, not 9$"),
    (dict(n_pixels=12, in_bits=8, in_simd=0, timeout=9),
     ValueError, r"^in_simd must be positive, not 0$"),
    (dict(n_pixels=12, in_bits=8, in_simd=1, timeout=0),
     ValueError, r"^timeout must be positive, not 0$"),
    (dict(n_pixels=12.0, in_bits=8, in_simd=1, timeout=9),
     TypeError, r"^n_pixels must be an integer, not 12\.0$"),
])
def test_parser_rejects_parameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        FrameParser(**kwargs)


def score_reference(pixels, classes, score_width):
    """The stand-in network's function: class = sum mod classes, score c = 2 S_c - sum."""
    pixels = np.asarray(pixels, np.int64)
    sums = [int(pixels[c::classes].sum()) for c in range(classes)]
    total = sum(sums)
    half = 1 << score_width - 1
    scores = tuple((2 * s - total + half) % (2 * half) - half for s in sums)
    return total % classes, scores


@pytest.mark.parametrize("classes,score_width,scores", [(5, 10, True), (1, 16, True),
                                                         (10, 3, True), (3, 20, False)])
@pytest.mark.parametrize("stalls", [False, True])
def test_writer_matches_encode_reply(classes, score_width, scores, stalls):
    rng = random.Random(classes)
    dut = ReplyWriter(classes=classes, score_width=score_width, scores=scores)
    half = 1 << score_width - 1
    inputs = []
    for n in range(8):
        if n % 3 == 2:
            inputs.append(Reply(Status(1 + n % 4)))
        else:
            values = tuple(rng.choice([-half, half - 1, rng.randrange(-half, half)])
                           for _ in range(classes))
            inputs.append(Reply(Status.OK, rng.randrange(classes), values))
    stall = random.Random(4) if stalls else None
    received = bytearray()

    async def results(ctx):
        for reply in inputs:
            if reply.status == Status.OK:
                await stream_put(ctx, dut.i_result, {"cls": reply.cls, "scores": reply.scores},
                                 rng=stall)

    async def errors(ctx):
        for reply in inputs:
            if reply.status != Status.OK:
                await stream_put(ctx, dut.i_error, reply.status, rng=stall)

    async def consumer(ctx):
        size = sum(6 + 2 * classes * (scores and r.status == Status.OK) for r in inputs)
        while len(received) < size:
            received.append(await stream_get(ctx, dut.o, rng=stall))

    simulate(dut, results, errors, consumer)
    parser = protocol.ReplyParser(max_scores=classes)
    decoded = parser.feed(received)
    assert parser.discarded == 0 and parser.pending == b""
    expected = [r if scores or r.status != Status.OK else Reply(r.status, r.cls) for r in inputs]
    # results and errors race; within each kind, order is kept
    assert sorted(decoded, key=repr) == sorted(expected, key=repr)
    assert [r for r in decoded if r.status == Status.OK] == \
        [r for r in expected if r.status == Status.OK]


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(classes=0, score_width=8),
     ValueError, r"^classes must be in 1\.\.255, not 0$"),
    (dict(classes=256, score_width=8),
     ValueError, r"^classes must be in 1\.\.255, not 256$"),
    (dict(classes=5, score_width=17),
     ValueError, r"^score_width must be in 1\.\.16 for replies with scores, not 17$"),
    (dict(classes=5, score_width=0, scores=False),
     ValueError, r"^score_width must be in 1\.\.16 for replies with scores, not 0$"),
    (dict(classes="5", score_width=8),
     TypeError, r"^classes must be an integer, not '5'$"),
])
def test_writer_rejects_parameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        ReplyWriter(**kwargs)


# --- Shell, at the UART pins, around a stand-in network ---------------------------------------

class SumNetwork(wiring.Component):
    """Stand-in network with the shell's network interface: bit-exact with `score_reference`.

    With a nonzero ``seed``, a 16-bit LFSR drops ``i.ready`` about a quarter of the time and
    delays each result by 0..7 cycles, so the shell sees backpressure and latency.
    """

    def __init__(self, *, n_pixels, in_bits, in_simd, classes, score_width, seed=1,
                 port_classes=None):
        self.n_pixels, self.in_bits, self.in_simd = n_pixels, in_bits, in_simd
        self.classes, self.score_width, self.seed = classes, score_width, seed
        self.ports = Ports(in_bits=in_bits, in_simd=in_simd, n_pixels=n_pixels, classes=classes,
                           score_width=score_width)
        super().__init__({
            "i": In(stream.Signature(beat_layout(in_bits * in_simd))),
            "o": Out(stream.Signature(result_layout(port_classes or classes, score_width))),
        })

    def elaborate(self, platform):
        m = Module()
        sums = [Signal(16, name=f"sum{c}") for c in range(self.classes)]
        phase = Signal(range(self.classes))     # class of the beat's first pixel
        done = Signal()
        wait = Signal(3)
        lfsr = Signal(16, init=self.seed or 1)
        if self.seed:
            m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]))
            stall = lfsr[7] & lfsr[11]
        else:
            stall = 0

        m.d.comb += self.i.ready.eq(~done & ~stall)
        with m.If(self.i.valid & self.i.ready):
            for c in range(self.classes):
                increment = 0
                for j in range(self.in_simd):
                    pixel = self.i.payload.data[j * self.in_bits:(j + 1) * self.in_bits]
                    increment = increment + Mux((phase + j) % self.classes == c, pixel, 0)
                m.d.sync += sums[c].eq(sums[c] + increment)
            m.d.sync += phase.eq((phase + self.in_simd) % self.classes)
            with m.If(self.i.payload.last):
                m.d.sync += [done.eq(1), wait.eq(lfsr[4:7] if self.seed else 0)]

        total = Signal(16)
        m.d.comb += total.eq(sum(sums))
        m.d.comb += self.o.payload.cls.eq(total % self.classes)
        for c in range(self.classes):
            m.d.comb += self.o.payload.scores[c].eq(2 * sums[c] - total)
        m.d.comb += self.o.valid.eq(done & (wait == 0))
        with m.If(done & (wait != 0)):
            m.d.sync += wait.eq(wait - 1)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [done.eq(0), phase.eq(0), *(s.eq(0) for s in sums)]
        return m


def shell_steps(rng, *, n_pixels, in_bits, in_simd, classes, score_width, scores):
    """Return ``[(bytes, replies)]``; ``replies`` None means: any number of error replies."""
    def good():
        return rng.integers(0, 1 << in_bits, n_pixels)

    def answer(pixels):
        cls, values = score_reference(pixels, classes, score_width)
        return [Reply(Status.OK, cls, values if scores else ())]

    def request(pixels, bits=in_bits):
        return protocol.encode_request(pixels, in_bits=bits)

    steps = []
    for _ in range(2):
        pixels = good()
        steps.append((request(pixels), answer(pixels)))
    if in_bits == 8:                            # start bytes inside the payload are data
        pixels = good()
        pixels[:2] = protocol.REQUEST_START
        steps.append((request(pixels), answer(pixels)))
    frame = bytearray(request(good()))
    frame[4] ^= 0x01
    steps.append((bytes(frame), [Reply(Status.BAD_CHECKSUM)]))
    pixels = good()
    steps.append((request(pixels), answer(pixels)))
    steps.append((request(good())[:n_pixels // 2 + 3], [Reply(Status.TIMEOUT)]))
    pixels = good()
    steps.append((request(pixels), answer(pixels)))
    # a whole frame with the wrong length; no start byte in the rest, so exactly one reply
    value = next(v for v in range(1, 1 << in_bits)
                 if protocol.REQUEST_START not in request([v] * (n_pixels + in_simd))[1:])
    steps.append((request([value] * (n_pixels + in_simd)), [Reply(Status.BAD_LENGTH)]))
    if in_bits < 8:
        pixels = good()
        pixels[-1] = (1 << in_bits) + 1
        steps.append((request(pixels, bits=8), [Reply(Status.BAD_PIXEL)]))
    garbage = [b for b in rng.integers(0, 256, 15).tolist() if b != protocol.REQUEST_START]
    steps.append((bytes(garbage), []))          # between frames: dropped without a reply
    pixels = good()
    steps.append((request(pixels), answer(pixels)))
    garbage = rng.integers(0, 256, 40).astype(np.uint8)
    garbage[rng.choice(40, 4, replace=False)] = protocol.REQUEST_START
    steps.append((garbage.tobytes(), None))     # false starts: errors only
    pixels = good()
    steps.append((request(pixels), answer(pixels)))
    return steps


@pytest.mark.parametrize("config", [
    dict(n_pixels=12, in_bits=8, in_simd=3, classes=5, score_width=10, scores=True,
         divisor=4, seed=0xACE1),
    dict(n_pixels=8, in_bits=4, in_simd=2, classes=3, score_width=6, scores=False,
         divisor=5, seed=0x1234),
])
def test_shell_answers_frames_and_rejects_bad_ones(config):
    config = dict(config)
    divisor, seed, scores = config.pop("divisor"), config.pop("seed"), config.pop("scores")
    net = SumNetwork(**config, seed=seed)
    timeout = 30 * divisor
    dut = Shell(net, divisor=divisor, timeout=timeout, scores=scores)
    rng = np.random.default_rng(seed)
    steps = shell_steps(rng, **config, scores=scores)
    reply_cycles = 10 * divisor * (6 + 2 * config["classes"] * scores)
    settle = timeout + reply_cycles + 4 * config["n_pixels"] + 30 * divisor
    line_bytes = bytearray()
    results = []
    leds = []
    done = False

    async def host(ctx):
        nonlocal done
        parser = protocol.ReplyParser(max_scores=config["classes"])
        await ctx.tick().repeat(10)
        for data, _ in steps:
            for byte in data:
                await uart_send(ctx, dut.rx, byte, divisor)
            await ctx.tick().repeat(settle)
            results.append(parser.feed(line_bytes))
            line_bytes.clear()
            leds.append(ctx.get(dut.leds))
        assert parser.pending == b""
        done = True

    async def line(ctx):
        while True:
            while ctx.get(dut.tx):
                if done:
                    return
                await ctx.tick()
            line_bytes.append(await uart_sample(ctx, dut.tx, divisor))

    simulate(dut, host, line)
    last_cls = 0
    for n, ((data, expected), got, led) in enumerate(zip(steps, results, leds)):
        if expected is None:
            assert got and all(reply.status != Status.OK for reply in got), f"step {n}: {got}"
        else:
            assert got == expected, f"step {n}"
            last_cls = next((reply.cls for reply in got if reply.status == Status.OK), last_cls)
        assert led == last_cls, f"step {n}"


def stand_in(**changes):
    """The stand-in network whose ``ports`` say ``changes``, its signature left as it was."""
    net = SumNetwork(n_pixels=12, in_bits=8, in_simd=3, classes=5, score_width=10)
    net.ports = dataclasses.replace(net.ports, **changes)
    return net


@pytest.mark.parametrize("net,kwargs,error,message", [
    (stand_in(), dict(divisor=3), ValueError,
     r"^divisor must be at least 4 clock cycles per bit, not 3$"),
    (stand_in(), dict(divisor=4, timeout=79), ValueError,
     r"^timeout must be at least 2 byte times \(80 clock cycles\), not 79$"),
    (stand_in(), dict(divisor=4, timeout=100.0), TypeError,
     r"^timeout must be an integer or None, not 100\.0$"),
    (stand_in(in_bits=None), dict(divisor=4), TypeError,
     r"^net\.ports\.in_bits must be an integer, not None$"),
    (stand_in(in_bits=9), dict(divisor=4), ValueError,
     r"^net\.ports\.in_bits must be in 1\.\.8, not 9$"),
    (stand_in(classes=256), dict(divisor=4), ValueError,
     r"^net\.ports\.classes must be in 1\.\.255, not 256$"),
    (stand_in(n_pixels=0), dict(divisor=4), ValueError,
     r"^net\.ports\.n_pixels must be in 1\.\.65535, not 0$"),
    (stand_in(score_width=17), dict(divisor=4), ValueError,
     r"^net\.ports\.score_width must be in 1\.\.16, not 17; pass scores=False$"),
    (stand_in(n_pixels=13), dict(divisor=4), ValueError,
     r"^net\.ports\.n_pixels must be a multiple of net\.ports\.in_simd = 3, not 13$"),
    (stand_in(in_simd=4), dict(divisor=4), ValueError,
     "^" + re.escape("net.i must be In(stream.Signature(StructLayout({'data': 32, 'last': 1}))), "
                     "not In(stream.Signature(StructLayout({'data': 24, 'last': 1})))") + "$"),
    (stand_in(score_width=8), dict(divisor=4), ValueError,
     "^" + re.escape("net.o must be Out(stream.Signature(StructLayout({'cls': unsigned(3), "
                     "'scores': ArrayLayout(signed(8), 5)}))), not Out(stream.Signature("
                     "StructLayout({'cls': unsigned(3), 'scores': ArrayLayout(signed(10), "
                     "5)})))") + "$"),
    (SumNetwork(n_pixels=12, in_bits=8, in_simd=3, classes=5, score_width=10, port_classes=4),
     dict(divisor=4), ValueError,
     "^" + re.escape("net.o must be Out(stream.Signature(StructLayout({'cls': unsigned(3), "
                     "'scores': ArrayLayout(signed(10), 5)}))), not Out(stream.Signature("
                     "StructLayout({'cls': unsigned(2), 'scores': ArrayLayout(signed(10), "
                     "4)})))") + "$"),
    (Module(), dict(divisor=4), TypeError,
     r"^net must speak the network top's port contract \(a `ports` attribute of type "
     r"bnnhw\.gateware\.ports\.Ports\), not <amaranth\.hdl\._dsl\.Module object at .*>$"),
])
def test_shell_rejects_parameters(net, kwargs, error, message):
    with pytest.raises(error, match=message):
        Shell(net, **kwargs)
