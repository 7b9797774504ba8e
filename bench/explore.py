"""`bnnhw explore` on the digits network for the iCEBreaker: wall time on 1 and 2 local workers,
the same sweep on a Dask LocalCluster of 2 worker processes (one of which is killed in the
middle of its first build), the fronts compared, and a rerun that must build nothing.

Run: ``python bench/explore.py [--foldings 3] [--seeds 2] [--network examples/digits.npz]``
(real bitstreams: about 15 minutes on 2 cores; each sweep has a fresh cache of its own under
``build/bench-explore``).
"""

import argparse
import functools
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from bnnhw import artifact
from bnnhw.boards.board import get_board
from bnnhw.boards.build import fitting_designs
from bnnhw.boards.explore import build_design, fastest, make_jobs, pareto_front, sweep
from bnnhw.boards.explore_command import front_table

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench-explore"


def killing_build(board, net, folding, memory, build_dir, job, *, marker, after):
    """The real build; the first call anywhere (``marker`` not there yet) kills its own
    process ``after`` seconds into it, as a worker lost mid-build."""
    if not Path(marker).exists():
        Path(marker).write_text(f"{os.getpid()}\n")
        threading.Timer(after, os.kill, (os.getpid(), signal.SIGKILL)).start()
    return build_design(board, net, folding, memory, build_dir, job)


def comparable(rows):
    return [{k: v for k, v in row.items() if k not in ("worker", "seconds", "built")}
            for row in rows]


def run(name, jobs_for, **options):
    cache = OUT / name
    shutil.rmtree(cache, ignore_errors=True)
    jobs = jobs_for(cache)
    started = time.monotonic()
    rows = sweep(jobs, log=lambda line: print(f"  [{name}] {line}", file=sys.stderr,
                                              flush=True), **options)
    seconds = time.monotonic() - started
    built = sum(r["built"] for r in rows)
    failed = sum(bool(r["error"]) for r in rows)
    print(f"{name}: {len(rows)} builds ({built} run, {failed} failed) in {seconds:.0f} s",
          flush=True)
    return rows, seconds, jobs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", type=Path, default=ROOT / "examples" / "digits.npz")
    parser.add_argument("--foldings", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--kill-after", type=float, default=15.0,
                        help="seconds into its first build the Dask worker is killed")
    args = parser.parse_args(argv)
    from distributed import LocalCluster

    board = get_board("icebreaker")
    net = artifact.load(args.network)
    designs = fitting_designs(net, board, count=args.foldings)
    data = args.network.read_bytes()
    jobs_for = lambda cache: make_jobs(net, data, board, designs, range(1, args.seeds + 1),
                                       cache=cache)
    print(f"{args.network.name} on the {board.title}: {len(designs)} foldings x {args.seeds} "
          f"seeds", flush=True)

    one, t1, _ = run("pool-1", jobs_for, workers=1)
    two, t2, _ = run("pool-2", jobs_for, workers=2)
    marker = OUT / "killed"
    marker.unlink(missing_ok=True)
    build = functools.partial(killing_build, marker=str(marker), after=args.kill_after)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        dask, t3, dask_jobs = run("dask-2", jobs_for, scheduler=cluster.scheduler_address,
                                  build=build)
    again = sweep(dask_jobs, workers=2)
    rebuilt = sum(r["built"] for r in again)

    for name, rows in (("1 worker", one), ("2 workers", two), ("Dask LocalCluster", dask)):
        front = pareto_front(rows)
        print(f"\nfront, {name}:")
        print(front_table(rows, front, fastest(rows, front)))
    same = lambda a, b: comparable(a) == comparable(b)
    print()
    print(f"wall time      1 worker {t1:.0f} s, 2 workers {t2:.0f} s "
          f"(x{t1 / t2:.2f}), Dask LocalCluster of 2 {t3:.0f} s")
    print(f"fronts equal   pool-1 == pool-2: {pareto_front(one) == pareto_front(two)}, "
          f"pool-2 == Dask: {pareto_front(two) == pareto_front(dask)}; every row equal: "
          f"{same(one, two)} / {same(two, dask)}")
    print(f"killed worker  {'yes' if marker.exists() else 'NO'} "
          f"({args.kill_after:g} s into its first build); Dask rows with an error: "
          f"{sum(bool(r['error']) for r in dask)} of {len(dask)}")
    print(f"rerun          {rebuilt} rebuilds of {len(again)}")


if __name__ == "__main__":
    main()
