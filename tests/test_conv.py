# amaranth: UnusedElaboratable=no
"""Convolution, max-pool and the sliding-window generator: golden against a plain loop
reference on +-1 integers, and the gateware against golden under random stalls."""

import numpy as np
import pytest

from bnnhw import artifact, golden, testing
from bnnhw.gateware.pool import MaxPool
from bnnhw.gateware.top import NetworkTop
from bnnhw.gateware.window import WindowGenerator
from bnnhw.kinds import ConvLayer, FirstConvLayer, MaxPoolLayer
from bnnhw.kinds.conv import windows
from bnnhw.tensor import Tensor, from_stream_order


def naive_run(net, frame):
    """The semantics of the kinds' files spelled out with loops, one frame at a time: images
    as [channel][row][column] lists of +1/-1 (or of unsigned pixels before the first layer)."""
    c, h, w = net.input_shape
    flat = [int(v) for v in frame]
    image = [[[flat[(y * w + x) * c + ch] for x in range(w)] for y in range(h)]
             for ch in range(c)]
    bipolar = lambda bit: 1 if bit else -1
    unsigned = True
    activations = []
    for layer in net.layers:
        if isinstance(layer, MaxPoolLayer):
            p = layer.size
            c, h, w = len(image), len(image[0]), len(image[0][0])
            image = [[[max(image[ch][y * p + dy][x * p + dx] for dy in range(p)
                           for dx in range(p)) for x in range(w // p)] for y in range(h // p)]
                     for ch in range(c)]
        elif isinstance(layer, ConvLayer):
            out, kh, kw, c = layer.weights.shape
            h, w = len(image[0]), len(image[0][0])
            result = []
            for o in range(out):
                plane = []
                for y in range(h - kh + 1):
                    row = []
                    for x in range(w - kw + 1):
                        acc = sum(bipolar(layer.weights[o][dy][dx][ch])
                                  * image[ch][y + dy][x + dx]
                                  for dy in range(kh) for dx in range(kw) for ch in range(c))
                        if unsigned:
                            bit = acc >= layer.thresholds[o]
                        else:                   # a popcount: (dot + N) / 2
                            bit = (acc + kh * kw * c) // 2 >= layer.thresholds[o]
                        row.append(1 if bit else -1)
                    plane.append(row)
                result.append(plane)
            image = result
        else:
            # Dense and output layers take the tensor as a vector in stream order.
            c, h, w = len(image), len(image[0]), len(image[0][0])
            vector = [image[ch][y][x] for y in range(h) for x in range(w) for ch in range(c)]
            n = len(vector)
            dots = [sum(bipolar(wt) * v for wt, v in zip(row, vector)) for row in layer.weights]
            if hasattr(layer, "offsets"):
                scores = [int(s) * d + int(o) for d, s, o in zip(dots, layer.scales,
                                                                  layer.offsets)]
                best = max(range(len(scores)), key=lambda k: (scores[k], -k))
                return activations, scores, best
            if unsigned:
                bits = [1 if d >= t else -1 for d, t in zip(dots, layer.thresholds)]
            else:
                bits = [1 if (d + n) // 2 >= t else -1 for d, t in zip(dots, layer.thresholds)]
            image = [[[b]] for b in bits]
        unsigned = False
        c, h, w = len(image), len(image[0]), len(image[0][0])
        activations.append([1 if image[ch][y][x] > 0 else 0 for y in range(h)
                            for x in range(w) for ch in range(c)])
    raise AssertionError("no output layer")


def random_spec(rng):
    """A random small CNN: odd sizes, kernels 1..5, channel counts not multiples of 8."""
    c, h, w = int(rng.integers(1, 4)), int(rng.integers(5, 12)), int(rng.integers(5, 12))
    layers, shape = [], (c, h, w)
    for n in range(int(rng.integers(1, 4))):
        ch, hh, ww = shape
        if n and rng.random() < 0.35 and min(hh, ww) >= 2:
            size = int(rng.integers(2, 4)) if min(hh, ww) >= 3 else 2
            layers.append(("pool", size))
            shape = (ch, hh // size, ww // size)
            continue
        kh = int(rng.integers(1, min(5, hh) + 1))
        kw = int(rng.integers(1, min(5, ww) + 1))
        out = int(rng.integers(1, 12))
        layers.append(("conv2d", kh, kw, out))
        shape = (out, hh - kh + 1, ww - kw + 1)
    if rng.random() < 0.5:
        layers.append(("fc", int(rng.integers(2, 20))))
    return (c, h, w), layers, int(rng.integers(2, 8))


@pytest.mark.parametrize("seed", range(200))
def test_golden_matches_naive_reference(seed):
    rng = np.random.default_rng([seed, 10])
    shape, layers, classes = random_spec(rng)
    bits = int(rng.integers(1, 9))
    net = testing.random_cnn(rng, shape, layers, classes, input_bits=bits, scales=bool(seed % 2))
    x = testing.random_inputs(rng, net, 3)
    x[0] = (1 << bits) - 1
    result = golden.run(net, x)
    for b, frame in enumerate(x):
        activations, scores, best = naive_run(net, frame)
        for n, values in enumerate(activations):
            assert result.activations[n][b].tolist() == values, f"layer {n}, frame {b}"
        assert result.scores[b].tolist() == scores and result.classes[b] == best


def test_random_networks_cover_the_edge_cases():
    seen = {"odd image": 0, "k=1": 0, "k=5": 0, "pool 2": 0, "pool 3": 0, "T=0": 0,
            "T=N+1": 0, "channels not a multiple of 8": 0, "rectangular kernel": 0}
    for seed in range(200):
        rng = np.random.default_rng([seed, 10])
        shape, layers, classes = random_spec(rng)
        bits = int(rng.integers(1, 9))
        net = testing.random_cnn(rng, shape, layers, classes, input_bits=bits)
        seen["odd image"] += shape[1] % 2 == 1 or shape[2] % 2 == 1
        for layer in net.layers:
            if isinstance(layer, ConvLayer):
                kh, kw = layer.kernel
                seen["k=1"] += kh == 1 or kw == 1
                seen["k=5"] += kh == 5 or kw == 5
                seen["rectangular kernel"] += kh != kw
                seen["channels not a multiple of 8"] += layer.out_channels % 8 != 0
                low, high = layer.threshold_range(layer.input)
                seen["T=0"] += bool((layer.thresholds == low).any())
                seen["T=N+1"] += bool((layer.thresholds == high).any())
            if isinstance(layer, MaxPoolLayer):
                seen[f"pool {layer.size}"] += 1
    assert all(count >= 10 for count in seen.values()), seen


def test_flipped_channel_is_the_complement():
    # An output channel stored inverted with T' = N - T + 1 fires exactly when the original
    # channel's popcount is at most T - 1 (the gamma < 0 rule).
    rng = np.random.default_rng(7)
    w = rng.integers(0, 2, (1, 3, 3, 2), dtype=np.uint8)
    x = rng.integers(0, 2, (50, 5 * 5 * 2), dtype=np.uint8)
    tensor = Tensor(2, 5, 5)
    popcount = np.concatenate([np.sum(rows == w.reshape(1, -1), axis=1)
                               for _, _, rows in windows(x, tensor, 3, 3)]).reshape(50, -1)
    for t in range(20):
        flipped = ConvLayer(weights=1 - w, thresholds=np.array([18 - t + 1])).bind(tensor)
        assert np.array_equal(flipped.golden(x), popcount <= t - 1)


def test_maxpool_is_an_or_over_the_window():
    layer = MaxPoolLayer(size=2).bind(Tensor(1, 3, 5))
    x = np.zeros((1, 15), np.uint8)
    x[0, 1 * 5 + 3] = 1                    # row 1, column 3: window (0, 1)
    x[0, 2 * 5 + 0] = 1                    # row 2 is beyond the last whole window: dropped
    assert layer.golden(x).tolist() == [[0, 1]]


# ---- gateware ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,kh,kw,simd,bits", [
    ((3, 5, 4), 3, 2, 3, 1), ((2, 6, 6), 3, 3, 1, 8), ((1, 4, 7), 1, 1, 1, 2),
    ((4, 5, 5), 5, 5, 2, 1), ((6, 3, 8), 2, 4, 6, 3), ((1, 1, 1), 1, 1, 1, 1),
])
@pytest.mark.parametrize("stalls", [False, True])
def test_window_generator_gives_every_window(shape, kh, kw, simd, bits, stalls):
    c, h, w = shape
    rng = np.random.default_rng([c, h, w, kh, kw])
    frames = rng.integers(0, 1 << bits, (5, c * h * w))
    dut = WindowGenerator(height=h, width=w, channels=c, kh=kh, kw=kw, simd=simd, bits=bits)
    per_window = kh * kw * c // simd
    count = (h - kh + 1) * (w - kw + 1) * per_window
    received = testing.run_frames(dut, frames, count=simd, width=bits, beats=count,
                                  stalls=stalls, seed=3)
    assert len(received) == len(frames)               # nothing lost, duplicated or reordered
    tensor = Tensor(c, h, w, bits, "unsigned")
    expected = np.concatenate([rows for _, _, rows in windows(frames, tensor, kh, kw)])
    expected = expected.reshape(len(frames), -1)
    mask = (1 << (simd * bits)) - 1
    for n, beats in enumerate(received):
        values = [(beat.data >> (j * bits)) & ((1 << bits) - 1) for beat in beats
                  for j in range(simd)]
        assert values == expected[n].tolist(), f"frame {n}"
        assert [int(beat.last) for beat in beats] == [0] * (count - 1) + [1]
        assert all(beat.data <= mask for beat in beats)


@pytest.mark.parametrize("shape,size,simd", [((3, 5, 4), 2, 3), ((2, 7, 7), 3, 1),
                                             ((4, 4, 6), 2, 2), ((5, 3, 3), 3, 5),
                                             ((1, 5, 5), 1, 1)])
@pytest.mark.parametrize("stalls", [False, True])
def test_maxpool_matches_golden(shape, size, simd, stalls):
    c, h, w = shape
    rng = np.random.default_rng([c, h, w, size])
    frames = rng.integers(0, 2, (6, c * h * w), dtype=np.uint8)
    frames[0] = 0
    dut = MaxPool(height=h, width=w, channels=c, size=size, simd=simd)
    count = (h // size) * (w // size) * c // simd
    received = testing.run_frames(dut, frames, count=simd, beats=count, stalls=stalls, seed=5)
    assert len(received) == len(frames)
    expected = MaxPoolLayer(size=size).bind(Tensor(c, h, w)).golden(frames)
    assert np.array_equal(testing.unpack_bits(received, simd), expected)


@pytest.mark.parametrize("kind,pe,simd", [("conv", 2, 3), ("conv", 4, 1), ("first", 1, 2),
                                          ("first", 4, 1)])
@pytest.mark.parametrize("stalls", [False, True])
def test_conv_stage_matches_golden(kind, pe, simd, stalls):
    rng = np.random.default_rng([pe, simd, len(kind)])
    if kind == "conv":
        tensor = Tensor(6, 5, 6)
        layer = ConvLayer(weights=rng.integers(0, 2, (4, 3, 2, 6), dtype=np.uint8),
                          thresholds=rng.integers(0, 38, 4))
    else:
        tensor = Tensor(2, 6, 5, 4, "unsigned")
        layer = FirstConvLayer(weights=rng.integers(0, 2, (4, 2, 3, 2), dtype=np.uint8),
                               thresholds=rng.integers(-80, 80, 4), in_bits=4)
    layer = layer.bind(tensor)
    frames = rng.integers(0, tensor.limit, (4, tensor.size))
    dut = layer.engine((pe, simd))
    out = layer.output
    received = testing.run_frames(dut, frames, count=simd, width=tensor.bits,
                                  beats=out.size // pe, stalls=stalls, seed=7)
    assert np.array_equal(testing.unpack_bits(received, pe), layer.golden(frames))


def _cnn(seed=3):
    rng = np.random.default_rng(seed)
    return testing.random_cnn(rng, (2, 8, 7), [("conv2d", 3, 3, 6), ("conv2d", 2, 2, 5),
                                               ("pool", 2), ("fc", 7)], 5, input_bits=4,
                              scales=True)


@pytest.mark.parametrize("folding,in_simd", [
    ([(3, 2), (5, 3), (5,), (7, 2), (5, 7)], 2),
    ([(1, 1), (1, 1), (1,), (1, 1), (1, 1)], 1),
    ([(6, 2), (5, 6), (5,), (7, 10), (5, 7)], 14),
])
@pytest.mark.parametrize("stalls", [False, True])
def test_cnn_top_matches_golden(folding, in_simd, stalls):
    net = _cnn()
    x = testing.random_inputs(np.random.default_rng(1), net, 5)
    top = NetworkTop(net, folding, in_simd=in_simd)
    received = testing.run_frames(top, x, count=in_simd, width=4, stalls=stalls, seed=2)
    scores, classes = testing.unpack_results(received, top.classes)
    expected = golden.run(net, x)
    assert np.array_equal(scores, expected.scores)
    assert np.array_equal(classes, expected.classes)


@pytest.mark.parametrize("folding", [[(3, 2), (5, 3), (5,), (7, 2), (5, 7)],
                                     [(6, 1), (1, 6), (1,), (1, 10), (1, 1)]])
def test_cnn_initiation_interval_matches_the_model(folding):
    top = NetworkTop(_cnn(), folding, in_simd=2)
    interval, latency = testing.interval_and_latency(top, 6)
    model = top.performance
    assert abs(interval - model.initiation_interval) <= 0.02 * model.initiation_interval
    # Rows are modelled as arriving evenly; on frames this small they come in bursts (on the
    # digits CNN and on CNV the model is within 0.2%).
    assert abs(latency - model.latency) <= 0.15 * model.latency


def test_cnn_network_file_round_trip(tmp_path):
    net = _cnn()
    loaded = artifact.load(artifact.save(net, tmp_path / "cnn.npz"))
    x = testing.random_inputs(np.random.default_rng(4), net, 20)
    assert np.array_equal(golden.run(loaded, x).scores, golden.run(net, x).scores)
    assert [layer.kind for layer in loaded.layers] == ["first_conv", "conv", "maxpool",
                                                      "dense", "output"]
    assert loaded.layers[3].input == Tensor(5, 2, 2)


@pytest.mark.parametrize("layer,fold,message", [
    (ConvLayer(weights=np.ones((4, 3, 3, 6), np.uint8), thresholds=np.zeros(4, np.int64)),
     (3, 2), r"^layer: pe 3 does not divide the 4 output channels; allowed: 1, 2, 4$"),
    (ConvLayer(weights=np.ones((4, 3, 3, 6), np.uint8), thresholds=np.zeros(4, np.int64)),
     (2, 4), r"^layer: simd 4 does not divide the 6 input channels; allowed: 1, 2, 3, 6$"),
    (MaxPoolLayer(size=2), (4,), r"^layer: simd 4 does not divide the 6 channels; allowed: "
                                 r"1, 2, 3, 6$"),
    (MaxPoolLayer(size=2), (2, 3), r"^layer: expected a \(simd,\) value, not \(2, 3\)$"),
])
def test_rejects_bad_folding(layer, fold, message):
    from bnnhw.folding import FoldingError
    layer = layer.bind(Tensor(6, 5, 5))
    with pytest.raises(FoldingError, match=message):
        layer.engine(fold)


def test_stream_order_reorders_channel_planes():
    planes = np.arange(2 * 3 * 4).reshape(1, 2, 3, 4)        # (frames, C, H, W)
    from bnnhw.tensor import to_stream_order
    stream = to_stream_order(planes.reshape(1, -1), (2, 3, 4))
    assert stream[0, :4].tolist() == [0, 12, 1, 13]          # (y0, x0, c0), (y0, x0, c1), ...
    assert np.array_equal(from_stream_order(stream, (2, 3, 4)), planes)
