# amaranth: UnusedElaboratable=no
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from bnnhw import golden
from bnnhw.artifact import DenseLayer
from bnnhw.folding import FoldingError
from bnnhw.layer import LayerEngine
from bnnhw.testing import stream_get, stream_put


def simulate(dut, *testbenches):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    sim.run()


def random_layer(rng, mh, mw, *, extremes=True):
    w = rng.integers(0, 2, (mh, mw), dtype=np.uint8)
    spread = max(1, int(np.sqrt(mw)))
    t = np.clip(mw // 2 + rng.integers(-spread, spread + 1, mh), 0, mw + 1)
    if extremes and mh >= 2:
        t[0], t[-1] = 0, mw + 1          # always 1, never 1
    return DenseLayer(weights=w, thresholds=t.astype(np.int64))


def run_layer(layer, pe, simd, frames, stalls, seed=0):
    """Stream ``frames`` through a LayerEngine; return its outputs as a (B, MH) bit array."""
    dut = LayerEngine(layer, pe=pe, simd=simd)
    stall_in = random.Random(seed) if stalls else None
    stall_out = random.Random(seed + 1) if stalls else None
    got = []

    async def producer(ctx):
        for x in frames:
            beats = golden.words(x, simd)
            for k, word in enumerate(beats):
                await stream_put(ctx, dut.i, {"data": word, "last": k == len(beats) - 1},
                                 rng=stall_in)

    async def consumer(ctx):
        for _ in frames:
            bits = []
            for g in range(dut.nf):
                beat = await stream_get(ctx, dut.o, rng=stall_out)
                assert beat.last == (g == dut.nf - 1)
                bits += [(beat.data >> k) & 1 for k in range(pe)]
            got.append(bits)

    simulate(dut, producer, consumer)
    got = np.array(got, dtype=np.uint8)
    assert got.shape == (len(frames), layer.fan_out)
    return got


@pytest.mark.parametrize("mh,mw,pe,simd", [
    (4, 8, 1, 1),        # fully folded
    (6, 12, 6, 12),      # fully unfolded: hard-wired weights and thresholds
    (6, 10, 2, 5),       # fan-in not a multiple of 8, odd SIMD
    (5, 7, 5, 1),        # PE = MH, SIMD = 1
    (8, 13, 1, 13),      # PE = 1, SIMD = MW (prime)
    (12, 24, 3, 8),
    (4, 64, 2, 64),
])
@pytest.mark.parametrize("stalls", [False, True])
def test_matches_golden(mh, mw, pe, simd, stalls):
    rng = np.random.default_rng([mh, mw, pe, simd])
    layer = random_layer(rng, mh, mw)
    frames = rng.integers(0, 2, (12, mw), dtype=np.uint8)
    expected = golden.dense_layer(frames, layer)
    assert (run_layer(layer, pe, simd, frames, stalls) == expected).all()


def test_flipped_rows_and_constant_thresholds():
    # A row stored inverted (BatchNorm gamma < 0) is just another row: check that every
    # threshold from 0 to N + 1 is handled, with all-ones and all-zeros rows and inputs.
    mw = 9
    w = np.array([[1] * mw, [0] * mw] * 6, dtype=np.uint8)[:mw + 2]
    w[2:] = np.random.default_rng(3).integers(0, 2, (mw, mw))
    layer = DenseLayer(weights=w, thresholds=np.arange(mw + 2, dtype=np.int64))
    frames = np.concatenate([np.zeros((1, mw)), np.ones((1, mw)),
                             np.random.default_rng(4).integers(0, 2, (8, mw))]).astype(np.uint8)
    expected = golden.dense_layer(frames, layer)
    assert (run_layer(layer, 1, 3, frames, stalls=True) == expected).all()


def test_throughput_one_frame_per_cycles():
    # Without stalls, a frame leaves every (MH/PE)*(MW/SIMD) cycles once the pipeline is full.
    rng = np.random.default_rng(7)
    layer = random_layer(rng, 8, 16)
    dut = LayerEngine(layer, pe=2, simd=4)
    frames = 10
    times = []

    async def producer(ctx):
        ctx.set(dut.i.valid, 1)
        for _ in range(frames * dut.sf):
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(times) < frames:
            await ctx.tick()
            cycle += 1
            if ctx.get(dut.o.valid) and ctx.get(dut.o.payload.last):
                times.append(cycle)

    simulate(dut, producer, consumer)
    assert set(np.diff(times)) == {dut.cycles}


@pytest.mark.parametrize("pe,simd,message", [
    (3, 4, r"^layer: pe 3 does not divide the 8 neurons; allowed: 1, 2, 4, 8$"),
    (0, 4, r"^layer: pe 0 does not divide the 8 neurons; allowed: 1, 2, 4, 8$"),
    (2, 5, r"^layer: simd 5 does not divide the 12 inputs; allowed: 1, 2, 3, 4, 6, 12$"),
    (2, 2.0, r"^layer: simd must be an integer, not 2\.0$"),
])
def test_rejects_bad_folding(pe, simd, message):
    layer = random_layer(np.random.default_rng(0), 8, 12)
    with pytest.raises(FoldingError, match=message):
        LayerEngine(layer, pe=pe, simd=simd)


def test_rejects_wrong_layer_kind():
    with pytest.raises(TypeError, match=r"^layer must be a DenseLayer, not 3$"):
        LayerEngine(3, pe=1, simd=1)
