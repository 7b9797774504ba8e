# amaranth: UnusedElaboratable=no
import numpy as np
import pytest

from bnnhw import golden
from bnnhw.gateware.argmax import ArgmaxUnit
from bnnhw.kinds import OutputLayer
from bnnhw.testing import run_frames, unpack_results


def run_output(layer, pe, simd, frames, stalls):
    """Stream ``frames`` through the layer's engine; return (scores, classes) as arrays."""
    dut = layer.engine((pe, simd))
    return unpack_results(run_frames(dut, frames, count=simd, stalls=stalls), layer.classes)


@pytest.mark.parametrize("classes,mw,pe,simd,scaled", [
    (10, 16, 1, 4, False),
    (10, 16, 10, 16, False),     # fully unfolded
    (10, 13, 5, 1, True),        # prime fan-in, scales
    (3, 8, 3, 2, True),
    (1, 5, 1, 5, False),         # one class
    (4, 24, 2, 8, False),
])
@pytest.mark.parametrize("stalls", [False, True])
def test_matches_golden(classes, mw, pe, simd, scaled, stalls):
    rng = np.random.default_rng([classes, mw, pe, simd])
    w = rng.integers(0, 2, (classes, mw), dtype=np.uint8)
    offsets = rng.integers(-5, 6, classes)
    scales = rng.integers(1, 5, classes) if scaled else np.ones(classes, np.int64)
    layer = OutputLayer(weights=w, offsets=offsets, scales=scales)
    frames = rng.integers(0, 2, (16, mw), dtype=np.uint8)
    scores, cls = run_output(layer, pe, simd, frames, stalls)
    expected = layer.golden(frames)
    assert np.array_equal(scores, expected)
    assert np.array_equal(cls, golden.argmax(expected))


def test_ties_go_to_the_lowest_class():
    # Identical rows give identical scores; offsets make later classes tie with or beat them.
    w = np.zeros((6, 4), dtype=np.uint8)
    layer = OutputLayer(weights=w, offsets=np.array([0, 0, 2, 2, 1, 2]),
                        scales=np.ones(6, np.int64))
    frames = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=np.uint8)
    scores, cls = run_output(layer, 2, 2, frames, stalls=True)
    assert np.array_equal(scores, layer.golden(frames))
    assert cls.tolist() == [2, 2, 2]
    layer = OutputLayer(weights=w, offsets=np.zeros(6, np.int64), scales=np.ones(6, np.int64))
    assert run_output(layer, 3, 4, frames, stalls=False)[1].tolist() == [0, 0, 0]


def test_widths_cover_the_scores():
    layer = OutputLayer(weights=np.zeros((2, 100), np.uint8), offsets=np.array([-5, 1000]),
                        scales=np.array([3, 1]))
    argmax = ArgmaxUnit(scales=layer.scales, offsets=layer.offsets, fan_in=100, lanes=1,
                        pop_width=7)
    # scores span -305..1100: 12 bits signed; one bit of class index
    assert (argmax.score_width, argmax.cls_width, argmax.classes) == (12, 1, 2)
