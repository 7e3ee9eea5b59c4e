"""Audit log: JSON lines with the fields, appended across restarts, floods summarized, kill -9 loses nothing."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from controller.clock import ManualClock
from controller.security.audit import AuditLog

FIELDS = ["timestamp", "event", "who", "what", "where", "traceId", "outcome"]
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
ROOT = Path(__file__).resolve().parents[1]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall=1_700_000_000.25)


@pytest.fixture
def audit(tmp_path, clock):
    log = AuditLog(tmp_path / "logs" / "audit.log", clock.wall)
    log.open()
    yield log
    log.close()


def refuse(audit: AuditLog, who: str = "ops-1", event: str = "rate_limited", trace: str = "t1") -> None:
    audit.record(event, who=who, what="GET /api/v1/snapshots", where="10.0.0.9", trace=trace, outcome="refused",
                 limit=1000)


def test_a_record_is_one_json_line_with_the_fields(audit, tmp_path):
    audit.record("config.change", who="ops-1", what="knobs Station-1/3333", where="10.0.0.9", trace="abc",
                 outcome="applied", version=3, changes={"agc_enabled": True})
    [line] = lines(tmp_path / "logs" / "audit.log")
    assert list(line)[:7] == FIELDS
    assert line == {"timestamp": "2023-11-14T22:13:20.250Z", "event": "config.change", "who": "ops-1",
                    "what": "knobs Station-1/3333", "where": "10.0.0.9", "traceId": "abc", "outcome": "applied",
                    "version": 3, "changes": {"agc_enabled": True}}


def test_text_with_newlines_stays_on_one_line(audit, tmp_path):
    audit.record("auth.failure", who="10.0.0.9", what="GET /x\nforged line", where="10.0.0.9", trace="",
                 outcome="refused", reason="bad\u2028token\n{\"event\": \"fake\"}")
    text = (tmp_path / "logs" / "audit.log").read_text()
    assert text.count("\n") == 1 and len(text.splitlines()) == 1
    assert lines(tmp_path / "logs" / "audit.log")[0]["what"] == "GET /x\nforged line"


def test_the_file_survives_reopening(tmp_path, clock):
    path = tmp_path / "audit.log"
    for n in range(3):  # three controller runs
        log = AuditLog(path, clock.wall)
        log.open()
        log.record("config.change", who=f"run-{n}", what="x", where="y", trace="", outcome="applied")
        log.close()
    assert [line["who"] for line in lines(path)] == ["run-0", "run-1", "run-2"]


def test_a_record_while_closed_is_logged_not_raised(tmp_path, clock, caplog):
    log = AuditLog(tmp_path / "audit.log", clock.wall)
    log.record("auth.failure", who="a", what="b", where="c", trace="", outcome="refused")
    assert "not open" in caplog.text and not (tmp_path / "audit.log").exists()


# --- floods ----------------------------------------------------------------------------------

def test_a_rate_limit_flood_is_one_line_then_a_count(audit, tmp_path, clock):
    for n in range(500):
        refuse(audit, trace=f"t{n}")
        clock.advance(0.1)  # 50 s of refusals
    assert len(lines(audit.path)) == 1
    clock.advance(15)  # the minute is over
    refuse(audit, trace="next")
    first, summary, fresh = lines(audit.path)
    assert first["event"] == "rate_limited" and first["traceId"] == "t0"
    assert summary["event"] == "rate_limited.summary" and summary["count"] == 499
    assert summary["who"] == "ops-1" and summary["traceId"] == "t499" and summary["outcome"] == "refused"
    assert summary["from"] == first["timestamp"] and ISO_MS.fullmatch(summary["until"])
    assert fresh["event"] == "rate_limited" and fresh["traceId"] == "next"


def test_each_client_gets_its_own_first_line(audit, clock):
    for _ in range(10):
        for who in ("ops-1", "ops-2", "10.0.0.3"):
            refuse(audit, who=who)
    assert [line["who"] for line in lines(audit.path)] == ["ops-1", "ops-2", "10.0.0.3"]
    audit.close()
    summaries = [line for line in lines(audit.path) if line["event"] == "rate_limited.summary"]
    assert sorted((s["who"], s["count"]) for s in summaries) == [("10.0.0.3", 9), ("ops-1", 9), ("ops-2", 9)]


def test_other_events_are_all_written(audit):
    for _ in range(5):
        refuse(audit, event="auth.failure")
        refuse(audit, event="signature.failure")
    assert len(lines(audit.path)) == 10


def test_a_quiet_minute_leaves_no_summary(audit, clock):
    refuse(audit)
    clock.advance(61)
    audit.record("config.change", who="ops-1", what="x", where="y", trace="", outcome="applied")
    assert [line["event"] for line in lines(audit.path)] == ["rate_limited", "config.change"]


def test_pending_counts_are_written_on_close(audit):
    for _ in range(4):
        refuse(audit)
    audit.close()
    assert [(line["event"], line.get("count")) for line in lines(audit.path)] == [
        ("rate_limited", None), ("rate_limited.summary", 3)]


async def test_in_an_event_loop_summaries_leave_on_a_timer(tmp_path, clock):
    log = AuditLog(tmp_path / "audit.log", clock.wall, window_s=0.05)
    log.open()
    try:
        for _ in range(3):
            refuse(log)
        clock.advance(1)  # the counting window is over; nothing else is recorded
        for _ in range(100):
            await asyncio.sleep(0.02)
            if len(lines(log.path)) == 2:
                break
        assert lines(log.path)[1]["count"] == 2
    finally:
        log.close()


# --- durability ------------------------------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from controller.security.audit import AuditLog
log = AuditLog(Path(sys.argv[1]))
log.open()
for n in range(3):
    log.record("config.change", who=f"w{n}", what="knobs", where="here", trace="", outcome="applied")
print("recorded", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_kill_9_loses_nothing_already_recorded(tmp_path):
    path = tmp_path / "audit.log"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == b"recorded"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert [line["who"] for line in lines(path)] == ["w0", "w1", "w2"]
