"""``bnnhw build``: a network file and a folding to a bitstream for a board.

Elaborates the UART shell around the network (:class:`~bnnhw.boards.board.BoardTop`), checks
before place and route that the folding can fit the FPGA (an estimate from the folding, so that
a hopeless build is refused in seconds rather than failing after minutes), runs Yosys and nextpnr
from YoWASP, and reports utilisation against capacity and Fmax against the board's clock.
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path

from .board import BoardError, BoardTop
from .toolchain import ToolchainError, default_cache_dir, run_plan, toolchain_env
from ..errors import BnnhwError

__all__ = ["FitError", "Estimate", "estimate", "check_fit", "fitting_folding", "BuildResult",
           "build", "format_result"]


class FitError(BnnhwError):
    """The network, as folded, cannot fit the board's FPGA."""


# Logic cells (iCE40 LCs, or ECP5 LUT4s) per XNOR-popcount input bit, per multi-bit add/subtract
# input bit of the first layer, per layer engine (counters, handshakes, compare) and for the
# UART shell; input buffers shallower than 8 words are flip-flops. Fitted to bnnhw's builds of
# the digits network (64-128-128-10, 5-bit pixels): on a UP5K folded (1,8) (1,16) (1,2) with
# the shell 1,772 LCs (model 1,907), folded (1,32) (1,64) (1,4) in a bare wrapper 2,669 (model
# 2,405); on an ECP5-85F folded (2,64) (4,64) (5,4) with the shell 5,373 LUT4s (model 5,909).
# ECP5 adders count about 1.7 times the LUT4s of iCE40 ones (a CCU2C carry cell holds two):
# folded (16,64) (32,64) (5,32), the digits network took 30,126 LUT4s (model 30,521).
_LUTS_PER_BIT = 3
_LUTS_PER_ADDER_BIT = {"ice40": 2.5, "ecp5": 4.2}
_LUTS_PER_LAYER = 375
_LUTS_SHELL = 500
# Threshold ROMs of more bits than this go to block RAM; smaller ones are LUTs.
_THRESHOLD_BRAM_BITS = 1024


@dataclass(frozen=True)
class Estimate:
    """Resources a folded network is expected to need: logic cells and block RAMs."""
    logic: int
    block_rams: int
    per_layer: tuple   # (logic, block RAMs) per layer


def _blocks(width, depth, bits, widest):
    """Block RAMs holding a ``width`` x ``depth`` memory, over the block's port widths."""
    options = []
    w = widest
    while w >= 1:
        # iCE40 ports are 16/8/4/2 bits wide, ECP5 36/18/9/4/2/1: halving from the widest
        # port gives the same depths to within a bit of parity.
        options.append(math.ceil(width / w) * math.ceil(depth / (bits // w)))
        w //= 2
    return min(options)


def estimate(net, folding, board, *, in_simd=None):
    """Estimate the logic and block RAMs of ``net`` folded by ``folding`` on ``board``.

    Block RAM (``memory="block"``) holds, per PE, a weight bank and a large threshold bank; per
    layer, a double-buffered input vector of 8 words or more; and the shell's frame buffer.
    Single-word weights are constants that fold into the XNORs.
    """
    from ..perf import performance
    _, _, bits, widest = board.block_ram
    blocks = lambda width, depth: _blocks(width, depth, bits, widest) if depth > 1 else 0
    in_simd = folding[0].simd if in_simd is None else in_simd
    model = performance(net, folding, in_simd)
    per_layer = []
    for layer, fold, figures in zip(net.layers, folding, model.layers):
        nf, sf = layer.fan_out // fold.pe, layer.fan_in // fold.simd
        elem_width = net.input_bits if layer.kind == "first" else 1
        logic = fold.pe * fold.simd * (net.input_bits * _LUTS_PER_ADDER_BIT[board.family]
                                       if layer.kind == "first" else _LUTS_PER_BIT)
        rams = fold.pe * blocks(fold.simd, nf * sf)
        threshold_bits = figures.threshold_bits // fold.pe
        if threshold_bits > _THRESHOLD_BRAM_BITS:
            rams += fold.pe * blocks(figures.threshold_bits // layer.fan_out, nf)
        else:
            logic += figures.threshold_bits / 8
        buffer_words = figures.buffer_bits // (fold.simd * elem_width)
        if buffer_words >= 8:
            rams += blocks(fold.simd * elem_width, buffer_words)
        else:
            logic += figures.buffer_bits / 2        # flip-flops, packed with their muxes
        per_layer.append((round(logic + _LUTS_PER_LAYER), rams))
    shell_rams = blocks(in_simd * net.input_bits, net.input_size // in_simd)
    return Estimate(logic=sum(l for l, _ in per_layer) + _LUTS_SHELL,
                    block_rams=sum(b for _, b in per_layer) + shell_rams,
                    per_layer=tuple(per_layer))


def check_fit(net, folding, board, *, margin=1.25):
    """Refuse, before place and route, a folding whose estimate exceeds the FPGA."""
    need = estimate(net, folding, board)
    logic_name, logic_have = board.logic
    ram_name, ram_have, ram_bits, _ = board.block_ram
    if need.block_rams > ram_have:
        worst = max(range(len(need.per_layer)), key=lambda n: need.per_layer[n][1])
        raise FitError(f"{board.title}: block RAM: the folding needs about {need.block_rams} "
                       f"blocks of {ram_bits // 1024} Kbit (layers[{worst}] alone "
                       f"{need.per_layer[worst][1]}), the FPGA has {ram_have}; use a smaller "
                       f"--pe/--simd or a larger board")
    if need.logic > logic_have * margin:
        worst = max(range(len(need.per_layer)), key=lambda n: need.per_layer[n][0])
        raise FitError(f"{board.title}: logic: the folding needs about {need.logic:,} LUT4s "
                       f"(layers[{worst}] alone {need.per_layer[worst][0]:,}), the FPGA has "
                       f"{logic_have:,}; use a smaller --pe/--simd")
    return need


def fitting_folding(net, board, *, budget=0.6):
    """The fastest default folding whose estimate fits ``budget`` of the board's logic and
    block RAM (the rest is margin for the estimate, and room for the router).

    Tries :func:`~bnnhw.folding.default_folding` for growing cycle targets (each layer's
    possible cycle counts) and keeps the first that fits; raises :class:`FitError` if even
    the most folded network does not.
    """
    from ..folding import default_folding, divisors
    targets = sorted({(layer.fan_out // pe) * (layer.fan_in // simd)
                      for layer in net.layers
                      for pe in divisors(layer.fan_out) for simd in divisors(layer.fan_in)})
    logic_have = board.logic[1]
    for target in targets:
        folding = default_folding(net, target=target)
        need = estimate(net, folding, board)
        if need.logic <= logic_have * budget and need.block_rams <= board.block_ram[1] * budget:
            return folding
    folding = default_folding(net, target=targets[-1])
    check_fit(net, folding, board)          # the most folded network: fits, or says why not
    return folding


@dataclass(frozen=True)
class BuildResult:
    """A finished build: the bitstream, what it uses, and how fast it can run."""
    board: object
    bitstream: Path
    utilization: dict      # nextpnr resource -> (used, available)
    fmax_mhz: float        # achieved on the system clock
    clock_mhz: float       # the clock it runs at on the board
    estimate: Estimate
    seconds: float

    @property
    def timing_met(self):
        return self.fmax_mhz >= self.clock_mhz


def build(board, net, folding, build_dir, *, baud=115200, scores=True, cache_dir=None,
          log=print):
    """Build a bitstream of ``net`` with ``folding`` for ``board`` in ``build_dir``."""
    from ..network import NetworkTop
    from .shell import Shell

    if not isinstance(baud, int) or baud <= 0:
        raise BoardError(f"baud must be a positive number of bits per second, not {baud!r}")
    divisor = round(board.clock_hz / baud)
    if divisor < 4:
        raise BoardError(f"baud {baud} is too fast for the {board.clock_hz / 1e6:g} MHz clock "
                         f"of the {board.title} (at least 4 clock cycles per bit)")
    error = abs(board.clock_hz / divisor - baud) / baud
    if error > 0.02:
        raise BoardError(f"baud {baud} cannot be made from the {board.clock_hz / 1e6:g} MHz "
                         f"clock: {100 * error:.1f}% off (at most 2%)")
    need = check_fit(net, folding, board)
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    name = "bnnhw"
    top = NetworkTop(net, folding)
    interval = top.performance.initiation_interval
    log(f"folding (pe, simd) {', '.join(f'({f.pe}, {f.simd})' for f in top.folding)}: "
        f"{interval} cycles/frame, {board.clock_hz / interval:,.0f} frames/s at "
        f"{board.clock_hz / 1e6:g} MHz; estimate {need.logic:,} LUT4s, "
        f"{need.block_rams} block RAMs")
    start = time.perf_counter()
    top = BoardTop(board, Shell(top, divisor=divisor, scores=scores))
    platform = board.platform()
    plan = platform.prepare(top, name=name, nextpnr_opts=f"--report {name}.report.json")
    env = toolchain_env(cache_dir or default_cache_dir(), board.tools, log=log)
    log(f"running Yosys and nextpnr in {build_dir} (a minute or more)")
    report = run_plan(plan, build_dir, env, name=name)
    bitstream = build_dir / f"{name}.{board.bitstream}"
    if not bitstream.is_file():
        raise ToolchainError(f"{bitstream}: the packer wrote no bitstream")
    fmax = [achieved for achieved, _ in report.fmax.values()]
    if not fmax:
        raise ToolchainError(f"{report.log}: nextpnr reported no clock")
    return BuildResult(board=board, bitstream=bitstream, utilization=report.utilization,
                       fmax_mhz=min(fmax), clock_mhz=board.clock_hz / 1e6, estimate=need,
                       seconds=time.perf_counter() - start)


def format_result(result):
    """A short, readable report of a build."""
    board = result.board
    lines = [f"bitstream    {result.bitstream}  ({result.seconds:.0f} s)"]
    for resource, label in board.resources.items():
        if resource in result.utilization:
            used, available = result.utilization[resource]
            lines.append(f"{label:<26} {used:>7,} / {available:>7,}  "
                         f"({100 * used / max(available, 1):.0f}%)")
    verdict = "met" if result.timing_met else "FAILED"
    lines.append(f"{'Fmax':<26} {result.fmax_mhz:7.1f} MHz for a {result.clock_mhz:g} MHz "
                 f"clock: timing {verdict}")
    return "\n".join(lines)
