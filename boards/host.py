"""Host client: send images to a board running the bnnhw shell and read its classes back.

Speaks the frame format of :mod:`bnnhw.boards.protocol` over any pyserial port (a USB UART, or a
pseudo-terminal bridged to a simulation), one request at a time, and checks every answer against
the golden model.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from .. import golden
from ..errors import BnnhwError
from . import protocol

__all__ = ["HostError", "Client", "RunSummary", "run_images"]


class HostError(BnnhwError):
    """The board did not answer, or answered something unusable."""


class Client:
    """Classify images one at a time over ``port`` (an open pyserial ``Serial``-like object).

    ``timeout`` is how long to wait for a reply, in seconds; after a failed attempt the client
    waits ``resync`` seconds (longer than the shell's own timeout) so that the shell is between
    frames again, drops what it received, and retries up to ``retries`` times.
    """
    def __init__(self, port, *, n_pixels, in_bits, classes, timeout=2.0, resync=0.1,
                 retries=2):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, not {retries!r}")
        self.port, self.n_pixels, self.in_bits = port, n_pixels, in_bits
        self.timeout, self.resync, self.retries = timeout, resync, retries
        self.parser = protocol.ReplyParser(max_scores=classes)
        self.errors = {}       # protocol.Status name -> count of error replies seen

    def _exchange(self, frame):
        self.port.reset_input_buffer()
        self.port.write(frame)
        self.port.flush()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            data = self.port.read(max(1, self.port.in_waiting))
            for reply in self.parser.feed(data):
                return reply
        return None

    def classify(self, pixels):
        """Send one image; return the board's OK :class:`~bnnhw.boards.protocol.Reply`."""
        pixels = np.asarray(pixels).reshape(-1)
        if pixels.size != self.n_pixels:
            raise HostError(f"an image of {pixels.size} pixels; the board's network takes "
                            f"{self.n_pixels}")
        frame = protocol.encode_request(pixels, in_bits=self.in_bits)
        for attempt in range(self.retries + 1):
            reply = self._exchange(frame)
            if reply is not None and reply.status == protocol.Status.OK:
                return reply
            name = "no reply" if reply is None else reply.status.name
            self.errors[name] = self.errors.get(name, 0) + 1
            time.sleep(self.resync)
            self.parser = protocol.ReplyParser(max_scores=self.parser.max_scores)
        raise HostError(f"no valid reply after {self.retries + 1} attempts (last: {name}); "
                        f"is the board programmed with a bitstream of this network, and is "
                        f"the baud rate the one it was built for?")


@dataclass
class RunSummary:
    """What a run measured: per-image agreement with the golden model, and speed."""
    images: int = 0
    correct: int = 0            # board class == label
    golden_correct: int = 0     # golden class == label
    mismatches: list = field(default_factory=list)   # (index, golden class, board class)
    seconds: float = 0.0
    errors: dict = field(default_factory=dict)


def run_images(client, net, x, y, *, progress=None):
    """Classify every image of ``x`` on the board and compare with golden and labels ``y``."""
    expected = golden.run(net, x)
    summary = RunSummary()
    start = time.perf_counter()
    for index, (pixels, label) in enumerate(zip(x, y)):
        reply = client.classify(pixels)
        summary.images += 1
        summary.correct += int(reply.cls == label)
        summary.golden_correct += int(expected.classes[index] == label)
        scores_differ = reply.scores and list(reply.scores) != expected.scores[index].tolist()
        if reply.cls != expected.classes[index] or scores_differ:
            summary.mismatches.append((index, int(expected.classes[index]), reply.cls))
        if progress is not None:
            progress(index + 1, len(x))
    summary.seconds = time.perf_counter() - start
    summary.errors = dict(client.errors)
    return summary
