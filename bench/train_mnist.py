"""Benchmark: train FINN's SFC and TFC MLPs on the real MNIST and report what they reach.

Writes ``examples/mnist_<model>.npz`` (with provenance) and prints, per model, the golden
model's test accuracy, torch's, the class agreement between them on the whole test set, hidden
bit mismatches and ties, and the training time per epoch (including the per-epoch test-set
evaluation). Checkpoints go to ``runs/`` so that ``--resume`` continues an interrupted run.

    .venv/bin/python bench/train_mnist.py [--models sfc,tfc] [--epochs N] [--threads 2]
"""

import argparse
import sys
import time
from pathlib import Path

from bnnhw import artifact
from bnnhw.train import train as t

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None):
    parser = argparse.ArgumentParser(prog="train_mnist", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", metavar="DIR", default="/work/shared/datasets/mnist",
                        help="directory of the MNIST IDX files (default: %(default)s)")
    parser.add_argument("--models", metavar="NAMES", default="sfc,tfc",
                        help="comma-separated presets to train (default: %(default)s)")
    parser.add_argument("--epochs", metavar="N", type=int, default=None,
                        help="epochs per model (default: the preset's)")
    parser.add_argument("--threads", metavar="N", type=int, default=2,
                        help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--out-dir", metavar="DIR", type=Path, default=ROOT / "examples",
                        help="where the network files go (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue interrupted runs from their checkpoints in runs/")
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        config = t.Config(dataset=args.dataset, model=name, epochs=args.epochs,
                          threads=args.threads, output=str(args.out_dir / f"mnist_{name}.npz"),
                          checkpoint_dir=str(ROOT / "runs" / f"mnist_{name}.ckpt"),
                          resume=args.resume, progress=False)
        print(f"== {name}: {config.resolved().training_fields()}", flush=True)
        started = time.monotonic()
        path = t.main_train(config, log=lambda text: print(f"{name}: {text}", flush=True))
        net = artifact.load(path)
        print(t.summary(net, path), flush=True)
        print(f"total {time.monotonic() - started:.1f} s", flush=True)
        rows.append((name, net))
    print()
    print(f"{'model':6} {'epochs':>6} {'s/epoch':>8} {'golden':>8} {'torch':>8} "
          f"{'classes agree':>15} {'bit mismatches':>15} {'ties':>5}")
    for name, net in rows:
        p = net.provenance
        check = p["self_check"]
        seconds = [r["seconds"] for r in p["history"]]
        print(f"{name:6} {len(p['history']):>6} {sum(seconds) / len(seconds):>8.1f} "
              f"{100 * p['golden_test_accuracy']:>7.2f}% {100 * p['torch_test_accuracy']:>7.2f}% "
              f"{check['class_agreement']:>7}/{check['frames']:<7} "
              f"{sum(l['mismatches'] for l in check['layers']):>15} "
              f"{sum(l['local_ties'] for l in check['layers']):>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
