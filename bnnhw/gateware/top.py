"""The network top: a chain of layer stages between an input stream and a result stream."""

from pathlib import Path

from amaranth import Module, Signal
from amaranth.back import verilog
from amaranth.lib import stream, wiring

from ..errors import FoldingError
from ..folding import check_folding, default_folding, divisors
from ..perf import performance
from .flash import SPIFlashReader
from .glue import WidthConverter
from .plan import PATCHABLE_SCORE_WIDTH, check_memories, is_patchable, signed_width
from .ports import Ports
from .weights import IMAGE_OFFSET, LoadStatus, WeightLoader, image_blocks, weight_image

__all__ = ["NetworkTop", "VerilogTarget", "generate_verilog", "score_width", "verilog_text"]


def score_width(net, memory):
    """Width of the signed class scores a network top of ``net`` with per-layer ``memory``
    styles makes: the fewest bits that hold ``net``'s, 16 for a patchable output layer."""
    return (PATCHABLE_SCORE_WIDTH if is_patchable(memory[-1])
            else signed_width(*net.score_bounds))


class NetworkTop(wiring.Component):
    """A whole network in gateware, bit-exact with :func:`bnnhw.golden.run`.

    Ports: :mod:`bnnhw.gateware.ports` (``i``: ``in_simd`` input values per beat; ``o``: one
    result beat per frame with the class and every class's score).

    Each layer elaborates to the stage its kind defines (:meth:`bnnhw.kinds.Layer.engine`);
    width converters re-pack each stage's output beats to the values per beat the next one
    takes. Stages work on successive frames at once.

    Throughput: one frame per ``performance.initiation_interval`` cycles, the slowest of its
    stages and of the ``n_pixels / in_simd`` input beats. Latency: about
    ``performance.latency`` cycles.

    Parameters
    ----------
    net : Network
        The network, from :func:`bnnhw.artifact.load`.
    folding : sequence, optional
        One entry per layer (see :mod:`bnnhw.folding`); by default
        :func:`~bnnhw.folding.default_folding` picks one balanced against ``target``.
    in_simd : int, optional
        Input values per beat, dividing the input size; by default what the first layer takes
        per beat.
    target : int, optional
        Cycles per frame for the default folding (ignored when ``folding`` is given).
    memory : str or sequence of str
        ``"block"`` (default: block RAM, for an iCE40), ``"distributed"`` (LUT RAM, faster
        on an ECP5) or ``"spram"`` (weights in an iCE40 UltraPlus's SPRAM, loaded at run
        time), for all layers or one per layer; or ``"patchable"`` (block RAM holding every
        trained value, widths from the shapes: :data:`~.plan.PATCHABLE`) and
        ``"patchable-spram"`` (the same with the weights in SPRAM) for all layers.
    image_offset : int
        Where the weight image starts in the SPI flash, for a network with weights in SPRAM
        (default: :data:`bnnhw.gateware.weights.IMAGE_OFFSET`).
    flash_half : int
        Clock cycles per half period of the flash's clock (see
        :class:`~bnnhw.gateware.flash.SPIFlashReader`).

    Attributes
    ----------
    folding : tuple of LayerFolding
    performance : Performance
        The analytic model: cycles per layer, initiation interval, latency, memory bits, from
        the figures the stages are built by.
    ports : Ports
        The widths of ``i`` and ``o``.
    in_bits, in_simd, n_pixels, classes, score_width, cls_width : int
        The same, one by one.

    Raises
    ------
    FoldingError
        If the folding or ``in_simd`` does not fit the network; the message names the layer,
        the value and the allowed values.
    """

    def __init__(self, net, folding=None, *, in_simd=None, target=None, memory="block",
                 image_offset=IMAGE_OFFSET, flash_half=2):
        from ..artifact import Network
        if not isinstance(net, Network):
            raise TypeError(f"net must be a Network, not {net!r}")
        if folding is None:
            folding = default_folding(net, target=target)
        self.folding = check_folding(net, folding)
        try:
            self.memory = check_memories(memory, len(net.layers))
        except ValueError as error:
            raise FoldingError(str(error)) from None
        patchable = list(map(is_patchable, self.memory))
        if any(patchable) and not all(patchable):
            raise FoldingError(f"memory {', '.join(self.memory)}: a patchable design's layers "
                               f"must all be patchable (or none)")
        self.net = net
        self.figures = tuple(layer.figures(fold, style)
                             for layer, fold, style in zip(net.layers, self.folding,
                                                           self.memory))
        # Weights loaded at run time: the image the design expects, and where it reads it.
        self.blocks = image_blocks(net, self.folding, self.memory)
        self.image_offset, self.flash_half = image_offset, flash_half
        size = net.input.size
        if in_simd is None:
            in_simd = self.figures[0].in_count
        if not isinstance(in_simd, int) or isinstance(in_simd, bool):
            raise FoldingError(f"in_simd must be an integer, not {in_simd!r}")
        if in_simd <= 0 or size % in_simd:
            raise FoldingError(f"in_simd {in_simd} does not divide the {size} pixels; "
                               f"allowed: {', '.join(map(str, divisors(size)))}")
        self.ports = Ports.for_network(net, in_simd, image=bool(self.blocks),
                                       score_width=score_width(net, self.memory))
        self.in_bits, self.in_simd, self.n_pixels = net.input.bits, in_simd, size
        self.classes, self.score_width = self.ports.classes, self.ports.score_width
        self.cls_width = self.ports.cls_width
        self.performance = performance(net, self.folding, in_simd, memory=self.memory)
        super().__init__(dict(self.ports.signature().members))

    def image(self):
        """The weight image this design loads (bytes; empty if it loads none)."""
        return weight_image(self.net, self.folding, self.memory)

    def elaborate(self, platform):
        m = Module()
        # Each stage ends in a small FIFO and double-buffers its input, so neighbouring
        # stages work on successive frames at once.
        source, width, count = wiring.flipped(self.i), self.in_bits, self.in_simd
        loader = None
        if self.blocks:
            # Weights in run-time memories: read the image from flash, write it into them,
            # and let frames in only once it is checked.
            length = len(self.image())
            m.submodules.reader = reader = SPIFlashReader(offset=self.image_offset,
                                                          length=length, half=self.flash_half)
            m.submodules.loader = loader = WeightLoader(
                self.blocks, patchable=any(map(is_patchable, self.memory)))
            wiring.connect(m, reader.o, loader.i)
            wiring.connect(m, reader.flash, wiring.flipped(self.flash))
            m.d.comb += self.status.eq(loader.status)
            ready = Signal()                # a flip-flop: it gates the input's `ready`
            m.d.sync += ready.eq(loader.status == LoadStatus.READY)
            gate = stream.Signature(self.i.payload.shape()).create()
            m.d.comb += [gate.payload.eq(self.i.payload), gate.valid.eq(self.i.valid & ready),
                         self.i.ready.eq(gate.ready & ready)]
            source = gate
        first_block = 0
        for n, (layer, fold, figures) in enumerate(zip(self.net.layers, self.folding,
                                                       self.figures)):
            if count != figures.in_count:
                converter = WidthConverter(elem_width=width, in_count=count,
                                           out_count=figures.in_count)
                m.submodules[f"convert{n}"] = converter
                wiring.connect(m, source, converter.i)
                source = converter.o
            stage = m.submodules[f"layer{n}"] = layer.engine(fold, self.memory[n])
            wiring.connect(m, source, stage.i)
            if "load" in stage.signature.members:
                blocks = len(stage.load.en)
                m.d.comb += [stage.load.addr.eq(loader.write.addr),
                             stage.load.data.eq(loader.write.data),
                             stage.load.active.eq(loader.write.active),
                             stage.load.en.eq(loader.write.en[first_block:
                                                              first_block + blocks])]
                first_block += blocks
            source, count = stage.o, figures.out_count
            width = figures.output.bits if figures.output is not None else None
        wiring.connect(m, source, wiring.flipped(self.o))
        return m


class VerilogTarget:
    """The platform bnnhw's Verilog is elaborated for: no board, but vendor primitives (the
    iCE40 UltraPlus SPRAM) as instances of their Verilog modules, which Yosys maps and the
    Verilator benches simulate with Yosys's models (:mod:`bnnhw.sim.verilator`)."""


def verilog_text(top, *, name="bnn_top"):
    """Verilog of ``top`` (a ``NetworkTop`` or any component with its ports) as a string."""
    return verilog.convert(top, name=name, emit_src=False, platform=VerilogTarget())


def generate_verilog(net, folding, path, *, in_simd=None, memory="block", name="bnn_top"):
    """Write Verilog of ``NetworkTop(net, folding, in_simd=in_simd, memory=memory)`` to
    ``path`` (through a temporary file, renamed when complete).

    Ports: :data:`bnnhw.gateware.ports.VERILOG_PORTS`. ``folding`` may be ``None`` for the
    default. Returns the top (its ``performance.table()`` summarises the folding, cycles and
    memory bits). Raises :class:`FoldingError` for a folding that does not fit.
    """
    top = NetworkTop(net, folding, in_simd=in_simd, memory=memory)
    text = verilog_text(top, name=name)
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return top
