"""Class scores from popcounts, and their argmax."""

from amaranth import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .contents import rom_words
from .plan import KEY_DEPTH, PATCHABLE_SCORE_WIDTH, signed_width
from .ports import beat_layout, cls_width, result_layout

__all__ = ["ArgmaxUnit"]


class ArgmaxUnit(wiring.Component):
    """Turn per-class popcounts into ``scores[c] = scales[c] * (2 p_c - fan_in) + offsets[c]``
    and emit one beat per frame with the argmax (ties go to the lowest class) and all scores.

    Bit-exact with :meth:`bnnhw.kinds.OutputLayer.golden` and :func:`bnnhw.golden.argmax`.

    Input ``i``: ``classes / lanes`` beats per frame, field ``k`` (``pop_width`` bits) of beat
    ``g`` the popcount of class ``g * lanes + k``; ``last`` is ignored. Output ``o``: one
    :func:`result_layout` beat per frame.

    Throughput: one class per cycle, so one frame per ``classes + 1`` cycles (the result
    occupies the output register for at least a cycle). Latency: five cycles from the input
    beat holding the last class to the result.

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
    patchable : bool
        Keep the per-class constants (``offsets[c] - scales[c] * fan_in``) in a block RAM and
        make scores :data:`PATCHABLE_SCORE_WIDTH` bits, whatever the offsets (see
        :data:`~.plan.PATCHABLE`). The input then waits the first cycle after reset, while the
        block RAM's first word is read.
    """

    def __init__(self, *, scales, offsets, fan_in, lanes, pop_width, patchable=False):
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
        self.patchable = bool(patchable)
        if self.patchable:
            if self.score_width > PATCHABLE_SCORE_WIDTH:
                raise ValueError(f"scores reach {lo}..{hi}, beyond the "
                                 f"{PATCHABLE_SCORE_WIDTH}-bit scores of a patchable build")
            self.score_width = PATCHABLE_SCORE_WIDTH
        self.cls_width = cls_width(self.classes)
        super().__init__({
            "i": In(stream.Signature(beat_layout(lanes * pop_width))),
            "o": Out(stream.Signature(result_layout(self.classes, self.score_width))),
        })

    def elaborate(self, platform):
        m = Module()
        classes, lanes = self.classes, self.lanes
        # Everything moves only while the output register is empty. Waiting for it to be
        # taken costs a cycle per frame, but `advance` then comes straight from a flip-flop:
        # from `o.ready` it was the critical path on an iCE40 (it enables every stage).
        advance = ~self.o.valid

        # Stage 0: one class per cycle out of the held input beat; its score, with the
        # per-class constants picked by the class counter (scale 1 needs no multiplier).
        # Scores are held offset by 2 ** (score_width - 1), so that they compare as unsigned
        # numbers: a carry chain straight into a register (a signed compare needed a LUT and
        # a routing hop more on an iCE40). The output flips the top bit back.
        offset = 1 << (self.score_width - 1)
        lane, cls = Signal(range(lanes)), Signal(range(classes))
        p = self.i.payload.data.word_select(lane, self.pop_width)
        biases = [o - s * self.fan_in + offset for s, o in zip(self.scales, self.offsets)]
        primed = Const(1)
        if self.patchable:
            # The biases from a block RAM, read a cycle ahead: at the class counter's next
            # value. Its output holds the first class's bias from the second cycle on.
            rom = m.submodules.biases = Memory(
                shape=self.score_width, depth=max(classes, KEY_DEPTH),
                init=rom_words("biases", self.score_width, max(classes, KEY_DEPTH), biases),
                attrs={"rom_style": "block"})
            port = rom.read_port()
            primed = Signal()
            m.d.sync += primed.eq(1)
            step = advance & self.i.valid & primed
            m.d.comb += port.addr.eq(Mux(step, Mux(cls == classes - 1, 0, cls + 1), cls))
            bias = port.data
        else:
            bias = Array(biases)[cls]
        if all(s == 1 for s in self.scales):
            score = (p << 1) + bias
        else:
            score = (p << 1) * Array(self.scales)[cls] + bias
        valid1, cls1, last1 = Signal(), Signal(range(classes)), Signal()
        score1 = Signal(self.score_width)
        m.d.comb += self.i.ready.eq(advance & primed & (lane == lanes - 1))
        with m.If(advance):
            m.d.sync += [valid1.eq(self.i.valid & primed), cls1.eq(cls), score1.eq(score),
                         last1.eq(cls == classes - 1)]
            with m.If(self.i.valid & primed):
                m.d.sync += [lane.eq(Mux(lane == lanes - 1, 0, lane + 1)),
                             cls.eq(Mux(cls == classes - 1, 0, cls + 1))]

        # Stages 1-2: a running maximum per class parity, because a one-cycle loop through a
        # compare and a select does not reach 75 MHz on an iCE40. Class u's compare (stage 1)
        # against the best of its parity so far is registered, and its update (stage 2) is a
        # cycle later, yet in time for class u + 2. A later class wins only if strictly
        # greater, so ties go to the lowest index. Classes 0 and 1 start their parity.
        sw = unsigned(self.score_width)
        best = [Signal(sw, name="best_even"), Signal(sw, name="best_odd")]
        # Kept inverted too: a > b is the carry out of a + ~b, and a carry chain takes its
        # operands as they are (inverting one cost a LUT and a routing hop on an iCE40).
        nbest = [Signal(sw, name="nbest_even"), Signal(sw, name="nbest_odd")]
        w = self.score_width

        def greater(a, nb, equal=False):
            """``a > b`` (``a >= b`` if ``equal``) for ``nb = ~b``: a carry out."""
            return (a + nb + equal)[w]
        best_cls = [Signal(range(classes), name="best_cls_even"),
                    Signal(range(classes), name="best_cls_odd")]
        stage = data.StructLayout({"valid": 1, "score": sw, "cls": range(classes), "last": 1})
        s2, s3, s4 = Signal(stage), Signal(stage), Signal(stage)
        # The score field stage 4 writes, decoded a stage early: one LUT per field's enable.
        write4 = Signal(classes)
        # Whether class u is in parity p's running (the first of its parity, or greater), in
        # registers that the compares feed directly: the update's enable is then one LUT.
        gt2, head2, sel2 = Signal(2), Signal(), Signal(2)
        odd1 = cls1[0] if classes > 1 else 0
        with m.If(advance):
            m.d.sync += [s2.valid.eq(valid1), s2.score.eq(score1), s2.cls.eq(cls1),
                         s2.last.eq(last1), head2.eq(cls1 < 2),
                         gt2.eq(Cat(greater(score1, nbest[0]), greater(score1, nbest[1]))),
                         sel2.eq(Cat(valid1 & ~odd1, valid1 & odd1)),
                         s3.eq(s2), s4.eq(s3),
                         write4.eq(Cat(s3.valid & (s3.cls == c) for c in range(classes)))]
        for parity in (0, 1):
            with m.If(advance & sel2[parity] & (head2 | gt2[parity])):
                m.d.sync += [best[parity].eq(s2.score), nbest[parity].eq(~s2.score),
                             best_cls[parity].eq(s2.cls)]

        # Stages 3-4: once a frame's last class is in, odd beats even if greater, or equal
        # with a lower index. Scores are written here too, so that the next frame's cannot
        # overwrite the output register before this frame's result is in it.
        odd_gt, odd_ge, odd_lt = Signal(), Signal(), Signal()
        cls4 = [Signal(range(classes)), Signal(range(classes))]
        with m.If(advance):
            m.d.sync += [odd_gt.eq(greater(best[1], nbest[0])),
                         odd_ge.eq(greater(best[1], nbest[0], equal=True)),
                         odd_lt.eq(best_cls[1] < best_cls[0]),
                         cls4[0].eq(best_cls[0]), cls4[1].eq(best_cls[1])]
        odd_wins = (odd_gt | (odd_ge & odd_lt)) if classes > 1 else 0
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        for c in range(classes):
            with m.If(advance & write4[c]):
                m.d.sync += self.o.payload.scores[c].eq(s4.score ^ offset)
        with m.If(advance & s4.valid):
            with m.If(s4.last):
                m.d.sync += [self.o.valid.eq(1),
                             self.o.payload.cls.eq(Mux(odd_wins, cls4[1], cls4[0]))]
        return m
