"""pincpu: the cpuset syntax, the XML it leaves, and what the bridge does with it at prepare."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from testing.harness import Bridge
from testing.hooks import guest_xml, run_hook, shipped

PINCPU = shipped("before_vm_start", "pincpu")


def vcpu(xml: bytes) -> etree._Element:
    element = etree.fromstring(xml).find("vcpu")
    assert element is not None
    return element


@pytest.mark.parametrize(
    ("value", "cpuset"),
    [
        ("0", "0"),
        ("1-4", "1-4"),
        ("1-4,^3,6", "1-4,^3,6"),
        (" 1-4 , ^3 ", "1-4,^3"),
        ("0,2,4-7,^5", "0,2,4-7,^5"),
        ("16383", "16383"),
    ],
)
def test_valid_values_become_the_vcpu_cpuset(tmp_path: Path, value: str, cpuset: str) -> None:
    ran = run_hook(PINCPU, guest_xml(), tmp_path, properties={"pincpu": value})
    assert ran.rc == 0, ran.stderr
    element = vcpu(ran.xml)
    assert element.get("cpuset") == cpuset
    assert (element.get("placement"), element.text) == ("static", "2")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("a", "'a' is not a CPU number"),
        ("1-", "'1-' is not a CPU number"),
        ("-1", "'-1' is not a CPU number"),
        ("1,,2", "empty item"),
        ("4-1", "'4-1': the range runs backwards"),
        ("^1-2", "'^1-2': an exclusion names one CPU"),
        ("^3", "it selects no CPU"),
        ("1-3,^1,^2,^3", "it selects no CPU"),
        ("16384", "CPU numbers go up to 16383"),
        ("1;2", "'1;2' is not a CPU number"),
    ],
)
def test_malformed_value_fails_naming_the_property(tmp_path: Path, value: str, why: str) -> None:
    xml = guest_xml(properties={"pincpu": value})
    ran = run_hook(PINCPU, xml, tmp_path, properties={"pincpu": value})
    assert ran.rc == 2
    assert ran.stderr.startswith(f"pincpu: invalid custom property pincpu={value!r}: ")
    assert why in ran.stderr
    assert "such as 0, 1-4 or 1-4,^3,6" in ran.stderr
    assert ran.xml == xml


@pytest.mark.parametrize("properties", [{}, {"pincpu": ""}, {"pincpu": "  "}, {"other": "1"}])
def test_without_a_value_the_file_is_untouched(tmp_path: Path, properties: dict[str, str]) -> None:
    xml = guest_xml(properties=properties)
    ran = run_hook(PINCPU, xml, tmp_path, properties=properties)
    assert (ran.rc, ran.stderr, ran.xml) == (0, "", xml)


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        (
            b"<vcpu placement='static'>",
            b"<vcpu cpuset='2-3'>",
            "cpuset='2-3' already; pincpu=0 is not applied",
        ),
        (b"placement='static'", b"placement='auto'", "placement='auto'"),
    ],
    ids=["an existing cpuset wins", "automatic placement is left alone"],
)
def test_a_vcpu_placed_already_is_left_alone(
    tmp_path: Path, old: bytes, new: bytes, said: str
) -> None:
    xml = guest_xml().replace(old, new)
    ran = run_hook(PINCPU, xml, tmp_path, properties={"pincpu": "0"})
    assert (ran.rc, ran.xml) == (0, xml)
    assert said in ran.stderr


def test_a_domain_without_vcpu_gets_one(tmp_path: Path) -> None:
    xml = guest_xml().replace(b"<vcpu placement='static'>2</vcpu>", b"")
    ran = run_hook(PINCPU, xml, tmp_path, properties={"pincpu": "1"})
    assert ran.rc == 0
    element = vcpu(ran.xml)
    assert (element.get("cpuset"), element.text) == ("1", "1")


def test_rest_of_the_xml_keeps_its_meaning(tmp_path: Path) -> None:
    xml = guest_xml(properties={"pincpu": "0-1", "label": "x"})
    ran = run_hook(PINCPU, xml, tmp_path, properties={"pincpu": "0-1"})
    before, after = etree.fromstring(xml), etree.fromstring(ran.xml)
    after.find("vcpu").attrib.pop("cpuset")  # type: ignore[union-attr]
    canon = etree.tostring(before, method="c14n"), etree.tostring(after, method="c14n")
    assert canon[0] == canon[1]


# -- through the bridge, as libvirt calls it ------------------------------------------------


def test_at_prepare_the_change_is_logged_as_one_libvirt_cannot_take(bridge: Bridge) -> None:
    bridge.script("before_vm_start", "50_pincpu", PINCPU.read_text())
    bridge.probe("before_vm_start", "60_probe")
    xml = guest_xml("vm1", properties={"pincpu": "0"})
    result = bridge.qemu("vm1", "prepare", "begin", xml)
    assert result.returncode == 0, result.stderr
    # The next script saw the pinned XML: edits chain.
    [record] = bridge.read_records()
    assert vcpu(str(record["xml"]).encode()).get("cpuset") == "0"
    log = bridge.log_text()
    assert "50_pincpu changed the domain XML" in log
    assert "libvirt-bridge start" in log


def test_at_prepare_a_malformed_value_refuses_the_start(bridge: Bridge) -> None:
    bridge.script("before_vm_start", "50_pincpu", PINCPU.read_text())
    result = bridge.qemu("vm1", "prepare", "begin", guest_xml("vm1", properties={"pincpu": "x"}))
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "50_pincpu" in stderr
    assert "invalid custom property pincpu='x'" in stderr
