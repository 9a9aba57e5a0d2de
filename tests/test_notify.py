"""The webhook: failed runs (or all) POSTed to a local server by a detached sender."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_bridge import config
from testing.harness import Bridge, domain_xml

FAIL = "import sys; sys.stderr.write('no hugepages left\\n'); sys.exit(1)"


class Server:
    """An HTTP server on 127.0.0.1 that records each POST; ``refuse`` first answers 500."""

    def __init__(self, refuse: int = 0) -> None:
        self.posts: list[dict[str, object]] = []
        self.refuse = refuse
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.refuse:
                    outer.refuse -= 1
                    self.send_response(500)
                else:
                    outer.posts.append(json.loads(body))
                    assert self.headers["Content-Type"] == "application/json"
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, count: int, timeout: float = 20) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while len(self.posts) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # and nothing more comes
        return self.posts


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.httpd.shutdown()


def test_a_failed_run_is_posted_once_and_an_ok_one_is_not(bridge: Bridge, server: Server) -> None:
    bridge.write_config(notify_url=server.url)
    bridge.probe("before_vm_start", "10_ok")
    bridge.probe("before_vm_start", "20_fail", tail=FAIL)
    started = time.monotonic()
    assert bridge.qemu("vm1", "prepare", "begin", domain_xml("vm1")).returncode == 1
    # The hook call did not wait for the server: it answered, the sender posts later.
    assert time.monotonic() - started < 10
    [post] = server.wait(1)
    assert (post["domain"], post["event"], post["rc"], post["outcome"]) == (
        "vm1",
        "before_vm_start",
        1,
        "vetoed",
    )
    assert str(post["script"]).endswith("/20_fail") and post["stderr"] == "no hugepages left"
    # What was sent left the outbox.
    deadline = time.monotonic() + 10
    while list((bridge.state / "notify").glob("*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list((bridge.state / "notify").glob("*.jsonl"))


def test_notify_all_posts_every_run(bridge: Bridge, server: Server) -> None:
    bridge.write_config(notify_url=server.url, notify="all")
    bridge.probe("before_vm_start", "10_ok")
    bridge.probe("before_vm_start", "20_ok")
    assert bridge.qemu("vm1", "prepare", "begin", domain_xml("vm1")).returncode == 0
    posts = server.wait(2)
    assert sorted(Path(str(p["script"])).name for p in posts) == ["10_ok", "20_ok"]


def test_a_server_error_is_retried(bridge: Bridge) -> None:
    flaky = Server(refuse=1)
    try:
        bridge.write_config(notify_url=flaky.url)
        bridge.probe("before_vm_start", "20_fail", tail=FAIL)
        bridge.qemu("vm1", "prepare", "begin", domain_xml("vm1"))
        assert len(flaky.wait(1)) == 1 and flaky.refuse == 0
    finally:
        flaky.httpd.shutdown()


def test_a_server_that_never_answers_is_given_up_on_and_logged(bridge: Bridge) -> None:
    gone = Server()
    url = gone.url
    gone.httpd.shutdown()
    gone.httpd.server_close()
    bridge.write_config(notify_url=url)
    bridge.probe("before_vm_start", "20_fail", tail=FAIL)
    bridge.qemu("vm1", "prepare", "begin", domain_xml("vm1"))
    deadline = time.monotonic() + 20
    while "notify:" not in bridge.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"notify: {url} did not take a record after 3 tries" in bridge.log_text()
    assert not list((bridge.state / "notify").glob("*.jsonl"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('notify_url = "ftp://x"', "notify_url must be an http:// or https:// URL, or empty"),
        ('notify = "some"', "notify must be 'failed' or 'all', not 'some'"),
    ],
)
def test_bad_notify_settings_are_refused(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(value + "\n")
    with pytest.raises(config.ConfigError, match=message):
        config.read(str(path))
