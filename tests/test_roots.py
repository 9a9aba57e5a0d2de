"""The cached roots' names and pruning (libvirt_bridge_lab.sandbox.roots), without building one."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from libvirt_bridge_lab.sandbox import roots


def test_a_roots_path_names_its_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = roots.recipe("11.3")
    path = roots.root_path("11.3", str(tmp_path))
    assert path == str(tmp_path / f"libvirt-11.3-{wanted.digest()}")
    # Another recipe (one more daemon built) lives elsewhere: built beside, never over.
    changed = dataclasses.replace(wanted, daemons=(*wanted.daemons, "virtstoraged"))
    monkeypatch.setitem(roots.RECIPES, "11.3", changed)
    assert roots.root_path("11.3", str(tmp_path)) != path


def test_the_recipe_builds_virtqemud_and_another_modular_daemon() -> None:
    wanted = roots.recipe("11.3")
    assert wanted.daemons[0] == "virtqemud" and len(wanted.daemons) > 1
    hook = roots._daemons_hook(wanted, "/src/libvirt_11.3.0.orig.tar.xz", "/work")
    for daemon in wanted.daemons:
        assert f'"$root/usr/sbin/{daemon}"' in hook
    assert "-Ddriver_qemu=enabled" in hook and "--sysconfdir=/etc" in hook


def _finished(path: Path, digest: str) -> None:
    path.mkdir()
    (path / roots.MARK).write_text(json.dumps({"digest": digest}))


def test_prune_removes_old_roots_no_sandbox_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = Path(roots.root_path("11.3", str(tmp_path)))
    _finished(current, roots.recipe("11.3").digest())
    legacy = tmp_path / "libvirt-11.3"  # before root names held the digest
    used = tmp_path / "libvirt-11.3-0123456789abcdef"
    other = tmp_path / "libvirt-9.9-0123456789abcdef"
    for path in (legacy, used, other):
        _finished(path, "0123456789abcdef")
    monkeypatch.setattr(roots, "in_use", lambda path: path == str(used))
    removed, kept = roots.prune("11.3", str(tmp_path))
    assert removed == [str(legacy)] and kept == [str(used)]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted(
        [current.name, used.name, other.name]
    )
    assert roots.find("11.3", str(tmp_path)) == str(current)


@pytest.mark.libvirt  # needs root: a mount in a private mount namespace
def test_a_root_mounted_in_another_namespace_is_in_use(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (unshare --mount)", pytrace=False)
    root = tmp_path / "libvirt-11.3-0123456789abcdef"
    view = tmp_path / "view"
    root.mkdir()
    view.mkdir()
    assert not roots.in_use(str(root))
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -n --bind {root} {view} && echo ready && exec sleep 60"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        assert roots.in_use(str(root))
        assert not roots.in_use(str(root)[:-1])  # a prefix of the path is another path
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 5
    while roots.in_use(str(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not roots.in_use(str(root))
