"""How the gateware components size themselves, in plain Python.

Each stream component of :mod:`bnnhw.gateware` takes its numbers (cycles per frame, pipeline
depth, every memory it instantiates, its datapath width) from a plan made here, without
Amaranth. The layer kinds report the same plans as their figures, so the performance model,
the board fit estimate and ``bnnhw info`` read what the gateware builds rather than
re-deriving it (tests elaborate the components and compare).
"""

import math
from dataclasses import dataclass

from ..errors import FoldingError

__all__ = ["MEMORIES", "PATCHABLE", "PATCHABLE_SPRAM", "PATCHABLE_STYLES", "is_patchable",
           "KEY_DEPTH", "PATCHABLE_SCORE_WIDTH", "SPRAM_WIDTH",
           "SPRAM_DEPTH", "MemoryPlan", "MatrixPlan", "matrix_plan",
           "multibase_plan", "WindowPlan", "window_plan", "PoolPlan", "pool_plan", "tree_levels",
           "range_width", "signed_width", "check_memory", "check_memories"]

# What a layer's memories may be asked to be built from: block RAM (what an iCE40 has spare),
# distributed LUT RAM / LUT ROM (faster on an ECP5), or, for weights, the single-port RAM of an
# iCE40 UltraPlus (SPRAM), which has no initial contents: its weights are loaded at run time
# from a weight image (:mod:`bnnhw.gateware.weights`).
MEMORIES = ("block", "distributed", "spram")

# A build whose trained contents can be replaced in the bitstream later (``bnnhw build
# --patchable``, then ``--reuse``): block RAM like "block", but every weight and threshold is in
# a block RAM (none folded into the logic) and every width follows from the layer's shape, not
# from the trained values, so that two networks of one shape and folding elaborate to the same
# logic and differ only in the block RAMs' contents. Not one of the styles a build picks.
PATCHABLE = "patchable"

# The same with the weights in SPRAM (an iCE40 UltraPlus), loaded from the weight image: a
# retrained network is then a new image and new words in the block RAMs that keep its
# thresholds (and the image header the loader expects: :class:`~.weights.WeightLoader`).
PATCHABLE_SPRAM = "patchable-spram"
PATCHABLE_STYLES = (PATCHABLE, PATCHABLE_SPRAM)


def is_patchable(memory):
    """Whether ``memory`` is a style of a patchable build."""
    return memory in PATCHABLE_STYLES

# The bitstream tools find a memory by 256-word columns of one bit (:mod:`.contents`): a
# patchable ROM is at least this deep, which costs no block RAM (an iCE40 block is 256 words
# deep at its widest, an ECP5 one 512).
KEY_DEPTH = 256

# Scores of a patchable build: what the board's reply carries (signed 16-bit), for any offsets.
PATCHABLE_SCORE_WIDTH = 16

# One SB_SPRAM256KA: 16,384 words of 16 bits.
SPRAM_WIDTH, SPRAM_DEPTH = 16, 16384


def check_memory(memory):
    """Check a memory style: ``"block"``, ``"distributed"`` or ``"spram"`` (or one of
    :data:`PATCHABLE_STYLES`)."""
    if memory not in MEMORIES and not is_patchable(memory):
        raise ValueError(f"memory must be one of {', '.join(map(repr, MEMORIES))}, "
                         f"not {memory!r}")
    return memory


def check_memories(memory, layers):
    """A memory style per layer: ``memory`` is one style for all ``layers`` layers or a
    sequence of one per layer; return a tuple of them."""
    if isinstance(memory, str):
        return (check_memory(memory),) * layers
    memory = tuple(memory)
    if len(memory) != layers:
        raise ValueError(f"memory has {len(memory)} entries, but the network has {layers} "
                         f"layers")
    return tuple(check_memory(style) for style in memory)


def tree_levels(n):
    """Adder levels (each one register stage) that sum ``n`` terms: ``ceil(log2(n))``."""
    return (n - 1).bit_length()


def range_width(lo, hi):
    """Bits of the narrowest Amaranth shape holding ``lo..hi`` (as ``Shape.cast(range)``)."""
    lo, hi = int(lo), int(hi)
    if lo >= 0:
        return hi.bit_length()
    return max((-lo - 1).bit_length(), max(hi, 0).bit_length()) + 1


def signed_width(lo, hi):
    """Bits of the narrowest two's complement integer holding ``lo..hi``."""
    return max(int(lo).bit_length(), int(hi).bit_length(), (-int(lo) - 1).bit_length()) + 1


@dataclass(frozen=True)
class MemoryPlan:
    """One memory a component instantiates.

    ``style`` is what it is built from: ``"block"`` RAM, ``"distributed"`` LUT RAM or ROM,
    ``"auto"`` (a ROM whose placement is left to Yosys), ``"registers"`` (flip-flops and a
    multiplexer), ``"constant"`` (a single word, folded into the logic) or ``"spram"`` (iCE40
    UltraPlus single-port RAM, ``spram_blocks`` of them side by side). ``rom`` says whether its
    contents are fixed at elaboration (weights, thresholds) or written at run time (buffers,
    and weights in SPRAM, which the weight image fills: :attr:`loaded`).
    """
    name: str
    role: str            # "weights", "thresholds" or "buffer"
    width: int
    depth: int
    style: str
    rom: bool

    @property
    def bits(self):
        return self.width * self.depth

    @property
    def instantiated(self):
        """Whether it is a memory in the design (not registers or a constant)."""
        return self.style in ("block", "distributed", "auto", "spram")

    @property
    def loaded(self):
        """Whether its contents come from the weight image at run time."""
        return self.style == "spram"

    @property
    def spram_blocks(self):
        """SPRAMs side by side holding it (0 unless its style is ``"spram"``)."""
        return -(-self.width // SPRAM_WIDTH) if self.style == "spram" else 0


@dataclass(frozen=True)
class MatrixPlan:
    """The sizing of a :class:`~bnnhw.gateware.engine.MatrixEngine`; see :func:`matrix_plan`."""
    mh: int
    mw: int
    pe: int
    simd: int
    elem_width: int          # bits per input element (1 for binary inputs)
    result_width: int        # bits per output element: 1 with thresholds, else the popcount
    nf: int                  # neuron groups: mh / pe
    sf: int                  # beats per input vector: mw / simd
    cycles: int              # nf * sf per frame
    levels: int              # adder tree levels
    depth: int               # cycles from a group's last weight read to its output beat
    fifo_depth: int          # output FIFO entries (credits)
    buffer_depth: int        # input buffer words (two halves)
    acc_bounds: tuple        # (lo, hi) of the accumulator before any threshold offset
    acc_lo: int              # range of the accumulator as built
    acc_hi: int
    threshold_width: int     # signed width of a stored -threshold (0 without thresholds)
    memories: tuple          # MemoryPlan, in the order the engine instantiates them
    products: int = 1        # multi-base: weight bases x input bases summed (M * K), else 1
    out_bases: int = 1       # multi-base: thresholds (output bits) per neuron, else 1
    bases: int = 1           # multi-base: weight bases M, else 1
    acc_thresholds: tuple = None   # multi-base: per neuron, the N thresholds on the accumulator

    @property
    def memory_bits(self):
        """Bits held in instantiated memories (block or distributed RAM/ROM)."""
        return sum(m.bits for m in self.memories if m.instantiated)

    @property
    def terms(self):
        """Products summed per cycle: ``pe * simd`` XNORs (or add/subtract terms), times the
        ``products`` of a multi-base engine."""
        return self.pe * self.simd * self.products


def _engine_memories(*, nf, sf, buffer_width, buffer_depth, threshold_width, weight_width,
                     memory):
    """The memories of a matrix engine, in the order it instantiates them: the input buffer,
    the thresholds (``threshold_width`` bits per neuron group, or None without), the weights
    (``weight_width`` bits per (group, beat)). ``memory`` is the weights' style; buffers and
    thresholds beside weights in SPRAM go to block RAM."""
    patchable = is_patchable(memory)
    if patchable:
        memory = "spram" if memory == PATCHABLE_SPRAM else "block"
    weight_memory, memory = memory, "block" if memory == "spram" else memory
    if weight_memory == "spram" and nf * sf > SPRAM_DEPTH:
        raise FoldingError(f"an SPRAM holds {SPRAM_DEPTH} words; {nf * sf} words of weights "
                           f"per PE do not fit (use a larger pe or simd)")
    buffer_style = ("registers" if buffer_depth < 8 and memory == "block" else memory)
    memories = [MemoryPlan("inbuf", "buffer", buffer_width, buffer_depth, buffer_style,
                           rom=False)]
    if threshold_width is not None:
        style = ("block" if patchable else "constant" if nf == 1 else
                 "distributed" if memory != "block" else
                 "block" if threshold_width <= 32 else "auto")
        memories.append(MemoryPlan("thresholds", "thresholds", threshold_width,
                                   max(nf, KEY_DEPTH) if patchable else nf, style, rom=True))
    # All PEs' weights in one memory, a word per (group, beat): small layers then share a
    # block RAM instead of taking one per PE; in SPRAM, its 16-bit columns are SPRAMs side by
    # side.
    style = ("constant" if nf * sf == 1 and weight_memory != "spram" and not patchable
             else weight_memory)
    # (SPRAM weights are in the image, not keyed: no need to be KEY_DEPTH deep.)
    memories.append(MemoryPlan("weights", "weights", weight_width,
                               max(nf * sf, KEY_DEPTH) if patchable and style != "spram"
                               else nf * sf, style,
                               rom=style != "spram"))
    return memories


def matrix_plan(*, mh, mw, pe, simd, in_bits=None, thresholds=None, weight_ones=None,
                memory="block"):
    """Plan a folded matrix engine of ``mh`` neurons over ``mw`` inputs (see the engine).

    ``thresholds`` (``mh`` integers, or None for raw popcount outputs) and ``weight_ones`` (the
    number of +1 weights per row, needed with ``in_bits``) decide the accumulator width.
    """
    nf, sf = mh // pe, mw // simd
    levels = tree_levels(simd)
    depth = levels + 3
    if in_bits is None:
        elem_width, term = 1, (0, 1)
        adjusted = None if thresholds is None else [int(t) for t in thresholds]
    else:
        # A term is w ? x : ~x = w ? x : -x - 1; the -1 per zero weight goes to the threshold.
        elem_width, term = in_bits, (-(1 << in_bits), (1 << in_bits) - 1)
        adjusted = [int(t) - (mw - int(ones)) for t, ones in zip(thresholds, weight_ones)]
    acc_bounds = (term[0] * mw, term[1] * mw)
    if adjusted is None:
        acc_lo, acc_hi = acc_bounds
        result_width, threshold_width = range_width(*acc_bounds), 0
    else:
        t_lo, t_hi = min(adjusted), max(adjusted)
        if is_patchable(memory):
            # Widths for any thresholds the network file allows: they lie in the
            # accumulator's range or one above it (0..N+1 for binary inputs; for unsigned
            # ones the file's -bound..bound+1 less the zero weights stays within it).
            t_lo, t_hi = acc_bounds[0], acc_bounds[1] + 1
        acc_lo, acc_hi = acc_bounds[0] - max(0, t_hi), acc_bounds[1] - min(0, t_lo)
        result_width = 1
        threshold_width = range_width(min(-1, -t_hi), max(0, -t_lo))
    fifo_depth = max(3, math.ceil((depth + 5) / sf) + 2)
    buffer_depth = 2 << (sf - 1).bit_length()
    memories = _engine_memories(nf=nf, sf=sf, buffer_width=simd * elem_width,
                                buffer_depth=buffer_depth,
                                threshold_width=None if adjusted is None else pe * threshold_width,
                                weight_width=pe * simd, memory=memory)
    return MatrixPlan(mh=mh, mw=mw, pe=pe, simd=simd, elem_width=elem_width,
                      result_width=result_width, nf=nf, sf=sf, cycles=nf * sf, levels=levels,
                      depth=depth, fifo_depth=fifo_depth, buffer_depth=buffer_depth,
                      acc_bounds=acc_bounds, acc_lo=acc_lo, acc_hi=acc_hi,
                      threshold_width=threshold_width, memories=tuple(memories))


def multibase_plan(*, mh, mw, pe, simd, coefficients, in_bits=None, thresholds=None,
                   weight_zeros=None, memory="block"):
    """Plan a folded multi-base matrix engine (``MatrixEngine`` given ``coefficients``): M
    weight bases over ``mw`` inputs of K bases (``in_bits`` None) or unsigned ``in_bits``-bit
    values (K = 1), ``coefficients`` ``(M, K)`` positive integers.

    Per cycle and neuron, M * K popcount (or add/subtract) trees of ``simd`` terms, each times
    its constant coefficient, summed by a second tree: ``tree_levels(simd) +
    tree_levels(M * K)`` register levels. ``thresholds`` ``(mh, N)`` are the engine's, on the
    layer's, on ``z``; the engine compares the accumulator with ``acc_thresholds``: for base
    inputs ``acc = sum_mn c_mn p_mn`` and ``z = 2 acc - mw * sum(c)``, so ``z >= t`` iff ``acc
    >= ceil((t + mw * sum(c)) / 2)``; for unsigned inputs a term is ``w ? x : ~x`` (``-x - 1``
    for a -1 weight), so ``z = acc + sum_m c_m * weight_zeros[m][j]``. Without thresholds the
    output is the accumulator.
    """
    if is_patchable(memory):
        raise FoldingError("a multi-base engine keeps its coefficients in the logic: it "
                           "cannot be built patchable")
    coefficients = [[int(c) for c in row] for row in coefficients]
    bases, k = len(coefficients), len(coefficients[0])
    total = sum(map(sum, coefficients))
    nf, sf = mh // pe, mw // simd
    levels = tree_levels(simd) + tree_levels(bases * k)
    depth = levels + 3
    if in_bits is None:
        elem_width, term = k, (0, 1)
    else:
        elem_width, term = in_bits, (-(1 << in_bits), (1 << in_bits) - 1)
    acc_bounds = (term[0] * mw * total, term[1] * mw * total)
    acc_lo, acc_hi = acc_bounds
    if thresholds is None:
        result_width, threshold_width, out_bases = range_width(*acc_bounds), 0, 1
        acc_t = None
    else:
        out_bases = len(thresholds[0])
        if in_bits is None:
            shift = [mw * total] * mh
            acc_t = [[-(-(int(t) + s) // 2) for t in row] for row, s in zip(thresholds, shift)]
        else:
            acc_t = [[int(t) - sum(c[0] * int(z[j]) for c, z in zip(coefficients, weight_zeros))
                      for t in row] for j, row in enumerate(thresholds)]
        acc_t = tuple(tuple(min(max(t, acc_lo), acc_hi + 1) for t in row) for row in acc_t)
        flat = [t for row in acc_t for t in row]
        result_width = out_bases
        threshold_width = range_width(min(-1, min(flat)), max(0, max(flat)))   # signed
    fifo_depth = max(3, math.ceil((depth + 5) / sf) + 2)
    buffer_depth = 2 << (sf - 1).bit_length()
    memories = _engine_memories(
        nf=nf, sf=sf, buffer_width=simd * elem_width, buffer_depth=buffer_depth,
        threshold_width=None if thresholds is None else pe * out_bases * threshold_width,
        weight_width=pe * bases * simd, memory=memory)
    return MatrixPlan(mh=mh, mw=mw, pe=pe, simd=simd, elem_width=elem_width,
                      result_width=result_width, nf=nf, sf=sf, cycles=nf * sf, levels=levels,
                      depth=depth, fifo_depth=fifo_depth, buffer_depth=buffer_depth,
                      acc_bounds=acc_bounds, acc_lo=acc_lo, acc_hi=acc_hi,
                      threshold_width=threshold_width, memories=tuple(memories),
                      products=bases * k, out_bases=out_bases, bases=bases,
                      acc_thresholds=acc_t)


@dataclass(frozen=True)
class WindowPlan:
    """The sizing of a :class:`~bnnhw.gateware.window.WindowGenerator`; see :func:`window_plan`.

    Rows of the input live in a ring of ``slots`` line buffers; a word is ``simd`` values of
    ``bits`` bits; a pixel is ``words`` words; the address of (slot, column, word) is those
    three fields side by side (``word_bits``, ``column_bits``, slot), so that it needs no
    multiplier.
    """
    height: int
    width: int
    channels: int
    kh: int
    kw: int
    simd: int
    bits: int
    out_height: int
    out_width: int
    words: int               # words per pixel: channels / simd
    slots: int               # rows the ring holds: 2 * kh, so that the next frame's first
                             # rows arrive while the last windows of a frame are read
    word_bits: int
    column_bits: int
    reads: int               # beats emitted per frame: out_height * out_width * kh * kw * words
    writes: int              # beats taken per frame: height * width * words
    depth: int               # pipeline cycles from a read to its beat in the output FIFO
    fifo_depth: int
    memories: tuple


def window_plan(*, height, width, channels, kh, kw, simd, bits, memory="block"):
    """Plan a sliding-window generator over ``height x width`` pixels of ``channels`` values
    (``bits`` bits each), ``kh x kw`` windows, ``simd`` values per beat (``simd`` divides
    ``channels``)."""
    words = channels // simd
    word_bits, column_bits = (words - 1).bit_length(), (width - 1).bit_length()
    slots = 2 * kh
    # Only weights go to SPRAM; a layer whose weights are there keeps its lines in block RAM.
    ring = MemoryPlan("lines", "buffer", simd * bits, slots << (word_bits + column_bits),
                      "block" if memory == "spram" or is_patchable(memory) else memory, rom=False)
    oh, ow = height - kh + 1, width - kw + 1
    return WindowPlan(height=height, width=width, channels=channels, kh=kh, kw=kw, simd=simd,
                      bits=bits, out_height=oh, out_width=ow, words=words, slots=slots,
                      word_bits=word_bits, column_bits=column_bits,
                      reads=oh * ow * kh * kw * words, writes=height * width * words, depth=2,
                      fifo_depth=4, memories=(ring,))


@dataclass(frozen=True)
class PoolPlan:
    """The sizing of a :class:`~bnnhw.gateware.pool.MaxPool`; see :func:`pool_plan`."""
    height: int
    width: int
    channels: int
    size: int
    simd: int
    bits: int
    out_height: int
    out_width: int
    words: int               # words per pixel: channels / simd
    reads: int               # beats taken per frame: height * width * words
    writes: int              # beats emitted per frame: out_height * out_width * words
    memories: tuple


def pool_plan(*, height, width, channels, size, simd, bits):
    """Plan a max-pool unit over ``height x width`` pixels of ``channels`` values, windows of
    ``size x size`` with stride ``size`` (rows and columns beyond a whole window are dropped),
    ``simd`` values per beat."""
    words = channels // simd
    oh, ow = height // size, width // size
    partial = MemoryPlan("partial", "buffer", simd * bits, ow * words, "distributed", rom=False)
    return PoolPlan(height=height, width=width, channels=channels, size=size, simd=simd,
                    bits=bits, out_height=oh, out_width=ow, words=words,
                    reads=height * width * words, writes=oh * ow * words,
                    memories=(partial,) if ow * words > 1 else ())
