"""Running independent jobs on a local process pool or on a Dask cluster, as they finish.

Both runners take a function of one argument and a list of jobs (plain, picklable values), and
yield ``(index, outcome)`` for each job as it finishes, in the order they finish: ``outcome``
is a :class:`Done` (the function's return value) or a :class:`Failed` (why there is none).
They never raise for a job: a sweep goes on past a job that fails.

A job's function must be pure enough to run twice: a worker that dies (killed, out of
memory, its machine gone) takes its running jobs with it, and both runners run them again
elsewhere, at most ``retries`` more times. The local pool (``concurrent.futures``) loses all
its workers when one dies, so it starts a new pool for the jobs not finished yet; Dask's
scheduler moves a dead worker's tasks to the others by itself, and ``retries`` also covers a
task that raised. The callers in bnnhw cache each finished job on disk under a content key,
so a retry costs only the job that was running.
"""

import concurrent.futures
import multiprocessing
import os
import tempfile
from dataclasses import dataclass

from .errors import BnnhwError

__all__ = ["Done", "Failed", "SchedulerError", "run_local", "run_dask", "connect"]


@dataclass(frozen=True)
class Done:
    value: object


@dataclass(frozen=True)
class Failed:
    error: str          # one line: the exception's type and message


class SchedulerError(BnnhwError):
    """The Dask scheduler cannot be reached, or dask.distributed is not installed."""


def _describe(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _started(function, marks, n, job):
    """Run ``function(job)`` in a pool's process, leaving a mark that job ``n`` started."""
    open(os.path.join(marks, str(n)), "w").close()
    return function(job)


def run_local(function, jobs, *, workers, retries=2):
    """Run ``function(job)`` for every job of ``jobs`` on ``workers`` processes; yield
    ``(index, outcome)`` as each finishes.

    When a worker dies, the pool breaks and every unfinished job with it. The jobs that had
    not started go to a new pool; those that had (the one that killed its worker, and any
    running beside it) are run again one at a time, each in a pool of its own, so that a
    death is surely the job's own: only such deaths count, and a job whose worker died alone
    more than ``retries`` times is :class:`Failed`.
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise BnnhwError(f"workers must be a positive integer, not {workers!r}")
    pending = list(range(len(jobs)))
    deaths = {}
    context = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="bnnhw-jobs-") as marks:
        while pending:
            fresh = [n for n in pending if n not in deaths]
            batch = fresh or pending[:1]           # suspects alone, after the fresh jobs
            finished = set()
            again = []
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(batch)),
                                                        mp_context=context) as pool:
                futures = {pool.submit(_started, function, marks, n, jobs[n]): n
                           for n in batch}
                for future in concurrent.futures.as_completed(futures):
                    n = futures[future]
                    try:
                        value = future.result()
                    except concurrent.futures.process.BrokenProcessPool as error:
                        if os.path.exists(os.path.join(marks, str(n))):   # it was running
                            if len(batch) > 1:
                                # Beside others: a suspect, not yet charged; it runs alone.
                                deaths.setdefault(n, 0)
                                again.append(n)
                                continue
                            deaths[n] = deaths.get(n, 0) + 1
                            if deaths[n] > retries:
                                finished.add(n)
                                yield n, Failed(f"its worker died {deaths[n]} times "
                                                f"({_describe(error)})")
                                continue
                        again.append(n)
                        continue
                    except Exception as error:       # the function raised: a result, not a crash
                        value = Failed(_describe(error))
                    else:
                        value = Done(value)
                    finished.add(n)
                    yield n, value
            for n in again:
                try:
                    os.remove(os.path.join(marks, str(n)))
                except FileNotFoundError:
                    pass
            pending = [n for n in pending if n not in finished]


def connect(address, *, timeout=10):
    """A ``dask.distributed.Client`` of the scheduler at ``address``; raises
    :class:`SchedulerError` in one line if it cannot be reached."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise SchedulerError("--scheduler needs dask.distributed: pip install -e "
                             "\".[explore]\"") from None
    from distributed.comm import resolve_address
    try:
        # A malformed address is refused here: the Client would take it, fail, and then
        # hang in its destructor.
        resolve_address(address)
        return Client(address, timeout=timeout, set_as_default=False)
    except Exception as error:           # OSError, TimeoutError, ValueError (bad address)...
        raise SchedulerError(f"--scheduler {address!r}: cannot connect "
                             f"({_describe(error)})") from None


def run_dask(function, jobs, *, scheduler, retries=2):
    """Run ``function(job)`` for every job of ``jobs`` on the Dask cluster whose scheduler is
    at ``scheduler`` (an address, or a connected ``Client``); yield ``(index, outcome)`` as
    each finishes. Each task may be retried ``retries`` times (``pure=False``: a task is run,
    never taken from another client's results)."""
    from dask.distributed import as_completed
    client = connect(scheduler) if isinstance(scheduler, str) else scheduler
    try:
        futures = {client.submit(function, job, retries=retries, pure=False): n
                   for n, job in enumerate(jobs)}
        for future in as_completed(futures, loop=client.loop):
            n = futures[future]
            try:
                yield n, Done(future.result())
            except Exception as error:           # KilledWorker, the function's own error
                yield n, Failed(_describe(error))
            finally:
                future.release()
    finally:
        if isinstance(scheduler, str):
            client.close()
