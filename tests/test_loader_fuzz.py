"""The loader never crashes: a valid network file mutated in thousands of ways either loads as
the same network or is refused with one ArtifactError line; nothing else escapes."""

import dataclasses
import io
import json
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bnnhw import artifact
from bnnhw.artifact import ArtifactError

from .test_artifact import same_network

FIXTURES = Path(__file__).parent / "fixtures"


def _members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def _zip(members, compression=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, payload in members:
            archive.writestr(name, payload)
    return buffer.getvalue()


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def byte_level(data, rng):
    """Flipped bytes, overwritten runs, truncation, inserted and deleted bytes."""
    for _ in range(450):
        mutated = bytearray(data)
        mutated[rng.randrange(len(data))] ^= rng.randrange(1, 256)
        yield "flip", bytes(mutated)
    for _ in range(100):
        mutated = bytearray(data)
        start = rng.randrange(len(data))
        end = min(len(data), start + rng.randrange(2, 40))
        mutated[start:end] = bytes(rng.randrange(256) for _ in range(end - start))
        yield "garbage", bytes(mutated)
    for _ in range(100):
        yield "truncate", data[:rng.randrange(len(data))]
    for _ in range(50):
        at = rng.randrange(len(data))
        yield "insert", data[:at] + bytes([rng.randrange(256)]) + data[at:]
        yield "delete", data[:at] + data[at + 1:]


def member_level(data, rng):
    """Members swapped, missing, duplicated, stored uncompressed, arrays re-typed/re-shaped."""
    members = [(info.filename, payload) for info, payload in _members(data)]
    names = [name for name, _ in members]
    for a in range(len(members)):
        for b in range(a + 1, len(members)):
            swapped = list(members)
            swapped[a] = (names[a], members[b][1])
            swapped[b] = (names[b], members[a][1])
            yield "swap", _zip(swapped)
    for a in range(len(members)):
        yield "missing", _zip(members[:a] + members[a + 1:])
    yield "stored", _zip(members, zipfile.ZIP_STORED)
    for name, payload in members:
        if name == "manifest.npy":
            continue
        array = np.load(io.BytesIO(payload))
        variants = [array.astype(t) for t in (np.float32, np.float64, np.int8, np.uint64,
                                              np.bool_, np.int16, np.complex64)]
        variants += [array.reshape(-1), array[..., :-1] if array.shape[-1] > 1 else array[:0],
                     array.T.copy(), np.zeros((0,), array.dtype), np.array(7),
                     np.concatenate([array, array]), array.astype(">i8"),
                     np.asfortranarray(np.atleast_2d(array))]
        for variant in variants:
            yield "array", _zip([(n, _npy(variant) if n == name else p) for n, p in members])


def _paths(value, prefix=()):
    """Every path into a JSON value (keys and indices), provenance excluded."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            if prefix == () and key == "provenance":
                continue
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


def manifest_level(data, rng):
    """The manifest's JSON edited: values replaced by others of every type, keys removed."""
    members = [(info.filename, payload) for info, payload in _members(data)]
    text = str(np.load(io.BytesIO(dict(members)["manifest.npy"])))
    manifest = json.loads(text)
    paths = [p for p in _paths(manifest) if p]
    replacements = [None, -1, 0, 1, 3, 2 ** 70, -2 ** 70, 1.5, float("1e308"), "x", "", True,
                    [], {}, [1, 2, 3], {"shape": [1, 1, 1]}, "first", "dense", "output"]
    for _ in range(400):
        edited = json.loads(text)
        path = rng.choice(paths)
        target = edited
        for key in path[:-1]:
            target = target[key]
        if rng.random() < 0.2 and isinstance(target, dict):
            del target[path[-1]]
        else:
            target[path[-1]] = rng.choice(replacements)
        blob = json.dumps(edited)
        yield "manifest", _zip([(n, _npy(np.array(blob)) if n == "manifest.npy" else p)
                                for n, p in members])
    for cut in range(0, len(text), max(1, len(text) // 40)):
        yield "manifest text", _zip([(n, _npy(np.array(text[:cut])) if n == "manifest.npy"
                                      else p) for n, p in members])


@pytest.mark.parametrize("fixture", ["tiny_v2.npz", "tiny_v1.npz"])
def test_every_mutation_loads_the_same_network_or_is_refused(tmp_path, fixture):
    original_path = FIXTURES / fixture
    original = artifact.load(original_path)
    data = original_path.read_bytes()
    rng = random.Random(fixture)
    path = tmp_path / "mutated.npz"
    counts, outcomes = {}, {"same": 0, "refused": 0}
    for group in (byte_level(data, rng), member_level(data, rng),
                  manifest_level(data, rng)):
        for what, mutated in group:
            counts[what] = counts.get(what, 0) + 1
            path.write_bytes(mutated)
            try:
                loaded = artifact.load(path)
            except ArtifactError as error:
                text = str(error)
                assert "\n" not in text and text.startswith(f"{path}: "), (what, text)
                outcomes["refused"] += 1
                continue
            # A damaged file that still loads must be the very same network. An edited
            # manifest may also change what is free-form description (labels, provenance:
            # any strings, or none), but nothing the network computes.
            if what.startswith("manifest"):
                loaded = dataclasses.replace(loaded, labels=original.labels,
                                             provenance=original.provenance)
            assert same_network(loaded, original), (what, mutated[:80])
            outcomes["same"] += 1
    assert sum(counts.values()) >= 1000, counts
    assert outcomes["refused"] >= 900, outcomes
