"""ABC-Net training (train/abc.py): torch eval mode == the golden model of the exported
``abc`` layers, exactly; ``bnnhw train --weight-bases M --act-bases N``."""

import numpy as np
import pytest

import bnnhw.train                 # noqa: F401  (before torch: it sets OMP_WAIT_POLICY)
from bnnhw import artifact, golden
from bnnhw.datasets import load_dataset

torch = pytest.importorskip("torch")

from bnnhw.train import export, train as t                       # noqa: E402
from bnnhw.train.abc import (ABCConv2d, ABCLinear, ABCNet, export_abc, fit_alpha,  # noqa: E402
                             spread_shifts)


def _random_model(seed, in_bits, weight_bases, act_bases, layers="dense:13,dense:7", classes=4,
                  fraction_bits=4, shape=(21, 1, 1)):
    """An ABCNet with random weights, BatchNorm statistics (some gamma negative or zero),
    activation shifts and betas, quantized, in eval mode; and inputs for it."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = ABCNet(shape, in_bits, layers, classes, weight_bases=weight_bases,
                   act_bases=act_bases, fraction_bits=fraction_bits,
                   mean=float(rng.uniform(0, 0.5)), std=float(rng.uniform(0.2, 2)))
    x = rng.integers(0, 1 << in_bits, size=(300, int(np.prod(shape))))
    for norm in model.norms:
        norm.momentum = 1.0
    model.quantized = True
    model.train()
    with torch.no_grad():
        for layer in [*model.linears, model.output]:
            layer.weight.uniform_(-1, 1)
            if layer.log_beta is not None:
                layer.log_beta.copy_(torch.as_tensor(rng.normal(size=layer.in_bases) * 0.7))
        model(torch.from_numpy(x).float())
        for norm, shifts in zip(model.norms, model.act_shifts):
            size = norm.num_features
            gamma = rng.normal(size=size)
            gamma[rng.random(size) < 0.15] = 0
            norm.weight.copy_(torch.as_tensor(gamma))
            norm.bias.copy_(torch.as_tensor(rng.normal(size=size) * 0.5))
            shifts.copy_(torch.as_tensor(np.sort(rng.normal(size=act_bases)) * 0.5))
        model.offset.copy_(torch.as_tensor(rng.normal(size=classes)))
    model.eval()
    return model, x


def _sum_of_products(layer, x, bases, c):
    """``Z`` as the paper writes it: M K products, each times its coefficient."""
    import torch.nn.functional as F
    x = x.unsqueeze(1) if layer.in_bits is not None else x
    product = F.conv2d if isinstance(layer, ABCConv2d) else F.linear
    return sum(c[m, k] * product(x[:, k], bases[m])
               for m in range(bases.shape[0]) for k in range(x.shape[1]))


@pytest.mark.parametrize("quantized", [False, True])
@pytest.mark.parametrize("weight_bases", [1, 3])
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_layer_products_equal_the_sum_of_base_products(kind, weight_bases, quantized):
    """Training computes a layer as one product (rank-one coefficients before rounding) or K
    stacked ones (after): the same values and gradients as the M K products."""
    torch.manual_seed(weight_bases)
    if kind == "dense":
        layer, x = ABCLinear(20, 7, weight_bases=weight_bases, in_bases=3,
                             fraction_bits=4), torch.randn(5, 3, 20).sign()
    else:
        layer, x = ABCConv2d(4, 7, 3, weight_bases=weight_bases, in_bases=3,
                             fraction_bits=4), torch.randn(5, 3, 4, 6, 6).sign()
    with torch.no_grad():
        layer.log_beta.copy_(torch.randn(3) * 0.3)
    layer.quantized = quantized
    x.requires_grad_(True)
    z = layer.integer(x)
    bases = layer.weight_bases()
    expected = _sum_of_products(layer, x, bases, layer.coefficients(bases))
    weights = torch.randn_like(z)
    parameters = [layer.weight, layer.log_beta, x]
    got = torch.autograd.grad((z * weights).sum(), parameters)
    want = torch.autograd.grad((expected * weights).sum(), parameters)
    z, expected = z.detach(), expected.detach()
    assert float((z - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
    if quantized:
        assert torch.equal(z, expected)          # integer coefficients: exact
    for a, b in zip(got, want):
        assert float((a - b).abs().max()) <= 1e-5 * float(b.abs().max())


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("in_bits,weight_bases,act_bases", [
    (8, 1, 2), (8, 2, 2), (5, 3, 3), (1, 4, 1), (8, 2, 4)])
def test_golden_equals_torch_eval_on_random_models(seed, in_bits, weight_bases, act_bases):
    model, x = _random_model(seed, in_bits, weight_bases, act_bases)
    net = export_abc(model, input_shape=(21,))
    assert [layer.kind for layer in net.layers] == ["abc", "abc", "abc_output"]
    assert net.layers[1].coefficients.shape == (weight_bases, act_bases)
    result = golden.run(net, x)
    with torch.no_grad():
        _, _, bits, scores = model.trace(torch.from_numpy(x).float())
    for n, b in enumerate(bits):
        assert np.array_equal(result.activations[n], b.numpy()), f"layer {n}"
        assert len(np.unique(b.numpy())) > 1, f"layer {n} is constant"
    assert np.array_equal(result.scores, scores.numpy().astype(np.int64))
    assert np.array_equal(result.classes, scores.argmax(dim=1).numpy())
    report = export.self_check(model, net, x, np.zeros(len(x), np.int64))
    assert report["class_agreement"] == len(x)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("in_bits,weight_bases,act_bases,layers", [
    (8, 2, 2, "conv:5:3,conv:6:2,pool:2,conv:7:2,dense:9"),
    (5, 3, 2, "conv:4:2,pool:2,dense:6"),
    (3, 1, 3, "conv:4:1,pool:3,conv:3:2"),               # output straight after a conv
])
def test_golden_equals_torch_eval_on_random_cnns(seed, in_bits, weight_bases, act_bases,
                                                 layers):
    model, x = _random_model(seed, in_bits, weight_bases, act_bases, layers=layers,
                             shape=(2, 9, 8))
    net = export_abc(model, input_shape=(2, 9, 8))
    assert {layer.kind for layer in net.layers} >= {"abc_conv", "maxpool", "abc_output"}
    result = golden.run(net, x)
    with torch.no_grad():
        _, _, bits, scores = model.trace(torch.from_numpy(x).float())
    for n, b in enumerate(bits):
        assert np.array_equal(result.activations[n], b.numpy()), f"layer {n}"
        # (A pool of mostly-1 bits may well be all 1.)
        assert model.norm_of(n) is None or len(np.unique(b.numpy())) > 1, f"layer {n}"
    assert np.array_equal(result.scores, scores.numpy().astype(np.int64))
    # The forward pass pools before binarizing (the same bits, N times cheaper).
    with torch.no_grad():
        fused = model.scores(model._run(torch.from_numpy(x).float()))
    assert np.array_equal(result.scores, fused.numpy().astype(np.int64))
    report = export.self_check(model, net, x, np.zeros(len(x), np.int64))
    assert report["class_agreement"] == len(x)


def test_negative_gamma_rows_are_stored_inverted():
    model, x = _random_model(5, 8, 2, 3)
    net = export_abc(model, input_shape=(21,))
    gamma = model.norms[1].weight.detach().numpy()
    with torch.no_grad():
        bases = model.linears[1].weight_bases().numpy() > 0
    stored = net.layers[1].weights.astype(bool)
    assert (gamma < 0).any()
    assert np.array_equal(stored[:, gamma < 0], ~bases[:, gamma < 0])
    assert np.array_equal(stored[:, gamma > 0], bases[:, gamma > 0])


def test_weight_bases_are_abc_nets():
    assert spread_shifts(1) == [0.0] and spread_shifts(3) == [-1.0, 0.0, 1.0]
    torch.manual_seed(0)
    w = torch.randn(40, 30)
    bases = torch.stack([torch.where(w - w.mean() + u * w.std() >= 0, 1.0, -1.0)
                         for u in spread_shifts(3)])
    alpha = fit_alpha(w, bases)
    fitted = (alpha.view(-1, 1, 1) * bases).sum(dim=0)
    # More bases approximate the weights better; alpha minimises the error.
    one = fit_alpha(w, bases[1:2])
    assert (w - fitted).norm() < (w - one * bases[1]).norm()
    for delta in (0.01, -0.01):
        nudged = ((alpha + delta).view(-1, 1, 1) * bases).sum(dim=0)
        assert (w - fitted).norm() < (w - nudged).norm()


def test_export_needs_quantized_coefficients():
    model, _ = _random_model(0, 8, 2, 2)
    model.quantized = False
    with pytest.raises(ValueError, match=r"^the model's coefficients are not quantized"):
        export_abc(model, input_shape=(21,))


def test_short_digits_run_matches_golden_exactly(tmp_path):
    config = t.Config(hidden=(32, 16), epochs=4, threads=1, progress=False, weight_bases=2,
                      act_bases=3, output=str(tmp_path / "abc.npz"))
    path = t.main_train(config)
    net = artifact.load(path)
    p = net.provenance
    assert [layer.kind for layer in net.layers] == ["abc", "abc", "abc_output"]
    assert net.tensors[1].bits == 3 and net.layers[0].bases == 2
    assert p["training"]["weight_bases"] == 2 and p["training"]["quantize_epochs"] == 1
    digits = load_dataset("digits")
    accuracy = float((golden.run(net, digits.test_x).classes == digits.test_y).mean())
    assert p["golden_test_accuracy"] == p["torch_test_accuracy"] == accuracy > 0.85
    assert p["self_check"]["class_agreement"] == 359
    assert all(layer["mismatches"] == 0 for layer in p["self_check"]["layers"])


@pytest.mark.parametrize("overrides,message", [
    ({"weight_bases": 0}, r"weight_bases must be an integer in 1\.\.16, not 0"),
    ({"act_bases": 9}, r"act_bases must be an integer in 1\.\.8, not 9"),
    ({"act_bases": 2, "real_epochs": 2}, r"real_epochs must be 0 with multi-base layers, not 2"),
    ({"weight_bases": 2, "quantize_epochs": 5},
     r"quantize_epochs must be an integer in 1\.\.3 \(the epochs\), not 5"),
])
def test_config_errors_are_one_line(tmp_path, overrides, message):
    options = dict(hidden=(8,), epochs=3, threads=1, progress=False,
                   output=str(tmp_path / "x.npz"))
    options.update(overrides)
    with pytest.raises(t.ConfigError, match=f"^{message}$"):
        t.Config(**options).resolved()


def test_cli_takes_the_base_options(tmp_path, capsys):
    from bnnhw import cli
    out = tmp_path / "abc.npz"
    assert cli.main(["train", "-o", str(out), "--hidden", "16", "--epochs", "2",
                     "--weight-bases", "3", "--act-bases", "2", "--threads", "1",
                     "--no-progress"]) == 0
    net = artifact.load(out)
    assert net.layers[0].bases == 3 and net.tensors[1].bits == 2
    assert "accuracy     golden" in capsys.readouterr().out


def test_short_digits_cnn_run_matches_golden_exactly(tmp_path):
    config = t.Config(layers="conv:8:3,pool:2,dense:16", epochs=2, threads=1, progress=False,
                      weight_bases=2, act_bases=2, output=str(tmp_path / "cnn.npz"))
    net = artifact.load(t.main_train(config))
    assert [layer.kind for layer in net.layers] == ["abc_conv", "maxpool", "abc", "abc_output"]
    p = net.provenance
    assert p["golden_test_accuracy"] == p["torch_test_accuracy"] > 0.7
    assert p["self_check"]["class_agreement"] == 359
