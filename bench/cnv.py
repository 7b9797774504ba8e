"""FINN's CNV topology (3 x 32 x 32 inputs) in gateware: its figures, and frames through
Verilator against the golden model.

CNV: conv 64, conv 64, pool, conv 128, conv 128, pool, conv 256, conv 256 (3x3, valid),
dense 512, dense 512, 10 classes. Without CIFAR-10 on the machine, the network has random
weights and thresholds (seeded) and the frames are random 8-bit images; with ``--network`` it
takes a trained file. Prints the performance model, Verilog generation time, then simulates
``--count`` frames on the fast path under ``--stall`` and compares every result with golden.
Target (issue 10): 0 mismatches; cycles/frame measured = model.

Run: ``python bench/cnv.py [--count 300] [--stall 0.3] [--pe ... --simd ...]``. Exits 1 on any
mismatch.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CNV = [("conv2d", 3, 3, 64), ("conv2d", 3, 3, 64), ("pool", 2), ("conv2d", 3, 3, 128),
       ("conv2d", 3, 3, 128), ("pool", 2), ("conv2d", 3, 3, 256), ("conv2d", 3, 3, 256),
       ("fc", 512), ("fc", 512)]
# A folding that keeps the design Verilator-sized: every layer within about 65,000 cycles.
PE = [8, 8, None, 8, 8, None, 8, 8, 8, 8, 1]
SIMD = [3, 64, 64, 64, 64, 128, 64, 64, 64, 64, 64]


def _ints(text):
    return [None if part == "-" else int(part) for part in text.split(",")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", metavar="FILE", type=Path,
                        help="a trained CNV network file (default: random weights)")
    parser.add_argument("--count", metavar="N", type=int, default=300)
    parser.add_argument("--stall", metavar="P", type=float, default=0.3)
    parser.add_argument("--pe", metavar="N,...", type=_ints, default=PE)
    parser.add_argument("--simd", metavar="N,...", type=_ints, default=SIMD)
    parser.add_argument("--build-dir", metavar="DIR", type=Path,
                        help="Verilator build cache (default: ~/.cache/bnnhw/verilator)")
    args = parser.parse_args(argv)

    from bnnhw import artifact, golden, testing
    from bnnhw.folding import format_folding, parse_folding
    from bnnhw.gateware.top import generate_verilog
    from bnnhw.sim.bench import report_rows, simulate

    rng = np.random.default_rng(2026)
    if args.network is not None:
        net = artifact.load(args.network)
    else:
        net = testing.random_cnn(rng, (3, 32, 32), CNV, 10, input_bits=8)
    folding = parse_folding(net, pe=args.pe, simd=args.simd)
    x = testing.random_inputs(rng, net, args.count)
    started = time.perf_counter()
    expected = golden.run(net, x)
    golden_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="bnnhw-cnv-") as folder:
        path = Path(folder) / "bnn_top.v"
        started = time.perf_counter()
        top = generate_verilog(net, folding, path)
        verilog_seconds = time.perf_counter() - started
        model = top.performance
        print(f"cnv: {net.weight_bits():,} weight bits, folding {format_folding(folding)}")
        print(model.table())
        print(f"cnv: Verilog {path.stat().st_size / 1e6:.1f} MB in {verilog_seconds:.1f} s; "
              f"golden {len(x) / golden_seconds:,.0f} frames/s", flush=True)
        report = simulate(path, top.ports, x, expected.classes, expected.scores,
                          model=(model.initiation_interval, model.latency), engine="fast",
                          stall=args.stall, cache_dir=args.build_dir,
                          log=lambda message: print(f"cnv: {message}", flush=True))
    print()
    for name, value in report_rows(report):
        print(f"{name:<26}{value}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
