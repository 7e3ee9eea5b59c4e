"""Response model of GET /api/v1/health: status, counters of the stores and the agent link, points by status."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from controller.http.models import Body
from controller.live.state import Status


class SystemMetrics(Body):
    apiLatency: float = Field(ge=0, description="Mean duration of recent requests, ms")
    dbConnections: int = Field(ge=0, description="Open store handles: the config store plus the history store's SQLite connections")
    cacheHitRate: float = Field(ge=0, le=1, description="Snapshot requests served from prebuilt bytes")
    queueDepth: int = Field(ge=0, description="Unacknowledged knob sets plus requests waiting for an ACK")


class LinkHealth(Body):
    endpoint: str
    security: Literal["curve", "insecure"] = Field(description="CURVE-authenticated agents, or a plaintext link")
    handshakesRefused: int = Field(ge=0, description="Agent connections refused: key not in the allow-list")
    framesReceived: dict[str, int] = Field(description="Valid frames by message type")
    framesMalformed: int
    messagesRejected: int
    sequenceGaps: int


class Health(Body):
    """Service health in the plan's shape; 503 with the same document when unhealthy."""
    status: Literal["healthy", "degraded", "unhealthy"]
    uptime: int = Field(ge=0, description="Milliseconds since the controller started")
    activeStations: int = Field(ge=0)
    activeExtensions: int = Field(ge=0)
    lastDataUpdate: str | None = Field(description="When the last sample arrived (null: none yet)",
                                       json_schema_extra={"format": "date-time"})
    systemMetrics: SystemMetrics
    version: str
    reasons: list[str] = Field(description="Why the status is not healthy")
    points: dict[Status, int] = Field(description="Points by status")
    link: LinkHealth
