"""The golden model: the bit-exact specification of what a bnnhw network computes.

Pure numpy and integers. Every other stage (torch in eval mode, Amaranth's simulator, Verilator,
the board) is judged against :func:`run` with ``==``. Each layer kind's semantics is its
:meth:`~bnnhw.kinds.Layer.golden` function, documented in its file in :mod:`bnnhw.kinds`; this
module walks a network through them.
"""

from dataclasses import dataclass

import numpy as np

from .errors import ArtifactError

__all__ = ["Result", "run", "argmax", "check_inputs"]


@dataclass(frozen=True)
class Result:
    """Everything the golden model computes for a batch of ``B`` frames.

    ``activations[n]`` is layer ``n``'s output, ``(B, values)`` in stream order, for every
    layer but the last; ``scores`` is ``(B, classes)`` int64; ``classes`` is ``(B,)`` int64.
    """
    activations: list
    scores: np.ndarray
    classes: np.ndarray


def argmax(scores):
    """Index of the largest score per row; ties go to the lowest index (as numpy's argmax)."""
    return np.argmax(scores, axis=-1).astype(np.int64)


def check_inputs(net, x):
    """``x`` as a ``(B, input_size)`` integer array of valid input values; one frame may be
    given alone. Raises :class:`ArtifactError`."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != net.input_size:
        raise ArtifactError(f"inputs of shape {x.shape} do not match the network's input of "
                            f"{net.input_size} values per frame")
    if x.dtype.kind not in "iub":
        raise ArtifactError(f"inputs must be integers, not {x.dtype}")
    if x.size and (x.min() < 0 or x.max() >= net.input.limit):
        raise ArtifactError(f"input values must be {net.input_bits}-bit unsigned integers "
                            f"(0..{net.input.limit - 1}), not {x.min()}..{x.max()}")
    return x


def run(net, x):
    """Run frames ``x`` (``(B, input_size)`` unsigned ints in stream order, or one frame)
    through ``net``."""
    values = check_inputs(net, x)
    activations = []
    for layer in net.layers:
        values = layer.golden(values)
        activations.append(values)
    scores = activations.pop()
    return Result(activations=activations, scores=scores, classes=argmax(scores))
