"""discovery's rules for root's paths: directories on the way, sticky ones, symlinks."""

from __future__ import annotations

import os
from pathlib import Path

from libvirt_bridge import discovery


def tree(tmp_path: Path) -> Path:
    """tmp_path/a/b/script, every directory root's (0755)."""
    b = tmp_path / "a" / "b"
    b.mkdir(parents=True)
    (b / "script").write_text("#!/bin/sh\n")
    for d in (tmp_path, tmp_path / "a", b):
        d.chmod(0o755)
    return b / "script"


def problem(path: Path, inside: bool = False) -> str | None:
    found = discovery.path_problem(str(path), inside=inside)
    return None if found is None else found.describe()


def test_a_path_of_roots_directories_is_roots(tmp_path: Path) -> None:
    script = tree(tmp_path)
    assert problem(script) is None
    assert problem(script.parent, inside=True) is None


def test_a_directory_others_may_write_on_the_way_is_named(tmp_path: Path) -> None:
    script = tree(tmp_path)
    a = tmp_path / "a"
    a.chmod(0o777)
    assert problem(script) == (
        f"the directory {a} is writable by group or others without the sticky bit (mode 0777)"
    )
    a.chmod(0o775)
    assert problem(script) is not None
    a.chmod(0o755)
    os.chown(a, 65534, 65534)
    assert problem(script) == f"the directory {a} is owned by uid 65534, not by root"


def test_the_directory_itself_counts_only_when_its_entries_are_at_stake(tmp_path: Path) -> None:
    script = tree(tmp_path)
    script.parent.chmod(0o777)
    assert problem(script.parent) is None
    assert problem(script.parent, inside=True) is not None
    assert problem(script) is not None


def test_a_sticky_directory_is_roots_but_not_the_symlinks_others_put_there(
    tmp_path: Path,
) -> None:
    script = tree(tmp_path)
    shared = script.parent
    shared.chmod(0o1777)
    assert problem(script) is None
    planted = shared / "planted"
    planted.symlink_to("/bin/true")
    assert problem(planted) is None  # root's own symlink
    os.lchown(planted, 65534, 65534)
    assert problem(planted) == f"the symlink {planted} is owned by uid 65534, not by root"


def test_a_symlink_is_judged_by_its_target(tmp_path: Path) -> None:
    script = tree(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    target = outside / "real"
    target.write_text("#!/bin/sh\n")
    link = script.parent / "link"
    link.symlink_to(target)
    assert problem(link) is None
    outside.chmod(0o777)
    assert problem(link) == (
        f"the directory {outside} is writable by group or others without the sticky bit (mode 0777)"
    )


def test_a_symlink_through_a_directory_others_control_is_named(tmp_path: Path) -> None:
    # link -> hop/next -> /bin/true: whoever may write hop may point next elsewhere.
    script = tree(tmp_path)
    hop = tmp_path / "hop"
    hop.mkdir(mode=0o755)
    (hop / "next").symlink_to("/bin/true")
    link = script.parent / "link"
    link.symlink_to("../../hop/next")  # relative, through ..
    assert problem(link) is None
    hop.chmod(0o777)
    assert problem(link) is not None


def test_a_symlink_loop_or_a_dangling_one_is_left_to_whoever_opens_it(tmp_path: Path) -> None:
    script = tree(tmp_path)
    loop = script.parent / "loop"
    loop.symlink_to(loop)
    assert problem(loop) is None
    dangling = script.parent / "dangling"
    dangling.symlink_to(tmp_path / "nothing")
    assert problem(dangling) is None


def test_file_problem_judges_owner_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("")
    path.chmod(0o644)
    assert discovery.file_problem(path.stat()) is None
    path.chmod(0o664)
    assert discovery.file_problem(path.stat()) == "writable by group or others (mode 0664)"
    path.chmod(0o644)
    os.chown(path, 65534, 0)
    assert discovery.file_problem(path.stat()) == "owned by uid 65534, not by root"
