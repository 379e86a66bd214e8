"""Every ``--help`` reads well in an 80-column terminal: no sentence broken by a hard line break.

Typer's rich help keeps the single line breaks inside a docstring paragraph and then wraps
each of those lines again at the terminal width, so a paragraph written over several source
lines comes out as a full line, a stub ("running the"), then the rest of the sentence. The
test runs the real ``nas ... --help`` of every command and sub-command (walked from the
click command tree) with ``COLUMNS=80`` and looks for exactly that stub: a description line
that stops although the next line's first word would have fitted, without ending a sentence
or clause, while the next line carries on in lowercase.
"""

from __future__ import annotations

import re

import pytest
import typer

from nas import cli as nas_cli

WIDTH = 80
# Rich pads the description by one column on each side.
TEXT_WIDTH = WIDTH - 2
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SENTENCE_END = (".", ":", ";", "!", "?")
BULLET = re.compile(r"^(?:[-*\u2022]|\d+[.)])\s")


def _command_paths() -> list[tuple[str, ...]]:
    root = typer.main.get_command(nas_cli.app)
    paths: list[tuple[str, ...]] = []

    def walk(command, path: tuple[str, ...]) -> None:  # noqa: ANN001 - click or typer's vendored click
        paths.append(path)
        if hasattr(command, "list_commands"):  # a group (typer may vendor its own click classes)
            ctx = command.context_class(command, info_name=" ".join(("nas", *path)))
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), (*path, name))

    walk(root, ())
    return paths


COMMANDS = _command_paths()


def _description(help_text: str) -> list[str]:
    """The prose between the Usage line and the first panel (Arguments, Options, Commands)."""
    lines = ANSI.sub("", help_text).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Usage:")) + 1
    stop = next((i for i, line in enumerate(lines) if line.lstrip().startswith("\u256d")), len(lines))
    return [line.strip() for line in lines[start:stop]]


def _hard_breaks(description: list[str]) -> list[str]:
    """Pairs of lines where the first was cut short although the sentence goes on."""
    found = []
    for line, following in zip(description, description[1:]):
        if not line or not following or line.endswith(SENTENCE_END) or BULLET.match(following):
            continue
        next_word = following.split()[0]
        fits = len(line) + 1 + len(next_word) <= TEXT_WIDTH
        letters = following.lstrip("-`'\"([{")
        if fits and letters[:1].islower():
            found.append(f"{line!r} / {following!r}")
    return found


def test_the_walk_reaches_nested_sub_commands() -> None:
    assert ("search",) in COMMANDS and ("export",) in COMMANDS
    assert any(len(path) == 2 for path in COMMANDS), COMMANDS  # e.g. runs list, latency probe


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(("nas", *path)))
def test_help_reads_well_at_80_columns(nas, path: tuple[str, ...]) -> None:
    result = nas(*path, "--help", env={"COLUMNS": str(WIDTH), "TERMINAL_WIDTH": str(WIDTH)})
    assert result.returncode == 0, result.stderr
    lines = ANSI.sub("", result.stdout).splitlines()
    assert max(len(line) for line in lines) == WIDTH, "the help was not rendered at 80 columns"
    description = _description(result.stdout)
    assert any(description), result.stdout
    breaks = _hard_breaks(description)
    assert not breaks, (
        f"'nas {' '.join(path)} --help' breaks a sentence where the source has a line break "
        "(write each paragraph as one line):\n" + "\n".join(breaks)
    )
    # Option help is wrapped by rich in its column; a newline inside it would break it the same way.
    command = typer.main.get_command(nas_cli.app)
    for name in path:
        command = command.get_command(command.context_class(command), name)
    for param in command.params:
        text = getattr(param, "help", None) or ""
        assert "\n" not in text.strip(), f"help of {param.opts} has a hard line break: {text!r}"
