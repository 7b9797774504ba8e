"""The network top's port contract: its two streams, defined once.

Every side that speaks to a network top imports this: :class:`~bnnhw.gateware.top.NetworkTop`,
the reference top (``bnnhw.sim.standin``), the board shell (``bnnhw.boards.shell``) and the
simulators' port packing (``bnnhw.sim.frames``).

``i``: one beat per ``in_simd`` input values, ``{"data": in_bits * in_simd, "last": 1}``; value
``k * in_simd + j`` of a frame (stream order, :mod:`bnnhw.tensor`) in bits
``[j * in_bits, (j + 1) * in_bits)`` of beat ``k``; ``last`` marks a frame's final beat (the
network counts beats and does not rely on it).

``o``: one beat per frame, :func:`result_layout`: ``cls`` (``unsigned(cls_width)``, the argmax
of the scores, ties to the lowest class) and ``scores`` (``classes`` signed ``score_width``-bit
integers, class 0 first), equal to ``bnnhw.golden.run(...).classes`` and ``.scores``. Frames
leave in the order they came.

A top whose weights are loaded at run time (``image``: some layer's weights are in SPRAM,
:mod:`bnnhw.gateware.weights`) also has ``flash`` (the pins of the SPI flash holding the weight
image, :data:`bnnhw.gateware.flash.FLASH_SIGNATURE`) and ``status`` (a
:class:`~bnnhw.gateware.weights.LoadStatus`); ``i`` takes no beat before ``status`` is
``READY``.

In Verilog (``amaranth.back.verilog.convert(top, name=...)``), the ports are ``clk``, ``rst``,
``i__payload``, ``i__valid``, ``i__ready``, ``o__payload``, ``o__valid``, ``o__ready`` (and with
an image ``flash__sck``, ``flash__cs``, ``flash__copi``, ``flash__cipo``, ``status``), struct
fields packed LSB first: ``i__payload = data | last << (in_bits * in_simd)``,
``o__payload = cls | scores[0] << cls_width | scores[1] << (cls_width + score_width) ...``.
"""

from dataclasses import dataclass

from .plan import signed_width

__all__ = ["Ports", "cls_width", "beat_layout", "result_layout", "VERILOG_PORTS", "IMAGE_PORTS"]

VERILOG_PORTS = ("clk", "rst", "i__payload", "i__valid", "i__ready", "o__payload", "o__valid",
                 "o__ready")
IMAGE_PORTS = ("flash__sck", "flash__cs", "flash__copi", "flash__cipo", "status")


def cls_width(classes):
    """Bits of the ``cls`` field for ``classes`` classes (at least 1)."""
    return max(1, (classes - 1).bit_length())


def beat_layout(width):
    """Payload of a folded stream: ``width`` data bits; ``last`` marks a frame's final beat."""
    from amaranth.lib import data
    return data.StructLayout({"data": width, "last": 1})


def result_layout(classes, score_width):
    """Payload of a result beat: the class and every class's score."""
    from amaranth import signed, unsigned
    from amaranth.lib import data
    return data.StructLayout({
        "cls": unsigned(cls_width(classes)),
        "scores": data.ArrayLayout(signed(score_width), classes),
    })


@dataclass(frozen=True)
class Ports:
    """The widths of a network top's streams; :meth:`signature` is its Amaranth signature."""
    in_bits: int          # bits per input value
    in_simd: int          # input values per beat
    n_pixels: int         # input values per frame
    classes: int
    score_width: int      # bits of a signed score
    image: bool = False   # weights loaded at run time from a flash: `flash` and `status` too

    @classmethod
    def for_network(cls, net, in_simd, *, image=False, score_width=None):
        """The ports of a top for ``net`` taking ``in_simd`` values per beat, with scores of
        ``score_width`` bits (by default the fewest that hold ``net``'s)."""
        if score_width is None:
            score_width = signed_width(*net.score_bounds)
        return cls(in_bits=net.input.bits, in_simd=in_simd, n_pixels=net.input.size,
                   classes=net.classes, score_width=score_width, image=bool(image))

    @property
    def verilog_ports(self):
        """The names of the top's Verilog ports."""
        return VERILOG_PORTS + (IMAGE_PORTS if self.image else ())

    @classmethod
    def of(cls, top):
        """The ports of ``top``, any component with a ``ports`` attribute."""
        ports = getattr(top, "ports", None)
        if not isinstance(ports, Ports):
            raise TypeError(f"{top!r} has no network top ports (a `ports` attribute of type "
                            f"Ports)")
        return ports

    @property
    def cls_width(self):
        return cls_width(self.classes)

    @property
    def beats(self):
        """Input beats per frame."""
        return self.n_pixels // self.in_simd

    @property
    def in_width(self):
        """Bits of ``i__payload``."""
        return self.in_bits * self.in_simd + 1

    @property
    def out_width(self):
        """Bits of ``o__payload``."""
        return self.cls_width + self.classes * self.score_width

    @property
    def in_words(self):
        """32-bit words holding ``i__payload``."""
        return (self.in_width + 31) // 32

    @property
    def out_words(self):
        """32-bit words holding ``o__payload``."""
        return (self.out_width + 31) // 32

    def input_layout(self):
        return beat_layout(self.in_bits * self.in_simd)

    def result_layout(self):
        return result_layout(self.classes, self.score_width)

    def signature(self):
        """The top's ``wiring.Signature``: ``i`` in, ``o`` out."""
        from amaranth.lib import stream, wiring
        from amaranth.lib.wiring import In, Out
        members = {"i": In(stream.Signature(self.input_layout())),
                   "o": Out(stream.Signature(self.result_layout()))}
        if self.image:
            from .flash import FLASH_SIGNATURE
            from .weights import LoadStatus
            members["flash"] = Out(FLASH_SIGNATURE)
            members["status"] = Out(2, init=LoadStatus.LOADING)
        return wiring.Signature(members)
