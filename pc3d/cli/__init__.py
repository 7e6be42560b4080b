"""The `pc3d` command: Typer app, subcommand registration and the one error-reporting path.

Subcommand modules import only typer/pydantic/yaml at load time; model code is imported
when a command actually runs, so `pc3d --help` and shell completion stay fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from pc3d import __version__
from pc3d.cli import data as data_cli
from pc3d.cli.catalog import presets_command
from pc3d.cli.evaluate import eval_command
from pc3d.cli.inference import detect, pseudolabel, segment
from pc3d.cli.info import info_command
from pc3d.cli.plot import plot_command
from pc3d.cli.predict import predict_command
from pc3d.cli.resume import rewrite_resume_argv
from pc3d.cli.training import finetune, pretrain
from pc3d.errors import EXIT_BAD_INPUT, EXIT_FAILURE, Pc3dError

app = typer.Typer(
    name="pc3d",
    help="Point-cloud deep learning from the command line: pretrain, finetune, pseudolabel, segment, "
    "detect, eval, plot. Runs on the embedded synthetic data when no dataset is given. `pc3d presets` lists the "
    "presets, `pc3d info` prints what a bug report needs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pc3d {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """pc3d: 3D point-cloud deep learning."""


app.command("pretrain")(pretrain)
app.command("finetune")(finetune)
app.command("pseudolabel")(pseudolabel)
app.command("segment")(segment)
app.command("detect")(detect)
app.command("eval")(eval_command)
app.command("plot")(plot_command)
app.command("predict")(predict_command)
app.command("presets")(presets_command)
app.command("info")(info_command)
app.add_typer(data_cli.app, name="data")


def _fail(message: str, code: int) -> int:
    first = " ".join(str(message).split())  # one line, always
    sys.stderr.write(f"pc3d: error: {first}\n")
    return code


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: run the app, turning every failure into one stderr line + exit code."""
    command = typer.main.get_command(app)
    args = rewrite_resume_argv(list(sys.argv[1:] if argv is None else argv))
    try:
        result = command.main(args=args, prog_name="pc3d", standalone_mode=False)
    except Pc3dError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except MemoryError:
        return _fail("out of memory", EXIT_FAILURE)
    except Exception as exc:
        # click's exceptions (typer may vendor click, so they are recognised by shape)
        kind = type(exc).__name__
        if kind == "NoArgsIsHelpError":
            return 0
        if kind == "Abort":
            return _fail("aborted", 130)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # bad option/argument/value
            return _fail(exc.format_message(), EXIT_BAD_INPUT)
        # a bug: one line for users, the traceback with PC3D_DEBUG=1
        if os.environ.get("PC3D_DEBUG"):
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} (set PC3D_DEBUG=1 for a traceback)",
                     EXIT_FAILURE)
    # typer.Exit (e.g. --version) comes back as its exit code in non-standalone mode
    return result if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(main())
