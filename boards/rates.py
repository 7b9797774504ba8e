"""How many frames per second a board can answer: the link's bound and the gateware's.

The host sends one request at a time and waits for its reply (:mod:`bnnhw.boards.host`), so a
frame costs its request and its reply on the line: ``n_pixels + 5`` and ``2 * classes + 6``
bytes (``6`` without scores, :mod:`bnnhw.boards.protocol`), 10 bits each on an 8N1 UART. That is
the link's bound. The gateware's is the clock over the network's cycles per frame (its
initiation interval). The lower of the two bounds a run; a run well below both is bound by the
host's round trips instead (a USB serial bridge delivers what it received after its latency
timer, 1 to 16 ms).

USB bridges, and the fastest rate each makes: the iCEBreaker's FT2232H 12 Mbaud (a divisor of
5 at 60 MHz), the ULX3S's FT231X 3 Mbaud.
"""

from dataclasses import dataclass

__all__ = ["Bounds", "frame_bytes", "bounds", "BRIDGE_MAX_BAUD"]

# The fastest baud rate of each board's USB serial bridge (datasheets: FT2232H 12 Mbaud,
# FT231X 3 Mbaud).
BRIDGE_MAX_BAUD = {"icebreaker": 12_000_000, "ulx3s": 3_000_000}


def frame_bytes(n_pixels, classes, *, scores=True):
    """Bytes of one request and of its reply: ``(request, reply)``."""
    return n_pixels + 5, 2 * classes * bool(scores) + 6


@dataclass(frozen=True)
class Bounds:
    """Frames per second the link and the gateware allow, and what they are made of."""
    baud: int
    request_bytes: int
    reply_bytes: int
    clock_hz: object        # None when unknown
    cycles: object          # the network's cycles per frame, None when unknown

    @property
    def link_fps(self):
        return self.baud / (10 * (self.request_bytes + self.reply_bytes))

    @property
    def gateware_fps(self):
        if self.clock_hz is None or self.cycles is None:
            return None
        return self.clock_hz / self.cycles

    @property
    def bound(self):
        """``"link"`` or ``"gateware"``: the lower bound."""
        gateware = self.gateware_fps
        return "gateware" if gateware is not None and gateware < self.link_fps else "link"

    def lines(self):
        """The bounds as lines of a report."""
        lines = [f"link bound     {self.link_fps:,.0f} frames/s at {self.baud:,} baud "
                 f"({self.request_bytes} request + {self.reply_bytes} reply bytes, one "
                 f"request at a time)"]
        if self.gateware_fps is not None:
            lines.append(f"gateware bound {self.gateware_fps:,.0f} frames/s at "
                         f"{self.clock_hz / 1e6:g} MHz ({self.cycles:,} cycles/frame)")
        return lines

    def verdict(self, measured_fps):
        """What bounds a run that reached ``measured_fps``."""
        limit = self.link_fps if self.bound == "link" else self.gateware_fps
        share = measured_fps / limit
        if share < 0.5:
            return (f"the host's round trips ({100 * share:.0f}% of the {self.bound} bound, "
                    f"{limit:,.0f} frames/s): USB latency, not the board")
        return f"the {self.bound} ({100 * share:.0f}% of its bound, {limit:,.0f} frames/s)"


def bounds(n_pixels, classes, *, baud, scores=True, clock_hz=None, cycles=None):
    """The :class:`Bounds` of a network of ``n_pixels`` inputs and ``classes`` classes."""
    request, reply = frame_bytes(n_pixels, classes, scores=scores)
    return Bounds(baud=baud, request_bytes=request, reply_bytes=reply, clock_hz=clock_hz,
                  cycles=cycles)
