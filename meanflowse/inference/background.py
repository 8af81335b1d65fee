"""A one-thread job queue with bounded backlog, used by eval.py to overlap disk I/O and metrics
with enhancement on a GPU."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

MAX_PENDING = 4  # unfinished jobs (each holding a file's audio) before submit waits


class Background:
    """Jobs on one worker thread (``enabled``) or inline; ``results()`` in submission order.

    ``submit`` waits while :data:`MAX_PENDING` jobs are unfinished (bounded memory), and an
    exception a job raised (a bug: per-file errors are handled inside the job) is raised in
    the caller at the next ``submit`` or at ``results``, so a broken run stops early.
    """

    def __init__(self, *, enabled: bool) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-io") if enabled else None
        self.jobs: list[Future] = []  # every job, for results()
        self.pending: list[Future] = []  # jobs not yet seen finished (at most MAX_PENDING + 1)

    def submit(self, fn: Callable[..., Any], *args: Any, then: Callable[..., None] | None = None) -> None:
        if self.pool is None:
            job: Future = Future()
            job.set_result(fn(*args))
        else:
            unfinished = [j for j in self.pending if not j.done()]
            if len(unfinished) >= MAX_PENDING:
                unfinished[0].result()
            job = self.pool.submit(fn, *args)
        self.jobs.append(job)
        if then is not None:
            job.add_done_callback(lambda j: then(j, *args[:1]))
        still = []
        for j in [*self.pending, job]:
            if not j.done():
                still.append(j)
            elif j.exception() is not None:
                raise j.exception()
        self.pending = still

    def results(self) -> list[Any]:
        return [j.result() for j in self.jobs]

    def __enter__(self) -> "Background":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=exc[0] is not None)
