"""Finding the serial port of a plugged-in board by its USB identity (``bnnhw run`` without
``--port``)."""

import re

from .board import BoardError

__all__ = ["find_port", "describe_port"]


def _interface(port):
    """The USB interface number of a pyserial port, from its ``location`` (``1-1.2:1.1``) or
    its name (``/dev/ttyUSB1`` says nothing; an FTDI's ports come in interface order)."""
    location = getattr(port, "location", None) or ""
    match = re.search(r":\d+\.(\d+)$", location)
    return int(match.group(1)) if match else None


def describe_port(port):
    """``/dev/ttyUSB1 (0403:6010 interface 1, iCEBreaker ...)`` style text for a message."""
    if getattr(port, "vid", None) is None:
        return f"{port.device} (not USB)"
    interface = _interface(port)
    where = f" interface {interface}" if interface is not None else ""
    what = f", {port.product}" if getattr(port, "product", None) else ""
    return f"{port.device} ({port.vid:04x}:{port.pid:04x}{where}{what})"


def find_port(boards, ports=None):
    """The device of the one serial port that belongs to one of ``boards`` (their ``usb``
    identities), from ``ports`` (default: pyserial's list). Raises :class:`BoardError` naming
    the ports seen when none or several match."""
    if ports is None:
        from serial.tools import list_ports
        ports = list_ports.comports()
    ports = sorted(ports, key=lambda p: p.device)
    matches = []
    for port in ports:
        for board in boards:
            if not board.usb or getattr(port, "vid", None) is None:
                continue
            vid, pid, interface = board.usb
            if (port.vid, port.pid) != (vid, pid):
                continue
            found = _interface(port)
            if found is None:
                # No location: the FTDI's ports are numbered in interface order.
                same = [p.device for p in ports if (getattr(p, "vid", None), getattr(p, "pid",
                                                                              None)) == (vid, pid)]
                found = same.index(port.device)
            if found == interface:
                matches.append((port, board))
    seen = ", ".join(describe_port(p) for p in ports) or "none"
    wanted = " or ".join(f"{b.title} ({b.usb[0]:04x}:{b.usb[1]:04x} interface {b.usb[2]})"
                         for b in boards if b.usb)
    if not matches:
        raise BoardError(f"no serial port of a {wanted} found (ports seen: {seen}); plug the "
                         f"board in or give --port")
    if len(matches) > 1:
        raise BoardError(f"several boards' serial ports found: "
                         f"{', '.join(describe_port(p) for p, _ in matches)}; give --port")
    return matches[0][0].device
