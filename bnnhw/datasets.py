"""Datasets: scikit-learn's bundled 8x8 digits (the embedded default), MNIST-style IDX files and
the CIFAR-10 binary distribution.

Every dataset comes as unsigned integer images of a shape ``(C, H, W)``, each flattened in the
stream order of :mod:`bnnhw.tensor` (row by row, pixel by pixel, channels within a pixel),
ready for a network's first layer, with its bit width:

``digits``
    scikit-learn's bundled copy of the UCI 8x8 handwritten digits: 1,797 images of 64 pixels
    with values 0..16 (``in_bits = 5``). Fixed split, no randomness: image ``k`` is in the test
    set iff ``k % 5 == 4`` (359 test, 1,438 train images).
A directory of IDX files
    The four standard files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``, and ``.``
    instead of the last ``-`` as some mirrors name them), as MNIST and Fashion-MNIST ship:
    8-bit pixels (``in_bits = 8``), the files' own train/test split. The dataset's name is the
    directory's own name (``mnist`` for ``/data/mnist``). Shape ``(1, 28, 28)`` for MNIST.
A directory of CIFAR-10 binary files
    ``data_batch_1.bin`` .. ``data_batch_5.bin`` (the training set, in that order) and
    ``test_batch.bin``, as ``cifar-10-binary.tar.gz`` unpacks: records of one label byte
    (0..9) and 3,072 pixel bytes, the red, green and blue planes of a 32x32 image, each row by
    row; reordered here to stream order. Shape ``(3, 32, 32)``, ``in_bits = 8``. Class names
    from ``batches.meta.txt`` when it is there.

A dataset is recorded (in a trained network's provenance) by :func:`fingerprint`: its name and
SHA-256 digests, never the path it was read from.
"""

import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from .errors import BnnhwError

__all__ = ["Dataset", "DatasetError", "load_dataset", "load_digits", "load_idx_dir", "read_idx",
           "load_cifar_dir", "CIFAR_TRAIN", "CIFAR_TEST", "dataset_name", "fingerprint",
           "frames_for"]


class DatasetError(BnnhwError):
    """A dataset could not be found or read."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images as ``(count, pixels)`` unsigned integers in stream order and labels as
    ``(count,)`` int64."""
    name: str
    shape: tuple          # (channels, height, width) of one image, e.g. (1, 28, 28)
    in_bits: int          # pixel values are 0 .. 2**in_bits - 1
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: int = 10
    files: dict = None    # file name -> SHA-256 (hex) of each file read, as stored; None: none
    labels: tuple = None  # class names, if the dataset has them

    def split(self, which):
        """Return ``(x, y)`` of the ``"train"`` or ``"test"`` split."""
        if which not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {which!r}")
        return (self.train_x, self.train_y) if which == "train" else (self.test_x, self.test_y)


def load_digits():
    """scikit-learn's bundled 8x8 digits with bnnhw's fixed split (see the module docstring)."""
    from sklearn.datasets import load_digits as sklearn_digits   # slow import: only when used
    bunch = sklearn_digits()
    x = bunch.data.astype(np.uint8)
    y = bunch.target.astype(np.int64)
    test = np.arange(len(y)) % 5 == 4
    return Dataset(name="digits", shape=(1, 8, 8), in_bits=5, train_x=x[~test], train_y=y[~test],
                   test_x=x[test], test_y=y[test])


# IDX: magic = 0x00 0x00 TYPE NDIM, then NDIM big-endian uint32 sizes, then the data in C
# order. Only the type code of unsigned bytes (0x08) occurs in MNIST-style datasets.
_IDX_TYPES = {0x08: np.uint8}


def read_idx(path, *, ndim):
    """Read one IDX file (gzipped if its name ends in ``.gz``) with ``ndim`` dimensions."""
    return _read_idx(path, ndim=ndim)[0]


def _read_idx(path, *, ndim):
    """Return the array in the IDX file ``path`` and the SHA-256 of the file as stored."""
    path = Path(path)
    try:
        stored = path.read_bytes()
        raw = gzip.decompress(stored) if path.suffix == ".gz" else stored
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as error:     # gzip.BadGzipFile is an OSError
        raise DatasetError(f"{path}: cannot read ({error})") from None
    digest = hashlib.sha256(stored).hexdigest()
    if len(raw) < 4:
        raise DatasetError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    zero, type_code, dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code not in _IDX_TYPES:
        raise DatasetError(f"{path}: magic number 0x{raw[:4].hex()} is not that of an IDX file "
                           f"of unsigned bytes (expected 0x000008{ndim:02x})")
    if dims != ndim:
        raise DatasetError(f"{path}: has {dims} dimensions, expected {ndim} "
                           f"({'labels' if ndim == 1 else 'images'})")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated header ({len(raw)} bytes)")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise DatasetError(f"{path}: {len(raw)} bytes, but its header {shape} implies "
                           f"{expected}; the file is "
                           f"{'truncated' if len(raw) < expected else 'too long'}")
    return np.frombuffer(raw, _IDX_TYPES[type_code], offset=header).reshape(shape), digest


def _find(directory, stem):
    names = [stem, stem.replace("-idx", ".idx")]
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DatasetError(f"{directory}: no {stem} or {stem}.gz file (expected the four standard "
                       f"MNIST IDX files in this directory)")


def load_idx_dir(directory):
    """Read the four standard IDX files of an MNIST-style dataset from ``directory``."""
    directory = Path(directory)
    if not directory.exists():
        raise DatasetError(f"{directory}: no such directory; a dataset is 'digits' or a "
                           f"directory of MNIST-style IDX files or of CIFAR-10 binary files")
    if not directory.is_dir():
        raise DatasetError(f"{directory}: not a directory of IDX files")
    parts, shape, files = {}, None, {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_path = _find(directory, f"{prefix}-images-idx3-ubyte")
        images, files[images_path.name] = _read_idx(images_path, ndim=3)
        labels_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
        labels, files[labels_path.name] = _read_idx(labels_path, ndim=1)
        if len(images) != len(labels):
            raise DatasetError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
        if labels.size and labels.max() >= 10:
            raise DatasetError(f"{labels_path}: label {labels.max()} outside 0..9")
        if shape is not None and images.shape[1:] != shape:
            raise DatasetError(f"{directory}: train images are {shape[0]}x{shape[1]}, test "
                               f"images {images.shape[1]}x{images.shape[2]}")
        shape = images.shape[1:]
        parts[split] = images.reshape(len(images), -1), labels.astype(np.int64)
    return Dataset(name=dataset_name(directory), shape=(1,) + tuple(shape), in_bits=8,
                   train_x=parts["train"][0], train_y=parts["train"][1],
                   test_x=parts["test"][0], test_y=parts["test"][1], files=files)


CIFAR_TRAIN = tuple(f"data_batch_{n}.bin" for n in range(1, 6))
CIFAR_TEST = "test_batch.bin"
_CIFAR_SHAPE = (3, 32, 32)
_CIFAR_RECORD = 1 + 3 * 32 * 32


def _read_cifar(path):
    """Images (stream order) and labels of one CIFAR-10 binary batch file, and its SHA-256."""
    from .tensor import to_stream_order
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error.strerror})") from None
    if not raw or len(raw) % _CIFAR_RECORD:
        raise DatasetError(f"{path}: {len(raw):,} bytes is not a whole number of CIFAR-10 "
                           f"records ({_CIFAR_RECORD:,} bytes each: a label byte and a 32x32 "
                           f"RGB image); the file is truncated or not a CIFAR-10 batch")
    records = np.frombuffer(raw, np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= 10:
        bad = int(np.flatnonzero(labels >= 10)[0])
        raise DatasetError(f"{path}: record {bad} has label {labels[bad]}, outside 0..9; not a "
                           f"CIFAR-10 batch (CIFAR-100 files have two label bytes)")
    return to_stream_order(records[:, 1:], _CIFAR_SHAPE), labels, hashlib.sha256(raw).hexdigest()


def load_cifar_dir(directory):
    """Read the CIFAR-10 binary distribution from ``directory`` (see the module docstring)."""
    directory = Path(directory)
    missing = [name for name in (*CIFAR_TRAIN, CIFAR_TEST) if not (directory / name).is_file()]
    if missing:
        raise DatasetError(f"{directory}: no {missing[0]} (a CIFAR-10 directory holds "
                           f"{', '.join(CIFAR_TRAIN)} and {CIFAR_TEST})")
    files, parts = {}, []
    for name in CIFAR_TRAIN + (CIFAR_TEST,):
        images, labels, files[name] = _read_cifar(directory / name)
        parts.append((images, labels))
    train_x = np.concatenate([images for images, _ in parts[:-1]])
    train_y = np.concatenate([labels for _, labels in parts[:-1]])
    names = None
    meta = directory / "batches.meta.txt"
    if meta.is_file():
        lines = [line.strip() for line in meta.read_text(errors="replace").splitlines()]
        lines = [line for line in lines if line]
        names = tuple(lines) if len(lines) == 10 else None
    return Dataset(name=dataset_name(directory), shape=_CIFAR_SHAPE, in_bits=8,
                   train_x=train_x, train_y=train_y, test_x=parts[-1][0], test_y=parts[-1][1],
                   files=files, labels=names)


def load_dataset(spec):
    """Load ``"digits"`` (the default), or a directory of IDX or CIFAR-10 binary files, by name
    or path."""
    if spec in (None, "digits"):
        return load_digits()
    directory = Path(spec)
    if directory.is_dir() and any((directory / name).is_file()
                                  for name in (*CIFAR_TRAIN, CIFAR_TEST)):
        return load_cifar_dir(directory)
    return load_idx_dir(spec)


def dataset_name(spec):
    """Return the name of dataset ``spec`` without loading it: ``digits`` or a directory's name."""
    if spec in (None, "digits"):
        return "digits"
    directory = Path(os.path.abspath(spec))       # "." and ".." get their real names
    return directory.name or str(directory)


def fingerprint(dataset):
    """Return the name and SHA-256 digests that identify ``dataset``, as a JSON-friendly dict.

    ``{"name", "sha256"}``, plus ``"sha256_files"`` for a dataset read from files: it maps each
    file's name to the SHA-256 (hex) of its bytes as stored (a ``.gz`` file compressed), and
    ``sha256`` is the SHA-256 of the lines ``"<digest>  <name>\\n"`` (``sha256sum``'s format)
    in the order of the names. Otherwise (the bundled digits) ``sha256`` covers the arrays as
    loaded: for each of ``train_x``, ``train_y``, ``test_x``, ``test_y``, its dtype and shape
    as text, then its bytes in C order.
    """
    digest = hashlib.sha256()
    if dataset.files:
        for name in sorted(dataset.files):
            digest.update(f"{dataset.files[name]}  {name}\n".encode())
        return {"name": dataset.name, "sha256": digest.hexdigest(),
                "sha256_files": dict(dataset.files)}
    for array in (dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str} {array.shape}\n".encode())
        digest.update(array.tobytes())
    return {"name": dataset.name, "sha256": digest.hexdigest()}


def frames_for(net, spec, *, split="test", count=None, network="the network"):
    """Load ``split`` of dataset ``spec`` as ``(x, y, dataset)`` checked against ``net``.

    ``count`` keeps the first images only; ``network`` names the network file in messages.
    Raises :class:`DatasetError` if the images do not fit the network's input.
    """
    data = load_dataset(spec)
    x, y = data.split(split)
    if count is not None:
        if not isinstance(count, int) or count <= 0:
            raise DatasetError(f"count must be a positive integer, not {count!r}")
        x, y = x[:count], y[:count]
    if x.shape[1] != net.input_size:
        raise DatasetError(f"dataset {data.name} has {x.shape[1]} pixels per image but "
                           f"{network} expects {net.input_size}")
    c, h, w = net.input_shape
    if (h, w) != (1, 1) and tuple(data.shape) != (c, h, w):
        raise DatasetError(f"dataset {data.name} has images of {data.shape[0]} channels of "
                           f"{data.shape[1]}x{data.shape[2]}, but {network} takes {c} of {h}x{w}")
    if data.in_bits > net.input_bits:
        raise DatasetError(f"dataset {data.name} has {data.in_bits}-bit pixels but "
                           f"{network} takes {net.input_bits}-bit inputs")
    return x, y, data
