"""Tensors between layers: their shape, their values' width and encoding, and their stream order.

This module is the one place that states how a tensor is laid out, in the golden model, in the
network file and on a gateware stream.

A tensor has ``channels x height x width`` values (C, H, W). A value is ``bits`` bits wide and
is either

``unsigned``
    an unsigned integer ``0 .. 2**bits - 1`` (a network's input pixels), or
``bipolar``
    ``bits`` binary bases, each a bit where 1 encodes +1 and 0 encodes -1; base ``n`` is bit
    ``n`` of the value. One base (``bits = 1``) is an ordinary binary activation; ``bits = N``
    carries the N activation bases of a multi-base (ABC-Net) layer.

Stream order: row by row, pixel by pixel, channels within a pixel (height-width-channels, as
FINN streams feature maps). Value ``(c, h, w)`` has index ``(h * W + w) * C + c``; this is the
order of the last axis of every array the golden model passes between layers (``(frames,
H * W * C)``) and of the values on a stream. A stream beat carries ``count`` consecutive values,
value ``k * count + j`` of a frame in bits ``[j * bits, (j + 1) * bits)`` of beat ``k``; a frame
is ``H * W * C / count`` beats.

A dense layer takes a tensor of any shape as a vector in that order and produces a ``(N, 1,
1)`` tensor. An image of one channel is the same vector in any order, so networks on grayscale
images (MNIST, the 8x8 digits) see their pixels row by row, as the image files store them; an
image file that stores its channels as separate planes (CIFAR-10) is reordered when it is read
(:func:`to_stream_order`).
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["ENCODINGS", "Tensor", "to_stream_order", "from_stream_order"]

ENCODINGS = ("unsigned", "bipolar")


@dataclass(frozen=True)
class Tensor:
    """The shape and value format of a tensor between layers (see the module docstring)."""
    channels: int
    height: int
    width: int
    bits: int = 1
    encoding: str = "bipolar"

    @classmethod
    def vector(cls, size, bits=1, encoding="bipolar"):
        """A ``(size, 1, 1)`` tensor: what a dense layer produces."""
        return cls(size, 1, 1, bits, encoding)

    @property
    def shape(self):
        """``(channels, height, width)``."""
        return (self.channels, self.height, self.width)

    @property
    def size(self):
        """Values per frame."""
        return self.channels * self.height * self.width

    @property
    def frame_bits(self):
        """Bits per frame."""
        return self.size * self.bits

    @property
    def limit(self):
        """One more than the largest value: ``2 ** bits``."""
        return 1 << self.bits

    def describe(self):
        """Short text: ``28x28 8-bit``, ``13x13x16 binary``, ``256 2-base`` (height x width,
        then channels when there are several; a vector is its length)."""
        what = ("binary" if self.bits == 1 else f"{self.bits}-base") \
            if self.encoding == "bipolar" else f"{self.bits}-bit"
        if self.height == self.width == 1:
            return f"{self.channels} {what}"
        channels = f"x{self.channels}" if self.channels > 1 else ""
        return f"{self.height}x{self.width}{channels} {what}"

    def as_json(self):
        return {"shape": list(self.shape), "bits": self.bits, "encoding": self.encoding}


def to_stream_order(images, shape):
    """Reorder images stored as channel planes, ``(frames, C * H * W)`` in C-H-W order, into
    the stream order ``(frames, H * W * C)``."""
    c, h, w = shape
    images = np.asarray(images)
    return images.reshape(len(images), c, h, w).transpose(0, 2, 3, 1).reshape(len(images), -1)


def from_stream_order(values, shape):
    """Inverse of :func:`to_stream_order`: ``(frames, H * W * C)`` to ``(frames, C, H, W)``."""
    c, h, w = shape
    values = np.asarray(values)
    return values.reshape(len(values), h, w, c).transpose(0, 3, 1, 2)
