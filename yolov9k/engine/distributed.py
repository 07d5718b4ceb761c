"""DDP helpers for ``torchrun`` launches (``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` in the environment).

The process group uses NCCL for CUDA and gloo for CPU, with a timeout so that a rank whose peer died
or stalled raises :class:`DistributedError` (naming the collective and the timeout) instead of
waiting forever. :func:`fail_together` turns an exception on one rank into an error on every rank at
the next synchronisation point.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from yolov9k.errors import Yolov9kError

__all__ = [
    "DistInfo",
    "DistributedError",
    "dist_info",
    "init_distributed",
    "destroy_distributed",
    "barrier",
    "broadcast_object",
    "any_rank_failed",
]


class DistributedError(Yolov9kError, RuntimeError):
    """A DDP collective failed: a peer rank crashed, stalled, or the group could not be set up."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a DDP launch (``rank == -1``: not distributed)."""

    rank: int = -1
    local_rank: int = -1
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.rank != -1 and self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 or a single process: the one that validates, logs and saves."""
        return self.rank in (-1, 0)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise DistributedError(f"environment variable {name}={text!r} is not an integer") from None


def dist_info() -> DistInfo:
    """Read the launch from the environment (torchrun sets RANK, LOCAL_RANK and WORLD_SIZE)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", -1)
    local = _env_int("LOCAL_RANK", rank)
    if world <= 1:
        return DistInfo()
    if not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} out of range for WORLD_SIZE={world}")
    return DistInfo(rank=rank, local_rank=max(local, 0), world_size=world)


def init_distributed(device: torch.device, timeout_s: float = 600.0) -> DistInfo:
    """Join the process group of this launch (no-op for a single process); returns the launch info.

    Args:
        device: the training device; CUDA selects NCCL (and ``torch.cuda.set_device``), CPU gloo.
        timeout_s: seconds any collective may wait for the other ranks.
    """
    info = dist_info()
    if not info.enabled:
        return info
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_available():
        raise DistributedError("torch.distributed is not available in this torch build")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
        try:
            dist.init_process_group(
                backend=backend,
                timeout=datetime.timedelta(seconds=timeout_s),
                rank=info.rank,
                world_size=info.world_size,
            )
        except Exception as e:  # noqa: BLE001 - any rendezvous failure gets one clear message
            raise DistributedError(
                f"rank {info.rank}/{info.world_size}: could not join the process group "
                f"({type(e).__name__}: {e}); check MASTER_ADDR/MASTER_PORT and that every rank was started"
            ) from e
    return info


def destroy_distributed() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _timeout_s() -> float:
    try:
        return float(dist.distributed_c10d._get_default_timeout(dist.get_backend()).total_seconds())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return float("nan")


def barrier(what: str = "barrier") -> None:
    """Wait for every rank; DistributedError (with ``what``) when a peer does not arrive in time."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(wait_all_ranks=True)  # names the missing ranks
        else:
            dist.barrier()
    except Exception as e:  # noqa: BLE001
        raise DistributedError(
            f"rank {dist.get_rank()}: peers did not reach '{what}' ({type(e).__name__}: {str(e)[:300]}); "
            "another rank probably failed - see its log"
        ) from e


def broadcast_object(obj: object, src: int = 0) -> object:
    """``obj`` of rank ``src`` on every rank (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def any_rank_failed(failed: bool, where: str = "") -> bool:
    """True on every rank when ``failed`` is True on any rank (an all-reduce of a flag).

    Call it at the same point on all ranks, e.g. after each epoch with ``failed`` set when this
    rank caught an exception: then all ranks stop together instead of waiting for a dead peer.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return failed
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    flag = torch.tensor([1.0 if failed else 0.0], device=device)
    try:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    except Exception as e:  # noqa: BLE001
        raise DistributedError(
            f"rank {dist.get_rank()}: a peer did not reach the sync point {where!r} within "
            f"{_timeout_s():.0f}s ({type(e).__name__}); another rank probably failed - see its log"
        ) from e
    return bool(flag.item() > 0)
