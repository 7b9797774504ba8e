"""The network file: one versioned format that every stage of bnnhw reads.

A network file is an ``.npz`` archive (loaded with ``allow_pickle=False``) holding a JSON
``manifest`` and plain integer arrays. Only this module reads or writes it.

Conventions, stated once and used everywhere in bnnhw:

- A binary value is a bit: bit 1 encodes +1 and bit 0 encodes -1. ``sign(x) = +1 if x >= 0``.
- Weights are stored unpacked, one ``uint8`` 0/1 per weight, shaped ``(out, in)``.
- Folding: feature ``k * simd + i`` of a vector is bit ``i`` (or, for multi-bit inputs, field
  ``i``) of beat ``k``.
- Inputs of the first layer are unsigned ``in_bits``-bit integers, flattened in C order from
  ``input.shape``.

Layer kinds (``manifest["layers"][n]["kind"]``) and their arrays ``layers.{n}.<name>``:

``first``
    Multi-bit unsigned input ``x`` (``in_bits`` bits), binary weights. ``acc_j = sum_i w_ij x_i``
    with ``w`` in {-1, +1}; output bit ``y_j = acc_j >= thresholds[j]``. Arrays ``weights``
    ``(out, in)`` 0/1 and ``thresholds`` ``(out,)`` with values in ``-A .. A + 1`` where
    ``A = in * (2**in_bits - 1)``.
``dense``
    Binary input, binary weights. ``p_j = popcount(XNOR(x, w_j))``; ``y_j = p_j >= thresholds[j]``.
    ``thresholds`` in ``0 .. in + 1`` (0: always 1, ``in + 1``: never). Rows whose BatchNorm
    gamma was negative are stored inverted, so every neuron uses ``>=``.
``output``
    Binary input, binary weights, integer class scores
    ``score_c = scales[c] * (2 * p_c - in) + offsets[c]``, then argmax with ties going to the
    lowest class index. Arrays ``weights``, ``offsets`` ``(out,)`` and ``scales`` ``(out,)``
    (positive).

The manifest also records ``input`` (``shape``, ``bits``), optional class ``labels``, and
``provenance`` (free-form JSON: dataset, training options, golden accuracy, bnnhw version, git
revision). New layer kinds (convolution, pooling, multi-base) are added as new ``kind`` values;
a reader that does not know a kind rejects the file with a clear message.
"""

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from .errors import BnnhwError

__all__ = [
    "FORMAT", "VERSION", "ArtifactError",
    "FirstLayer", "DenseLayer", "OutputLayer", "Network",
    "network", "load", "save",
]

FORMAT, VERSION = "bnnhw-network", 1


class ArtifactError(BnnhwError):
    """A network file, or a network about to be saved, does not match the format."""


class _Layer:
    @property
    def fan_in(self):
        """Inputs per neuron (N)."""
        return self.weights.shape[1]

    @property
    def fan_out(self):
        """Neurons (or classes) in the layer."""
        return self.weights.shape[0]


@dataclass(frozen=True, eq=False)
class FirstLayer(_Layer):
    """First layer: unsigned ``in_bits``-bit inputs, binary weights, integer thresholds."""
    weights: np.ndarray      # (out, in) uint8, 1 = +1
    thresholds: np.ndarray   # (out,) int64
    in_bits: int
    kind = "first"

    @property
    def acc_bound(self):
        """Largest ``|acc|`` the layer can produce: ``fan_in * (2**in_bits - 1)``."""
        return self.fan_in * ((1 << self.in_bits) - 1)


@dataclass(frozen=True, eq=False)
class DenseLayer(_Layer):
    """Binary dense layer: XNOR, popcount, compare with a per-neuron threshold."""
    weights: np.ndarray      # (out, in) uint8
    thresholds: np.ndarray   # (out,) int64, 0..in+1
    kind = "dense"


@dataclass(frozen=True, eq=False)
class OutputLayer(_Layer):
    """Output layer: integer class scores from XNOR-popcount, then argmax."""
    weights: np.ndarray      # (classes, in) uint8
    offsets: np.ndarray      # (classes,) int64
    scales: np.ndarray       # (classes,) int64, positive
    kind = "output"

    @property
    def score_bounds(self):
        """Smallest and largest score any input can produce, as Python integers."""
        n = self.fan_in
        lo = min(-int(s) * n + int(o) for s, o in zip(self.scales, self.offsets))
        hi = max(int(s) * n + int(o) for s, o in zip(self.scales, self.offsets))
        return lo, hi


LAYER_KINDS = {"first": FirstLayer, "dense": DenseLayer, "output": OutputLayer}
# Arrays each kind carries, with their shape as a function of (out, in).
_ARRAYS = {
    "first": {"weights": lambda o, i: (o, i), "thresholds": lambda o, i: (o,)},
    "dense": {"weights": lambda o, i: (o, i), "thresholds": lambda o, i: (o,)},
    "output": {"weights": lambda o, i: (o, i), "offsets": lambda o, i: (o,),
               "scales": lambda o, i: (o,)},
}
# Values beyond this would not fit the 64-bit integers the golden model computes with.
_INT_LIMIT = 1 << 40


@dataclass(frozen=True, eq=False)
class Network:
    """A whole binarized network: input description, layers and provenance."""
    input_shape: tuple
    input_bits: int
    layers: tuple
    labels: tuple = None
    provenance: dict = field(default_factory=dict)

    @property
    def input_size(self):
        return math.prod(self.input_shape)

    @property
    def classes(self):
        return self.layers[-1].fan_out

    def weight_bits(self):
        """Total number of weight bits over all layers."""
        return sum(layer.weights.size for layer in self.layers)


def _fail(path, where, message):
    raise ArtifactError(f"{path}: {where}: {message}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_array(path, where, array, shape, *, binary=False):
    check = lambda ok, message: ok or _fail(path, where, message)
    check(isinstance(array, np.ndarray), f"expected an array, not {type(array).__name__}")
    check(array.dtype.kind in "iub",
          f"dtype {array.dtype} is not an integer type" + (
              " (NaN or fractional values cannot be thresholds)"
              if array.dtype.kind == "f" else ""))
    check(array.shape == shape, f"shape {array.shape} does not match the expected {shape}")
    if binary and array.size:
        check(bool(((array == 0) | (array == 1)).all()), "values other than 0 and 1")
    if array.size and array.dtype.kind != "b":
        check(int(np.abs(array.astype(np.int64)).max()) < _INT_LIMIT
              if array.dtype != np.uint64 else int(array.max()) < _INT_LIMIT,
              "values beyond +-2**40")


def _validate(path, input_shape, input_bits, layers, labels):
    """Check a network's structure; `path` names the file (or `<network>`) in messages."""
    check = lambda ok, where, message: ok or _fail(path, where, message)
    check(isinstance(input_shape, tuple) and input_shape
          and all(_is_int(d) and d > 0 for d in input_shape),
          "input.shape", f"expected a non-empty list of positive integers, not {input_shape!r}")
    check(_is_int(input_bits) and 1 <= input_bits <= 16,
          "input.bits", f"expected an integer in 1..16, not {input_bits!r}")
    check(len(layers) >= 1, "layers", "the network has no layers")
    fan_in = math.prod(input_shape)
    for n, layer in enumerate(layers):
        where = f"layers[{n}]"
        first, last = n == 0, n == len(layers) - 1
        if first:
            check(layer.kind == "first", f"{where}.kind",
                  f"the first layer must be of kind 'first', not {layer.kind!r}")
        elif last:
            check(layer.kind == "output", f"{where}.kind",
                  f"the last layer must be of kind 'output', not {layer.kind!r}")
        else:
            check(layer.kind == "dense", f"{where}.kind",
                  f"a hidden layer must be of kind 'dense', not {layer.kind!r}")
        if first and last:
            check(False, "layers", "a network needs a 'first' and an 'output' layer")
        weights = layer.weights
        check(isinstance(weights, np.ndarray) and weights.ndim == 2, f"{where}.weights",
              f"expected a 2-D (out, in) array, not shape "
              f"{getattr(weights, 'shape', type(weights).__name__)}")
        out, width = weights.shape
        check(out >= 1, f"{where}.weights", "the layer has no outputs")
        check(width == fan_in, f"{where}.weights",
              f"fan-in {width} does not chain with the {fan_in} outputs of the layer before"
              if n else f"fan-in {width} does not match the input size {fan_in}")
        for name, shape in _ARRAYS[layer.kind].items():
            _check_array(path, f"{where}.{name}", getattr(layer, name), shape(out, width),
                         binary=name == "weights")
        if layer.kind == "first":
            check(layer.in_bits == input_bits, f"{where}.in_bits",
                  f"{layer.in_bits!r} differs from input.bits {input_bits}")
            bound = width * ((1 << input_bits) - 1)
            t = layer.thresholds
            check(bool(((t >= -bound) & (t <= bound + 1)).all()), f"{where}.thresholds",
                  f"values outside {-bound}..{bound + 1}")
        elif layer.kind == "dense":
            t = layer.thresholds
            check(bool(((t >= 0) & (t <= width + 1)).all()), f"{where}.thresholds",
                  f"values outside 0..{width + 1}")
        else:
            check(bool((layer.scales >= 1).all()), f"{where}.scales",
                  "values below 1 (scales must be positive)")
        fan_in = out
    if labels is not None:
        check(isinstance(labels, tuple) and len(labels) == layers[-1].fan_out
              and all(isinstance(s, str) for s in labels), "labels",
              f"expected {layers[-1].fan_out} strings, not {labels!r}")


def _canonical(layer):
    """Return `layer` with arrays in the dtypes the rest of bnnhw relies on."""
    arrays = {name: np.ascontiguousarray(getattr(layer, name),
                                         dtype=np.uint8 if name == "weights" else np.int64)
              for name in _ARRAYS[layer.kind]}
    if layer.kind == "first":
        return FirstLayer(in_bits=layer.in_bits, **arrays)
    return LAYER_KINDS[layer.kind](**arrays)


def network(*, input_shape, input_bits, layers, labels=None, provenance=None):
    """Build a checked :class:`Network`; raises :class:`ArtifactError` naming the bad field."""
    input_shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else input_shape
    labels = tuple(labels) if isinstance(labels, list) else labels
    _validate("<network>", input_shape, input_bits, tuple(layers), labels)
    return Network(input_shape=input_shape, input_bits=input_bits,
                   layers=tuple(_canonical(layer) for layer in layers), labels=labels,
                   provenance=dict(provenance or {}))


def _manifest(net):
    layers = []
    for layer in net.layers:
        spec = {"kind": layer.kind, "in": layer.fan_in, "out": layer.fan_out}
        if layer.kind == "first":
            spec["in_bits"] = layer.in_bits
        layers.append(spec)
    return {
        "format": FORMAT, "version": VERSION,
        "input": {"shape": list(net.input_shape), "bits": net.input_bits},
        "labels": list(net.labels) if net.labels is not None else None,
        "layers": layers,
        "provenance": net.provenance,
    }


def save(net, path):
    """Write `net` to `path` atomically: a temporary file, checked by loading it, then renamed."""
    path = Path(path)
    _validate(path, net.input_shape, net.input_bits, net.layers, net.labels)
    try:
        manifest = json.dumps(_manifest(net), indent=1, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ArtifactError(f"{path}: provenance: not JSON-serialisable ({error})") from None
    arrays = {"manifest": np.array(manifest)}
    for n, layer in enumerate(net.layers):
        for name in _ARRAYS[layer.kind]:
            arrays[f"layers.{n}.{name}"] = getattr(layer, name)
    # np.savez appends ".npz" to names not ending in it, so the temporary name ends in ".npz".
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez_compressed(temporary, **arrays)
        load(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load(path):
    """Read and check a network file; raises :class:`ArtifactError` naming the bad field."""
    path = Path(path)
    check = lambda ok, where, message: ok or _fail(path, where, message)
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a directory, not a network file") from None
    except OSError as error:
        raise ArtifactError(f"{path}: cannot read ({error.strerror})") from None
    with file:
        magic = file.read(6)
        file.seek(0)
        check(not magic.startswith(b"\x93NUMPY"), "file",
              "holds a single array, not an .npz archive of a network")
        check(magic.startswith(b"PK\x03\x04"), "file",
              f"not a network file (an .npz archive starts with PK, this file with {magic!r})")
        try:
            npz = np.load(file, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise ArtifactError(f"{path}: file: not a readable .npz archive, it may be "
                                f"truncated ({error})") from None
        return _read(path, npz)


def _read(path, npz):
    check = lambda ok, where, message: ok or _fail(path, where, message)
    with npz:
        names = set(npz.files)

        def array(name):
            check(name in names, name, "missing array")
            try:
                return npz[name]
            except ValueError as error:
                if "allow_pickle" in str(error):
                    _fail(path, name, "holds pickled Python objects, which bnnhw never loads")
                _fail(path, name, f"unreadable array ({error})")
            except (OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
                _fail(path, name, f"unreadable, the file may be truncated ({error})")

        check("manifest" in names, "manifest",
              "missing: an .npz archive, but not a bnnhw network file")
        text = array("manifest")
        check(text.dtype.kind == "U" and text.ndim == 0, "manifest",
              f"expected a JSON string, not a {text.dtype} array of shape {text.shape}")
        try:
            manifest = json.loads(str(text))
        except json.JSONDecodeError as error:
            _fail(path, "manifest", f"invalid JSON ({error})")
        check(isinstance(manifest, dict), "manifest", "expected a JSON object")
        check(manifest.get("format") == FORMAT, "format",
              f"expected {FORMAT!r}, not {manifest.get('format')!r}")
        check(manifest.get("version") == VERSION, "version",
              f"this bnnhw reads version {VERSION}, not {manifest.get('version')!r}; "
              f"re-export the network")

        def field_(obj, key, where, kind):
            check(isinstance(obj, dict) and key in obj, where, "missing field")
            value = obj[key]
            ok = _is_int(value) if kind is int else isinstance(value, kind)
            check(ok, where, f"expected {getattr(kind, '__name__', kind)}, not {value!r}")
            return value

        inp = field_(manifest, "input", "input", dict)
        shape = field_(inp, "shape", "input.shape", list)
        bits = field_(inp, "bits", "input.bits", int)
        labels = manifest.get("labels")
        check(labels is None or isinstance(labels, list), "labels",
              f"expected a list of strings or null, not {labels!r}")
        provenance = manifest.get("provenance", {})
        check(isinstance(provenance, dict), "provenance",
              f"expected a JSON object, not {provenance!r}")
        specs = field_(manifest, "layers", "layers", list)
        layers = []
        for n, spec in enumerate(specs):
            where = f"layers[{n}]"
            check(isinstance(spec, dict), where, f"expected a JSON object, not {spec!r}")
            kind = field_(spec, "kind", f"{where}.kind", str)
            check(kind in LAYER_KINDS, f"{where}.kind",
                  f"unknown layer kind {kind!r}; this bnnhw knows "
                  f"{', '.join(map(repr, LAYER_KINDS))}")
            fan_in = field_(spec, "in", f"{where}.in", int)
            fan_out = field_(spec, "out", f"{where}.out", int)
            arrays = {name: array(f"layers.{n}.{name}") for name in _ARRAYS[kind]}
            for name, shape_of in _ARRAYS[kind].items():
                _check_array(path, f"{where}.{name}", arrays[name], shape_of(fan_out, fan_in),
                             binary=name == "weights")
            if kind == "first":
                arrays["in_bits"] = field_(spec, "in_bits", f"{where}.in_bits", int)
            layers.append(_canonical(LAYER_KINDS[kind](**arrays)))
        extra = names - {"manifest"} - {f"layers.{n}.{name}" for n, s in enumerate(specs)
                                        for name in _ARRAYS[s["kind"]]}
        check(not extra, sorted(extra)[0] if extra else "", "array not described by the manifest")
    shape = tuple(shape)
    labels = tuple(labels) if labels is not None else None
    _validate(path, shape, bits, tuple(layers), labels)
    return Network(input_shape=shape, input_bits=bits, layers=tuple(layers), labels=labels,
                   provenance=provenance)
