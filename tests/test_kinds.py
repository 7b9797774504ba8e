# amaranth: UnusedElaboratable=no
"""The layer kind is the unit: a kind defined here, in a test, runs through everything; each
registered kind's figures equal what its gateware builds; nothing outside bnnhw/kinds branches
on a kind's name."""

import ast
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bnnhw import artifact, golden, kinds, testing
from bnnhw.gateware.ports import beat_layout
from bnnhw.gateware.top import NetworkTop, generate_verilog
from bnnhw.kinds import (BinarizeLayer, ConvLayer, DenseLayer, FirstConvLayer, FirstLayer,
                         Layer, MaxPoolLayer, MultiBaseConvLayer, MultiBaseLayer,
                         MultiBaseOutputLayer, OutputLayer)
from bnnhw.kinds.base import Figures
from bnnhw.tensor import Tensor

ROOT = Path(__file__).resolve().parents[1]


class InvertStage(wiring.Component):
    """A register stage that inverts every bit of each beat."""

    def __init__(self, width):
        super().__init__({"i": In(stream.Signature(beat_layout(width))),
                          "o": Out(stream.Signature(beat_layout(width)))})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.data.eq(~self.i.payload.data),
                         self.o.payload.last.eq(self.i.payload.last)]
        return m


@dataclass(frozen=True, eq=False)
class InvertLayer(Layer):
    """A layer kind that exists only in this test: it inverts its binary input."""
    KIND = "invert"
    FOLDING = ("simd",)

    def check(self, tensor, check):
        check(tensor.encoding == "bipolar" and tensor.bits == 1,
              f"an invert layer takes binary values, not {tensor.describe()}")
        return tensor

    def golden(self, x):
        return (1 - np.asarray(x)).astype(np.uint8)

    def logic(self, values):
        return [~v for v in values]

    def fold_dims(self):
        return {"simd": (self.input.size, "values")}

    def figures(self, fold, memory="block"):
        fold = self.check_fold(fold)
        cycles = self.input.size // fold.simd
        return Figures(kind=self.KIND, input=self.input, output=self.output, fold=fold,
                       cycles=cycles, depth=1, latency=cycles + 1, in_count=fold.simd,
                       out_count=fold.simd, logic={"stages": 1})

    def engine(self, fold, memory="block"):
        return InvertStage(self.check_fold(fold).simd)


@pytest.fixture
def invert_kind():
    kinds.register(InvertLayer)
    yield InvertLayer
    del kinds.KINDS[InvertLayer.KIND]


def _network_with_an_invert_layer():
    base = testing.random_network(np.random.default_rng(12), [9, 6, 5, 3], input_bits=4,
                                  scales=True)
    first, dense, output = base.layers
    return artifact.network(input_shape=(3, 3), input_bits=4,
                            layers=[first, InvertLayer(), dense, output])


def test_a_kind_defined_in_a_test_runs_through_everything(invert_kind, tmp_path):
    net = _network_with_an_invert_layer()
    # The network file: saved and loaded like any other kind.
    loaded = artifact.load(artifact.save(net, tmp_path / "net.npz"))
    assert [layer.kind for layer in loaded.layers] == ["first", "invert", "dense", "output"]
    # Golden: the invert layer really inverts (the dense layer sees the complement).
    x = testing.random_inputs(np.random.default_rng(3), net, 40)
    result = golden.run(loaded, x)
    first_bits = net.layers[0].golden(x)
    assert np.array_equal(result.activations[1], 1 - first_bits)
    assert np.array_equal(result.activations[2], net.layers[2].golden(1 - first_bits))
    # Verilog generation and the Amaranth simulator, under stalls, == golden.
    folding = [(2, 3), (3,), (5, 3), (3, 5)]
    top = generate_verilog(loaded, folding, tmp_path / "bnn.v")
    assert "module bnn_top" in (tmp_path / "bnn.v").read_text()
    assert [f.kind for f in top.performance.layers] == ["first", "invert", "dense", "output"]
    top = NetworkTop(loaded, folding, in_simd=3)
    received = testing.run_frames(top, x, count=3, width=4, stalls=True)
    scores, classes = testing.unpack_results(received, top.classes)
    assert np.array_equal(scores, result.scores) and np.array_equal(classes, result.classes)


def test_an_unregistered_kind_is_refused_when_saved(tmp_path):
    net = _network_with_an_invert_layer()
    with pytest.raises(artifact.ArtifactError, match=r"layers\[1\]\.kind: 'invert' is not a "
                                                     r"registered layer kind"):
        artifact.save(net, tmp_path / "net.npz")


def test_register_refuses_a_second_kind_of_the_same_name():
    @dataclass(frozen=True, eq=False)
    class Impostor(DenseLayer):
        pass
    with pytest.raises(ValueError, match=r"^layer kind 'dense' is already registered as "
                                         r"DenseLayer$"):
        kinds.register(Impostor)
    with pytest.raises(TypeError, match=r"^a layer kind must be a Layer subclass"):
        kinds.register(int)


# ---- figures == what the gateware builds --------------------------------------------------

def _layers():
    rng = np.random.default_rng(21)
    w = rng.integers(0, 2, (6, 12), dtype=np.uint8)
    first = FirstLayer(weights=w, thresholds=rng.integers(-60, 60, 6), in_bits=3)
    dense = DenseLayer(weights=w, thresholds=rng.integers(0, 14, 6))
    output = OutputLayer(weights=w, offsets=rng.integers(-3, 4, 6),
                         scales=rng.integers(1, 3, 6))
    w = rng.integers(0, 2, (12, 3, 2, 6), dtype=np.uint8)
    conv = ConvLayer(weights=w, thresholds=rng.integers(0, 38, 12)).bind(Tensor(6, 5, 4))
    first_conv = FirstConvLayer(weights=w, thresholds=rng.integers(-90, 90, 12),
                                in_bits=2).bind(Tensor(6, 4, 3, 2, "unsigned"))
    pools = [MaxPoolLayer(size=size).bind(Tensor(channels, height, width))
             for size, channels, height, width in ((2, 6, 5, 4), (3, 4, 7, 6), (2, 12, 4, 4),
                                                   (1, 2, 3, 3), (3, 8, 6, 7), (2, 6, 3, 2))]
    binarize = [BinarizeLayer(thresholds=np.array(t)).bind(Tensor(*shape, bits, "unsigned"))
                for t, shape, bits in (([0], (1, 3, 4), 8), ([3, 16, 0], (3, 2, 4), 4),
                                       ([1, 2, 3, 4, 0, 4], (6, 2, 3), 2))]
    abc_first = MultiBaseLayer(
        weights=rng.integers(0, 2, (2, 6, 12), dtype=np.uint8), coefficients=np.array([[3], [1]]),
        thresholds=rng.integers(-90, 90, (6, 3))).bind(Tensor.vector(12, 3, "unsigned"))
    abc = MultiBaseLayer(weights=rng.integers(0, 2, (3, 6, 12), dtype=np.uint8),
                         coefficients=rng.integers(1, 5, (3, 2)),
                         thresholds=rng.integers(-40, 40, (6, 2))).bind(Tensor.vector(12, 2))
    abc_output = MultiBaseOutputLayer(
        weights=rng.integers(0, 2, (2, 6, 12), dtype=np.uint8),
        coefficients=rng.integers(1, 4, (2, 3)), offsets=rng.integers(-3, 4, 6),
        scales=rng.integers(1, 3, 6)).bind(Tensor.vector(12, 3))
    w = rng.integers(0, 2, (2, 6, 2, 3, 4), dtype=np.uint8)
    abc_convs = [
        MultiBaseConvLayer(weights=w, coefficients=np.array([[2, 1], [1, 3]]),
                           thresholds=rng.integers(-60, 60, (6, 3))).bind(Tensor(4, 5, 4, 2)),
        MultiBaseConvLayer(weights=w, coefficients=np.array([[2], [1]]),
                           thresholds=rng.integers(-200, 200, (6, 2))).bind(
                               Tensor(4, 4, 5, 3, "unsigned"))]
    pools += [MaxPoolLayer(size=2).bind(Tensor(12, 4, 5, 3))]
    return ([first, dense, output, conv, first_conv] + pools + binarize
            + [abc_first, abc, abc_output] + abc_convs)


def _memories(layer, fold):
    if "pe" not in layer.FOLDING:
        return ("block",)
    return ("block", "distributed") if fold.pe == 2 else ("block",)


CASES = [(layer, fold, memory) for layer in _layers() for fold in layer.fold_candidates()
         for memory in _memories(layer, fold)]


def test_every_kind_is_covered_by_twenty_foldings():
    for kind in kinds.KINDS:
        assert sum(layer.kind == kind for layer, _, _ in CASES) >= 20, kind


@pytest.mark.parametrize("layer,fold,memory", CASES,
                         ids=[f"{layer.kind}-{fold}-{memory}" for layer, fold, memory in CASES])
def test_figures_equal_what_the_gateware_builds(layer, fold, memory):
    figures = layer.figures(fold, memory)
    stage = layer.engine(fold, memory)
    built = testing.instantiated_memories(stage)
    planned = [(m.width, m.depth) for m in figures.memories if m.instantiated]
    assert sorted(built) == sorted(planned)
    assert sum(w * d for w, d in built) == figures.memory_bits
    assert set(testing.stage_interval(stage, figures)) == {figures.cycles}


# ---- kind names outside bnnhw/kinds --------------------------------------------------------

def _kind_name_branches(path, names):
    """Lines of ``path`` that compare something with a kind's name, or look a kind up by it:
    ``x == "dense"``, ``x in ("first", "output")``, ``KINDS["dense"]``."""
    def named(node):
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(named(e) for e in node.elts)
        return False
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare) and any(map(named, [node.left, *node.comparators])):
            yield node.lineno
        elif isinstance(node, ast.Subscript) and named(node.slice) and "kind" in (
                getattr(node.value, "id", "") + getattr(node.value, "attr", "")).lower():
            yield node.lineno          # a kind looked up by name
        elif (isinstance(node, ast.Dict)
              and sum(named(k) for k in node.keys if k is not None) >= 2):
            yield node.lineno          # a table keyed by kind names


# train/model.py, train/abc.py and train/train.py speak the layer specification of `bnnhw train
# --layers` (conv:C:K, pool:P, dense:N): words of that little language, not names of kinds.
SPECIFICATION_LANGUAGE = {"train/model.py", "train/abc.py", "train/train.py"}


def test_no_code_outside_the_kinds_package_branches_on_a_kind_name():
    names = set(kinds.KINDS)
    found = []
    for folder in ("bnnhw", "train", "sim", "boards", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if "kinds" in relative.parts or relative.as_posix() in SPECIFICATION_LANGUAGE:
                continue
            found += [f"{path.relative_to(ROOT)}:{line}" for line in
                      _kind_name_branches(path, names)]
    assert not found, "\n".join(found)


def test_the_branch_finder_finds_branches(tmp_path):
    code = tmp_path / "code.py"
    code.write_text('if layer.kind == "dense":\n    pass\nx = k in ("first", "y")\n'
                    'f = KINDS["output"]\nt = {"first": 1, "dense": 2}\nok = {"output": 1}\n')
    assert list(_kind_name_branches(code, set(kinds.KINDS))) == [1, 3, 4, 5]


def test_tensors_chain_by_shape_not_position():
    # A dense layer first is refused because of what it takes, not where it stands.
    base = testing.random_network(np.random.default_rng(0), [6, 4, 3], input_bits=2)
    dense = DenseLayer(weights=np.ones((4, 6), np.uint8), thresholds=np.zeros(4, np.int64))
    with pytest.raises(artifact.ArtifactError, match=r"^<network>: layers\[0\]: a dense layer "
                                                     r"takes binary values, not 6 2-bit$"):
        artifact.network(input_shape=(6,), input_bits=2, layers=[dense, base.layers[1]])
    assert base.layers[1].input == Tensor.vector(4)
