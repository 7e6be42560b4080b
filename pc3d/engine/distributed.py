"""Process topology: one process, N launched workers, or workers started by torchrun/SLURM.

All three run the same worker code; only who starts the processes differs. Launched workers get
the standard variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) from torch's elastic
launcher, and SLURM variables are translated into them, so the worker always initialises with env://.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist

from pc3d.engine.device import cuda_missing_reason
from pc3d.errors import InputError

Mode = Literal["single", "launch", "env"]


@dataclass(frozen=True)
class Topology:
    mode: Mode
    world_size: int
    device_type: Literal["cpu", "cuda"]

    @property
    def backend(self) -> str:
        return "nccl" if self.device_type == "cuda" else "gloo"


def _env_world(env: Mapping[str, str]) -> dict[str, str] | None:
    """RANK/WORLD_SIZE/LOCAL_RANK from torchrun or SLURM when this process is one of several."""
    if "RANK" in env and "WORLD_SIZE" in env and int(env["WORLD_SIZE"]) > 1:
        return {"RANK": env["RANK"], "WORLD_SIZE": env["WORLD_SIZE"], "LOCAL_RANK": env.get("LOCAL_RANK", "0")}
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1 and "MASTER_ADDR" in env:
        return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env["SLURM_NTASKS"],
                "LOCAL_RANK": env.get("SLURM_LOCALID", "0")}
    return None


def outside_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank when torchrun / SLURM started several (0 otherwise): every rank runs the whole
    command, and only rank 0 may write the run's summary, print its result or score it after training."""
    outside = _env_world(os.environ if env is None else env)
    return int(outside["RANK"]) if outside is not None else 0


def plan_topology(run: Any, env: Mapping[str, str] | None = None) -> Topology:
    """Decide how many processes on which device from `run.device/gpus/nproc` and the environment.

    Raises InputError for requests this machine cannot satisfy."""
    env = os.environ if env is None else env
    cuda = torch.cuda.is_available()
    count = torch.cuda.device_count() if cuda else 0
    if run.device == "cuda" and not cuda:
        raise InputError(f"--device cuda: {cuda_missing_reason()}")
    outside = _env_world(env)
    if outside is not None:
        device = "cuda" if run.device == "cuda" or (run.device == "auto" and cuda) else "cpu"
        if device == "cuda" and int(outside["LOCAL_RANK"]) >= count:
            raise InputError(f"LOCAL_RANK {outside['LOCAL_RANK']} has no GPU: only {count} visible on this node")
        return Topology("env", int(outside["WORLD_SIZE"]), device)
    if run.gpus > 0:
        if run.device == "cpu":
            raise InputError(f"--gpus {run.gpus} needs CUDA, but --device is cpu (use --nproc for CPU workers)")
        if not cuda:
            raise InputError(f"--gpus {run.gpus}: no CUDA device is visible to torch")
        if run.gpus > count:
            raise InputError(f"--gpus {run.gpus}: only {count} CUDA device(s) visible on this machine")
        if run.nproc > 1:
            raise InputError("--nproc is for CPU workers; with --gpus each GPU gets one worker")
        return Topology("launch" if run.gpus > 1 else "single", run.gpus, "cuda")
    if run.nproc > 1:
        if run.device == "cuda":
            raise InputError(f"--nproc {run.nproc} starts CPU workers; use --gpus {run.nproc} for CUDA workers")
        return Topology("launch", run.nproc, "cpu")
    device = "cuda" if run.device == "cuda" or (run.device == "auto" and cuda) else "cpu"
    return Topology("single", 1, device)


@dataclass(frozen=True)
class WorkerContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_worker(topology: Topology) -> WorkerContext:
    """Join the process group (when there is one) and pick this worker's device."""
    if topology.world_size == 1:
        device = torch.device("cuda", 0) if topology.device_type == "cuda" else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return WorkerContext(0, 1, 0, device)
    outside = _env_world(os.environ)
    if outside is None:
        raise RuntimeError("distributed worker started without RANK/WORLD_SIZE in its environment")
    os.environ.update(outside)  # SLURM -> the names env:// reads
    os.environ.setdefault("MASTER_PORT", "29500")
    rank, world, local_rank = (int(outside[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if topology.device_type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", init_method="env://", rank=rank, world_size=world, device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world)
    return WorkerContext(rank, world, local_rank, device)


def shutdown_worker(synchronize: bool = False) -> None:
    """Leave the process group. `synchronize` (normal end of a run): meet the other ranks first -- a rank that
    tears down gloo while another still talks to the store (hosted by rank 0) can abort at exit."""
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            if synchronize and dist.get_world_size() > 1:
                dist.barrier()
            dist.destroy_process_group()


def broadcast_object(value: Any, ctx: WorkerContext) -> Any:
    """Rank 0's `value` on every rank."""
    if not ctx.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any, ctx: WorkerContext) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not ctx.distributed:
        return [value]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def launch(worker: Callable[..., Any], args: tuple, nproc: int, device_type: str) -> dict[int, Any]:
    """Start `nproc` local workers through torch's elastic launcher (what torchrun uses) and wait.

    Returns each local rank's return value; a failed worker raises ChildFailedError."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"pc3d-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.1,
        start_method="spawn",
    )
    # CPU workers share the cores; GPU workers need few threads each
    threads = max(1, (os.cpu_count() or 1) // nproc) if device_type == "cpu" else 1
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        return elastic_launch(config, worker)(*args)
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous
