"""The graph and its network file side by side: the QONNX executor against the golden model.

Both run on the same frames: the executor on the ONNX model (``x = u / divisor``), the golden
model on the network file (``u``). Classes are compared, and every layer's output bits where
the graph has them (:class:`~bnnhw.importer.graph.Tap`). A difference is explained by the
first layer where bits differ: the neuron's integer accumulator and threshold, and whether the
float value the executor saw sits on the quantizer's boundary (a float tie).
"""

from dataclasses import dataclass, field

import numpy as np

from .. import golden
from ..tensor import from_stream_order, to_stream_order

__all__ = ["Agreement", "agree"]

# Frames per executor run: the executor keeps every tensor of a batch.
_BATCH = 500


@dataclass
class Agreement:
    """Class and per-layer bit agreement of the graph and the network on ``frames`` frames."""
    frames: int
    agreeing: int
    layer_bits: list            # per tapped layer: {"layer", "kind", "bits", "agreeing"}
    differences: list = field(default_factory=list)   # up to 10: frame, classes, explanation
    executor_classes: np.ndarray = None
    golden_classes: np.ndarray = None

    @property
    def class_agreement(self):
        return self.agreeing / self.frames if self.frames else 1.0

    def as_json(self):
        return {"frames": self.frames, "agreeing": self.agreeing,
                "class_agreement": self.class_agreement, "layers": self.layer_bits,
                "differences": self.differences}


def _executor_model(imported, batch):
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes
    model = imported.model.transform(ChangeBatchSize(batch))
    return model.transform(InferShapes())


def _onnx_input(imported, u):
    """Frames ``u`` (stream order) as the graph's float input, ``(B,) + input shape``."""
    net = imported.network
    x = np.asarray(u, np.float32) / np.float32(imported.divisor)
    if len(imported.input_shape) == 2:
        return x.reshape(len(u), -1)
    planes = from_stream_order(x, net.input_shape)
    return planes.reshape((len(u),) + tuple(imported.input_shape[1:]))


def _onnx_bits(values, tap):
    """A tapped tensor ``(B, ...)`` in ONNX (C, H, W) order as bits in stream order."""
    values = np.asarray(values).reshape(len(values), -1)
    bits = (values == np.float32(tap.high)).astype(np.uint8)
    return to_stream_order(bits, tap.shape)


def run_executor(imported, u, progress=None):
    """The executor's classes, float scores and tapped bits (stream order) for frames ``u``."""
    from qonnx.core.onnx_exec import execute_onnx
    classes, scores, taps = [], [], {tap.layer: [] for tap in imported.taps}
    models = {}
    for start in range(0, len(u), _BATCH):
        chunk = u[start:start + _BATCH]
        if len(chunk) not in models:
            models[len(chunk)] = _executor_model(imported, len(chunk))
        context = execute_onnx(models[len(chunk)],
                               {imported.input_name: _onnx_input(imported, chunk)},
                               return_full_exec_context=True)
        out = np.asarray(context[imported.output_name])
        classes.append(out.reshape(len(chunk)).astype(np.int64) if imported.classes_output
                       else np.argmax(out.reshape(len(chunk), -1), axis=1))
        scores.append(np.asarray(context[imported.scores_name]).reshape(len(chunk), -1))
        for tap in imported.taps:
            taps[tap.layer].append(_onnx_bits(context[tap.name], tap))
        if progress is not None:
            progress(min(start + _BATCH, len(u)), len(u))
    return (np.concatenate(classes), np.concatenate(scores),
            {k: np.concatenate(v) for k, v in taps.items()})


def agree(imported, u, progress=None):
    """Run frames ``u`` (``(B, input_size)`` unsigned, stream order) through both; return an
    :class:`Agreement`."""
    net = imported.network
    u = np.asarray(u)
    result = golden.run(net, u)
    ex_classes, ex_scores, ex_bits = run_executor(imported, u, progress)
    agreeing = int((ex_classes == result.classes).sum())
    layer_bits = []
    for tap in imported.taps:
        got = ex_bits[tap.layer]
        want = result.activations[tap.layer]
        layer_bits.append({"layer": tap.layer, "kind": net.layers[tap.layer].kind,
                           "bits": int(want.size), "agreeing": int((got == want).sum())})
    differences = []
    for frame in np.flatnonzero(ex_classes != result.classes)[:10]:
        differences.append(_explain(imported, int(frame), ex_classes, ex_scores, result,
                                    ex_bits, u))
    return Agreement(frames=len(u), agreeing=agreeing, layer_bits=layer_bits,
                     differences=differences, executor_classes=ex_classes,
                     golden_classes=result.classes)


def _before_quantizer(imported, tap, u, frame, value):
    """The executor's float value before the quantizer that made bit ``value`` (stream order)
    of ``tap`` in frame ``frame``, as words."""
    from qonnx.core.onnx_exec import execute_onnx
    from .nodes import _stream_perm
    if not tap.pre:
        return "the float computation differs from the integer one (a float tie)"
    # The same batch as the comparison: the executor's float sums depend on it.
    start = frame - frame % _BATCH
    chunk = u[start:start + _BATCH]
    context = execute_onnx(_executor_model(imported, len(chunk)),
                           {imported.input_name: _onnx_input(imported, chunk)},
                           return_full_exec_context=True)
    index = int(np.flatnonzero(_stream_perm(tap.shape) == value)[0])
    x = float(np.asarray(context[tap.pre]).reshape(len(chunk), -1)[frame - start, index])
    return (f"the executor's float value before the quantizer is {x:.9g}: the float sums of "
            f"the layer's scaled weights round it to the other side of the boundary the exact "
            f"integers are on (a float tie)")


def _explain(imported, frame, ex_classes, ex_scores, result, ex_bits, u):
    """Why frame ``frame``'s classes differ: the first layer whose bits differ, its first
    differing value and how far its accumulator is from the threshold."""
    entry = {"frame": frame, "executor_class": int(ex_classes[frame]),
             "golden_class": int(result.classes[frame]), "layer": None, "value": None,
             "explanation": ""}
    for tap in imported.taps:
        got, want = ex_bits[tap.layer][frame], result.activations[tap.layer][frame]
        diff = np.flatnonzero(got != want)
        if diff.size:
            entry["layer"], entry["value"] = tap.layer, int(diff[0])
            kind = imported.network.layers[tap.layer].kind
            value = int(diff[0])
            why = _before_quantizer(imported, tap, u, frame, value)
            entry["explanation"] = (f"layer {tap.layer} ({kind}) value {value}: executor bit "
                                    f"{int(got[value])}, golden bit {int(want[value])}, on "
                                    f"inputs that agree; {why}")
            return entry
    ints, floats = result.scores[frame], ex_scores[frame]
    a, b = int(result.classes[frame]), int(ex_classes[frame])
    fa, fb, ia, ib = float(floats[a]), float(floats[b]), int(ints[a]), int(ints[b])
    if ia == ib:
        why = (f"the integer scores of classes {a} and {b} tie at {ia} (the first wins), but "
               f"the executor's float scores {fa:.9g} and {fb:.9g} differ by rounding (a float "
               f"tie)")
    elif fa == fb:
        why = (f"the executor's float scores of classes {a} and {b} round to one value "
               f"{fa:.9g} (a float tie), the integers {ia} and {ib} differ")
    else:
        why = (f"integer scores {ia} and {ib}, float scores {fa:.9g} and {fb:.9g} order "
               f"classes {a} and {b} differently")
    entry["explanation"] = f"every tapped layer agrees; {why}"
    return entry
