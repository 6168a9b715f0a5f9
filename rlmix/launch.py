"""Where a study's runs execute: this process, local worker processes, or Ray tasks.

Every launcher calls :func:`rlmix.study.run_job` for each run, which reads a finished run back
and resumes an interrupted one, so a stopped study continues when it is run again and a Ray task
that is retried continues from its checkpoint.

- ``local`` with ``jobs=1``: one run after the other in this process.
- ``local`` with ``jobs=N``: N worker processes (spawned), ``cpu_count // N`` torch threads each,
  one GPU each when several are present.
- ``ray``: one Ray task per run (``pip install 'rlmix[ray]'``), on a local Ray started for the
  study or on the cluster at ``address``; a task asks for ``threads`` CPUs and, where the cluster
  has GPUs and the run may use one, one GPU. A task whose worker dies (preemption, OOM kill) is
  retried (``RAY_RETRIES`` times) and resumes from its last checkpoint; an rlmix error (a NaN, a
  bad config) is not retried.

SIGINT or SIGTERM stops a study: running runs stop at their next step and keep their last
checkpoint, no new run starts, and :class:`rlmix.signals.Interrupted` says how to continue.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any, TypeVar

from rlmix.errors import ConfigError, RlmixError
from rlmix.signals import Interrupted, StopFlag, interrupted, share_stop, shared_signum
from rlmix.study import Job, Result, run_job

LAUNCHERS = ("local", "ray")
RAY_RETRIES = 3
_POLL_S = 0.5
T = TypeVar("T")


def _on_device(job: Job, device: str | None) -> Job:
    if device is None or job.cfg.trainer.device not in ("auto", "cuda"):
        return job
    trainer = dataclasses.replace(job.cfg.trainer, device=device)
    search = None if job.search is None else _on_device(job.search, device)
    return dataclasses.replace(
        job, cfg=dataclasses.replace(job.cfg, trainer=trainer), search=search
    )


def _devices(jobs: int) -> list[str | None]:
    """One CUDA device per parallel run when several GPUs are present."""
    import torch

    n = torch.cuda.device_count()
    return [f"cuda:{i % n}" for i in range(jobs)] if n > 1 else [None] * jobs


def _stopped(signum: int | None, done: int, total: int) -> Interrupted:
    signum = signum or signal.SIGINT
    err = Interrupted(
        f"study stopped by {signal.Signals(signum).name}: {done} of {total} runs finished; the "
        "others keep their last checkpoint: run the same command again to continue"
    )
    err.exit_code = 130 if signum == signal.SIGINT else 128 + signum
    return err


def _signum(stop: StopFlag, error: Interrupted | None = None) -> int | None:
    """The signal that stopped the study: ours, or the one a run stopped by (its exit code)."""
    if stop.signum is not None:
        return stop.signum
    return None if error is None else error.exit_code - 128


def run_jobs(
    jobs: list[Job],
    *,
    launcher: str = "local",
    n_jobs: int = 1,
    threads: int | None = None,
    address: str | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run every job with ``launcher``; results in the order of ``jobs``.

    Args:
        jobs: the study's runs.
        launcher: ``local`` or ``ray``.
        n_jobs: parallel local processes (``local``).
        threads: torch threads per run (default: ``cpu_count // n_jobs`` locally, 1 on Ray).
        address: the Ray cluster (``ray``; default: a local Ray started for the study).
        on_result: called with each result as it arrives (progress).

    Raises:
        Interrupted: SIGINT/SIGTERM stopped the study (checkpoints kept).
        ConfigError: an unknown launcher, or Ray is not installed.
    """
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher must be one of {', '.join(LAUNCHERS)} (got {launcher!r})")
    report = on_result or (lambda _r: None)
    if launcher == "ray":
        with StopFlag() as stop:
            results = _ray(jobs, threads or 1, address, stop, report)
        order = {(j.label, j.seed): i for i, j in enumerate(jobs)}
        return sorted(results, key=lambda r: order[(r.label, r.seed)])
    if n_jobs > 1:
        threads = threads or max(1, (os.cpu_count() or 1) // n_jobs)
    devices = _devices(n_jobs) if n_jobs > 1 else [None]
    calls = [(_on_device(job, devices[i % n_jobs]), threads) for i, job in enumerate(jobs)]
    return map_stoppable(run_job, calls, n_jobs, report)


def map_stoppable(
    fn: Callable[..., T],
    calls: Sequence[tuple],
    n_jobs: int = 1,
    report: Callable[[T], None] | None = None,
) -> list[T]:
    """``fn(*call)`` for every call, in this process (``n_jobs`` 1) or in ``n_jobs`` spawned
    worker processes; results in the order of ``calls``, ``report`` called as each arrives.

    SIGINT or SIGTERM stops it: runs in progress stop at their next step (``fn`` polls a
    :class:`StopFlag`) and keep their last checkpoint, no other run starts, and
    :class:`Interrupted` says how many finished.
    """
    report = report or (lambda _r: None)
    with StopFlag() as stop:
        if n_jobs == 1:
            done = _in_process(fn, calls, stop, report)
        else:
            done = _in_workers(fn, calls, n_jobs, stop, report)
    return [done[i] for i in range(len(calls))]


def _in_process(fn, calls, stop: StopFlag, report) -> dict[int, Any]:
    done: dict[int, Any] = {}
    for i, call in enumerate(calls):
        if stop.stopped:
            raise _stopped(stop.signum, len(done), len(calls))
        try:
            done[i] = fn(*call)
        except Interrupted as e:
            raise _stopped(_signum(stop, e), len(done), len(calls)) from None
        report(done[i])
    return done


def _worker_init(stop: object) -> None:
    """A worker process hears no signal (its own process group, SIGINT/SIGTERM ignored): the
    study stops it through ``stop``, a shared int its runs poll between steps."""
    os.setpgrp()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    share_stop(stop)


def _start(fn: Callable[..., T], *call: Any) -> T:
    """``fn(*call)``, unless the study stopped before this run began (then it does not)."""
    signum = shared_signum()
    if signum is not None:
        raise interrupted(signum, "not started: the study stopped")
    return fn(*call)


def _in_workers(fn, calls, n_jobs: int, stop: StopFlag, report) -> dict[int, Any]:
    done: dict[int, Any] = {}
    interrupted: Interrupted | None = None
    context = get_context("spawn")
    shared = context.Value("i", 0)  # the signal that stopped the study, 0 while it runs
    pool = ProcessPoolExecutor(
        n_jobs, mp_context=context, initializer=_worker_init, initargs=(shared,)
    )
    with pool:
        index = {pool.submit(_start, fn, *call): i for i, call in enumerate(calls)}
        pending: set[Future] = set(index)
        while pending:
            finished, pending = wait(pending, timeout=_POLL_S, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    done[index[future]] = future.result()
                except Interrupted as e:
                    interrupted = e
                    continue
                report(done[index[future]])
            if stop.stopped and not shared.value:
                # Runs in progress stop at their next step; the ones the pool already handed to
                # a worker find the value set and do not start; the rest are cancelled.
                shared.value = stop.signum
                for future in pending:
                    future.cancel()
            pending = {f for f in pending if not f.cancelled()}
    if stop.stopped or interrupted is not None:
        raise _stopped(_signum(stop, interrupted), len(done), len(calls))
    return done


def _ray_task(job: Job, threads: int) -> Result:
    return run_job(job, threads)


def _ray(jobs, threads: int, address: str | None, stop: StopFlag, report) -> list[Result]:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--launcher ray needs Ray: pip install 'rlmix[ray]' (or pip install ray)"
        ) from None
    started = not ray.is_initialized()
    if started:
        env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)} if address is None else {}
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": env} if env else None,
        )
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        remote = ray.remote(_ray_task)
        refs = {}
        for job in jobs:
            needs_gpu = gpus and job.cfg.trainer.device in ("auto", "cuda")
            options = dict(num_cpus=threads, num_gpus=1 if needs_gpu else 0)
            task = remote.options(max_retries=RAY_RETRIES, retry_exceptions=False, **options)
            refs[task.remote(job, threads)] = job
        results: list[Result] = []
        pending = list(refs)
        while pending:
            if stop.stopped:
                for ref in pending:
                    ray.cancel(ref, force=False)
                raise _stopped(stop.signum, len(results), len(jobs))
            ready, pending = ray.wait(pending, num_returns=1, timeout=_POLL_S)
            for ref in ready:
                try:
                    results.append(ray.get(ref))
                except ray.exceptions.RayTaskError as e:
                    cause = e.cause if isinstance(e.cause, RlmixError) else None
                    if cause is not None:
                        raise cause from None
                    raise RlmixError(
                        f"run {refs[ref].label} seed {refs[ref].seed} failed on Ray: "
                        f"{str(e).strip().splitlines()[-1]}"
                    ) from e
                except ray.exceptions.RayError as e:
                    raise RlmixError(
                        f"run {refs[ref].label} seed {refs[ref].seed} failed on Ray after "
                        f"{RAY_RETRIES} retries: {type(e).__name__}"
                    ) from e
                report(results[-1])
        return results
    finally:
        if started:
            ray.shutdown()


__all__ = ["LAUNCHERS", "RAY_RETRIES", "map_stoppable", "run_jobs"]
