# amaranth: UnusedElaboratable=no
"""The serial link at the fastest rate bnnhw uses: the whole shell around a real network, at the
UART pins, with line noise: a sender whose bit rate is off by up to 2%, glitches on the idle
line, bits flipped inside requests. Every good request must be answered with the golden model's
class and scores, every damaged one with an error (or not at all), and the host's retry must
then succeed.

Divisor 5 is 12 Mbaud (the FT2232H's fastest rate, the iCEBreaker's USB bridge) at a 60 MHz
clock; a divisor of 4 would be the shell's floor.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from bnnhw import golden, testing
from bnnhw.boards import protocol
from bnnhw.boards.protocol import Status
from bnnhw.boards.shell import Shell
from bnnhw.gateware.top import NetworkTop


class Line:
    """The host's side of the pins: sends bytes at ``divisor * (1 + error)`` cycles per bit
    (bit edges at the nearest cycle of that fractional rate), reads the board's replies."""

    def __init__(self, dut, divisor, error):
        self.dut, self.divisor, self.bit = dut, divisor, divisor * (1 + error)
        self.cycle = 0

    async def idle(self, ctx, cycles, *, glitches=()):
        """Hold the line high for ``cycles``, with one-cycle low pulses at the given offsets."""
        for k in range(cycles):
            ctx.set(self.dut.rx, 0 if k in glitches else 1)
            await ctx.tick()
        ctx.set(self.dut.rx, 1)
        self.cycle += cycles

    async def send(self, ctx, data):
        """Send ``data`` back to back, each byte start bit, 8 data bits, stop bit."""
        start = self.cycle
        bits = [bit for byte in data for bit in [0, *((byte >> k) & 1 for k in range(8)), 1]]
        for n, bit in enumerate(bits):
            end = start + round((n + 1) * self.bit)
            ctx.set(self.dut.rx, bit)
            await ctx.tick().repeat(end - self.cycle)
            self.cycle = end
        ctx.set(self.dut.rx, 1)


async def read_tx(ctx, dut, divisor, into, stop):
    """Decode the board's tx pin into ``into`` until ``stop()``, sampling mid-bit."""
    while not stop():
        await ctx.tick()
        if ctx.get(dut.tx):
            continue
        await ctx.tick().repeat(divisor // 2)
        byte = 0
        for k in range(8):
            await ctx.tick().repeat(divisor)
            byte |= ctx.get(dut.tx) << k
        await ctx.tick().repeat(divisor)
        assert ctx.get(dut.tx) == 1, "framing error on tx"
        into.append(byte)


@pytest.mark.parametrize("divisor,error", [(5, -0.02), (5, 0.02), (4, -0.02), (4, 0.02)])
def test_link_answers_through_noise(divisor, error):
    rng = np.random.default_rng([divisor, int(error * 100) + 2])
    net = testing.random_network(np.random.default_rng(3), [16, 8, 6, 4], input_bits=4)
    timeout = 60 * divisor
    dut = Shell(NetworkTop(net), divisor=divisor, timeout=timeout)
    x = testing.random_inputs(rng, net, 6)
    expected = golden.run(net, x)
    line = Line(dut, divisor, error)
    received = bytearray()
    log = []          # (image, what was sent, replies)
    done = False

    async def host(ctx):
        nonlocal done
        parser = protocol.ReplyParser(max_scores=net.classes)
        reply_cycles = (6 + 2 * net.classes) * 10 * divisor
        await line.idle(ctx, 20)
        for index, pixels in enumerate(x):
            frame = protocol.encode_request(pixels, in_bits=net.input_bits)
            for attempt in range(3):
                damaged = bytearray(frame)
                noisy = attempt == 0 and index % 2 == 1
                if noisy:            # line noise flips a bit of a pixel or of the checksum
                    position = int(rng.integers(3, len(frame)))
                    damaged[position] ^= 1 << int(rng.integers(0, 8))
                await line.send(ctx, bytes(damaged))
                # Wait for the reply (or for the timeout), with glitches on the idle line.
                glitches = set(rng.integers(0, reply_cycles, 3).tolist())
                await line.idle(ctx, reply_cycles + timeout + 40 * divisor, glitches=glitches)
                replies = parser.feed(bytes(received))
                received.clear()
                log.append((index, noisy, replies))
                if any(r.status == Status.OK for r in replies):
                    break
        done = True

    sim = Simulator(dut)
    sim.add_clock(1 / 60e6)
    sim.add_testbench(host)

    async def board_replies(ctx):
        await read_tx(ctx, dut, divisor, received, lambda: done)
    sim.add_testbench(board_replies, background=True)
    sim.run()

    answered = {}
    for index, noisy, replies in log:
        if noisy:
            assert all(r.status != Status.OK for r in replies), f"image {index}: {replies}"
        else:
            assert replies == [protocol.Reply(Status.OK, int(expected.classes[index]),
                                              tuple(int(s) for s in expected.scores[index]))], \
                f"image {index}: {replies}"
            answered[index] = True
    assert sorted(answered) == list(range(len(x)))
    assert sum(noisy for _, noisy, _ in log) == len(x) // 2
