"""The folded matrix engine: the datapath of every kind with a binary weight matrix.

The layer kinds (:mod:`bnnhw.kinds`) check their parameters and configure it; its sizing comes
from :func:`bnnhw.gateware.plan.matrix_plan`, the same plan the kinds report as their figures.
"""

import numpy as np
from amaranth import Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .contents import rom_words
from .fifo import CreditFIFO
from .plan import matrix_plan, multibase_plan
from .ports import beat_layout
from .spram import SPRAMBank
from .weights import multibase_words, weight_words, write_signature

__all__ = ["MatrixEngine", "shape_of"]


def shape_of(lo, hi):
    """The narrowest shape holding every integer in ``lo..hi``."""
    return Shape.cast(range(lo, hi + 1))


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
    one memory of ``(MH / pe) * (MW / simd)`` words of ``pe * simd`` bits (hard-wired when
    that is one word), read synchronously; ``memory`` asks Yosys for ``"block"`` RAM (what an
    iCE40 has spare) or ``"distributed"`` LUTs (LUT RAM and LUT ROM: faster on an ECP5, whose
    block RAMs Yosys uses without their output register). With ``vectors`` input vectors per
    frame (the windows of a convolution), ``last`` marks the final beat of every
    ``vectors``-th output vector only.

    Multi-base (ABC-Net, :mod:`bnnhw.kinds.abc`), when ``coefficients`` ``(M, K)`` are given:
    ``weights`` are ``(M, MH, MW)``, input features are K bases wide (bit ``n`` of a feature is
    base ``n``) or unsigned ``in_bits``-bit values (K = 1). Per cycle and neuron, all M * K
    XNOR-popcount (or add/subtract) trees of ``simd`` terms, each times its constant
    coefficient, summed by a second tree (``tree_levels(M * K)`` more register levels):
    ``acc = sum_mn c_mn p_mn``. ``thresholds`` ``(MH, N)`` are the layer's, on
    ``z``; each output field is N bits, bit ``b`` ``acc >= `` the accumulator threshold of
    ``thresholds[:, b]`` (:func:`~.plan.multibase_plan`). Without thresholds the output is the
    accumulator. The weight memory's words hold ``pe * M * simd`` bits
    (:func:`.weights.multibase_words`); cycles per frame are as for one base.
    """

    def __init__(self, *, weights, pe, simd, in_bits=None, thresholds=None, memory="block",
                 vectors=1, coefficients=None):
        self.weights = np.asarray(weights, dtype=np.uint8)
        self.vectors = vectors
        self.pe, self.simd, self.in_bits, self.memory = pe, simd, in_bits, memory
        self.coefficients = None
        if coefficients is not None:
            # Multi-base: M weight matrices, K input bases (or unsigned inputs), N thresholds.
            self.coefficients = np.asarray(coefficients, dtype=np.int64)
            if self.weights.ndim != 3 or self.coefficients.shape[0] != self.weights.shape[0]:
                raise ValueError(f"weights must be (bases, neurons, inputs) with one row of "
                                 f"coefficients per base, not {self.weights.shape} and "
                                 f"{self.coefficients.shape}")
            if (self.coefficients < 1).any():
                raise ValueError(f"coefficients must be positive, not "
                                 f"{int(self.coefficients.min())}")
            if thresholds is not None and np.ndim(thresholds) != 2:
                raise ValueError(f"thresholds of a multi-base engine must be (neurons, N), "
                                 f"not shape {np.shape(thresholds)}")
            self.bases, self.mh, self.mw = self.weights.shape
            zeros = None if in_bits is None else (self.mw - self.weights.sum(axis=2))
            self.plan = plan = multibase_plan(mh=self.mh, mw=self.mw, pe=pe, simd=simd,
                                              coefficients=self.coefficients, in_bits=in_bits,
                                              thresholds=thresholds, weight_zeros=zeros,
                                              memory=memory)
        else:
            self.bases = 1
            self.mh, self.mw = self.weights.shape
            weight_ones = None if in_bits is None else self.weights.sum(axis=1, dtype=np.int64)
            self.plan = plan = matrix_plan(mh=self.mh, mw=self.mw, pe=pe, simd=simd,
                                           in_bits=in_bits, thresholds=thresholds,
                                           weight_ones=weight_ones, memory=memory)
        self.nf, self.sf, self.cycles = plan.nf, plan.sf, plan.cycles
        self.levels, self.depth, self.fifo_depth = plan.levels, plan.depth, plan.fifo_depth
        self.elem_width, self.result_width = plan.elem_width, plan.result_width
        self.acc_bounds = plan.acc_bounds
        self.acc_shape = shape_of(plan.acc_lo, plan.acc_hi)
        self.memories = {m.name: m for m in plan.memories}
        if thresholds is None:
            self.thresholds = None
        elif self.coefficients is not None:
            self.thresholds = np.asarray(plan.acc_thresholds, dtype=np.int64)
        elif in_bits is None:
            self.thresholds = np.asarray(thresholds, dtype=np.int64)
        else:
            # A term is w ? x : ~x = w ? x : -x - 1: a XOR instead of a negation. The -1 per
            # zero weight is moved into that neuron's threshold.
            self.thresholds = np.asarray(thresholds, dtype=np.int64) - (self.mw - weight_ones)
        # Weights in run-time memories (SPRAM) are written through `load`, from the weight
        # image (:mod:`.weights`), one 16-bit column (block) at a time, in plan order.
        self.blocks = sum(memory.spram_blocks for memory in plan.memories if memory.loaded)
        members = {
            "i": In(stream.Signature(beat_layout(simd * self.elem_width))),
            "o": Out(stream.Signature(beat_layout(pe * self.result_width))),
        }
        if self.blocks:
            members["load"] = In(write_signature(self.blocks))
        super().__init__(members)

    # The Yosys attribute that asks for each memory style of a plan ("auto": Yosys chooses).
    _ROM_ATTRS = {"block": {"rom_style": "block"}, "distributed": {"rom_style": "logic"},
                  "auto": None}

    def _rom(self, m, name, words, addr):
        """Return ROM ``words`` (the plan's memory ``name``) at ``addr`` two cycles later; a
        constant if the plan says so (a single word, what Yosys folds into the logic).

        Block RAM: a synchronous read, then a register (its outputs are slow). LUT ROM: a
        register on the address, then a synchronous read. Read straight from the `waddr`
        counter, Yosys put the counter's adder in front of the lookup (on an ECP5, 126 MHz for
        256 words of 64 bits; from a plain register, 190 MHz).
        """
        plan = self.memories[name]
        shape = plan.width
        if plan.style == "constant":
            return Const(words[0], shape)
        if plan.style == "spram":
            # Loaded at run time (`words` are the image's): while loading, the address comes
            # from the loader. Its read data is registered inside, then once more here.
            bank = m.submodules[name] = SPRAMBank(width=shape, depth=plan.depth)
            before = self.plan.memories[:self.plan.memories.index(plan)]
            first = sum(p.spram_blocks for p in before if p.loaded)
            m.d.comb += [bank.addr.eq(Mux(self.load.active, self.load.addr, addr)),
                         bank.wdata.eq(self.load.data),
                         bank.we.eq(self.load.en[first:first + bank.columns])]
            data = Signal(shape, name=f"{name}_data")
            m.d.sync += data.eq(bank.rdata)
            return data
        words = rom_words(name, shape, plan.depth, words)
        mem = m.submodules[name] = Memory(shape=shape, depth=plan.depth, init=words,
                                          attrs=self._ROM_ATTRS[plan.style])
        port = mem.read_port()
        if self.memory != "distributed":            # block RAM (beside SPRAM weights too)
            data = Signal(shape, name=f"{name}_data")
            m.d.comb += port.addr.eq(addr)
            m.d.sync += data.eq(port.data)
            return data
        m.d.sync += port.addr.eq(addr)
        return port.data

    def _buffer(self, m, valid, full, waddr, wdata, raddr):
        """The input buffer (the plan's ``inbuf``), written in order from address 0, wrapping:
        the word ``wdata`` at ``waddr`` when ``valid & ~full``. Return the word at ``raddr`` a
        cycle later. The reader reads only words of a full half."""
        # From 8 words deep a block RAM costs less than flip-flops and a multiplexer. Below,
        # on an iCE40, the words are flip-flops: the one at a one-hot pointer takes `wdata`
        # whenever the buffer is not full, valid or not (a word is read only once its half
        # is full, and the pointer stays until a valid write), so that each word's enable is
        # a two-input LUT from flip-flops (with `valid` in it too, three LUT levels).
        plan = self.memories["inbuf"]
        depth = plan.depth
        if plan.style != "registers":
            # The reader only uses words of a full half, which the writer leaves alone, so a
            # read that meets a write at the same address is never used: `no_rw_check` spares
            # the logic Yosys would add to give it the old word (on an iCE40, an address
            # compare of three LUT levels in front of a flip-flop).
            inbuf = m.submodules.inbuf = Memory(shape=plan.width, depth=depth, init=[],
                                                attrs={"ram_style": plan.style,
                                                       "no_rw_check": 1})
            wport, rport = inbuf.write_port(), inbuf.read_port()
            m.d.comb += [wport.addr.eq(waddr), wport.data.eq(wdata), wport.en.eq(valid & ~full),
                         rport.addr.eq(raddr)]
            return rport.data
        words = [Signal(len(wdata), name=f"inbuf{k}") for k in range(depth)]
        slot = Signal(depth, init=1)
        with m.If(valid & ~full):
            m.d.sync += slot.eq(slot.rotate_left(1))
        for k, word in enumerate(words):
            with m.If(slot[k] & ~full):
                m.d.sync += word.eq(wdata)
        rdata = Signal(len(wdata), name="inbuf_data")
        # A word select (a tree of 2:1 multiplexers, one address bit per level: two LUT
        # levels for four words) rather than an indexed Array (a decoded case per word).
        m.d.sync += rdata.eq(Cat(*words).word_select(raddr, len(wdata)))
        return rdata

    @staticmethod
    def _counter(m, n, enable, name):
        """A counter over ``0..n-1`` that steps when ``enable``; return it, ``last`` (a register,
        set at ``n - 1``) and ``last_next``, the value ``last`` takes on a step. Both come from
        flip-flops: a register ``pen`` says the counter is at ``n - 2``, so no compare with the
        counter is on the way to them."""
        count = Signal(range(n), name=name)
        last = Signal(init=n == 1, name=f"{name}_last")
        pen = Signal(init=n == 2, name=f"{name}_pen")
        last_next = Mux(last, n == 1, pen)
        with m.If(enable):
            m.d.sync += [count.eq(Mux(last, 0, count + 1)), last.eq(last_next),
                         pen.eq(Mux(last, n == 2, count == n - 3 if n > 2 else 0))]
        return count, last, last_next

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

    def _products(self, m, x, w):
        """Multi-base: the weighted sum of the M * K popcount (or add/subtract) trees of one
        neuron, from input word ``x`` (``simd`` values of K bases, or unsigned values) and
        weight word ``w`` (M bases of ``simd`` bits), with bounds. Each tree's sum is times its
        constant coefficient, then a second tree sums them. Yosys makes a constant product
        shifts and adds in LUTs (on an iCE40), or puts it in a MULT18X18D while an ECP5 has
        one left (the (3,3) MNIST CNN took all 156 of an 85F)."""
        simd, k = self.simd, self.coefficients.shape[1]
        products = []
        for base in range(self.bases):
            wb = w[base * simd:(base + 1) * simd]
            for n in range(k):
                if self.in_bits is None:
                    terms = [(~(x[i * k + n] ^ wb[i]), 0, 1) for i in range(simd)]
                else:
                    terms = self._terms(x, wb)
                total, lo, hi = self._tree(m, terms, bounds=True)
                c = int(self.coefficients[base, n])
                products.append((total * c if c != 1 else total, lo * c, hi * c))
        return self._tree(m, products, bounds=True)

    def _tree(self, m, nodes, bounds=False):
        """Sum ``nodes`` in a balanced tree with a register after every level (with
        ``bounds``, return the sum's ``(value, lo, hi)``)."""
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
        return nodes[0] if bounds else nodes[0][0]

    def elaborate(self, platform):
        m = Module()
        pe, simd, nf, sf = self.pe, self.simd, self.nf, self.sf

        # Input buffer, two halves: one is written with the next frame while the other is read
        # once per neuron group. Half h, beat k lives at address {h, k}.
        # Control state. The halves fill and drain in turn, so the buffer is a queue of two
        # frames: `rfull` (at least one full half, the reader's) and `wfull` (both full, so
        # the writer waits) say all there is. Each is a flip-flop whose next value does not go
        # through the high-fanout `issue`, but through `at_last` (the read is at a frame's
        # final beat) and the credit bit, both flip-flops.
        wsel, wfull, rsel, rfull = Signal(), Signal(), Signal(), Signal()
        # The weight address: {group, beat} when `sf` is a power of two, else a counter of
        # its own (on an iCE40 each flip-flop more on the `issue` enable is routing delay).
        waddr = Signal(range(self.cycles)) if sf & (sf - 1) else None
        at_last, first = Signal(init=sf == 1 and nf == 1), Signal(init=1)
        # Credits in thermometer code (bit k set while more than k are left): counting up or
        # down is a shift, with no adder in the issue loop. Spending and returning a credit
        # take effect a cycle late (from registers, to keep the loop short), so a group needs
        # two credits left: one may be spent already.
        credits = Signal(self.fifo_depth, init=(1 << self.fifo_depth) - 1)
        has_credit = credits[1]
        spent, returned = Signal(), Signal()

        write = self.i.valid & ~wfull
        m.d.comb += self.i.ready.eq(~wfull)
        wbeat, wlast, _ = self._counter(m, sf, write, "wbeat")

        # Issue one (group, beat) read per cycle while a full half is there. A group's last beat
        # also needs a credit, i.e. a guaranteed slot in the output FIFO.
        issue = Signal()
        rbeat, end_group, end_group_next = self._counter(m, sf, issue, "rbeat")
        group, end_frame, end_frame_next = self._counter(m, nf, issue & end_group, "group")
        m.d.comb += issue.eq(rfull & (~end_group | has_credit))
        if waddr is None:
            waddr = Cat(rbeat, group) if sf > 1 else group
        with m.If(issue):
            if sf & (sf - 1):
                m.d.sync += waddr.eq(Mux(at_last, 0, waddr + 1))
            m.d.sync += [first.eq(end_group),
                         at_last.eq(end_group_next & Mux(end_group, end_frame_next, end_frame))]
        # A frame is written or read completely (rdone is issue & at_last, without `issue`).
        wdone, rdone = write & wlast, rfull & at_last & has_credit
        # With several vectors per frame (the windows of a convolution), `last` goes on the
        # frame's last vector only: a register says the vector being read is that one.
        if self.vectors > 1:
            vector = Signal(range(self.vectors))
            last_vector = Signal()
            with m.If(rdone):
                m.d.sync += [vector.eq(Mux(last_vector, 0, vector + 1)),
                             last_vector.eq(vector == self.vectors - 2)]
        else:
            last_vector = 1
        m.d.sync += [wsel.eq(wsel ^ wdone), rsel.eq(rsel ^ rdone),
                     rfull.eq(wdone | (rfull & (~rdone | wfull))),
                     wfull.eq(~rdone & (wfull | (rfull & wdone)))]
        taken = self.o.valid & self.o.ready
        m.d.sync += [spent.eq(issue & end_group), returned.eq(taken)]
        with m.If(returned & ~spent):
            m.d.sync += credits.eq(Cat(1, credits[:-1]))
        with m.If(spent & ~returned):
            m.d.sync += credits.eq(Cat(credits[1:], 0))
        buffered = self._buffer(m, self.i.valid, wfull, Cat(wbeat, wsel),
                                self.i.payload.data, Cat(rbeat, rsel))

        # Tags travel with the data: tags[1] memory output, tags[2] registered memory output,
        # tags[2 + levels] the sum, tags[3 + levels] the accumulator, tags[4 + levels] the
        # result (its sign bit, registered), written to the FIFO.
        # `emit` (valid & last) and `final` (the frame's last group) are carried whole, so that
        # the FIFO write and its `last` bit come straight from flip-flops.
        tag_layout = data.StructLayout({"valid": 1, "first": 1, "last": 1, "emit": 1,
                                        "final": 1, "group": range(nf)})
        tags = [Signal(tag_layout, name="tag0")]
        m.d.comb += [tags[0].valid.eq(issue), tags[0].first.eq(first),
                     tags[0].last.eq(end_group), tags[0].emit.eq(issue & end_group),
                     tags[0].final.eq(end_frame & last_vector), tags[0].group.eq(group)]
        for stage in range(1, 5 + self.levels):
            tags.append(Signal(tag_layout, name=f"tag{stage}"))
            m.d.sync += tags[stage].eq(tags[stage - 1])
        x = Signal.like(buffered)
        m.d.sync += x.eq(buffered)

        fifo = m.submodules.fifo = CreditFIFO(width=pe * self.result_width + 1,
                                              depth=self.fifo_depth)
        results = []
        if self.thresholds is not None:
            # All neurons' -thresholds in one memory, a word per group, read two stages early
            # so that they arrive with a group's first sum. Up to two block RAMs wide on an
            # iCE40 (in LUTs the lookup took five LUT levels); wider, Yosys chooses.
            tw = self.plan.threshold_width
            if self.coefficients is None:
                words = [sum((-int(self.thresholds[g * pe + n]) & ((1 << tw) - 1)) << (n * tw)
                             for n in range(pe)) for g in range(nf)]
                negated = self._rom(m, "thresholds", words, tags[self.levels].group)
            else:
                # N thresholds per neuron, compared with the whole accumulator: read so that
                # they arrive with it (field n * N + b of the group's word).
                nb = self.plan.out_bases
                words = [sum((int(self.thresholds[g * pe + n, b]) & ((1 << tw) - 1))
                             << ((n * nb + b) * tw) for n in range(pe) for b in range(nb))
                         for g in range(nf)]
                limits = self._rom(m, "thresholds", words, tags[1 + self.levels].group)
        # All PEs' weights in one memory, PE n's simd bits at [n * simd, (n + 1) * simd) of
        # the word of (group, beat) (:func:`.weights.weight_words`). Yosys would build small
        # ROMs from LUTs; block RAM is what an iCE40 has spare.
        if self.coefficients is None:
            words, ww = weight_words(self.weights, pe, simd), simd
        else:
            words, ww = multibase_words(self.weights, pe, simd), self.bases * simd
        weights = self._rom(m, "weights", words, waddr)
        for n in range(pe):
            w = weights.word_select(n, ww) if pe > 1 else weights
            if self.coefficients is None:
                total = self._tree(m, self._terms(x, w))
            else:
                total = self._products(m, x, w)[0]
            acc = Signal(self.acc_shape, name=f"acc{n}")
            sum_tag = tags[2 + self.levels]
            result = Signal(self.result_width, name=f"result{n}")
            results.append(result)
            if self.thresholds is None:
                start = 0
                m.d.sync += result.eq(acc)
            elif self.coefficients is not None:
                start = 0
                nb = self.plan.out_bases
                m.d.sync += result.eq(Cat(*(
                    acc >= limits.word_select(n * nb + b, tw).as_signed() for b in range(nb))))
            else:
                start = negated.word_select(n, tw).as_signed()
                m.d.sync += result.eq(~acc[-1])
            with m.If(sum_tag.valid):
                m.d.sync += acc.eq((start if sf == 1 else Mux(sum_tag.first, start, acc)) + total)
        acc_tag = tags[4 + self.levels]
        m.d.comb += [
            fifo.w_en.eq(acc_tag.emit),
            fifo.w_data.eq(Cat(*results, acc_tag.final)),
        ]
        wiring.connect(m, fifo.o, wiring.flipped(self.o))
        return m
