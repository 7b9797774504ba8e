"""The network file: one versioned format that every stage of bnnhw reads.

A network file is a zip archive of ``.npy`` members (``numpy.savez_compressed``) holding a JSON
``manifest`` and plain integer arrays; nothing in it is ever unpickled. Only this module reads
or writes it.

Conventions, stated once and used everywhere in bnnhw:

- A binary value is a bit: bit 1 encodes +1 and bit 0 encodes -1. ``sign(x) = +1 if x >= 0``.
- Tensors between layers have a shape ``(channels, height, width)``, a width in bits and an
  encoding, and travel in stream order (row by row, pixel by pixel, channels within a pixel):
  :mod:`bnnhw.tensor` states it exactly.
- Arrays are stored unpacked: one ``uint8`` 0/1 per binary weight, ``int64`` integers.
- Folding (a generator option, never in the file): feature ``k * simd + i`` of a vector is
  bit ``i`` (or field ``i``) of beat ``k``.

Manifest, version 2::

    {"format": "bnnhw-network", "version": 2,
     "input": {"shape": [C, H, W], "bits": B, "encoding": "unsigned"},
     "labels": ["0", "1", ...] or null,
     "layers": [{"kind": K, "params": {...},
                 "input": TENSOR, "output": TENSOR or {"classes": N}}, ...],
     "provenance": {...}}

Layer ``n`` of kind ``K`` keeps its arrays as members ``layers.{n}.{name}``; which arrays and
which integer ``params`` a kind has, and what they mean, is written in its file in
:mod:`bnnhw.kinds` (``first``, ``dense``, ``output``, ...): adding a kind changes neither this
format nor its version. Each layer's ``input`` and ``output`` tensors are recorded for readers
and checked against what the layer computes on load. Layers chain by tensor: a network is any
sequence whose tensors match, from the input to a layer that produces class scores.

Version 1 files (bnnhw 0.1: ``input.shape`` of any rank, per layer ``kind``, ``in``, ``out``
and the first layer's ``in_bits``) are upgraded on read; :func:`save` writes version 2.
``provenance`` is free-form JSON (dataset name and digest, training options, the golden
model's accuracy, bnnhw version, git revision).
"""

import io
import json
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ArtifactError
from .kinds import KINDS, Checker, DenseLayer, FirstLayer, Layer, OutputLayer
from .tensor import ENCODINGS, Tensor

__all__ = [
    "FORMAT", "VERSION", "READS", "ArtifactError",
    "FirstLayer", "DenseLayer", "OutputLayer", "Network",
    "network", "load", "save", "input_tensor", "digest",
]

FORMAT, VERSION = "bnnhw-network", 2
READS = (1, 2)
# A member larger than this is refused before it is read (SFC's largest array is 200 KB).
_MAX_MEMBER = 1 << 30
# What a damaged zip archive or .npy member can raise while it is read.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, ValueError, OverflowError,
                struct.error, EOFError, OSError, KeyError, IndexError, RuntimeError,
                MemoryError, TypeError)


@dataclass(frozen=True, eq=False)
class Network:
    """A whole binarized network: the input tensor, the layers (each bound to the tensor it
    takes), class labels and provenance. Build one with :func:`network` or :func:`load`."""
    input: Tensor
    layers: tuple
    labels: tuple = None
    provenance: dict = field(default_factory=dict)

    @property
    def input_shape(self):
        """``(channels, height, width)`` of the input."""
        return self.input.shape

    @property
    def input_bits(self):
        return self.input.bits

    @property
    def input_size(self):
        """Input values per frame."""
        return self.input.size

    @property
    def tensors(self):
        """The input tensor and every layer's output (None for the scores at the end)."""
        return [self.input] + [layer.output for layer in self.layers]

    @property
    def classes(self):
        return self.layers[-1].classes

    @property
    def score_bounds(self):
        """Smallest and largest class score the network can produce."""
        return self.layers[-1].score_bounds

    def weight_bits(self):
        """Total number of weight bits over all layers."""
        return sum(layer.weight_bits for layer in self.layers)


def input_tensor(shape, bits, encoding="unsigned"):
    """The input :class:`Tensor` for an image ``shape``: ``(C, H, W)``, or ``(H, W)`` (one
    channel) or ``(N,)`` (a vector of N channels)."""
    shape = tuple(shape)
    if len(shape) == 1:
        shape = (shape[0], 1, 1)
    elif len(shape) == 2:
        shape = (1,) + shape
    return Tensor(*shape, bits, encoding)


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_tensor(check, value, *, rank3=True):
    """A :class:`Tensor` from a manifest's ``{"shape", "bits", "encoding"}`` object."""
    check(isinstance(value, dict), f"expected a JSON object, not {value!r}")
    shape = value.get("shape")
    check(isinstance(shape, list) and (len(shape) == 3 if rank3 else 1 <= len(shape) <= 3)
          and all(_is_int(d) and d > 0 for d in shape), (
              "expected a list of three positive integers (channels, height, width)" if rank3
              else "expected a non-empty list of positive integers") + f", not {shape!r}",
          ".shape")
    bits = value.get("bits")
    check(_is_int(bits) and 1 <= bits <= 16, f"expected an integer in 1..16, not {bits!r}",
          ".bits")
    encoding = value.get("encoding", "unsigned")
    check(encoding in ENCODINGS, f"expected one of {', '.join(map(repr, ENCODINGS))}, not "
                                 f"{encoding!r}", ".encoding")
    return input_tensor(shape, int(bits), encoding)


def _validate(source, input, layers, labels):
    """Check a network's structure and chain; return its layers bound to their inputs."""
    check = Checker(source)
    check(isinstance(input, Tensor), f"expected a Tensor, not {input!r}", "input")
    check(isinstance(input.bits, int) and 1 <= input.bits <= 16,
          f"expected an integer in 1..16, not {input.bits!r}", "input.bits")
    check(input.encoding in ENCODINGS, f"unknown encoding {input.encoding!r}", "input.encoding")
    check(all(_is_int(d) and d > 0 for d in input.shape),
          f"expected positive integers, not {input.shape!r}", "input.shape")
    check(len(layers) >= 1, "the network has no layers", "layers")
    bound, tensor = [], input
    for n, layer in enumerate(layers):
        at = check.at(f"layers[{n}]")
        at(isinstance(layer, Layer), f"expected a layer, not {type(layer).__name__}")
        if tensor is None:
            check.fail(f"a layer of kind {layers[n - 1].kind!r} produces class scores, so it "
                       f"must be the last layer", f"layers[{n - 1}]")
        layer = layer.canonical() if _arrays_usable(layer) else layer
        output = layer.check(tensor, at)
        bound.append(layer.bind(tensor, output))
        tensor = output
    check(tensor is None, f"the last layer must produce class scores (an output layer), not "
                          f"a {layers[-1].kind} layer's {tensor.describe() if tensor else ''}",
          f"layers[{len(layers) - 1}]")
    if labels is not None:
        classes = bound[-1].classes
        check(isinstance(labels, tuple) and len(labels) == classes
              and all(isinstance(s, str) for s in labels),
              f"expected {classes} strings, not {labels!r}", "labels")
    return tuple(bound)


def _arrays_usable(layer):
    """Whether the layer's arrays can be converted to bnnhw's dtypes without losing a value
    (otherwise its check reports them as they are)."""
    for name in layer.ARRAYS:
        array = getattr(layer, name, None)
        kinds = "iub" if layer.ARRAYS[name] == "bits" else "iu"
        if not isinstance(array, np.ndarray) or array.dtype.kind not in kinds:
            return False
        if array.size and (int(array.max()) >= 1 << 62 or int(array.min()) < -(1 << 62)):
            return False
    return True


def network(*, input_shape, input_bits, layers, labels=None, provenance=None,
            input_encoding="unsigned"):
    """Build a checked :class:`Network`; raises :class:`ArtifactError` naming the bad field.

    ``input_shape`` is ``(C, H, W)``, ``(H, W)`` or ``(N,)`` (see :func:`input_tensor`).
    """
    check = Checker("<network>")
    check(isinstance(input_shape, (tuple, list)) and 1 <= len(input_shape) <= 3
          and all(_is_int(d) and d > 0 for d in input_shape),
          f"expected 1 to 3 positive integers, not {input_shape!r}", "input.shape")
    check(_is_int(input_bits) and 1 <= input_bits <= 16,
          f"expected an integer in 1..16, not {input_bits!r}", "input.bits")
    labels = tuple(labels) if isinstance(labels, list) else labels
    tensor = input_tensor([int(d) for d in input_shape], int(input_bits), input_encoding)
    bound = _validate("<network>", tensor, tuple(layers), labels)
    return Network(input=tensor, layers=bound, labels=labels, provenance=dict(provenance or {}))


def _output_json(layer):
    output = layer.output
    return output.as_json() if output is not None else {"classes": layer.classes}


def _manifest(net):
    layers = []
    for layer in net.layers:
        layers.append({"kind": layer.kind, "params": {p: getattr(layer, p) for p in layer.PARAMS},
                       "input": layer.input.as_json(), "output": _output_json(layer)})
    return {
        "format": FORMAT, "version": VERSION,
        "input": net.input.as_json(),
        "labels": list(net.labels) if net.labels is not None else None,
        "layers": layers,
        "provenance": net.provenance,
    }


def digest(net):
    """SHA-256 (hex) of what ``net`` computes: its manifest without the provenance, and every
    array's dtype, shape and bytes. Equal for the same network saved twice, at any path, with
    any training history; it changes with any weight, threshold, shape or label."""
    import hashlib
    manifest = _manifest(net)
    del manifest["provenance"]
    hasher = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode())
    for n, layer in enumerate(net.layers):
        for name in layer.ARRAYS:
            array = np.ascontiguousarray(getattr(layer, name))
            hasher.update(f"\nlayers.{n}.{name} {array.dtype.str} {array.shape}\n".encode())
            hasher.update(array.tobytes())
    return hasher.hexdigest()


def save(net, path):
    """Write ``net`` to ``path`` atomically: a temporary file, checked by loading it, then
    renamed over ``path`` (an existing file is kept if anything fails)."""
    path = Path(path)
    layers = _validate(path, net.input, tuple(net.layers), net.labels)
    for n, layer in enumerate(layers):
        if KINDS.get(layer.kind) is not type(layer):
            raise ArtifactError(f"{path}: layers[{n}].kind: {layer.kind!r} is not a registered "
                                f"layer kind (bnnhw.kinds.register)")
    try:
        manifest = json.dumps(_manifest(net), indent=1, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ArtifactError(f"{path}: provenance: not JSON-serialisable ({error})") from None
    arrays = {"manifest": np.array(manifest)}
    for n, layer in enumerate(layers):
        for name in layer.ARRAYS:
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
    """Read and check a network file; raises :class:`ArtifactError` naming the bad field.

    Whatever the file holds (a damaged archive, a member that fails its CRC, a manifest that
    does not match the arrays), the result is a checked network or one such error.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a directory, not a network file") from None
    except OSError as error:
        raise ArtifactError(f"{path}: cannot read ({error.strerror})") from None
    check = Checker(path)
    check(not data.startswith(b"\x93NUMPY"),
          "holds a single array, not an .npz archive of a network", "file")
    check(data.startswith(b"PK\x03\x04"),
          f"not a network file (an .npz archive starts with PK, this file with {data[:6]!r})",
          "file")
    with _Archive(path, data) as archive:
        return _read(path, archive)


class _Archive:
    """The ``.npy`` members of a zip archive in memory, read one at a time with every size
    checked before anything is allocated."""

    def __init__(self, path, data):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
        except _READ_ERRORS as error:
            raise ArtifactError(f"{path}: file: not a readable .npz archive, it may be "
                                f"truncated ({error})") from None
        try:
            self.members = {}
            for info in self.zip.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if name in self.members:
                    raise ArtifactError(f"{path}: {name}: stored twice in the archive")
                self.members[name] = info
        except BaseException:
            self.zip.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()

    @property
    def names(self):
        return set(self.members)

    def array(self, name):
        fail = lambda message: Checker(self.path).fail(message, name)
        info = self.members.get(name)
        if info is None:
            fail("missing array")
        if info.file_size > _MAX_MEMBER:
            fail(f"{info.file_size:,} bytes, more than a network file holds")
        try:
            with self.zip.open(info) as member:
                raw = member.read(info.file_size + 1)
        except zipfile.BadZipFile as error:
            if "CRC" in str(error):
                fail("CRC mismatch: the member's data is damaged")
            fail(f"unreadable, the file may be truncated or damaged ({error})")
        except _READ_ERRORS as error:
            fail(f"unreadable, the file may be truncated or damaged ({error})")
        return _parse_npy(raw, fail)


def _parse_npy(raw, fail):
    """The array in the ``.npy`` bytes ``raw``; ``fail(message)`` raises."""
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            fail(f"unknown .npy format version {version}")
    except _READ_ERRORS + (SyntaxError,) as error:
        fail(f"not a readable array ({error})")
    if dtype.hasobject:
        fail("holds pickled Python objects, which bnnhw never loads")
    if any(d < 0 for d in shape):
        fail(f"impossible shape {shape}")
    count = math.prod(shape)
    offset = stream.tell()
    if len(raw) - offset != count * dtype.itemsize:
        fail(f"{len(raw) - offset} bytes of data for an array of shape {shape} and dtype "
             f"{dtype}, which needs {count * dtype.itemsize}")
    try:
        array = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
        return array.reshape(shape, order="F" if fortran else "C").copy()
    except _READ_ERRORS as error:
        fail(f"not a readable array ({error})")


def _field(check, obj, key, kind, where):
    check(isinstance(obj, dict) and key in obj, "missing field", where)
    value = obj[key]
    ok = _is_int(value) if kind is int else isinstance(value, kind)
    check(ok, f"expected {getattr(kind, '__name__', kind)}, not {value!r}", where)
    return value


def _read(path, archive):
    check = Checker(path)
    check("manifest" in archive.names, "missing: an .npz archive, but not a bnnhw network file",
          "manifest")
    text = archive.array("manifest")
    check(text.dtype.kind == "U" and text.ndim == 0,
          f"expected a JSON string, not a {text.dtype} array of shape {text.shape}", "manifest")
    try:
        manifest = json.loads(str(text))
    except (json.JSONDecodeError, RecursionError) as error:
        check.fail(f"invalid JSON ({error})", "manifest")
    check(isinstance(manifest, dict), "expected a JSON object", "manifest")
    check(manifest.get("format") == FORMAT,
          f"expected {FORMAT!r}, not {manifest.get('format')!r}", "format")
    version = manifest.get("version")
    check(_is_int(version) and version in READS,
          f"this bnnhw reads versions {', '.join(map(str, READS))}, not {version!r}; "
          f"re-export the network", "version")
    labels = manifest.get("labels")
    check(labels is None or isinstance(labels, list),
          f"expected a list of strings or null, not {labels!r}", "labels")
    provenance = manifest.get("provenance", {})
    check(isinstance(provenance, dict), f"expected a JSON object, not {provenance!r}",
          "provenance")
    specs = _field(check, manifest, "layers", list, "layers")
    reader = _read_v1 if version == 1 else _read_v2
    tensor, layers, described = reader(check, manifest, specs, archive)
    extra = sorted(archive.names - {"manifest"} - described)
    check(not extra, "array not described by the manifest", extra[0] if extra else "")
    labels = tuple(labels) if labels is not None else None
    bound = _validate(path, tensor, tuple(layers), labels)
    if version == 2:
        for n, (layer, spec) in enumerate(zip(bound, specs)):
            at = check.at(f"layers[{n}]")
            for key, actual in (("input", layer.input.as_json()),
                                ("output", _output_json(layer))):
                declared = spec.get(key)
                if key == "input" and isinstance(declared, dict):
                    declared = dict(declared)
                    declared.setdefault("encoding", actual["encoding"])
                at(declared == actual, f"the manifest says {declared!r}, but the layer "
                                       f"{'takes' if key == 'input' else 'produces'} {actual!r}",
                   f".{key}")
    return Network(input=tensor, layers=bound, labels=labels, provenance=provenance)


def _kind(check, spec, where):
    check(isinstance(spec, dict), f"expected a JSON object, not {spec!r}", where)
    kind = _field(check, spec, "kind", str, f"{where}.kind")
    check(kind in KINDS, f"unknown layer kind {kind!r}; this bnnhw knows "
                         f"{', '.join(map(repr, KINDS))}", f"{where}.kind")
    return KINDS[kind]


def _arrays(check, kind, n, archive):
    arrays = {}
    for name in kind.ARRAYS:
        arrays[name] = archive.array(f"layers.{n}.{name}")
    return arrays


def _read_v2(check, manifest, specs, archive):
    tensor = _check_tensor(check.at("input"), manifest.get("input"))
    layers, described = [], set()
    for n, spec in enumerate(specs):
        where = f"layers[{n}]"
        kind = _kind(check, spec, where)
        params = spec.get("params", {})
        check(isinstance(params, dict), f"expected a JSON object, not {params!r}",
              f"{where}.params")
        values = {p: _field(check, params, p, int, f"{where}.params.{p}") for p in kind.PARAMS}
        stray = sorted(set(params) - set(kind.PARAMS))
        check(not stray, f"a {kind.KIND} layer has no parameter {stray[0]!r}" if stray else "",
              f"{where}.params")
        layers.append(kind(**_arrays(check, kind, n, archive), **values))
        described |= {f"layers.{n}.{name}" for name in kind.ARRAYS}
    return tensor, layers, described


def _read_v1(check, manifest, specs, archive):
    """Version 1: ``input.shape`` of any rank; per layer ``kind``, ``in``, ``out`` (the weight
    matrix's shape) and the kind's parameters beside them."""
    inp = _field(check, manifest, "input", dict, "input")
    shape = _field(check, inp, "shape", list, "input.shape")
    _field(check, inp, "bits", int, "input.bits")
    tensor = _check_tensor(check.at("input"), {"shape": shape, "bits": inp["bits"]},
                           rank3=False)
    layers, described = [], set()
    for n, spec in enumerate(specs):
        where = f"layers[{n}]"
        kind = _kind(check, spec, where)
        fan_in = _field(check, spec, "in", int, f"{where}.in")
        fan_out = _field(check, spec, "out", int, f"{where}.out")
        values = {p: _field(check, spec, p, int, f"{where}.{p}") for p in kind.PARAMS}
        arrays = _arrays(check, kind, n, archive)
        weights = arrays.get("weights")
        if weights is not None:
            check(weights.shape == (fan_out, fan_in),
                  f"shape {weights.shape} does not match the expected {(fan_out, fan_in)}",
                  f"{where}.weights")
        layers.append(kind(**arrays, **values))
        described |= {f"layers.{n}.{name}" for name in kind.ARRAYS}
    return tensor, layers, described
