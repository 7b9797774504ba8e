"""Class scores from popcounts, and their argmax."""

from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .glue import beat_layout

__all__ = ["ArgmaxUnit", "signed_width", "result_layout"]


def signed_width(lo, hi):
    """Bits of the narrowest two's complement integer holding ``lo..hi``."""
    return max(int(lo).bit_length(), int(hi).bit_length(), (-int(lo) - 1).bit_length()) + 1


def result_layout(classes, score_width):
    """Payload of a result beat: the class and every class's score."""
    return data.StructLayout({
        "cls": unsigned(max(1, (classes - 1).bit_length())),
        "scores": data.ArrayLayout(signed(score_width), classes),
    })


class ArgmaxUnit(wiring.Component):
    """Turn per-class popcounts into ``scores[c] = scales[c] * (2 p_c - fan_in) + offsets[c]``
    and emit one beat per frame with the argmax (ties go to the lowest class) and all scores.

    Bit-exact with :func:`bnnhw.golden.output_scores` and :func:`bnnhw.golden.argmax`.

    Input ``i``: ``classes / lanes`` beats per frame, field ``k`` (``pop_width`` bits) of beat
    ``g`` the popcount of class ``g * lanes + k``; ``last`` is ignored. Output ``o``: one
    :func:`result_layout` beat per frame.

    Throughput: one class per cycle, so one frame per ``classes`` cycles; the next frame's
    scores are gathered into the output register from the cycle the result is taken. Latency:
    two cycles from the input beat holding the last class to the result.

    Parameters
    ----------
    scales, offsets : sequence of int
        One per class; scales positive.
    fan_in : int
        ``N`` of the output layer.
    lanes : int
        Popcounts per input beat; divides the number of classes.
    pop_width : int
        Bits of each popcount field.
    """

    def __init__(self, *, scales, offsets, fan_in, lanes, pop_width):
        self.scales, self.offsets = [int(s) for s in scales], [int(o) for o in offsets]
        if len(self.scales) != len(self.offsets) or not self.scales:
            raise ValueError(f"scales and offsets must have one entry per class, not "
                             f"{len(self.scales)} and {len(self.offsets)}")
        if min(self.scales) < 1:
            raise ValueError(f"scales must be positive, not {min(self.scales)}")
        self.classes = len(self.scales)
        if not isinstance(lanes, int) or lanes <= 0 or self.classes % lanes:
            raise ValueError(f"lanes {lanes!r} does not divide the {self.classes} classes")
        self.fan_in, self.lanes, self.pop_width = fan_in, lanes, pop_width
        lo = min(-s * fan_in + o for s, o in zip(self.scales, self.offsets))
        hi = max(s * fan_in + o for s, o in zip(self.scales, self.offsets))
        self.score_width = signed_width(lo, hi)
        self.cls_width = max(1, (self.classes - 1).bit_length())
        super().__init__({
            "i": In(stream.Signature(beat_layout(lanes * pop_width))),
            "o": Out(stream.Signature(result_layout(self.classes, self.score_width))),
        })

    def elaborate(self, platform):
        m = Module()
        classes, lanes = self.classes, self.lanes
        # Everything moves only when the output register is free or being taken.
        advance = ~self.o.valid | self.o.ready

        # Stage 0: one class per cycle out of the held input beat; its score, with the
        # per-class constants picked by the class counter (scale 1 needs no multiplier).
        lane, cls = Signal(range(lanes)), Signal(range(classes))
        p = self.i.payload.data.word_select(lane, self.pop_width)
        bias = Array(o - s * self.fan_in for s, o in zip(self.scales, self.offsets))[cls]
        if all(s == 1 for s in self.scales):
            score = (p << 1) + bias
        else:
            score = (p << 1) * Array(self.scales)[cls] + bias
        valid1, cls1 = Signal(), Signal(range(classes))
        score1 = Signal(signed(self.score_width))
        m.d.comb += self.i.ready.eq(advance & (lane == lanes - 1))
        with m.If(advance):
            m.d.sync += [valid1.eq(self.i.valid), cls1.eq(cls), score1.eq(score)]
            with m.If(self.i.valid):
                m.d.sync += [lane.eq(Mux(lane == lanes - 1, 0, lane + 1)),
                             cls.eq(Mux(cls == classes - 1, 0, cls + 1))]

        # Stage 1: running maximum; a later class wins only if strictly greater, so ties go
        # to the lowest index. Scores land straight in the output register.
        best, best_cls = Signal(signed(self.score_width)), Signal(range(classes))
        better = (cls1 == 0) | (score1 > best)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(advance & valid1):
            m.d.sync += [best.eq(Mux(better, score1, best)),
                         best_cls.eq(Mux(better, cls1, best_cls)),
                         self.o.payload.scores[cls1].eq(score1)]
            with m.If(cls1 == classes - 1):
                m.d.sync += [self.o.valid.eq(1),
                             self.o.payload.cls.eq(Mux(better, cls1, best_cls))]
        return m
