import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnnhw import artifact, cli, datasets, golden, testing

from .test_datasets import write_idx_dir

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_v1.npz"


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for command in ("info", "eval"):
        assert f"    {command}" in out


def test_info_describes_layers(capsys):
    assert cli.main(["info", str(FIXTURE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{FIXTURE}: 3 layers, input 2x3 of 3-bit values, 3 classes, "
                          f"62 weight bits\n")
    # first layer: |acc| <= 6 * 7 = 42, thresholds up to 43 -> 7-bit signed accumulator
    assert "    0  first    6    5           30         7  3-bit inputs" in out
    assert "source: tests/fixtures" in out


def test_eval_reports_golden_accuracy(tmp_path, capsys):
    write_idx_dir(tmp_path / "set", train=4, test=50)
    net = testing.random_network(np.random.default_rng(3), [12, 9, 10], input_bits=8)
    path = artifact.save(net, tmp_path / "net.npz")
    data = datasets.load_dataset(tmp_path / "set")
    correct = int((golden.run(net, data.test_x).classes == data.test_y).sum())
    assert cli.main(["eval", str(path), "--dataset", str(tmp_path / "set"), "--confusion"]) == 0
    out = capsys.readouterr().out
    assert f"golden accuracy {100 * correct / 50:.2f}% ({correct}/50)" in out
    assert "true\\pred" in out


def test_eval_rejects_mismatched_dataset(tmp_path, capsys):
    write_idx_dir(tmp_path / "set")
    with pytest.raises(SystemExit) as exit:
        cli.main(["eval", str(FIXTURE), "--dataset", str(tmp_path / "set")])
    assert exit.value.code == 1
    assert capsys.readouterr().err == (f"bnnhw: error: dataset set has 12 pixels per image but "
                                       f"{FIXTURE} expects 6\n")


def test_info_does_not_import_torch_or_amaranth():
    code = ("import sys, bnnhw.cli, bnnhw.artifact, bnnhw.golden; "
            f"bnnhw.cli.main(['info', {str(FIXTURE)!r}]); "
            "print(sorted(m for m in ('torch', 'amaranth') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.rstrip().endswith("[]")
