# amaranth: UnusedElaboratable=no
"""PLL settings and the clock search of board builds, without place and route."""

import numpy as np
import pytest

from bnnhw import testing
from bnnhw.boards.board import BoardTop, get_board
from bnnhw.boards.build import BoardError, check_baud, clock_setting, uart_divisor
from bnnhw.boards.clocks import pll_setting, pll_settings
from bnnhw.boards.shell import Shell
from bnnhw.errors import BnnhwError
from bnnhw.gateware.top import NetworkTop


def test_ice40_settings_follow_icepll():
    # icepll -i 12 -o 60: DIVR 0, DIVF 79, DIVQ 4, FILTER_RANGE 1 (VCO 960 MHz)
    setting = pll_setting("ice40", 12.0, 60)
    assert setting.output_mhz == 60
    assert dict(setting.params) == {"DIVR": 0, "DIVF": 79, "DIVQ": 4, "FILTER_RANGE": 1}
    for s in pll_settings("ice40", 12.0):
        p = dict(s.params)
        pfd = 12.0 / (p["DIVR"] + 1)
        vco = pfd * (p["DIVF"] + 1)
        assert 10 <= pfd <= 133 and 533 <= vco <= 1066 and 16 <= s.output_mhz <= 275
        assert s.output_mhz == pytest.approx(vco / 2 ** p["DIVQ"])


def test_ecp5_settings_follow_ecppll():
    setting = pll_setting("ecp5", 25.0, 100)
    assert setting.output_mhz == 100
    assert dict(setting.params) == {"CLKI_DIV": 1, "CLKFB_DIV": 4, "CLKOP_DIV": 6,
                                    "CLKOP_CPHASE": 3}
    for s in pll_settings("ecp5", 25.0):
        p = dict(s.params)
        assert 400 <= s.output_mhz * p["CLKOP_DIV"] <= 800
        assert s.output_mhz == pytest.approx(25.0 / p["CLKI_DIV"] * p["CLKFB_DIV"])


def test_pll_setting_steps_down_to_what_the_pll_makes():
    assert pll_setting("ice40", 12.0, 70.9).output_mhz == 70.5      # 1.5 MHz steps there
    assert pll_setting("ice40", 12.0, 59.9).output_mhz == 59.25     # 0.75 MHz steps there
    with pytest.raises(BnnhwError, match=r"^clock 10 MHz: the ice40 PLL makes 16\.125 MHz at "
                                         r"the least from 12 MHz$"):
        pll_setting("ice40", 12.0, 10)
    with pytest.raises(BnnhwError, match=r"^clock must be a positive number of MHz, not -5$"):
        pll_setting("ice40", 12.0, -5)


def test_clock_setting_suits_the_baud_rate():
    board = get_board("icebreaker")
    # 3 Mbaud needs a clock that is (almost) a multiple of 3 MHz: 66 MHz is, 67.5 is not.
    assert clock_setting(board, 67.5, 3_000_000).output_mhz == 66
    assert clock_setting(board, 67.5, 115200).output_mhz == 67.5
    assert clock_setting(board, 12, 115200) is None                 # the oscillator itself
    assert uart_divisor(66e6, 3_000_000) == (22, 0.0)
    with pytest.raises(BoardError, match=r"^baud 12000000 is too fast for the 12 MHz clock of "
                                         r"the iCEBreaker \(iCE40UP5K\) \(at least 4 clock "
                                         r"cycles per bit\)$"):
        check_baud(12_000_000, 12e6, board)


@pytest.mark.parametrize("name,primitive,parameter", [
    ("icebreaker", "SB_PLL40_PAD", "DIVF"), ("ulx3s", "EHXPLLL", "CLKFB_DIV")])
def test_board_top_instantiates_the_pll(name, primitive, parameter):
    board = get_board(name)
    net = testing.random_network(np.random.default_rng(0), [8, 4, 3], input_bits=2)
    setting = clock_setting(board, 60, 115200)
    design = BoardTop(board, Shell(NetworkTop(net), divisor=521), clock=setting)
    plan = board.platform().prepare(design, name="top")
    rtlil = plan.files["top.il"]
    assert primitive in rtlil
    assert f"parameter \\{parameter} {dict(setting.params)[parameter]}" in rtlil
