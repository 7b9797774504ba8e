"""Brevitas W1A1 models through `bnnhw import`, checked against the QONNX executor and Verilator.

Trains TFC- and SFC-shaped MLPs (784-64-64-64-10, 784-256-256-256-10, as FINN's bnn-pynq TFC
and SFC: pixels binarized by sign(2x - 1), binary weights and activations, BatchNorm, a scalar
norm on the class scores) and a small binarized CNN with Brevitas for a few epochs on MNIST,
exports each with Brevitas's QONNX export, imports it with `bnnhw import` (the QONNX executor
against the golden model on all 10,000 test images: class and per-layer bit agreement), then
runs `bnnhw sim` on the imported network (Verilator against the golden model).

Run: ``python bench/qonnx_import.py [--models tfc,sfc,cnv] [--epochs N] [--out DIR]
[--sim-count N]``. Needs the brevitas extra; skips (exit 0, with a message) if
``../shared/datasets/mnist`` is absent; exits 1 on a disagreement or a mismatch.
"""

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "datasets" / "mnist"


def build(name):
    """A Brevitas model of shape ``name``: ``tfc``, ``sfc`` or ``cnv``."""
    import torch
    import brevitas.nn as qnn
    from brevitas.quant import SignedBinaryActPerTensorConst as Act
    from brevitas.quant import SignedBinaryWeightPerTensorConst

    class Weight(SignedBinaryWeightPerTensorConst):
        """Weights +-1, as bnn-pynq's CommonWeightQuant (Brevitas's default is +-0.1, whose
        float32 sums round differently from class to class)."""
        scaling_const = 1.0

    class Norm(torch.nn.Module):
        """A scalar affine norm on the class scores (Brevitas bnn-pynq's TensorNorm)."""

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(1))
            self.bias = torch.nn.Parameter(torch.zeros(1))
            self.register_buffer("mean", torch.zeros(1))
            self.register_buffer("var", torch.ones(1))

        def forward(self, x):
            if self.training:
                mean, var = x.mean().detach(), x.var().detach()
                with torch.no_grad():
                    self.mean.mul_(0.9).add_(0.1 * mean)
                    self.var.mul_(0.9).add_(0.1 * var)
                return (x - x.mean()) / torch.sqrt(x.var() + 1e-4) * self.weight + self.bias
            return (x - self.mean) / torch.sqrt(self.var + 1e-4) * self.weight + self.bias

    class MLP(torch.nn.Module):
        def __init__(self, hidden):
            super().__init__()
            layers, width = [qnn.QuantIdentity(act_quant=Act)], 784
            for size in hidden:
                layers += [qnn.QuantLinear(width, size, bias=False, weight_quant=Weight),
                           torch.nn.BatchNorm1d(size), qnn.QuantIdentity(act_quant=Act)]
                width = size
            layers += [qnn.QuantLinear(width, 10, bias=False, weight_quant=Weight), Norm()]
            self.features = torch.nn.Sequential(*layers)

        def forward(self, x):
            x = x.view(x.shape[0], -1)
            return self.features(2.0 * x - torch.tensor([1.0], device=x.device))

    class CNV(torch.nn.Module):
        def __init__(self):
            super().__init__()
            conv = lambda c, o: qnn.QuantConv2d(c, o, 3, bias=False, weight_quant=Weight)
            self.features = torch.nn.Sequential(
                qnn.QuantIdentity(act_quant=Act),
                conv(1, 16), torch.nn.BatchNorm2d(16), qnn.QuantIdentity(act_quant=Act),
                torch.nn.MaxPool2d(2),                                        # 26 -> 13
                conv(16, 32), torch.nn.BatchNorm2d(32), qnn.QuantIdentity(act_quant=Act),
                torch.nn.MaxPool2d(2))                                        # 11 -> 5
            self.classifier = torch.nn.Sequential(
                qnn.QuantLinear(32 * 5 * 5, 10, bias=False, weight_quant=Weight), Norm())

        def forward(self, x):
            x = self.features(2.0 * x - torch.tensor([1.0], device=x.device))
            return self.classifier(x.reshape(x.shape[0], -1))

    return {"tfc": lambda: MLP([64, 64, 64]), "sfc": lambda: MLP([256, 256, 256]),
            "cnv": CNV}[name]()


def train(model, data, epochs, seed):
    import torch
    torch.manual_seed(seed)
    x = torch.tensor(data.train_x, dtype=torch.float32).div_(255).reshape(-1, 1, 28, 28)
    y = torch.tensor(data.train_y, dtype=torch.int64)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    steps = epochs * (len(x) // 100)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x) - 99, 100):
            batch = order[start:start + 100]
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"  epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}", flush=True)
    model.eval()
    with torch.no_grad():
        tx = torch.tensor(data.test_x, dtype=torch.float32).div_(255).reshape(-1, 1, 28, 28)
        predicted = torch.cat([model(tx[s:s + 1000]).argmax(1) for s in range(0, len(tx), 1000)])
    predicted = predicted.numpy()
    return float((predicted == data.test_y).mean()), predicted


def export(model, path):
    import torch
    from brevitas.export import export_qonnx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, torch.rand(1, 1, 28, 28), export_path=str(path))


def bnnhw(*args):
    """Run the ``bnnhw`` command with ``--json``; return its document."""
    command = [sys.executable, "-m", "bnnhw.cli", *map(str, args), "--json"]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{run.stderr}")
    return json.loads(run.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tfc,sfc,cnv", help="(default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "qonnx",
                        help="(default: %(default)s)")
    parser.add_argument("--sim-count", type=int, default=None,
                        help="frames for bnnhw sim (default: all 10,000)")
    args = parser.parse_args(argv)
    if not MNIST.is_dir():
        print(f"skipped: {MNIST} is absent")
        return 0
    import torch
    torch.set_num_threads(1)
    from bnnhw import artifact, datasets, golden
    data = datasets.load_idx_dir(MNIST)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    for name in args.models.split(","):
        print(f"{name}:", flush=True)
        start = time.perf_counter()
        model = build(name)
        accuracy, torch_classes = train(model, data, args.epochs, args.seed)
        trained = time.perf_counter() - start
        onnx_path, net_path = args.out / f"{name}.onnx", args.out / f"{name}.npz"
        export(model, onnx_path)
        start = time.perf_counter()
        imported = bnnhw("import", onnx_path, "-o", net_path, "--dataset", MNIST)
        import_seconds = time.perf_counter() - start
        golden_classes = golden.run(artifact.load(net_path), data.test_x).classes
        torch_agree = int((golden_classes == torch_classes).sum())
        sim_args = ["sim", net_path, "--dataset", MNIST]
        if args.sim_count:
            sim_args += ["--count", args.sim_count]
        start = time.perf_counter()
        sim = bnnhw(*sim_args)
        sim_seconds = time.perf_counter() - start
        layers = ", ".join(f"{row['kind']} {row['agreeing']:,}/{row['bits']:,}"
                           for row in imported["layer_bits"])
        print(f"  torch {100 * accuracy:.2f}% after {args.epochs} epochs ({trained:.0f} s); "
              f"import: classes agree on {imported['agreeing']:,} of {imported['frames']:,} "
              f"({import_seconds:.0f} s), layer bits {layers}; float ties "
              f"{imported['float_ties']}")
        print(f"  kinds: {' -> '.join(layer['kind'] for layer in imported['layers'])}; Brevitas "
              f"(torch) vs golden: {torch_agree:,} of {len(torch_classes):,} classes agree")
        print(f"  bnnhw sim: {sim['mismatches']} mismatches in {sim['frames']:,} frames, "
              f"hardware {100 * sim['hardware_accuracy']:.2f}% / golden "
              f"{100 * sim['golden_accuracy']:.2f}%, {sim['cycles_per_frame']['measured']} "
              f"cycles/frame ({sim_seconds:.0f} s)", flush=True)
        for entry in imported["differences"]:
            print(f"  difference: {entry}")
        failed |= (imported["agreeing"] != imported["frames"] or sim["mismatches"] != 0
                   or sim["frames"] != (args.sim_count or len(data.test_y)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
