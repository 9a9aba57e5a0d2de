"""Write docs/cli.md, the command-line reference, from the CLI's own argparse parsers.

    .venv/bin/python scripts/cli_reference.py           # regenerate docs/cli.md
    .venv/bin/python scripts/cli_reference.py --check   # exit 1 when docs/cli.md is stale
    python3 scripts/cli_reference.py --man FILE         # write the man page (the .deb's)

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

from libvirt_bridge import __version__
from libvirt_bridge.cli import build_parser

CLI_MD = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
COMMAND = ".venv/bin/python scripts/cli_reference.py"
WIDTH = "100"
MAN_WIDTH = "72"  # with man's indent of 7, within 80 columns

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


def help_sections(width: str) -> list[tuple[str, str]]:
    """(command, its --help) for every parser, wrapped for a terminal of ``width``."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = width  # argparse wraps help to the terminal's width
    try:
        parser = build_parser()
        return list(_sections(parser, (parser.prog,)))
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def render() -> str:
    """docs/cli.md as it should be now."""
    sections = help_sections(WIDTH)
    parts = [HEADER]
    for title, text in sections:
        parts.append(f"## {title}\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


def _roff(text: str) -> str:
    """``text`` as literal roff lines (for a no-fill block)."""
    lines = []
    for line in text.rstrip().splitlines():
        line = line.replace("\\", "\\e").replace("-", "\\-")
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


MAN_FILES = """\
.SH FILES
.TP
.I /etc/libvirt\\-bridge.toml
the configuration (another with \\-\\-config or $LIBVIRT_BRIDGE_CONFIG)
.TP
.I /etc/libvirt/hooks/qemu\\fR, \\fI/etc/libvirt/hooks/daemon
the launchers libvirt runs, written by \\fBlibvirt\\-bridge install\\fR
.TP
.I /etc/libvirt/hooks/vdsm.d/EVENT/
the hook scripts of each VDSM event
.TP
.I /var/log/libvirt/libvirt\\-bridge.log
one line per script run
.SH SEE ALSO
.BR virsh (1),
.BR libvirtd (8);
the documentation in
.IR /usr/share/doc/libvirt\\-bridge/ .
"""


def render_man() -> str:
    """The man page libvirt-bridge(8) (an administration command): every --help, no-fill."""
    (_, top), *commands = help_sections(MAN_WIDTH)
    parts = [
        f'.TH LIBVIRT\\-BRIDGE 8 "" "libvirt\\-bridge {__version__}" "System Administration"',
        ".SH NAME",
        "libvirt\\-bridge \\- run VDSM\\-style hook directories on plain libvirt/KVM hosts",
        ".SH SYNOPSIS",
        ".B libvirt\\-bridge",
        ".I COMMAND",
        ".RI [ OPTIONS ]",
        ".SH DESCRIPTION",
        ".nf",
        _roff(top),
        ".fi",
        ".SH COMMANDS",
    ]
    for title, text in commands:
        parts += [f'.SS "{_roff(title)}"', ".nf", _roff(text), ".fi"]
    return "\n".join(parts) + "\n" + MAN_FILES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when docs/cli.md is stale"
    )
    parser.add_argument("--man", metavar="FILE", help="write the man page to FILE instead")
    args = parser.parse_args(argv)
    if args.man:
        Path(args.man).write_text(render_man())
        return 0
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
