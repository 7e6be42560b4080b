"""The one error-reporting path of pc3d.

Library code raises these; the CLI turns them into one line on stderr and an exit code:
0 ok, 1 runtime failure, 2 bad input or usage. Nothing else ever prints a traceback to a user.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class Pc3dError(Exception):
    """Base class: a failure a user can act on, reported as one line."""

    exit_code = EXIT_FAILURE


class InputError(Pc3dError):
    """A file, preset, option or argument the user gave is missing or malformed (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(InputError):
    """A preset or `--set` override does not validate (exit 2)."""


class NotBuiltError(InputError):
    """A command or method that pc3d plans but does not implement yet (exit 2)."""


class RuntimeFailure(Pc3dError):
    """Something went wrong while running (exit 1): divergence, out of memory, a failed worker."""
