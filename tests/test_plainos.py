"""plainos's path helpers answer as os.path's, for the paths the bridge meets and odd ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from libvirt_bridge import plainos

PATHS = [
    "",
    "/",
    "//",
    "///",
    "a",
    "a/",
    "/a",
    "/a/",
    "a//b",
    "/etc/libvirt-bridge.toml",
    "/var/lib/libvirt-bridge/markers/",
    "./x.toml",
    "../x/./y/../z",
    "/../a/..",
    "//a/b/../c",
    "///a//b///",
    "a/../..",
    "../..",
    ".",
    "..",
    "/a/./b/.",
    "a/b/../../..",
]


@pytest.mark.parametrize("path", PATHS)
def test_the_path_helpers_answer_as_os_path(path: str) -> None:
    assert plainos.split(path) == os.path.split(path)
    assert plainos.basename(path) == os.path.basename(path)
    assert plainos.dirname(path) == os.path.dirname(path)
    assert plainos.normpath(path) == os.path.normpath(path)
    assert plainos.abspath(path) == os.path.abspath(path)
    for other in ("b", "/b", "", "b/", "../b"):
        assert plainos.join(path, other) == os.path.join(path, other), other
        assert plainos.join(path, other, "c") == os.path.join(path, other, "c"), other


def test_exists_and_isdir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "link").symlink_to("missing")
    for name in ("file", "link", "missing", ""):
        path = str(tmp_path / name)
        assert plainos.exists(path) == os.path.exists(path), name
        assert plainos.isdir(path) == os.path.isdir(path), name
    assert not plainos.exists("a\0b")


def test_makedirs_makes_parents_and_takes_an_existing_directory(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    plainos.makedirs(str(target), 0o700)
    plainos.makedirs(str(target), 0o700)
    assert target.is_dir() and target.stat().st_mode & 0o777 == 0o700
    # The parents it made have the modes os.makedirs gives them.
    os.makedirs(tmp_path / "o" / "b" / "c", 0o700)
    for made, reference in ((tmp_path / "a", tmp_path / "o"), (target.parent, tmp_path / "o/b")):
        assert made.stat().st_mode == reference.stat().st_mode
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        plainos.makedirs(str(tmp_path / "file"), 0o700)
    with pytest.raises(NotADirectoryError):
        plainos.makedirs(str(tmp_path / "file" / "below"), 0o700)


def test_the_environment_follows_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBVIRT_BRIDGE_PLAINOS_PROBE", "yes")
    assert plainos.environ()["LIBVIRT_BRIDGE_PLAINOS_PROBE"] == "yes"


def test_without_os_the_environment_is_the_process_s() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        f"sys.path[:0] = [{str(Path(plainos.__file__).parent.parent)!r}]\n"
        "from libvirt_bridge import plainos\n"
        "env = plainos.environ()\n"
        "print('os' in sys.modules, env['PROBE'], env['HOME'])\n"
    )
    env = {"PROBE": "caf\u00e9 \udcff", "HOME": "/h", "PATH": os.environ["PATH"]}
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        env={k: v.encode("utf-8", "surrogateescape") for k, v in env.items()},  # type: ignore[misc]
        capture_output=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode("utf-8", "surrogateescape").split() == [
        "False",
        "caf\u00e9",
        "\udcff",
        "/h",
    ]
