"""Simulate a network top's Verilog on real frames and judge it against the golden model.

:func:`simulate` builds a Verilog file with Verilator (cached by content), streams the frames
through one of two engines and compares every result with the expected classes and scores
using ``==``; it simulates the file a user takes away, not a fresh elaboration.
:func:`simulate_top` converts a ``NetworkTop``-like component first (for tests and benches).
Engines:

``cocotb``
    The cocotb bench of :mod:`bnnhw.sim.test_network_verilator`: Python drives every cycle.
``fast``
    The C++ harness of :mod:`bnnhw.sim.fast`: no Python in the per-cycle loop, for whole test
    sets.

Both hand back the same :class:`~bnnhw.sim.frames.Trace`, judged by the same code, so a fault
shows up as the same mismatching frames in both. :func:`run_command` is ``bnnhw sim``.
"""

import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..gateware.ports import Ports
from . import frames as _frames
from .frames import decode_results, encode_frames, mismatches
from .verilator import SimulatorError, check_waves

__all__ = ["ENGINES", "Report", "simulate", "simulate_top", "model_figures", "report_rows",
           "run_command"]

ENGINES = ("cocotb", "fast")


@dataclass(frozen=True)
class Report:
    """Outcome of :func:`simulate`.

    ``classes``/``scores`` are the hardware's results for every frame (phase B);
    ``mismatches`` lists the frames of phase B that differ from the expected ones and
    ``timing_mismatches`` those of the unstalled timing phase A. ``model_interval`` and
    ``model_latency`` come from the top's analytic model (``None`` if it has none).
    ``notes`` holds the mismatches the cocotb bench's own scoreboard logged, in the order
    seen (timing phase first).
    """
    engine: str
    frames: int
    stall: float
    classes: np.ndarray
    scores: np.ndarray
    mismatches: list
    timing_mismatches: list
    timing: _frames.Timing
    cycles: int
    completed: bool
    sim_seconds: float
    build_seconds: float
    rebuilt: bool
    model_interval: object = None
    model_latency: object = None
    notes: list = field(default_factory=list)
    load_status: object = None     # a top that loads its weights: its LoadStatus at the end
    load_cycles: int = 0           # ... and the cycles the load took

    @property
    def ok(self):
        """Every frame came back and matched the golden model."""
        return self.completed and not self.mismatches and not self.timing_mismatches


def simulate_top(top, x, expected_classes, expected_scores, **options):
    """:func:`simulate` the Verilog of ``top`` (a ``NetworkTop`` or the reference top), written
    to a temporary file."""
    from ..gateware.top import verilog_text
    with tempfile.TemporaryDirectory(prefix="bnnhw-top-") as folder:
        path = Path(folder) / "bnn_top.v"
        path.write_text(verilog_text(top))
        if Ports.of(top).image:
            options.setdefault("image", top.image())
            options.setdefault("offset", top.image_offset)
        return simulate(path, Ports.of(top), x, expected_classes, expected_scores,
                        model=model_figures(top), **options)


def model_figures(top):
    """``(cycles per frame, latency)`` of ``top``'s analytic model, ``None`` where it has none."""
    model = getattr(top, "performance", None)
    if model is not None:
        return model.initiation_interval, model.latency
    return getattr(top, "cycles_per_frame", None), getattr(top, "latency", None)


def simulate(verilog, ports, x, expected_classes, expected_scores, *, model=(None, None),
             engine="cocotb", stall=0.0, seed=1, timing=32, waves=None, cache_dir=None,
             idle=100_000, log=None, image=None, offset=0, progress=None):
    """Simulate the Verilog file ``verilog`` (top module ``bnn_top`` with the ports ``ports``,
    a :class:`~bnnhw.gateware.ports.Ports`) on frames ``x``; return a Report.

    ``expected_classes`` (``(F,)``) and ``expected_scores`` (``(F, classes)``) are what every
    frame must produce, normally ``golden.run(net, x)``; ``model`` is the analytic
    ``(cycles per frame, latency)`` to report beside the measured ones. ``stall`` in
    ``0 <= stall < 1`` is the probability of an input gap and of output backpressure per
    cycle; the first ``timing`` frames also run once with no stalls, to measure cycles per
    frame and latency. ``waves`` names a waveform file (``.fst`` or ``.vcd``). A top that
    loads its weights from an SPI flash (``ports.image``) runs on the fast engine, with a
    flash model holding ``image`` (bytes) at ``offset``; the run includes the load. Raises
    :class:`SimulatorError` if Verilator is missing, a build fails or the file is unreadable.
    ``progress(done, total)`` is told of the results as they come (both phases counted).
    """
    if engine not in ENGINES:
        raise SimulatorError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if ports.image and engine != "fast":
        raise SimulatorError("a top that loads its weights from flash runs on the fast engine "
                             "(its flash model is in the C++ harness), not on cocotb")
    if ports.image and image is None:
        raise SimulatorError("a top that loads its weights from flash needs the image")
    if not 0 <= stall < 1:
        raise SimulatorError(f"stall must be a probability with 0 <= P < 1, not {stall!r}")
    if waves is not None:
        check_waves(waves)
    try:
        text = Path(verilog).read_text()
    except OSError as error:
        raise SimulatorError(f"{verilog}: cannot read the Verilog ({error.strerror})") from None
    x = np.asarray(x)
    if len(x) == 0:
        raise SimulatorError("no frames to simulate")
    beats = encode_frames(x, ports)
    start = time.perf_counter()
    if engine == "fast":
        from . import fast
        executable, rebuilt = fast.build_harness(text, flash=ports.image, waves=waves,
                                                 cache_dir=cache_dir, log=log)
        build_seconds = time.perf_counter() - start
        trace, sim_seconds = fast.run_harness(executable, beats, ports, timing=timing,
                                              stall=stall, seed=seed, idle=idle, waves=waves,
                                              image=image if ports.image else None,
                                              offset=offset, progress=progress)
        notes = []
    else:
        from . import test_network_verilator as bench
        directory, rebuilt = bench.build_cocotb(text, waves=waves, cache_dir=cache_dir, log=log)
        build_seconds = time.perf_counter() - start
        start = time.perf_counter()
        trace, _, log_text = bench.run_cocotb(directory, beats, ports, expected_classes,
                                              expected_scores, timing=timing, stall=stall,
                                              seed=seed, idle=idle, waves=waves,
                                              progress=progress)
        sim_seconds = time.perf_counter() - start
        notes = re.findall(r"mismatch: (frame \d+: [^\n]*)", log_text)
    if waves is not None:
        from .waves import write_save_file
        write_save_file(waves, verilog)
    classes, scores = decode_results(trace.payloads, ports)
    a = trace.timing
    got = trace.results
    m = min(a, got)
    timing_bad = mismatches(classes[:m], scores[:m], expected_classes[:m], expected_scores[:m])
    n = max(0, got - a)
    bad = mismatches(classes[a:a + n], scores[a:a + n], expected_classes[:n],
                     expected_scores[:n])
    model_interval, model_latency = model
    return Report(engine=engine, frames=len(x), stall=stall, classes=classes[a:],
                  scores=scores[a:], mismatches=bad, timing_mismatches=timing_bad,
                  timing=_frames.timing(trace) if trace.completed else None,
                  cycles=trace.cycles, completed=trace.completed, sim_seconds=sim_seconds,
                  build_seconds=build_seconds, rebuilt=rebuilt, model_interval=model_interval,
                  model_latency=model_latency, notes=notes,
                  load_status=trace.status if ports.image else None,
                  load_cycles=trace.load_cycles)


def _accuracy(classes, labels):
    correct = int((np.asarray(classes) == np.asarray(labels)).sum())
    return f"{100 * correct / len(labels):.2f}% ({correct}/{len(labels)})"


def report_rows(report, labels=None, golden_classes=None):
    """``(name, value)`` rows summarising ``report`` for a table."""
    t = report.timing
    rows = [("engine", report.engine)]
    if report.load_status is not None:
        from ..gateware.weights import LoadStatus
        rows.append(("weight image", f"{LoadStatus(report.load_status).name.lower()} after "
                                     f"{report.load_cycles:,} cycles (read from the flash "
                                     f"model)"))
    rows += [("frames", f"{report.frames}" + ("" if report.completed else " (did not finish)")),
            ("stalls", f"{100 * report.stall:.0f}% both sides"),
            ("mismatches", f"{len(report.mismatches)}"
             + (f" (+{len(report.timing_mismatches)} in the timing run)"
                if report.timing_mismatches else ""))]
    if labels is not None and report.completed:
        rows.append(("hardware accuracy", _accuracy(report.classes, labels)))
        if golden_classes is not None:
            rows.append(("golden accuracy", _accuracy(golden_classes, labels)))
    if t is not None:
        model = report.model_interval
        rows.append(("cycles/frame, no stalls", f"{t.interval:g} measured, "
                     + (f"{model} model" if model is not None else "no model")
                     + ("" if t.steady else " (not steady)")))
        rows.append(("cycles/frame, all frames", f"{t.stalled_interval:.1f}"
                     + (" (with the stalls)" if report.stall else "")))
        rows.append(("latency (cycles)", f"{t.latency} measured"
                     + (f", {report.model_latency} model" if report.model_latency is not None
                        else "")))
    seconds = max(report.sim_seconds, 1e-9)
    rate = report.frames / seconds
    rate = f"{rate:,.0f}" if rate >= 10 else f"{rate:.3g}"     # a slow design: 0.36 frames/s
    rows.append(("simulation", f"{seconds:.2f} s, {rate} frames/s, "
                 f"{report.cycles / seconds:,.0f} cycles/s"))
    rows.append(("build", f"{report.build_seconds:.1f} s" + ("" if report.rebuilt
                                                            else " (cached)")))
    return rows


def run_command(args):
    """``bnnhw sim``: write a network's Verilog, simulate that file on a dataset, print a
    table; 1 on any mismatch."""
    from .. import artifact, datasets, golden
    from ..folding import folding_from_args, memory_from_options
    from ..progress import Progress
    from ..gateware.top import generate_verilog
    from ..paths import output_dir, output_path

    if not 0 <= args.stall < 1:
        raise SimulatorError(f"--stall must be a probability with 0 <= P < 1, not {args.stall}")
    if args.waves is not None:
        check_waves(args.waves)
        output_path(args.waves, "waveform")
    if args.verilog is not None:
        output_path(args.verilog, "Verilog")
    if args.build_dir is not None:
        output_dir(args.build_dir)
    net = artifact.load(args.network)
    x, y, data = datasets.frames_for(net, args.dataset, split=args.split, count=args.count,
                                     network=str(args.network))
    if args.board is not None:
        from ..boards.board import get_board
        from ..boards.commands import board_options
        folding, memory = board_options(net, get_board(args.board), args)
    else:
        folding = folding_from_args(net, args)
        memory = memory_from_options(net, args.memory)
    expected = golden.run(net, x)
    engine = args.engine
    if engine == "auto":
        engine = "fast" if len(x) > 2000 else "cocotb"
    quiet = getattr(args, "json", False)
    log = (lambda message: print(f"bnnhw sim: {message}", flush=True,
                                 file=sys.stderr if quiet else sys.stdout))
    with tempfile.TemporaryDirectory(prefix="bnnhw-sim-") as folder:
        path = args.verilog if args.verilog is not None else Path(folder) / "bnn_top.v"
        top = generate_verilog(net, folding, path, in_simd=args.in_simd, memory=memory)
        model = top.performance
        if top.ports.image:
            engine = "fast"                     # the flash model is the C++ harness's
        log(f"{len(x)} frames of {data.name} ({args.split}) through {args.network} "
            f"({path}), {engine} engine, {100 * args.stall:.0f}% stalls")
        report = simulate(path, top.ports, x, expected.classes, expected.scores,
                          model=(model.initiation_interval, model.latency), engine=engine,
                          image=top.image() if top.ports.image else None,
                          offset=top.image_offset,
                          stall=args.stall, seed=args.seed, waves=args.waves,
                          cache_dir=args.build_dir, log=log,
                          progress=Progress("bnnhw sim: frames"))
    if quiet:
        from ..report import dumps, sim_json
        print(dumps(sim_json(report, network=args.network,
                             verilog=args.verilog if args.verilog is not None else None,
                             dataset=data.name, split=args.split, labels=y,
                             golden_classes=expected.classes, performance=model)))
        return 0 if report.ok else 1
    print()
    rows = report_rows(report, labels=y, golden_classes=expected.classes)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for mismatch in (report.timing_mismatches + report.mismatches)[:10]:
        print(f"mismatch: {mismatch}")
    if args.waves is not None:
        print(f"waveforms: {args.waves} (GTKWave: {Path(args.waves).with_suffix('.gtkw')})")
    if not report.completed:
        print("error: the design stopped producing results before the last frame")
    return 0 if report.ok else 1
