# amaranth: UnusedElaboratable=no
"""Formal checks (SymbiYosys + Yices) of the stream components: the stream contract on every
output, elements neither invented, lost, duplicated nor reordered, bounded liveness, and the
matrix engine bit-exact against the layer's integer semantics written out plainly here. Each
kind of check is also shown to catch a deliberately broken component, with a counterexample
trace."""

import math

import numpy as np
import pytest
from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Assert, Assume
from amaranth.lib import wiring

from bnnhw.formal import (Tracker, bounded_liveness, drive, elements, run, solver_available,
                          watch)
from bnnhw.gateware.engine import MatrixEngine
from bnnhw.gateware.fifo import CreditFIFO
from bnnhw.gateware.glue import WidthConverter

pytestmark = pytest.mark.skipif(not solver_available(),
                                reason="no yices-smt2: install the formal extra")


def check_converter(a, b, w, *, live=False, dut=None):
    m = Module()
    dut = m.submodules.dut = dut or WidthConverter(elem_width=w, in_count=a, out_count=b)
    drive(m, dut.i, valid=1 if live else None)
    watch(m, dut.o, ready=1 if live else None)
    i_fire, o_fire = dut.i.valid & dut.i.ready, dut.o.valid & dut.o.ready
    tracker = Tracker(elem_width=w)
    tracker.enter(m, i_fire, elements(dut.i.payload.data, a, w))
    tracker.leave(m, o_fire, elements(dut.o.payload.data, b, w))
    # Frames of `frame` elements: the environment marks each frame's last input beat; the
    # converter must mark the output beat holding a frame's last element, and no other.
    frame = 2 * math.lcm(a, b)
    with m.If(i_fire):
        m.d.comb += Assume(dut.i.payload.last == ((tracker.entered + a) % frame == 0))
    with m.If(o_fire):
        m.d.comb += Assert(dut.o.payload.last == ((tracker.left + b) % frame == 0))
    if live:
        bounded_liveness(m, o_fire, within=math.lcm(a, b) // a + 2)
    return m


@pytest.mark.parametrize("a,b", [(2, 4), (4, 2), (2, 3), (3, 3)])
def test_width_converter(a, b, tmp_path):
    result = run(check_converter(a, b, 2), name=f"converter_{a}_{b}", depth=12,
                 directory=tmp_path)
    assert result.passed, result.describe()


def test_width_converter_liveness(tmp_path):
    result = run(check_converter(2, 3, 1, live=True), name="converter_live", depth=14,
                 directory=tmp_path)
    assert result.passed, result.describe()


class Broken(wiring.Component):
    """A width converter broken on its output, for the checks to catch: ``"flicker"`` drops
    ``valid`` for the cycle after each wait (the stream contract), ``"swap"`` exchanges the
    first two elements of every beat (order), ``"stuck"`` stops after the first beat
    (liveness)."""

    def __init__(self, fault, **options):
        self.fault, self.inner = fault, WidthConverter(**options)
        super().__init__(self.inner.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        wiring.connect(m, wiring.flipped(self.i), inner.i)
        data = inner.o.payload.data
        block = Signal()
        if self.fault == "flicker":
            m.d.sync += block.eq(self.o.valid & ~self.o.ready)
        elif self.fault == "stuck":
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += block.eq(1)
        elif self.fault == "swap":
            w = self.inner.elem_width
            data = Cat(data[w:2 * w], data[:w], data[2 * w:])
        m.d.comb += [self.o.payload.data.eq(data), self.o.payload.last.eq(inner.o.payload.last),
                     self.o.valid.eq(inner.o.valid & ~block),
                     inner.o.ready.eq(self.o.ready & ~block)]
        return m


@pytest.mark.parametrize("fault,live", [("flicker", False), ("swap", False), ("stuck", True)])
def test_checks_catch_a_broken_converter(fault, live, tmp_path):
    broken = Broken(fault, elem_width=1, in_count=2, out_count=4)
    result = run(check_converter(2, 4, 1, live=live, dut=broken), name=fault, depth=12,
                 directory=tmp_path)
    assert result.status == "fail", result.describe()
    # A counterexample a person can open in GTKWave.
    assert result.trace is not None and "$enddefinitions" in result.trace.read_text()


def check_fifo(width, depth, *, live=False, dut=None):
    m = Module()
    dut = m.submodules.dut = dut or CreditFIFO(width=width, depth=depth)
    held = Signal(range(depth + 2))
    o_fire = dut.o.valid & dut.o.ready
    # The writer: any data, a write whenever it likes (or, for liveness, whenever it holds a
    # credit).
    write = Signal()
    m.d.comb += [dut.w_en.eq(write), dut.w_data.eq(AnySeq(width)),
                 write.eq(held < depth if live else AnySeq(1))]
    # The writer holds a credit per entry: never more than `depth` entries outstanding.
    m.d.comb += Assume(~write | (held - o_fire < depth))
    m.d.sync += held.eq(held + write - o_fire)
    watch(m, dut.o, ready=1 if live else None)
    tracker = Tracker(elem_width=width)
    tracker.enter(m, write, [dut.w_data])
    tracker.leave(m, o_fire, [dut.o.payload])
    if live:
        bounded_liveness(m, o_fire, within=3)
    return m


@pytest.mark.parametrize("depth", [1, 3])
def test_credit_fifo(depth, tmp_path):
    result = run(check_fifo(3, depth), name=f"fifo_{depth}", depth=12, directory=tmp_path)
    assert result.passed, result.describe()
    live = run(check_fifo(3, depth, live=True), name=f"fifo_live_{depth}", depth=12,
               directory=tmp_path)
    assert live.passed, live.describe()


def check_engine(weights, thresholds, pe, simd, *, reference_thresholds=None):
    """The engine beside the layer's semantics written plainly: output bit ``j`` of a frame
    is ``popcount(XNOR(x, w_j)) >= T_j``. The solver picks one frame (any position) and any
    inputs and stalls; every output beat of that frame must equal the reference."""
    mh, mw = weights.shape
    nf, sf = mh // pe, mw // simd
    reference_thresholds = thresholds if reference_thresholds is None else reference_thresholds
    m = Module()
    dut = m.submodules.dut = MatrixEngine(weights=weights, pe=pe, simd=simd,
                                          thresholds=thresholds)
    drive(m, dut.i)
    watch(m, dut.o)
    i_fire, o_fire = dut.i.valid & dut.i.ready, dut.o.valid & dut.o.ready
    frame = AnyConst(3)
    in_beat, in_frame = Signal(range(sf)), Signal(5)
    out_beat, out_frame = Signal(range(nf)), Signal(5)
    x = Signal(mw)
    with m.If(i_fire):
        with m.If(in_beat == sf - 1):
            m.d.sync += [in_beat.eq(0), in_frame.eq(in_frame + 1)]
        with m.Else():
            m.d.sync += in_beat.eq(in_beat + 1)
        with m.If(in_frame == frame):
            for k in range(sf):
                with m.If(in_beat == k):
                    m.d.sync += x[k * simd:(k + 1) * simd].eq(dut.i.payload.data)
    with m.If(o_fire):
        with m.If(out_beat == nf - 1):
            m.d.sync += [out_beat.eq(0), out_frame.eq(out_frame + 1)]
        with m.Else():
            m.d.sync += out_beat.eq(out_beat + 1)
    expected = [popcount_at_least(x, weights[j], int(reference_thresholds[j]))
                for j in range(mh)]
    with m.If(o_fire & (out_frame == frame)):
        m.d.comb += Assert(in_frame > frame)        # the whole frame went in before
        for g in range(nf):
            with m.If(out_beat == g):
                m.d.comb += Assert(dut.o.payload.data == Cat(*expected[g * pe:(g + 1) * pe]))
    # Never a result beat of a frame that has not fully gone in.
    m.d.comb += Assert((out_frame < in_frame) | ~dut.o.valid)
    return m


def popcount_at_least(x, w, threshold):
    agree = [x[i] if w[i] else ~x[i] for i in range(len(w))]
    total = Const(0, range(len(w) + 1))
    for bit in agree:
        total = total + bit
    return total >= threshold


ENGINES = [(4, 6, 2, 3), (3, 4, 3, 2), (2, 5, 1, 5)]


@pytest.mark.parametrize("mh,mw,pe,simd", ENGINES)
@pytest.mark.parametrize("seed", [0, 1])
def test_matrix_engine_equals_the_layer(mh, mw, pe, simd, seed, tmp_path):
    rng = np.random.default_rng([mh, mw, seed])
    weights = rng.integers(0, 2, (mh, mw), dtype=np.uint8)
    thresholds = rng.integers(0, mw + 2, mh)
    thresholds[0] = 0 if seed else mw + 1        # the extremes: always 1, always 0
    result = run(check_engine(weights, thresholds, pe, simd),
                 name=f"engine_{mh}_{mw}_{pe}_{simd}_{seed}", depth=16, directory=tmp_path)
    assert result.passed, result.describe()


def test_miter_catches_a_flipped_threshold(tmp_path):
    rng = np.random.default_rng(7)
    weights = rng.integers(0, 2, (4, 6), dtype=np.uint8)
    thresholds = np.array([2, 3, 4, 5])
    wrong = thresholds.copy()
    wrong[2] += 1
    result = run(check_engine(weights, wrong, 2, 3, reference_thresholds=thresholds),
                 name="engine_broken", depth=16, directory=tmp_path)
    assert result.status == "fail"
    assert result.trace is not None and result.trace.is_file()


def test_prove_mode_closes_by_induction(tmp_path):
    # A wrapping counter: induction at depth 12 covers every length of run, not only 12.
    from amaranth import Mux
    m = Module()
    count = Signal(4)
    m.d.sync += count.eq(Mux(count == 9, 0, count + 1))
    m.d.comb += Assert(count < 10)
    result = run(m, name="counter", depth=12, mode="prove", directory=tmp_path)
    assert result.passed and result.mode == "prove", result.describe()


def check_window(height, width, channels, k, simd, bits):
    """The window generator's output frame: for each window (top-left corner in raster
    order), values in (ky, kx, channel) order, from input pixel (y + ky, x + kx)."""
    from bnnhw.formal import FrameTracker
    from bnnhw.gateware.window import WindowGenerator
    m = Module()
    dut = m.submodules.dut = WindowGenerator(height=height, width=width, channels=channels,
                                             kh=k, kw=k, simd=simd, bits=bits)
    drive(m, dut.i)
    watch(m, dut.o)
    tracker = FrameTracker(elements=height * width * channels, elem_width=bits)
    tracker.enter(m, dut.i.valid & dut.i.ready, elements(dut.i.payload.data, simd, bits))
    source = [((y + ky) * width + x + kx) * channels + c
              for y in range(height - k + 1) for x in range(width - k + 1)
              for ky in range(k) for kx in range(k) for c in range(channels)]
    values = elements(tracker.frame, height * width * channels, bits)
    expected = [Cat(*(values[s] for s in source[b * simd:(b + 1) * simd]))
                for b in range(len(source) // simd)]
    tracker.leave(m, dut.o.valid & dut.o.ready, dut.o.payload.data, expected,
                  last=dut.o.payload.last)
    return m


def check_pool(height, width, channels, size, simd):
    """Max-pool of bits: each output bit is the OR of its window's input bits."""
    from bnnhw.formal import FrameTracker
    from bnnhw.gateware.pool import MaxPool
    m = Module()
    dut = m.submodules.dut = MaxPool(height=height, width=width, channels=channels, size=size,
                                     simd=simd)
    drive(m, dut.i)
    watch(m, dut.o)
    tracker = FrameTracker(elements=height * width * channels, elem_width=1)
    tracker.enter(m, dut.i.valid & dut.i.ready, elements(dut.i.payload.data, simd, 1))
    bits = elements(tracker.frame, height * width * channels, 1)
    pooled = []
    for y in range(height // size):
        for x in range(width // size):
            for c in range(channels):
                window = [bits[((y * size + dy) * width + x * size + dx) * channels + c]
                          for dy in range(size) for dx in range(size)]
                pooled.append(Cat(*window).any())
    expected = [Cat(*pooled[b * simd:(b + 1) * simd]) for b in range(len(pooled) // simd)]
    tracker.leave(m, dut.o.valid & dut.o.ready, dut.o.payload.data, expected,
                  last=dut.o.payload.last)
    return m


# Depths cover a whole frame in and out (the solver may also stall, so later frames too).
@pytest.mark.parametrize("height,width,channels,k,simd,bits,depth",
                         [(2, 3, 1, 2, 1, 1, 18), (3, 3, 1, 2, 1, 2, 14)])
def test_window_generator(height, width, channels, k, simd, bits, depth, tmp_path):
    result = run(check_window(height, width, channels, k, simd, bits),
                 name=f"window_{height}_{width}_{channels}_{k}_{simd}_{bits}", depth=depth,
                 directory=tmp_path)
    assert result.passed, result.describe()


@pytest.mark.parametrize("height,width,channels,size,simd",
                         [(2, 4, 1, 2, 1), (3, 3, 2, 3, 2)])
def test_max_pool(height, width, channels, size, simd, tmp_path):
    result = run(check_pool(height, width, channels, size, simd),
                 name=f"pool_{height}_{width}_{channels}_{size}_{simd}", depth=14,
                 directory=tmp_path)
    assert result.passed, result.describe()


def check_argmax(scales, offsets, fan_in, lanes, *, reference_offsets=None):
    """Scores ``scale * (2p - N) + offset`` and the first class of the largest score."""
    reference_offsets = offsets if reference_offsets is None else reference_offsets
    from amaranth import signed
    from bnnhw.formal import FrameTracker
    from bnnhw.gateware.argmax import ArgmaxUnit
    pop_width = fan_in.bit_length()
    classes = len(scales)
    m = Module()
    dut = m.submodules.dut = ArgmaxUnit(scales=scales, offsets=offsets, fan_in=fan_in,
                                        lanes=lanes, pop_width=pop_width)
    drive(m, dut.i)
    watch(m, dut.o)
    # Popcounts are at most N: the engine before it never gives more.
    with m.If(dut.i.valid):
        for p in elements(dut.i.payload.data, lanes, pop_width):
            m.d.comb += Assume(p <= fan_in)
    tracker = FrameTracker(elements=classes, elem_width=pop_width)
    tracker.enter(m, dut.i.valid & dut.i.ready, elements(dut.i.payload.data, lanes, pop_width))
    pops = elements(tracker.frame, classes, pop_width)
    scores = [Signal(signed(dut.score_width), name=f"score{c}") for c in range(classes)]
    for c in range(classes):
        count = Cat(pops[c], Const(0, 1)).as_signed()        # signed arithmetic throughout
        m.d.comb += scores[c].eq(scales[c] * (2 * count - fan_in) + reference_offsets[c])
    best = Const(0, range(classes))
    for c in range(classes - 1, -1, -1):
        # Class c wins if no class before it scores as much and none after it more.
        wins = Const(1)
        for d in range(classes):
            if d < c:
                wins = wins & (scores[d] < scores[c])
            elif d > c:
                wins = wins & (scores[d] <= scores[c])
        best = Mux(wins, c, best)
    cls = Signal(dut.cls_width, name="expected_class")
    m.d.comb += cls.eq(best)
    expected = Cat(cls, *scores)
    tracker.leave(m, dut.o.valid & dut.o.ready, Value.cast(dut.o.payload), [expected])
    return m


@pytest.mark.parametrize("scales,offsets,fan_in,lanes",
                         [([1, 1, 1], [0, 0, 0], 3, 1), ([2, 1, 3, 1], [1, -2, 0, 3], 5, 2)])
def test_argmax(scales, offsets, fan_in, lanes, tmp_path):
    result = run(check_argmax(scales, offsets, fan_in, lanes),
                 name=f"argmax_{len(scales)}_{lanes}", depth=16, directory=tmp_path)
    assert result.passed, result.describe()


def test_reference_check_catches_a_wrong_offset(tmp_path):
    # An argmax unit built with one class's offset off by one: a tie now goes the other way.
    result = run(check_argmax([1, 1, 1], [0, 1, 0], 3, 1, reference_offsets=[0, 0, 0]),
                 name="argmax_broken", depth=16, directory=tmp_path)
    assert result.status == "fail"
    assert result.trace is not None and result.trace.is_file()
