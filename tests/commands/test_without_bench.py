"""demo and lab where the bench is not installed (a host's package): they say where it is."""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

import pytest

from libvirt_bridge import cli


def test_the_bench_offers_demo_and_lab_where_it_is_installed() -> None:
    text = cli.build_parser().format_help()
    assert "show the bridge at work" in text
    assert "not installed here" not in text


class NoBench(importlib.abc.MetaPathFinder):
    """Imports as where the bench is not installed."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.split(".")[0] == "libvirt_bridge_lab":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@pytest.mark.parametrize("command", ["demo", "lab"])
def test_without_the_bench_they_say_where_it_is(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in sys.modules if n.split(".")[0] == "libvirt_bridge_lab"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [NoBench(), *sys.meta_path])

    assert "(not installed here)" in cli.build_parser().format_help()
    assert cli.main([command, "up", "--libvirt", "11.3-modular"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"libvirt-bridge {command}: error: the {command} comes with libvirt-bridge's bench "
        "(libvirt_bridge_lab), which is not installed here"
    )
    assert f"sudo bash scripts/setup.sh && sudo .venv/bin/libvirt-bridge {command}" in err
