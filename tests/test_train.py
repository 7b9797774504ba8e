"""Training and export (train/): STE, threshold folding, torch vs golden, short runs."""

import argparse
import hashlib
import itertools
import json
import math
import re
import shutil
import struct

import numpy as np
import pytest

import bnnhw.train                 # noqa: F401  (before torch: it sets OMP_WAIT_POLICY)
from bnnhw import artifact, golden
from bnnhw.datasets import fingerprint, load_dataset

torch = pytest.importorskip("torch")

from bnnhw.train import export, train as t                     # noqa: E402
from bnnhw.train.model import BinaryMLP, BinaryNet, RoundSTE, SignSTE     # noqa: E402


def test_sign_ste_forward_and_clipped_identity_gradient():
    x = torch.tensor([-3.0, -1.0001, -1.0, -0.5, -0.0, 0.0, 1e-30, 0.5, 1.0, 1.0001, 7.0],
                     dtype=torch.float64, requires_grad=True)
    y = SignSTE.apply(x)
    assert y.tolist() == [-1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1]       # sign(0) = sign(-0) = +1
    grad = torch.linspace(-2, 3, len(x), dtype=torch.float64)
    y.backward(grad)
    expected = torch.where(x.detach().abs() <= 1, grad, torch.zeros_like(grad))
    assert torch.equal(x.grad, expected)


def test_round_ste_passes_gradient_unchanged():
    x = torch.tensor([-1.5, -0.4, 0.5, 2.6], requires_grad=True)
    y = RoundSTE.apply(x)
    assert y.tolist() == [-2.0, -0.0, 0.0, 3.0]
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


# --- threshold folding against brute force -------------------------------------------------

def _brute_force(p, n, gamma, beta, mean, var, eps, a, c):
    """The float64 BatchNorm + sign decision for popcount p of a dense neuron."""
    return gamma * (a * (2 * p - n) + c - mean) / math.sqrt(var + eps) + beta >= 0


@pytest.mark.parametrize("n", [1, 2, 7, 64, 255])
def test_fold_dense_thresholds_match_brute_force_over_all_popcounts(n):
    rng = np.random.default_rng(n)
    count = 400
    gamma = rng.normal(size=count) * rng.choice([1e-30, 1e-3, 1, 30], size=count)
    gamma[::7] = 0
    gamma[1::5] *= -1
    beta = rng.normal(size=count) * rng.choice([1, 10, 1e6], size=count)
    mean = rng.normal(size=count) * math.sqrt(n)
    var = rng.uniform(0, 2 * n, size=count)
    a = rng.choice([0.0, 0.01, 1.0, 3.7], size=count)
    c = rng.normal(size=count) * rng.choice([0, 1], size=count)
    eps = 1e-5
    t, invert = export.fold_thresholds(gamma=gamma, beta=beta, mean=mean, var=var, eps=eps,
                                       a=a, c=c, low=0, high=n + 1, dense_fan_in=n)
    assert ((0 <= t) & (t <= n + 1)).all()
    for j in range(count):
        for p in range(n + 1):
            q = n - p if invert[j] else p
            expected = _brute_force(p, n, gamma[j], beta[j], mean[j], var[j], eps, a[j], c[j])
            assert (q >= t[j]) == expected, (j, p)


def test_fold_first_thresholds_match_brute_force_over_all_sums():
    rng = np.random.default_rng(5)
    bound, count = 20, 300
    gamma = rng.normal(size=count)
    gamma[::6] = 0
    beta = rng.normal(size=count) * rng.choice([1, 1e7], size=count)
    mean, var = rng.normal(size=count) * 5, rng.uniform(0, 30, size=count)
    a, c = rng.uniform(0, 2, size=count), rng.normal(size=count)
    t, invert = export.fold_thresholds(gamma=gamma, beta=beta, mean=mean, var=var, eps=1e-5,
                                       a=a, c=c, low=-bound, high=bound + 1)
    for j in range(count):
        for acc in range(-bound, bound + 1):
            expected = gamma[j] * (a[j] * acc + c[j] - mean[j]) / math.sqrt(var[j] + 1e-5) \
                + beta[j] >= 0
            assert ((-acc if invert[j] else acc) >= t[j]) == expected, (j, acc)


def _set_bn(norm, rng, *, gamma, beta_scale=1.0, center=0.0, spread=1.0):
    with torch.no_grad():
        norm.weight.copy_(torch.as_tensor(gamma, dtype=torch.float32))
        norm.bias.copy_(torch.as_tensor(rng.normal(size=norm.num_features) * beta_scale))
        norm.running_mean.copy_(torch.as_tensor(center + rng.normal(size=norm.num_features)
                                                * spread))
        norm.running_var.copy_(torch.as_tensor(rng.uniform(0.1, 2, norm.num_features)
                                               * spread ** 2))


@pytest.mark.parametrize("case", ["positive", "negative", "zero", "huge_beta", "mixed"])
@pytest.mark.parametrize("scaling", ["none", "alpha"])
def test_export_of_hand_built_layers_matches_torch_on_every_input(case, scaling):
    """First layer: all 4**3 inputs; dense layer: all 2**6 inputs (every popcount)."""
    rng = np.random.default_rng(["positive", "negative", "zero", "huge_beta",
                                 "mixed"].index(case))
    torch.manual_seed(1)
    model = BinaryMLP(3, 2, (6, 7), 4, scaling=scaling, mean=0.3, std=0.7)
    for n, norm in enumerate(model.norms):
        size = norm.num_features
        gamma = {"positive": rng.uniform(0.1, 2, size), "negative": -rng.uniform(0.1, 2, size),
                 "zero": np.zeros(size), "huge_beta": rng.normal(size=size),
                 "mixed": rng.normal(size=size) * (np.arange(size) % 3 != 0)}[case]
        beta_scale = 1e6 if case == "huge_beta" else 1.0
        # Spread the running means over the range of the layer's integer sums.
        spread = 1.0 if n == 0 else 2.0
        _set_bn(norm, rng, gamma=gamma, beta_scale=beta_scale, spread=spread)
    model.eval()
    net = export.export(model, input_shape=(3,))
    double = model.double()
    first, dense = net.layers[0], net.layers[1]
    if case in ("huge_beta", "zero"):      # constant outputs: the ends of the ranges
        assert set(first.thresholds) <= {-first.acc_bound, first.acc_bound + 1}
        assert set(dense.thresholds) <= {0, dense.fan_in + 1}
    with torch.no_grad():
        x = np.array(list(itertools.product(range(4), repeat=3)), dtype=np.int64)
        v = double.norms[0](double.linears[0](torch.from_numpy(x).double()))
        assert np.array_equal(first.golden(x), (v >= 0).numpy().astype(np.uint8))
        bits = np.array(list(itertools.product([0, 1], repeat=6)), dtype=np.uint8)
        v = double.norms[1](double.linears[1](torch.from_numpy(bits * 2.0 - 1)))
        assert np.array_equal(dense.golden(bits), (v >= 0).numpy().astype(np.uint8))
    if case == "negative":
        assert (first.weights != (model.linears[0].weight >= 0).numpy()).all()


# --- golden == torch eval on random models -------------------------------------------------

def _random_model(seed, in_bits, scaling, in_features=20, hidden=(17, 33, 9), classes=5):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = BinaryMLP(in_features, in_bits, hidden, classes, scaling=scaling,
                      mean=float(rng.uniform(0, 0.5)), std=float(rng.uniform(0.2, 2)))
    x = rng.integers(0, 1 << in_bits, size=(300, in_features))
    # BatchNorm statistics from one batch (momentum 1), then random gamma (some negative or
    # zero) and beta, so that activations are balanced but thresholds arbitrary.
    for norm in model.norms:
        norm.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(x).float())
        for norm in model.norms:
            size = norm.num_features
            gamma = rng.normal(size=size)
            gamma[rng.random(size) < 0.1] = 0
            norm.weight.copy_(torch.as_tensor(gamma))
            norm.bias.copy_(torch.as_tensor(rng.normal(size=size) * 0.5))
        model.output.offset.copy_(torch.as_tensor(rng.normal(size=classes)))
    model.eval()
    return model, x


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("in_bits,scaling", [(1, "none"), (5, "alpha"), (8, "none"),
                                             (8, "alpha")])
def test_golden_equals_torch_eval_on_random_models(seed, in_bits, scaling):
    model, x = _random_model(seed, in_bits, scaling)
    net = export.export(model, input_shape=(4, 5))
    result = golden.run(net, x)
    with torch.no_grad():
        _, _, bits, scores = model.trace(torch.from_numpy(x).float())
    for n, b in enumerate(bits):
        assert np.array_equal(result.activations[n], b.numpy()), f"layer {n}"
        assert 0 < b.float().mean() < 1, f"layer {n} is constant"
    assert np.array_equal(result.scores, scores.numpy().astype(np.int64))
    assert np.array_equal(result.classes, scores.argmax(dim=1).numpy())
    report = export.self_check(model, net, x, np.zeros(len(x), np.int64))
    assert report["class_agreement"] == len(x)
    assert all(layer["mismatches"] == layer["local_mismatches"] == 0
               for layer in report["layers"])


def _random_cnn(seed, in_bits, scaling, shape=(2, 9, 8), layers="conv:5:3,conv:6:2,pool:2,"
                                                                  "conv:7:2,dense:9", classes=4):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = BinaryNet(shape, in_bits, layers, classes, scaling=scaling,
                      mean=float(rng.uniform(0, 0.5)), std=float(rng.uniform(0.2, 2)))
    x = rng.integers(0, 1 << in_bits, size=(200, int(np.prod(shape))))
    for norm in model.norms:
        norm.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(x).float())
        for norm in model.norms:
            size = norm.num_features
            gamma = rng.normal(size=size)
            gamma[rng.random(size) < 0.15] = 0
            norm.weight.copy_(torch.as_tensor(gamma))
            norm.bias.copy_(torch.as_tensor(rng.normal(size=size) * 0.5))
        model.output.offset.copy_(torch.as_tensor(rng.normal(size=classes)))
    model.eval()
    return model, x


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("in_bits,scaling,layers", [
    (8, "none", "conv:5:3,conv:6:2,pool:2,conv:7:2,dense:9"),
    (5, "alpha", "conv:5:3,conv:6:2,pool:2,conv:7:2,dense:9"),
    (3, "none", "conv:4:1,pool:3,conv:3:2"),              # output straight after a conv
    (8, "alpha", "dense:11,dense:7"),
])
def test_golden_equals_torch_eval_on_random_cnns(seed, in_bits, scaling, layers):
    model, x = _random_cnn(seed, in_bits, scaling, layers=layers)
    net = export.export(model, input_shape=(2, 9, 8))
    assert len(net.layers) == len(model.steps) + 1
    result = golden.run(net, x)
    with torch.no_grad():
        _, _, bits, scores = model.trace(torch.from_numpy(x).float())
    for n, b in enumerate(bits):
        assert np.array_equal(result.activations[n], b.numpy()), f"layer {n}"
    assert np.array_equal(result.scores, scores.numpy().astype(np.int64))
    report = export.self_check(model, net, x, np.zeros(len(x), np.int64))
    assert report["class_agreement"] == len(x)
    assert all(layer["mismatches"] == layer["local_mismatches"] == 0
               for layer in report["layers"])


def test_cnn_export_reorders_weights_to_stream_order():
    model, _ = _random_cnn(0, 8, "none", layers="conv:3:2,dense:4")
    net = export.export(model, input_shape=(2, 9, 8))
    conv, dense = net.layers[0], net.layers[1]
    torch_conv = (model.linears[0].weight.detach() >= 0).numpy()          # (O, C, k, k)
    invert = conv.weights[:, 0, 0, 0] != torch_conv[:, 0, 0, 0]
    assert np.array_equal(conv.weights ^ invert[:, None, None, None],
                          torch_conv.transpose(0, 2, 3, 1))
    torch_dense = (model.linears[1].weight.detach() >= 0).numpy()         # columns (C, H, W)
    invert = dense.weights[:, 0] != torch_dense[:, 0]
    c, h, w = 3, 8, 7
    for column in (0, 5, 100, c * h * w - 1):
        ch, y, x = column // (h * w), column // w % h, column % w
        stream = (y * w + x) * c + ch
        assert np.array_equal(dense.weights[:, stream] ^ invert, torch_dense[:, column])


@pytest.mark.parametrize("layers,message", [
    ("conv:4", r"layer 'conv:4' is not conv:CHANNELS:KERNEL, pool:SIZE or dense:NEURONS"),
    ("pool:2,dense:3", r"must start with a conv or dense layer"),
    ("dense:4,conv:3:3", r"conv layers must come before dense ones"),
    ("conv:4:9", r"a 9x9 kernel does not fit a 8x8 input"),
])
def test_layer_specifications_are_checked(layers, message):
    data = load_dataset("digits")
    with pytest.raises(t.ConfigError, match=message):
        t.build_model(t.Config(layers=layers).resolved(), data)


def test_self_check_in_chunks_adds_up_to_the_whole():
    """Frames checked a chunk at a time give the report of all of them at once, a broken
    layer's mismatches included."""
    model, x = _random_model(1, 8, "none")
    net = export.export(model, input_shape=(20,))
    y = np.arange(len(x)) % 3
    assert export.self_check(model, net, x, y, chunk=7) == export.self_check(model, net, x, y)
    layer = net.layers[1]
    thresholds = np.where(layer.thresholds > 0, layer.thresholds - 1, layer.thresholds + 1)
    broken = artifact.network(input_shape=(20,), input_bits=8, layers=[
        net.layers[0], artifact.DenseLayer(weights=layer.weights, thresholds=thresholds),
        *net.layers[2:]])
    messages = []
    for chunk in (7, len(x)):
        with pytest.raises(export.SelfCheckError) as error:
            export.self_check(model, broken, x, y, chunk=chunk)
        messages.append(str(error.value))
    assert messages[0] == messages[1] and "layer 1: " in messages[0]


def test_self_check_rejects_a_wrong_threshold():
    model, x = _random_model(0, 8, "none")
    net = export.export(model, input_shape=(20,))
    layer = net.layers[1]
    thresholds = layer.thresholds.copy()
    thresholds[:] = np.where(thresholds > 0, thresholds - 1, thresholds + 1)
    broken = artifact.network(input_shape=(20,), input_bits=8,
                              layers=[net.layers[0],
                                      artifact.DenseLayer(weights=layer.weights,
                                                          thresholds=thresholds),
                                      *net.layers[2:]])
    with pytest.raises(export.SelfCheckError,
                       match=r"^torch and the golden model disagree: layer 1: \d+ activations "
                             r"differ away from a floating-point tie"):
        export.self_check(model, broken, x, np.zeros(len(x), np.int64))


# --- training runs --------------------------------------------------------------------------

def _config(tmp_path, **overrides):
    options = dict(hidden=(32,), epochs=3, threads=1, progress=False,
                   output=str(tmp_path / "net.npz"))
    options.update(overrides)
    return t.Config(**options)


def test_short_digits_run_writes_a_checked_file_with_provenance(tmp_path):
    path = t.main_train(_config(tmp_path))
    net = artifact.load(path)
    p = net.provenance
    digits = load_dataset("digits")
    x, y = digits.test_x, digits.test_y
    accuracy = float((golden.run(net, x).classes == y).mean())
    assert p["golden_test_accuracy"] == accuracy > 0.8
    assert p["self_check"]["frames"] == 359 and p["dataset"]["name"] == "digits"
    assert p["training"]["hidden"] == [32] and len(p["history"]) == 3
    assert p["bnnhw_version"] and net.labels == tuple("0123456789")
    assert not (tmp_path / "net.npz.ckpt").exists()              # default checkpoint removed
    digest = hashlib.sha256()                   # the arrays as loaded, as fingerprint() says
    for array in (digits.train_x, digits.train_y, digits.test_x, digits.test_y):
        digest.update(f"{array.dtype.str} {array.shape}\n".encode() + array.tobytes())
    assert p["dataset"] == {"name": "digits", "sha256": digest.hexdigest(),
                            "train_frames": 1438, "test_frames": 359, "in_bits": 5}


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


def _write_idx_dir(path, seed=0, train=40, test=16):
    """Write a tiny MNIST-style dataset of 4x4 images into the directory `path`."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    for name in IDX_FILES:
        count = train if name.startswith("train") else test
        array = (rng.integers(0, 256, (count, 4, 4)) if "images" in name
                 else rng.integers(0, 10, count)).astype(np.uint8)
        header = struct.pack(">HBB", 0, 0x08, array.ndim)
        (path / name).write_bytes(header + struct.pack(f">{array.ndim}I", *array.shape)
                                  + array.tobytes())
    return path


def _idx_config(tmp_path, dataset, **overrides):
    return _config(tmp_path, dataset=str(dataset), hidden=(8,), epochs=1, batch_size=8,
                   **overrides)


def test_provenance_names_the_dataset_without_its_path(tmp_path):
    folder = _write_idx_dir(tmp_path / "private-place" / "tiny")
    net = artifact.load(t.main_train(_idx_config(tmp_path, folder)))
    p = net.provenance
    files = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
             for name in IDX_FILES}
    listing = "".join(f"{files[name]}  {name}\n" for name in sorted(files))   # sha256sum's
    assert p["dataset"] == {"name": "tiny", "sha256_files": files,
                            "sha256": hashlib.sha256(listing.encode()).hexdigest(),
                            "train_frames": 40, "test_frames": 16, "in_bits": 8}
    assert p["training"]["dataset"] == "tiny"
    text = json.dumps(p)
    for part in (folder.parent, *folder.parent.parts[1:]):    # no part of the machine's path
        assert str(part) not in text, part


def test_resume_compares_the_dataset_digests(tmp_path):
    first = _write_idx_dir(tmp_path / "a" / "tiny")
    config = _idx_config(tmp_path, first, checkpoint_dir=str(tmp_path / "c"))
    t.train(config)
    second = tmp_path / "b" / "tiny"            # the same files elsewhere: the same dataset
    shutil.copytree(first, second)
    t.train(t.Config(**{**vars(config), "dataset": str(second), "resume": True}))
    changed = tmp_path / "d" / "tiny"           # the same name, other contents: refused
    _write_idx_dir(changed, seed=1)
    wanted = fingerprint(load_dataset(changed))["sha256"]
    saved = fingerprint(load_dataset(first))["sha256"]
    with pytest.raises(t.ConfigError, match=rf"^{re.escape(str(tmp_path))}/c/checkpoint\.pt: "
                                            rf"checkpoint has "
                                            rf"dataset sha256='{saved}', this run "
                                            rf"sha256='{wanted}'; rerun without --resume to "
                                            rf"start over$"):
        t.train(t.Config(**{**vars(config), "dataset": str(changed), "resume": True}))


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    whole, _ = t.train(_config(tmp_path, epochs=4, checkpoint_dir=str(tmp_path / "a"),
                               dropout=0.2))

    def interrupt(text):
        if text.startswith("epoch 2/"):
            raise KeyboardInterrupt
    config = _config(tmp_path, epochs=4, checkpoint_dir=str(tmp_path / "b"), dropout=0.2)
    with pytest.raises(KeyboardInterrupt):
        t.train(config, log=interrupt)
    resumed, history = t.train(t.Config(**{**vars(config), "resume": True}))
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert [r.get("resumed", False) for r in history] == [True, True, False, False]
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_two_step_training_binarizes_after_the_real_epochs(tmp_path):
    model, history = t.train(_config(tmp_path, real_epochs=2, epochs=1))
    assert [r["binary"] for r in history] == [False, False, True]
    assert model.binary


def test_config_errors_are_one_line():
    with pytest.raises(t.ConfigError, match=r"^epochs must be a positive integer, not 0$"):
        t.Config(epochs=0).resolved()
    with pytest.raises(t.ConfigError, match=r"^model 'xfc' is not one of digits, tfc, sfc, "
                                            r"lfc, digits_cnn, mnist_cnn, cnv$"):
        t.Config(model="xfc").resolved()
    with pytest.raises(t.ConfigError, match=r"^schedule 'linear' is not one of cosine, step, "
                                            r"constant$"):
        t.Config(schedule="linear").resolved()
    assert t.Config().resolved().hidden == (128, 128)
    assert t.Config(dataset="/data/mnist").resolved().model == "sfc"


def test_resume_checks_the_checkpoint(tmp_path):
    config = _config(tmp_path, epochs=1, checkpoint_dir=str(tmp_path / "c"), resume=True)
    with pytest.raises(t.ConfigError, match=r"^resume: no checkpoint at .*checkpoint\.pt$"):
        t.train(config)
    t.train(t.Config(**{**vars(config), "resume": False}))
    with pytest.raises(t.ConfigError, match=r"checkpoint has epochs=1, this run epochs=2; "):
        t.train(t.Config(**{**vars(config), "epochs": 2}))


def test_cli_entry_points(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="bnnhw train")
    t.add_arguments(parser)
    args = parser.parse_args(["-o", str(tmp_path / "d.npz"), "--epochs", "2", "--hidden", "16",
                              "--threads", "1", "--no-progress"])
    assert t.run_from_args(args) == 0
    out = capsys.readouterr()
    assert "golden" in out.out and "epoch 2/2" in out.err
    args = parser.parse_args(["-o", str(tmp_path / "missing" / "d.npz"), "--no-progress"])
    assert t.run_from_args(args) == 1
    assert capsys.readouterr().err == (f"bnnhw: error: output {tmp_path}/missing/d.npz: no "
                                       f"such directory {tmp_path}/missing\n")


@pytest.mark.slow
def test_default_digits_run_reaches_95_percent(tmp_path):
    path = t.main_train(t.Config(threads=2, progress=False, output=str(tmp_path / "d.npz")))
    assert artifact.load(path).provenance["golden_test_accuracy"] >= 0.95


def test_shift_moves_images_and_fills_with_zeros():
    images = torch.arange(1, 2 * 4 * 5 * 2 + 1, dtype=torch.float32).reshape(2, 4 * 5 * 2)
    moved = t._shifted(images, (2, 4, 5), 2, torch.Generator().manual_seed(3))
    for before, after in zip(images.reshape(2, 4, 5, 2), moved.reshape(2, 4, 5, 2)):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(after, _moved(before, dy, dx))]
        assert found, "not a shift of the image"
    assert torch.equal(t._shifted(images, (2, 4, 5), 0, torch.Generator()), images)


def _moved(image, dy, dx):
    h, w = image.shape[:2]
    out = torch.zeros_like(image)
    for y in range(h):
        for x in range(w):
            if 0 <= y - dy < h and 0 <= x - dx < w:
                out[y, x] = image[y - dy, x - dx]
    return out
