import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from bnnhw import datasets, golden, testing
from bnnhw.datasets import DatasetError

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mnist"


def idx_bytes(array):
    array = np.asarray(array, np.uint8)
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_dir(path, *, train=5, test=3, size=(4, 3), gz=False, dot_names=False):
    rng = np.random.default_rng(0)
    path.mkdir(exist_ok=True)
    content = {}
    for prefix, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (count, *size), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            if dot_names:
                name = name.replace("-idx", ".idx")
            data = idx_bytes(array)
            if gz:
                (path / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (path / name).write_bytes(data)
        content[prefix] = images, labels
    return content


def test_digits_split_is_fixed():
    data = datasets.load_digits()
    assert data.train_x.shape == (1438, 64) and data.test_x.shape == (359, 64)
    assert data.in_bits == 5 and data.shape == (1, 8, 8)
    assert data.train_x.max() == 16 and data.train_x.dtype == np.uint8
    from sklearn.datasets import load_digits
    bunch = load_digits()
    assert np.array_equal(data.test_x, bunch.data[4::5].astype(np.uint8))
    assert np.array_equal(data.test_y, bunch.target[4::5])


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dot_names", [False, True])
def test_reads_idx_directory(tmp_path, gz, dot_names):
    content = write_idx_dir(tmp_path / "set", gz=gz, dot_names=dot_names)
    data = datasets.load_dataset(tmp_path / "set")
    assert data.shape == (1, 4, 3) and data.in_bits == 8 and data.name == "set"
    assert np.array_equal(data.train_x, content["train"][0].reshape(5, 12))
    assert np.array_equal(data.test_y, content["t10k"][1])


@pytest.mark.parametrize("gz", [False, True])
def test_fingerprint_hashes_the_files_as_stored(tmp_path, gz):
    write_idx_dir(tmp_path / "set", gz=gz)
    data = datasets.load_dataset(tmp_path / "set" / ".")
    files = {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
             for path in (tmp_path / "set").iterdir()}
    assert len(files) == 4 and data.files == files and data.name == "set"
    listing = "".join(f"{files[name]}  {name}\n" for name in sorted(files))
    assert datasets.fingerprint(data) == {
        "name": "set", "sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "sha256_files": files}


def test_fingerprint_of_digits_covers_the_arrays():
    data = datasets.load_digits()
    assert data.files is None
    first = datasets.fingerprint(data)
    assert first["name"] == "digits" and len(first["sha256"]) == 64 and "sha256_files" not in first
    assert datasets.fingerprint(datasets.load_digits()) == first
    x = data.test_x.copy()
    x[0, 0] ^= 1
    changed = datasets.Dataset(**{**vars(data), "test_x": x})
    assert datasets.fingerprint(changed)["sha256"] != first["sha256"]


def test_missing_directory(tmp_path):
    with pytest.raises(DatasetError, match=r"^.*nowhere: no such directory; a dataset is "
                                           r"'digits' or a directory of MNIST-style IDX files "
                                           r"or of CIFAR-10 binary files$"):
        datasets.load_dataset(tmp_path / "nowhere")


def test_file_instead_of_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match=r"^.*file: not a directory of IDX files$"):
        datasets.load_dataset(tmp_path / "file")


def test_missing_file(tmp_path):
    write_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match=r": no t10k-labels-idx1-ubyte or "
                                           r"t10k-labels-idx1-ubyte\.gz file \(expected"):
        datasets.load_dataset(tmp_path)


@pytest.mark.parametrize("damage,message", [
    (lambda b: b[:-5], r"train-images-idx3-ubyte: 71 bytes, but its header \(5, 4, 3\) "
                       r"implies 76; the file is truncated$"),
    (lambda b: b + b"x", r"train-images-idx3-ubyte: 77 bytes, but its header \(5, 4, 3\) "
                         r"implies 76; the file is too long$"),
    (lambda b: b"\x00\x00\x0d\x03" + b[4:], r"train-images-idx3-ubyte: magic number 0x00000d03 "
                                            r"is not that of an IDX file of unsigned bytes "
                                            r"\(expected 0x00000803\)$"),
    (lambda b: b[:2], r"train-images-idx3-ubyte: 2 bytes is too short for an IDX header$"),
    (lambda b: b[:3] + b"\x01" + b[4:], r"train-images-idx3-ubyte: has 1 dimensions, "
                                        r"expected 3 \(images\)$"),
])
def test_rejects_broken_idx(tmp_path, damage, message):
    write_idx_dir(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetError, match=message):
        datasets.load_dataset(tmp_path)


def test_rejects_label_count_mismatch(tmp_path):
    write_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2)))
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte: 2 labels for 3 images$"):
        datasets.load_dataset(tmp_path)


@pytest.mark.parametrize("damage,reason", [
    (lambda b: b"not gzip at all", r"Not a gzipped file \(b'no'\)"),
    (lambda b: b[:12] + bytes([b[12] ^ 0xFF]) + b[13:], r"Error -3 while decompressing data: "
                                                         r"invalid .*"),     # zlib.error
    (lambda b: b[:-10], r"Compressed file ended before the end-of-stream marker was reached"),
])
def test_rejects_bad_gzip(tmp_path, damage, reason):
    write_idx_dir(tmp_path, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetError, match=rf"^.*train-labels-idx1-ubyte\.gz: cannot read "
                                           rf"\({reason}\)$"):
        datasets.load_dataset(tmp_path)


@pytest.mark.skipif(not MNIST.is_dir(), reason="the shared MNIST folder is absent")
def test_reads_real_mnist():
    data = datasets.load_dataset(MNIST)
    assert data.train_x.shape == (60000, 784) and data.test_x.shape == (10000, 784)
    assert data.shape == (1, 28, 28)
    assert data.test_y[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]   # the well-known first labels
    assert np.bincount(data.test_y).tolist()[:3] == [980, 1135, 1032]


# ---- CIFAR-10 binary files ---------------------------------------------------------------

def write_cifar_dir(directory, *, records=4, seed=0, meta=True):
    """A CIFAR-10 binary directory in the distribution's format, ``records`` images per file:
    returns ``{file name: (planes (N, 3, 32, 32), labels)}``."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in (*datasets.CIFAR_TRAIN, datasets.CIFAR_TEST):
        planes = rng.integers(0, 256, (records, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, records, dtype=np.uint8)
        data = np.concatenate([labels[:, None], planes.reshape(records, -1)], axis=1)
        (directory / name).write_bytes(data.tobytes())
        written[name] = planes, labels
    if meta:
        (directory / "batches.meta.txt").write_text(
            "\n".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                       "ship", "truck"]) + "\n\n")
    return written


def test_reads_cifar_directory_in_stream_order(tmp_path):
    written = write_cifar_dir(tmp_path / "cifar-10-batches-bin", records=3)
    data = datasets.load_dataset(tmp_path / "cifar-10-batches-bin")
    assert data.shape == (3, 32, 32) and data.in_bits == 8 and data.name == "cifar-10-batches-bin"
    assert data.train_x.shape == (15, 3072) and data.test_x.shape == (3, 3072)
    planes, labels = written["test_batch.bin"]
    assert data.test_y.tolist() == labels.tolist()
    # Stream order: pixel (y, x) has its red, green and blue values side by side.
    image = data.test_x[1].reshape(32, 32, 3)
    assert image[5, 7].tolist() == planes[1, :, 5, 7].tolist()
    planes, labels = written["data_batch_2.bin"]
    assert data.train_x[3].reshape(32, 32, 3)[31, 0].tolist() == planes[0, :, 31, 0].tolist()
    assert data.labels[0] == "airplane" and len(data.labels) == 10
    digests = datasets.fingerprint(data)["sha256_files"]
    assert sorted(digests) == sorted([*datasets.CIFAR_TRAIN, datasets.CIFAR_TEST])


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "data_batch_3.bin").unlink(),
     r"no data_batch_3\.bin \(a CIFAR-10 directory holds data_batch_1\.bin, data_batch_2\.bin, "
     r"data_batch_3\.bin, data_batch_4\.bin, data_batch_5\.bin and test_batch\.bin\)$"),
    (lambda d: (d / "test_batch.bin").write_bytes((d / "test_batch.bin").read_bytes()[:-7]),
     r"test_batch\.bin: 9,212 bytes is not a whole number of CIFAR-10 records \(3,073 bytes "
     r"each: a label byte and a 32x32 RGB image\); the file is truncated or not a CIFAR-10 "
     r"batch$"),
    (lambda d: (d / "data_batch_1.bin").write_bytes(b""),
     r"data_batch_1\.bin: 0 bytes is not a whole number of CIFAR-10 records"),
    (lambda d: (d / "data_batch_5.bin").write_bytes(bytes([12]) + bytes(3072)),
     r"data_batch_5\.bin: record 0 has label 12, outside 0\.\.9; not a CIFAR-10 batch "
     r"\(CIFAR-100 files have two label bytes\)$"),
])
def test_refuses_broken_cifar_directory(tmp_path, damage, message):
    write_cifar_dir(tmp_path / "c", records=3)
    damage(tmp_path / "c")
    with pytest.raises(DatasetError, match=r"^.*" + message):
        datasets.load_dataset(tmp_path / "c")


def test_cifar_frames_for_a_network_of_its_shape(tmp_path):
    write_cifar_dir(tmp_path / "c", records=2)
    net = testing.random_cnn(np.random.default_rng(0), (3, 32, 32), [("conv2d", 3, 3, 4),
                                                                    ("pool", 2)], 10)
    x, y, data = datasets.frames_for(net, tmp_path / "c", count=2)
    assert x.shape == (2, 3072) and len(golden.run(net, x).classes) == 2
    flat = testing.random_network(np.random.default_rng(0), [3072, 8, 10])   # a vector input
    datasets.frames_for(flat, tmp_path / "c")
    wrong = testing.random_cnn(np.random.default_rng(0), (1, 32, 96), [("conv2d", 3, 3, 4)], 10)
    with pytest.raises(DatasetError, match=r"^dataset c has images of 3 channels of 32x32, but "
                                           r"the network takes 1 of 32x96$"):
        datasets.frames_for(wrong, tmp_path / "c")
