# amaranth: UnusedElaboratable=no
"""Real bitstreams with Yosys and nextpnr (YoWASP): one per FPGA family, as CI must run.

Minutes each; deselect locally with ``-m "not board"``.
"""

from pathlib import Path

import numpy as np
import pytest

from bnnhw import artifact, testing
from bnnhw.boards.board import get_board
from bnnhw.boards.build import build, estimate, fitting_design
from bnnhw.folding import default_folding, parse_folding

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits.npz"


def digits_network():
    if EXAMPLE.is_file():
        return artifact.load(EXAMPLE)
    return testing.random_network(np.random.default_rng(0), [64, 128, 128, 10], input_bits=5)


@pytest.mark.slow
@pytest.mark.board
@pytest.mark.parametrize("name", ["icebreaker", "ulx3s"])
def test_bitstream_builds_fits_and_meets_timing(name, tmp_path):
    board = get_board(name)
    net = digits_network()
    # The iCEBreaker gets the fastest folding that fits; the ULX3S a moderate one, so that
    # CI's place and route stays within a few minutes. Each runs from its PLL at a clock
    # given (searching for the fastest takes several place and route runs).
    folding, memory = (fitting_design(net, board) if name == "icebreaker" else
                       (default_folding(net, target=64), "block"))
    clock = {"icebreaker": 60, "ulx3s": 100}[name]
    result = build(board, net, folding, tmp_path / name, memory=memory, clock_mhz=clock,
                   log=lambda text: None)
    assert result.clock_mhz == clock and result.attempts[-1][0] == clock
    assert result.bitstream.stat().st_size > 1000
    logic, capacity = result.utilization[board.logic[0]]
    assert 0 < logic <= capacity
    assert result.utilization[board.block_ram[0]][0] <= board.block_ram[1]
    assert result.timing_met, f"{result.fmax_mhz:.1f} MHz < {result.clock_mhz} MHz"
    print(f"{name}: {logic} of {capacity} {board.logic[0]} (estimate "
          f"{estimate(net, folding, board, memory=memory).logic}), "
          f"{result.utilization[board.block_ram[0]][0]} block RAMs, "
          f"Fmax {result.fmax_mhz:.1f} MHz, {result.seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.board
def test_sfc_bitstream_with_weights_in_spram(tmp_path):
    """The iCEBreaker gets examples/mnist_sfc.npz, three layers' weights in SPRAM: the
    bitstream fits, meets timing at 60 MHz with the shell at 12 Mbaud, and its weight image
    is written beside it."""
    from bnnhw.gateware.weights import check_image
    path = EXAMPLE.with_name("mnist_sfc.npz")
    if not path.is_file():
        pytest.skip("examples/mnist_sfc.npz is not in this checkout")
    board = get_board("icebreaker")
    net = artifact.load(path)
    folding, memory = fitting_design(net, board)
    result = build(board, net, folding, tmp_path, memory=memory, clock_mhz=60,
                   baud=12_000_000, log=lambda text: None)
    assert result.utilization["ICESTORM_SPRAM"][0] == 4
    assert result.utilization[board.block_ram[0]][0] <= board.block_ram[1]
    assert result.timing_met, f"{result.fmax_mhz:.1f} MHz < 60 MHz"
    check_image((tmp_path / "weights.bin").read_bytes(), net, folding, memory)


@pytest.mark.slow
@pytest.mark.board
def test_cnn_bitstream_for_the_icebreaker(tmp_path):
    board = get_board("icebreaker")
    net = artifact.load(EXAMPLE.with_name("digits_cnn.npz"))
    # 2,304 cycles/frame: 28 of the 30 block RAMs, more than the default folding's margin.
    folding = parse_folding(net, pe=[8, 4, None, 1, 1], simd=[1, 32, 8, 16, 16])
    # At 33 MHz from the PLL (its Fmax was about 40): searching for the fastest clock would
    # take several place and route runs.
    result = build(board, net, folding, tmp_path / "cnn", clock_mhz=33, log=lambda text: None)
    logic, capacity = result.utilization[board.logic[0]]
    assert 0 < logic <= capacity and result.timing_met
    print(f"digits_cnn on the iCEBreaker: {logic} of {capacity} {board.logic[0]}, "
          f"{result.utilization[board.block_ram[0]][0]} block RAMs, "
          f"Fmax {result.fmax_mhz:.1f} MHz, {result.seconds:.0f} s")
