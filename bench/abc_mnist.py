# amaranth: UnusedElaboratable=no
"""Benchmark: ABC-Net multi-base SFC-shaped MLPs (784-256-256-256-10) on MNIST, per (M, N).

Trains (unless its network file exists) one network per ``MxN`` of ``--bases`` (M weight
bases, N activation bases; ``1x1`` is the single-base SFC through the ordinary kinds), then
prints a table: golden and torch test accuracy (from the self-check over the whole test set),
classes agreeing, the folding's cycles per frame (the analytic model, which the Verilator runs
match), and with ``--synth`` the ECP5-85F LUTs and block RAMs from Yosys (no place and route),
else the fit estimate. The networks go to ``runs/abc/mnist_abc_MxN.npz`` (checkpoints beside
them, so ``--resume`` continues an interrupted run).

    flock /work/heavy.lock .venv/bin/python bench/abc_mnist.py [--bases 1x1,1x2,2x2,3x3]
        [--epochs 30] [--shift 1] [--threads 1] [--synth [--pnr]] [--pe ..] [--simd ..]
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def _bases(text):
    pairs = []
    for token in text.split(","):
        m, _, n = token.partition("x")
        pairs.append((int(m), int(n)))
    return pairs


def train_one(m, n, args, path):
    from bnnhw.train import train as t
    config = t.Config(dataset=args.dataset, model="sfc", epochs=args.epochs,
                      weight_bases=m, act_bases=n, dropout=args.dropout, shift=args.shift,
                      threads=args.threads,
                      output=str(path), checkpoint_dir=str(path.with_suffix(".ckpt")),
                      resume=args.resume, progress=False, seed=args.seed)
    print(f"== {m}x{n}: {config.resolved().training_fields()}", flush=True)
    started = time.monotonic()
    t.main_train(config, log=lambda text: print(f"{m}x{n}: {text}", flush=True))
    print(f"{m}x{n}: total {time.monotonic() - started:.1f} s", flush=True)


def synthesise(net, folding, name, *, pnr=False):
    """ECP5-85F figures of the network alone (``bench/synth.py``'s wrapper, memories in block
    RAM): Yosys LUT4s (``luts`` counts each CCU2C carry cell as the two LUT4s it takes, as
    nextpnr and the fit estimate do) and DP16KD block RAMs, and with ``pnr`` from one nextpnr
    run the logic cells and Fmax."""
    import synth
    out = synth.BUILD / f"abc_{name}"
    out.mkdir(parents=True, exist_ok=True)
    figures = synth.build("ecp5", net, folding, None, "block", out, seeds=[1] if pnr else [])
    row = {"luts": figures["yosys LUT4 + carry"], "lut4": figures["yosys LUT4"],
           "ccu2c": figures["yosys CCU2C"], "brams": figures["yosys block RAM"],
           "seconds": figures.get("total s", figures["synth s"])}
    if pnr:
        row.update(cells=figures["TRELLIS_COMB"], fmax=figures["median Fmax MHz"])
    return row


def plot(rows, path):
    """Golden test accuracy against LUT4s, a point per (M, N)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    figure, axes = plt.subplots(figsize=(5, 3.5), dpi=120)
    synthesised = all(row.get("synth") for row in rows)
    for row in rows:
        luts = row["synth"]["luts"] if synthesised else row["estimate"]["luts"]
        axes.plot(luts, 100 * row["golden"], "o", color="tab:blue")
        m, n = row["bases"].split("x")
        axes.annotate(f"M={m}, N={n}", (luts, 100 * row["golden"]),
                      textcoords="offset points", xytext=(5, -10))
    axes.set_xlabel("ECP5 LUT4 (" + ("Yosys, carry cells as two" if synthesised
                                     else "fit estimate") + ")")
    axes.set_ylabel("MNIST test accuracy (%)")
    axes.set_title(f"SFC 784-256-256-256-10, M weight and N activation bases,\n"
                   f"{rows[0]['cycles']:,} cycles/frame", fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    temporary = path.with_name(path.stem + ".tmp" + path.suffix)
    figure.savefig(temporary)
    temporary.replace(path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="abc_mnist", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", metavar="DIR", default="/work/shared/datasets/mnist")
    parser.add_argument("--bases", type=_bases, default=_bases("1x1,1x2,2x2,3x3"),
                        help="MxN pairs (default: 1x1,1x2,2x2,3x3)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--shift", type=int, default=1,
                        help="augment: move training images by up to this many pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "abc")
    parser.add_argument("--no-train", action="store_true", help="only tabulate existing files")
    parser.add_argument("--synth", action="store_true", help="ECP5 synthesis with Yosys")
    parser.add_argument("--pnr", action="store_true",
                        help="with --synth: also place and route once (nextpnr-ecp5; the "
                             "3x3 network takes over half an hour)")
    parser.add_argument("--pe", default="4,4,4,1", help="folding, one PE per layer")
    parser.add_argument("--simd", default="49,64,64,64", help="folding, one SIMD per layer")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--plot", type=Path,
                        help="draw accuracy against ECP5 LUT4s (synthesis, else the estimate) "
                             "into this PNG")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    from bnnhw import artifact
    from bnnhw.boards.board import get_board
    from bnnhw.boards.build import estimate
    from bnnhw.folding import parse_folding
    from bnnhw.perf import performance

    rows = []
    for m, n in args.bases:
        path = args.out_dir / f"mnist_abc_{m}x{n}.npz"
        if not path.is_file():
            if args.no_train:
                print(f"{path}: missing, skipped", flush=True)
                continue
            train_one(m, n, args, path)
        net = artifact.load(path)
        p = net.provenance
        folding = parse_folding(net, [int(v) for v in args.pe.split(",")],
                                [int(v) for v in args.simd.split(",")])
        model = performance(net, folding)
        fit = estimate(net, folding, get_board("ulx3s"))
        row = {"bases": f"{m}x{n}", "golden": p["golden_test_accuracy"],
               "torch": p["torch_test_accuracy"],
               "agree": p["self_check"]["class_agreement"], "frames": p["self_check"]["frames"],
               "epochs": len(p["history"]),
               "s_per_epoch": sum(r["seconds"] for r in p["history"]) / len(p["history"]),
               "weight_bits": net.weight_bits(), "cycles": model.initiation_interval,
               "folding": [str(f) for f in folding],
               "estimate": {"luts": fit.logic, "brams": fit.block_rams}}
        if args.synth:
            row["synth"] = synthesise(net, folding, f"{m}x{n}", pnr=args.pnr)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"{'M x N':6} {'golden':>8} {'torch':>8} {'agree':>13} {'weight bits':>12} "
          f"{'cycles/frame':>12} {'est. LUT4':>10} {'est. BRAM':>9} {'LUT4':>7} {'cells':>7} "
          f"{'BRAM':>5} {'Fmax':>6}")
    for row in rows:
        synth = row.get("synth") or {}
        print(f"{row['bases']:6} {100 * row['golden']:>7.2f}% {100 * row['torch']:>7.2f}% "
              f"{row['agree']:>6}/{row['frames']:<6} {row['weight_bits']:>12,} "
              f"{row['cycles']:>12,} {row['estimate']['luts']:>10,} "
              f"{row['estimate']['brams']:>9} {synth.get('luts', '-'):>7} "
              f"{synth.get('cells', '-'):>7} {synth.get('brams', '-'):>5} "
              f"{synth.get('fmax', '-'):>6}")
    if args.plot and rows:
        plot(rows, args.plot)
    if args.json:
        temporary = args.json.with_name(args.json.name + ".tmp")
        temporary.write_text(json.dumps(rows, indent=1))
        temporary.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
