"""Rank-0 training output: metrics.jsonl lines, optional TensorBoard, train.log, progress bar or lines, curves."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pc3d import console as con
from pc3d.console import new_progress, progress_enabled
from pc3d.runs import RunDir
from pc3d.viz.curves import BOOKKEEPING, plot_runs

TRAIN_LOG = "train.log"
CURVES = "curves.png"


class MetricSink:
    """metrics.jsonl through RunDir.log_metrics, mirrored to TensorBoard when it is installed.

    `note` receives the one line saying TensorBoard was asked for but cannot be used."""

    def __init__(self, run_dir: RunDir, tensorboard: bool | None, note: Callable[[str], None] | None = None) -> None:
        self.run_dir = run_dir
        self.writer = None
        if tensorboard is not False:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # optional; only a run that asked for it (true) hears it is missing
                missing = getattr(exc, "name", None) or "tensorboard"
                if tensorboard:
                    (note or con.line)(f"run.tensorboard is true but {missing} cannot be imported, so no TensorBoard "
                                       "logs are written (pip install tensorboard, or --set run.tensorboard=false)")
            else:
                self.writer = SummaryWriter(str(run_dir.path / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        self.run_dir.log_metrics(record)
        if self.writer is not None:
            prefix = record.get("split", "train")
            for key, value in record.items():
                if key not in ("step", "epoch", "split") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def truncate_metrics(path: Path, last_step: int) -> None:
    """On resume, drop lines a killed run wrote after its checkpoint, so each step appears once."""
    from pc3d.io.atomic import write_text_atomic

    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            step = json.loads(line).get("step", 0)
        except (json.JSONDecodeError, AttributeError):
            continue  # a line cut by the kill
        if step <= last_step:
            kept.append(line)
    write_text_atomic(path, "".join(f"{line}\n" for line in kept))


class TrainLog:
    """train.log in the run folder: the progress lines of the main rank, each with its wall-clock time.

    Each line is one write() on an O_APPEND descriptor opened for it, so a killed job leaves whole lines and
    a resumed run continues the same file; the file gets the mode open() gives (0666 minus the umask)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, message: str) -> None:
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        data = f"{stamp} {message}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)


def format_duration(seconds: float) -> str:
    """12s, 1m02s, 3h05m: short enough for every progress line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def _metrics_text(record: dict[str, Any]) -> str:
    """`loss 2.015 mse 1.9 ...`: the loss first, then the other terms and metrics in logged order."""
    keys = [k for k in record if k not in BOOKKEEPING]
    keys.sort(key=lambda k: k != "loss")  # stable: only moves the loss to the front
    return " ".join(f"{k} {_value(record[k])}" for k in keys)


class TrainProgress:
    """The main rank's progress: a rich bar per epoch on a terminal, else one plain stderr line per log
    interval; one line per epoch either way; every line also goes to train.log. Nothing on other ranks.

    stderr lines follow console.lines_enabled() (off with --quiet, on with --json); train.log always gets them."""

    def __init__(self, enabled: bool, log: TrainLog | None = None, epochs: int = 0, total_steps: int = 0,
                 start_step: int = 0) -> None:
        self.main = enabled
        self.enabled = enabled and progress_enabled()  # the rich bar
        self.log = log if enabled else None
        self.epochs, self.total_steps, self.start_step = epochs, total_steps, start_step
        self._bar = None
        self._task = None
        self.started = time.perf_counter()
        self._epoch_started = self.started
        self._curves_at: float | None = None

    def begin(self, step: int) -> None:
        """Training starts (or resumes) at `step`: the ETA counts from here."""
        self.start_step = step
        self.started = self._epoch_started = time.perf_counter()

    def note(self, message: str) -> None:
        """A start/resume/end line: stderr (unless --quiet) and train.log."""
        if not self.main:
            return
        con.line(message)
        if self.log is not None:
            self.log.write(message)

    def log_only(self, message: str) -> None:
        """A line for train.log alone (how a run ended, when the CLI reports it on stderr itself)."""
        if self.log is not None:
            self.log.write(message)

    def _eta(self, step: int) -> str:
        done = step - self.start_step
        if done <= 0 or not self.total_steps:
            return "-"
        per_step = (time.perf_counter() - self.started) / done  # includes validation and checkpoints so far
        return format_duration(per_step * max(self.total_steps - step, 0))

    def interval(self, record: dict[str, Any]) -> None:
        """The line of one log interval (a metrics.jsonl train record); on stderr only without the bar."""
        if not self.main:
            return
        step = record["step"]
        text = (f"epoch {record['epoch'] + 1}/{self.epochs} step {step}/{self.total_steps} "
                f"{_metrics_text(record)} lr {record['lr']:.2e}")
        speed = record.get("samples_per_s")
        text += f" | {speed:.1f} samples/s" if isinstance(speed, (int, float)) and math.isfinite(speed) else " |"
        text += f" eta {self._eta(step)}"
        if self._bar is None:
            con.line(text)
        if self.log is not None:
            self.log.write(text)

    def epoch_end(self, epoch: int, step: int, metrics: dict[str, Any], finished: bool,
                  stopped_early: bool = False) -> None:
        """`epoch 3/8 step 39/120 loss 2.015 ... val/oa 0.14 | 12.3 s/epoch eta 1m02s` (stderr and train.log).

        `epoch` counts from 1; `stopped_early`: train.max_steps ended it before the epoch's end."""
        now = time.perf_counter()
        text = f"epoch {epoch}/{self.epochs} step {step}/{self.total_steps} {_metrics_text(metrics)}".rstrip()
        if stopped_early:
            text += " (stopped at max_steps)"
        text += f" | {now - self._epoch_started:.1f} s/epoch "
        text += f"total {format_duration(now - self.started)}" if finished else f"eta {self._eta(step)}"
        self._epoch_started = now
        self.note(text)

    def curves(self, run_dir: RunDir, every_s: float = 30.0) -> None:
        """Redraw curves.png from metrics.jsonl, at most every `every_s` seconds (0: now).

        A picture must never fail a training run: a problem is one line, and training goes on."""
        now = time.perf_counter()
        if not self.main or (self._curves_at is not None and now - self._curves_at < every_s):
            return
        self._curves_at = now
        try:
            plot_runs([run_dir.path], run_dir.path / CURVES)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            self.note(f"{CURVES} not written: {type(exc).__name__}: {' '.join(str(exc).split())}")

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int) -> None:
        self._epoch_started = time.perf_counter()
        if not self.enabled:
            return
        from rich.progress import TextColumn

        self.close()
        self._bar = new_progress(TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}"))
        self._bar.start()
        self._task = self._bar.add_task(f"epoch {epoch + 1}/{epochs}", total=total, completed=done,
                                        loss="-", lr="-")

    def advance(self, loss: float | None, lr: float) -> None:
        if self._bar is not None:
            shown = "-" if loss is None else f"{loss:.4f}"
            self._bar.update(self._task, advance=1, loss=shown, lr=f"{lr:.2e}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
