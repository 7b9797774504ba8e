"""`bnnhw import`: QONNX graphs folded into kinds, checked against the QONNX executor; broken or
unsupported graphs refused with one line and nothing written."""

import json
import re
import warnings

import numpy as np
import pytest

pytest.importorskip("qonnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from bnnhw import artifact, cli  # noqa: E402
from bnnhw.importer import ImportRefused, import_model  # noqa: E402
from bnnhw.importer.agree import agree  # noqa: E402

QONNX = "qonnx.custom_op.general"


class Graph:
    """A small ONNX graph built node by node: ``add`` appends a node on the current tensor."""

    def __init__(self, shape):
        self.nodes, self.inits, self.shape = [], [], list(shape)
        self.inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.shape)]
        self.current, self.count = "x", 0

    def const(self, value):
        self.count += 1
        name = f"c{self.count}"
        value = np.asarray(value)
        value = value if value.dtype == np.int64 else value.astype(np.float32)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def add(self, op, *constants, domain="", data=None, outputs=1, **attrs):
        self.count += 1
        out = [f"t{self.count}_{k}" for k in range(outputs)]
        inputs = [self.current if data is None else data] + [
            c if isinstance(c, str) else self.const(c) for c in constants]
        self.nodes.append(helper.make_node(op, inputs, out, name=f"{op}_{self.count}",
                                           domain=domain, **attrs))
        self.current = out[0]
        return out

    def bipolar(self, scale=1.0):
        return self.add("BipolarQuant", np.float32(scale), domain=QONNX)

    def save(self, path, output=None):
        output = output or self.current
        classes = self.nodes[-1].op_type in ("ArgMax", "TopK") and output != \
            self.nodes[-1].output[0] or self.nodes[-1].op_type == "ArgMax"
        elem = TensorProto.INT64 if classes else TensorProto.FLOAT
        graph = helper.make_graph(self.nodes, "g", self.inputs,
                                  [helper.make_tensor_value_info(output, elem, None)],
                                  initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                        helper.make_opsetid(QONNX, 1)])
        model.ir_version = 8
        path.write_bytes(model.SerializeToString())
        return path


def _signs(rng, shape, scale=1.0):
    return (np.where(rng.integers(0, 2, shape) == 1, 1.0, -1.0) * scale).astype(np.float32)


def _batchnorm(g, rng, n, *, zero_gamma=True, shape=None):
    gamma = rng.uniform(-1.5, 1.5, n)
    gamma[0] = -abs(gamma[0]) - 0.2                        # a flipped neuron for sure
    if zero_gamma:
        gamma[1] = 0.0
    mean = rng.uniform(-3, 3, n)
    g.add("BatchNormalization", gamma, rng.uniform(-1, 1, n), mean, rng.uniform(0.5, 4, n),
          epsilon=1e-5)
    return gamma


def tfc_graph(tmp_path, seed=0, final="argmax"):
    """A TFC-shaped graph as Brevitas exports it: 2x-1, BipolarQuant, MatMul, BatchNorm."""
    rng = np.random.default_rng(seed)
    g = Graph([1, 1, 4, 4])
    g.add("Reshape", np.array([1, -1], np.int64))
    g.add("Mul", np.float32(2.0))
    g.add("Sub", np.float32(1.0))
    g.bipolar()
    w1 = _signs(rng, (16, 12))
    g.add("MatMul", w1)
    gamma = _batchnorm(g, rng, 12)
    g.bipolar()
    g.add("Gemm", _signs(rng, (7, 12)), transB=1)
    g.add("BatchNormalization", rng.uniform(0.5, 2, 7), rng.uniform(-1, 1, 7),
          rng.uniform(-2, 2, 7), rng.uniform(0.5, 2, 7))
    g.bipolar()
    g.add("MatMul", _signs(rng, (7, 5)))
    g.add("Sub", np.float32(0.3))
    g.add("Div", np.float32(0.77))
    g.add("Mul", np.float32(1.3))
    g.add("Add", np.float32(-0.1))
    if final == "argmax":
        g.add("ArgMax", axis=1, keepdims=1)
    elif final == "topk":
        g.add("TopK", np.array([1], np.int64), outputs=2)
        return g.save(tmp_path / "tfc.onnx", output=g.nodes[-1].output[1]), w1, gamma
    return g.save(tmp_path / "tfc.onnx"), w1, gamma


def _agrees(imported, frames=300, seed=1):
    net = imported.network
    u = np.random.default_rng(seed).integers(0, net.input.limit, (frames, net.input_size))
    result = agree(imported, u)
    assert result.agreeing == frames
    for row in result.layer_bits:
        assert row["agreeing"] == row["bits"], row
    return result


@pytest.mark.parametrize("final", ["argmax", "topk", "none"])
def test_tfc_graph_imports_exactly(tmp_path, final):
    path, w1, gamma = tfc_graph(tmp_path, final=final)
    imported = import_model(path)
    net = imported.network
    assert [layer.kind for layer in net.layers] == ["binarize", "dense", "dense", "output"]
    # sign(2 u / 255 - 1) >= 0 from u = 128 up.
    assert net.layers[0].thresholds.tolist() == [128]
    dense = net.layers[1]
    # Negative gamma: the neuron's row is stored inverted; zero gamma: a constant neuron.
    assert dense.weights[0].tolist() == (w1[:, 0] < 0).astype(int).tolist()
    assert dense.weights[2].tolist() == (w1[:, 2] > 0).astype(int).tolist() or gamma[2] < 0
    assert dense.thresholds[1] in (0, 17)
    # Scalar scales and offsets after the last MatMul fold away.
    out = net.layers[-1]
    assert out.scales.tolist() == [1] * 5 and out.offsets.tolist() == [0] * 5
    assert imported.classes_output == (final != "none")
    _agrees(imported)


def test_finn_multithreshold_graph_imports_exactly(tmp_path):
    rng = np.random.default_rng(3)
    g = Graph([1, 9])
    # A standalone Thresholding node on the pixels, then streamlined layers.
    g.add("MultiThreshold", np.full((1, 1), 0.3, np.float32), domain=QONNX, out_dtype="BIPOLAR",
          out_scale=2.0, out_bias=-1.0)
    g.add("MatMul", _signs(rng, (9, 6)))
    g.add("MultiThreshold", rng.integers(-4, 5, (6, 1)).astype(np.float32) + 0.5, domain=QONNX,
          out_dtype="BIPOLAR", out_scale=2.0, out_bias=-1.0)
    g.add("MatMul", _signs(rng, (6, 4)))
    g.add("TopK", np.array([1], np.int64), outputs=2)
    path = g.save(tmp_path / "mt.onnx", output=g.nodes[-1].output[1])
    imported = import_model(path, input_bits=4, divisor=15)
    assert [layer.kind for layer in imported.network.layers] == ["binarize", "dense", "output"]
    # x = u / 15 >= 0.3 from u = 5 (0.3 * 15 = 4.5), for each of the 9 input channels.
    assert imported.network.layers[0].thresholds.tolist() == [5] * 9
    _agrees(imported, frames=200)


def test_unsigned_one_bit_activations_and_gemm_bias_import_exactly(tmp_path):
    rng = np.random.default_rng(4)
    g = Graph([1, 10])
    # {0, 1} activations (an unsigned 1-bit Quant) feeding a Gemm with a per-class bias.
    g.add("Quant", np.float32(1.0), np.float32(0), np.float32(1), domain=QONNX, signed=0,
          narrow=0, rounding_mode="ROUND")
    g.add("Gemm", _signs(rng, (10, 8), 0.5), rng.uniform(-1, 1, 8).astype(np.float32))
    g.add("Add", rng.uniform(-1, 1, 8).astype(np.float32))
    g.add("Quant", np.float32(1.0), np.float32(0), np.float32(1), domain=QONNX, signed=0,
          narrow=0, rounding_mode="ROUND")
    g.add("Gemm", _signs(rng, (8, 3), 0.25), np.array([0.25, -0.5, 0.75], np.float32))
    imported = import_model(g.save(tmp_path / "q.onnx"), input_bits=2, divisor=3)
    net = imported.network
    assert [layer.kind for layer in net.layers] == ["binarize", "dense", "output"]
    # Per-class biases in whole score steps become integer offsets.
    assert net.layers[-1].offsets.tolist() != [0, 0, 0]
    _agrees(imported, frames=200)


def cnv_graph(tmp_path, seed=5):
    rng = np.random.default_rng(seed)
    g = Graph([1, 2, 8, 8])
    # An 8-bit input Quant that keeps every pixel, then a first convolution on the pixels.
    g.add("Quant", np.float32(1 / 255), np.float32(0), np.float32(8), domain=QONNX, signed=0,
          narrow=0, rounding_mode="ROUND")
    g.add("Conv", _signs(rng, (4, 2, 3, 3)))
    g.add("Mul", rng.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32))
    g.add("Add", rng.uniform(-1, 1, (1, 4, 1, 1)).astype(np.float32))
    g.bipolar()
    g.add("MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    g.add("Conv", _signs(rng, (6, 4, 2, 2), 0.5))
    _batchnorm(g, rng, 6, zero_gamma=False)
    g.bipolar()
    g.add("Flatten", axis=1)
    g.add("MatMul", _signs(rng, (24, 5)))
    return g.save(tmp_path / "cnv.onnx")


def test_convolutional_graph_imports_exactly(tmp_path):
    imported = import_model(cnv_graph(tmp_path))
    net = imported.network
    assert [layer.kind for layer in net.layers] == ["first_conv", "maxpool", "conv", "output"]
    assert net.layers[2].output.shape == (6, 2, 2)
    _agrees(imported, frames=100)


def test_brevitas_model_imports_exactly(tmp_path):
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        brevitas_nn = pytest.importorskip("brevitas.nn")
        from brevitas.export import export_qonnx
        from brevitas.quant import SignedBinaryActPerTensorConst as Act
        from brevitas.quant import SignedBinaryWeightPerTensorConst

    class Weight(SignedBinaryWeightPerTensorConst):
        scaling_const = 1.0

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), brevitas_nn.QuantIdentity(act_quant=Act),
        brevitas_nn.QuantLinear(16, 12, bias=False, weight_quant=Weight),
        torch.nn.BatchNorm1d(12), brevitas_nn.QuantIdentity(act_quant=Act),
        brevitas_nn.QuantLinear(12, 4, bias=False, weight_quant=Weight))
    with torch.no_grad():
        bn = model[3]
        bn.running_mean.uniform_(-3, 3)
        bn.running_var.uniform_(0.5, 3)
        bn.weight.uniform_(-1, 1)
        bn.bias.uniform_(-1, 1)
    model.eval()
    path = tmp_path / "brevitas.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.set_num_threads(1)
        export_qonnx(model, torch.rand(1, 1, 4, 4), export_path=str(path))
    imported = import_model(path, input_bits=4, divisor=1)
    # x = u, then sign: u >= 0 always, so the binarize threshold is 0.
    assert [layer.kind for layer in imported.network.layers] == ["binarize", "dense", "output"]
    assert imported.network.layers[0].thresholds.tolist() == [0]
    _agrees(imported, frames=200)
    # Torch itself agrees with the golden model on those classes.
    u = np.random.default_rng(1).integers(0, 16, (200, 16))
    from bnnhw import golden
    with torch.no_grad():
        scores = model(torch.tensor(u, dtype=torch.float32).reshape(-1, 1, 4, 4)).numpy()
    assert np.array_equal(np.argmax(scores, axis=1), golden.run(imported.network, u).classes)


def test_command_writes_the_network_and_reports_agreement(tmp_path, capsys):
    path, _, _ = tfc_graph(tmp_path)
    out = tmp_path / "net.npz"
    assert cli.main(["import", str(path), "-o", str(out), "--count", "50", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["command"] == "import" and doc["frames"] == 50 and doc["agreeing"] == 50
    assert [layer["kind"] for layer in doc["layers"]] == ["binarize", "dense", "dense", "output"]
    assert doc["dataset"] == "random" and doc["differences"] == []
    net = artifact.load(out)
    assert net.provenance["source"] == "bnnhw import"
    assert cli.main(["import", str(path), "-o", str(out), "--count", "20"]) == 0
    text = capsys.readouterr().out
    assert "classes agree on 20 of 20 (100.00%)" in text


def test_command_checks_on_a_named_dataset(tmp_path, capsys):
    rng = np.random.default_rng(9)
    g = Graph([1, 1, 8, 8])
    g.add("Flatten", axis=1)
    g.add("Mul", np.float32(2.0))
    g.add("Sub", np.float32(1.0))
    g.bipolar()
    g.add("MatMul", _signs(rng, (64, 16)))
    _batchnorm(g, rng, 16)
    g.bipolar()
    g.add("MatMul", _signs(rng, (16, 10)))
    path = g.save(tmp_path / "digits.onnx")
    out = tmp_path / "net.npz"
    assert cli.main(["import", str(path), "-o", str(out), "--dataset", "digits",
                     "--input-divisor", "16", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dataset"] == "digits" and doc["split"] == "test" and doc["input_bits"] == 5
    assert doc["frames"] == 359 and doc["agreeing"] == 359
    # sign(2 u / 16 - 1) >= 0 from u = 8.
    assert artifact.load(out).layers[0].thresholds.tolist() == [8]


def test_a_float_tie_is_explained(tmp_path):
    # Weights of +-0.1: the executor's float32 sums round differently from class to class,
    # so classes whose integer scores tie can come out in either order.
    rng = np.random.default_rng(0)
    g = Graph([1, 64])
    g.add("Mul", np.float32(2.0))
    g.add("Sub", np.float32(1.0))
    g.bipolar()
    g.add("MatMul", _signs(rng, (64, 10), 0.1))
    imported = import_model(g.save(tmp_path / "tie.onnx"))
    u = np.random.default_rng(1).integers(0, 256, (400, 64))
    result = agree(imported, u)
    assert result.agreeing < result.frames
    for entry in result.differences:
        assert re.fullmatch(r"every tapped layer agrees; the integer scores of classes \d+ and "
                            r"\d+ tie at -?\d+ \(the first wins\), but the executor's float "
                            r"scores \S+ and \S+ differ by rounding \(a float tie\)",
                            entry["explanation"]), entry


# ---- refusals: one line naming the node, its op type and what is supported ------------------

def _refusals(tmp_path):
    rng = np.random.default_rng(2)

    def start(shape=(1, 8)):
        g = Graph(list(shape))
        g.bipolar()
        return g

    cases = {}
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"not a model at all")
    cases["garbage"] = (path, rf"{re.escape(str(path))}: not an ONNX model \(.+\)")
    path = tmp_path / "absent.onnx"
    cases["absent"] = (path, rf"{re.escape(str(path))}: no such file")

    g = start()
    g.add("MatMul", _signs(rng, (8, 4)))
    g.add("Relu")
    cases["relu"] = (g.save(tmp_path / "relu.onnx"),
                     r".*: node Relu_\d+ \(Relu\): op type not supported; supported: "
                     r"BipolarQuant, .*")
    g = start()
    g.add("MatMul", _signs(rng, (8, 4)))
    g.add("Quant", np.float32(1.0), np.float32(0), np.float32(2), domain=QONNX, signed=1,
          narrow=0, rounding_mode="ROUND")
    cases["2-bit activations"] = (g.save(tmp_path / "quant2.onnx"),
                                  r".*: node Quant_\d+ \(Quant\): bit width \[2\.0\]; "
                                  r"supported: 1-bit activations .*")
    g = start()
    g.add("MatMul", rng.normal(size=(8, 4)).astype(np.float32))
    g.add("MatMul", _signs(rng, (4, 2)))
    cases["float weights"] = (g.save(tmp_path / "float.onnx"),
                              r".*: node MatMul_\d+ \(MatMul\): output 0's weights are not "
                              r"binary \(values .*\); supported: \+-m per output, .*")
    g = start()
    first = g.current
    g.add("MatMul", _signs(rng, (8, 8)))
    g.bipolar()
    g.add("Add", first)
    cases["skip connection"] = (g.save(tmp_path / "skip.onnx"),
                                r".*: node MatMul_\d+ \(MatMul\): its input BipolarQuant_\d+_out0 "
                                r"also feeds other nodes \(a branch\); supported: a chain of "
                                r"layers")
    g = start((1, 2, 5, 5))
    g.add("Conv", _signs(rng, (3, 2, 3, 3)), pads=[1, 1, 1, 1])
    cases["padding"] = (g.save(tmp_path / "pad.onnx"),
                        r".*: node Conv_\d+ \(Conv\): group 1, strides \[1, 1\], pads "
                        r"\[1, 1, 1, 1\], dilations \[1, 1\]; supported: 2-D convolution, "
                        r"stride 1, no padding, one group")
    g = start((1, 2, 6, 6))
    g.add("Conv", _signs(rng, (3, 2, 3, 3)))
    g.add("MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    cases["pool before threshold"] = (g.save(tmp_path / "pool.onnx"),
                                      r".*: node MaxPool_\d+ \(MaxPool\): pools before the "
                                      r"quantizer .*; supported: MaxPool after the quantizer")
    g = start()
    g.add("MatMul", _signs(rng, (8, 4)))
    g.add("MultiThreshold", np.zeros((4, 3), np.float32), domain=QONNX, out_dtype="UINT2")
    cases["multi-bit thresholds"] = (g.save(tmp_path / "mt.onnx"),
                                     r".*: node MultiThreshold_\d+ \(MultiThreshold\): "
                                     r"thresholds of shape \(4, 3\); supported: one threshold "
                                     r"per channel \(C, 1\) or \(1, 1\)")
    g = start()
    g.add("MatMul", _signs(rng, (8, 4)))
    g.add("MultiThreshold", np.zeros((4, 1), np.float32), domain=QONNX, out_dtype="BIPOLAR",
          out_scale=2.0, out_bias=-1.0, data_layout="NHWC")
    cases["channels last"] = (g.save(tmp_path / "nhwc.onnx"),
                              r".*: node MultiThreshold_\d+ \(MultiThreshold\): data layout "
                              r"NHWC; supported: channels first \(NC, NCHW\), as Brevitas "
                              r"exports")
    g = start()
    g.add("MatMul", _signs(rng, (8, 4)))
    g.add("ArgMax", axis=1, keepdims=1, select_last_index=1)
    cases["argmax last"] = (g.save(tmp_path / "argmax.onnx"),
                            r".*: node ArgMax_\d+ \(ArgMax\): axis 1, select_last_index 1; "
                            r"supported: axis 1 \(the classes\), ties to the first index")
    g = start()
    g.add("MatMul", _signs(rng, (8, 4)))
    g.add("TopK", np.array([2], np.int64), outputs=2)
    cases["top 2"] = (g.save(tmp_path / "top2.onnx", output=g.nodes[-1].output[1]),
                      r".*: node TopK_\d+ \(TopK\): k \[2\], axis -1, largest 1; supported: "
                      r"k 1 along the classes, largest")
    g = start()
    g.add("MatMul", _signs(rng, (8, 4)))
    g.bipolar()
    cases["no scores"] = (g.save(tmp_path / "bits.onnx"),
                          r".*: the graph ends in binary values or the input \(after node "
                          r"BipolarQuant_\d+, BipolarQuant\); supported: class scores from a "
                          r"last MatMul or Gemm")
    g = start((1, 2, 2, 2))
    g.add("Reshape", np.array([1, 2, 4], np.int64))
    cases["reshape"] = (g.save(tmp_path / "reshape.onnx"),
                        r".*: node Reshape_\d+ \(Reshape\): reshapes \(2, 2, 2\) to \[1, 2, 4\];"
                        r" supported: flattening to \(1, N\)")
    g = Graph([1, 4])
    g.inputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]))
    g.bipolar()
    g.add("MatMul", _signs(rng, (4, 2)))
    cases["two inputs"] = (g.save(tmp_path / "inputs.onnx"),
                           r".*: the graph has 2 inputs; supported: one input \(the image\)")
    g = Graph([1, 3, 2, 2])
    g.add("Mul", np.float32(2.0) * np.arange(1, 13, dtype=np.float32).reshape(1, 3, 2, 2))
    g.bipolar()
    g.add("Flatten", axis=1)
    g.add("MatMul", _signs(rng, (12, 2)))
    cases["per-pixel binarize"] = (g.save(tmp_path / "pixels.onnx"),
                                   r".*: node BipolarQuant_\d+ \(BipolarQuant\): output of "
                                   r"shape \(256, 3, 2, 2\) is not elementwise on "
                                   r"\(256, 3, 1, 1\); supported: per-channel or scalar "
                                   r"constants")
    g = start()
    g.add("MatMul", _signs(rng, (8, 4)))
    g.add("Mul", np.float32(0.0))
    cases["constant scores"] = (g.save(tmp_path / "flat.onnx"),
                                r".*: class 0's score does not depend on its inputs; "
                                r"supported: class scores that grow or shrink with the popcount")
    return cases


REFUSALS = ["garbage", "absent", "relu", "2-bit activations", "float weights",
            "skip connection", "padding", "pool before threshold", "multi-bit thresholds",
            "channels last", "argmax last", "top 2", "no scores", "reshape", "two inputs",
            "per-pixel binarize", "constant scores"]


@pytest.mark.parametrize("case", REFUSALS)
def test_refuses_with_one_line_and_writes_nothing(tmp_path, capsys, case):
    path, pattern = _refusals(tmp_path)[case]
    with pytest.raises(ImportRefused) as error:
        import_model(path)
    assert re.fullmatch(pattern, str(error.value)), str(error.value)
    out = tmp_path / "out" / "net.npz"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["import", str(path), "-o", str(out)])
    assert exit_.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"bnnhw: error: {error.value}\n"
    assert "\n" not in str(error.value)
    assert not out.exists() and not list(out.parent.glob("*.npz"))


def test_hidden_thresholds_come_from_the_exact_sums(tmp_path):
    # +-0.1 weights straight into BipolarQuant: in reals the sum is 0 at p = N / 2, so the
    # integer threshold is N / 2 for every neuron; the executor's float32 sums of 0.1 round
    # near 0 either way, and each such difference is explained at its neuron.
    rng = np.random.default_rng(6)
    g = Graph([1, 16])
    g.add("Mul", np.float32(2.0))
    g.add("Sub", np.float32(1.0))
    g.bipolar()
    g.add("MatMul", _signs(rng, (16, 12), 0.1))
    g.bipolar()
    g.add("MatMul", _signs(rng, (12, 3)))
    imported = import_model(g.save(tmp_path / "exact.onnx"))
    assert imported.network.layers[1].thresholds.tolist() == [8] * 12
    u = np.random.default_rng(2).integers(0, 256, (300, 16))
    result = agree(imported, u)
    for entry in result.differences:
        if entry["layer"] is not None:
            assert entry["layer"] == 1
            assert re.fullmatch(r"layer 1 \(dense\) value \d+: executor bit [01], golden bit "
                                r"[01], on inputs that agree; the executor's float value "
                                r"before the quantizer is \S+: the float sums of the layer's "
                                r"scaled weights round it to the other side of the boundary "
                                r"the exact integers are on \(a float tie\)",
                                entry["explanation"]), entry


def test_command_without_the_import_extra_says_so(tmp_path, capsys, monkeypatch):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "qonnx" else find_spec(name, *args))
    path, _, _ = tfc_graph(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["import", str(path), "-o", str(tmp_path / "net.npz")])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == ("bnnhw: error: bnnhw import needs the import extra "
                                       "(qonnx is missing): pip install 'bnnhw[import]'\n")
    assert not (tmp_path / "net.npz").exists()


def test_first_layer_on_pixels_imports(tmp_path):
    # A MatMul straight on x = u / 255: a first layer, its thresholds found by bisection
    # over -A..A (A = 64 * 255, beyond the exhaustive check) and checked at each threshold.
    rng = np.random.default_rng(8)
    g = Graph([1, 64])
    w = _signs(rng, (64, 10))
    g.add("MatMul", w)
    gamma = _batchnorm(g, rng, 10)
    g.bipolar()
    g.add("MatMul", _signs(rng, (10, 4)))
    imported = import_model(g.save(tmp_path / "first.onnx"))
    first = imported.network.layers[0]
    assert first.kind == "first" and first.in_bits == 8
    assert first.thresholds[1] in (-64 * 255, 64 * 255 + 1)          # gamma 0: constant
    assert (first.weights[0] == (w[:, 0] < 0)).all() and gamma[0] < 0  # flipped row
    _agrees(imported, frames=300)


def test_mutated_graphs_are_imported_or_refused_in_one_line(tmp_path):
    # Nodes dropped, swapped or retyped, constants reshaped, attributes changed, inputs cut:
    # every graph imports or is refused with one line, never another exception.
    import copy

    import onnx
    bases = [onnx.load(str(tfc_graph(tmp_path)[0])), onnx.load(str(cnv_graph(tmp_path)))]
    rng = np.random.default_rng(0)
    ops = ["Mul", "Add", "MatMul", "Conv", "MaxPool", "BipolarQuant", "Reshape", "Flatten",
           "ArgMax", "Gemm", "BatchNormalization", "Relu"]
    refused = 0
    for trial in range(80):
        model = copy.deepcopy(bases[trial % 2])
        graph = model.graph
        n = int(rng.integers(len(graph.node)))
        mutation = trial % 6
        if mutation == 0:
            del graph.node[n]
        elif mutation == 1:
            k = int(rng.integers(len(graph.node)))
            a, b = copy.deepcopy(graph.node[n]), copy.deepcopy(graph.node[k])
            graph.node[n].CopyFrom(b)
            graph.node[k].CopyFrom(a)
        elif mutation == 2:
            graph.node[n].op_type = ops[rng.integers(len(ops))]
            graph.node[n].domain = QONNX if graph.node[n].op_type == "BipolarQuant" else ""
        elif mutation == 3:
            i = int(rng.integers(len(graph.initializer)))
            old = numpy_helper.to_array(graph.initializer[i])
            shape = tuple(int(d) for d in rng.integers(1, 4, rng.integers(0, 4)))
            graph.initializer[i].CopyFrom(numpy_helper.from_array(
                rng.normal(size=shape).astype(old.dtype), graph.initializer[i].name))
        elif mutation == 4:
            for attr in graph.node[n].attribute:
                if attr.type == onnx.AttributeProto.INT:
                    attr.i = int(rng.integers(-2, 4))
                elif attr.type == onnx.AttributeProto.INTS:
                    attr.ints[:] = [int(x) for x in rng.integers(0, 4, len(attr.ints))]
                elif attr.type == onnx.AttributeProto.FLOAT:
                    attr.f = float(rng.normal())
        elif graph.node[n].input:
            graph.node[n].input[0] = "nowhere"
        path = tmp_path / f"mutant{trial}.onnx"
        path.write_bytes(model.SerializeToString())
        try:
            import_model(path)
        except ImportRefused as error:
            refused += 1
            assert "\n" not in str(error) and str(error).startswith(f"{path}: "), str(error)
    assert refused >= 40
