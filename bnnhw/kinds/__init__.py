"""Layer kinds: one file per kind, one registry.

Each kind is a :class:`~bnnhw.kinds.base.Layer` subclass holding everything bnnhw knows about
it (see :mod:`bnnhw.kinds.base`). :data:`KINDS` maps the names used in network files to them;
adding a kind is one file in this package and one line here (or a call to :func:`register`).
"""

from .abc import MultiBaseLayer
from .abc_conv import MultiBaseConvLayer
from .abc_output import MultiBaseOutputLayer
from .base import Checker, Figures, Layer
from .binarize import BinarizeLayer
from .conv import ConvLayer
from .dense import DenseLayer
from .first import FirstLayer
from .first_conv import FirstConvLayer
from .maxpool import MaxPoolLayer
from .output import OutputLayer

__all__ = ["KINDS", "register", "get_kind", "Layer", "Figures", "Checker",
           "FirstLayer", "DenseLayer", "OutputLayer", "FirstConvLayer", "ConvLayer",
           "MaxPoolLayer", "BinarizeLayer", "MultiBaseLayer", "MultiBaseOutputLayer",
           "MultiBaseConvLayer"]

KINDS = {}


def register(kind):
    """Add the :class:`Layer` subclass ``kind`` to the registry under ``kind.KIND``; return it."""
    if not (isinstance(kind, type) and issubclass(kind, Layer)) or not kind.KIND:
        raise TypeError(f"a layer kind must be a Layer subclass with a KIND name, not {kind!r}")
    if KINDS.get(kind.KIND, kind) is not kind:
        raise ValueError(f"layer kind {kind.KIND!r} is already registered as "
                         f"{KINDS[kind.KIND].__name__}")
    KINDS[kind.KIND] = kind
    return kind


def get_kind(name):
    """The kind registered as ``name``, or None."""
    return KINDS.get(name)


for _kind in (FirstLayer, DenseLayer, OutputLayer, FirstConvLayer, ConvLayer, MaxPoolLayer,
              BinarizeLayer, MultiBaseLayer, MultiBaseOutputLayer, MultiBaseConvLayer):
    register(_kind)
