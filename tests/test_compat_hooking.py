"""Tests for the ``hooking`` module that hook scripts import (libvirt_bridge/compat).

Most tests run real hook scripts under their own interpreter with only the compat
directory on PYTHONPATH, the way the runner starts them; pure functions are tested
in-process.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

COMPAT = Path(__file__).resolve().parents[1] / "libvirt_bridge" / "compat"
XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>'

DOMAIN_XML = """<?xml version="1.0" encoding="UTF-8"?>
<domain type="kvm">
  <name>vm-ąbć</name>
  <description>Žluťoučký kůň ✓ 日本</description>
  <devices>
    <disk type="file" device="disk"><source file="/var/lib/images/ß.qcow2"/></disk>
  </devices>
</domain>
"""


def canonical(xml: str | bytes) -> str:
    """The XML without declaration and whitespace-only text, for element-tree equality."""
    if isinstance(xml, bytes):
        xml = xml.decode("utf-8")
    # canonicalize() refuses a declaration inside a str; the root element carries the tree.
    return ET.canonicalize(ET.tostring(ET.fromstring(xml), "unicode"), strip_text=True)


def run_hook(
    tmp_path: Path,
    body: str,
    pythonpath: Sequence[Path] = (COMPAT,),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``body`` as an executable Python hook script; return the finished process."""
    scripts = tmp_path / "scripts"
    scripts.mkdir(exist_ok=True)
    script = scripts / f"hook{len(list(scripts.iterdir()))}"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body), encoding="utf-8")
    script.chmod(0o700)
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "_hook_domxml", "_hook_json", "LIBVIRT_BRIDGE_RUN_DIR")
    }
    full_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    full_env["PYTHONDONTWRITEBYTECODE"] = "1"
    full_env.update(env or {})
    return subprocess.run([str(script)], env=full_env, capture_output=True, cwd=tmp_path)


def hook_value(tmp_path: Path, body: str, env: dict[str, str] | None = None) -> Any:
    """Run a hook script whose output is ``print(ascii(value))``; return that value."""
    proc = run_hook(tmp_path, body, env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    return ast.literal_eval(proc.stdout.decode("ascii"))


@pytest.fixture
def domxml(tmp_path: Path) -> Path:
    path = tmp_path / "domxml"
    path.write_bytes(DOMAIN_XML.encode("utf-8"))
    return path


@pytest.fixture
def hooking() -> Iterator[ModuleType]:
    """The module imported in-process as hook scripts import it, forgotten afterwards."""
    names = ("hooking", "vdsm", "vdsm.hook", "vdsm.hook.hooking")
    assert not any(name in sys.modules for name in names)
    sys.path.insert(0, str(COMPAT))
    try:
        import hooking

        yield hooking
    finally:
        sys.path.remove(str(COMPAT))
        for name in names:
            sys.modules.pop(name, None)


# --- importing -------------------------------------------------------------------------


def test_import_hooking_has_no_side_effects(tmp_path: Path) -> None:
    names = hook_value(
        tmp_path,
        """
        import logging
        import hooking
        assert not logging.root.handlers
        print(ascii(sorted(n for n in dir(hooking) if not n.startswith("_"))))
        """,
    )
    assert "read_domxml" in names
    assert "execCmd" in names


def test_vdsm_hook_hooking_exposes_the_same_objects(tmp_path: Path) -> None:
    found = hook_value(
        tmp_path,
        """
        import hooking
        from vdsm.hook import hooking as vdsm_hooking
        public = sorted(n for n in dir(vdsm_hooking) if not n.startswith("_"))
        same = all(getattr(vdsm_hooking, n) is getattr(hooking, n) for n in hooking.__all__)
        print(ascii((public, sorted(hooking.__all__), same, vdsm_hooking.__file__)))
        """,
    )
    public, expected, same, path = found
    assert public == expected
    assert len(expected) == 11
    assert same
    assert Path(path) == COMPAT / "vdsm" / "hook" / "hooking.py"


@pytest.mark.parametrize("real_first", [True, False], ids=["real-earlier", "real-later"])
def test_real_vdsm_package_wins_wherever_it_is_on_the_path(
    tmp_path: Path, real_first: bool
) -> None:
    real = tmp_path / "site"
    (real / "vdsm" / "hook").mkdir(parents=True)
    (real / "vdsm" / "__init__.py").write_text("")
    (real / "vdsm" / "hook" / "__init__.py").write_text("")
    (real / "vdsm" / "hook" / "hooking.py").write_text("MARK = 'real'\n")
    path = [real, COMPAT] if real_first else [COMPAT, real]

    proc = run_hook(
        tmp_path,
        """
        import hooking
        from vdsm.hook import hooking as vdsm_hooking
        print(vdsm_hooking.MARK, hasattr(hooking, "MARK"), hasattr(hooking, "tobool"))
        """,
        pythonpath=path,
    )

    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"real False True\n"


def test_runs_under_python_36() -> None:
    """Syntax, annotations and imports that any Python 3 from 3.6 on can load."""
    for path in (COMPAT / "hooking.py", COMPAT / "vdsm" / "hook" / "hooking.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 6))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                modules = []
            for module in modules:
                top = module.split(".")[0]
                assert top in sys.stdlib_module_names or top == "hooking", module
            annotation = None
            if isinstance(node, ast.arg):
                annotation = node.annotation
            elif isinstance(node, ast.FunctionDef):
                annotation = node.returns
            # 3.6 evaluates annotations when defining a function: no list[int], no X | Y.
            assert annotation is None or isinstance(
                annotation, ast.Constant | ast.Name | ast.Attribute
            ), f"{path.name}:{annotation.lineno}: quote this annotation"


# --- domain XML ------------------------------------------------------------------------


def test_read_domxml_parses_utf8_into_a_minidom_document(tmp_path: Path, domxml: Path) -> None:
    kind, xml = hook_value(
        tmp_path,
        """
        import hooking
        dom = hooking.read_domxml()
        print(ascii((type(dom).__module__ + "." + type(dom).__name__, dom.toxml())))
        """,
        env={"_hook_domxml": str(domxml)},
    )
    assert kind == "xml.dom.minidom.Document"
    assert canonical(xml) == canonical(DOMAIN_XML)
    assert "Žluťoučký kůň ✓ 日本" in xml


def test_read_domxml_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    body = """
        import hooking, xml.parsers.expat
        try:
            hooking.read_domxml()
        except {} as e:
            print(ascii(type(e).__name__))
        """
    assert hook_value(tmp_path, body.format("KeyError")) == "KeyError"
    assert (
        hook_value(
            tmp_path, body.format("xml.parsers.expat.ExpatError"), env={"_hook_domxml": str(empty)}
        )
        == "ExpatError"
    )


def test_write_domxml_then_read_domxml_round_trips(tmp_path: Path, domxml: Path) -> None:
    proc = run_hook(
        tmp_path,
        """
        import hooking
        hooking.write_domxml(hooking.read_domxml())
        """,
        env={"_hook_domxml": str(domxml)},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    written = domxml.read_bytes()
    assert written.startswith(XML_DECLARATION + b"<domain")
    assert canonical(written) == canonical(DOMAIN_XML)

    kind = hook_value(
        tmp_path,
        """
        import hooking
        print(ascii(hooking.read_domxml().documentElement.tagName))
        """,
        env={"_hook_domxml": str(domxml)},
    )
    assert kind == "domain"


def test_write_domxml_truncates_and_writes_edits(tmp_path: Path, domxml: Path) -> None:
    proc = run_hook(
        tmp_path,
        """
        import hooking
        from xml.dom import minidom
        dom = minidom.parseString("<domain><name>ø</name></domain>")
        hooking.write_domxml(dom)
        """,
        env={"_hook_domxml": str(domxml)},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert domxml.read_bytes() == XML_DECLARATION + "<domain><name>ø</name></domain>".encode()


# --- JSON ------------------------------------------------------------------------------


def test_read_json_write_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "hook.json"
    path.write_text(json.dumps({"name": "ąbć", "networks": {"net1": {"bridged": True}}}))
    proc = run_hook(
        tmp_path,
        """
        import hooking
        data = hooking.read_json()
        data["networks"]["net1"]["bridged"] = False
        data["note"] = "日本"
        hooking.write_json(data)
        """,
        env={"_hook_json": str(path)},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    expected = {"name": "ąbć", "networks": {"net1": {"bridged": False}}, "note": "日本"}
    raw = path.read_bytes()
    assert raw == json.dumps(expected).encode("ascii")
    assert json.loads(raw) == expected


# --- stderr and exit status ------------------------------------------------------------


def test_log_writes_a_line_to_stderr(tmp_path: Path) -> None:
    proc = run_hook(tmp_path, "import hooking\nhooking.log('pinned vcpus')\n")
    assert proc.returncode == 0
    assert proc.stderr == b"pinned vcpus\n"
    assert proc.stdout == b""


@pytest.mark.parametrize(("args", "rc"), [("", 2), (", 2", 2), (", 1", 1), (", 0", 0), (", 7", 7)])
def test_exit_hook(tmp_path: Path, args: str, rc: int) -> None:
    proc = run_hook(
        tmp_path, f"import hooking\nhooking.exit_hook('bad property'{args})\nprint('after')\n"
    )
    assert proc.returncode == rc
    assert proc.stderr == b"bad property\n"
    assert proc.stdout == b""


# --- tobool ----------------------------------------------------------------------------

TRUE = [True, "True", "true", "TRUE", "1", "2", "-1", " 1 "]
FALSE = [None, False, "False", "false", "0", "", "yes", "on", "off", "no", "1.0", "abc"]
# Not strings: no lower(), so the exception makes them False, even the int 1.
FALSE_NON_STRINGS: list[object] = [1, 0, 2.5, [], {}, object()]


@pytest.mark.parametrize("value", TRUE, ids=repr)
def test_tobool_true(hooking: ModuleType, value: object) -> None:
    assert hooking.tobool(value) is True


@pytest.mark.parametrize("value", FALSE + FALSE_NON_STRINGS, ids=repr)
def test_tobool_false(hooking: ModuleType, value: object) -> None:
    assert hooking.tobool(value) is False


# --- execCmd ---------------------------------------------------------------------------

CHILD = "import sys; sys.stdout.write('one\\ntwo\\n'); sys.stderr.write('e1\\ne2'); sys.exit(3)"


def test_execcmd_returns_lines(tmp_path: Path) -> None:
    result = hook_value(
        tmp_path,
        f"import hooking, sys\nprint(ascii(hooking.execCmd([sys.executable, '-c', {CHILD!r}])))\n",
    )
    assert result == (3, [b"one", b"two"], [b"e1", b"e2"])


def test_execcmd_raw_returns_bytes(tmp_path: Path) -> None:
    result = hook_value(
        tmp_path,
        "import hooking, sys\n"
        f"print(ascii(hooking.execCmd([sys.executable, '-c', {CHILD!r}], raw=True)))\n",
    )
    assert result == (3, b"one\ntwo\n", b"e1\ne2")


@pytest.mark.parametrize(
    ("data", "expected"),
    [("None", b""), ("b'x\\xffy'", b"x\xffy"), ("'ąb\\nc'", "ąb\nc".encode())],
    ids=["none", "bytes", "str"],
)
def test_execcmd_feeds_data_to_stdin(tmp_path: Path, data: str, expected: bytes) -> None:
    echo = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"
    result = hook_value(
        tmp_path,
        "import hooking, sys\n"
        f"print(ascii(hooking.execCmd([sys.executable, '-c', {echo!r}], data={data}, raw=True)))\n",
    )
    assert result == (0, expected, b"")


def test_execcmd_env_replaces_the_environment(tmp_path: Path) -> None:
    show = "import os; print(os.environ.get('ONLY'), 'PATH' in os.environ, 'XTRA' in os.environ)"
    rc, out, err = hook_value(
        tmp_path,
        "import hooking, sys\n"
        f"print(ascii(hooking.execCmd([sys.executable, '-c', {show!r}], env={{'ONLY': 'x'}})))\n",
        env={"XTRA": "1"},
    )
    assert (rc, out, err) == (0, [b"x False False"], [])


def test_execcmd_cwd(tmp_path: Path) -> None:
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    show = "import os; print(os.getcwd())"
    rc, out, _ = hook_value(
        tmp_path,
        "import hooking, sys\n"
        f"print(ascii(hooking.execCmd([sys.executable, '-c', {show!r}], cwd={str(workdir)!r})))\n",
    )
    assert rc == 0
    assert Path(out[0].decode()).resolve() == workdir.resolve()


def test_execcmd_wrappers(hooking: ModuleType) -> None:
    wrap = hooking._wrap_command
    assert wrap(["true"]) == ["true"]
    assert wrap(["true"], sudo=True) == ["sudo", "-n", "true"]
    assert wrap(["true"], nice=10) == ["nice", "-n", "10", "true"]
    assert wrap(["true"], ioclass=3) == ["ionice", "-c", "3", "true"]
    assert wrap(["true"], ioclass=2, ioclassdata=7) == ["ionice", "-c", "2", "-n", "7", "true"]
    assert wrap(["true"], setsid=True) == ["setsid", "true"]
    assert wrap(["a", "b"], True, 5, 2, 0, True) == [
        *("sudo", "-n", "setsid", "nice", "-n", "5", "ionice", "-c", "2", "-n", "0"),
        *("a", "b"),
    ]


@pytest.mark.skipif(not (shutil.which("nice") and shutil.which("setsid")), reason="no util-linux")
def test_execcmd_nice_and_setsid_really_apply(hooking: ModuleType) -> None:
    show = "import os; print(os.nice(0), os.getsid(0) == os.getpid())"
    rc, out, err = hooking.execCmd(
        [sys.executable, "-c", show], nice=5, setsid=True, resetCpuAffinity=False
    )
    assert (rc, err) == (0, [])
    assert out == [f"{min(os.nice(0) + 5, 19)} True".encode()]


def test_execcmd_logs_printable_instead_of_command(
    hooking: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    logger = logging.getLogger("test_compat_hooking")
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        rc, _, _ = hooking.execCmd(
            [sys.executable, "-c", "pass", "s3cret"],
            printable=["python", "-c", "pass", "****"],
            execCmdLogger=logger,
        )
    assert rc == 0
    assert "python -c pass ****" in caplog.text
    assert "s3cret" not in caplog.text


# --- launch flags ----------------------------------------------------------------------


@pytest.mark.parametrize("flags", [0, 1])
def test_launch_flags_dump_load_remove(tmp_path: Path, flags: int) -> None:
    run_dir = tmp_path / "run"
    env = {"LIBVIRT_BRIDGE_RUN_DIR": str(run_dir)}
    path = run_dir / "vm-1234" / "launchflags"

    dump = f"import hooking\nhooking.dump_vm_launch_flags_to_file('vm-1234', {flags})\nprint(1)\n"
    assert hook_value(tmp_path, dump, env=env) == 1
    assert path.read_text() == str(flags)

    load = "import hooking\nprint(ascii(hooking.load_vm_launch_flags_from_file('vm-1234')))\n"
    assert hook_value(tmp_path, load, env=env) == flags

    remove = "import hooking\nhooking.remove_vm_launch_flags_file('vm-1234')\nprint(1)\n"
    assert hook_value(tmp_path, remove, env=env) == 1
    assert not path.exists()
    assert hook_value(tmp_path, load, env=env) == 0
    assert hook_value(tmp_path, remove, env=env) == 1


def test_launch_flags_load_reads_the_first_line(
    hooking: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm" / "launchflags").write_text("1\n0\n")
    monkeypatch.setenv("LIBVIRT_BRIDGE_RUN_DIR", str(tmp_path))
    assert hooking.load_vm_launch_flags_from_file("vm") == 1


def test_launch_flags_run_dir_is_read_at_call_time(
    hooking: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIBVIRT_BRIDGE_RUN_DIR", raising=False)
    assert hooking._launch_flags_path("vm") == "/run/vdsm/vm/launchflags"
    monkeypatch.setenv("LIBVIRT_BRIDGE_RUN_DIR", str(tmp_path))
    hooking.dump_vm_launch_flags_to_file("vm", 1)
    assert (tmp_path / "vm" / "launchflags").read_text() == "1"


@pytest.mark.parametrize("vm_id", ["a/b", "/abs", "../x", ".", "..", ""])
def test_launch_flags_reject_unsafe_vm_ids(
    hooking: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vm_id: str
) -> None:
    monkeypatch.setenv("LIBVIRT_BRIDGE_RUN_DIR", str(tmp_path / "run"))
    for call in (
        lambda: hooking.load_vm_launch_flags_from_file(vm_id),
        lambda: hooking.dump_vm_launch_flags_to_file(vm_id, 1),
        lambda: hooking.remove_vm_launch_flags_file(vm_id),
    ):
        with pytest.raises(ValueError):
            call()
    assert not (tmp_path / "run").exists()


def test_launch_flags_slash_raises_valueerror_in_a_script(tmp_path: Path) -> None:
    proc = run_hook(
        tmp_path,
        "import hooking\nhooking.dump_vm_launch_flags_to_file('a/b', 1)\n",
        env={"LIBVIRT_BRIDGE_RUN_DIR": str(tmp_path / "run")},
    )
    assert proc.returncode == 1
    assert b"ValueError" in proc.stderr
    assert not (tmp_path / "run").exists()
