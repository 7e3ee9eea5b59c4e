"""The event bus, and status-change events from the snapshot tick."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from controller.app import create_app
from controller.app_keys import SERVICES
from controller.events import EventBus
from controller.sample import Sample
from controller.settings import ControllerSettings
from shared.topology import Point


def test_listeners_get_events_and_a_failing_one_does_not_stop_the_rest(caplog):
    bus, got = EventBus(), []
    bus.subscribe(lambda e, d: 1 / 0)
    unsubscribe = bus.subscribe(lambda e, d: got.append((e, d)))
    bus.publish("alert", {"action": "created"})
    unsubscribe()
    bus.publish("alert", {"action": "resolved"})
    assert got == [("alert", {"action": "created"})] and bus.published["alert"] == 2
    assert "listener for alert failed" in caplog.text
    with pytest.raises(ValueError, match="unknown event"):
        bus.publish("alerts", {})


async def test_status_change_is_published_when_a_point_goes_active(tmp_path):
    settings = ControllerSettings(http_host="127.0.0.1", link_endpoint="tcp://127.0.0.1:*", data_dir=str(tmp_path),
                                  stations=1, tick_ms=20, insecure=True)
    app = create_app(settings, registry=CollectorRegistry())
    events = []
    app[SERVICES].events.subscribe(lambda e, d: events.append(d) if e == "status-change" else None)
    async with TestClient(TestServer(app)):
        await asyncio.sleep(0.1)
        assert events == []  # the first tick records the starting status without an event
        point = Point("Station-1", "3333")
        app[SERVICES].live.record(Sample.from_body(point, {"seq": 1, "metrics": [None] * 68, "measured_at": 1.0,
                                             "knob_version": 1}))
        await asyncio.sleep(0.1)
    assert events[0] == {"station": "Station-1", "extension": "3333", "status": "active", "previous": "offline"}
