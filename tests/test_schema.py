"""The property schema: declared names, whole-value matches, and regexes built without re."""

from __future__ import annotations

import re
import sys

import pytest

from libvirt_bridge.schema import Schema, prepare
from libvirt_bridge.screening import VM


def test_a_schema_takes_declared_names_whose_whole_value_matches() -> None:
    schema = Schema({VM: {"pincpu": ["[0-9,-]+"]}, "interface": {"extnet": ["br-[a-z]+"]}})
    assert schema.refusal(VM, "pincpu", "1-4") is None
    assert schema.refusal(VM, "pincpu", "1-4; rm -rf /") == (
        "its value does not match the schema's regular expression '[0-9,-]+'"
    )
    assert schema.refusal(VM, "pincpu", "1\n") is not None, "the whole value, not a prefix"
    assert schema.refusal(VM, "label", "x") == "not declared for the VM in the property schema"
    # Each scope has its own names.
    assert schema.refusal(VM, "extnet", "br-a") is not None
    assert schema.refusal("interface", "extnet", "br-a") is None
    assert schema.refusal("hostdev", "extnet", "br-a") == (
        "not declared for a <hostdev> in the property schema"
    )


def test_a_name_declared_twice_must_match_both() -> None:
    schema = Schema({VM: {"mode": ["[a-z]+", "fast|slow"]}})
    assert schema.refusal(VM, "mode", "fast") is None
    assert schema.refusal(VM, "mode", "medium") is not None


PATTERNS = ["[0-9,-]+", "(?P<word>[a-z]+)|", "(?i:true|false)", r"\d{2,4}", ".*", "a(?=b)b", ""]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_prepared_pattern_is_res_own(pattern: str) -> None:
    import _sre

    prepared = prepare(pattern)
    assert prepared is not None
    assert prepared[:2] == (_sre.MAGIC, sys.hexversion)
    assert _sre.compile(pattern, *prepared[2]) == re.compile(pattern)


def test_a_pattern_prepared_by_another_python_is_compiled_by_re() -> None:
    prepared = prepare("[0-9]+")
    assert prepared is not None
    stale = (prepared[0] + 1, prepared[1], prepared[2])
    schema = Schema({VM: {"n": ["[0-9]+"]}}, {"[0-9]+": stale})
    assert schema.refusal(VM, "n", "42") is None
    assert schema.refusal(VM, "n", "4x") is not None
    # Nonsense where the code should be: re compiles it instead.
    broken = (prepared[0], prepared[1], (0, [1, 2, 3], 0, {}, ()))
    schema = Schema({VM: {"n": ["[0-9]+"]}}, {"[0-9]+": broken})
    assert schema.refusal(VM, "n", "42") is None
