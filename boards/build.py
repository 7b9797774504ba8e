"""``bnnhw build``: a network file and a folding to a bitstream for a board.

Elaborates the UART shell around the network (:class:`~bnnhw.boards.board.BoardTop`), checks
before place and route that the folding can fit the FPGA (an estimate from the folding, so that
a hopeless build is refused in seconds rather than failing after minutes), runs Yosys and nextpnr
from YoWASP, and reports utilisation against capacity and Fmax against the board's clock.
"""

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from .board import BoardError, BoardTop
from .rates import bounds
from ..progress import Status
from .toolchain import ToolchainError, default_cache_dir, run_plan, toolchain_env
from ..errors import BnnhwError

__all__ = ["FitError", "Estimate", "estimate", "layer_cost", "check_fit", "board_memory",
           "board_design", "fitting_design", "fitting_designs", "fitting_folding", "LOGIC_BUDGET",
           "BuildResult",
           "uart_divisor", "check_baud", "clock_setting", "build", "read_summary",
           "format_result"]


class FitError(BnnhwError):
    """The network, as folded, cannot fit the board's FPGA."""


# Logic cells (iCE40 LCs, or ECP5 LUT4s) per XNOR-popcount input bit, per multi-bit add/subtract
# input bit of the first layer, per layer stage (counters, handshakes, compare) and for the
# UART shell; LUT ROMs cost a LUT per 8 bits; buffers in flip-flops two cells per bit on an
# iCE40 (the flip-flop, loaded straight from the stream with no LUT to share its cell, and its
# part of the read multiplexer; an ECP5 slice has flip-flops beside its LUTs: half a LUT4),
# and so does the shell's frame buffer up to four words (Yosys keeps it in flip-flops). A ROM left to Yosys goes where it is cheaper, weighing a block RAM
# as 64 LUTs and a bit of LUT ROM as 1/16 of a LUT, as its memory_libmap pass weighs them.
# Fitted to bnnhw's builds of the digits network (64-128-128-10, 5-bit pixels) and of SFC
# (784-256-256-256-10); the errors of the estimate on each are in bench/RESULTS.md. On a UP5K,
# with the shell: digits folded (1,8) (1,16) (1,2) 1,653 LCs (model 1,779), (1,32) (1,64)
# (1,8) 4,576 (model 4,673; 1,792 cells for its 896 bits of buffer flip-flops, 640 for a
# frame buffer of two words), (4,16) (8,16) (1,16) 4,266 (model 4,269), (2,16) (2,32) (1,8)
# 3,140 (model 2,981); SFC (2,16) (1,16) (1,16) (1,1), weights in SPRAM, 3,301 (model 3,239,
# the image loader and flash reader about 450). Block RAMs: the model's count on all of them.
# ECP5 prices were refitted (2026-12-02) to Yosys's LUT4s per layer stage of an unflattened
# synthesis (`bench/synth.py --per-layer`: a CCU2C counts two), which track nextpnr's totals:
# a first layer's add/subtract bit takes 2.5-3.2 LUT4s (8-bit and 5-bit pixels), an XNOR-popcount
# bit about 3.7, and a multi-base layer's constant-coefficient products ("product_bits", the
# bits of its M * K weighted sums) little, for Yosys puts them in MULT18X18D blocks while the
# FPGA has any (1.5, to leave room for when they run out; on an iCE40 they are shifts and adds
# in LUTs, priced as adders). Totals against nextpnr on an ECP5-85F: digits (2,64) (4,64)
# (5,4) 5,300 LUT4s (model 5,302), (16,64) (32,64) (5,32) 30,126 (model 27,059: its output
# stage, 5 PEs of 32 inputs, takes 2,235 where the model says about 1,000), digits CNN
# (16,1) (16,32) (4) (4,64) (1,32) 5,713 (model 6,230), the (3,3) ABC MNIST CNN (8,1)
# (16,16) (1) (4,32) (1) (1,1) 20,135 (model 23,200), the (2,2) ABC digits (1,16) (1,32)
# (1,4) 2,615 (model 3,052). The former single ECP5 adder price (4.2) overpriced 8-bit first
# layers by 57-73% and multi-base designs by up to 49%.
_LUTS_PER_BIT = {"ice40": 3, "ecp5": 3.7}
_LUTS_PER_ADDER_BIT = {"ice40": 2.5, "ecp5": 3.2}
_LUTS_PER_PRODUCT_BIT = {"ice40": 2.5, "ecp5": 1.5}
_LUTS_PER_LAYER = 375
_LUTS_SHELL = 500
_BRAM_COST = 64


_LUTS_PER_REGISTER_BIT = {"ice40": 2, "ecp5": 0.5}     # ECP5 slices have flip-flops beside
# Each PE beyond the first: its accumulator, result and pipeline flip-flops, which take cells
# of their own on an iCE40 (on an ECP5 they sit beside the LUTs the per-bit costs count).
_LUTS_PER_PE = {"ice40": 50, "ecp5": 0}
# What the weight image costs when some layer's weights are in SPRAM: the flash reader and
# the loader (header compare, CRC-32, block counters), the SPRAMs' address multiplexers.
_LUTS_LOADER = 450
# The share of the FPGA's logic a default folding may use (the rest is the estimate's margin,
# -5% to +9% on the builds above, and room for the router: at 81% of a UP5K the digits design
# still closed, but at 47 MHz instead of 55-68), and of its block RAM (counted exactly from
# the plans, as Yosys maps them).
LOGIC_BUDGET = 0.7
RAM_BUDGET = 1.0


@dataclass(frozen=True)
class Estimate:
    """Resources a folded network is expected to need: logic cells, block RAMs and SPRAMs."""
    logic: int
    block_rams: int
    per_layer: tuple   # (logic, block RAMs, SPRAMs) per layer
    sprams: int = 0


def _blocks(width, depth, bits, widest):
    """Block RAMs holding a ``width`` x ``depth`` memory, over the block's port widths."""
    options = []
    w = widest
    while w >= 1:
        # iCE40 ports are 16/8/4/2 bits wide, ECP5 36/18/9/4/2/1: halving from the widest
        # port gives the same depths to within a bit of parity (Yosys packs 1-bit words two
        # to an iCE40 2048 x 2 word: an MNIST TFC with 1-bit weight words took 25 blocks).
        options.append(math.ceil(width / w) * math.ceil(depth / (bits // w)))
        w //= 2
    return min(options)


def layer_cost(figures, board):
    """``(logic, block RAMs, SPRAMs)`` of a layer's stage, from its figures."""
    _, _, bits, widest = board.block_ram
    logic = (figures.logic.get("stages", 1) * _LUTS_PER_LAYER
             + (figures.fold.get("pe", 1) - 1) * _LUTS_PER_PE[board.family]
             + figures.logic.get("xnor", 0) * _LUTS_PER_BIT[board.family]
             + figures.logic.get("adder_bits", 0) * _LUTS_PER_ADDER_BIT[board.family]
             + figures.logic.get("product_bits", 0) * _LUTS_PER_PRODUCT_BIT[board.family])
    rams = sprams = 0
    for memory in figures.memories:
        need = _blocks(memory.width, memory.depth, bits, widest)
        if memory.style == "spram":
            sprams += memory.spram_blocks
        elif memory.style == "block" or (memory.style == "auto"
                                         and need * _BRAM_COST < memory.bits / 16):
            rams += need
        elif memory.style in ("auto", "distributed"):
            logic += memory.bits / 8
        elif memory.style == "registers":
            logic += memory.bits * _LUTS_PER_REGISTER_BIT[board.family]
    return round(logic), rams, sprams


def estimate(net, folding, board, *, in_simd=None, memory="block"):
    """Estimate the logic, block RAMs and SPRAMs of ``net`` folded by ``folding`` on ``board``,
    with ``memory`` (one style, or one per layer).

    Reads each layer's :class:`~bnnhw.kinds.base.Figures`, the plan its stage is built by:
    every memory it instantiates, in the style the gateware asks Yosys for, and the size of its
    datapath; adds the shell and its frame buffer, and the weight image's loader if any.
    """
    from ..gateware.plan import check_memories
    from ..perf import performance
    model = performance(net, folding, in_simd, memory=memory)
    per_layer = tuple(layer_cost(figures, board) for figures in model.layers)
    in_simd = model.layers[0].in_count if in_simd is None else in_simd
    return _total(net, per_layer, in_simd, board,
                  patchable=_patchable(check_memories(memory, len(net.layers))))


def _patchable(memory):
    from ..gateware.plan import is_patchable
    return any(map(is_patchable, memory))


def _in_spram(style):
    """Whether a layer of memory ``style`` keeps its weights in SPRAM."""
    from ..gateware.plan import PATCHABLE_SPRAM
    return style in ("spram", PATCHABLE_SPRAM)


def _total(net, per_layer, in_simd, board, *, patchable=False):
    """The :class:`Estimate` of layers costing ``per_layer``, with the shell (its frame buffer
    of ``in_simd`` values per word) and the weight image's loader if any layer has SPRAMs
    (``patchable``: its expected header in a block RAM)."""
    _, _, bits, widest = board.block_ram
    # The shell's frame buffer: flip-flops up to four words (as Yosys maps it), else RAM.
    depth, width = net.input_size // in_simd, in_simd * net.input_bits
    shell_rams = _blocks(width, depth, bits, widest) if depth > 4 else 0
    shell_logic = _LUTS_SHELL + (depth * width * _LUTS_PER_REGISTER_BIT[board.family]
                                 if depth <= 4 else 0)
    sprams = sum(s for _, _, s in per_layer)
    return Estimate(logic=sum(l for l, _, _ in per_layer) + round(shell_logic)
                    + (_LUTS_LOADER if sprams else 0),
                    block_rams=sum(b for _, b, _ in per_layer) + shell_rams
                    + (1 if sprams and patchable else 0),
                    per_layer=tuple(per_layer), sprams=sprams)


def _spram_count(board):
    return board.spram[1] if board.spram else 0


def _fits(need, board, logic_budget, ram_budget=RAM_BUDGET):
    return (need.logic <= board.logic[1] * logic_budget
            and need.block_rams <= board.block_ram[1] * ram_budget
            and need.sprams <= _spram_count(board))


def check_fit(net, folding, board, *, memory="block", margin=1.25):
    """Refuse, before place and route, a folding whose estimate exceeds the FPGA."""
    need = estimate(net, folding, board, memory=memory)
    logic_name, logic_have = board.logic
    ram_name, ram_have, ram_bits, _ = board.block_ram
    if need.block_rams > ram_have:
        worst = max(range(len(need.per_layer)), key=lambda n: need.per_layer[n][1])
        spram = (" or weights in SPRAM" if board.spram else "")
        raise FitError(f"{board.title}: block RAM: the folding needs about {need.block_rams} "
                       f"blocks of {ram_bits // 1024} Kbit (layers[{worst}] alone "
                       f"{need.per_layer[worst][1]}), the FPGA has {ram_have}; use a smaller "
                       f"--pe/--simd{spram} or a larger board")
    if need.sprams > _spram_count(board):
        raise FitError(f"{board.title}: SPRAM: the folding needs {need.sprams} SPRAMs of 16 "
                       f"bits (one per 16 bits of each PE's weight word), the FPGA has "
                       f"{_spram_count(board)}; use a smaller --pe/--simd")
    if need.logic > logic_have * margin:
        worst = max(range(len(need.per_layer)), key=lambda n: need.per_layer[n][0])
        raise FitError(f"{board.title}: logic: the folding needs about {need.logic:,} LUT4s "
                       f"(layers[{worst}] alone {need.per_layer[worst][0]:,}), the FPGA has "
                       f"{logic_have:,}; use a smaller --pe/--simd")
    return need


def _styles(layer, fold, board, *, patchable=False):
    """The memory styles a layer folded by ``fold`` may use on ``board``: block RAM, and
    SPRAM where the board has it and the layer's weights fit; their patchable forms if
    ``patchable``."""
    from ..gateware.plan import PATCHABLE, PATCHABLE_SPRAM
    block, spram = (PATCHABLE, PATCHABLE_SPRAM) if patchable else ("block", "spram")
    styles = [block]
    if board.spram:
        try:
            layer.figures(fold, spram)
        except ValueError:                     # too deep for an SPRAM, or not patchable
            pass
        else:
            styles.append(spram)
    return styles


def board_memory(net, folding, board, *, logic_budget=1.0, patchable=False):
    """The memory style of each layer of ``net`` folded by ``folding`` on ``board``: block RAM
    where it fits, SPRAM (loaded from the weight image) for the fewest layers that make the
    rest fit; all block RAM if nothing fits (the fit check then says why). ``patchable``:
    the patchable forms of both (:data:`~bnnhw.gateware.plan.PATCHABLE_STYLES`)."""
    from itertools import product
    from ..folding import check_folding
    from ..gateware.plan import PATCHABLE
    folding = check_folding(net, folding)
    options = [_styles(layer, fold, board, patchable=patchable)
               for layer, fold in zip(net.layers, folding)]
    best = None
    for memory in product(*options):
        need = estimate(net, folding, board, memory=memory)
        if not _fits(need, board, logic_budget):
            continue
        key = (sum(map(_in_spram, memory)), need.block_rams, need.sprams)
        if best is None or key < best[0]:
            best = key, memory
    return best[1] if best else (PATCHABLE if patchable else "block",) * len(net.layers)


def board_design(net, board, target, *, patchable=False):
    """A folding of ``net`` into ``target`` cycles per frame for ``board``, and its memory
    styles: ``(folding, memory)``.

    Each layer keeps, for each memory style it may use, the few folds meeting the target (or
    its fastest) that cost the board least: logic (twice), block RAMs and SPRAMs, each as a
    share of what the FPGA has. So a layer's weight words match its memories' width (16-bit block RAM
    and SPRAM ports) instead of merely having the fewest PEs. Of their combinations, the one
    that fits the board with the fewest layers in SPRAM, then the least cost, wins (the
    SPRAMs are few: a layer's cheapest fold alone may leave none for the others).
    """
    from itertools import product
    logic_have, ram_have, spram_have = board.logic[1], board.block_ram[1], _spram_count(board)

    def share(cost):
        # Logic counts twice: its estimate is the rougher one, and a fuller FPGA routes
        # slower (block RAMs are counted exactly).
        logic, rams, sprams = cost
        return (2 * logic / logic_have + rams / ram_have
                + (sprams / spram_have if spram_have else 0))

    # How many folds per layer and style: the combinations grow as their power.
    keep = 3 if len(net.layers) <= 5 else 1
    choices = []
    for layer in net.layers:
        candidates = [(layer.figures(fold).cycles, fold) for fold in layer.fold_candidates()]
        fits = [fold for cycles, fold in candidates if cycles <= target]
        if not fits:
            fastest = min(cycles for cycles, _ in candidates)
            fits = [fold for cycles, fold in candidates if cycles == fastest]
        per_style = {}
        for fold in fits:
            for style in _styles(layer, fold, board, patchable=patchable):
                figures = layer.figures(fold, style)
                cost = layer_cost(figures, board)
                per_style.setdefault(style, []).append(
                    ((share(cost), layer.fold_preference(fold)), style, fold, cost,
                     figures.in_count))
        choices.append([option for options in per_style.values()
                        for option in sorted(options, key=lambda o: o[0])[:keep]])
    best = None
    for combination in product(*choices):
        memory = tuple(style for _, style, _, _, _ in combination)
        need = _total(net, [cost for _, _, _, cost, _ in combination], combination[0][4],
                      board, patchable=patchable)
        key = (not _fits(need, board, LOGIC_BUDGET), sum(map(_in_spram, memory)),
               share((need.logic, need.block_rams, need.sprams)))
        if best is None or key < best[0]:
            best = key, tuple(fold for _, _, fold, _, _ in combination), memory
    return best[1], best[2]


def _fitting(net, board, budget, patchable=False):
    """Every cycle target's :func:`board_design` whose estimate fits, the smallest per cycles
    per frame: ``{interval: ((logic, block RAMs), (folding, memory))}``. A faster target can
    give a larger design that is no faster (when another layer or the input bounds the
    interval); only the smallest of those is worth building."""
    from ..folding import cycle_targets
    from ..perf import performance
    best = {}
    for target in reversed(cycle_targets(net)):
        folding, memory = board_design(net, board, target, patchable=patchable)
        need = estimate(net, folding, board, memory=memory)
        if not _fits(need, board, budget):
            continue
        interval = performance(net, folding, memory=memory).initiation_interval
        key = (need.logic, need.block_rams)
        if interval not in best or key < best[interval][0]:
            best[interval] = key, (folding, memory)
    return best


def fitting_design(net, board, *, budget=None, patchable=False):
    """The fastest folding whose estimate fits the board (``budget`` of its logic,
    :data:`LOGIC_BUDGET` by default; its block RAMs and SPRAMs), and its memory styles:
    ``(folding, memory)``; of designs equally fast, the smallest.

    ``patchable``: every layer's memories patchable
    (:data:`~bnnhw.gateware.plan.PATCHABLE_STYLES`).

    Tries :func:`board_design` for each cycle target (each layer's possible cycle counts).
    When none fits the budget, the most folded design, if the whole FPGA holds it; else
    raises :class:`FitError` saying why.
    """
    from ..folding import cycle_targets
    best = _fitting(net, board, LOGIC_BUDGET if budget is None else budget, patchable)
    if best:
        return best[min(best)][1]
    folding, memory = board_design(net, board, cycle_targets(net)[-1], patchable=patchable)
    check_fit(net, folding, board, memory=memory)   # the most folded network: say why not
    return folding, memory


def fitting_designs(net, board, *, count=None, budget=None):
    """The designs whose estimate fits the board, from the most folded to the fastest: a list
    of ``(folding, memory)``, each the :func:`board_design` of some cycle target, one per
    cycles per frame (the smallest), every one fitting as :func:`fitting_design`'s does (so
    the last is :func:`fitting_design`'s).

    With ``count``, at most that many, spread evenly over the list: the most folded and the
    fastest always, the others at even steps between them (cycle targets grow by factors of
    about two, so even steps in the list are about even steps in log cycles per frame).
    Raises :class:`FitError` as :func:`fitting_design` does if none fits.
    """
    if count is not None and (not isinstance(count, int) or isinstance(count, bool)
                              or count < 1):
        raise BnnhwError(f"count must be a positive integer, not {count!r}")
    best = _fitting(net, board, LOGIC_BUDGET if budget is None else budget)
    designs = [best[interval][1] for interval in sorted(best, reverse=True)]
    if not designs:
        # Nothing within the budget: the most folded design, if the FPGA holds it at all.
        return [fitting_design(net, board, budget=budget)]
    if count is not None and count < len(designs):
        last = len(designs) - 1
        picks = sorted({round(n * last / max(count - 1, 1)) for n in range(count)})
        designs = [designs[n] for n in picks]
    return designs


def fitting_folding(net, board, *, budget=None):
    """The folding of :func:`fitting_design`."""
    return fitting_design(net, board, budget=budget)[0]


@dataclass(frozen=True)
class BuildResult:
    """A finished build: the bitstream, what it uses, and how fast it can run.

    ``attempts`` lists ``(clock MHz, Fmax MHz)`` of every place and route the build ran, the
    last one being this bitstream's.
    """
    board: object
    bitstream: Path
    utilization: dict      # nextpnr resource -> (used, available)
    fmax_mhz: float        # achieved on the system clock
    clock_mhz: float       # the clock it runs at on the board (the PLL's output)
    estimate: Estimate
    seconds: float
    attempts: tuple = ()
    divisor: int = 0       # clock cycles per UART bit
    bounds: object = None  # rates.Bounds: frames/s the link and the gateware allow

    @property
    def timing_met(self):
        return self.fmax_mhz >= self.clock_mhz


def uart_divisor(clock_hz, baud):
    """Clock cycles per bit for ``baud`` at ``clock_hz``, and the rate's relative error."""
    divisor = max(1, round(clock_hz / baud))
    return divisor, abs(clock_hz / divisor - baud) / baud


# The largest baud rate error the shell accepts (the UART samples each bit once, mid-bit).
BAUD_TOLERANCE = 0.02


def check_baud(baud, clock_hz, board):
    """Raise :class:`BoardError` unless the shell can speak ``baud`` at ``clock_hz``."""
    if not isinstance(baud, int) or isinstance(baud, bool) or baud <= 0:
        raise BoardError(f"baud must be a positive number of bits per second, not {baud!r}")
    divisor, error = uart_divisor(clock_hz, baud)
    if divisor < 4:
        raise BoardError(f"baud {baud} is too fast for the {clock_hz / 1e6:g} MHz clock "
                         f"of the {board.title} (at least 4 clock cycles per bit)")
    if error > BAUD_TOLERANCE:
        raise BoardError(f"baud {baud} cannot be made from the {clock_hz / 1e6:g} MHz "
                         f"clock: {100 * error:.1f}% off (at most {100 * BAUD_TOLERANCE:g}%)")
    return divisor


def clock_setting(board, mhz, baud):
    """The fastest clock at or below ``mhz`` MHz that ``board`` can make and that suits
    ``baud``: a :class:`~bnnhw.boards.clocks.PLLSetting`, or None for the oscillator itself."""
    from .clocks import pll_setting
    oscillator = board.clock_hz / 1e6
    if isinstance(mhz, (int, float)) and abs(mhz - oscillator) < 1e-9:
        check_baud(baud, board.clock_hz, board)
        return None

    def suits(setting):
        divisor, error = uart_divisor(setting.output_hz, baud)
        return divisor >= 4 and error <= BAUD_TOLERANCE
    if not isinstance(baud, int) or isinstance(baud, bool) or baud <= 0:
        raise BoardError(f"baud must be a positive number of bits per second, not {baud!r}")
    return pll_setting(board.family, oscillator, mhz, accept=suits)


# How far below the Fmax reached a failed run's successor aims.
STEP_DOWN = 0.03


def build(board, net, folding, build_dir, *, memory=None, clock_mhz=None, baud=115200,
          scores=None, cache_dir=None, log=print, attempts=4, seed=None, progress=True,
          patchable=False):
    """Build a bitstream of ``net`` with ``folding`` for ``board`` in ``build_dir``.

    ``memory``: the memory style of each layer (by default :func:`board_memory`'s). With
    weights in SPRAM, the weight image goes next to the bitstream (``weights.bin``, to be
    written at :data:`bnnhw.gateware.weights.IMAGE_OFFSET` of the board's flash).

    The design runs at ``clock_mhz`` (the fastest clock the board's PLL makes at or below it),
    or, by default, at the fastest clock that meets timing: a first place and route at the
    board's ``max_clock_mhz`` tells the Fmax, the next runs at the fastest clock 3% below it
    (:data:`STEP_DOWN`), and so on, stepping down, for at most ``attempts`` runs. Returns the
    last run's :class:`BuildResult`.

    ``scores``: whether replies carry the class scores besides the class; by default they do
    when they fit a reply's 16 bits (an ABC network's may not), else replies carry the class
    alone and the log says why. True asks for them: a network whose scores are wider is
    refused before anything is built.

    ``seed``: nextpnr's placement seed (placement moves the Fmax by several percent from one
    seed to the next); ``progress``: show the running build's step on stderr.

    ``patchable``: every trained value in block RAM (or weights in SPRAM, from the weight
    image), placed and routed with keys in their place and then written into the bitstream
    (:mod:`.patch`), so that ``bnnhw build --reuse`` can later write a retrained network's
    there (and its weight image) in seconds. ``memory``, if given, must then hold only
    :data:`~bnnhw.gateware.plan.PATCHABLE_STYLES`.
    """
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 1):
        raise BnnhwError(f"seed must be a positive integer, not {seed!r}")
    from ..folding import format_folding, save_folding
    from ..gateware.plan import PATCHABLE_STYLES
    from ..gateware.weights import IMAGE_OFFSET, weight_image
    from ..perf import performance
    from .patch import KEYS
    setting = clock_setting(board, board.max_clock_mhz if clock_mhz is None else clock_mhz,
                            baud)
    if patchable:
        if memory is None:
            memory = board_memory(net, folding, board, patchable=True)
        elif not set(memory) <= set(PATCHABLE_STYLES):
            raise BoardError(f"memory {','.join(memory)} cannot be patchable: a patchable "
                             f"build's are {' or '.join(PATCHABLE_STYLES)}")
    elif memory is None:
        memory = board_memory(net, folding, board)
    need = check_fit(net, folding, board, memory=memory)
    scores = _reply_scores(net, memory, scores, log)
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    name = "bnnhw"
    model = performance(net, folding, memory=memory)
    interval = model.initiation_interval
    log(f"folding (pe, simd) {format_folding(folding)}, memory {' '.join(memory)}: "
        f"{interval} cycles/frame; estimate {need.logic:,} LUT4s, {need.block_rams} block RAMs"
        + (f", {need.sprams} SPRAMs" if need.sprams else ""))
    image = weight_image(net, folding, memory)
    image_path = build_dir / "weights.bin"
    image_path.unlink(missing_ok=True)
    if image:
        image_path.write_bytes(image)
        log(f"weight image {image_path} ({len(image):,} bytes), for flash offset "
            f"0x{IMAGE_OFFSET:X}")
    env = toolchain_env(cache_dir or default_cache_dir(), board.tools, log=log)
    tried = []
    start = time.perf_counter()
    while True:
        hz = board.clock_hz if setting is None else setting.output_hz
        divisor = check_baud(baud, hz, board)
        # A patchable design is built with keys in its ROMs (no effect on other designs).
        plan, roms = _prepare(board, net, folding, memory, divisor=divisor, scores=scores,
                              setting=setting, keys=KEYS if patchable else None, seed=seed,
                              name=name)
        log(f"place and route at {hz / 1e6:g} MHz"
            + ("" if setting is None else f" (PLL {setting.describe()})")
            + f", {hz / interval:,.0f} frames/s; Yosys and nextpnr in {build_dir}")
        status = Status("  build") if progress else None
        try:
            report = run_plan(plan, build_dir, env, name=name, status=status)
        finally:
            if status is not None:
                status.done()
        bitstream = build_dir / f"{name}.{board.bitstream}"
        if not bitstream.is_file():
            raise ToolchainError(f"{bitstream}: the packer wrote no bitstream")
        fmax = [achieved for achieved, _ in report.fmax.values()]
        if not fmax:
            raise ToolchainError(f"{report.log}: nextpnr reported no clock")
        tried.append((hz / 1e6, min(fmax)))
        log(f"Fmax {min(fmax):.1f} MHz at {hz / 1e6:g} MHz: timing "
            + ("met" if min(fmax) >= hz / 1e6 else "failed"))
        done = (min(fmax) >= hz / 1e6 or clock_mhz is not None or len(tried) >= attempts)
        if not done:
            # Step down: the fastest clock 3% below both this one and the Fmax it reached
            # (placement moves the Fmax by a few percent from one run to the next, so asking
            # for exactly the Fmax reached often fails by a hair).
            limit = min(min(fmax), hz / 1e6) * (1 - STEP_DOWN)
            try:
                setting = clock_setting(board, limit, baud)
            except BnnhwError:
                done = True
        if done:
            result = BuildResult(board=board, bitstream=bitstream,
                                 utilization=report.utilization, fmax_mhz=min(fmax),
                                 clock_mhz=hz / 1e6, estimate=need,
                                 seconds=time.perf_counter() - start, attempts=tuple(tried),
                                 divisor=divisor,
                                 bounds=bounds(net.input_size, net.classes, baud=baud,
                                               scores=scores, clock_hz=hz, cycles=interval))
            if patchable:
                _finish_patchable(board, net, folding, memory, build_dir, plan, roms, env,
                                  clock_mhz=hz / 1e6, baud=baud, scores=scores,
                                  divisor=divisor, log=log)
            _write_summary(build_dir / "build.json", result, net, folding, baud, scores,
                           memory=memory, image=image_path.name if image else None)
            save_folding(build_dir / "folding.json", net, folding, cycles_per_frame=interval)
            return result


def _reply_scores(net, memory, scores, log):
    """Whether replies carry the scores (:func:`build`'s ``scores``), checked before a build."""
    from ..gateware.plan import check_memories
    from ..gateware.top import score_width
    from .protocol import SCORE_BITS
    if scores is not None and not isinstance(scores, bool):
        raise BnnhwError(f"scores must be True, False or None, not {scores!r}")
    if scores is False:
        return False
    width = score_width(net, check_memories(memory, len(net.layers)))
    if width <= SCORE_BITS:
        return True
    if scores:
        raise BoardError(f"the network's class scores are {width} bits wide, a reply carries "
                         f"{SCORE_BITS}-bit scores: build without scores (--no-scores), "
                         f"replies then carry the class alone")
    log(f"replies carry the class alone: the network's class scores are {width} bits wide, "
        f"a reply's are {SCORE_BITS}")
    return False


def _prepare(board, net, folding, memory, *, divisor, scores, setting, keys, seed=None,
             name="bnnhw"):
    """Elaborate the board design of ``net`` and write its build plan (no tool runs):
    ``(plan, RomLog)``, the ROMs built from keys when ``keys`` is a seed."""
    from ..gateware.contents import RomLog
    from ..gateware.top import NetworkTop
    from .shell import Shell
    design = BoardTop(board, Shell(NetworkTop(net, folding, memory=memory), divisor=divisor,
                                   scores=scores), clock=setting)
    with RomLog(keys=keys) as roms:
        plan = board.platform().prepare(
            design, name=name,
            # Report a failed timing rather than stop: the report says by how much, for the
            # next, slower try.
            nextpnr_opts=f"--report {name}.report.json --timing-allow-fail"
                         + ("" if seed is None else f" --seed {seed}")
                         + (f" {board.nextpnr_opts}" if board.nextpnr_opts else ""),
            synth_opts=board.synth_opts)
    return plan, roms


def _network_shape(net):
    """What a patch must keep of a network: each layer's kind and tensors."""
    return [f"{layer.KIND} {layer.input.describe()} -> "
            f"{layer.output.describe() if layer.output is not None else 'scores'}"
            for layer in net.layers]


def _finish_patchable(board, net, folding, memory, build_dir, plan, roms, env, *, clock_mhz,
                      baud, scores, divisor, log):
    """Keep the keyed configuration and the manifest of a patchable build, then write the
    network's own words into its bitstream."""
    import re
    from ..folding import format_folding
    from .patch import _TEXT, patch, save_manifest
    text = build_dir / f"bnnhw.{_TEXT[board.family]}"
    keyed = build_dir / f"bnnhw.keyed.{_TEXT[board.family]}"
    keyed.write_text(text.read_text())
    script = plan.files.get("build_bnnhw.sh", "")
    found = re.search(r'"\$ECPPACK"\s+(.*?)\s*--input', script)
    save_manifest(build_dir, board=board, network=_network_shape(net),
                  folding=format_folding(folding), memory=memory, rtlil=plan.files["bnnhw.il"],
                  roms=roms.roms, clock_mhz=clock_mhz, baud=baud, scores=scores,
                  divisor=divisor, ecppack=found.group(1).split() if found else [])
    seconds = patch(build_dir, [dict(name=r.name, width=r.width, depth=r.depth, words=r.words)
                                for r in roms.roms], env, log=log)
    log(f"patchable: {len(roms.roms)} memories built with keys, the network's words written "
        f"and read back from the bitstream in {seconds:.1f} s")


def reuse(board, net, build_dir, *, cache_dir=None, log=print):
    """Write ``net``'s weights and thresholds into the patchable build in ``build_dir``,
    without synthesis or place and route, and its weight image (``weights.bin``) if its
    weights are in SPRAM; refuse, with the reason, a network that the build cannot hold.
    Return ``(seconds, manifest)``."""
    from ..folding import load_folding
    from ..gateware.weights import IMAGE_OFFSET, weight_image
    from .patch import KEYS, PatchError, design_hash, patch, read_manifest
    start = time.perf_counter()
    build_dir = Path(build_dir)
    manifest = read_manifest(build_dir)
    if manifest["board"] != board.name:
        raise PatchError(f"{build_dir}: built for the {manifest['board']}, not the "
                         f"{board.name}")
    shape, built = _network_shape(net), manifest["network"]
    if shape != built:
        differ = next(n for n in range(max(len(shape), len(built)))
                      if n >= len(shape) or n >= len(built) or shape[n] != built[n])
        raise PatchError(f"{build_dir}: layer {differ} differs from the build's: "
                         f"{shape[differ] if differ < len(shape) else 'none'} (build: "
                         f"{built[differ] if differ < len(built) else 'none'})")
    try:
        folding = load_folding(build_dir / "folding.json", net)
    except BnnhwError as error:
        raise PatchError(f"{build_dir}: the build's folding does not suit the network: "
                         f"{error}") from None
    setting = clock_setting(board, manifest["clock_mhz"], manifest["baud"])
    try:
        plan, roms = _prepare(board, net, folding, manifest["memory"],
                              divisor=manifest["divisor"], scores=manifest["scores"],
                              setting=setting, keys=KEYS)
    except (BnnhwError, ValueError) as error:
        raise PatchError(f"{build_dir}: the network does not fit the build's design: "
                         f"{error}") from None
    if design_hash(plan.files["bnnhw.il"]) != manifest["design"]:
        raise PatchError(f"{build_dir}: the network elaborates to other logic than the "
                         f"build's (something outside the block RAMs differs, such as "
                         f"output scales): build it anew")
    env = toolchain_env(cache_dir or default_cache_dir(), board.tools, log=log)
    patch(build_dir, [dict(name=r.name, width=r.width, depth=r.depth, words=r.words)
                      for r in roms.roms], env, log=log)
    image = weight_image(net, folding, manifest["memory"])
    if image:
        # Weights in SPRAM: the new image, which the patched bitstream's loader expects (its
        # header is in a patched block RAM); the old one is refused by it from now on.
        path = build_dir / "weights.bin"
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_bytes(image)
        temporary.replace(path)
        log(f"weight image {path} ({len(image):,} bytes), for flash offset "
            f"0x{IMAGE_OFFSET:X}")
    return time.perf_counter() - start, manifest


def _write_summary(path, result, net, folding, baud, scores, *, memory, image):
    """Write what `bnnhw run` and `bnnhw program` need to know of a build, as JSON."""
    from ..folding import format_folding
    from ..gateware.weights import IMAGE_OFFSET
    summary = {
        "board": result.board.name, "bitstream": result.bitstream.name,
        "image": image, "image_offset": IMAGE_OFFSET if image else None,
        "folding": format_folding(folding), "memory": list(memory),
        "clock_mhz": result.clock_mhz,
        "fmax_mhz": result.fmax_mhz, "timing_met": result.timing_met, "baud": baud,
        "divisor": result.divisor, "scores": scores, "cycles_per_frame": result.bounds.cycles,
        "n_pixels": net.input_size, "classes": net.classes,
    }
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(summary, indent=1) + "\n")
    temporary.replace(path)


def read_summary(build_dir):
    """The summary `bnnhw build` wrote in ``build_dir``; raises :class:`BoardError`."""
    path = Path(build_dir) / "build.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BoardError(f"{path}: no such file; is {build_dir} a folder `bnnhw build` wrote?") \
            from None
    except json.JSONDecodeError as error:
        raise BoardError(f"{path}: unreadable ({error})") from None


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
    if len(result.attempts) > 1:
        lines.append(f"{'clocks tried':<26} " + ", ".join(
            f"{clock:g} MHz (Fmax {fmax:.1f})" for clock, fmax in result.attempts))
    if result.bounds is not None:
        lines += result.bounds.lines()
    return "\n".join(lines)
