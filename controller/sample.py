"""A received sample as one record, handed whole to every observer (live state, history, alerts).

The agent's SAMPLE message says what was measured, when, and under which applied knob
version and network/traffic conditions; keeping these together is what lets history map
any sample to the complete knob set it ran under (the optimizer's training data).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.topology import Point


@dataclass(frozen=True, slots=True)
class Sample:
    point: Point
    seq: int                          # the agent's sequence number of this point (gaps are lost samples)
    measured_at: float                # wall time the agent measured it, seconds since the epoch
    values: Sequence[Any]             # the 68 metric values as sent, catalog order (may hold wrong types)
    knob_version: int                 # the knob version the agent had applied while measuring
    conditions: Mapping[str, Any] = field(default_factory=dict)  # what the agent reported of its conditions

    @classmethod
    def from_body(cls, point: Point, body: Mapping[str, Any]) -> Sample:
        """From a SAMPLE message body the protocol decoder has checked (seq and version are ints already)."""
        conditions = body.get("conditions")
        return cls(point, body["seq"], float(body["measured_at"]), body["metrics"], body["knob_version"],
                   conditions if isinstance(conditions, dict) else {})


SampleObserver = Callable[[Sample], None]
