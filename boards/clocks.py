"""The clock a design runs at on a board: a PLL from the board's oscillator.

iCE40 boards use ``SB_PLL40_PAD`` (the oscillator's pin feeds the PLL directly), ECP5 boards
``EHXPLLL``. :func:`pll_settings` lists every output frequency the PLL can make from the
oscillator, with the divider values that make it, under the limits that icestorm's ``icepll``
and Project Trellis's ``ecppll`` use; :func:`pll_setting` picks one. :class:`ClockGenerator`
instantiates it and makes the ``sync`` domain, held in reset until the PLL locks and for 15 us
more (an iCE40's block RAMs read as zeros for about 3 us after configuration).

A setting of ``None`` runs the design straight from the oscillator, as before this module.
"""

import math
from dataclasses import dataclass, field
from functools import lru_cache

from amaranth import ClockDomain, ClockSignal, Const, Instance, Module, ResetSignal, Signal
from amaranth.hdl import Elaboratable
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer

from ..errors import BnnhwError

__all__ = ["PLLSetting", "pll_settings", "pll_setting", "ClockGenerator", "clock_domains",
           "POWER_ON_DELAY"]

# Cycles the design is held in reset after the PLL locks, in seconds.
POWER_ON_DELAY = 15e-6

# Frequency limits in MHz: (input, phase detector, VCO, output).
_ICE40_LIMITS = ((10.0, 133.0), (10.0, 133.0), (533.0, 1066.0), (16.0, 275.0))
_ECP5_LIMITS = ((8.0, 400.0), (3.125, 400.0), (400.0, 800.0), (10.0, 400.0))


@dataclass(frozen=True, order=True)
class PLLSetting:
    """One PLL configuration: ``output_mhz`` made from ``input_mhz`` by ``params``."""
    output_mhz: float
    family: str = field(compare=False)
    input_mhz: float = field(compare=False)
    params: tuple = field(compare=False)      # (name, value) pairs, the primitive's parameters

    @property
    def output_hz(self):
        return self.output_mhz * 1e6

    def describe(self):
        return (f"{self.output_mhz:g} MHz from {self.input_mhz:g} MHz ("
                + ", ".join(f"{name} {value}" for name, value in self.params) + ")")


def _ice40_settings(fin):
    (in_lo, in_hi), (pfd_lo, pfd_hi), (vco_lo, vco_hi), (out_lo, out_hi) = _ICE40_LIMITS
    if not in_lo <= fin <= in_hi:
        return {}
    found = {}
    # SIMPLE feedback: fout = fin / (DIVR + 1) * (DIVF + 1) / 2 ** DIVQ (icepll's search).
    for divr in range(16):
        pfd = fin / (divr + 1)
        if not pfd_lo <= pfd <= pfd_hi:
            continue
        filter_range = (1 if pfd < 17 else 2 if pfd < 26 else 3 if pfd < 44 else
                        4 if pfd < 66 else 5 if pfd < 101 else 6)
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not vco_lo <= vco <= vco_hi:
                continue
            for divq in range(1, 7):
                fout = round(vco / (1 << divq), 6)
                if out_lo <= fout <= out_hi and fout not in found:
                    found[fout] = (("DIVR", divr), ("DIVF", divf), ("DIVQ", divq),
                                   ("FILTER_RANGE", filter_range))
    return found


def _ecp5_settings(fin):
    (in_lo, in_hi), (pfd_lo, pfd_hi), (vco_lo, vco_hi), (out_lo, out_hi) = _ECP5_LIMITS
    if not in_lo <= fin <= in_hi:
        return {}
    found = {}
    # Feedback from CLKOP: fout = fin / CLKI_DIV * CLKFB_DIV, VCO = fout * CLKOP_DIV
    # (ecppll's search, preferring a VCO near 600 MHz).
    for clki_div in range(1, 129):
        pfd = fin / clki_div
        if not pfd_lo <= pfd <= pfd_hi:
            continue
        for clkfb_div in range(1, 81):
            fout = round(pfd * clkfb_div, 6)
            if not out_lo <= fout <= out_hi:
                continue
            for clkop_div in range(1, 129):
                vco = fout * clkop_div
                if not vco_lo <= vco <= vco_hi:
                    continue
                best = found.get(fout)
                if best is None or abs(vco - 600) < abs(best[0] - 600):
                    # CLKOP phase as ecppll sets it: half an output period, in VCO cycles.
                    found[fout] = (vco, (("CLKI_DIV", clki_div), ("CLKFB_DIV", clkfb_div),
                                         ("CLKOP_DIV", clkop_div),
                                         ("CLKOP_CPHASE", clkop_div // 2)))
    return {fout: params for fout, (_, params) in found.items()}


@lru_cache(maxsize=None)
def pll_settings(family, input_mhz):
    """Every :class:`PLLSetting` of ``family`` (``"ice40"`` or ``"ecp5"``) from an oscillator
    of ``input_mhz``, by ascending output frequency."""
    if family == "ice40":
        found = _ice40_settings(input_mhz)
    elif family == "ecp5":
        found = _ecp5_settings(input_mhz)
    else:
        raise ValueError(f"family must be 'ice40' or 'ecp5', not {family!r}")
    return tuple(sorted(PLLSetting(fout, family, input_mhz, params)
                        for fout, params in found.items()))


def pll_setting(family, input_mhz, mhz, *, accept=None):
    """The fastest setting at or below ``mhz`` for which ``accept(setting)`` holds (for
    example, that the UART's baud rate can be made from it); raises :class:`BnnhwError` if
    there is none."""
    if not isinstance(mhz, (int, float)) or isinstance(mhz, bool) or not math.isfinite(mhz) \
            or mhz <= 0:
        raise BnnhwError(f"clock must be a positive number of MHz, not {mhz!r}")
    settings = pll_settings(family, input_mhz)
    candidates = [s for s in settings if s.output_mhz <= mhz + 1e-9
                  and (accept is None or accept(s))]
    if not candidates:
        lowest = settings[0].output_mhz if settings else input_mhz
        raise BnnhwError(f"clock {mhz:g} MHz: the {family} PLL makes {lowest:g} MHz at the "
                         f"least from {input_mhz:g} MHz" + (
                             "" if accept is None or mhz < lowest else
                             ", and no frequency up to it suits the baud rate"))
    return candidates[-1]


def clock_domains():
    """The domains a :class:`ClockGenerator` drives, for its parent to define."""
    return {"sync": ClockDomain("sync"), "por": ClockDomain("por", reset_less=True)}


class ClockGenerator(Elaboratable):
    """The clock and reset of the ``sync`` domain of a board design: the oscillator
    ``resource`` through a PLL set by ``setting`` (or straight, for ``None``), reset until the
    PLL locks and for :data:`POWER_ON_DELAY` after. The parent defines the domains ``sync``
    and ``por`` (reset-less, for the reset counter): see :func:`clock_domains`."""

    def __init__(self, resource, setting):
        self.resource, self.setting = resource, setting

    def elaborate(self, platform):
        m = Module()
        setting = self.setting
        port = platform.request(self.resource, 0, dir="-")
        clk, locked = Signal(name="pll_clk"), Signal(name="pll_locked")
        if setting is None:
            m.submodules.clk_buffer = buffer = io.Buffer("i", port)
            m.d.comb += [clk.eq(buffer.i), locked.eq(1)]
            hz = platform.resources[self.resource, 0].clock.frequency
        elif setting.family == "ice40":
            params = dict(setting.params)
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE",
                p_DIVR=params["DIVR"], p_DIVF=params["DIVF"], p_DIVQ=params["DIVQ"],
                p_FILTER_RANGE=params["FILTER_RANGE"],
                i_PACKAGEPIN=port.io, i_RESETB=Const(1), i_BYPASS=Const(0),
                o_PLLOUTGLOBAL=clk, o_LOCK=locked)
            hz = setting.output_hz
        else:
            params = dict(setting.params)
            m.submodules.clk_buffer = buffer = io.Buffer("i", port)
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{setting.input_mhz:g}",
                a_FREQUENCY_PIN_CLKOP=f"{setting.output_mhz:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                p_CLKI_DIV=params["CLKI_DIV"], p_CLKFB_DIV=params["CLKFB_DIV"],
                p_CLKOP_DIV=params["CLKOP_DIV"], p_CLKOP_CPHASE=params["CLKOP_CPHASE"],
                p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                i_CLKI=buffer.i, i_CLKFB=clk, i_RST=Const(0), i_STDBY=Const(0),
                i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
                i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
                i_ENCLKOP=Const(0),
                o_CLKOP=clk, o_LOCK=locked)
            hz = setting.output_hz
        # No clock constraint here: both nextpnrs derive the PLL output's frequency from the
        # oscillator pin's constraint and the PLL's parameters (and the net named here does
        # not survive synthesis under this name).

        # Reset until `delay` cycles after lock; the counter itself has no reset, so that it
        # starts from its initial value at configuration (flip-flops have one on iCE40, ECP5).
        m.d.comb += [ClockSignal("sync").eq(clk), ClockSignal("por").eq(clk)]
        delay = max(2, int(POWER_ON_DELAY * hz))
        count = Signal(range(delay + 1))
        settled, done = Signal(), Signal()
        m.submodules.lock_sync = FFSynchronizer(locked, settled, o_domain="por")
        with m.If(~settled):
            m.d.por += count.eq(0)
        with m.Elif(count != delay):
            m.d.por += count.eq(count + 1)
        # A register, so that the reset (a net to every flip-flop) starts at a flip-flop.
        m.d.por += done.eq(settled & (count == delay))
        m.d.comb += ResetSignal("sync").eq(~done)
        return m
