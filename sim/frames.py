"""What crosses the network top's ports, as numpy arrays, and what the benches make of it.

Both simulation paths (the cocotb bench and the C++ fast path) take their input beats from
:func:`encode_frames` and hand back a :class:`Trace`: per frame, the cycles of its first and
last input beat and of its result, and the raw ``o__payload`` words. :func:`decode_results`,
:func:`mismatches` and :func:`timing` then judge both paths with the same code, so they can only
disagree if the simulations themselves do.

The ports and their packing are the contract of :mod:`bnnhw.gateware.ports`
(:class:`~bnnhw.gateware.ports.Ports`).
"""

from dataclasses import dataclass

import numpy as np

from ..gateware.ports import Ports

__all__ = [
    "Ports", "Trace", "Timing", "Mismatch", "encode_frames", "decode_results", "mismatches",
    "timing",
]


def _pack_words(bits, n_words):
    """Pack ``(..., n)`` 0/1 into ``(..., n_words)`` little-endian uint32 words (zero padded)."""
    pad = n_words * 32 - bits.shape[-1]
    bits = np.concatenate([bits, np.zeros(bits.shape[:-1] + (pad,), np.uint8)], axis=-1)
    packed = np.packbits(bits, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u4")


def encode_frames(x, ports):
    """Input beats of frames ``x`` (``(F, n_pixels)``): ``(F, beats, in_words)`` uint32."""
    x = np.asarray(x, dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != ports.n_pixels:
        raise ValueError(f"frames of shape {x.shape} do not match the top's "
                         f"{ports.n_pixels} pixels per frame")
    if x.size and (x.min() < 0 or x.max() >= 1 << ports.in_bits):
        raise ValueError(f"pixel values {x.min()}..{x.max()} do not fit "
                         f"{ports.in_bits}-bit inputs")
    frames = len(x)
    bits = ((x[:, :, None] >> np.arange(ports.in_bits)) & 1).astype(np.uint8)
    bits = bits.reshape(frames, ports.beats, ports.in_simd * ports.in_bits)
    last = np.zeros((frames, ports.beats, 1), np.uint8)
    last[:, -1] = 1
    return _pack_words(np.concatenate([bits, last], axis=-1), ports.in_words)


def decode_results(words, ports):
    """Classes ``(F,)`` and scores ``(F, classes)`` (int64) from ``(F, out_words)`` payloads."""
    words = np.ascontiguousarray(np.asarray(words, dtype="<u4"))
    bits = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little").astype(np.int64)
    if ports.score_width > 62 or ports.cls_width > 62:
        raise ValueError(f"score width {ports.score_width} is beyond the 62 bits decoded here")
    cls = bits[:, :ports.cls_width] @ (1 << np.arange(ports.cls_width, dtype=np.int64))
    weights = 1 << np.arange(ports.score_width, dtype=np.int64)
    start = ports.cls_width
    fields = bits[:, start:start + ports.classes * ports.score_width]
    raw = fields.reshape(len(bits), ports.classes, ports.score_width) @ weights
    sign = 1 << (ports.score_width - 1)
    return cls, (raw ^ sign) - sign


@dataclass(frozen=True)
class Trace:
    """What a simulation observed for ``timing + frames`` frames (phase A, then phase B).

    Phase A streams the first ``timing`` frames with no stalls and drains; phase B streams all
    frames with the requested stalls. Cycles count rising clock edges after reset.
    """
    timing: int
    first: np.ndarray      # cycle of each frame's first input beat transfer
    last: np.ndarray       # cycle of its last input beat transfer
    done: np.ndarray       # cycle of its result transfer
    payloads: np.ndarray   # (timing + frames, out_words) uint32 o__payload
    cycles: int            # cycles simulated in all
    completed: bool        # False if the simulation gave up waiting (the DUT hung)
    results: int           # results received (all of them if completed)
    status: int = 1        # a top with run-time weights: its final LoadStatus (1: READY)
    load_cycles: int = 0   # ... and the cycles until its image was checked


@dataclass(frozen=True)
class Mismatch:
    """One frame whose result differs from the golden model."""
    frame: int
    expected_class: int
    expected_scores: tuple
    got_class: int
    got_scores: tuple

    def __str__(self):
        return (f"frame {self.frame}: expected class {self.expected_class} scores "
                f"{list(self.expected_scores)}, got class {self.got_class} scores "
                f"{list(self.got_scores)}")


def mismatches(classes, scores, expected_classes, expected_scores, frames=None):
    """Frames where ``classes``/``scores`` differ from the expected ones, compared with ``==``.

    ``frames`` gives the frame index of each row (default ``0, 1, ...``).
    """
    frames = np.arange(len(classes)) if frames is None else np.asarray(frames)
    bad = (classes != expected_classes) | (scores != expected_scores).any(axis=-1)
    return [Mismatch(int(frames[k]), int(expected_classes[k]), tuple(map(int, expected_scores[k])),
                     int(classes[k]), tuple(map(int, scores[k]))) for k in np.flatnonzero(bad)]


@dataclass(frozen=True)
class Timing:
    """Cycle figures of a trace.

    ``interval``: steady-state cycles between results with no stalls (phase A, second half);
    ``steady``: whether those intervals were all equal; ``latency``: cycles from frame 0's first
    input beat to its result in an empty pipeline; ``stalled_interval``: mean cycles per frame
    in phase B, with stalls.
    """
    interval: float
    steady: bool
    latency: int
    stalled_interval: float


def timing(trace):
    """Measure a :class:`Trace`; figures that cannot be measured are ``nan`` / ``-1``."""
    a = trace.timing
    done = trace.done[:a]
    tail = np.diff(done[a // 2:]) if a >= 3 else np.array([])
    if len(tail) == 0 and a >= 2:
        tail = np.diff(done)
    interval = float(np.median(tail)) if len(tail) else float("nan")
    steady = bool(len(tail) and tail.min() == tail.max())
    latency = int(trace.done[0] - trace.first[0]) if a >= 1 else -1
    b = trace.done[a:]
    stalled = float((b[-1] - trace.first[a]) / len(b)) if len(b) else float("nan")
    return Timing(interval=interval, steady=steady, latency=latency, stalled_interval=stalled)
