"""Shared terminal output: one rich console on stderr, quiet/verbose switches, progress bars.

stdout is reserved for results (`--json` prints exactly one JSON object there), so all
human-facing chatter goes to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console

T = TypeVar("T")

console = Console(stderr=True, highlight=False)
_state = {"quiet": False, "verbose": False}


def set_verbosity(quiet: bool = False, verbose: bool = False) -> None:
    _state["quiet"] = quiet
    _state["verbose"] = verbose


def is_quiet() -> bool:
    return _state["quiet"]


def is_verbose() -> bool:
    return _state["verbose"]


def info(message: str) -> None:
    """A status line for people (stderr); silent under --quiet."""
    if not _state["quiet"]:
        console.print(message)


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
