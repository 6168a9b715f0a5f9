"""torch.distributed plumbing for runs launched by ``torchrun``.

A process started by ``torchrun`` finds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables in its environment; :func:`setup` then joins the process group (NCCL when
CUDA is present, gloo on CPU). A plain ``python -m ...`` process is rank 0 of a world of 1 and
every helper here is a no-op for it, so single-process code paths stay untouched.

Collective tensors live on :attr:`Dist.device` (the rank's GPU under NCCL, the CPU under gloo).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from rlmix.errors import ConfigError, RlmixError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the run.

    Attributes:
        rank: global rank in [0, world_size).
        world_size: number of processes W.
        local_rank: rank on this machine (selects the GPU).
        device: where collective tensors live.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_CURRENT = Dist()
_JOINED = False  # whether this process ever joined a process group (setup)


def current() -> Dist:
    """The process's :class:`Dist` (rank 0 of 1 until :func:`setup` joins a group)."""
    return _CURRENT


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def torchrun_rank() -> tuple[int, int] | None:
    """``(rank, world_size)`` of a torchrun worker of a world of several, else None."""
    if not launched_by_torchrun():
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except ValueError:
        return None
    return (rank, world) if world > 1 else None


def joined() -> bool:
    """Whether this process has joined a process group (errors before that are every rank's)."""
    return _JOINED


def setup(backend: str | None = None) -> Dist:
    """Join the process group described by torchrun's environment variables, once.

    Without them (a plain ``python -m``), return the single-process :class:`Dist`. The backend
    defaults to NCCL when CUDA is available and gloo otherwise; ``RLMIX_DIST_BACKEND`` overrides.
    """
    global _CURRENT
    if _CURRENT.enabled or not launched_by_torchrun():
        return _CURRENT
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise ConfigError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {e}") from e
    if world == 1:
        return _CURRENT
    backend = (
        backend
        or os.environ.get("RLMIX_DIST_BACKEND")
        or ("nccl" if torch.cuda.is_available() else "gloo")
    )
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    global _JOINED
    _JOINED = True
    _CURRENT = Dist(rank=rank, world_size=world, local_rank=local_rank, device=device)
    return _CURRENT


def adopt() -> Dist:
    """This process's :class:`Dist` in a process group that code outside rlmix initialised (a
    user's own ``torch.distributed.init_process_group``, e.g. a DDP loop), so that rlmix's
    collectives run in it; without one, the single-process :class:`Dist`."""
    global _CURRENT
    if _CURRENT.enabled or not dist.is_available() or not dist.is_initialized():
        return _CURRENT
    world = dist.get_world_size()
    if world == 1:
        return _CURRENT
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    _CURRENT = Dist(rank=dist.get_rank(), world_size=world, local_rank=local_rank, device=device)
    return _CURRENT


def teardown(wait: bool = True) -> None:
    """Leave the process group (if joined); with ``wait``, once every rank has got here, so that
    no rank tears its connections down while another still uses them (without: this rank
    failed alone, and the others may never get here)."""
    global _CURRENT
    if dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
    _CURRENT = Dist()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over ranks (a new tensor on ``t``'s device); ``t`` itself for one process."""
    d = current()
    if not d.enabled:
        return t
    buf = t.detach().to(d.device, torch.float64).clone()
    dist.all_reduce(buf)
    return (buf / d.world_size).to(t.device, t.dtype)


def all_true(flag: bool) -> bool:
    """True when ``flag`` holds on every rank (one all-reduce)."""
    d = current()
    if not d.enabled:
        return flag
    buf = torch.tensor([0.0 if flag else 1.0], device=d.device)
    dist.all_reduce(buf)
    return bool(buf.item() == 0.0)


class RankError(RlmixError):
    """The same error on every rank: one rank failed where the others would have waited."""


def agree(error: BaseException | str | None) -> None:
    """Let every rank know whether any failed (one scalar all-reduce; the messages are gathered
    only when one did); if one did, every rank raises the same :class:`RankError` (the lowest
    failing rank's message and exit code).

    Call it where a rank can fail alone (its batch, its reward) before the next collective, so
    that no rank is left waiting in that collective. Single-process: ``error`` is raised as is.
    """
    d = current()
    if not d.enabled:
        if isinstance(error, BaseException):
            raise error
        if error is not None:
            raise RlmixError(error)
        return
    if all_true(error is None):
        return
    mine = None
    if error is not None:
        code = getattr(error, "exit_code", 1)
        text = error if isinstance(error, str) else _describe(error)
        mine = (text, code)
    failures = [(r, f) for r, f in enumerate(all_gather_objects(mine)) if f is not None]
    if failures:
        rank, (text, code) = failures[0]
        err = RankError(f"rank {rank}: {text}")
        err.exit_code = code
        err.collective = True  # every rank raises it: rank 0 reports it
        raise err from (error if isinstance(error, BaseException) else None)


def together(fn: Callable[[], T]) -> T:
    """``fn()`` on every rank, failing on every rank if it fails on any (:func:`agree`)."""
    try:
        result = fn()
    except Exception as e:  # re-raised (single process) or agreed on below
        agree(e)
        raise  # unreachable: agree raises
    agree(None)
    return result


def _describe(error: BaseException) -> str:
    return str(error) if isinstance(error, RlmixError) else f"{type(error).__name__}: {error}"


def broadcast_ints(values: list[int] | None, n: int) -> list[int]:
    """Rank 0 sends ``n`` integers; every rank returns them."""
    d = current()
    buf = torch.zeros(n, dtype=torch.int64, device=d.device)
    if d.is_main:
        buf.copy_(torch.as_tensor(values, dtype=torch.int64))
    dist.broadcast(buf, src=0)
    return [int(v) for v in buf.tolist()]


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled within the run's own process group)."""
    d = current()
    if not d.enabled:
        return obj
    box = [obj if d.is_main else None]
    dist.broadcast_object_list(box, src=0, device=d.device)
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its result (or its exception) to every rank.

    For work that must happen once, such as checking the output directory or reading a
    checkpoint: every rank then fails or proceeds together instead of waiting on rank 0.
    """
    d = current()
    if not d.enabled:
        return fn()
    outcome: tuple[bool, Any] = (True, None)
    if d.is_main:
        try:
            outcome = (True, fn())
        except Exception as e:  # re-raised on every rank below
            outcome = (False, e)
    ok, value = broadcast_object(outcome)
    if not ok:
        value.collective = True  # every rank raises rank 0's error: rank 0 reports it
        raise value
    return value


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    d = current()
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_interleaved(local: torch.Tensor) -> torch.Tensor | None:
    """Gather rank shards (b, ...) into the global batch (W*b, ...) on rank 0, else None.

    Rank r holds positions r, r + W, r + 2W, ... of the global batch (see
    :class:`rlmix.data.BatchLoader`), so the shards are interleaved, not concatenated.
    """
    d = current()
    src = local.to(d.device).contiguous()
    parts = [torch.empty_like(src) for _ in range(d.world_size)] if d.is_main else None
    dist.gather(src, parts, dst=0)
    if parts is None:
        return None
    return torch.stack(parts, dim=1).reshape(-1, *src.shape[1:])


def scatter_interleaved(
    global_: torch.Tensor | None, shard_shape: tuple[int, ...], dtype
) -> torch.Tensor:
    """Rank 0's global batch (W*b, ...) split back so rank r gets positions r::W."""
    d = current()
    out = torch.empty(shard_shape, dtype=dtype, device=d.device)
    parts = None
    if d.is_main:
        assert global_ is not None
        g = global_.to(d.device, dtype)
        parts = [g[r :: d.world_size].contiguous() for r in range(d.world_size)]
    dist.scatter(out, parts, src=0)
    return out


__all__ = [
    "Dist",
    "adopt",
    "RankError",
    "agree",
    "all_gather_objects",
    "all_reduce_mean",
    "all_true",
    "broadcast_ints",
    "broadcast_object",
    "current",
    "gather_interleaved",
    "joined",
    "launched_by_torchrun",
    "on_main",
    "scatter_interleaved",
    "setup",
    "teardown",
    "together",
    "torchrun_rank",
]
