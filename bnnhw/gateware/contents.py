"""The trained contents of a design's read-only memories, seen and swapped at elaboration.

A patchable build (:data:`~.plan.PATCHABLE`) is elaborated twice over the same logic: once with
every ROM of trained contents (weights, thresholds, class biases) filled with *keys*, random
words that no other memory of the design holds, and once with the network's own words. The
bitstream is placed and routed with the keys; the network's words, and later a retrained
network's, replace them in the bitstream (:mod:`bnnhw.boards.patch`), and the tools find each
memory by its keys.

Components ask :func:`rom_words` for the words of each such ROM in the order they elaborate.
Outside a :class:`RomLog`, it returns the words unchanged.
"""

import contextvars
from dataclasses import dataclass

import numpy as np

from .plan import KEY_DEPTH

__all__ = ["Rom", "RomLog", "rom_words"]

_LOG = contextvars.ContextVar("bnnhw_rom_log", default=None)


@dataclass(frozen=True)
class Rom:
    """One ROM of trained contents, as elaborated: its name in the component, width, depth,
    the network's words and the words it was built with (the same, or keys)."""
    name: str
    width: int
    depth: int
    words: tuple
    built: tuple


class RomLog:
    """Within ``with RomLog(keys=seed) as log:``, every ROM that asks :func:`rom_words` is
    recorded in ``log.roms``, in order, and with ``keys`` (an integer seed) built from keys
    instead of its words. Keys are random words whose 256-word columns are all distinct, none
    all zero, across every ROM of the log, so the same seed gives the same keys for the same
    memories."""

    def __init__(self, *, keys=None):
        if keys is not None and (not isinstance(keys, int) or isinstance(keys, bool)):
            raise TypeError(f"keys must be an integer seed or None, not {keys!r}")
        self.keys = keys
        self.roms = []
        self._rng = None if keys is None else np.random.default_rng(keys)
        self._columns = set()
        self._token = None

    def __enter__(self):
        self._token = _LOG.set(self)
        return self

    def __exit__(self, *exc):
        _LOG.reset(self._token)

    def _key(self, width, depth):
        if depth < KEY_DEPTH:
            raise ValueError(f"a ROM of {depth} words cannot hold keys: keyed ROMs are at "
                             f"least {KEY_DEPTH} words deep (build it patchable)")
        blocks = -(-depth // KEY_DEPTH)
        for _ in range(100):
            bits = self._rng.integers(0, 2, size=(blocks * KEY_DEPTH, width), dtype=np.uint8)
            bits[depth:] = 0
            columns = {bits[b * KEY_DEPTH:(b + 1) * KEY_DEPTH, c].tobytes()
                       for b in range(blocks) for c in range(width)}
            zero = bytes(KEY_DEPTH)
            if len(columns) == blocks * width and zero not in columns \
                    and not columns & self._columns:
                self._columns |= columns
                packed = np.packbits(bits[:depth], axis=1, bitorder="little")
                return tuple(int.from_bytes(row.tobytes(), "little") for row in packed)
        raise RuntimeError("no distinct keys found in 100 draws")

    def record(self, name, width, depth, words):
        words = tuple(int(w) for w in words) + (0,) * (depth - len(words))
        built = words if self.keys is None else self._key(width, depth)
        self.roms.append(Rom(name=name, width=width, depth=depth, words=words, built=built))
        return list(built)


def rom_words(name, width, depth, words):
    """The words to build ROM ``name`` (``width`` bits, ``depth`` words) from, for its trained
    ``words``: the words themselves, or keys inside a :class:`RomLog` with keys."""
    log = _LOG.get()
    if log is None:
        return list(words)
    return log.record(name, width, depth, words)
