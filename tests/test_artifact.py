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
    assert net.input_shape == (1, 2, 3) and net.input_bits == 3 and net.labels == ("a", "b", "c")
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
    broken = artifact.Network(input=net.input, layers=(net.layers[0], bad, net.layers[2]))
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
                r"version: this bnnhw reads versions 1, 2, not 7; re-export the network"),
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
                     r"layers\[1\]\.weights: fan-in 6 does not match the 5 values of the "
                     r"tensor it takes \(5 binary\)"),
    "input size": (_set(["input", "shape"], [7]),
                   r"layers\[0\]\.weights: fan-in 6 does not match the 7 values of the "
                   r"tensor it takes \(7 3-bit\)"),
    "unknown kind": (_set(["layers", 1, "kind"], "conv2d"),
                     r"layers\[1\]\.kind: unknown layer kind 'conv2d'; this bnnhw knows "
                     r"'first', 'dense', 'output', 'first_conv', 'conv', 'maxpool', 'binarize', "
                     r"'abc', 'abc_output', 'abc_conv'"),
    "kind order": (lambda m, a, p: (m["layers"][1].update({"kind": "output"}),
                                    a.update({"layers.1.offsets": np.zeros(4, np.int64),
                                              "layers.1.scales": np.ones(4, np.int64)}),
                                    a.pop("layers.1.thresholds"), write_raw(p, m, a))[3],
                   r"layers\[1\]: a layer of kind 'output' produces class scores, so it must "
                   r"be the last layer"),
    "pickled object": (_pickled, r"layers\.1\.thresholds: holds pickled Python objects, "
                                 r"which bnnhw never loads"),
    "negative scale": (_array("layers.2.scales", lambda s: -s),
                       r"layers\[2\]\.scales: values below 1 \(scales must be positive\)"),
    "extra array": (_array("layers.9.weights", np.zeros(3, np.uint8)),
                    r"layers\.9\.weights: array not described by the manifest"),
    "in_bits mismatch": (_set(["layers", 0, "in_bits"], 8),
                         r"layers\[0\]\.in_bits: 8 differs from the 3 bits of the values it "
                         r"takes"),
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


# ---- version 2 ---------------------------------------------------------------------------

FIXTURE_V2 = Path(__file__).parent / "fixtures" / "tiny_v2.npz"


def same_network(a, b):
    """Whether two networks are the same in every field and array."""
    if (a.input != b.input or a.labels != b.labels or a.provenance != b.provenance
            or len(a.layers) != len(b.layers)):
        return False
    for x, y in zip(a.layers, b.layers):
        if type(x) is not type(y) or x.input != y.input:
            return False
        if any(getattr(x, p) != getattr(y, p) for p in x.PARAMS):
            return False
        for name in x.ARRAYS:
            u, v = getattr(x, name), getattr(y, name)
            if u.dtype != v.dtype or not np.array_equal(u, v):
                return False
    return True


def test_version_1_is_upgraded_on_read():
    old, new = artifact.load(FIXTURE), artifact.load(FIXTURE_V2)
    assert same_network(old, new)
    assert new.input_shape == (1, 2, 3)
    assert [layer.input.describe() for layer in new.layers] == ["2x3 3-bit", "5 binary",
                                                               "4 binary"]
    manifest, _ = raw_arrays(FIXTURE_V2)
    assert manifest["version"] == 2 and manifest["layers"][0]["params"] == {"in_bits": 3}


def test_saving_writes_version_2(tmp_path):
    path = artifact.save(artifact.load(FIXTURE), tmp_path / "net.npz")
    manifest, arrays = raw_arrays(path)
    assert manifest["version"] == artifact.VERSION == 2
    assert manifest["input"] == {"shape": [1, 2, 3], "bits": 3, "encoding": "unsigned"}
    assert manifest["layers"][2]["output"] == {"classes": 3}
    assert sorted(arrays) == sorted(raw_arrays(FIXTURE_V2)[1])


def _set_v2(key, value):
    return _set(key, value)


def _stored(manifest, arrays, path):
    """The archive uncompressed (np.savez), with one byte of an array's data flipped."""
    np.savez(path, manifest=np.array(json.dumps(manifest)), **arrays)
    data = bytearray(path.read_bytes())
    header = data.index(b"layers.1.thresholds.npy")
    data[data.index(b"}", header) + 10] ^= 0x40       # inside the array's data
    path.write_bytes(bytes(data))
    return path


def _twice(manifest, arrays, path):
    import warnings
    import zipfile
    write_raw(path, manifest, arrays)
    with zipfile.ZipFile(path, "a") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")            # zipfile warns of the duplicate name
        archive.writestr("layers.0.weights.npy", b"")
    return path


BROKEN_V2 = {
    "crc": (_stored, r"layers\.1\.thresholds: CRC mismatch: the member's data is damaged"),
    "stored twice": (_twice, r"layers\.0\.weights: stored twice in the archive"),
    "input rank": (_set_v2(["input", "shape"], [6]),
                   r"input\.shape: expected a list of three positive integers \(channels, "
                   r"height, width\), not \[6\]"),
    "input bits": (_set_v2(["input", "bits"], 0), r"input\.bits: expected an integer in "
                                                  r"1\.\.16, not 0"),
    "encoding": (_set_v2(["input", "encoding"], "signed"),
                 r"input\.encoding: expected one of 'unsigned', 'bipolar', not 'signed'"),
    "bipolar input": (_set_v2(["input", "encoding"], "bipolar"),
                      r"layers\[0\]: a first layer takes unsigned values, not 2x3 3-base"),
    "missing param": (_set_v2(["layers", 0, "params"], {}),
                      r"layers\[0\]\.params\.in_bits: missing field"),
    "param type": (_set_v2(["layers", 0, "params", "in_bits"], "3"),
                   r"layers\[0\]\.params\.in_bits: expected int, not '3'"),
    "stray param": (_set_v2(["layers", 1, "params"], {"pe": 2}),
                    r"layers\[1\]\.params: a dense layer has no parameter 'pe'"),
    "params type": (_set_v2(["layers", 1, "params"], [1]),
                    r"layers\[1\]\.params: expected a JSON object, not \[1\]"),
    "declared output": (_set_v2(["layers", 1, "output", "shape"], [5, 1, 1]),
                        r"layers\[1\]\.output: the manifest says .*'shape': \[5, 1, 1\].*, but "
                        r"the layer produces .*'shape': \[4, 1, 1\].*"),
    "declared classes": (_set_v2(["layers", 2, "output"], {"classes": 4}),
                         r"layers\[2\]\.output: the manifest says \{'classes': 4\}, but the "
                         r"layer produces \{'classes': 3\}"),
    "declared input": (_set_v2(["layers", 2, "input", "bits"], 2),
                       r"layers\[2\]\.input: the manifest says .*'bits': 2.*, but the layer "
                       r"takes .*'bits': 1.*"),
    "no output layer": (lambda m, a, p: (m["layers"].pop(), [a.pop(k) for k in list(a)
                                                             if k.startswith("layers.2.")],
                                         write_raw(p, m, a))[2],
                        r"layers\[1\]: the last layer must produce class scores \(an output "
                        r"layer\), not a dense layer's 4 binary"),
}


@pytest.mark.parametrize("kind", BROKEN_V2)
def test_load_rejects_broken_version_2_file(tmp_path, kind):
    breaker, message = BROKEN_V2[kind]
    manifest, arrays = raw_arrays(FIXTURE_V2)
    path = breaker(manifest, arrays, tmp_path / "broken.npz")
    with pytest.raises(ArtifactError) as info:
        artifact.load(path)
    text = str(info.value)
    assert "\n" not in text
    assert re.fullmatch(re.escape(f"{path}: ") + message, text), text


def test_examples_give_the_golden_results_of_their_version_1_files():
    # tests/fixtures/digits_v1.npz is examples/digits.npz as bnnhw 0.1 wrote it.
    from bnnhw import datasets, golden
    examples = Path(__file__).parents[1] / "examples"
    old = artifact.load(Path(__file__).parent / "fixtures" / "digits_v1.npz")
    new = artifact.load(examples / "digits.npz")
    data = datasets.load_dataset("digits")
    a, b = golden.run(old, data.test_x), golden.run(new, data.test_x)
    assert np.array_equal(a.scores, b.scores) and np.array_equal(a.classes, b.classes)
    assert round(float((a.classes == data.test_y).mean()), 4) == 0.9833
    for layer_old, layer_new in zip(old.layers, new.layers):
        assert np.array_equal(layer_old.weights, layer_new.weights)


@pytest.mark.parametrize("name", ["digits", "mnist_sfc", "mnist_tfc"])
def test_examples_name_their_dataset_without_machine_paths(name):
    net = artifact.load(Path(__file__).parents[1] / "examples" / f"{name}.npz")
    text = json.dumps(net.provenance)
    assert not re.search(r"\"(/|[A-Za-z]:\\\\)", text), text     # no absolute path anywhere
    dataset = net.provenance["dataset"]
    assert re.fullmatch(r"[0-9a-f]{64}", dataset["sha256"]) and dataset["name"]
