"""Config store: versions, restart persistence, catalog drift, and atomic writes under kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from controller.clock import ManualClock
from controller.documents import AtomicJSONStorage, DocumentFile
from controller.knobs.desired import DEFAULT_VERSION, DesiredKnobStore
from shared.config import ConfigError
from shared.knobs import defaults
from shared.topology import Point, Topology

P1 = Point("Station-1", "3333")
ROOT = Path(__file__).resolve().parents[1]


async def open_store(path: Path, stations: int = 2) -> DesiredKnobStore:
    store = DesiredKnobStore(DocumentFile(path), Topology(stations), ManualClock())
    await store.open()
    return store


async def test_unconfigured_points_have_defaults_at_version_1(tmp_path):
    store = await open_store(tmp_path / "c.json")
    try:
        desired = store.get(P1)
        assert desired.knobs == defaults() and desired.version == DEFAULT_VERSION == 1
        assert desired.updated_by == "defaults" and store.open_handles == 1
    finally:
        await store.close()
    assert store.open_handles == 0


async def test_put_bumps_the_version_and_survives_a_restart(tmp_path):
    path = tmp_path / "c.json"
    store = await open_store(path)
    knobs = {**defaults(), "agc_enabled": False}
    first = await store.put(P1, knobs, "api")
    second = await store.put(P1, {**knobs, "agc_max_gain": 12.0}, "api:alice")
    assert (first.version, second.version) == (2, 3)
    assert second.updated_by == "api:alice" and second.updated_at.endswith("Z")
    await store.close()
    again = await open_store(path)
    try:
        got = again.get(P1)
        assert got.version == 3 and got.knobs["agc_enabled"] is False and got.knobs["agc_max_gain"] == 12.0
        assert again.get(Point("Station-1", "4444")).version == 1
    finally:
        await again.close()


async def test_get_returns_a_copy(tmp_path):
    store = await open_store(tmp_path / "c.json")
    try:
        store.get(P1).knobs["agc_enabled"] = "tampered"
        assert store.get(P1).knobs["agc_enabled"] is defaults()["agc_enabled"]
    finally:
        await store.close()


async def test_stored_values_the_catalog_no_longer_accepts_fall_back_to_defaults(tmp_path):
    path = tmp_path / "c.json"
    doc = {"desired": {"1": {"station": "Station-1", "extension": "3333", "version": 7,
                             "knobs": {"agc_enabled": False, "agc_target_level": -500, "retired_knob": 1},
                             "updated_at": None, "updated_by": "api"},
                       "2": {"station": "Station-9", "extension": "3333", "version": 2, "knobs": {}}}}
    path.write_text(json.dumps(doc))
    store = await open_store(path, stations=2)
    try:
        got = store.get(P1)
        assert got.version == 7 and got.knobs["agc_enabled"] is False
        assert got.knobs["agc_target_level"] == defaults()["agc_target_level"]
        assert "retired_knob" not in got.knobs
    finally:
        await store.close()


async def test_a_corrupt_file_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"desired": {"1": {"sta')
    with pytest.raises(ConfigError, match="not valid JSON"):
        await open_store(path)


def test_atomic_storage_leaves_no_temp_files_and_cleans_old_ones(tmp_path):
    path = tmp_path / "c.json"
    (tmp_path / ".c.json.999.tmp").write_text("half a wri")
    storage = AtomicJSONStorage(path)
    assert not (tmp_path / ".c.json.999.tmp").exists()
    storage.write({"desired": {}})
    assert storage.read() == {"desired": {}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]


_WRITER = textwrap.dedent("""
    import asyncio, sys
    from controller.clock import SystemClock
    from controller.documents import DocumentFile
    from controller.knobs.desired import DesiredKnobStore
    from shared.knobs import defaults
    from shared.topology import Point, Topology

    async def main(path):
        store = DesiredKnobStore(DocumentFile(path), Topology(12), SystemClock())
        await store.open()
        points = Topology(12).points
        n = 0
        while True:
            n += 1
            knobs = {**defaults(), "agc_max_gain": float(n % 60)}
            for p in points:  # 24 points: a file of ~100 KB rewritten per put
                d = await store.put(p, knobs, "writer")
            print(d.version, flush=True)

    asyncio.run(main(sys.argv[1]))
""")


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.4, 0.55, 0.7, 0.85, 1.0])
def test_kill9_during_writes_leaves_the_previous_or_the_new_file(tmp_path, delay):
    path = tmp_path / "config.json"
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    first = child.stdout.readline()  # wait until writing is under way (imports take a while)
    assert first, "writer died before its first write"
    while time.monotonic() < deadline and not path.exists():
        time.sleep(0.01)
    time.sleep(delay)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    acknowledged = [int(line) for line in [first, *child.stdout.read().split()] if str(line).strip()]
    doc = json.loads(path.read_text())  # never a torn file
    versions = {(d["station"], d["extension"]): d["version"] for d in doc["desired"].values()}
    assert len(versions) == 24
    last_point = versions[("Station-12", "4444")]
    # Every put the writer saw complete is on disk; at most the one in flight is missing.
    assert last_point >= acknowledged[-1]
    assert max(versions.values()) - min(versions.values()) <= 1
