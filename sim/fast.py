"""The fast path: a Verilator C++ main (``harness.cpp``) streams all frames, Python does none of
the per-cycle work.

Python packs the input beats into a file, the harness drives ``bnn_top`` cycle by cycle with
its own random stalls and writes what it saw (:class:`~bnnhw.sim.frames.Trace`), and Python
compares the results with the golden model exactly as the cocotb bench's results are compared.
"""

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from . import verilator
from .frames import Trace
from .verilator import SimulatorError

__all__ = ["HARNESS", "build_harness", "run_harness"]

HARNESS = Path(__file__).with_name("harness.cpp")


def _trace_args(waves):
    if waves is None:
        return []
    return ["--trace-fst"] if str(waves).endswith(".fst") else ["--trace"]


def build_harness(verilog, *, flash=False, waves=None, cache_dir=None, jobs=2, log=None):
    """Build (or find in the cache) the harness around ``verilog``; return ``(exe, rebuilt)``.

    ``flash``: the top loads its weights from an SPI flash (the harness then has a flash
    model). ``waves`` is the waveform file to be written later (``.fst`` selects FST, anything
    else VCD), or ``None`` for a model without tracing. Vendor primitives are simulated with
    Yosys's models (:func:`~bnnhw.sim.verilator.vendor_models`).
    """
    source = HARNESS.read_text()
    models = verilator.vendor_models(verilog)
    args = [*verilator.LINT_ARGS, *_trace_args(waves), "--x-assign", "fast", "--x-initial", "fast"]
    if flash:
        args += ["-CFLAGS", "-DBNNHW_FLASH"]
    options = {"args": args, "opt": "O2/O0/O1"}

    def build(directory, log_path):
        (directory / "bnn_top.v").write_text(verilog + "".join(models))
        (directory / "harness.cpp").write_text(source)
        command = ["verilator", "--cc", "--exe", "--build", "-j", str(jobs),
                   "--top-module", "bnn_top", "--prefix", "Vtop", "-Mdir", str(directory / "obj"),
                   "-o", str(directory / "harness"), *args,
                   "-MAKEFLAGS", "OPT_FAST=-O2", "-MAKEFLAGS", "OPT_SLOW=-O0", "-MAKEFLAGS",
                   "OPT_GLOBAL=-O1",
                   str(directory / "harness.cpp"), str(directory / "bnn_top.v")]
        with verilator.runtime_objects("harness", options, directory / "obj",
                                       cache_dir=cache_dir):
            verilator.run_logged(command, cwd=directory, env=verilator.toolchain_env(),
                                 log_path=log_path,
                                 what="Verilator build of the fast-path harness")
        shutil.rmtree(directory / "obj")   # the executable is all the cache keeps

    directory, rebuilt = verilator.cached_build("harness", [verilog, source, *models], options,
                                                build, cache_dir=cache_dir, log=log)
    return directory / "harness", rebuilt


def run_harness(executable, beats, ports, *, timing, stall=0.0, seed=1, idle=100_000,
                waves=None, image=None, offset=0, progress=None):
    """Stream ``beats`` (from :func:`~bnnhw.sim.frames.encode_frames`) through the harness.

    Returns ``(trace, seconds)``: the :class:`~bnnhw.sim.frames.Trace` and the wall time of
    the simulation itself. ``timing`` frames (at most the number of frames) run first without
    stalls; ``stall`` is the probability of an input gap and of output backpressure per cycle.
    ``image`` (bytes) is what the flash model holds at ``offset``, for a harness built with
    ``flash``. ``progress(done, total)`` is called as results come (about a hundred times).
    """
    frames = len(beats)
    timing = min(timing, frames)
    with tempfile.TemporaryDirectory(prefix="bnnhw-fast-") as tmp:
        tmp = Path(tmp)
        np.ascontiguousarray(beats, dtype="<u4").tofile(tmp / "in.bin")
        command = [str(executable), str(tmp / "in.bin"), str(tmp / "out.bin"), str(frames),
                   str(ports.beats), str(ports.in_words), str(ports.out_words), str(timing),
                   str(round(stall * 1_000_000)), str(seed), str(idle)]
        if waves is not None:
            command.append(str(Path(waves).resolve()))
        if image is not None:
            (tmp / "flash.bin").write_bytes(bytes(image))
            command += ["--flash", str(tmp / "flash.bin"), str(offset)]
        start = time.perf_counter()
        messages = []
        # stdout goes to a file so that a chatty harness cannot block on a full pipe while
        # stderr (its progress lines) is being read; both are closed when the block ends.
        with open(tmp / "stdout.txt", "w+") as stdout, \
                subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE,
                                 text=True) as process:
            for line in process.stderr:        # progress lines as the harness writes them
                words = line.split()
                if len(words) == 3 and words[0] == "progress":
                    if progress is not None:
                        progress(int(words[1]), int(words[2]))
                else:
                    messages.append(line)
            process.wait()
            stdout.seek(0)
            output = stdout.read()
        seconds = time.perf_counter() - start
        if process.returncode != 0:
            raise SimulatorError(f"fast-path harness failed (exit {process.returncode}): "
                                 f"{(''.join(messages) or output).strip()}")
        raw = (tmp / "out.bin").read_bytes()
    total = timing + frames
    header = np.frombuffer(raw, "<u8", 6)
    cycles_at = np.frombuffer(raw, "<u8", 3 * total, offset=48).reshape(3, total).astype(np.int64)
    payloads = np.frombuffer(raw, "<u4", total * ports.out_words, offset=48 + 24 * total)
    trace = Trace(timing=timing, first=cycles_at[0], last=cycles_at[1], done=cycles_at[2],
                  payloads=payloads.reshape(total, ports.out_words), cycles=int(header[2]),
                  completed=bool(header[3]), results=int(header[1]), status=int(header[4]),
                  load_cycles=int(header[5]))
    return trace, seconds
