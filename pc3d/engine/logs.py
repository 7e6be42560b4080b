"""Rank-0 training output: metrics.jsonl lines, optional TensorBoard, a rich progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pc3d.console import new_progress, progress_enabled
from pc3d.runs import RunDir


class MetricSink:
    """metrics.jsonl through RunDir.log_metrics, mirrored to TensorBoard when it is installed."""

    def __init__(self, run_dir: RunDir, tensorboard: bool) -> None:
        self.run_dir = run_dir
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
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


class TrainProgress:
    """One bar per epoch with loss, lr and ETA; nothing when quiet, not a TTY, or not rank 0."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and progress_enabled()
        self._bar = None
        self._task = None
        self.started = time.perf_counter()

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int) -> None:
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
