"""Re-flash: how long `bnnhw build --reuse` takes to write a retrained network into a build.

    python bench/reflash.py BOARD NETWORK RETRAINED [--build-dir DIR] [--clock MHZ] [--runs N]

Builds NETWORK patchable once (skipped when DIR already holds a patchable build of it), then
patches RETRAINED and NETWORK in turn ``--runs`` times, each time checking the bitstream's
memories read back as written (inside the patch), and prints each time, the median, and
whether patching the original back gives the very bytes of the first bitstream (and of the
weight image, for a build with weights in SPRAM).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

from bnnhw import artifact
from bnnhw.boards.board import get_board
from bnnhw.boards.build import build, fitting_design, reuse


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("board")
    parser.add_argument("network", type=Path)
    parser.add_argument("retrained", type=Path)
    parser.add_argument("--build-dir", type=Path, default=Path("build/reflash"))
    parser.add_argument("--clock", type=float, default=None)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    board = get_board(args.board)
    net, new = artifact.load(args.network), artifact.load(args.retrained)
    quiet = lambda text: None                                    # noqa: E731
    if not (args.build_dir / "patch.json").is_file():
        folding, _ = fitting_design(net, board, patchable=True)
        start = time.perf_counter()
        result = build(board, net, folding, args.build_dir, clock_mhz=args.clock,
                       patchable=True, log=quiet)
        print(f"patchable build   {result.bitstream}: {time.perf_counter() - start:.0f} s, "
              f"Fmax {result.fmax_mhz:.1f} MHz at {result.clock_mhz:g} MHz, "
              f"{result.utilization[board.logic[0]][0]:,} {board.logic[0]}, "
              f"{result.utilization[board.block_ram[0]][0]} block RAMs")
    else:
        reuse(board, net, args.build_dir, log=quiet)
    bitstream = next(p for p in (args.build_dir / "bnnhw.bin", args.build_dir / "bnnhw.bit")
                     if p.is_file())
    original = bitstream.read_bytes()
    image = args.build_dir / "weights.bin"
    first_image = image.read_bytes() if image.is_file() else None
    times = []
    for _ in range(args.runs):
        for network in (new, net):
            start = time.perf_counter()
            reuse(board, network, args.build_dir, log=quiet)
            times.append(time.perf_counter() - start)
    same = bitstream.read_bytes() == original
    print(f"reuse ({board.name})  " + ", ".join(f"{t:.1f}" for t in times)
          + f" s; median {statistics.median(times):.1f} s")
    print(f"original again    {'the same bytes' if same else 'DIFFERENT bytes'}")
    if first_image is not None:
        # Weights in SPRAM: each patch writes the network's image too.
        reuse(board, new, args.build_dir, log=quiet)
        changed = image.read_bytes() != first_image
        reuse(board, net, args.build_dir, log=quiet)
        again = image.read_bytes() == first_image
        same = same and changed and again
        print(f"weight image      {len(first_image):,} bytes: "
              f"{'rewritten' if changed else 'NOT rewritten'} for the retrained network, "
              f"{'the same bytes' if again else 'DIFFERENT bytes'} for the original again")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
