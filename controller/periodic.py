"""The controller's clockwork: the snapshot tick (gauges, status changes, stream fan-out) and the heartbeat.

`PeriodicWork` owns what the periodic steps remember between runs (each point's status at
the last tick, from which `status-change` events are derived) and the tasks that run them.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from controller.link.router import AgentUnreachable
from controller.services import Services
from shared.protocol import heartbeat
from shared.topology import Point

log = logging.getLogger("tpmon.controller")


class PeriodicWork:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._last_status: dict[Point, str] = {}  # point -> status at the last tick
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        settings = self.services.settings
        self.services.snapshots.build()  # so the first request never waits for a tick
        self._tasks = [asyncio.create_task(every(settings.tick_ms / 1000, self.tick), name="tpmon-snapshot"),
                       asyncio.create_task(every(settings.heartbeat_ms / 1000, self.heartbeat),
                                           name="tpmon-heartbeat")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def tick(self) -> None:
        """Build the snapshot (about a millisecond for 24 points, so on the loop) and update gauges."""
        s = self.services
        s.snapshots.build()
        s.telemetry.snapshot_build.observe(s.snapshots.last_build_seconds)
        for status, count in s.snapshots.status_counts.items():
            s.telemetry.points.labels(status.value).set(count)
        self.publish_status_changes()
        s.stream.on_tick()  # metrics-update to every due subscription, from the snapshot just built

    def publish_status_changes(self) -> None:
        """A `status-change` event for every point whose status differs from the last tick's."""
        live, events = self.services.live, self.services.events
        for point in live.points:
            status = live.status(point).value
            previous = self._last_status.get(point)
            if status != previous:
                self._last_status[point] = status
                if previous is not None:
                    events.publish("status-change", {"station": point.station, "extension": point.extension,
                                                     "status": status, "previous": previous})

    async def heartbeat(self) -> None:
        """Tell every agent we have heard from that we are alive; a refused send means it is gone."""
        link, live = self.services.link, self.services.live
        msg = heartbeat(self.services.clock.wall())
        for station in link.known_stations():
            try:
                await link.send_to_station(station, msg)
            except AgentUnreachable:
                live.agent_gone(station)


async def every(interval: float, step: Callable[[], Awaitable[None]]) -> None:
    """Run `step` on a fixed schedule (no drift); a failing step is logged, the schedule goes on."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    while True:
        try:
            await step()
        except Exception:
            log.exception("periodic task failed")
        due += interval
        now = loop.time()
        if due < now:  # fell behind (a long GC pause or a suspended host): skip, don't burst
            due = now + interval
        await asyncio.sleep(due - now)
