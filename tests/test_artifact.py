import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnnhw import artifact, testing
from bnnhw.artifact import ArtifactError

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_v1.npz"


def small_network(seed=0, sizes=(10, 7, 5, 3)):
    return testing.random_network(np.random.default_rng(seed), list(sizes), input_bits=4,
                                  scales=True)


def raw_arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return json.loads(str(arrays.pop("manifest"))), arrays


def write_raw(path, manifest, arrays):
    np.savez(path, manifest=np.array(json.dumps(manifest)), **arrays)
    return path


def test_round_trip(tmp_path):
    net = small_network()
    loaded = artifact.load(artifact.save(net, tmp_path / "net.npz"))
    assert loaded.input_shape == net.input_shape and loaded.input_bits == net.input_bits
    assert loaded.provenance == net.provenance
    assert [layer.kind for layer in loaded.layers] == ["first", "dense", "output"]
    for a, b in zip(net.layers, loaded.layers):
        for name in ("weights", "thresholds", "offsets", "scales"):
            if hasattr(a, name):
                assert getattr(a, name).dtype == getattr(b, name).dtype
                assert np.array_equal(getattr(a, name), getattr(b, name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.npz"]   # no temporary left


def test_fixture_loads():
    net = artifact.load(FIXTURE)
    assert net.input_shape == (2, 3) and net.input_bits == 3 and net.labels == ("a", "b", "c")
    assert [(l.kind, l.fan_in, l.fan_out) for l in net.layers] == [
        ("first", 6, 5), ("dense", 5, 4), ("output", 4, 3)]
    assert net.layers[1].thresholds.tolist() == [0, 0, 6, 4]
    assert net.layers[2].scales.tolist() == [2, 2, 2]


def test_save_rejects_bad_network_and_keeps_old_file(tmp_path):
    path = artifact.save(small_network(), tmp_path / "net.npz")
    before = path.read_bytes()
    net = small_network()
    bad = artifact.DenseLayer(weights=net.layers[1].weights,
                              thresholds=np.full(net.layers[1].fan_out, 99))
    broken = artifact.Network(input_shape=net.input_shape, input_bits=net.input_bits,
                              layers=(net.layers[0], bad, net.layers[2]))
    with pytest.raises(ArtifactError, match=r"layers\[1\]\.thresholds: values outside 0\.\.8$"):
        artifact.save(broken, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.npz"]


def test_save_rejects_unserialisable_provenance(tmp_path):
    net = small_network()
    net.provenance["when"] = object()
    with pytest.raises(ArtifactError, match=r"provenance: not JSON-serialisable"):
        artifact.save(net, tmp_path / "net.npz")
    assert not list(tmp_path.iterdir())


# Each breaker takes (manifest, arrays, path) and returns the path of a broken file; the
# expected message is matched against the whole error after "PATH: ".
def _set(key, value):
    def breaker(manifest, arrays, path):
        target = manifest
        *parents, last = key
        for part in parents:
            target = target[part]
        target[last] = value
        return write_raw(path, manifest, arrays)
    return breaker


def _array(name, value):
    def breaker(manifest, arrays, path):
        arrays[name] = value(arrays[name]) if callable(value) else value
        return write_raw(path, manifest, arrays)
    return breaker


def _drop_array(name):
    def breaker(manifest, arrays, path):
        del arrays[name]
        return write_raw(path, manifest, arrays)
    return breaker


def _truncated(manifest, arrays, path):
    data = FIXTURE.read_bytes()
    path.write_bytes(data[:len(data) * 2 // 3])
    return path


def _not_zip(manifest, arrays, path):
    path.write_text("weights,thresholds\n1,2\n")
    return path


def _pickled(manifest, arrays, path):
    arrays["layers.1.thresholds"] = np.array([{"evil": True}] * 4, dtype=object)
    np.savez(path, manifest=np.array(json.dumps(manifest)), **arrays)
    return path


def _single_array(manifest, arrays, path):
    with open(path, "wb") as f:     # np.save would append ".npy" to a name
        np.save(f, arrays["layers.0.weights"])
    return path


def _bad_json(manifest, arrays, path):
    np.savez(path, manifest=np.array("{'format': 'bnnhw-network'"), **arrays)
    return path


BROKEN = {
    "truncated": (_truncated, r"(file: not a readable \.npz archive, it may be truncated"
                              r"|layers\.\d\.\w+: unreadable, the file may be truncated) \(.*\)"),
    "not a zip": (_not_zip, r"file: not a network file \(an \.npz archive starts with PK, "
                            r"this file with b.weight.\)"),
    "single array": (_single_array,
                     r"file: holds a single array, not an \.npz archive of a network"),
    "bad json": (_bad_json, r"manifest: invalid JSON \(.*\)"),
    "format name": (_set(["format"], "onnx"), r"format: expected 'bnnhw-network', not 'onnx'"),
    "version": (_set(["version"], 7),
                r"version: this bnnhw reads version 1, not 7; re-export the network"),
    "missing field": (lambda m, a, p: (m["input"].pop("bits"), write_raw(p, m, a))[1],
                      r"input\.bits: missing field"),
    "wrong field type": (_set(["layers", 1, "in"], "5"),
                         r"layers\[1\]\.in: expected int, not '5'"),
    "missing array": (_drop_array("layers.2.offsets"), r"layers\.2\.offsets: missing array"),
    "wrong dtype": (_array("layers.1.thresholds", lambda t: t.astype(np.float32) + 0.5),
                    r"layers\[1\]\.thresholds: dtype float32 is not an integer type "
                    r"\(NaN or fractional values cannot be thresholds\)"),
    "nan": (_array("layers.0.thresholds", lambda t: np.full(t.shape, np.nan)),
            r"layers\[0\]\.thresholds: dtype float64 is not an integer type "
            r"\(NaN or fractional values cannot be thresholds\)"),
    "wrong shape": (_array("layers.1.weights", lambda w: w[:, :-1]),
                    r"layers\[1\]\.weights: shape \(4, 4\) does not match the expected \(4, 5\)"),
    "non-binary weights": (_array("layers.2.weights", lambda w: w * 3),
                           r"layers\[2\]\.weights: values other than 0 and 1"),
    "threshold range": (_array("layers.1.thresholds", lambda t: t + 7),
                        r"layers\[1\]\.thresholds: values outside 0\.\.6"),
    "first threshold range": (_array("layers.0.thresholds", lambda t: t * 1000),
                              r"layers\[0\]\.thresholds: values outside -42\.\.43"),
    "do not chain": (lambda m, a, p: (m["layers"][1].update({"in": 6}),
                                      a.update({"layers.1.weights": np.ones((4, 6), np.uint8)}),
                                      write_raw(p, m, a))[2],
                     r"layers\[1\]\.weights: fan-in 6 does not chain with the 5 outputs "
                     r"of the layer before"),
    "input size": (_set(["input", "shape"], [7]),
                   r"layers\[0\]\.weights: fan-in 6 does not match the input size 7"),
    "unknown kind": (_set(["layers", 1, "kind"], "conv2d"),
                     r"layers\[1\]\.kind: unknown layer kind 'conv2d'; this bnnhw knows "
                     r"'first', 'dense', 'output'"),
    "kind order": (lambda m, a, p: (m["layers"][1].update({"kind": "output"}),
                                    a.update({"layers.1.offsets": np.zeros(4, np.int64),
                                              "layers.1.scales": np.ones(4, np.int64)}),
                                    a.pop("layers.1.thresholds"), write_raw(p, m, a))[3],
                   r"layers\[1\]\.kind: a hidden layer must be of kind 'dense', not 'output'"),
    "pickled object": (_pickled, r"layers\.1\.thresholds: holds pickled Python objects, "
                                 r"which bnnhw never loads"),
    "negative scale": (_array("layers.2.scales", lambda s: -s),
                       r"layers\[2\]\.scales: values below 1 \(scales must be positive\)"),
    "extra array": (_array("layers.9.weights", np.zeros(3, np.uint8)),
                    r"layers\.9\.weights: array not described by the manifest"),
    "in_bits mismatch": (_set(["layers", 0, "in_bits"], 8),
                         r"layers\[0\]\.in_bits: 8 differs from input\.bits 3"),
}


@pytest.mark.parametrize("kind", BROKEN)
def test_load_rejects_broken_file(tmp_path, kind):
    breaker, message = BROKEN[kind]
    manifest, arrays = raw_arrays(FIXTURE)
    path = breaker(manifest, arrays, tmp_path / "broken.npz")
    with pytest.raises(ArtifactError) as info:
        artifact.load(path)
    text = str(info.value)
    assert "\n" not in text
    assert re.fullmatch(re.escape(f"{path}: ") + message, text), text


def test_broken_messages_are_distinct(tmp_path):
    messages = set()
    for kind, (breaker, _) in BROKEN.items():
        manifest, arrays = raw_arrays(FIXTURE)
        path = breaker(manifest, arrays, tmp_path / f"{len(messages)}.npz")
        with pytest.raises(ArtifactError) as info:
            artifact.load(path)
        messages.add(str(info.value).split(": ", 1)[1])
    assert len(messages) >= 20


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match=r"^.*nothing\.npz: no such file$"):
        artifact.load(tmp_path / "nothing.npz")


def test_cli_info_on_broken_file_prints_one_line(tmp_path):
    manifest, arrays = raw_arrays(FIXTURE)
    path = BROKEN["threshold range"][0](manifest, arrays, tmp_path / "broken.npz")
    done = subprocess.run([sys.executable, "-m", "bnnhw.cli", "info", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"bnnhw: error: {path}: layers[1].thresholds: values outside 0..6\n"
