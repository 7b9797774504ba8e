"""A training preset in one process and data-parallel in N under torchrun (gloo on CPU): the
accuracy of each exported network, its self-check (torch eval vs golden), and the wall times.

Run: ``python bench/train_parallel.py [--model digits] [--dataset digits] [--processes 2]
[--epochs N] [--seed 0]`` (MNIST: ``--model tfc --dataset ../shared/datasets/mnist``). One
thread per process; the files go to ``build/bench-train-parallel/``.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bnnhw import artifact

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench-train-parallel"


def train(command, output):
    started = time.monotonic()
    run = subprocess.run(command, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    seconds = time.monotonic() - started
    if run.returncode:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{run.stderr[-3000:]}")
    p = artifact.load(output).provenance
    check = p["self_check"]
    return {"golden": p["golden_test_accuracy"], "torch": p["torch_test_accuracy"],
            "agree": f"{check['class_agreement']} / {check['frames']}", "seconds": seconds,
            "train_seconds": p["train_seconds"], "device": p["device"],
            "processes": p["processes"], "device_line": next(
                (line for line in run.stderr.splitlines() if line.startswith("train: ")), "")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--epochs", type=int, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    options = ["--model", args.model, "--dataset", str(args.dataset), "--threads", "1",
               "--seed", str(args.seed), "--no-progress"]
    if args.epochs:
        options += ["--epochs", str(args.epochs)]
    one_path = OUT / f"{args.model}-1.npz"
    many_path = OUT / f"{args.model}-{args.processes}.npz"
    one = train([sys.executable, "-m", "bnnhw.train", "-o", one_path, *options], one_path)
    many = train([sys.executable, "-m", "torch.distributed.run", "--standalone",
                  f"--nproc_per_node={args.processes}", "-m", "bnnhw.train", "-o", many_path,
                  *options], many_path)
    for name, r in (("1 process", one), (f"{args.processes} processes (torchrun)", many)):
        print(f"{args.model:8} {name:24} golden {100 * r['golden']:.2f}%  torch "
              f"{100 * r['torch']:.2f}%  classes agree {r['agree']}  training "
              f"{r['train_seconds']:.0f} s (wall {r['seconds']:.0f} s)  [{r['device_line']}]")
    print(f"difference {100 * (many['golden'] - one['golden']):+.2f} points")


if __name__ == "__main__":
    main()
