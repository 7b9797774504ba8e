"""Progress of long work on stderr: a line that updates in place on a terminal, a few lines
otherwise (so that logs of CI runs stay short)."""

import sys
import time

__all__ = ["Progress", "Status"]


class Progress:
    """Call with ``(done, total)``; shows ``label  done / total  (P%, elapsed, about R left)``.

    On a terminal the line is redrawn at most ``every`` seconds and finished with a newline
    when ``done == total``; elsewhere a line is printed at each tenth of the work.
    """

    def __init__(self, label, *, unit="", stream=None, every=0.5):
        self.label, self.unit = label, unit
        self.stream = sys.stderr if stream is None else stream
        self.every = every
        self.started = time.monotonic()
        self.shown = -1.0
        self.tenth = -1
        self.terminal = getattr(self.stream, "isatty", lambda: False)()

    def text(self, done, total):
        elapsed = time.monotonic() - self.started
        share = done / total if total else 1.0
        left = f", about {elapsed * (1 - share) / share:.0f} s left" if 0 < share < 1 else ""
        unit = f" {self.unit}" if self.unit else ""
        return (f"{self.label}  {done:,} / {total:,}{unit}  ({100 * share:.0f}%, "
                f"{elapsed:.0f} s{left})")

    def __call__(self, done, total):
        now = time.monotonic()
        finished = done >= total
        if self.terminal:
            if finished or now - self.shown >= self.every:
                self.shown = now
                end = "\n" if finished else ""
                print(f"\r{self.text(done, total)}\033[K", end=end, file=self.stream,
                      flush=True)
            return
        tenth = int(10 * done / total) if total else 10
        if tenth > self.tenth:
            self.tenth = tenth
            print(self.text(done, total), file=self.stream, flush=True)


class Status:
    """Call with a short text (``35 s  nextpnr: placing``): redrawn in place on a terminal,
    printed at most every ``every`` seconds elsewhere; :meth:`done` ends the line."""

    def __init__(self, label, *, stream=None, every=30.0):
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.every = every
        self.shown = None
        self.terminal = getattr(self.stream, "isatty", lambda: False)()

    def __call__(self, text):
        if self.terminal:
            print(f"\r{self.label}  {text}\033[K", end="", file=self.stream, flush=True)
            self.shown = True
            return
        now = time.monotonic()
        if self.shown is None or now - self.shown >= self.every:
            self.shown = now
            print(f"{self.label}  {text}", file=self.stream, flush=True)

    def done(self):
        if self.terminal and self.shown:
            print(file=self.stream, flush=True)
        self.shown = None
