"""The base of bnnhw's user-facing errors.

Every error that reports bad input (a file, a parameter, a board that cannot fit the network)
derives from :class:`BnnhwError`, itself a ``ValueError``. The ``bnnhw`` command prints such an
error as one line and exits 1; any other exception is a bug and keeps its traceback.
"""

__all__ = ["BnnhwError", "ArtifactError", "FoldingError"]


class BnnhwError(ValueError):
    """Bad input, reported to the user as one line."""


class ArtifactError(BnnhwError):
    """A network file, or a network about to be saved, does not match the format."""


class FoldingError(BnnhwError):
    """A folding does not fit the network (PE or SIMD not dividing, wrong count, ...)."""
