"""The folded matrix engine: the datapath the first, dense and output layer engines share.

Not used directly: :class:`~bnnhw.layer.LayerEngine`, :class:`~bnnhw.first.FirstEngine` and
:class:`~bnnhw.output.OutputEngine` check their parameters and configure it.
"""

import math

import numpy as np
from amaranth import Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import golden
from .glue import beat_layout

__all__ = ["MatrixEngine", "shape_of", "tree_levels"]


def shape_of(lo, hi):
    """The narrowest shape holding every integer in ``lo..hi``."""
    return Shape.cast(range(lo, hi + 1))


def tree_levels(n):
    """Adder levels (each one register stage) that sum ``n`` terms: ``ceil(log2(n))``."""
    return (n - 1).bit_length()


class MatrixEngine(wiring.Component):
    """``MH`` neurons with binary weights over a folded input vector of ``MW`` features.

    Input: ``MW / simd`` beats per frame of ``simd`` features (``in_bits``-bit unsigned
    integers, or bits when ``in_bits`` is ``None``); ``last`` is not needed, frames are counted.
    Output: ``MH / pe`` beats per frame; field ``i`` of beat ``g`` is neuron ``g * pe + i``:
    one bit ``acc >= threshold`` when ``thresholds`` are given, otherwise the unsigned
    XNOR-popcount ``acc`` itself (binary inputs only). ``acc`` is the popcount of
    ``XNOR(x, w)`` for bits, ``sum(x if w else -x)`` for integers.

    Throughput: one frame per ``(MH / pe) * (MW / simd)`` cycles; the next frame's input is
    taken while the current one is computed (double-buffered). Latency: the whole input vector,
    then ``depth`` cycles from a group's last weight read to its output beat. Weights sit in
    one memory per PE of ``(MH / pe) * (MW / simd)`` words of ``simd`` bits (hard-wired when
    that is one word), read synchronously so that Yosys can use block RAM.
    """

    def __init__(self, *, weights, pe, simd, in_bits=None, thresholds=None):
        self.weights = np.asarray(weights, dtype=np.uint8)
        self.pe, self.simd, self.in_bits = pe, simd, in_bits
        self.mh, self.mw = self.weights.shape
        self.nf, self.sf = self.mh // pe, self.mw // simd
        self.cycles = self.nf * self.sf
        self.levels = tree_levels(simd)
        # Issue -> memory read -> adder levels -> accumulator -> output FIFO write.
        self.depth = self.levels + 2
        if in_bits is None:
            self.elem_width, term = 1, (0, 1)
            self.thresholds = None if thresholds is None else np.asarray(thresholds)
        else:
            # A term is w ? x : ~x = w ? x : -x - 1: a XOR instead of a negation. The -1 per
            # zero weight is moved into that neuron's threshold.
            self.elem_width, term = in_bits, (-(1 << in_bits), (1 << in_bits) - 1)
            zeros = self.mw - self.weights.sum(axis=1, dtype=np.int64)
            self.thresholds = np.asarray(thresholds, dtype=np.int64) - zeros
        self.acc_bounds = (term[0] * self.mw, term[1] * self.mw)
        self.acc_shape = shape_of(*self.acc_bounds)
        if self.thresholds is None:
            self.result_width = self.acc_shape.width
        else:
            self.result_width = 1
            self.threshold_shape = shape_of(min(0, int(self.thresholds.min())),
                                            max(0, int(self.thresholds.max())))
        # Credits: enough output slots to cover a group's round trip through the pipeline and
        # the FIFO when groups finish every `sf` cycles, so an unstalled engine never waits.
        self.fifo_depth = max(2, math.ceil((self.depth + 2) / self.sf) + 1)
        super().__init__({
            "i": In(stream.Signature(beat_layout(simd * self.elem_width))),
            "o": Out(stream.Signature(beat_layout(pe * self.result_width))),
        })

    def _rom(self, m, name, words, shape, addr):
        """Return a synchronously read ROM of ``words`` addressed by ``addr``; a constant if
        it has a single word (what Yosys folds into the logic)."""
        if len(words) == 1:
            return Const(words[0], shape)
        mem = m.submodules[name] = Memory(shape=shape, depth=len(words), init=words)
        port = mem.read_port()
        m.d.comb += port.addr.eq(addr)
        return port.data

    def _terms(self, x, w):
        """Terms for one neuron from input word ``x`` and weight word ``w``, with bounds."""
        if self.in_bits is None:
            return [(~(x[k] ^ w[k]), 0, 1) for k in range(self.simd)]
        b = self.in_bits
        terms = []
        for k in range(self.simd):
            flip = ~w[k]
            term = Cat(x[k * b:(k + 1) * b] ^ flip.replicate(b), flip).as_signed()
            terms.append((term, -(1 << b), (1 << b) - 1))
        return terms

    def _tree(self, m, nodes):
        """Sum ``nodes`` in a balanced tree with a register after every level."""
        while len(nodes) > 1:
            level = []
            for k in range(0, len(nodes) - 1, 2):
                (a, alo, ahi), (b, blo, bhi) = nodes[k], nodes[k + 1]
                s = Signal(shape_of(alo + blo, ahi + bhi), name="sum")
                m.d.sync += s.eq(a + b)
                level.append((s, alo + blo, ahi + bhi))
            if len(nodes) % 2:
                a, lo, hi = nodes[-1]
                s = Signal(shape_of(lo, hi), name="sum")
                m.d.sync += s.eq(a)
                level.append((s, lo, hi))
            nodes = level
        return nodes[0][0]

    def elaborate(self, platform):
        m = Module()
        pe, simd, nf, sf = self.pe, self.simd, self.nf, self.sf

        # Input buffer, two halves: one is written with the next frame while the other is read
        # once per neuron group. Half h, beat k lives at address {h, k}.
        inbuf = m.submodules.inbuf = Memory(shape=simd * self.elem_width,
                                            depth=2 << (sf - 1).bit_length(), init=[])
        wport, rport = inbuf.write_port(), inbuf.read_port()
        full = [Signal(name="full0"), Signal(name="full1")]
        wsel, wbeat = Signal(), Signal(range(sf))
        rsel, rbeat, group, waddr = Signal(), Signal(range(sf)), Signal(range(nf)), \
            Signal(range(self.cycles))
        m.d.comb += [
            self.i.ready.eq(~Mux(wsel, full[1], full[0])),
            wport.addr.eq(Cat(wbeat, wsel)),
            wport.data.eq(self.i.payload.data),
            wport.en.eq(self.i.valid & self.i.ready),
        ]
        wdone = Signal()
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += wbeat.eq(wbeat + 1)
            with m.If(wbeat == sf - 1):
                m.d.comb += wdone.eq(1)
                m.d.sync += [wbeat.eq(0), wsel.eq(~wsel)]

        # Issue one (group, beat) read per cycle while a full half is there. A group's last beat
        # also needs a credit, i.e. a guaranteed slot in the output FIFO.
        fifo = m.submodules.fifo = SyncFIFO(width=pe * self.result_width + 1,
                                            depth=self.fifo_depth)
        credits = Signal(range(self.fifo_depth + 1), init=self.fifo_depth)
        end_group = rbeat == sf - 1
        end_frame = end_group & (group == nf - 1)
        issue = Signal()
        m.d.comb += issue.eq(Mux(rsel, full[1], full[0]) & (~end_group | (credits != 0)))
        rdone = Signal()
        with m.If(issue):
            m.d.sync += [rbeat.eq(rbeat + 1), waddr.eq(waddr + 1)]
            with m.If(end_group):
                m.d.sync += [rbeat.eq(0), group.eq(group + 1)]
            with m.If(end_frame):
                m.d.comb += rdone.eq(1)
                m.d.sync += [group.eq(0), waddr.eq(0), rsel.eq(~rsel)]
        for h in (0, 1):
            with m.If(wdone & (wsel == h)):
                m.d.sync += full[h].eq(1)
            with m.If(rdone & (rsel == h)):
                m.d.sync += full[h].eq(0)
        taken = self.o.valid & self.o.ready
        m.d.sync += credits.eq(credits - (issue & end_group) + taken)
        m.d.comb += rport.addr.eq(Cat(rbeat, rsel))

        # Tags travel with the data: memory read, adder levels (sum), accumulator (acc).
        tag_layout = data.StructLayout({"valid": 1, "first": 1, "last": 1, "group": range(nf)})
        tag = Signal(tag_layout)
        m.d.comb += [tag.valid.eq(issue), tag.first.eq(rbeat == 0), tag.last.eq(end_group),
                     tag.group.eq(group)]
        for stage in range(1 + self.levels):
            delayed = Signal(tag_layout, name=f"tag{stage + 1}")
            m.d.sync += delayed.eq(tag)
            tag = delayed
        acc_tag = Signal(tag_layout)
        m.d.sync += acc_tag.eq(tag)

        results = []
        for n in range(pe):
            words = [word for g in range(nf)
                     for word in golden.words(self.weights[g * pe + n], simd)]
            w = self._rom(m, f"weights{n}", words, simd, waddr)
            total = self._tree(m, self._terms(rport.data, w))
            acc = Signal(self.acc_shape, name=f"acc{n}")
            with m.If(tag.valid):
                m.d.sync += acc.eq(total if sf == 1 else Mux(tag.first, 0, acc) + total)
            if self.thresholds is None:
                results.append(acc)
            else:
                # Read in step with the sum, so the threshold arrives with the finished acc.
                t = [int(self.thresholds[g * pe + n]) for g in range(nf)]
                threshold = self._rom(m, f"thresholds{n}", t, self.threshold_shape, tag.group)
                results.append(acc >= threshold)
        m.d.comb += [
            fifo.w_en.eq(acc_tag.valid & acc_tag.last),
            fifo.w_data.eq(Cat(*results, acc_tag.group == nf - 1)),
            self.o.valid.eq(fifo.r_rdy),
            self.o.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.o.ready),
        ]
        return m
