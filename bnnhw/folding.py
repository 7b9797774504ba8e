"""Folding: how much of a layer its gateware computes per cycle.

Folding is a generator option, kept apart from the network file (DESIGN.md section 1). Each
layer kind names its folding parameters and what they must divide (a matrix layer of ``MH``
neurons over a fan-in of ``MW`` is folded by ``pe``, dividing ``MH``, and ``simd``, dividing
``MW``, and takes ``(MH / pe) * (MW / simd)`` cycles per frame); see
:meth:`bnnhw.kinds.base.Layer.fold_dims`.

A folding configuration for a network is a sequence with one entry per layer, each a
:class:`LayerFolding`, a tuple of the kind's parameters in order (``(pe, simd)``) or a mapping
(``{"pe": .., "simd": ..}``). :func:`folding_from_args` turns the command line's
``--pe``/``--simd``/``--target``/``--folding`` into one; every command uses it.

A folding file (``--folding FILE``, written by ``bnnhw build`` and ``bnnhw flow`` beside what
they build, so that a build can be repeated exactly) is JSON, in the spirit of FINN's folding
configuration::

    {"format": "bnnhw-folding", "version": 1,
     "kinds": ["first_conv", "conv", "maxpool", "dense", "output"],
     "layers": [{"pe": 8, "simd": 1}, {"pe": 4, "simd": 32}, {"simd": 8}, ...],
     "cycles_per_frame": 2304}

``kinds`` must match the network's layers; ``cycles_per_frame`` is what the folding gave when
it was written (for a reader; not checked).
"""

import json
import math
import os
from pathlib import Path

from .errors import FoldingError

__all__ = [
    "FoldingError", "LayerFolding", "divisors", "check_folding", "default_folding",
    "parse_folding", "folding_from_options", "folding_from_args", "memory_from_options",
    "format_folding", "save_folding", "load_folding", "FOLDING_FORMAT",
]

FOLDING_FORMAT, FOLDING_VERSION = "bnnhw-folding", 1


class LayerFolding:
    """The folding of one layer: its kind's parameters and their values, e.g. ``pe=2, simd=8``.

    Immutable; parameters read as attributes (``fold.pe``), compared by value.
    """
    __slots__ = ("_values",)

    def __init__(self, pe=None, simd=None, **more):
        values = {"pe": pe, "simd": simd, **more}
        object.__setattr__(self, "_values",
                           tuple((k, v) for k, v in values.items() if v is not None))

    def __getattr__(self, name):
        for key, value in object.__getattribute__(self, "_values"):
            if key == name:
                return value
        raise AttributeError(f"this folding has no {name!r} (it has "
                             f"{', '.join(k for k, _ in self._values) or 'none'})")

    def __setattr__(self, name, value):
        raise AttributeError("a LayerFolding is immutable")

    def as_dict(self):
        return dict(self._values)

    def get(self, name, default=None):
        return dict(self._values).get(name, default)

    def __eq__(self, other):
        return isinstance(other, LayerFolding) and dict(self._values) == dict(other._values)

    def __hash__(self):
        return hash(tuple(sorted(self._values)))

    def __repr__(self):
        return f"LayerFolding({', '.join(f'{k}={v}' for k, v in self._values)})"

    def __str__(self):
        return ",".join(str(v) for _, v in self._values) if self._values else "-"


def divisors(n):
    """Positive divisors of ``n``, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def check_folding(net, folding):
    """Return ``folding`` for ``net`` as a tuple of :class:`LayerFolding`, checked."""
    if isinstance(folding, (str, bytes, dict)) or not hasattr(folding, "__len__"):
        raise FoldingError(f"folding must be a sequence of (pe, simd) pairs, not {folding!r}")
    if len(folding) != len(net.layers):
        raise FoldingError(f"folding has {len(folding)} entries, but the network has "
                           f"{len(net.layers)} layers")
    return tuple(layer.check_fold(entry, where=f"layers[{n}]")
                 for n, (layer, entry) in enumerate(zip(net.layers, folding)))


def default_folding(net, *, target=None, bits_per_cycle=64, max_simd=64):
    """Pick a folding that brings every layer to at most ``target`` cycles per frame.

    Each layer gets the least parallelism that meets the target (so the layers are balanced
    rather than each made as fast as possible), preferring ``simd <= max_simd`` and then the
    wider ``simd``, which needs fewer memory banks. A layer that cannot meet the target is
    unfolded as far as it goes. Without a ``target``, it is the weight bits of the whole
    network divided by ``bits_per_cycle``: 64 keeps a digits-sized network within a UP5K's
    LUTs.
    """
    if target is None:
        target = max(1, math.ceil(net.weight_bits() / bits_per_cycle))
    if not isinstance(target, int) or isinstance(target, bool) or target <= 0:
        raise FoldingError(f"target must be a positive integer, not {target!r}")
    folding = []
    for layer in net.layers:
        candidates = [(layer.figures(fold).cycles, fold) for fold in layer.fold_candidates()]
        fits = [fold for cycles, fold in candidates if cycles <= target]
        if fits:
            folding.append(min(fits, key=lambda f: layer.fold_preference(f, max_simd=max_simd)))
        else:
            fastest = min(cycles for cycles, _ in candidates)
            folding.append(min((f for c, f in candidates if c == fastest),
                               key=lambda f: layer.fold_preference(f, max_simd=max_simd)))
    return tuple(folding)


def cycle_targets(net):
    """Every cycle count per frame some layer of ``net`` reaches with some folding, ascending."""
    return sorted({layer.figures(fold).cycles for layer in net.layers
                   for fold in layer.fold_candidates()})


def parse_folding(net, pe=None, simd=None):
    """Build a folding from per-layer lists as a command line gives them.

    ``pe`` and ``simd`` are lists with one integer per layer (``None`` for a layer whose kind
    has no such parameter), or ``None`` to take that half from :func:`default_folding`.
    """
    default = default_folding(net)
    given = {"pe": pe, "simd": simd}
    for name, values in given.items():
        if values is not None and len(values) != len(net.layers):
            raise FoldingError(f"{name} has {len(values)} values, but the network has "
                               f"{len(net.layers)} layers")
    folding = []
    for n, (layer, fold) in enumerate(zip(net.layers, default)):
        values = fold.as_dict()
        for name, options in given.items():
            if options is None or options[n] is None:
                continue
            if name not in layer.FOLDING:
                raise FoldingError(f"layers[{n}]: a {layer.kind} layer has no {name} "
                                   f"(give - for it)")
            values[name] = options[n]
        folding.append(values)
    return check_folding(net, folding)


def folding_from_args(net, args, *, default=None):
    """The folding a command's parsed ``args`` ask for (``pe``, ``simd``, ``target``,
    ``folding``: absent ones count as not given); see :func:`folding_from_options`."""
    return folding_from_options(net, pe=getattr(args, "pe", None),
                                simd=getattr(args, "simd", None),
                                target=getattr(args, "target", None),
                                file=getattr(args, "folding", None), default=default)


def folding_from_options(net, *, pe=None, simd=None, target=None, file=None, default=None):
    """The folding that command-line options ask for, checked against ``net``.

    ``pe``/``simd``: per-layer lists (:func:`parse_folding`); ``target``: cycles per frame for
    :func:`default_folding`; ``file``: a folding file (:func:`load_folding`); with none of
    them, ``default()`` if given, else :func:`default_folding`.
    """
    from .errors import BnnhwError
    given = [name for name, value in (("--pe/--simd", pe if pe is not None else simd),
                                      ("--target", target), ("--folding", file))
             if value is not None]
    if len(given) > 1:
        raise BnnhwError(f"{' and '.join(given)} each pick a folding; give one of them")
    if file is not None:
        return load_folding(file, net)
    if target is not None and target <= 0:
        raise BnnhwError(f"--target must be a positive number of cycles, not {target}")
    if pe is None and simd is None:
        if target is None and default is not None:
            return check_folding(net, default())
        return check_folding(net, default_folding(net, target=target))
    return parse_folding(net, pe=pe, simd=simd)


def memory_from_options(net, memory=None, *, default="block"):
    """The memory styles a ``--memory`` option asks for (a list of one style, or one per
    layer; None for ``default``), as a tuple with one per layer."""
    from .gateware.plan import check_memories
    if memory is None:
        memory = default
    elif len(memory) == 1:
        memory = memory[0]
    try:
        return check_memories(memory, len(net.layers))
    except ValueError as error:
        raise FoldingError(f"--memory: {error}") from None


def save_folding(path, net, folding, *, cycles_per_frame=None):
    """Write ``folding`` (for ``net``) as a folding file at ``path``, atomically."""
    folding = check_folding(net, folding)
    document = {"format": FOLDING_FORMAT, "version": FOLDING_VERSION,
                "kinds": [layer.kind for layer in net.layers],
                "layers": [fold.as_dict() for fold in folding]}
    if cycles_per_frame is not None:
        document["cycles_per_frame"] = int(cycles_per_frame)
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(document, indent=1) + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_folding(path, net):
    """Read a folding file and check it against ``net``; raise :class:`FoldingError` naming
    the file and what is wrong."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise FoldingError(f"{path}: no such folding file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise FoldingError(f"{path}: cannot read ({error})") from None
    except json.JSONDecodeError as error:
        raise FoldingError(f"{path}: not a folding file: invalid JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FOLDING_FORMAT:
        raise FoldingError(f"{path}: not a folding file (format "
                           f"{document.get('format') if isinstance(document, dict) else None!r},"
                           f" expected {FOLDING_FORMAT!r})")
    if document.get("version") != FOLDING_VERSION:
        raise FoldingError(f"{path}: version {document.get('version')!r}; this bnnhw reads "
                           f"version {FOLDING_VERSION}")
    kinds = [layer.kind for layer in net.layers]
    if document.get("kinds") != kinds:
        raise FoldingError(f"{path}: kinds {document.get('kinds')!r} are not the network's "
                           f"layers {kinds!r}")
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise FoldingError(f"{path}: layers: expected a list, not {layers!r}")
    try:
        return check_folding(net, layers)
    except FoldingError as error:
        raise FoldingError(f"{path}: {error}") from None


def format_folding(folding):
    """``(1, 8) (1, 16) (1, 2)``: a folding as the command line and logs show it."""
    return " ".join(f"({', '.join(str(v) for v in fold.as_dict().values())})"
                    if fold.as_dict() else "(-)" for fold in folding)
