"""Write docs/cli.md, the command-line reference, from the CLI's own argparse parsers.

    .venv/bin/python scripts/cli_reference.py           # regenerate docs/cli.md
    .venv/bin/python scripts/cli_reference.py --check   # exit 1 when docs/cli.md is stale

Every parser of ``libvirt_bridge.cli.build_parser()`` (the top one, each subcommand, and
the subcommands of those) gets a heading and its ``--help`` text, formatted for a terminal
of a fixed width so that the file does not depend on who generates it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from libvirt_bridge.cli import build_parser

CLI_MD = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
COMMAND = ".venv/bin/python scripts/cli_reference.py"
WIDTH = "100"

HEADER = f"""\
# Command-line reference

Every command's `--help`, generated from the CLI's argparse parsers; do not edit it by
hand. `tests/test_docs.py` fails when it is out of date; regenerate it with
`{COMMAND}`.
What the commands are for and how they fit together: [operators.md](operators.md).
"""


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The subcommands of ``parser``, in the order they were added.

    argparse has no public way to list them: the one private attribute read here is the
    parser's list of actions, in which a subparsers action is the one whose ``choices``
    maps names to parsers. An alias maps to the same parser and is listed once.
    """
    seen: set[int] = set()
    for action in parser._actions:
        choices = action.choices
        if not isinstance(choices, dict):
            continue
        for name, sub in choices.items():
            if isinstance(sub, argparse.ArgumentParser) and id(sub) not in seen:
                seen.add(id(sub))
                yield name, sub


def _sections(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    yield " ".join(path), parser.format_help()
    for name, sub in _subcommands(parser):
        yield from _sections(sub, (*path, name))


def render() -> str:
    """docs/cli.md as it should be now."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH  # argparse wraps help to the terminal's width
    try:
        parser = build_parser()
        sections = list(_sections(parser, (parser.prog,)))
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before
    parts = [HEADER]
    for title, text in sections:
        parts.append(f"## {title}\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when docs/cli.md is stale"
    )
    args = parser.parse_args(argv)
    text = render()
    current = CLI_MD.read_text() if CLI_MD.exists() else None
    if args.check:
        if current != text:
            print(f"{CLI_MD.name} is out of date: run {COMMAND}", file=sys.stderr)
            return 1
        print(f"{CLI_MD.name} is up to date")
        return 0
    if current == text:
        print(f"{CLI_MD.name} is up to date")
        return 0
    CLI_MD.parent.mkdir(exist_ok=True)
    CLI_MD.write_text(text)
    print(f"wrote {CLI_MD.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
