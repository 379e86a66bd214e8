"""The ``nas`` command: one entry point, sub-commands registered from small modules.

Bad input of any kind ends as one line on stderr and exit code 2 (see :func:`main`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click
import typer

from nas import __version__
from nas.errors import UserError
from nas.interrupts import catching_interrupts, forget_handled_interrupt, interrupt_received

app = typer.Typer(
    name="nas",
    help="Search ShuffleNet v1 architectures under FLOP and latency budgets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"shufflenas {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool | None = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """shufflenas: neural architecture search for ShuffleNet v1 (Zhang et al., CVPR 2018)."""


def _register() -> None:
    """Attach every sub-command module (each keeps its heavy imports inside its commands)."""
    from nas.commands import compare, dashboard, export, final, presets, proxy_check, runs, search

    presets.register(app)
    search.register(app)
    proxy_check.register(app)
    compare.register(app)
    final.register(app)
    runs.register(app)
    export.register(app)
    dashboard.register(app)
    from nas.commands import latency

    latency.register(app)


_register()


def _click_errors() -> tuple[type[BaseException], ...]:
    """Usage-error classes of click and of the click copy that newer typer vendors."""
    classes: list[type[BaseException]] = [click.UsageError]
    try:
        from typer._click import exceptions as vendored
    except ImportError:  # typer without a vendored click
        pass
    else:
        classes.append(vendored.UsageError)
    return tuple(classes)


def _abort_errors() -> tuple[type[BaseException], ...]:
    return (click.exceptions.Abort, typer.Abort, KeyboardInterrupt)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; bad input becomes ``nas: error: ...`` and exit code 2, Ctrl-C exit code 130."""
    from nas.engine.outcome import EXIT_INTERRUPTED

    with catching_interrupts():
        code = _dispatch(argv)
    if code == 0 and interrupt_received():  # a command that caught the interrupt did not finish its job
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        forget_handled_interrupt()
    return code


def _dispatch(argv: Sequence[str] | None) -> int:
    command = typer.main.get_command(app)
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        result = command.main(args=args, prog_name="nas", standalone_mode=False)
    except _click_errors() as error:
        ctx = getattr(error, "ctx", None)
        if type(error).__name__ == "NoArgsIsHelpError" and ctx is not None:
            click.echo(ctx.get_help())
            return 2
        path = ctx.command_path if ctx is not None else "nas"
        format_message = getattr(error, "format_message", None)  # click's, or typer's vendored copy's
        message = format_message() if callable(format_message) else str(error)
        click.echo(f"nas: error: {message} (see '{path} --help')", err=True)
        return 2
    except UserError as error:
        click.echo(f"nas: error: {error}", err=True)
        return 2
    except _abort_errors():
        click.echo("nas: interrupted", err=True)
        return 130
    except (typer.Exit, click.exceptions.Exit) as done:
        return int(getattr(done, "exit_code", 0) or 0)
    return result if isinstance(result, int) else 0


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
