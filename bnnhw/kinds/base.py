"""The contract every layer kind meets.

A layer kind is one class, a frozen dataclass deriving from :class:`Layer`, in one file of
this package, registered by name in :mod:`bnnhw.kinds`. Everything bnnhw knows about the kind
is there:

- its arrays (``ARRAYS``: name -> ``"bits"`` or ``"int"``) and JSON parameters (``PARAMS``),
  and :meth:`Layer.check`, which checks them against the tensor the layer takes and returns
  the tensor it produces (so networks chain by tensor shape, not by position);
- its golden function, :meth:`Layer.golden`, the bit-exact specification, and the same
  semantics as plain unfolded logic, :meth:`Layer.logic`, for the reference top;
- its hardware: the folding parameters (``FOLDING``) and what they must divide
  (:meth:`Layer.fold_dims`), its :meth:`Layer.figures` (cycles, pipeline depth, latency,
  memories, datapath size: the same plan the gateware sizes itself from) and the stream stage
  it elaborates to (:meth:`Layer.engine`);
- its row in ``bnnhw info`` (:meth:`Layer.notes`, :meth:`Layer.acc_bits`).

A kind that ends a network produces class scores (``PRODUCES_SCORES``) and has
``score_bounds``; its stage's output stream carries one result beat per frame
(:func:`bnnhw.gateware.ports.result_layout`) instead of a tensor.

Nothing outside this package branches on a kind's name: code that handles layers calls these
methods.
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import ArtifactError, FoldingError
from ..folding import LayerFolding, divisors
from ..tensor import Tensor

__all__ = ["Layer", "Figures", "Checker", "INT_LIMIT"]

# Values beyond this would not fit the 64-bit integers the golden model computes with.
INT_LIMIT = 1 << 40


class Checker:
    """Raises :class:`ArtifactError` as ``SOURCE: WHERE: MESSAGE``; ``where`` is a prefix such
    as ``layers[2]`` that :meth:`at` extends."""

    def __init__(self, source, where=""):
        self.source, self.where = source, where

    def at(self, suffix):
        """A checker for ``where + suffix`` (``.thresholds``, ``[3]``)."""
        return Checker(self.source, self.where + suffix)

    def fail(self, message, suffix=""):
        where = self.where + suffix
        raise ArtifactError(f"{self.source}: {where}: {message}" if where
                            else f"{self.source}: {message}")

    def __call__(self, ok, message, suffix=""):
        if not ok:
            self.fail(message, suffix)

    def array(self, name, array, shape, *, binary=False):
        """Check an integer array's type, dtype, shape and (for ``binary``) its values; only
        ``binary`` arrays may be booleans."""
        at = self.at(f".{name}")
        at(isinstance(array, np.ndarray), f"expected an array, not {type(array).__name__}")
        at(array.dtype.kind in ("iub" if binary else "iu"),
           f"dtype {array.dtype} is not an integer type" + (
               " (NaN or fractional values cannot be thresholds)"
               if array.dtype.kind == "f" else ""))
        at(array.shape == tuple(shape),
           f"shape {array.shape} does not match the expected {tuple(shape)}")
        if binary and array.size:
            at(bool(((array == 0) | (array == 1)).all()), "values other than 0 and 1")
        if array.size and array.dtype.kind != "b":
            big = (int(array.max()) >= INT_LIMIT if array.dtype == np.uint64 else
                   int(np.abs(array.astype(np.int64)).max()) >= INT_LIMIT)
            at(not big, "values beyond +-2**40")

    def range(self, name, array, lo, hi):
        """Check that every value of ``array`` is in ``lo..hi``."""
        if array.size:
            self.at(f".{name}")(bool(((array >= lo) & (array <= hi)).all()),
                                f"values outside {lo}..{hi}")


@dataclass(frozen=True)
class Figures:
    """What a layer's stage costs and does per frame, from the plan its gateware is built by.

    ``cycles`` per frame in steady state; ``depth`` pipeline cycles after the last input read;
    ``latency`` the cycles it adds to a frame's trip through an idle network; ``in_count`` /
    ``out_count`` values per beat on its input and output streams (``out_count`` is 1 for a
    stage that emits a result beat); ``memories`` every memory it instantiates
    (:class:`~bnnhw.gateware.plan.MemoryPlan`); ``logic`` the sizes the fit estimate prices:
    ``xnor`` binary terms and ``adder_bits`` multi-bit add/subtract term bits summed per cycle,
    ``product_bits`` the bits of a multi-base layer's constant-coefficient products, ``stages``
    control blocks (counters, handshakes).
    """
    kind: str
    input: Tensor
    output: object           # Tensor, or None for a stage that emits class results
    fold: LayerFolding
    cycles: int
    depth: int
    latency: int
    in_count: int
    out_count: int
    memories: tuple = ()
    logic: dict = dataclasses.field(default_factory=dict)
    stream: object = None    # (first_in, last_in) -> (first_out, last_out): see timeline()

    def timeline(self, first_in, last_in):
        """When the stage's first and last output beats of a frame leave, in an otherwise idle
        network, given when its first and last input beats arrive. By default a stage needs
        its whole input first: the last output ``latency`` cycles after the last input, the
        first ``cycles`` earlier. A streaming stage (a convolution) gives ``stream``."""
        if self.stream is not None:
            return self.stream(first_in, last_in)
        last = last_in + self.latency
        return max(first_in, last - self.cycles), last

    @property
    def memory_bits(self):
        """Bits in instantiated memories (block or distributed RAM and ROM)."""
        return sum(m.bits for m in self.memories if m.instantiated)

    @property
    def register_bits(self):
        """Bits of buffers built from flip-flops."""
        return sum(m.bits for m in self.memories if m.style == "registers")


@dataclass(frozen=True, eq=False)
class Layer:
    """Base class of the layer kinds (see the module docstring).

    Subclasses are frozen dataclasses whose fields are their arrays and parameters. The tensor
    a layer takes is bound by :func:`bnnhw.artifact.network` (``input``); until then it is
    :meth:`default_input`, if the kind can infer one from its arrays.
    """
    KIND: ClassVar[str] = ""
    ARRAYS: ClassVar[dict] = {}          # array name -> "bits" (0/1, uint8) or "int" (int64)
    PARAMS: ClassVar[tuple] = ()         # names of integer parameters kept in the manifest
    FOLDING: ClassVar[tuple] = ("pe", "simd")
    PRODUCES_SCORES: ClassVar[bool] = False

    # ---- specification ---------------------------------------------------------------------

    @property
    def kind(self):
        return self.KIND

    @property
    def input(self):
        """The tensor this layer takes (bound by the network, or inferred)."""
        bound = self.__dict__.get("_input")
        return bound if bound is not None else self.default_input()

    def default_input(self):
        """The tensor this layer takes when not bound to a network; None if it cannot tell."""
        return None

    def bind(self, tensor, output=None):
        """Return a copy of this layer that takes ``tensor`` (not checked: see :meth:`check`,
        whose result may be passed as ``output``)."""
        layer = dataclasses.replace(self)
        object.__setattr__(layer, "_input", tensor)
        if output is not None:
            object.__setattr__(layer, "_output", output)
        return layer

    @property
    def output(self):
        """The tensor this layer produces (None for a layer that produces class scores)."""
        if "_output" not in self.__dict__:
            object.__setattr__(self, "_output", self.check(self.input, Checker("<layer>")))
        return self.__dict__["_output"]

    def canonical(self):
        """This layer with its arrays in the dtypes bnnhw computes with."""
        arrays = {name: np.ascontiguousarray(getattr(self, name),
                                             dtype=np.uint8 if kind == "bits" else np.int64)
                  for name, kind in self.ARRAYS.items()}
        layer = dataclasses.replace(self, **arrays)
        if "_input" in self.__dict__:
            object.__setattr__(layer, "_input", self.__dict__["_input"])
        return layer

    def check(self, tensor, check):
        """Check the layer against the ``tensor`` it takes; return the tensor it produces.

        ``check`` is a :class:`Checker` naming the layer (``layers[2]``). Raises
        :class:`ArtifactError`.
        """
        raise NotImplementedError

    def golden(self, x):
        """The layer's output for inputs ``x``, ``(frames, input.size)`` integers in stream
        order: ``(frames, output.size)`` values, or ``(frames, classes)`` int64 scores."""
        raise NotImplementedError

    def logic(self, values):
        """The layer's semantics as plain combinational Amaranth logic, unfolded: the output
        values (or scores) for a list of input ``values`` in stream order. Slow and obviously
        right; the reference top and formal checks use it."""
        raise NotImplementedError

    @property
    def weight_bits(self):
        """Binary weights the layer holds."""
        return sum(getattr(self, name).size for name, kind in self.ARRAYS.items()
                   if kind == "bits")

    def acc_bits(self):
        """Width of the layer's accumulator, for ``bnnhw info`` (None if it has none)."""
        return None

    def notes(self):
        """A few words for ``bnnhw info``."""
        return ""

    # ---- hardware ------------------------------------------------------------------------

    def fold_dims(self):
        """``{parameter: (size it must divide, what the size counts)}`` for :attr:`FOLDING`."""
        return {}

    def check_fold(self, entry, where="layer"):
        """Return ``entry`` (a :class:`LayerFolding`, a tuple in :attr:`FOLDING` order or a
        mapping) as a checked :class:`LayerFolding`; raise :class:`FoldingError` naming
        ``where``, the value and the allowed values."""
        names = self.FOLDING
        if isinstance(entry, LayerFolding):
            values = entry.as_dict()
        elif isinstance(entry, dict):
            values = dict(entry)
        elif isinstance(entry, (tuple, list)) and len(entry) == len(names):
            values = dict(zip(names, entry))
        elif entry is None and not names:
            values = {}
        else:
            what = {0: "nothing", 1: f"a ({names[0]},) value", 2: f"a ({', '.join(names)}) pair"}
            raise FoldingError(f"{where}: expected "
                               f"{what.get(len(names), '(' + ', '.join(names) + ')')}, "
                               f"not {entry!r}")
        if set(values) != set(names):
            raise FoldingError(f"{where}: expected the folding parameters "
                               f"{', '.join(names) or 'none'}, not {', '.join(values) or 'none'}")
        for name, (size, what) in self.fold_dims().items():
            value = values[name]
            if not isinstance(value, int) or isinstance(value, bool):
                raise FoldingError(f"{where}: {name} must be an integer, not {value!r}")
            if value <= 0:
                raise FoldingError(f"{where}: {name} must be a positive integer, not {value}")
            if size % value:
                raise FoldingError(f"{where}: {name} {value} does not divide the {size} {what}; "
                                   f"allowed: {', '.join(map(str, divisors(size)))}")
        return LayerFolding(**{name: values[name] for name in names})

    def fold_candidates(self):
        """Every folding the layer accepts."""
        dims = self.fold_dims()
        options = [[(name, d) for d in divisors(dims[name][0])] for name in self.FOLDING]
        return [LayerFolding(**dict(choice)) for choice in _product(options)]

    def fold_preference(self, fold, *, max_simd=64):
        """Sort key among foldings that meet a cycle target: least parallelism first, then
        ``simd`` up to ``max_simd`` and wider (fewer memory banks)."""
        values = fold.as_dict()
        simd = values.get("simd", 0)
        return (math.prod(values.values()), simd > max_simd, -simd, tuple(values.values()))

    def figures(self, fold, memory="block"):
        """The :class:`Figures` of this layer folded by ``fold`` (checked)."""
        raise NotImplementedError

    def memory_words(self, fold, name):
        """The contents of the memory ``name`` of this layer's figures (folded by ``fold``),
        word by word in address order: what a weight image loads into a memory whose style
        has no contents in the bitstream (:mod:`bnnhw.gateware.weights`)."""
        raise NotImplementedError

    def engine(self, fold, memory="block"):
        """The gateware stage of this layer, folded by ``fold``: an Amaranth component with
        streams ``i`` (beats of ``in_count`` input values) and ``o`` (beats of ``out_count``
        output values, or result beats), bit-exact with :meth:`golden`. If its figures have
        memories loaded at run time, it also has a ``load`` port
        (:func:`bnnhw.gateware.weights.write_signature` of their 16-bit columns, in order)."""
        raise NotImplementedError


def _product(options):
    if not options:
        yield ()
        return
    for head in options[0]:
        for rest in _product(options[1:]):
            yield (head,) + rest
