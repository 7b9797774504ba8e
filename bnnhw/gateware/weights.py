"""Weight memories: their word order, and the image that fills the ones loaded at run time.

**Word order.** A matrix layer folded by ``(pe, simd)`` keeps all its PEs' weights in one
memory of ``pe * simd``-bit words: word ``g * (MW / simd) + k`` holds, at bits
``n * simd .. (n + 1) * simd - 1``, bits ``k * simd .. (k + 1) * simd - 1`` of the weight row of
neuron ``g * pe + n`` (bit ``i`` of a PE's part is feature ``k * simd + i``, as everywhere in
bnnhw). :func:`weight_words` gives these words; the engine's ROM and the image are made from it.

**The weight image** fills the memories that have no contents in the bitstream (SPRAM on an
iCE40 UltraPlus, :mod:`bnnhw.gateware.plan`). It is a pure function of the network, its
folding and the memory style of each layer (:func:`weight_image`), version 1::

    offset  0   4 bytes   magic "BNNW"
    offset  4   1 byte    image format version, 1
    offset  5   1 byte    number of blocks B
    offset  6   2 bytes   0
    offset  8   4 bytes   body length in bytes, little-endian
    offset 12   8 bytes   the first 8 bytes of SHA-256 of the body: which weights these are
    offset 20   body      the B blocks in order, each its depth of 16-bit words, little-endian
    last        4 bytes   CRC-32/ISO-HDLC (zlib's crc32) of everything before it,
                          little-endian

A block is one 16-bit column of one run-time memory: layers in order, within a layer its
memories in the order the engine instantiates them (:attr:`MatrixPlan.memories`), within a
memory its columns from the lowest bits up; a block's word ``a`` is bits ``16c .. 16c + 15`` of
the memory's word ``a`` (zero beyond its width). The gateware knows its whole header (so an
image of another network, or another folding, is refused even when intact) and checks the CRC;
only then does the network take frames.

**In flash.** `bnnhw build` writes the image next to the bitstream (``weights.bin``) and
`bnnhw program` writes it at :data:`IMAGE_OFFSET` of the board's SPI flash: 1 MiB, well past an
iCE40UP5K bitstream (104 KB at offset 0). The design reads it from there after configuration
(:class:`~bnnhw.gateware.flash.SPIFlashReader`).
"""

import binascii
import enum
import hashlib
import struct
from dataclasses import dataclass

import numpy as np
from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import crc, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..bits import words as pack_words
from .contents import rom_words
from .plan import KEY_DEPTH, SPRAM_DEPTH, SPRAM_WIDTH

__all__ = ["MAGIC", "VERSION", "HEADER_BYTES", "IMAGE_OFFSET", "LoadStatus", "Block",
           "multibase_words", "weight_words", "image_blocks", "image_header", "weight_image",
           "check_image",
           "ImageError", "WeightLoader", "write_signature"]

MAGIC = b"BNNW"
VERSION = 1
HEADER_BYTES = 20
IMAGE_OFFSET = 0x100000
_CRC32 = crc.catalog.CRC32_ISO_HDLC(data_width=8)


class LoadStatus(enum.IntEnum):
    """What a design with run-time weights is doing (its ``status`` port)."""
    LOADING = 0     # reading the image
    READY = 1       # image good: frames are taken
    BAD = 2         # image refused (header or CRC): frames are never taken


class ImageError(ValueError):
    """Bytes that are not the weight image of this network and folding."""


def weight_words(weights, pe, simd):
    """The words of the weight memory of ``weights`` (``(neurons, fan-in)`` 0/1) folded by
    ``pe`` and ``simd`` (see the module docstring)."""
    weights = np.asarray(weights, dtype=np.uint8)
    rows = [pack_words(row, simd) for row in weights]
    return [sum(rows[g * pe + n][k] << (n * simd) for n in range(pe))
            for g in range(weights.shape[0] // pe) for k in range(weights.shape[1] // simd)]


def multibase_words(weights, pe, simd):
    """The words of the weight memory of a multi-base engine: ``weights`` ``(M, neurons,
    fan-in)`` 0/1 folded by ``pe`` and ``simd``; PE ``n``'s ``M * simd`` bits of a word hold
    base ``m``'s ``simd`` bits at ``[m * simd, (m + 1) * simd)``."""
    weights = np.asarray(weights, dtype=np.uint8)
    bases, mh, mw = weights.shape
    # (M, mh, sf, simd) -> (mh, sf, M, simd): each beat's M bases side by side.
    merged = weights.reshape(bases, mh, mw // simd, simd).transpose(1, 2, 0, 3)
    return weight_words(merged.reshape(mh, -1), pe, bases * simd)


@dataclass(frozen=True)
class Block:
    """One 16-bit column of a run-time memory: ``layer``, the memory's ``name``, the
    ``column`` and its ``words``."""
    layer: int
    name: str
    column: int
    words: tuple

    @property
    def depth(self):
        return len(self.words)


def image_blocks(net, folding, memory):
    """The blocks of the image of ``net`` folded by ``folding`` with ``memory`` (one style,
    or one per layer), in image order."""
    from ..folding import check_folding
    from .plan import check_memories
    folding = check_folding(net, folding)
    blocks = []
    for n, (layer, fold, style) in enumerate(zip(net.layers, folding,
                                                  check_memories(memory, len(net.layers)))):
        for plan in layer.figures(fold, style).memories:
            if not plan.loaded:
                continue
            words = layer.memory_words(fold, plan.name)
            for column in range(plan.spram_blocks):
                blocks.append(Block(n, plan.name, column,
                                    tuple((int(w) >> (SPRAM_WIDTH * column)) & 0xFFFF
                                          for w in words)))
    return tuple(blocks)


def _body(blocks):
    return b"".join(np.asarray(block.words, dtype="<u2").tobytes() for block in blocks)


def image_header(blocks):
    """The 20 header bytes of an image of ``blocks``."""
    body = _body(blocks)
    if len(blocks) > 255:
        raise ValueError(f"an image holds at most 255 blocks, not {len(blocks)}")
    return (MAGIC + struct.pack("<BBHI", VERSION, len(blocks), 0, len(body))
            + hashlib.sha256(body).digest()[:8])


def weight_image(net, folding, memory):
    """The image (bytes) of ``net`` folded by ``folding`` with ``memory``; empty if no layer
    has run-time weights."""
    blocks = image_blocks(net, folding, memory)
    if not blocks:
        return b""
    data = image_header(blocks) + _body(blocks)
    return data + struct.pack("<I", binascii.crc32(data))


def check_image(data, net, folding, memory, *, name="image"):
    """Raise :class:`ImageError` unless ``data`` is the image of this network and folding."""
    expected = weight_image(net, folding, memory)
    data = bytes(data)
    if len(data) < HEADER_BYTES + 4 or data[:4] != MAGIC:
        raise ImageError(f"{name}: not a bnnhw weight image (no {MAGIC!r} header)")
    if data[:HEADER_BYTES] != expected[:HEADER_BYTES]:
        raise ImageError(f"{name}: the image of another network or folding")
    if binascii.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0] or data != expected:
        raise ImageError(f"{name}: damaged (CRC-32 mismatch)")


def write_signature(blocks):
    """The write bus from a :class:`WeightLoader` to the memories of ``blocks`` blocks:
    ``addr``, ``data`` (16 bits), ``en`` (one bit per block, one-hot) and ``active`` (high
    while loading: the memories' address comes from the bus)."""
    return wiring.Signature({"addr": Out(range(SPRAM_DEPTH)), "data": Out(SPRAM_WIDTH),
                             "en": Out(max(1, blocks)), "active": Out(1, init=1)})


class WeightLoader(wiring.Component):
    """Image bytes in (``i``), memory writes out (``write``), and the verdict (``status``).

    Checks the header against the one it expects for ``blocks`` (:func:`image_header`), writes
    each block's words in order, checks the CRC-32, and sets ``status`` to ``READY``, or to
    ``BAD`` two cycles after the first header byte that differs or at a bad CRC.
    ``write.active`` falls once the last word is written. A byte is taken at most every four cycles (each decision starts
    at flip-flops; a flash delivers a byte per 16 cycles or more).

    Parameters
    ----------
    blocks : sequence of Block
        The image's blocks (:func:`image_blocks`), at least one.
    patchable : bool
        Keep the expected header in a block RAM (a ROM of :func:`~.contents.rom_words`) rather
        than in the logic: the header names the weights (a digest of the body), and a
        patchable build's logic must not depend on them (:data:`~.plan.PATCHABLE_SPRAM`).
        The ROM is read a cycle ahead, as the constants are otherwise.
    """

    def __init__(self, blocks, *, patchable=False):
        self.blocks = tuple(blocks)
        if not self.blocks:
            raise ValueError("blocks must hold at least one block")
        self.header = image_header(self.blocks)
        self.patchable = bool(patchable)
        super().__init__({"i": In(stream.Signature(8)),
                          "write": Out(write_signature(len(self.blocks))),
                          "status": Out(2, init=LoadStatus.LOADING)})

    def elaborate(self, platform):
        m = Module()
        write = self.write
        depths = [block.depth for block in self.blocks]

        # A byte is registered, then acted on; `cool` keeps `i.ready` low for the cycles the
        # registers below take to settle after it.
        byte, got = Signal(8), Signal()
        cool = Signal(3)
        m.d.comb += self.i.ready.eq(cool == 0)
        m.d.sync += [got.eq(self.i.valid & self.i.ready), cool.eq(cool << 1)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [byte.eq(self.i.payload), cool.eq(0b111)]

        m.submodules.crc = checksum = _CRC32.create()
        m.d.comb += [checksum.data.eq(byte), checksum.valid.eq(got)]

        # Where the image is: header byte `count`, or block (one-hot) word `addr`, low or high
        # byte, or CRC byte `count`. What each place expects is registered between bytes.
        header, body, trailer = Signal(init=1), Signal(), Signal()
        count = Signal(range(HEADER_BYTES))
        block = Signal(len(self.blocks), init=1)
        high = Signal()
        low = Signal(8)
        expected = Signal(8)
        last_header, last_word, last_block, last_crc = Signal(), Signal(), Signal(), Signal()
        if self.patchable:
            words = rom_words("header", 8, KEY_DEPTH, self.header)
            m.submodules.header = rom = Memory(shape=8, depth=KEY_DEPTH, init=words,
                                               attrs={"rom_style": "block"})
            port = rom.read_port()
            m.d.comb += [port.addr.eq(count), expected.eq(port.data)]
        else:
            m.d.sync += expected.eq(Array(self.header)[count])
        m.d.sync += [
            last_header.eq(count == HEADER_BYTES - 1),
            # the address at the current block's last word: one compare per block
            last_word.eq(Cat(*(block[k] & (write.addr == depth - 1)
                               for k, depth in enumerate(depths))).any()),
            last_block.eq(block[-1]),
            last_crc.eq(count == 3),
        ]

        # The CRC register takes the last byte a cycle after it is registered, `crc_ok` says
        # a cycle later whether the residue is right: `checked` waits those two cycles.
        crc_ok = Signal()
        m.d.sync += crc_ok.eq(checksum.match_detected)
        checked = Signal(2)
        m.d.sync += checked.eq(checked << 1)
        m.d.comb += write.data.eq(Cat(low, byte))
        # A header byte is compared a cycle after it is registered, and acted on a cycle
        # after that (from the compare as a flip-flop).
        differs, compared = Signal(), Signal()
        m.d.sync += [differs.eq(byte != expected), compared.eq(got & header)]
        loading = self.status == LoadStatus.LOADING
        with m.If(compared & differs & loading):
            m.d.sync += [self.status.eq(LoadStatus.BAD), write.active.eq(0)]
        with m.If(got & loading):
            with m.If(header):
                m.d.sync += count.eq(count + 1)
                with m.If(last_header):
                    m.d.sync += [header.eq(0), body.eq(1), count.eq(0)]
            with m.If(body):
                m.d.sync += [high.eq(~high), low.eq(byte)]
                with m.If(high):
                    m.d.comb += write.en.eq(block)
                    m.d.sync += write.addr.eq(write.addr + 1)
                    with m.If(last_word):
                        m.d.sync += [write.addr.eq(0), block.eq(block << 1)]
                        with m.If(last_block):
                            m.d.sync += [body.eq(0), trailer.eq(1), write.active.eq(0)]
            with m.If(trailer):
                m.d.sync += count.eq(count + 1)
                with m.If(last_crc):
                    m.d.sync += [trailer.eq(0), checked.eq(1)]
        with m.If(checked[-1]):
            m.d.sync += self.status.eq(Mux(crc_ok, LoadStatus.READY, LoadStatus.BAD))
        return m
