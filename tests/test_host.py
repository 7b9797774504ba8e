"""The host client end to end: pyserial on a pseudo-terminal, bridged at the UART-pin level to
Amaranth's simulation of the shell around a real NetworkTop."""

import json
import os
import pty
import re
import threading
import tty

import numpy as np
import pytest
import serial
from amaranth.sim import Simulator

from bnnhw import golden, testing
from bnnhw.boards.host import Client, HostError, run_images
from bnnhw.boards.shell import Shell
from bnnhw.gateware.top import NetworkTop

DIVISOR = 4          # clock cycles per UART bit: the simulation runs a very fast "baud rate"


class PinBridge:
    """Moves bytes between a pty's master side and a shell's rx/tx pins, bit by bit.

    ``corrupt`` is a set of byte indices (counted over everything the host sends) whose lowest
    bit the bridge flips on the way, as line noise would.
    """
    def __init__(self, dut, master, *, corrupt=()):
        self.dut, self.master, self.corrupt = dut, master, set(corrupt)
        self.sent = 0
        self.done = threading.Event()

    async def drive_rx(self, ctx):
        """Send every byte the host writes to the shell's rx pin, until the host is done."""
        os.set_blocking(self.master, False)
        while not self.done.is_set():
            try:
                data = os.read(self.master, 256)
            except BlockingIOError:
                await ctx.tick().repeat(20)
                continue
            for byte in data:
                if self.sent in self.corrupt:
                    byte ^= 1
                self.sent += 1
                for bit in [0, *((byte >> k) & 1 for k in range(8)), 1]:
                    ctx.set(self.dut.rx, bit)
                    await ctx.tick().repeat(DIVISOR)

    async def sample_tx(self, ctx):
        """Decode the shell's tx pin and write each byte to the host, until the host is done."""
        while not self.done.is_set():
            await ctx.tick()
            if ctx.get(self.dut.tx):
                continue                                        # idle, or not yet a start bit
            await ctx.tick().repeat(DIVISOR // 2)               # to the middle of the bit
            byte = 0
            for k in range(8):
                await ctx.tick().repeat(DIVISOR)
                byte |= ctx.get(self.dut.tx) << k
            await ctx.tick().repeat(DIVISOR)                    # stop bit
            os.write(self.master, bytes([byte]))


def run_host(net, x, y, *, corrupt=()):
    """Classify ``x`` through the simulated board; return the host's summary."""
    def classify(name):
        with serial.Serial(name, timeout=0.05) as port:
            client = Client(port, n_pixels=net.input_size, in_bits=net.input_bits,
                            classes=net.classes, timeout=20, resync=0.5)
            return run_images(client, net, x, y)
    return with_simulated_board(net, classify, corrupt=corrupt)


def with_simulated_board(net, host_side, *, corrupt=()):
    """Run ``host_side(port name)`` against the shell around ``net`` in simulation, bridged
    through a pseudo-terminal; return what it returns."""
    dut = Shell(NetworkTop(net), divisor=DIVISOR, timeout=40 * DIVISOR)
    master, slave = pty.openpty()
    tty.setraw(slave)
    bridge = PinBridge(dut, master, corrupt=corrupt)
    outcome = {}

    def host():
        try:
            outcome["summary"] = host_side(os.ttyname(slave))
        except Exception as error:      # handed to the test thread below
            outcome["error"] = error
        finally:
            bridge.done.set()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bridge.drive_rx)
    sim.add_testbench(bridge.sample_tx)
    thread = threading.Thread(target=host)
    thread.start()
    try:
        sim.run()
    finally:
        bridge.done.set()
        thread.join()
        os.close(master)
        os.close(slave)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["summary"]


def small_network(seed):
    return testing.random_network(np.random.default_rng(seed), [12, 8, 6, 4], input_bits=4)


def test_host_classifies_through_the_simulated_board():
    net = small_network(0)
    rng = np.random.default_rng(1)
    x = testing.random_inputs(rng, net, 5)
    y = rng.integers(0, net.classes, 5)
    summary = run_host(net, x, y)
    expected = golden.run(net, x)
    assert summary.images == 5
    assert summary.mismatches == []
    assert summary.correct == int((expected.classes == y).sum())
    assert summary.errors == {}


def test_host_retries_after_line_noise():
    net = small_network(2)
    rng = np.random.default_rng(3)
    x = testing.random_inputs(rng, net, 2)
    y = golden.run(net, x).classes
    summary = run_host(net, x, y, corrupt={7})     # a pixel byte of the first request
    assert summary.mismatches == [] and summary.correct == 2
    assert summary.errors == {"BAD_CHECKSUM": 1}


def test_host_classifies_through_a_simulated_cnn_board():
    net = testing.random_cnn(np.random.default_rng(4), (2, 4, 3), [("conv2d", 2, 2, 3),
                                                                   ("pool", 2)], 3,
                             input_bits=4)
    rng = np.random.default_rng(5)
    x = testing.random_inputs(rng, net, 3)
    summary = run_host(net, x, golden.run(net, x).classes)
    assert summary.images == 3 and summary.mismatches == [] and summary.correct == 3


def test_client_rejects_wrong_image_size():
    client = Client(None, n_pixels=12, in_bits=4, classes=4)
    with pytest.raises(HostError, match=r"^an image of 5 pixels; the board's network takes 12$"):
        client.classify(np.zeros(5, np.uint8))


def test_cli_run_reports_frames_per_second_and_the_bound(tmp_path, capsys):
    from bnnhw import artifact, cli
    net = testing.random_network(np.random.default_rng(4), [64, 16, 10], input_bits=5)
    path = artifact.save(net, tmp_path / "net.npz")
    build = tmp_path / "build"
    build.mkdir()
    (build / "build.json").write_text(json.dumps({"baud": 3000000, "clock_mhz": 60.0,
                                                  "cycles_per_frame": 320, "scores": True}))
    code = with_simulated_board(net, lambda name: cli.main(
        ["run", str(path), "--port", name, "--count", "3", "--baud", "3000000",
         "--build-dir", str(build), "--timeout", "20"]))
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"^images +3 in [\d.]+ s \([\d,.]+ images/s, end to end\)$", out, re.M)
    # 69 request + 26 reply bytes at 3 Mbaud: 3,158 frames/s; 60 MHz / 320 cycles: 187,500
    assert "link bound     3,158 frames/s at 3,000,000 baud (69 request + 26 reply bytes, one " \
           "request at a time)" in out
    assert "gateware bound 187,500 frames/s at 60 MHz (320 cycles/frame)" in out
    # a simulated board is far slower than both: the host waits on it
    assert re.search(r"^bound by +the host's round trips \(\d+% of the link bound, 3,158 "
                     r"frames/s\): USB latency, not the board$", out, re.M)
    assert re.search(r"^mismatches +0 ", out, re.M)


def test_bounds_name_the_slower_stage():
    from bnnhw.boards.rates import bounds
    mnist = bounds(784, 10, baud=12_000_000, clock_hz=60e6, cycles=6272)
    assert (mnist.request_bytes, mnist.reply_bytes) == (789, 26)
    assert mnist.link_fps == pytest.approx(12e6 / 8150)
    assert mnist.gateware_fps == pytest.approx(60e6 / 6272)
    assert mnist.bound == "link"
    assert bounds(784, 10, baud=12_000_000, clock_hz=12e6, cycles=50176).bound == "gateware"
    assert mnist.verdict(1400).startswith("the link (95% of its bound")


class FakePort:
    """What pyserial's list_ports gives for a port."""
    def __init__(self, device, vid=None, pid=None, location=None, product=None):
        self.device, self.vid, self.pid = device, vid, pid
        self.location, self.product = location, product


def test_find_port_by_usb_ids():
    from bnnhw.boards.board import BoardError, get_board
    from bnnhw.boards.ports import find_port
    boards = [get_board("icebreaker"), get_board("ulx3s")]
    ice = [FakePort("/dev/ttyUSB0", 0x0403, 0x6010, "1-1:1.0"),
           FakePort("/dev/ttyUSB1", 0x0403, 0x6010, "1-1:1.1"), FakePort("/dev/ttyS0")]
    assert find_port(boards, ice) == "/dev/ttyUSB1"
    # Without locations, an FTDI's ports count as its interfaces in order.
    assert find_port(boards, [FakePort("/dev/ttyUSB3", 0x0403, 0x6010),
                              FakePort("/dev/ttyUSB2", 0x0403, 0x6010)]) == "/dev/ttyUSB3"
    with pytest.raises(BoardError, match=r"^no serial port of a iCEBreaker \(iCE40UP5K\) "
                                         r"\(0403:6010 interface 1\) or ULX3S .* found \(ports "
                                         r"seen: /dev/ttyACM0 \(2e8a:000a, Pico\), /dev/ttyS0 "
                                         r"\(not USB\)\); plug the board in or give --port$"):
        find_port(boards, [FakePort("/dev/ttyS0"), FakePort("/dev/ttyACM0", 0x2E8A, 0x000A,
                                                            product="Pico")])
    with pytest.raises(BoardError, match=r"^several boards' serial ports found: "
                                         r"/dev/ttyUSB1 .*, /dev/ttyUSB5 .*; give --port$"):
        find_port(boards, ice + [FakePort("/dev/ttyUSB5", 0x0403, 0x6015, "2-1:1.0")])


@pytest.mark.slow
def test_run_command_finds_the_board_and_classifies_100_digits(monkeypatch, capsys):
    """`bnnhw run` with no --port: a fake USB listing names the pty of the simulated board."""
    import json
    from pathlib import Path
    from serial.tools import list_ports
    from bnnhw import artifact, cli, datasets
    example = Path(__file__).resolve().parents[1] / "examples" / "digits.npz"
    net = artifact.load(example)

    def run(device):
        monkeypatch.setattr(list_ports, "comports", lambda: [
            FakePort("/dev/ttyS0"), FakePort("/dev/ttyUSB0", 0x0403, 0x6010, "1-1:1.0"),
            FakePort(device, 0x0403, 0x6010, "1-1:1.1", "iCEBreaker V1.0e")])
        return device, cli.main(["run", str(example), "--count", "100", "--timeout", "20",
                                 "--json"])

    device, code = with_simulated_board(net, run)
    doc = json.loads(capsys.readouterr().out)
    x, y, _ = datasets.frames_for(net, "digits", count=100)
    expected = golden.run(net, x)
    assert code == 0 and doc["port"] == device and doc["images"] == 100
    assert doc["mismatches"] == 0
    assert doc["board_accuracy"] == doc["golden_accuracy"] == (expected.classes == y).mean()
