"""``bnnhw explore BOARD NETWORK``: sweep foldings x nextpnr seeds, report the Pareto front.

Writes to its output folder ``explore.json`` (the ``explore`` document of
:mod:`bnnhw.report`: every row, the front, the chosen design), ``explore.csv`` (one row per
build), and ``front.svg`` / ``front.png`` (frames/s against LUTs and block RAMs) when
matplotlib is installed; each file under a temporary name, then renamed. ``--write-folding
FILE`` writes the fastest design of the front as a folding file for ``bnnhw build --folding``.
"""

import csv
import io
import os
import sys
import time
from pathlib import Path

from .. import artifact
from ..errors import BnnhwError
from ..paths import output_dir, output_path
from .explore import OBJECTIVES, as_folding, fastest, pareto_front

__all__ = ["run_explore", "front_table", "write_csv", "write_plot", "COLUMNS"]

COLUMNS = ("folding", "memory", "seed", "cycles_per_frame", "fmax_mhz", "frames_per_second",
           "luts", "block_rams", "sprams", "on_front", "chosen", "built", "seconds", "error",
           "key")


def _positive(name, value, *, zero=False):
    """``value`` (a command-line string or int) as an integer >= 1 (>= 0 with ``zero``)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < (0 if zero else 1):
        kind = "non-negative" if zero else "positive"
        raise BnnhwError(f"{name} must be a {kind} integer, not {value!r}")
    return number


def _cell(row, column, front, chosen, n):
    if column == "folding":
        from ..folding import format_folding
        return format_folding(as_folding(row["folding"]))
    if column == "memory":
        return " ".join(row["memory"])
    if column == "on_front":
        return n in front
    if column == "chosen":
        return n == chosen
    value = row.get(column)
    if isinstance(value, float):
        return round(value) if column == "frames_per_second" else round(value, 2)
    return value


def front_table(rows, front, chosen):
    """The front as a text table, fastest first."""
    from ..cli import _table
    order = sorted(front, key=lambda n: -rows[n]["frames_per_second"])
    lines = [[("* " if n == chosen else "  ") + _cell(rows[n], "folding", front, chosen, n),
              rows[n]["seed"], f"{rows[n]['cycles_per_frame']:,}",
              f"{rows[n]['fmax_mhz']:.1f}", f"{rows[n]['frames_per_second']:,.0f}",
              f"{rows[n]['luts']:,}", rows[n]["block_rams"]]
             for n in order]
    return _table(lines, ["  folding (pe, simd)", "seed", "cycles/frame", "Fmax MHz",
                          "frames/s", "LUTs", "block RAMs"])


def _atomic(path, write):
    """Write ``path`` through ``write(temporary_path)``, then rename it into place."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_csv(path, rows, front, chosen):
    """One line per build, :data:`COLUMNS`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for n, row in enumerate(rows):
        writer.writerow(["" if (v := _cell(row, c, front, chosen, n)) is None else v
                         for c in COLUMNS])
    return _atomic(path, lambda p: p.write_text(buffer.getvalue()))


def write_plot(folder, rows, front, chosen, title):
    """``front.svg`` and ``front.png``: frames/s against LUTs and against block RAMs, every
    build grey, the front in colour, the chosen design starred. Returns the paths, or None
    without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "path"
    matplotlib.rcParams["svg.hashsalt"] = "bnnhw"
    import matplotlib.pyplot as plt
    good = [n for n, row in enumerate(rows) if not row.get("error")]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, label in zip(axes, ("luts", "block_rams"), ("LUTs (logic cells)",
                                                             "block RAMs")):
        ax.scatter([rows[n][key] for n in good], [rows[n]["frames_per_second"] for n in good],
                   color="lightgrey", label="all builds", zorder=2)
        ax.scatter([rows[n][key] for n in front],
                   [rows[n]["frames_per_second"] for n in front],
                   color="tab:blue", label="Pareto front", zorder=3)
        if chosen is not None:
            ax.scatter([rows[chosen][key]], [rows[chosen]["frames_per_second"]], marker="*",
                       s=250, color="tab:orange", label="chosen (fastest)", zorder=4)
        for n in front:
            ax.annotate(_cell(rows[n], "folding", front, chosen, n),
                        (rows[n][key], rows[n]["frames_per_second"]), fontsize=6,
                        xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_yscale("log")
        ax.margins(x=0.2)                   # room for the labels on the right
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("frames/s at the Fmax reached")
    axes[0].legend(loc="lower right", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    paths = []
    for suffix in ("svg", "png"):
        paths.append(_atomic(Path(folder) / f"front.{suffix}",
                             lambda p: figure.savefig(p, format=suffix, dpi=120,
                                                      metadata={"Date": None}
                                                      if suffix == "svg" else None)))
    plt.close(figure)
    return paths


def _say(text):
    print(text, file=sys.stderr, flush=True)


def run_explore(args, *, build=None):
    """Run ``bnnhw explore`` for parsed ``args``; return the exit code (1 if no build
    succeeded). ``build`` replaces the real bitstream build (tests)."""
    from ..folding import format_folding, save_folding
    from ..report import document, write_json
    from .board import get_board
    from .build import board_memory, fitting_designs
    from .explore import default_cache, make_jobs, sweep
    seeds = _positive("--seeds", args.seeds)
    count = _positive("--foldings", args.foldings)
    workers = _positive("--workers", args.workers)
    retries = _positive("--retries", args.retries, zero=True)
    if args.clock is not None and not args.clock > 0:
        raise BnnhwError(f"--clock must be a positive number of MHz, not {args.clock}")
    board = get_board(args.board)
    net = artifact.load(args.network)
    network_bytes = Path(args.network).read_bytes()
    out = output_dir(args.output or Path("build") / "explore" / f"{args.network.stem}-"
                                                              f"{board.name}")
    cache = output_dir(args.cache or default_cache())
    if args.write_folding is not None:
        output_path(args.write_folding, "folding")
    client = None
    if args.scheduler is not None:
        from ..jobs import connect
        client = connect(args.scheduler)          # a bad address fails before any work
    designs = fitting_designs(net, board, count=count)
    _say(f"explore: {len(designs)} foldings that the estimate fits on the {board.title}, "
         f"from the most folded to the fastest, x {seeds} seed(s)")
    jobs = make_jobs(net, network_bytes, board, designs, range(1, seeds + 1), cache=cache,
                     clock_mhz=args.clock)
    started = time.monotonic()
    try:
        rows = sweep(jobs, workers=workers, scheduler=client, retries=retries, build=build,
                     log=_say)
    finally:
        if client is not None:
            client.close()
    seconds = time.monotonic() - started
    front = pareto_front(rows)
    chosen = fastest(rows, front)
    built = sum(1 for row in rows if row.get("built"))
    failed = sum(1 for row in rows if row.get("error"))
    runner = (f"Dask scheduler {args.scheduler}" if args.scheduler is not None
              else f"{workers} local worker(s)")
    doc = document("explore", board=board.name, network=str(args.network),
                   network_digest=artifact.digest(net), seeds=seeds, foldings=len(designs),
                   objectives=OBJECTIVES, runner=runner, builds=built,
                   cached=len(rows) - built - failed, failed=failed, seconds=seconds,
                   rows=rows, front=front,
                   chosen=chosen)
    write_json(out / "explore.json", doc)
    write_csv(out / "explore.csv", rows, front, chosen)
    plots = write_plot(out, rows, front, chosen,
                       f"{args.network.name} on the {board.title}: {len(rows)} builds")
    print(f"{len(rows)} builds ({built} run, {len(rows) - built - failed} from the cache, "
          f"{failed} failed) in {seconds:.0f} s on {runner}")
    if chosen is None:
        print("no build succeeded: no front")
        for row in rows:
            print(f"  {format_folding(as_folding(row['folding']))} seed "
                  f"{row['seed']}: {row['error']}")
        return 1
    print()
    print("Pareto front (frames/s at the Fmax reached, LUTs, block RAMs; * the fastest):")
    print(front_table(rows, front, chosen))
    print()
    print(f"table        {out / 'explore.json'}, {out / 'explore.csv'}")
    print("plot         " + (", ".join(map(str, plots)) if plots else
                             "not written: it needs matplotlib (pip install -e \".[report]\")"))
    best = rows[chosen]
    folding = as_folding(best["folding"])
    if args.write_folding is not None:
        save_folding(args.write_folding, net, folding,
                     cycles_per_frame=best["cycles_per_frame"])
        memory = tuple(best["memory"])
        flag = ("" if tuple(board_memory(net, folding, board)) == memory
                else f" --memory {','.join(memory)}")
        print(f"folding      {args.write_folding}: bnnhw build {board.name} {args.network} "
              f"--folding {args.write_folding}{flag} --clock {best['fmax_mhz']:.0f} "
              f"--seed {best['seed']}")
    return 0
