# amaranth: UnusedElaboratable=no
import numpy as np
import pytest

from bnnhw.folding import FoldingError, LayerFolding
from bnnhw.kinds import DenseLayer
from bnnhw.testing import result_times, run_frames, unpack_bits


def random_layer(rng, mh, mw, *, extremes=True):
    w = rng.integers(0, 2, (mh, mw), dtype=np.uint8)
    spread = max(1, int(np.sqrt(mw)))
    t = np.clip(mw // 2 + rng.integers(-spread, spread + 1, mh), 0, mw + 1)
    if extremes and mh >= 2:
        t[0], t[-1] = 0, mw + 1          # always 1, never 1
    return DenseLayer(weights=w, thresholds=t.astype(np.int64))


def run_layer(layer, pe, simd, frames, stalls, memory="block"):
    """Stream ``frames`` through the layer's engine; return its outputs as (B, MH) bits."""
    dut = layer.engine(LayerFolding(pe, simd), memory)
    return unpack_bits(run_frames(dut, frames, count=simd, beats=dut.plan.nf, stalls=stalls),
                       pe)


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
@pytest.mark.parametrize("memory", ["block", "distributed"])
def test_matches_golden(mh, mw, pe, simd, stalls, memory):
    rng = np.random.default_rng([mh, mw, pe, simd])
    layer = random_layer(rng, mh, mw)
    frames = rng.integers(0, 2, (12, mw), dtype=np.uint8)
    expected = layer.golden(frames)
    assert np.array_equal(run_layer(layer, pe, simd, frames, stalls, memory), expected)


def test_flipped_rows_and_constant_thresholds():
    # A row stored inverted (BatchNorm gamma < 0) is just another row: check that every
    # threshold from 0 to N + 1 is handled, with all-ones and all-zeros rows and inputs.
    mw = 9
    w = np.array([[1] * mw, [0] * mw] * 6, dtype=np.uint8)[:mw + 2]
    w[2:] = np.random.default_rng(3).integers(0, 2, (mw, mw))
    layer = DenseLayer(weights=w, thresholds=np.arange(mw + 2, dtype=np.int64))
    frames = np.concatenate([np.zeros((1, mw)), np.ones((1, mw)),
                             np.random.default_rng(4).integers(0, 2, (8, mw))]).astype(np.uint8)
    expected = layer.golden(frames)
    assert np.array_equal(run_layer(layer, 1, 3, frames, stalls=True), expected)


def test_throughput_one_frame_per_cycles():
    # Without stalls, a frame leaves every (MH/PE)*(MW/SIMD) cycles once the pipeline is full.
    rng = np.random.default_rng(7)
    layer = random_layer(rng, 8, 16)
    dut = layer.engine(LayerFolding(2, 4))
    frames = 10
    times = result_times(dut, frames * dut.sf, frames, last_only=True)
    assert set(np.diff(times)) == {dut.cycles} == {layer.figures(LayerFolding(2, 4)).cycles}


@pytest.mark.parametrize("pe,simd,message", [
    (3, 4, r"^layer: pe 3 does not divide the 8 neurons; allowed: 1, 2, 4, 8$"),
    (0, 4, r"^layer: pe must be a positive integer, not 0$"),
    (2, 5, r"^layer: simd 5 does not divide the 12 inputs; allowed: 1, 2, 3, 4, 6, 12$"),
    (2, 2.0, r"^layer: simd must be an integer, not 2\.0$"),
])
def test_rejects_bad_folding(pe, simd, message):
    layer = random_layer(np.random.default_rng(0), 8, 12)
    with pytest.raises(FoldingError, match=message):
        layer.engine(LayerFolding(pe, simd))


def test_rejects_folding_of_the_wrong_shape():
    layer = random_layer(np.random.default_rng(0), 8, 12)
    with pytest.raises(FoldingError, match=r"^layer: expected a \(pe, simd\) pair, not 3$"):
        layer.engine(3)
    with pytest.raises(FoldingError, match=r"^layer: expected the folding parameters pe, "
                                           r"simd, not pe$"):
        layer.engine({"pe": 2})
