# amaranth: UnusedElaboratable=no
"""Multi-base (ABC-Net) layers: the golden model against a naive loop, the single-base case,
the network file's checks, the gateware against the golden model."""

import numpy as np
import pytest

from bnnhw import artifact, golden, testing
from bnnhw.gateware.top import NetworkTop
from bnnhw.kinds import MaxPoolLayer, MultiBaseConvLayer
from bnnhw.kinds.abc import MultiBaseLayer, z_bound
from bnnhw.kinds.abc_output import MultiBaseOutputLayer
from bnnhw.tensor import Tensor


def _naive_z(weights, coefficients, x, unsigned):
    """z per neuron of one frame, by explicit loops over bases, neurons and inputs."""
    bases, out, width = weights.shape
    z = []
    for j in range(out):
        total = 0
        for m in range(bases):
            for n in range(coefficients.shape[1]):
                d = 0
                for i in range(width):
                    w = 1 if weights[m, j, i] else -1
                    v = int(x[i]) if unsigned else (1 if (int(x[i]) >> n) & 1 else -1)
                    d += w * v
                total += int(coefficients[m, n]) * d
        z.append(total)
    return z


def _naive_network(layers, gammas, x):
    """Scores of one frame through ``layers`` given in their unflipped form: a neuron with a
    negative ``gammas[n][j]`` outputs bit k = (z <= t[j, k]) instead of (z >= t[j, k])."""
    values, unsigned = list(x), True
    for layer, gamma in zip(layers, gammas):
        z = _naive_z(layer["weights"], layer["coefficients"], values, unsigned)
        if "thresholds" not in layer:
            return [int(s) * zc + int(o) for zc, s, o in zip(z, layer["scales"],
                                                             layer["offsets"])]
        values = []
        for j, zj in enumerate(z):
            bits = [(zj >= t) if gamma[j] > 0 else (zj <= t) for t in layer["thresholds"][j]]
            values.append(sum(int(b) << k for k, b in enumerate(bits)))
        unsigned = False
    raise AssertionError("no output layer")


def _random_unflipped(rng):
    """A random multi-base network in torch's terms (some neurons with negative gamma), as
    plain arrays, and its stored form (rows inverted, thresholds negated)."""
    input_bits = int(rng.integers(1, 9))
    depth = int(rng.integers(2, 4))
    sizes = [int(rng.integers(1, 12)) * 2 + 1 for _ in range(depth)] + [int(rng.integers(2, 6))]
    plain, gammas, stored = [], [], []
    k = 1
    for n, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        m = int(rng.integers(1, 5))
        w = rng.integers(0, 2, (m, fan_out, fan_in), dtype=np.uint8)
        c = rng.integers(1, 9, (m, k))
        if n == len(sizes) - 2:
            s, o = rng.integers(1, 4, fan_out), rng.integers(-9, 10, fan_out)
            plain.append({"weights": w, "coefficients": c, "scales": s, "offsets": o})
            gammas.append(np.ones(fan_out))
            stored.append(MultiBaseOutputLayer(weights=w, coefficients=c, offsets=o, scales=s))
            break
        nb = int(rng.integers(1, 5))
        tensor = (Tensor.vector(fan_in, input_bits, "unsigned") if n == 0
                  else Tensor.vector(fan_in, k))
        bound = z_bound(MultiBaseLayer(weights=w, coefficients=c,
                                       thresholds=np.zeros((fan_out, 1), np.int64)), tensor)
        t = rng.integers(-bound - 1, bound + 2, (fan_out, nb))
        # Thresholds at the extremes: always, never, and the reachable ends.
        for value in (-bound, bound + 1, bound, -bound + 1):
            t.flat[rng.integers(t.size)] = value
        gamma = rng.choice([-1.0, 1.0], fan_out)
        # Negative gamma: z <= t; the stored form needs -t in -bound..bound + 1 too.
        t[gamma < 0] = np.clip(t[gamma < 0], -bound - 1, bound)
        t[gamma > 0] = np.clip(t[gamma > 0], -bound, bound + 1)
        plain.append({"weights": w, "coefficients": c, "thresholds": t})
        gammas.append(gamma)
        flip = gamma < 0
        w_stored = w.copy()
        w_stored[:, flip, :] ^= 1
        t_stored = np.where(flip[:, None], -t, t)
        stored.append(MultiBaseLayer(weights=w_stored, coefficients=c, thresholds=t_stored))
        k = nb
    net = artifact.network(input_shape=(sizes[0],), input_bits=input_bits, layers=stored)
    return net, plain, gammas


def test_golden_equals_a_naive_loop_on_random_multi_base_networks():
    rng = np.random.default_rng(11)
    seen = set()
    for _ in range(220):
        net, plain, gammas = _random_unflipped(rng)
        seen |= {(layer.bases, layer.input.bits) for layer in net.layers}
        x = testing.random_inputs(rng, net, 6)
        x[0] = 0
        x[1] = net.input.limit - 1
        result = golden.run(net, x)
        for frame, scores in zip(x, result.scores):
            assert scores.tolist() == _naive_network(plain, gammas, frame)
    assert {(m, k) for m in range(1, 5) for k in range(1, 5)} <= seen


def test_one_base_is_the_single_base_layers():
    rng = np.random.default_rng(5)
    for _ in range(20):
        net = testing.random_network(rng, [int(rng.integers(1, 30)) for _ in range(3)] + [4],
                                     input_bits=int(rng.integers(1, 9)), scales=True)
        first, dense, output = net.layers
        one = np.ones((1, 1), np.int64)
        abc = [MultiBaseLayer(weights=first.weights[None], coefficients=one,
                              thresholds=first.thresholds[:, None]),
               # p >= T iff z = 2p - F >= 2T - F (T = F + 1, never, is z >= F + 1)
               MultiBaseLayer(weights=dense.weights[None], coefficients=one,
                              thresholds=np.minimum(2 * dense.thresholds - dense.fan_in,
                                                    dense.fan_in + 1)[:, None]),
               MultiBaseOutputLayer(weights=output.weights[None], coefficients=one,
                                    offsets=output.offsets, scales=output.scales)]
        multi = artifact.network(input_shape=net.input_shape, input_bits=net.input_bits,
                                 layers=abc)
        x = testing.random_inputs(rng, net, 50)
        single, many = golden.run(net, x), golden.run(multi, x)
        for a, b in zip(single.activations, many.activations):
            assert np.array_equal(a, b)
        assert np.array_equal(single.scores, many.scores)
        assert np.array_equal(single.classes, many.classes)


def test_chains_with_single_base_layers():
    # A single-base dense layer feeds an abc layer (K = 1); an abc layer with N = 1 feeds an
    # output layer.
    rng = np.random.default_rng(2)
    base = testing.random_network(rng, [9, 7, 5, 3], input_bits=3)
    first, dense, output = base.layers
    abc = MultiBaseLayer(weights=rng.integers(0, 2, (2, 5, 7), dtype=np.uint8),
                         coefficients=np.array([[3], [1]]),
                         thresholds=rng.integers(-8, 9, (5, 1)))
    net = artifact.network(input_shape=(9,), input_bits=3, layers=[first, abc, output])
    x = testing.random_inputs(rng, net, 30)
    result = golden.run(net, x)
    assert net.layers[1].output == Tensor.vector(5, bits=1)
    assert np.array_equal(result.scores, output.golden(abc.bind(Tensor.vector(7))
                                                       .golden(first.golden(x))))


def _layer(**changes):
    fields = dict(weights=np.ones((2, 4, 6), np.uint8), coefficients=np.ones((2, 2), np.int64),
                  thresholds=np.zeros((4, 3), np.int64))
    fields.update(changes)
    return MultiBaseLayer(**fields)


@pytest.mark.parametrize("changes,message", [
    ({"weights": np.ones((4, 6), np.uint8)},
     r"layers\[1\]\.weights: expected a 3-D \(weight bases, out, in\) array, not shape "
     r"\(4, 6\)"),
    ({"weights": np.ones((2, 4, 5), np.uint8)},
     r"layers\[1\]\.weights: fan-in 5 does not match the 6 values of the tensor it takes "
     r"\(6 2-base\)"),
    ({"weights": np.full((2, 4, 6), 2, np.uint8)},
     r"layers\[1\]\.weights: values other than 0 and 1"),
    ({"coefficients": np.ones((2, 1), np.int64)},
     r"layers\[1\]\.coefficients: shape \(2, 1\) does not match the expected \(2, 2\)"),
    ({"coefficients": np.zeros((2, 2), np.int64)},
     r"layers\[1\]\.coefficients: values outside 1\.\.65536"),
    ({"thresholds": np.zeros((4,), np.int64)},
     r"layers\[1\]\.thresholds: shape \(4,\) does not match the expected \(4, N\) with N "
     r"output bases in 1\.\.16"),
    ({"thresholds": np.full((4, 3), 26, np.int64)},
     r"layers\[1\]\.thresholds: values outside -24\.\.25"),
    ({"thresholds": np.full((4, 3), 0.5)},
     r"layers\[1\]\.thresholds: dtype float64 is not an integer type "
     r"\(NaN or fractional values cannot be thresholds\)"),
])
def test_rejects_bad_arrays(changes, message):
    with pytest.raises(artifact.ArtifactError, match=f"^net.npz: {message}$"):
        _layer(**changes).check(Tensor.vector(6, bits=2),
                                artifact.Checker("net.npz", "layers[1]"))


def test_thresholds_range_counts_coefficients_and_pixels():
    layer = _layer(coefficients=np.array([[3], [2]]), thresholds=np.full((4, 3), -450))
    tensor = Tensor.vector(6, bits=4, encoding="unsigned")
    assert layer.check(tensor, artifact.Checker("x")) == Tensor.vector(4, bits=3)
    bad = _layer(coefficients=np.array([[3], [2]]), thresholds=np.full((4, 3), -451))
    with pytest.raises(artifact.ArtifactError,
                       match=r"^x: layers\[0\]\.thresholds: values outside -450\.\.451$"):
        bad.check(tensor, artifact.Checker("x", "layers[0]"))


def test_output_layer_refuses_unsigned_inputs():
    layer = MultiBaseOutputLayer(weights=np.ones((1, 2, 3), np.uint8),
                                 coefficients=np.ones((1, 1), np.int64),
                                 offsets=np.zeros(2, np.int64), scales=np.ones(2, np.int64))
    with pytest.raises(artifact.ArtifactError,
                       match=r"^x: layers\[0\]: an abc_output layer takes binary bases, "
                             r"not 3 8-bit$"):
        layer.check(Tensor.vector(3, 8, "unsigned"), artifact.Checker("x", "layers[0]"))


def test_random_abc_networks_are_not_constant():
    rng = np.random.default_rng(4)
    net = testing.random_abc_network(rng, [21, 15, 9, 5], weight_bases=3, act_bases=2)
    x = testing.random_inputs(rng, net, 200)
    result = golden.run(net, x)
    for values in result.activations:
        assert len(np.unique(values)) == 4
    assert len(np.unique(result.classes)) >= 3



# ---- gateware ----------------------------------------------------------------------------

@pytest.mark.parametrize("sizes,input_bits,bases,act,folding,in_simd", [
    ([12, 8, 6, 4], 4, 2, 2, [(2, 3), (3, 4), (2, 6)], 1),
    ([9, 7, 5, 3], 3, 3, 3, [(1, 1), (1, 1), (1, 1)], 3),          # fully folded, primes
    ([10, 6, 6, 3], 2, 4, [1, 4], [(6, 10), (6, 6), (3, 6)], 10),   # fully unfolded
    ([15, 9, 5], 5, [1, 4], 4, [(3, 5), (5, 3)], 5),
])
@pytest.mark.parametrize("memory", ["block", "distributed"])
def test_network_matches_golden_under_stalls(sizes, input_bits, bases, act, folding, in_simd,
                                             memory):
    rng = np.random.default_rng([len(sizes), input_bits, in_simd])
    net = testing.random_abc_network(rng, sizes, weight_bases=bases, act_bases=act,
                                     input_bits=input_bits, scales=True)
    frames = testing.random_inputs(rng, net, 10)
    top = NetworkTop(net, folding, in_simd=in_simd, memory=memory)
    received = testing.run_frames(top, frames, count=in_simd, width=input_bits, stalls=True,
                                  seed=len(sizes))
    scores, classes = testing.unpack_results(received, top.classes)
    expected = golden.run(net, frames)
    assert np.array_equal(scores, expected.scores)
    assert np.array_equal(classes, expected.classes)


def test_one_layer_stage_matches_golden_under_stalls():
    # A hidden abc stage alone: N-bit values out, beats of pe values, stalls on both sides.
    rng = np.random.default_rng(17)
    net = testing.random_abc_network(rng, [14, 6, 3], weight_bases=3, act_bases=3,
                                     input_bits=2)
    layer = net.layers[0]
    stage = layer.engine((3, 7))
    frames = testing.random_inputs(rng, net, 12)
    received = testing.run_frames(stage, frames, count=7, width=2, beats=2, stalls=True,
                                  seed=4)
    got = np.array([[(int(beat.data) >> (3 * k)) & 7 for beat in beats for k in range(3)]
                    for beats in received])
    assert [[int(beat.last) for beat in beats] for beats in received] == [[0, 1]] * 12
    assert np.array_equal(got, layer.golden(frames))


@pytest.mark.parametrize("folding,in_simd", [
    ([(4, 16), (4, 8), (2, 32)], 16),
    ([(32, 64), (16, 32), (10, 32)], 64),
])
def test_initiation_interval_matches_the_model(folding, in_simd):
    net = testing.random_abc_network(np.random.default_rng(5), [64, 32, 32, 10],
                                     weight_bases=2, act_bases=3, input_bits=5)
    top = NetworkTop(net, folding, in_simd=in_simd)
    interval, latency = testing.interval_and_latency(top, 8)
    model = top.performance
    assert abs(interval - model.initiation_interval) <= 0.02 * model.initiation_interval
    assert abs(latency - model.latency) <= 0.1 * model.latency


def test_network_file_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    net = testing.random_abc_network(rng, [11, 7, 5, 3], weight_bases=[2, 3, 1],
                                     act_bases=[4, 2])
    loaded = artifact.load(artifact.save(net, tmp_path / "abc.npz"))
    assert [layer.kind for layer in loaded.layers] == ["abc", "abc", "abc_output"]
    assert loaded.tensors[1] == Tensor.vector(7, bits=4)
    x = testing.random_inputs(rng, net, 40)
    assert np.array_equal(golden.run(loaded, x).scores, golden.run(net, x).scores)


def test_finn_style_w2a2_is_a_special_case():
    # A W2A2 MLP in FINN's terms: weights in {-3, -1, 1, 3}, unsigned 2-bit activations from
    # three evenly spaced thresholds (a = how many z reaches), computed with plain integers;
    # the same network as abc layers: M = 2 bases (alpha 1, 2), N = 3 thermometer bases.
    rng = np.random.default_rng(5)
    sizes, step = [10, 9, 7, 4], 6
    finn_w = [rng.choice([-3, -1, 1, 3], (o, i)) for i, o in zip(sizes[:-1], sizes[1:])]
    finn_t = [rng.integers(-20, 20, o) for o in sizes[1:-1]]
    x = rng.integers(0, 4, (50, sizes[0]))
    # FINN: z = w . a (inputs are 2-bit pixels a too), a' = #{k : z >= t + k * step}.
    a = x
    for w, t in zip(finn_w[:-1], finn_t):
        z = a @ w.T
        a = sum((z >= t + k * step).astype(np.int64) for k in range(3))
    finn_scores = a @ finn_w[-1].T
    # abc: w = 1 * B_0 + 2 * B_1 with B in {-1, +1}: B_1 = sign(w), B_0 = sign(w - 2 B_1).
    layers, tensor_bases = [], None
    for n, w in enumerate(finn_w):
        b1 = np.where(w > 0, 1, -1)
        b0 = w - 2 * b1
        bits = np.stack([(b0 > 0), (b1 > 0)]).astype(np.uint8)
        if n == 0:
            layers.append(MultiBaseLayer(weights=bits, coefficients=np.array([[1], [2]]),
                                         thresholds=np.stack([finn_t[0] + k * step
                                                              for k in range(3)], axis=1)))
            continue
        # Inputs a in thermometer bases: sum_n x_n = 2a - 3, so with c_mn = alpha_m,
        # z_abc = sum_i w_i (2 a_i - 3) = 2 z - 3 sum_i w_i.
        c = np.array([[1, 1, 1], [2, 2, 2]])
        rowsum = w.sum(axis=1)
        if n < len(finn_w) - 1:
            t = np.stack([2 * (finn_t[n] + k * step) - 3 * rowsum for k in range(3)], axis=1)
            bound = w.shape[1] * 9                  # F * sum(c): beyond it, always or never
            t = np.clip(t, -bound, bound + 1)
            layers.append(MultiBaseLayer(weights=bits, coefficients=c, thresholds=t))
        else:
            layers.append(MultiBaseOutputLayer(weights=bits, coefficients=c,
                                               offsets=3 * rowsum, scales=np.ones(4, np.int64)))
    net = artifact.network(input_shape=(10,), input_bits=2, layers=layers)
    result = golden.run(net, x)
    assert np.array_equal(result.scores, 2 * finn_scores)
    assert len(np.unique(result.classes)) > 1


# ---- convolution and pooling -----------------------------------------------------------------

def test_conv_golden_equals_a_naive_loop():
    rng = np.random.default_rng(23)
    for trial in range(30):
        m, n, k = (int(v) for v in rng.integers(1, 5, 3))
        c, h, w = (int(v) for v in rng.integers(1, 5, 3)) if trial % 2 else (2, 5, 4)
        kh, kw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        unsigned = trial % 3 == 0
        tensor = Tensor(c, h, w, 3 if unsigned else k, "unsigned" if unsigned else "bipolar")
        o = int(rng.integers(1, 5))
        weights = rng.integers(0, 2, (m, o, kh, kw, c), dtype=np.uint8)
        coefficients = rng.integers(1, 9, (m, 1 if unsigned else k))
        bound = kh * kw * c * (7 if unsigned else 1) * int(coefficients.sum())
        t = rng.integers(-bound, bound + 2, (o, n))
        layer = MultiBaseConvLayer(weights=weights, coefficients=coefficients, thresholds=t)
        assert layer.check(tensor, artifact.Checker("x")) == Tensor(
            o, h - kh + 1, w - kw + 1, n)
        layer = layer.bind(tensor)
        x = rng.integers(0, tensor.limit, (3, tensor.size))
        got = layer.golden(x)
        for f, frame in enumerate(x):
            image = frame.reshape(h, w, c)
            expected = []
            for y in range(h - kh + 1):
                for xx in range(w - kw + 1):
                    window = image[y:y + kh, xx:xx + kw, :].reshape(-1)
                    z = _naive_z(weights.reshape(m, o, -1), coefficients, window, unsigned)
                    expected += [sum(int(zj >= tj) << b for b, tj in enumerate(row))
                                 for zj, row in zip(z, t)]
            assert got[f].tolist() == expected


def test_pooling_bases_pools_the_largest_preactivation():
    # Every base of a multi-base layer is a threshold of one z, so the OR of each base over a
    # window is the bases of the window's largest z.
    rng = np.random.default_rng(3)
    conv = MultiBaseConvLayer(weights=rng.integers(0, 2, (2, 3, 2, 2, 2), dtype=np.uint8),
                              coefficients=np.array([[1, 2], [3, 1]]),
                              thresholds=rng.integers(-12, 13, (3, 3))).bind(Tensor(2, 6, 6, 2))
    pool = MaxPoolLayer(size=2).bind(conv.output)
    x = rng.integers(0, 4, (40, 72))
    from bnnhw.kinds.abc import matrix_preactivation
    from bnnhw.kinds.conv import windows
    (_, _, rows), = windows(x, conv.input, 2, 2)
    z = matrix_preactivation(conv.matrix, conv.coefficients, conv.input, rows)
    z = z.reshape(40, 5, 5, 3)[:, :4, :4].reshape(40, 2, 2, 2, 2, 3).max(axis=(2, 4))
    bits = (z[..., None] >= conv.thresholds[None, None, None]).astype(np.int64)
    expected = (bits << np.arange(3)).sum(axis=-1).reshape(40, -1)
    assert np.array_equal(pool.golden(conv.golden(x)), expected)


@pytest.mark.parametrize("folding,in_simd", [
    ([(2, 1), (3, 2), (3,), (2, 6), (2, 4)], 1),
    ([(1, 1), (1, 1), (1,), (1, 1), (1, 1)], 1),
    ([(4, 2), (6, 4), (6,), (4, 24), (4, 4)], 2),
])
def test_cnn_matches_golden_under_stalls(folding, in_simd):
    rng = np.random.default_rng(len(folding) + in_simd)
    net = testing.random_abc_cnn(rng, (2, 6, 5), 3, [("conv2d", 2, 4, 2, 2, 3),
                                                     ("conv2d", 3, 6, 2, 1, 2), ("pool", 2),
                                                     ("fc", 2, 4, 3)], 4)
    frames = testing.random_inputs(rng, net, 6)
    top = NetworkTop(net, folding, in_simd=in_simd)
    received = testing.run_frames(top, frames, count=in_simd, width=3, stalls=True, seed=2)
    scores, classes = testing.unpack_results(received, top.classes)
    expected = golden.run(net, frames)
    assert np.array_equal(scores, expected.scores)
    assert np.array_equal(classes, expected.classes)
    assert all(len(np.unique(a)) > 1 for a in expected.activations)
