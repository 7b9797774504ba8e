"""Checks on the files and folders a command is about to write, made before the work starts."""

import tempfile
from pathlib import Path

from .errors import BnnhwError

__all__ = ["output_path", "output_dir"]


def output_path(path, what):
    """Check that ``path`` can be written as a new ``what`` file, creating its folder."""
    path = Path(path)
    if path.is_dir():
        raise BnnhwError(f"{path}: is a directory; give the name of the {what} file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BnnhwError(f"{path}: cannot create its folder ({error.strerror})") from None
    _check_writable(path.parent, path)
    return path


def output_dir(path):
    """Check that ``path`` is, or can become, a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BnnhwError(f"{path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BnnhwError(f"{path}: cannot create this folder ({error.strerror})") from None
    _check_writable(path, path)
    return path


def _check_writable(folder, path):
    # os.access says yes to root everywhere; creating a file is the test that tells.
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise BnnhwError(f"{path}: cannot write in {folder} ({error.strerror})") from None
