"""Folding: how much of a layer its gateware computes per cycle.

Folding is a generator option, kept apart from the network file (DESIGN.md section 1). Each
layer kind names its folding parameters and what they must divide (a matrix layer of ``MH``
neurons over a fan-in of ``MW`` is folded by ``pe``, dividing ``MH``, and ``simd``, dividing
``MW``, and takes ``(MH / pe) * (MW / simd)`` cycles per frame); see
:meth:`bnnhw.kinds.base.Layer.fold_dims`.

A folding configuration for a network is a sequence with one entry per layer, each a
:class:`LayerFolding`, a tuple of the kind's parameters in order (``(pe, simd)``) or a mapping
(``{"pe": .., "simd": ..}``). :func:`folding_from_options` turns the command line's
``--pe``/``--simd``/``--target`` into one; every command uses it.
"""

import math

from .errors import FoldingError

__all__ = [
    "FoldingError", "LayerFolding", "divisors", "check_folding", "default_folding",
    "parse_folding", "folding_from_options", "memory_from_options", "format_folding",
]


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


def folding_from_options(net, *, pe=None, simd=None, target=None, default=None):
    """The folding that command-line options ask for, checked against ``net``.

    ``pe``/``simd``: per-layer lists (:func:`parse_folding`); ``target``: cycles per frame for
    :func:`default_folding`; with none of them, ``default()`` if given, else
    :func:`default_folding`.
    """
    from .errors import BnnhwError
    if target is not None and (pe is not None or simd is not None):
        raise BnnhwError("--target picks a folding; give it or --pe/--simd, not both")
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


def format_folding(folding):
    """``(1, 8) (1, 16) (1, 2)``: a folding as the command line and logs show it."""
    return " ".join(f"({', '.join(str(v) for v in fold.as_dict().values())})"
                    if fold.as_dict() else "(-)" for fold in folding)
