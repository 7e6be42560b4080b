"""`fit`: the one training loop every method runs through.

A method's CLI entry calls `fit(request, build)`. `fit` picks or creates the run folder, decides the
process topology (one process, N launched workers, or workers started by torchrun/SLURM), calls
`build(config, rank)` inside every worker, and trains: AdamW with no-decay groups, per-iteration
warm-up + cosine, clipping, accumulation, AMP, DDP, checkpoints (rolling, best, last, on SIGTERM),
metrics. It returns a plain dict (run folder, final and best metrics, checkpoint paths).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import random
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pc3d import console as con
from pc3d.config.base import OptimConfig, PresetBase, TrainConfig
from pc3d.engine.checkpoint import (
    MODEL_PREFIX,
    CheckpointFolder,
    capture_rng,
    merge_optimizer_state,
    read_checkpoint,
    restore_rng,
    split_optimizer_state,
)
from pc3d.engine.data import ShardedSampler, default_collate, seed_worker, to_device
from pc3d.engine.distributed import (
    Topology,
    WorkerContext,
    broadcast_object,
    gather_objects,
    init_worker,
    launch,
    plan_topology,
    shutdown_worker,
)
from pc3d.engine.logs import TRAIN_LOG, MetricSink, TrainLog, TrainProgress, truncate_metrics
from pc3d.engine.method import Method, StepState, has_validation, total_loss
from pc3d.engine.schedule import WarmupCosine, WeightDecayCosine
from pc3d.errors import ConfigError, InputError, NotBuiltError, Pc3dError, RuntimeFailure
from pc3d.runs import RunDir, RunRequest


class TrainingInterrupted(RuntimeFailure):
    """SIGTERM/SIGINT stopped training after a checkpoint was written (exit 128 + signal number)."""

    def __init__(self, message: str, signum: int = signal.SIGTERM) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


@dataclass
class TrainingSetup:
    """What a method's `build(config, rank)` returns."""

    method: Method
    train_set: Dataset
    val_set: Dataset | None = None
    collate_fn: Callable | None = None


BuildFn = Callable[[PresetBase, int], TrainingSetup]


@dataclass
class _Plan:
    """Everything a worker needs; pickled to launched workers."""

    request: RunRequest
    topology: Topology
    run_path: str | None  # None: rank 0 creates the run folder (torchrun/SLURM start every rank)
    resume_from: str | None
    quiet: bool
    verbose: bool
    error_dir: str | None = None
    lines: bool = True  # progress lines on stderr (on with --json, off with --quiet); workers have no CLI flags


# ---------------------------------------------------------------- entry point


def fit(request: RunRequest, build: BuildFn) -> dict[str, Any]:
    """Train `request.config` with the method `build` makes; returns the run's result dict.

    `build` must be a module-level function (launched workers import it by name)."""
    config = request.config
    topology = plan_topology(config.run)
    if request.init_from:  # download once, before workers exist, so they do not race on the cache
        from pc3d.engine.hub import resolve_weights

        request = replace(request, init_from=str(resolve_weights(request.init_from)))
    quiet, verbose, lines = con.is_quiet(), con.is_verbose(), con.lines_enabled()
    if topology.mode == "env":
        result = _worker(_Plan(request, topology, None, None, quiet, verbose, lines=lines), build)
    else:
        run_path, resume_from = _prepare_run(request)
        plan = _Plan(request, topology, run_path, resume_from, quiet, verbose, lines=lines)
        result = _launch(plan, build) if topology.mode == "launch" else _worker(plan, build)
    if request.push_to_hub and result.get("rank", 0) == 0:
        from pc3d.engine.publish import push_to_hub

        result["hub"] = push_to_hub(result["run_dir"], request.push_to_hub)
    result.pop("rank", None)
    return result


def _run_name(request: RunRequest) -> str:
    return request.config.run.name or Path(request.preset_name).stem


def _prepare_run(request: RunRequest) -> tuple[str, str | None]:
    """The run folder (new, or the one to continue) and the checkpoint to resume from."""
    config, name = request.config, _run_name(request)
    if request.resume_checkpoint:
        sidecar = Path(request.resume_checkpoint)
        run_path = sidecar.parent.parent
        # methods that train several runs from one request (few-shot folds) must not all continue this one
        if run_path.parent.name != name:
            raise InputError(f"--resume {sidecar}: that checkpoint belongs to run '{run_path.parent.name}', "
                             f"not '{name}'")
        RunDir(run_path).mark_latest()  # the running job is <out>/<name>/latest
        return str(run_path), str(sidecar)
    if request.resume or request.resume_auto:
        run = RunDir.latest(config.run.out, name)
        latest = CheckpointFolder(run.checkpoints, keep_last=1).latest() if run is not None else None
        if latest is not None:
            run.mark_latest()
            return str(run.path), str(latest)
        if not request.resume_auto:  # auto: nothing to continue yet, so this job starts the run
            if run is None:
                raise InputError(f"--resume: no earlier run named '{name}' under {config.run.out}/")
            raise InputError(f"--resume: run {run.path} has no checkpoint yet")
    run = RunDir.create(config.run.out, name)
    run.save_config(config.model_dump(mode="json"))
    return str(run.path), None


_ERRORS: dict[str, type[Pc3dError]] = {cls.__name__: cls for cls in
                                       (InputError, ConfigError, NotBuiltError, RuntimeFailure)}


def _launch(plan: _Plan, build: BuildFn) -> dict[str, Any]:
    """N local workers through torch's elastic launcher; their Pc3dErrors come back as the same error."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    with tempfile.TemporaryDirectory(prefix="pc3d-workers-") as error_dir:
        plan = replace(plan, error_dir=error_dir)
        try:
            results = launch(_launched_worker, (plan, build), plan.topology.world_size, plan.topology.device_type)
        except (ChildFailedError, SignalException) as exc:
            raise _worker_error(Path(error_dir), exc) from None
    return results[0]


def _worker_error(error_dir: Path, exc: Exception) -> Pc3dError:
    reports = sorted(error_dir.glob("rank*.json"))
    if reports:
        report = json.loads(reports[0].read_text())
        if report["type"] == "TrainingInterrupted":
            return TrainingInterrupted(report["message"], report["exit_code"] - 128)
        return _ERRORS.get(report["type"], RuntimeFailure)(report["message"])
    if type(exc).__name__ == "SignalException":
        return TrainingInterrupted(f"training stopped by signal {getattr(exc, 'sigval', '?')}",
                                   int(getattr(exc, "sigval", signal.SIGTERM)))
    return RuntimeFailure(f"a training worker failed: {' '.join(str(exc).split())[:300]}")


def _launched_worker(plan: _Plan, build: BuildFn) -> dict[str, Any] | None:
    """Entry of a launched worker process (module level so it pickles)."""
    rank = int(os.environ.get("RANK", "0"))
    try:
        result = _worker(plan, build)
    except Exception as exc:  # report it for the parent, then fail the worker as usual (traceback on stderr)
        if plan.error_dir:
            if isinstance(exc, Pc3dError):
                report = {"type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}
            else:
                report = {"type": "RuntimeFailure", "exit_code": 1,
                          "message": f"training worker {rank} failed: {type(exc).__name__}: {exc}"}
            Path(plan.error_dir, f"rank{rank:05d}.json").write_text(json.dumps(report))
        raise
    return result if rank == 0 else None


def _worker(plan: _Plan, build: BuildFn) -> dict[str, Any]:
    ctx = init_worker(plan.topology)
    con.set_verbosity(quiet=plan.quiet or not ctx.is_main, verbose=plan.verbose,
                      progress_lines=plan.lines and ctx.is_main)
    try:
        trainer = _Trainer(plan, build, ctx)
        result = trainer.run()
    except BaseException:
        shutdown_worker()  # no barrier: the other ranks may be gone
        raise
    # DDP's reducer keeps the gloo process group alive; freed only at interpreter exit, its threads abort the
    # process (SIGABRT after a successful run), so drop the model before leaving the group
    del trainer
    gc.collect()
    shutdown_worker(synchronize=True)
    return result


# ---------------------------------------------------------------- helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision only on CUDA: auto = bf16 where supported, else fp16."""
    if device.type != "cuda" or setting == "off":
        return None
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[setting]


def _configure_determinism(deterministic: bool, device: torch.device) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _has_batchnorm(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


class _SignalFlag:
    """SIGTERM/SIGINT set a flag the loop checks after each optimiser step; a second signal aborts."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _SignalFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------- the loop


class _Trainer:
    def __init__(self, plan: _Plan, build: BuildFn, ctx: WorkerContext) -> None:
        self.plan, self.build, self.ctx = plan, build, ctx
        self.config = plan.request.config
        self.optim_cfg: OptimConfig = getattr(self.config, "optim", None) or OptimConfig()
        self.train_cfg: TrainConfig = getattr(self.config, "train", None) or TrainConfig()
        self.device = ctx.device
        self.step = 0
        self.epoch = 0
        self.batches_done = 0  # micro-batches of the current epoch already trained
        self.best: dict[str, Any] | None = None
        self.last_metrics: dict[str, float] = {}
        self._pending_rng: dict[str, Any] | None = None  # this rank's RNG state from a resumed checkpoint

    # ---- set-up

    def _run_dir(self) -> tuple[RunDir, str | None]:
        if self.plan.run_path is not None:
            return RunDir(Path(self.plan.run_path)), self.plan.resume_from
        outcome: tuple[str, Any] = ("ok", None)
        if self.ctx.is_main:
            try:
                outcome = ("ok", _prepare_run(self.plan.request))
            except Pc3dError as exc:
                outcome = ("error", str(exc))
        kind, value = broadcast_object(outcome, self.ctx)
        if kind == "error":
            raise InputError(value)
        return RunDir(Path(value[0])), value[1]

    def _setup(self) -> None:
        cfg, train, ctx = self.config, self.train_cfg, self.ctx
        self.run_dir, resume_from = self._run_dir()
        _configure_determinism(cfg.run.deterministic, self.device)
        seed_everything(cfg.run.seed)  # same seed everywhere: identical initial weights on every rank
        setup = self.build(cfg, ctx.rank)
        if not isinstance(setup, TrainingSetup) or not isinstance(setup.method, Method):
            raise TypeError("build(config, rank) must return a TrainingSetup whose method is a pc3d Method")
        self.method = setup.method.to(self.device)
        if self.plan.request.init_from and not resume_from:
            from pc3d.engine.checkpoint import load_weights

            source = self.plan.request.init_from
            report = self.method.load_pretrained(load_weights(source), source=source)
            unused = list(report.get("skipped") or [])
            con.info(f"loaded {report['loaded']} tensors from {source}"
                     + (f"; {len(unused)} tensors of the file unused (--verbose lists them)" if unused else ""))
            for note in report.get("notes") or []:
                con.info(f"  {note}")
            if unused:
                con.debug("unused: " + ", ".join(map(str, unused)))
        seed_everything(cfg.run.seed + ctx.rank)  # per-rank streams for augmentation and masking

        workers = ctx.world_size * train.accumulate
        if train.batch_size % workers:
            raise InputError(f"train.batch_size {train.batch_size} is not divisible by workers x accumulate "
                             f"= {ctx.world_size} x {train.accumulate}")
        self.local_batch = train.batch_size // workers
        self.sampler = ShardedSampler(len(setup.train_set), ctx.rank, ctx.world_size, cfg.run.seed, shuffle=True,
                                      local_batch=self.local_batch, batches_multiple=train.accumulate)
        if self.sampler.batches == 0:
            raise InputError(f"the training set has {len(setup.train_set)} samples, fewer than one optimiser "
                             f"step needs (train.batch_size {train.batch_size})")
        self.train_set, self.val_set = setup.train_set, setup.val_set
        self.collate = setup.collate_fn or default_collate
        self.steps_per_epoch = self.sampler.batches // train.accumulate
        self.total_steps = train.epochs * self.steps_per_epoch
        self.schedule = WarmupCosine.from_config(self.optim_cfg, train.epochs, self.steps_per_epoch)

        if ctx.distributed and self.device.type == "cuda" and _has_batchnorm(self.method):
            self.method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        groups = self.method.param_groups(self.optim_cfg.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=self.optim_cfg.lr, betas=self.optim_cfg.betas,
                                           weight_decay=self.optim_cfg.weight_decay)
        self.wd_schedule = WeightDecayCosine.from_groups(self.optim_cfg, self.optimizer.param_groups,
                                                         self.total_steps)
        self.amp = amp_dtype(train.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.method, device_ids=ids,
                                                 find_unused_parameters=self.method.find_unused_parameters)
        else:
            self.model = self.method
        self.checkpoints = CheckpointFolder(self.run_dir.checkpoints, train.keep_last)
        planned = min(self.total_steps, train.max_steps) if train.max_steps else self.total_steps
        self.progress = TrainProgress(ctx.is_main, TrainLog(self.run_dir.path / TRAIN_LOG) if ctx.is_main else None,
                                      epochs=train.epochs, total_steps=planned)
        self.sink = MetricSink(self.run_dir, cfg.run.tensorboard, note=self.progress.note) if ctx.is_main else None
        self.resumed_from = resume_from
        if resume_from:
            self._resume(resume_from)

    def _resume(self, path: str) -> None:
        checkpoint = read_checkpoint(path)
        meta = checkpoint.meta
        own = self.method.state_dict()
        state = checkpoint.model_state
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
        if missing or unexpected or wrong:
            detail = "; ".join(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                               for label, keys in (("missing", missing), ("unexpected", unexpected),
                                                   ("shape differs", wrong)) if keys)
            raise InputError(f"checkpoint {checkpoint.path} does not fit this model ({detail})")
        self.method.load_state_dict(state)
        try:
            self.optimizer.load_state_dict(merge_optimizer_state(checkpoint.tensors, meta["optimizer"]))
        except (KeyError, ValueError) as exc:
            raise InputError(f"checkpoint {checkpoint.path}: optimiser state does not fit ({exc})") from None
        if meta.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(meta["scaler"])
        self.step, self.epoch, self.batches_done = meta["step"], meta["epoch"], meta["batches_done"]
        self.best, self.last_metrics = meta.get("best"), meta.get("metrics", {})
        if meta.get("sampler", {}).get("world_size", self.ctx.world_size) != self.ctx.world_size \
                and self.batches_done:
            # positions are per rank; with another worker count, restart the interrupted epoch
            self.progress.note("resuming with a different number of workers: the interrupted epoch restarts")
            self.batches_done = 0
        ranks = meta.get("rng", [])
        self._pending_rng = ranks[self.ctx.rank] if len(ranks) == self.ctx.world_size else None
        if self.ctx.is_main:
            truncate_metrics(self.run_dir.metrics_file, self.step)
            changes = self.plan.request.resume_changes
            if changes:
                # written only once the checkpoint fits, so config.yaml never names a config that did not run;
                # the line keeps the history that the rewritten config.yaml no longer shows
                self.run_dir.save_config_only(self.config.model_dump(mode="json"))
                self.run_dir.log_metrics({"step": self.step, "epoch": self.epoch, "split": "resume",
                                          "checkpoint": str(checkpoint.path), "changes": changes})
                self.progress.note("--allow-change: " + ", ".join(f"{k} {v['from']} -> {v['to']}"
                                                                  for k, v in changes.items()))
        self.progress.note(f"resuming {self.run_dir.path} at epoch {self.epoch + 1}, step {self.step}")

    # ---- checkpoints

    def _save(self, kind: str) -> Path | None:
        """Collective: every rank contributes its RNG state; rank 0 writes. kind: rolling, best, last."""
        rng = gather_objects(capture_rng(), self.ctx)
        if not self.ctx.is_main:
            return None
        tensors = {f"{MODEL_PREFIX}{k}": v for k, v in self.method.state_dict().items()}
        optim_tensors, optim_rest = split_optimizer_state(self.optimizer.state_dict())
        tensors.update(optim_tensors)
        meta = {
            "config": self.config.model_dump(mode="json"), "epoch": self.epoch, "step": self.step,
            "batches_done": self.batches_done, "total_steps": self.total_steps,
            "scheduler": self.schedule.state_dict(), "optimizer": optim_rest,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "sampler": {"seed": self.config.run.seed, "epoch": self.epoch, "batches_done": self.batches_done,
                        "world_size": self.ctx.world_size, "local_batch": self.local_batch},
            "rng": rng, "metrics": self.last_metrics, "best": self.best, "time": time.time(),
        }
        if kind == "rolling":
            return self.checkpoints.save_rolling(self.step, tensors, meta)
        return self.checkpoints.save_named(kind, tensors, meta)

    # ---- steps

    def _state(self) -> StepState:
        progress = min(self.step / self.total_steps, 1.0) if self.total_steps else 1.0
        return StepState(self.step, self.epoch, self.total_steps, progress, self.schedule(self.step))

    def _loader(self, dataset: Dataset, sampler: ShardedSampler, epoch: int) -> DataLoader:
        # a generator of our own: creating the iterator must not draw from the global RNG (exact resume)
        generator = torch.Generator().manual_seed(self.config.run.seed * 7919 + epoch * 104_729 + self.ctx.rank)
        return DataLoader(dataset, batch_size=self.local_batch, sampler=sampler, collate_fn=self.collate,
                          num_workers=self.train_cfg.num_workers, pin_memory=self.device.type == "cuda",
                          worker_init_fn=seed_worker, generator=generator)

    def _should_stop(self, flag: _SignalFlag) -> int:
        """The signal seen by any rank (0 for none), agreed by all ranks."""
        if not self.ctx.distributed:
            return flag.signum
        value = torch.tensor([flag.signum], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return int(value.item())

    def _reduce_means(self, sums: dict[str, Tensor], count: int) -> dict[str, float]:
        names = sorted(sums)
        values = torch.stack([sums[n].float() for n in names]) / max(count, 1)
        if self.ctx.distributed:
            dist.all_reduce(values)
            values /= self.ctx.world_size
        return dict(zip(names, values.tolist(), strict=True))

    def _train_epoch(self, flag: _SignalFlag, progress: TrainProgress) -> bool:
        """One epoch from `batches_done`; returns False when max_steps ended training early."""
        train, acc = self.train_cfg, self.train_cfg.accumulate
        self.sampler.set_epoch(self.epoch, self.batches_done)
        loader = self._loader(self.train_set, self.sampler, self.epoch)
        progress.start_epoch(self.epoch, train.epochs, self.steps_per_epoch, self.batches_done // acc)
        if self._pending_rng is not None:
            restore_rng(self._pending_rng)  # last, right before the first batch, as when it was saved
            self._pending_rng = None
        self.method.train()
        window: dict[str, Tensor] = {}
        window_steps, epoch_sums, epoch_steps = 0, {}, 0
        tic = time.perf_counter()
        for batch in loader:
            state = self._state()
            self.schedule.apply(self.optimizer, self.step)
            if self.wd_schedule is not None:  # after a resume this overrides the stored (last-step) values
                self.wd_schedule.apply(self.optimizer, self.step)
            self.batches_done += 1
            boundary = self.batches_done % acc == 0
            sync = contextlib.nullcontext() if boundary or not self.ctx.distributed else self.model.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                    terms = self.model(to_device(batch, self.device), state)
                    loss = total_loss(terms)
                self.scaler.scale(loss / acc).backward()
            for key, value in (("loss", loss), *((k, v) for k, v in terms.items() if k != "loss")):
                window[key] = window.get(key, 0.0) + torch.as_tensor(value, device=self.device).detach().float() / acc
            if not boundary:
                continue
            if self.optim_cfg.clip_grad is not None:
                self.scaler.unscale_(self.optimizer)
                norm = torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.optim_cfg.clip_grad)
                window["grad_norm"] = window.get("grad_norm", 0.0) + norm.detach().float()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            window_steps += 1
            self.method.after_optimizer_step(self._state())
            progress.advance(float(loss.detach()) if progress.enabled else None, state.lr)
            stop_early = bool(train.max_steps and self.step >= train.max_steps)
            if self.step % train.log_every == 0 or self.batches_done == self.sampler.batches or stop_early:
                means = self._reduce_means(window, window_steps)
                self._check_finite(means)
                for key, value in means.items():
                    epoch_sums[key] = epoch_sums.get(key, 0.0) + value * window_steps
                epoch_steps += window_steps
                elapsed = time.perf_counter() - tic
                decay = {} if self.wd_schedule is None else {"weight_decay": self.wd_schedule(state.step)}
                record = {"step": self.step, "epoch": self.epoch, "lr": state.lr, **decay, **means,
                          "samples_per_s": window_steps * train.batch_size / max(elapsed, 1e-9)}
                self._log(record)
                progress.interval(record)
                window, window_steps, tic = {}, 0, time.perf_counter()
            signum = self._should_stop(flag)
            if signum:
                self._interrupt(signum, progress)
            if train.save_every_steps and self.step % train.save_every_steps == 0 \
                    and self.batches_done < self.sampler.batches:
                self._save("rolling")
            if stop_early:
                self.last_metrics = {k: v / max(epoch_steps, 1) for k, v in epoch_sums.items()}
                return False
        self.last_metrics = {k: v / max(epoch_steps, 1) for k, v in epoch_sums.items()}
        return True

    def _check_finite(self, means: dict[str, float]) -> None:
        if self.amp == torch.float16:
            return  # the grad scaler skips overflowing steps by design
        bad = {k: v for k, v in means.items() if not math.isfinite(v)}
        if bad:
            name, value = next(iter(bad.items()))
            raise RuntimeFailure(f"{name} became {value} at step {self.step} (epoch {self.epoch + 1}); "
                                 "lower optim.lr or set optim.clip_grad")

    def _interrupt(self, signum: int, progress: TrainProgress) -> None:
        progress.close()
        path = self._save("rolling")
        name = signal.Signals(signum).name
        where = f"; checkpoint {path}" if path else ""
        progress.log_only(f"stopped by {name} at step {self.step}{where}")
        raise TrainingInterrupted(f"stopped by {name} at step {self.step}{where}; continue with --resume", signum)

    def _log(self, record: dict[str, Any]) -> None:
        if self.sink is not None:
            self.sink.log(record)

    def _validate(self) -> dict[str, float]:
        if self.val_set is None or not has_validation(self.method):
            return {}
        sampler = ShardedSampler(len(self.val_set), self.ctx.rank, self.ctx.world_size, self.config.run.seed,
                                 shuffle=False, local_batch=self.local_batch, drop_tail=False)
        self.method.eval()
        outputs = []
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp or torch.float32,
                                             enabled=self.amp is not None):
            for batch in self._loader(self.val_set, sampler, 0):
                out = self.method.validation_step(to_device(batch, self.device))
                outputs.append({k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in out.items()})
        self.method.train()
        gathered = gather_objects(outputs, self.ctx)
        return self.method.validation_epoch_end([o for part in gathered for o in part])

    def _track_best(self, metrics: dict[str, float], validated_now: bool) -> bool:
        """Is this epoch the best so far? With a validation set, only validated epochs are judged, and
        `best_metric: mse` means `val/mse` when validation reports it (else the training term)."""
        name = self.train_cfg.best_metric
        if name is None:
            return False
        validates = self.val_set is not None and has_validation(self.method) and bool(self.train_cfg.eval_every)
        if validates:
            if not validated_now:
                return False
            if f"val/{name}" in metrics:
                name = f"val/{name}"
        if name not in metrics:
            raise InputError(f"train.best_metric '{name}' is not a metric of this method "
                             f"(have: {', '.join(sorted(metrics)) or 'none'})")
        value = float(metrics[name])
        better = self.best is None or (value > self.best["value"] if self.train_cfg.best_mode == "max"
                                       else value < self.best["value"])
        if better:
            self.best = {"metric": name, "value": value, "epoch": self.epoch, "step": self.step}
        return better

    def run(self) -> dict[str, Any]:
        self._setup()
        train = self.train_cfg
        progress = self.progress
        finished = self.epoch >= train.epochs or bool(train.max_steps and self.step >= train.max_steps)
        progress.begin(self.step)
        workers = f"{self.ctx.world_size} process{'es' if self.ctx.world_size > 1 else ''}"
        progress.note(f"training {self.run_dir.path}: {train.epochs} epoch{'s' if train.epochs > 1 else ''} x "
                      f"{self.steps_per_epoch} steps, batch {train.batch_size}, {workers} on {self.device.type}")
        try:
            with _SignalFlag() as flag:
                while not finished:
                    completed = self._train_epoch(flag, progress)  # False: max_steps stopped it mid-epoch
                    progress.close()
                    if completed:
                        self.epoch += 1
                        self.batches_done = 0
                    finished = self.epoch >= train.epochs or not completed
                    validated = False
                    if train.eval_every and (finished or self.epoch % train.eval_every == 0):
                        val = self._validate()
                        validated = bool(val)
                        self.last_metrics = {**self.last_metrics, **{f"val/{k}": float(v) for k, v in val.items()}}
                    self._log({"step": self.step, "epoch": self.epoch - 1 if completed else self.epoch,
                               "split": "epoch", **self.last_metrics})
                    if self._track_best(self.last_metrics, validated):
                        self._save("best")
                    if not finished and self.epoch % train.save_every == 0:
                        self._save("rolling")
                    progress.epoch_end(self.epoch if completed else self.epoch + 1, self.step, self.last_metrics,
                                       finished, stopped_early=not completed)
                    if not finished:
                        progress.curves(self.run_dir)
                last = self._save("last")
        except Pc3dError as exc:  # the CLI prints it on stderr; the log keeps how the run ended
            if not isinstance(exc, TrainingInterrupted):
                progress.log_only(f"failed: {' '.join(str(exc).split())}")
            raise
        finally:
            progress.close()
            if self.sink is not None:
                self.sink.close()
            progress.curves(self.run_dir, every_s=0)  # also after a failure: the curves show a divergence
        best_path = self.run_dir.checkpoints / "best.json"
        return {
            "rank": self.ctx.rank, "run_dir": str(self.run_dir.path), "epochs": self.epoch, "steps": self.step,
            "world_size": self.ctx.world_size, "metrics": self.last_metrics, "best": self.best,
            "checkpoints": {"last": str(last) if last else str(self.run_dir.checkpoints / "last.json"),
                            "best": str(best_path) if best_path.is_file() else None},
            "resumed_from": self.resumed_from,
        }
