"""Shared terminal output: one rich console on stderr, quiet/verbose switches, progress bars.

stdout is reserved for results (`--json` prints exactly one JSON object there), so all
human-facing chatter goes to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console, ConsoleDimensions

T = TypeVar("T")

# Wide enough for any path or metric line; only used when stderr is a file or pipe, where nobody reads at 80 columns.
LOG_WIDTH = 100_000


class _StderrConsole(Console):
    """A rich console that folds and cuts nothing when stderr is not a terminal.

    Rich falls back to 80 columns there, so a cluster log got `val/svm_acc` and its value on two lines and
    tables ended in `…/checkpoints/l…`. Tables still take their natural width (they do not expand)."""

    @property
    def size(self) -> ConsoleDimensions:
        dims = super().size
        if not self.is_terminal:
            return ConsoleDimensions(LOG_WIDTH, dims.height)
        return dims

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = _StderrConsole(stderr=True, highlight=False)
_state = {"quiet": False, "verbose": False, "lines": True}


def set_verbosity(quiet: bool = False, verbose: bool = False, progress_lines: bool | None = None) -> None:
    """quiet silences status lines and bars; progress lines (training progress, train.log's lines on stderr)
    follow `progress_lines`, by default the opposite of quiet. The commands pass --json as quiet with
    progress lines on, so a cluster log shows progress while stdout carries only the JSON object."""
    _state["quiet"] = quiet
    _state["verbose"] = verbose
    _state["lines"] = not quiet if progress_lines is None else progress_lines
    _third_party_follows()


def _third_party_follows() -> None:
    """Make the libraries pc3d drives obey --quiet / --verbose like pc3d's own output.

    transformers and huggingface_hub draw tqdm bars ("Loading weights", "Writing model shards") on stderr
    even when it is a log file, and torch / transformers warn about things a user of pc3d cannot change.
    Bars show when pc3d's own would (a terminal, not --quiet); warnings and the libraries' info logs show
    with --verbose only. The environment variables reach libraries imported later and worker processes;
    libraries already imported are switched directly.
    """
    bars = progress_enabled()
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "0" if bars else "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "info" if _state["verbose"] and not _state["quiet"] else "error"
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None:
        (hub.enable_progress_bars if bars else hub.disable_progress_bars)()
    transformers_logging = sys.modules.get("transformers.utils.logging")
    if transformers_logging is not None:
        (transformers_logging.enable_progress_bar if bars else transformers_logging.disable_progress_bar)()
        transformers_logging.set_verbosity(logging.INFO if _state["verbose"] else logging.ERROR)
    # torch reports through logging too (e.g. torch.fx's is_fx_tracing notice when spconv runs)
    logging.getLogger("torch").setLevel(logging.NOTSET if _state["verbose"] and not _state["quiet"] else logging.ERROR)
    if _state["verbose"] and not _state["quiet"]:
        warnings.simplefilter("default")
    else:
        warnings.simplefilter("ignore")


def is_quiet() -> bool:
    return _state["quiet"]


def is_verbose() -> bool:
    return _state["verbose"]


def info(message: str) -> None:
    """A status line for people (stderr); silent under --quiet."""
    if not _state["quiet"]:
        console.print(message)


def lines_enabled() -> bool:
    """Are plain progress lines shown on stderr (not --quiet; also with --json)?"""
    return _state["lines"]


def line(message: str) -> None:
    """One plain progress line on stderr (no markup, never folded); shown unless --quiet, also with --json."""
    if _state["lines"]:
        console.print(message, markup=False, highlight=False, emoji=False, soft_wrap=True)


def warn(message: str) -> None:
    """`pc3d: warning: ...` on stderr, one line: something that may cost accuracy but does not stop the run.
    Shown unless --quiet, also with --json (a cluster log keeps it; stdout stays the JSON object)."""
    if _state["lines"]:
        console.print(f"pc3d: warning: {message}", markup=False, highlight=False, emoji=False, soft_wrap=True)


def debug(message: str) -> None:
    if _state["verbose"] and not _state["quiet"]:
        console.print(f"[dim]{message}[/dim]")


def progress_enabled() -> bool:
    return not _state["quiet"] and sys.stderr.isatty()


def new_progress(*extra_columns: object):
    """A rich Progress on the shared console: description, bar, n/total, `extra_columns`, elapsed, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra_columns,
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True)


def track(iterable: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
    """Iterate with a rich progress bar (ETA) when on a TTY and not quiet; plain iteration otherwise."""
    if not progress_enabled():
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with new_progress() as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)
