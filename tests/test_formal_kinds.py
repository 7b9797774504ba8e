# amaranth: UnusedElaboratable=no
"""Formal checks (SymbiYosys + Yices) of the layer kinds' engines other than the binary dense
one (tests/test_formal.py): the first layer (unsigned inputs), the output layer (scores and
their argmax) and the multi-base (ABC-Net) layer, each in a miter beside its integer semantics
written out plainly here once more (DESIGN.md 2, and the docstrings of bnnhw/kinds/first.py,
output.py and abc.py). The solver picks one frame (any position), any inputs and any stalls on
both sides: every output beat of that frame equals the reference, with ``last`` on the frame's
final beat only, and no beat of a frame before its whole input went in. Weights, thresholds and
coefficients are random constants (an engine fixes them at elaboration) over two seeds, with
an extreme threshold (always 1 or never) among them. Each kind's check is also shown to catch
an engine built with one wrong constant, with a counterexample trace."""

import numpy as np
import pytest
from amaranth import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data

from bnnhw.formal import FrameTracker, drive, elements, run, solver_available, watch
from bnnhw.kinds import FirstLayer, MultiBaseLayer, OutputLayer
from bnnhw.tensor import Tensor

pytestmark = pytest.mark.skipif(not solver_available(),
                                reason="no yices-smt2: install the formal extra")


def check_stage(dut, *, fan_in, elem_width, simd, reference):
    """``dut`` (a layer's engine, ``fan_in`` input values of ``elem_width`` bits, ``simd`` per
    beat) beside ``reference(m, values)``, the list of its output beats for one input frame."""
    m = Module()
    m.submodules.dut = dut
    drive(m, dut.i)
    watch(m, dut.o)
    # A frame of one beat can go in every cycle: counters wide enough for the depth.
    tracker = FrameTracker(elements=fan_in, elem_width=elem_width, count_bits=6)
    tracker.enter(m, dut.i.valid & dut.i.ready,
                  elements(dut.i.payload.data, simd, elem_width))
    expected = reference(m, elements(tracker.frame, fan_in, elem_width))
    payload = dut.o.payload
    if isinstance(payload.shape(), data.StructLayout) and "last" in payload.shape().members:
        value, last = payload.data, payload.last
    else:
        value, last = Value.cast(payload), None          # a result beat: one per frame
    tracker.leave(m, dut.o.valid & dut.o.ready, value, expected, last=last, whole=True)
    return m


def beats(fields, per_beat):
    """Output fields grouped into beats of ``per_beat`` (field ``k`` of beat ``g`` is
    ``fields[g * per_beat + k]``)."""
    return [Cat(*fields[g:g + per_beat]) for g in range(0, len(fields), per_beat)]


def signed_sum(terms):
    """The sum of ``terms`` (Amaranth values), in signed arithmetic."""
    total = Const(0, signed(2))
    for term in terms:
        total = total + term
    return total


def wide(value):
    """An unsigned value as a signed one of a bit more (so that it can be negated)."""
    return Cat(value, Const(0, 1)).as_signed()


# -- first: y_j = sum_i (x_i if w_ji else -x_i) >= T_j, x_i unsigned --------------------------

def first_reference(weights, thresholds, pe):
    def reference(m, values):
        bits = [signed_sum(wide(x) if w else -wide(x) for x, w in zip(values, row)) >= int(t)
                for row, t in zip(weights, thresholds)]
        return beats(bits, pe)
    return reference


def random_first(rng, mh, mw, in_bits):
    weights = rng.integers(0, 2, (mh, mw), dtype=np.uint8)
    bound = mw * ((1 << in_bits) - 1)
    thresholds = rng.integers(-bound // 2, bound // 2 + 1, mh)
    thresholds[0] = rng.choice([-bound, bound + 1])       # an extreme: always 1 or never
    return weights, thresholds


def check_first(weights, thresholds, in_bits, pe, simd, *, reference=None):
    layer = FirstLayer(weights=weights, thresholds=thresholds, in_bits=in_bits)
    return check_stage(layer.engine((pe, simd)), fan_in=weights.shape[1], elem_width=in_bits,
                       simd=simd, reference=reference or first_reference(weights, thresholds,
                                                                         pe))


# Depths hold two frames' results, the first beats leaving at cycles 9 and 10. Wider inputs
# cost the solver most: with 8-bit ones, depth 20 took 5 s for one seed and more than 17
# minutes for the other.
FIRST = [(3, 4, 2, 1, 2, 20), (2, 3, 8, 2, 1, 14)]


@pytest.mark.parametrize("mh,mw,in_bits,pe,simd,depth", FIRST)
@pytest.mark.parametrize("seed", [0, 1])
def test_first_engine_equals_the_layer(mh, mw, in_bits, pe, simd, depth, seed, tmp_path):
    rng = np.random.default_rng([mh, mw, in_bits, seed])
    weights, thresholds = random_first(rng, mh, mw, in_bits)
    result = run(check_first(weights, thresholds, in_bits, pe, simd),
                 name=f"first_{mh}_{mw}_{in_bits}_{pe}_{simd}_{seed}", depth=depth,
                 directory=tmp_path)
    assert result.passed, result.describe()


def test_first_check_catches_a_wrong_weight_bit(tmp_path):
    # The engine is built with one weight bit flipped; the reference keeps the layer's.
    rng = np.random.default_rng(5)
    weights, thresholds = random_first(rng, 3, 4, 2)
    thresholds[1] = 0                   # neuron 1 depends on its weights (not an extreme)
    wrong = weights.copy()
    wrong[1, 2] ^= 1
    result = run(check_first(wrong, thresholds, 2, 1, 2,
                             reference=first_reference(weights, thresholds, 1)),
                 name="first_broken", depth=20, directory=tmp_path)
    assert result.status == "fail", result.describe()
    assert result.trace is not None and "$enddefinitions" in result.trace.read_text()


# -- output: score_c = scale_c * (2 p_c - N) + offset_c, p_c = popcount(XNOR(x, w_c));
#    the class is the first of the largest score ------------------------------------------------

def output_reference(weights, scales, offsets, score_width, cls_width):
    def reference(m, values):
        n = len(values)
        scores = []
        for row, scale, offset in zip(weights, scales, offsets):
            p = signed_sum((x if w else ~x) for x, w in zip(values, row))
            score = Signal(signed(score_width), name=f"score{len(scores)}")
            scores.append(score)
            m.d.comb += score.eq(int(scale) * (2 * p - n) + int(offset))
        cls, best = Const(0, cls_width), scores[0]
        for c, score in enumerate(scores[1:], start=1):
            better = score > best                   # ties keep the lower class
            cls, best = Mux(better, c, cls), Mux(better, score, best)
        expected_cls = Signal(cls_width, name="expected_class")
        m.d.comb += expected_cls.eq(cls)
        return [Cat(expected_cls, *scores)]
    return reference


def random_output(rng, classes, mw, scaled):
    weights = rng.integers(0, 2, (classes, mw), dtype=np.uint8)
    offsets = rng.integers(-3, 4, classes)
    scales = rng.integers(1, 4, classes) if scaled else np.ones(classes, np.int64)
    return weights, scales, offsets


def check_output(weights, scales, offsets, pe, simd, *, reference_weights=None):
    layer = OutputLayer(weights=weights, offsets=offsets, scales=scales)
    dut = layer.engine((pe, simd))
    argmax = dut.stages[-1]
    reference = output_reference(weights if reference_weights is None else reference_weights,
                                 scales, offsets, argmax.score_width, argmax.cls_width)
    return check_stage(dut, fan_in=weights.shape[1], elem_width=1, simd=simd,
                       reference=reference)


# Results leave every 4-5 cycles, the first at cycle 15-16: depth 24 holds two of them.
OUTPUTS = [(3, 3, 3, 3, False), (2, 4, 1, 2, True)]


@pytest.mark.parametrize("classes,mw,pe,simd,scaled", OUTPUTS)
@pytest.mark.parametrize("seed", [0, 1])
def test_output_engine_equals_the_layer(classes, mw, pe, simd, scaled, seed, tmp_path):
    rng = np.random.default_rng([classes, mw, seed])
    result = run(check_output(*random_output(rng, classes, mw, scaled), pe, simd),
                 name=f"output_{classes}_{mw}_{pe}_{simd}_{seed}", depth=24,
                 directory=tmp_path)
    assert result.passed, result.describe()


def test_output_check_catches_a_wrong_weight_bit(tmp_path):
    rng = np.random.default_rng(5)
    weights, scales, offsets = random_output(rng, 3, 3, False)
    wrong = weights.copy()
    wrong[2, 0] ^= 1
    result = run(check_output(wrong, scales, offsets, 3, 3, reference_weights=weights),
                 name="output_broken", depth=24, directory=tmp_path)
    assert result.status == "fail", result.describe()
    assert result.trace is not None and "$enddefinitions" in result.trace.read_text()


# -- abc: z_j = sum_m sum_n c_mn d_mnj; bit b of output j is z_j >= thresholds[j, b] ----------
#    bipolar inputs (K bases, bit n of a value is base n): d_mnj = 2 popcount(XNOR(x_n, B_mj)) - F
#    unsigned inputs (K = 1): d_mj = sum_i (x_i if B_mji else -x_i)

def abc_reference(weights, coefficients, thresholds, pe, in_bits):
    bases, out, width = weights.shape
    unsigned = in_bits is not None
    bound = z_bound(weights, coefficients, in_bits)

    def reference(m, values):
        fields = []
        for j in range(out):
            total = Const(0, signed(2))
            for base in range(bases):
                row = weights[base, j]
                if unsigned:
                    d = signed_sum(wide(x) if w else -wide(x) for x, w in zip(values, row))
                    total = total + int(coefficients[base, 0]) * d
                    continue
                for n in range(coefficients.shape[1]):
                    p = signed_sum((x[n] if w else ~x[n]) for x, w in zip(values, row))
                    total = total + int(coefficients[base, n]) * (2 * p - width)
            z = Signal(range(-bound, bound + 1), name=f"z{j}")
            m.d.comb += z.eq(total)
            fields.append(Cat(*(z >= int(t) for t in thresholds[j])))
        return beats(fields, pe)
    return reference


def z_bound(weights, coefficients, in_bits):
    """The largest |z|: F * (2**in_bits - 1 for unsigned values, 1 for bases) * sum(c)."""
    value = 1 if in_bits is None else (1 << in_bits) - 1
    return weights.shape[2] * value * int(coefficients.sum())


def random_abc(rng, *, bases, k, out_bases, mh, mw, in_bits=None):
    weights = rng.integers(0, 2, (bases, mh, mw), dtype=np.uint8)
    coefficients = rng.integers(1, 5, (bases, k))
    bound = z_bound(weights, coefficients, in_bits)
    thresholds = rng.integers(-bound // 2, bound // 2 + 1, (mh, out_bases))
    thresholds[0, 0] = rng.choice([-bound, bound + 1])    # an extreme: always 1 or never
    return weights, coefficients, thresholds


def check_abc(weights, coefficients, thresholds, pe, simd, *, in_bits=None,
              reference_coefficients=None):
    layer = MultiBaseLayer(weights=weights, coefficients=coefficients, thresholds=thresholds)
    if in_bits is not None:
        layer = layer.bind(Tensor.vector(weights.shape[2], bits=in_bits, encoding="unsigned"))
    reference = abc_reference(
        weights, coefficients if reference_coefficients is None else reference_coefficients,
        thresholds, pe, in_bits)
    return check_stage(layer.engine((pe, simd)), fan_in=weights.shape[2],
                       elem_width=coefficients.shape[1] if in_bits is None else in_bits,
                       simd=simd, reference=reference)


# (M weight bases, K input bases, N output bases, MH, MW, pe, simd, in_bits for unsigned inputs);
# a frame's beats leave from cycle 9-10 on, one every cycle or two: depth 16 holds two frames.
ABC = [(2, 2, 2, 2, 3, 1, 3, None), (2, 1, 3, 2, 2, 2, 1, 2)]


@pytest.mark.parametrize("bases,k,out_bases,mh,mw,pe,simd,in_bits", ABC)
@pytest.mark.parametrize("seed", [0, 1])
def test_abc_engine_equals_the_layer(bases, k, out_bases, mh, mw, pe, simd, in_bits, seed,
                                     tmp_path):
    rng = np.random.default_rng([bases, k, out_bases, mh, mw, seed])
    weights, coefficients, thresholds = random_abc(rng, bases=bases, k=k, out_bases=out_bases,
                                                   mh=mh, mw=mw, in_bits=in_bits)
    result = run(check_abc(weights, coefficients, thresholds, pe, simd, in_bits=in_bits),
                 name=f"abc_{bases}_{k}_{out_bases}_{mh}_{mw}_{pe}_{simd}_{seed}", depth=16,
                 directory=tmp_path)
    assert result.passed, result.describe()


def test_abc_check_catches_a_wrong_coefficient(tmp_path):
    # The engine is built with coefficient c_01 one larger than the layer's.
    rng = np.random.default_rng(5)
    weights, coefficients, thresholds = random_abc(rng, bases=2, k=2, out_bases=2, mh=2, mw=3)
    thresholds[:] = 0
    wrong = coefficients.copy()
    wrong[0, 1] += 1
    result = run(check_abc(weights, wrong, thresholds, 1, 3,
                           reference_coefficients=coefficients),
                 name="abc_broken", depth=16, directory=tmp_path)
    assert result.status == "fail", result.describe()
    assert result.trace is not None and "$enddefinitions" in result.trace.read_text()
