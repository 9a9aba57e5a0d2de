"""The record of every script run: written by every path that runs scripts, read by
``history``, bounded, and counted in the Prometheus file."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from libvirt_bridge import config, history, metrics, reporting
from libvirt_bridge.records import RunRecord
from testing.harness import Bridge, domain_xml, uuid_of
from testing.hosts import run

FAIL = "import sys; sys.stderr.write('line 1\\nno hugepages left\\n'); sys.exit(1)"


def history_json(bridge: Bridge, *args: str) -> list[dict[str, object]]:
    status, out, err = run("history", "--config", str(bridge.config), "--json", *args)
    assert (status, err) == (0, "")
    return [json.loads(line) for line in out.splitlines()]


def test_a_hook_call_and_its_async_event_leave_one_record_per_script(bridge: Bridge) -> None:
    bridge.probe("before_vm_start", "10_ok")
    bridge.probe("before_vm_start", "20_fail", tail=FAIL)
    bridge.probe("after_vm_start", "10_ok")
    xml = domain_xml("vm1")
    assert bridge.qemu("vm1", "prepare", "begin", xml).returncode == 1  # vetoed
    assert bridge.qemu("vm1", "started", "begin", xml).returncode == 0
    bridge.wait_async(3)
    records = history_json(bridge)
    assert [(r["event"], Path(str(r["script"])).name, r["rc"], r["outcome"]) for r in records] == [
        ("before_vm_start", "10_ok", 0, "ok"),
        ("before_vm_start", "20_fail", 1, "vetoed"),
        ("after_vm_start", "10_ok", 0, "ok"),
    ]
    for record in records:
        assert (record["domain"], record["uuid"]) == ("vm1", uuid_of(xml))
        assert isinstance(record["duration"], float) and 0 < record["duration"] < 20
        assert str(record["time"]).endswith("Z") and record["xml_changed"] is False
    assert [r["source"] for r in records] == [
        "qemu prepare begin (fresh)",
        "qemu prepare begin (fresh)",
        "qemu started begin (fresh)",
    ]
    assert records[1]["stderr"] == "line 1\nno hugepages left"
    assert records[0]["stderr"] == ""
    # Filters: by domain, event, failure.
    assert len(history_json(bridge, "vm1", "--event", "before_vm_start")) == 2
    assert [r["script"] for r in history_json(bridge, "--failed")] == [records[1]["script"]]
    assert history_json(bridge, "vm2") == []
    assert len(history_json(bridge, uuid_of(xml))) == 3


def test_the_table_and_the_filters_say_what_they_found(bridge: Bridge) -> None:
    bridge.probe("before_vm_start", "10_ok")
    assert bridge.qemu("vm1", "prepare", "begin", domain_xml("vm1")).returncode == 0
    status, out, _ = run("history", "--config", str(bridge.config))
    lines = out.splitlines()
    assert status == 0 and lines[0].split() == list(
        ("time", "domain", "event", "script", "rc", "outcome", "duration")
    )
    assert lines[1].split()[2:7] == ["vm1", "before_vm_start", "10_ok", "0", "ok"]
    status, out, _ = run("history", "--config", str(bridge.config), "--since", "1h")
    assert status == 0 and len(out.splitlines()) == 2
    status, out, _ = run("history", "--config", str(bridge.config), "--since", "2999-01-01")
    assert status == 0 and "no run on record" in out


@pytest.mark.parametrize("since", ["yesterdayish", "15 minutes", "2026-13-01", "-5m"])
def test_a_bad_since_is_a_usage_error_naming_it(bridge: Bridge, since: str) -> None:
    status, out, err = run("history", "--config", str(bridge.config), f"--since={since}")
    assert (status, out) == (2, "")
    assert err == (
        f"libvirt-bridge history: error: --since {since!r} is not a time: give a date and "
        "time (2026-12-07T08:00) or a time ago (90s, 15m, 2h, 3d)\n"
    )


def test_a_verb_and_a_trial_are_named_as_the_source() -> None:
    from libvirt_bridge import mapping

    pause = mapping.find_row("verb", "pause", "-", mapping.ANY)
    assert pause is not None and pause.source == "libvirt-bridge pause"
    suspended = next(r for r in mapping.HOOK_TABLE if r.event == "after_vm_pause")
    assert suspended.source.startswith("event SUSPENDED/")


def record(n: int = 0, **fields: object) -> RunRecord:
    values: dict[str, object] = dict(
        time=1_765_000_000.25 + n,
        domain="vm1",
        uuid="u",
        event="before_vm_start",
        source="qemu prepare begin (fresh)",
        script=f"/h/before_vm_start/{n:02d}_x",
        rc=0,
        outcome="ok",
        duration=0.012,
        xml_changed=False,
        stderr="",
    )
    values.update(fields)
    return RunRecord(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", ['quote " backslash \\ newline \n tab \t bell \x07 del \x7f é ✓', "", "\ud800"]
)
def test_a_record_is_one_line_of_json_that_json_reads_back(text: str) -> None:
    line = record(domain=text, stderr=text, rc=None).to_json()
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["domain"] == text and parsed["rc"] is None
    assert parsed["time"] == "2025-12-06T05:46:40.250Z"
    assert list(parsed) == [
        "time",
        "domain",
        "uuid",
        "event",
        "source",
        "script",
        "rc",
        "outcome",
        "duration",
        "xml_changed",
        "stderr",
    ]


def cfg(tmp_path: Path, **values: object) -> config.Config:
    path = tmp_path / "bridge.toml"
    lines = [
        f'state_dir = "{tmp_path / "state"}"',
        *(f"{k} = {json.dumps(v)}" for k, v in values.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return config.read(str(path))


def test_the_store_is_bounded_and_drops_the_oldest_first(tmp_path: Path) -> None:
    store = cfg(tmp_path, history_size=4)  # KiB: rotates past 2 KiB
    size = len(record(0, domain="vm000").to_json()) + 1
    for n in range(200):
        history.append(store, [record(n, domain=f"vm{n:03d}")])
    kept = [int(str(r["domain"])[2:]) for r in history.read(store.state_dir)]
    on_disk = sum(p.stat().st_size for p in (tmp_path / "state" / "history").iterdir())
    assert on_disk <= 4 * 1024 + size
    # The newest, in order, with nothing missing between; the oldest gone.
    assert kept == list(range(kept[0], 200))
    assert 2048 // size <= len(kept) <= 4096 // size + 1


def test_no_history_is_kept_with_a_size_of_zero(tmp_path: Path) -> None:
    store = cfg(tmp_path, history_size=0)
    history.append(store, [record()])
    assert list(history.read(store.state_dir)) == []
    assert not (tmp_path / "state" / "history").exists()


def test_concurrent_writers_never_interleave_or_lose_a_record(tmp_path: Path) -> None:
    store = cfg(tmp_path, history_size=100_000)
    code = (
        "import sys; from libvirt_bridge import config, history; "
        "from tests.test_history import record; "
        f"c = config.read({str(tmp_path / 'bridge.toml')!r}); "
        "[history.append(c, [record(n, domain=f'p{sys.argv[1]}-{n}', stderr='x' * 300)]) "
        "for n in range(200)]"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", code, str(i)], cwd=Path(__file__).parents[1])
        for i in range(4)
    ]
    assert [w.wait(timeout=60) for w in writers] == [0] * 4
    kept = list(history.read(store.state_dir))
    assert len(kept) == 800
    assert {str(r["domain"]) for r in kept} == {f"p{i}-{n}" for i in range(4) for n in range(200)}


def test_a_line_a_crash_cut_short_is_skipped(tmp_path: Path) -> None:
    store = cfg(tmp_path)
    history.append(store, [record(1)])
    path = tmp_path / "state" / "history" / history.CURRENT
    with open(path, "a") as f:
        f.write('{"time": "2026-')
    # The next record lands on the cut line's end: that line is lost, not the ones after.
    history.append(store, [record(2)])
    history.append(store, [record(3)])
    kept = [Path(str(r["script"])).name for r in history.read(store.state_dir)]
    assert kept == ["01_x", "03_x"]


def test_follow_sees_what_comes_and_survives_a_rotation(tmp_path: Path) -> None:
    store = cfg(tmp_path, history_size=2)
    history.append(store, [record(0)])
    follower = history.Follower(store.state_dir)
    assert follower.new() == []
    seen: list[str] = []
    for n in range(1, 30):
        history.append(store, [record(n)])
        seen += [Path(str(r["script"])).name for r in follower.new()]
    assert seen == [f"{n:02d}_x" for n in range(1, 30)]
    assert (tmp_path / "state" / "history" / history.PREVIOUS).exists()  # it did rotate


def test_the_metrics_file_is_prometheus_text_and_adds_up_across_processes(
    tmp_path: Path,
) -> None:
    prom = tmp_path / "textfile" / "libvirt-bridge.prom"
    prom.parent.mkdir()
    store = cfg(tmp_path, metrics_file=str(prom))
    threads = [
        threading.Thread(target=metrics.count, args=(store, [record(n, outcome=o, duration=d)]))
        for n, (o, d) in enumerate([("ok", 0.004), ("ok", 0.3), ("vetoed", 2.0)] * 10)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    runs = {
        (s.labels["event"], s.labels["outcome"]): s.value
        for s in families["libvirt_bridge_script_runs"].samples
    }
    assert runs == {("before_vm_start", "ok"): 20, ("before_vm_start", "vetoed"): 10}
    buckets = {
        s.labels["le"]: s.value
        for s in families["libvirt_bridge_script_duration_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert (buckets["0.01"], buckets["0.5"], buckets["2.5"], buckets["+Inf"]) == (10, 20, 30, 30)
    [last] = families["libvirt_bridge_last_failure_timestamp_seconds"].samples
    assert last.value == pytest.approx(record(29).time, abs=0.01)


def test_metrics_through_separate_hook_calls(bridge: Bridge, tmp_path: Path) -> None:
    prom = tmp_path / "node.prom"
    bridge.write_config(metrics_file=str(prom))
    bridge.probe("before_vm_start", "10_ok")
    for _ in range(3):
        assert bridge.qemu("vm1", "prepare", "begin", domain_xml("vm1")).returncode == 0
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    [sample] = families["libvirt_bridge_script_runs"].samples
    assert (sample.labels, sample.value) == ({"event": "before_vm_start", "outcome": "ok"}, 3)


def test_a_sink_that_fails_is_logged_and_the_run_goes_on(bridge: Bridge, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    bridge.write_config(metrics_file=str(blocker / "x.prom"))
    bridge.probe("before_vm_start", "10_ok")
    assert bridge.qemu("vm1", "prepare", "begin", domain_xml("vm1")).returncode == 0
    assert bridge.events() == ["before_vm_start"]
    assert "metrics: cannot record the runs of" in bridge.log_text()
    assert len(history_json(bridge)) == 1


def test_outcomes() -> None:
    from libvirt_bridge.runner import ScriptResult

    result = ScriptResult("/s")
    result.rc = 0
    assert reporting.outcome_of(result, veto=True) == "ok"
    result.rc = 1
    assert reporting.outcome_of(result, veto=True) == "vetoed"
    assert reporting.outcome_of(result, veto=False) == "failed"
    result.timed_out = True
    assert reporting.outcome_of(result, veto=True) == "timed_out"
    result.error = "Permission denied"
    assert reporting.outcome_of(result, veto=True) == "not_run"
    assert reporting.stderr_tail(result) == "Permission denied"


def test_a_trial_of_run_is_on_record_as_a_trial(bridge: Bridge, tmp_path: Path) -> None:
    bridge.probe("before_vm_start", "10_ok")
    xml = tmp_path / "vm1.xml"
    xml.write_bytes(domain_xml("vm1"))
    status, _, _ = run(
        "run", "before_vm_start", "vm1", "--xml", str(xml), "--config", str(bridge.config)
    )
    assert status == 0
    [record] = history_json(bridge)
    assert (record["event"], record["source"], record["outcome"]) == (
        "before_vm_start",
        "trial",
        "ok",
    )
