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

from rich.console import Console

T = TypeVar("T")

console = Console(stderr=True, highlight=False)
_state = {"quiet": False, "verbose": False}


def set_verbosity(quiet: bool = False, verbose: bool = False) -> None:
    _state["quiet"] = quiet
    _state["verbose"] = verbose
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
