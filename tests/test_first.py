# amaranth: UnusedElaboratable=no
import numpy as np
import pytest

from bnnhw.folding import FoldingError
from bnnhw.kinds import FirstLayer
from bnnhw.testing import run_frames, unpack_bits


def random_layer(rng, mh, mw, in_bits):
    w = rng.integers(0, 2, (mh, mw), dtype=np.uint8)
    bound = mw * ((1 << in_bits) - 1)
    spread = max(1, int(np.sqrt(mw)) * ((1 << in_bits) - 1))
    t = rng.integers(-spread, spread + 1, mh)
    if mh >= 3:
        t[0], t[1] = -bound, bound + 1       # always 1, never 1
        w[2] = 0                             # all weights -1
    return FirstLayer(weights=w, thresholds=t.astype(np.int64), in_bits=in_bits)


def run_first(layer, pe, simd, frames, stalls):
    """Stream ``frames`` through the layer's engine; return its outputs as (B, MH) bits."""
    dut = layer.engine((pe, simd))
    received = run_frames(dut, frames, count=simd, width=layer.in_bits, beats=dut.plan.nf,
                          stalls=stalls)
    return unpack_bits(received, pe)


@pytest.mark.parametrize("mh,mw,in_bits,pe,simd", [
    (4, 6, 8, 1, 1),
    (6, 10, 5, 6, 10),      # fully unfolded
    (6, 10, 5, 2, 5),
    (3, 7, 1, 3, 1),        # 1-bit inputs, prime fan-in
    (8, 12, 4, 1, 12),
    (4, 16, 8, 2, 4),
])
@pytest.mark.parametrize("stalls", [False, True])
def test_matches_golden(mh, mw, in_bits, pe, simd, stalls):
    rng = np.random.default_rng([mh, mw, in_bits, pe, simd])
    layer = random_layer(rng, mh, mw, in_bits)
    frames = rng.integers(0, 1 << in_bits, (12, mw))
    frames[0], frames[1] = 0, (1 << in_bits) - 1          # extremes of the accumulator
    expected = layer.golden(frames)
    assert np.array_equal(run_first(layer, pe, simd, frames, stalls), expected)


def test_thresholds_at_the_boundary():
    # Every threshold within one of the actual sums: catches an off-by-one in the folded -1s.
    rng = np.random.default_rng(11)
    w = rng.integers(0, 2, (1, 9), dtype=np.uint8)
    x = rng.integers(0, 32, (1, 9))
    acc = int((x[0] * (w[0].astype(np.int64) * 2 - 1)).sum())
    w = np.repeat(w, 3, axis=0)
    layer = FirstLayer(weights=w, thresholds=np.array([acc - 1, acc, acc + 1]), in_bits=5)
    assert run_first(layer, 3, 3, x, stalls=False).tolist() == [[1, 1, 0]]


def test_rejects_bad_folding():
    layer = random_layer(np.random.default_rng(0), 4, 6, 8)
    with pytest.raises(FoldingError,
                       match=r"^layer: simd 4 does not divide the 6 inputs; allowed: 1, 2, 3, 6$"):
        layer.engine((1, 4))
