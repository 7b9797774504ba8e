"""The serial frame format between a host and a board running a bnnhw shell.

Pure Python + numpy: the host client, the tests and the gateware (:mod:`bnnhw.boards.shell`)
all follow this docstring. Multi-byte integers are little-endian, except the checksum (see
below).

Request, host -> board (``n_pixels + 5`` bytes)::

    byte 0              REQUEST_START = 0xA5
    bytes 1, 2          length: number of pixel bytes, 16-bit little-endian; must equal the
                        network's n_pixels exactly (a network takes frames of one size)
    bytes 3 .. 3+n-1    pixels, one byte each, in the network's input order; each must be
                        below 2**in_bits (in_bits is the network's pixel width, 1..8)
    bytes 3+n, 4+n      CRC-16 of bytes 1 .. 2+n (length and pixels), high byte first

Reply, board -> host (``2 * n_scores + 6`` bytes)::

    byte 0              REPLY_START = 0x5A
    byte 1              status, a :class:`Status` (0 = OK)
    byte 2              class, 0..255 (0 unless status is OK)
    byte 3              n_scores: number of class scores that follow (0 for errors, and for a
                        shell built without scores)
    bytes 4 .. 3+2k     scores, each a signed 16-bit two's complement integer, little-endian,
                        class 0 first (the network's score_width <= 16 bits, sign-extended)
    last two bytes      CRC-16 of bytes 1 .. 3+2k (status to last score), high byte first

Checksum: CRC-16/IBM-3740 (also called CRC-16/CCITT-FALSE): polynomial 0x1021, initial value
0xFFFF, no reflection, no final XOR; ``crc16(b"123456789") == 0x29B1``. Sent high byte first,
it gives the receiver a zero residue: the CRC of everything after the start byte, checksum
included, is 0 for a good frame, so the gateware checks one 16-bit register against zero.
Why this one: a frame is up to 65,535 pixel bytes (784 for MNIST); any 8-bit CRC repeats after at
most 255 bits, so beyond that it misses some two-bit errors and lets 1 in 256 random corruptions
through. CRC-16 0x1021 detects every one-, two- and three-bit error (Hamming distance 4) in
frames up to 4,093 bytes (32,751 bits), every odd number of bit errors, every burst up to 16
bits, and all but 1 in 65,536 random corruptions.
Fletcher-style sums are as cheap but blind to a byte changing between 0x00 and 0xFF (mod 255),
the two most common pixel values. In hardware, one byte per clock, it is 16 flip-flops and a
XOR network of a few tens of LUTs.

Status codes, in the order the board checks them: ``TIMEOUT`` (the line went idle for the
shell's timeout inside a frame: a truncated frame), ``BAD_LENGTH`` (answered as soon as the
length field is read, without reading on), ``BAD_CHECKSUM`` (the CRC residue is not 0),
``BAD_PIXEL`` (the CRC is good but a pixel is 2**in_bits or more), then the network's own state
for a good frame: ``LOADING`` (its weights are still being loaded from the board's flash; ask
again in a moment) or ``BAD_IMAGE`` (the weight image in flash was refused: wrong header or
CRC; program the image that `bnnhw build` wrote). Only an ``OK`` frame reaches the network.

Synchronisation rule: the board starts a frame on a 0xA5 seen while it is between frames;
inside a frame every byte is data, so 0xA5 may appear in the length, pixels and checksum
without escaping. After an error the board is between frames and takes the next 0xA5 as a
start, even if it lies inside the rest of a broken frame: such a false frame fails the length
check (it must equal n_pixels exactly) or the CRC and is answered with an error too. Bytes
between frames that are not 0xA5 are dropped without a reply. An idle line for longer than the
board's timeout always leaves it between frames. So the host sends one request at a time and
waits for its reply (the board does not read the line while it hands a frame to the network);
after an error reply or no reply, it waits for longer than the timeout, discards what it has
received and sends again. The host's :class:`ReplyParser` resynchronises the same way in the
other direction, but it can look back: on a bad CRC it drops only the false start byte.
"""

import binascii
import dataclasses
import enum

import numpy as np

from ..errors import BnnhwError

__all__ = [
    "REQUEST_START", "REPLY_START", "MAX_PIXELS", "SCORE_BITS", "Status", "Reply",
    "ProtocolError", "crc16", "encode_request", "decode_request", "encode_reply",
    "decode_reply", "ReplyParser",
]

REQUEST_START = 0xA5
REPLY_START = 0x5A
MAX_PIXELS = 0xFFFF     # the length field is 16 bits
SCORE_BITS = 16         # width of a score in a reply


class Status(enum.IntEnum):
    """Status byte of a reply."""
    OK = 0
    BAD_CHECKSUM = 1    # the frame's CRC-16 residue is not 0
    BAD_LENGTH = 2      # the length field is not the network's n_pixels
    BAD_PIXEL = 3       # a pixel is 2**in_bits or more (the CRC was good)
    TIMEOUT = 4         # the line went idle inside a frame (truncated frame)
    LOADING = 5         # the network's weights are still being loaded from flash
    BAD_IMAGE = 6       # the weight image in flash was refused (header or CRC)


_STATUSES = frozenset(Status)


class ProtocolError(BnnhwError):
    """Bytes that are not a well-formed frame."""


@dataclasses.dataclass(frozen=True)
class Reply:
    """One decoded reply: ``status``, ``cls`` (0 unless OK) and ``scores`` (maybe empty)."""
    status: Status
    cls: int = 0
    scores: tuple = ()


def crc16(data, crc=0xFFFF):
    """Return the CRC-16/IBM-3740 of ``data`` (bytes), continuing from ``crc``."""
    # crc_hqx is this CRC (polynomial 0x1021, MSB first, no final XOR) from any start value.
    return binascii.crc_hqx(bytes(data), crc)


def _with_crc(start, body):
    crc = crc16(body)
    return bytes([start]) + bytes(body) + bytes([crc >> 8, crc & 0xFF])


def encode_request(pixels, *, in_bits=8):
    """Return the request frame carrying ``pixels`` (1-D, integers in ``0 .. 2**in_bits - 1``)."""
    if not isinstance(in_bits, int) or not 1 <= in_bits <= 8:
        raise ValueError(f"in_bits must be an integer in 1..8, not {in_bits!r}")
    pixels = np.asarray(pixels)
    if pixels.ndim != 1 or not 1 <= pixels.size <= MAX_PIXELS:
        raise ValueError(f"pixels must be 1-D with 1..{MAX_PIXELS} entries, "
                         f"not of shape {pixels.shape}")
    if pixels.dtype.kind not in "iub":
        raise ValueError(f"pixels must be integers, not of dtype {pixels.dtype}")
    if ((pixels < 0) | (pixels >= 1 << in_bits)).any():
        raise ValueError(f"pixels must be in 0..{(1 << in_bits) - 1} for in_bits={in_bits}")
    n = pixels.size
    return _with_crc(REQUEST_START, bytes([n & 0xFF, n >> 8]) + pixels.astype(np.uint8).tobytes())


def decode_request(frame, *, n_pixels, in_bits):
    """Return ``(status, pixels)`` for one complete request ``frame``, as a board would judge it.

    ``pixels`` is a uint8 array when ``status`` is OK, else None. A frame shorter than its
    length field says is ``TIMEOUT`` (the board would wait for the rest, then time out).
    """
    frame = bytes(frame)
    if not frame or frame[0] != REQUEST_START:
        raise ProtocolError(f"a request starts with 0x{REQUEST_START:02X}, not {frame[:1]!r}")
    if len(frame) < 3:
        return Status.TIMEOUT, None
    if frame[1] | frame[2] << 8 != n_pixels:
        return Status.BAD_LENGTH, None
    if len(frame) < n_pixels + 5:
        return Status.TIMEOUT, None
    frame = frame[:n_pixels + 5]
    if crc16(frame[1:]) != 0:
        return Status.BAD_CHECKSUM, None
    pixels = np.frombuffer(frame[3:3 + n_pixels], np.uint8)
    if (pixels >= 1 << in_bits).any():
        return Status.BAD_PIXEL, None
    return Status.OK, pixels.copy()


def encode_reply(status, cls=0, scores=()):
    """Return the reply frame for ``status``, ``cls`` and ``scores`` (int16 each)."""
    status = Status(status)
    scores = [int(s) for s in scores]
    if status != Status.OK and (cls or scores):
        raise ValueError(f"an error reply ({status.name}) carries no class or scores")
    if not 0 <= cls <= 255:
        raise ValueError(f"cls must be in 0..255, not {cls!r}")
    if len(scores) > 255:
        raise ValueError(f"a reply carries at most 255 scores, not {len(scores)}")
    lo, hi = -(1 << SCORE_BITS - 1), (1 << SCORE_BITS - 1) - 1
    if any(not lo <= s <= hi for s in scores):
        raise ValueError(f"scores must be in {lo}..{hi}, not {scores!r}")
    body = bytes([status, cls, len(scores)])
    body += b"".join(s.to_bytes(2, "little", signed=True) for s in scores)
    return _with_crc(REPLY_START, body)


def decode_reply(frame):
    """Return the :class:`Reply` in ``frame``, exactly one complete reply; raise ProtocolError."""
    frame = bytes(frame)
    if len(frame) < 6 or frame[0] != REPLY_START:
        raise ProtocolError(f"a reply is at least 6 bytes starting with 0x{REPLY_START:02X}, "
                            f"not {frame[:8].hex()}")
    if len(frame) != 2 * frame[3] + 6:
        raise ProtocolError(f"a reply with {frame[3]} scores is {2 * frame[3] + 6} bytes, "
                            f"not {len(frame)}")
    if crc16(frame[1:]) != 0:
        raise ProtocolError(f"reply checksum mismatch in {frame.hex()}")
    try:
        status = Status(frame[1])
    except ValueError:
        raise ProtocolError(f"unknown reply status {frame[1]}") from None
    scores = tuple(int.from_bytes(frame[4 + 2 * k:6 + 2 * k], "little", signed=True)
                   for k in range(frame[3]))
    if status != Status.OK and (frame[2] or scores):
        raise ProtocolError(f"error reply {status.name} carries a class or scores")
    return Reply(status, frame[2], scores)


class ReplyParser:
    """Split a byte stream from the board into :class:`Reply` objects, resynchronising.

    Feed it whatever the serial port returns; :meth:`feed` returns the replies completed so far.
    Bytes before a start byte, and false starts whose reply does not check out, are dropped and
    counted in :attr:`discarded`. ``max_scores`` (the network's class count, if known) rejects
    longer replies early instead of waiting for their bytes.
    """

    def __init__(self, *, max_scores=255):
        if not isinstance(max_scores, int) or not 0 <= max_scores <= 255:
            raise ValueError(f"max_scores must be an integer in 0..255, not {max_scores!r}")
        self.max_scores = max_scores
        self.discarded = 0
        self._buffer = bytearray()

    @property
    def pending(self):
        """Bytes received but not yet part of a reply."""
        return bytes(self._buffer)

    def feed(self, data):
        """Add ``data`` (bytes) and return the list of replies it completes."""
        self._buffer += data
        replies = []
        while self._buffer:
            start = self._buffer.find(REPLY_START)
            if start < 0:
                start = len(self._buffer)
            self.discarded += start
            del self._buffer[:start]
            if len(self._buffer) < 4:
                break
            status, cls, count = self._buffer[1:4]
            size = 2 * count + 6
            plausible = (status in _STATUSES and count <= self.max_scores
                         and (status == Status.OK or cls == count == 0))
            if plausible and len(self._buffer) < size:
                break
            try:
                if not plausible:
                    raise ProtocolError("not a reply header")
                replies.append(decode_reply(self._buffer[:size]))
            except ProtocolError:
                self.discarded += 1     # a false start: look again from the next byte
                del self._buffer[:1]
            else:
                del self._buffer[:size]
        return replies
