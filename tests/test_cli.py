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
    assert "    0  first   2x3 3-bit  5 binary           30         7  3-bit inputs" in out
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


def test_info_prints_the_performance_model_of_a_folding(capsys):
    assert cli.main(["info", str(FIXTURE), "--pe", "5,1,3", "--simd", "3,5,2"]) == 0
    out = capsys.readouterr().out
    # cycles per layer: (5/5)*(6/3) = 2, (4/1)*(5/5) = 4, (3/3)*(4/2) = 2; argmax 3 + 1
    assert "initiation interval 4 cycles/frame (layers[1])" in out
    rows = [line.split("  ") for line in out.splitlines() if " -> " in line]
    rows = [[cell.strip() for cell in row if cell.strip()] for row in rows]
    assert ["0", "first", "2x3 3-bit -> 5 binary", "5", "3", "2"] == rows[0][:6]
    assert ["1", "dense", "5 binary -> 4 binary", "1", "5", "4"] == rows[1][:6]
    assert ["2", "output", "4 binary -> scores", "3", "2", "4"] == rows[2][:6]


def test_info_rejects_a_folding_that_does_not_divide(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["info", str(FIXTURE), "--pe", "2,1,1", "--simd", "1,1,1"])
    assert exit.value.code == 1
    assert capsys.readouterr().err == ("bnnhw: error: layers[0]: pe 2 does not divide the 5 "
                                       "neurons; allowed: 1, 5\n")


@pytest.mark.parametrize("args,message", [
    (["verilog", str(FIXTURE), "-o", "{tmp}"], "{tmp}: is a directory; give the name of the "
                                               "Verilog file to write"),
    (["verilog", str(FIXTURE), "-o", "{tmp}/x.v", "--name", "1top"],
     "--name '1top' is not a usable Verilog module name (letters, digits and _, not starting "
     "with a digit, not a keyword)"),
    (["info", str(FIXTURE), "--target", "4", "--pe", "1,1,1"],
     "--pe/--simd and --target each pick a folding; give one of them"),
    (["flow", "--network", str(FIXTURE), "--stall", "1.5", "-o", "{tmp}"],
     "--stall must be a probability with 0 <= P < 1, not 1.5"),
    (["flow", "--network", str(FIXTURE), "-o", str(FIXTURE)], f"{FIXTURE}: exists and is not "
                                                               f"a folder"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit:
        cli.main([a.replace("{tmp}", str(tmp_path)) for a in args])
    assert exit.value.code == 1
    assert capsys.readouterr().err == f"bnnhw: error: {message.replace('{tmp}', str(tmp_path))}\n"
    assert sorted(tmp_path.iterdir()) == []           # nothing written


def test_info_and_verilog_describe_a_cnn(tmp_path, capsys):
    cnn = FIXTURE.parents[1].parent / "examples" / "digits_cnn.npz"
    assert cli.main(["info", str(cnn), "--pe", "8,8,-,1,1", "--simd", "1,32,1,32,1"]) == 0
    out = capsys.readouterr().out
    assert "    2  maxpool     4x4x64 binary  2x2x64 binary            0         -  2x2 windows" \
        in out
    assert "initiation interval 1296 cycles/frame (layers[0])" in out
    assert cli.main(["verilog", str(cnn), "-o", str(tmp_path / "cnn.v"), "--target",
                     "2000"]) == 0
    assert "module bnn_top" in (tmp_path / "cnn.v").read_text()
    with pytest.raises(SystemExit):
        cli.main(["info", str(cnn), "--pe", "8,8,2,1,1", "--simd", "1,32,1,32,1"])
    assert capsys.readouterr().err.endswith("bnnhw: error: layers[2]: a maxpool layer has no "
                                            "pe (give - for it)\n")


def test_folding_file_round_trip(tmp_path, capsys):
    from bnnhw.folding import FoldingError, load_folding, save_folding
    cnn = FIXTURE.parents[1].parent / "examples" / "digits_cnn.npz"
    net = artifact.load(cnn)
    folding = [(8, 1), (4, 32), (8,), (1, 16), (1, 16)]
    path = save_folding(tmp_path / "folding.json", net, folding, cycles_per_frame=2304)
    assert [f.as_dict() for f in load_folding(path, net)] == [
        {"pe": 8, "simd": 1}, {"pe": 4, "simd": 32}, {"simd": 8}, {"pe": 1, "simd": 16},
        {"pe": 1, "simd": 16}]
    # The same Verilog from the file as from the options it was written for.
    assert cli.main(["verilog", str(cnn), "-o", str(tmp_path / "a.v"), "--folding",
                     str(path)]) == 0
    assert cli.main(["verilog", str(cnn), "-o", str(tmp_path / "b.v"), "--pe", "8,4,-,1,1",
                     "--simd", "1,32,8,16,16"]) == 0
    assert (tmp_path / "a.v").read_text() == (tmp_path / "b.v").read_text()
    capsys.readouterr()
    with pytest.raises(FoldingError, match=r"kinds \['first', 'dense', 'output'\] are not the "
                                           r"network's layers"):
        load_folding(save_folding(tmp_path / "other.json", artifact.load(FIXTURE),
                                  [(1, 1), (1, 1), (1, 1)]), net)
    with pytest.raises(SystemExit):
        cli.main(["info", str(cnn), "--folding", str(path), "--target", "100"])
    assert capsys.readouterr().err == ("bnnhw: error: --target and --folding each pick a "
                                       "folding; give one of them\n")


def test_info_board_shows_the_design_a_build_would_use(capsys):
    import json
    from bnnhw.boards.board import get_board
    from bnnhw.boards.build import estimate, fitting_design
    from bnnhw.folding import format_folding
    net = artifact.load(FIXTURE)
    board = get_board("icebreaker")
    folding, memory = fitting_design(net, board)
    need = estimate(net, folding, board, memory=memory)
    assert cli.main(["info", str(FIXTURE), "--board", "icebreaker"]) == 0
    out = capsys.readouterr().out
    assert "on the iCEBreaker (iCE40UP5K), as `bnnhw build icebreaker` builds it:" in out
    assert f"  folding (pe, simd)     {format_folding(folding)}\n" in out
    assert f"about {need.logic:,} of 5,280" in out and "does not fit" not in out
    assert cli.main(["info", str(FIXTURE), "--board", "icebreaker", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)["board"]
    assert document["fits"] and document["estimate"]["ICESTORM_LC"]["used"] == need.logic
    assert document["folding"] == [fold.as_dict() for fold in folding]


def test_info_board_says_why_a_folding_given_does_not_fit(capsys, tmp_path):
    sfc = tmp_path / "sfc.npz"
    artifact.save(testing.random_network(np.random.default_rng(1), [784, 256, 256, 256, 10]),
                  sfc)
    assert cli.main(["info", str(sfc), "--board", "icebreaker", "--pe", "256,256,256,10",
                     "--simd", "784,256,256,256"]) == 0
    out = capsys.readouterr().out
    assert "  does not fit: iCEBreaker (iCE40UP5K): logic: the folding needs about " in out
