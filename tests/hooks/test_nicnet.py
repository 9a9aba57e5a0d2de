"""nicnet: a NIC put on the network or bridge its device property names."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from testing.hooks import run_hook, shipped

NIC = (
    b"<interface type='user'><mac address='52:54:00:00:00:01'/>"
    b"<model type='virtio'/><alias name='ua-nic1'/></interface>"
)
BRIDGED = (
    b"<interface type='bridge'><mac address='52:54:00:00:00:01'/>"
    b"<source bridge='br0'/><link state='down'/></interface>"
)


def placed(xml: str) -> tuple[str, dict[str, str], list[str]]:
    """The interface's type, its <source>'s attributes, and its children's tags."""
    root = etree.fromstring(xml.encode())
    assert root.tag == "interface"
    source = root.find("source")
    return (
        root.get("type", ""),
        dict(source.attrib) if source is not None else {},
        [str(child.tag) for child in root],
    )


@pytest.mark.parametrize("event", ["before_device_create", "before_nic_hotplug"])
@pytest.mark.parametrize(
    ("value", "kind", "name"),
    [
        ("lab", "network", "lab"),
        ("network:lab", "network", "lab"),
        ("bridge:br-ext", "bridge", "br-ext"),
    ],
)
def test_the_nic_goes_where_the_property_says(
    tmp_path: Path, event: str, value: str, kind: str, name: str
) -> None:
    ran = run_hook(shipped(event, "nicnet"), NIC, tmp_path, properties={"nicnet": value})
    assert (ran.rc, ran.stderr) == (0, "")
    assert placed(ran.xml.decode()) == (
        kind,
        {kind: name},
        ["mac", "source", "model", "alias"],
    )


def test_the_old_source_goes_and_the_rest_stays(tmp_path: Path) -> None:
    hook = shipped("before_nic_hotplug", "nicnet")
    ran = run_hook(hook, BRIDGED, tmp_path, properties={"nicnet": "network:lab"})
    assert ran.rc == 0, ran.stderr
    assert placed(ran.xml.decode()) == ("network", {"network": "lab"}, ["mac", "source", "link"])


@pytest.mark.parametrize("value", ["", "   "])
def test_no_property_leaves_the_element_alone(tmp_path: Path, value: str) -> None:
    ran = run_hook(shipped("before_nic_hotplug", "nicnet"), NIC, tmp_path, {"nicnet": value})
    assert (ran.rc, ran.xml) == (0, NIC)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("bridge:", "'' is not a bridge name"),
        ("network:a b", "'a b' is not a network name"),
        ("bridge:a-very-long-bridge", "'a-very-long-bridge': a Linux bridge's name has at most"),
        ("-x", "'-x' is not a network name"),
    ],
)
def test_a_malformed_value_stops_the_event(tmp_path: Path, value: str, why: str) -> None:
    ran = run_hook(shipped("before_nic_hotplug", "nicnet"), NIC, tmp_path, {"nicnet": value})
    assert ran.rc == 2
    assert ran.stderr.startswith(f"nicnet: invalid custom property nicnet={value!r}: {why}")
    assert ran.xml == NIC
