"""Folding: how many neurons (PE) and input features (SIMD) a layer engine handles per cycle.

Folding is a generator option, kept apart from the network file (DESIGN.md section 1). A layer
with ``MH`` neurons over a fan-in of ``MW`` is folded by ``pe`` (divides ``MH``) and ``simd``
(divides ``MW``), and takes ``(MH / pe) * (MW / simd)`` cycles per frame.

A folding configuration for a network is a sequence with one entry per layer, each a
:class:`LayerFolding`, a ``(pe, simd)`` pair or a ``{"pe": .., "simd": ..}`` mapping.
"""

import math
from dataclasses import dataclass

from .errors import BnnhwError

__all__ = [
    "FoldingError", "LayerFolding", "divisors", "check_layer", "check_folding",
    "default_folding", "parse_folding", "MEMORIES", "check_memory",
]


class FoldingError(BnnhwError):
    """A folding does not fit the network (PE or SIMD not dividing, wrong count, ...)."""


@dataclass(frozen=True)
class LayerFolding:
    """Folding of one layer: ``pe`` neurons and ``simd`` input features per cycle."""
    pe: int
    simd: int


MEMORIES = ("block", "distributed")


def check_memory(memory):
    """Check a memory style: ``"block"`` or ``"distributed"`` RAM for weights and buffers."""
    if memory not in MEMORIES:
        raise ValueError(f"memory must be one of {', '.join(map(repr, MEMORIES))}, "
                         f"not {memory!r}")
    return memory


def divisors(n):
    """Positive divisors of ``n``, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def _allowed(n):
    return ", ".join(map(str, divisors(n)))


def check_layer(layer, pe, simd, where="layer"):
    """Check ``pe``/``simd`` for ``layer``; raise :class:`FoldingError` naming ``where``."""
    mh, mw = layer.fan_out, layer.fan_in
    for name, value, n, what in (("pe", pe, mh, "neurons"), ("simd", simd, mw, "inputs")):
        if not isinstance(value, int) or isinstance(value, bool):
            raise FoldingError(f"{where}: {name} must be an integer, not {value!r}")
        if value <= 0:
            raise FoldingError(f"{where}: {name} must be a positive integer, not {value}")
        if n % value:
            raise FoldingError(f"{where}: {name} {value} does not divide the {n} {what}; "
                               f"allowed: {_allowed(n)}")
    return LayerFolding(pe, simd)


def _entry(entry, where):
    if isinstance(entry, LayerFolding):
        return entry.pe, entry.simd
    if isinstance(entry, dict) and set(entry) == {"pe", "simd"}:
        return entry["pe"], entry["simd"]
    if isinstance(entry, (tuple, list)) and len(entry) == 2:
        return tuple(entry)
    raise FoldingError(f"{where}: expected a (pe, simd) pair, not {entry!r}")


def check_folding(net, folding):
    """Return ``folding`` for ``net`` as a tuple of :class:`LayerFolding`, checked."""
    if isinstance(folding, (str, bytes, dict)) or not hasattr(folding, "__len__"):
        raise FoldingError(f"folding must be a sequence of (pe, simd) pairs, not {folding!r}")
    if len(folding) != len(net.layers):
        raise FoldingError(f"folding has {len(folding)} entries, but the network has "
                           f"{len(net.layers)} layers")
    return tuple(check_layer(layer, *_entry(entry, f"layers[{n}]"), where=f"layers[{n}]")
                 for n, (layer, entry) in enumerate(zip(net.layers, folding)))


def parse_folding(net, pe=None, simd=None):
    """Build a folding from per-layer lists as a command line gives them.

    ``pe`` and ``simd`` are lists with one integer per layer, or ``None`` to take that half
    from :func:`default_folding`.
    """
    default = default_folding(net)
    for name, values in (("pe", pe), ("simd", simd)):
        if values is not None and len(values) != len(net.layers):
            raise FoldingError(f"{name} has {len(values)} values, but the network has "
                               f"{len(net.layers)} layers")
    pe = pe if pe is not None else [f.pe for f in default]
    simd = simd if simd is not None else [f.simd for f in default]
    return check_folding(net, list(zip(pe, simd)))


def default_folding(net, *, target=None, bits_per_cycle=64, max_simd=64):
    """Pick a folding that brings every layer to at most ``target`` cycles per frame.

    Each layer gets the least parallelism ``pe * simd`` that meets the target (so the layers
    are balanced rather than each made as fast as possible), preferring ``simd <= max_simd``
    and then the wider ``simd``, which needs fewer memory banks. A layer that cannot meet the
    target is fully unfolded. Without a ``target``, it is the weight bits of the whole network
    divided by ``bits_per_cycle``: 64 keeps a digits-sized network within a UP5K's LUTs.
    """
    if target is None:
        target = max(1, math.ceil(net.weight_bits() / bits_per_cycle))
    if not isinstance(target, int) or target <= 0:
        raise FoldingError(f"target must be a positive integer, not {target!r}")
    folding = []
    for layer in net.layers:
        mh, mw = layer.fan_out, layer.fan_in
        fits = [(pe * simd, simd > max_simd, -simd, pe, simd)
                for pe in divisors(mh) for simd in divisors(mw)
                if (mh // pe) * (mw // simd) <= target]
        _, _, _, pe, simd = min(fits) if fits else (0, 0, 0, mh, mw)
        folding.append(LayerFolding(pe, simd))
    return tuple(folding)
