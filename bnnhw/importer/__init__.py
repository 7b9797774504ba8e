"""``bnnhw import``: binarized QONNX / ONNX models (Brevitas, FINN) as bnnhw network files.

:mod:`.graph` folds a graph into layer kinds, :mod:`.chain` derives their integers with the
QONNX executor, :mod:`.agree` runs the graph and the network file side by side. Needs the
``import`` extra (qonnx, onnx, onnxruntime); nothing else in bnnhw imports this package.
"""

from .chain import ImportRefused
from .graph import SUPPORTED, Imported, import_model

__all__ = ["ImportRefused", "SUPPORTED", "Imported", "import_model"]
