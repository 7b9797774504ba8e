# amaranth: UnusedElaboratable=no
"""The binarize input stage: integer thresholds on unsigned values, in golden and gateware."""

import numpy as np
import pytest

from bnnhw import artifact, golden, testing
from bnnhw.gateware.binarize import Binarize
from bnnhw.gateware.top import NetworkTop
from bnnhw.kinds import BinarizeLayer, DenseLayer, OutputLayer
from bnnhw.tensor import Tensor


def _layer(thresholds, shape, bits):
    return BinarizeLayer(thresholds=np.array(thresholds)).bind(Tensor(*shape, bits, "unsigned"))


def test_golden_compares_each_value_with_its_channels_threshold():
    layer = _layer([2, 0, 4], (3, 1, 2), 2)
    # Stream order: pixel by pixel, channels within a pixel.
    x = np.array([[1, 0, 3, 2, 3, 3], [2, 1, 0, 3, 0, 2]])
    assert layer.golden(x).tolist() == [[0, 1, 0, 1, 1, 0], [1, 1, 0, 1, 1, 0]]


@pytest.mark.parametrize("channels,shape,bits,simd", [
    (1, (1, 4, 4), 8, 1), (1, (1, 4, 4), 8, 4), (3, (3, 2, 2), 4, 2), (3, (3, 2, 2), 4, 6),
    (4, (4, 3, 1), 3, 3), (6, (6, 1, 2), 2, 4), (2, (2, 2, 3), 5, 12)])
@pytest.mark.parametrize("stalls", [False, True])
def test_stage_matches_golden(channels, shape, bits, simd, stalls):
    rng = np.random.default_rng([channels, bits, simd])
    t = rng.integers(0, (1 << bits) + 1, channels)
    t[0] = 0 if channels > 1 else t[0]
    t[-1] = 1 << bits if channels > 2 else t[-1]
    layer = _layer(t, shape, bits)
    x = rng.integers(0, 1 << bits, (7, layer.input.size))
    expected = layer.golden(x)
    stage = layer.engine((simd,))
    beats = layer.input.size // simd
    received = testing.run_frames(stage, x, count=simd, width=bits, beats=beats, stalls=stalls)
    for n, frame in enumerate(received):
        bits_out = [(beat["data"] >> j) & 1 for beat in frame for j in range(simd)]
        assert bits_out == expected[n].tolist(), f"frame {n}"
        assert [beat["last"] for beat in frame] == [0] * (beats - 1) + [1]


def test_network_with_a_binarize_stage_matches_golden(tmp_path):
    rng = np.random.default_rng(5)
    w1 = rng.integers(0, 2, (6, 12), dtype=np.uint8)
    w2 = rng.integers(0, 2, (4, 6), dtype=np.uint8)
    net = artifact.network(input_shape=(3, 2, 2), input_bits=8, layers=[
        BinarizeLayer(thresholds=np.array([128, 0, 200])),
        DenseLayer(weights=w1, thresholds=rng.integers(3, 10, 6)),
        OutputLayer(weights=w2, offsets=rng.integers(-2, 3, 4), scales=np.ones(4, np.int64))])
    net = artifact.load(artifact.save(net, tmp_path / "net.npz"))
    assert [layer.kind for layer in net.layers] == ["binarize", "dense", "output"]
    x = testing.random_inputs(rng, net, 30)
    result = golden.run(net, x)
    assert np.array_equal(result.activations[0], net.layers[0].golden(x))
    top = NetworkTop(net, [(4,), (2, 3), (2, 3)], in_simd=3)
    received = testing.run_frames(top, x, count=3, width=8, stalls=True)
    scores, classes = testing.unpack_results(received, top.classes)
    assert np.array_equal(scores, result.scores) and np.array_equal(classes, result.classes)


def test_rejects_thresholds_beyond_the_values():
    with pytest.raises(artifact.ArtifactError,
                       match=r"^<network>: layers\[0\]\.thresholds: values outside 0\.\.16$"):
        artifact.network(input_shape=(2, 1, 1), input_bits=4, layers=[
            BinarizeLayer(thresholds=np.array([3, 17])),
            OutputLayer(weights=np.ones((2, 2), np.uint8), offsets=np.zeros(2, np.int64),
                        scales=np.ones(2, np.int64))])


def test_rejects_one_threshold_per_value_instead_of_per_channel():
    with pytest.raises(artifact.ArtifactError,
                       match=r"^<network>: layers\[0\]\.thresholds: shape \(4,\) does not match "
                             r"the expected \(1,\)$"):
        artifact.network(input_shape=(2, 2), input_bits=4, layers=[
            BinarizeLayer(thresholds=np.array([3, 1, 2, 3])),
            OutputLayer(weights=np.ones((2, 4), np.uint8), offsets=np.zeros(2, np.int64),
                        scales=np.ones(2, np.int64))])


def test_rejects_binary_input():
    out = OutputLayer(weights=np.ones((2, 4), np.uint8), offsets=np.zeros(2, np.int64),
                      scales=np.ones(2, np.int64))
    with pytest.raises(artifact.ArtifactError,
                       match=r"^<network>: layers\[1\]: a binarize layer takes unsigned values, "
                             r"not 4 binary$"):
        artifact.network(input_shape=(4,), input_bits=4, layers=[
            BinarizeLayer(thresholds=np.array([1, 1, 1, 1])), BinarizeLayer(
                thresholds=np.array([1, 1, 1, 1])), out])


def test_stage_rejects_a_threshold_beyond_the_values():
    with pytest.raises(ValueError, match=r"^threshold 9 is outside 0\.\.8 for 3-bit values$"):
        Binarize(thresholds=[1, 9], bits=3, simd=2)
