"""PacketSource: what the receiver, jitter buffer, repair, decoding and DSP chain run on.

A source delivers received packets (`Arrival`s) on the pipeline's frame clock and takes the
receiver's retransmission requests. That is the whole required surface, so a source that
only receives (RTP from a media server) fits as well as the built-in simulator. Two parts
are optional, each None where a source cannot know it:

- `references`: the near-end talker alone and the far-end signal played into the room, by
  media sample index (the simulator synthesises both; the first is the intrusive reference
  of SINAD and PESQ, the second the echo canceller's far end).
- `send_figures()`: the sending side's and the path's own counters (packets sent, pacer
  queue and drops, packets in flight). Only a source that owns the sender has them.

Timing conventions: times are float milliseconds on the pipeline's frame clock; media
timestamps are in pipeline samples (16 kHz, `SAMPLES_PER_MS` per ms), and media sample k was
captured at `capture_origin_ms + k / SAMPLES_PER_MS`. A source with another RTP clock rate
rescales its timestamps to these.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import numpy as np

from agent.codec import PayloadFormat

SAMPLES_PER_MS = 16  # the pipeline's media clock: 16 kHz


class PacketKind(IntEnum):
    MEDIA = 0
    PARITY = 1  # XOR FEC over a group of media packets (RFC 5109 style)


@dataclass(frozen=True, slots=True)
class Arrival:
    """One packet as the receiving side saw it."""
    seq: int                      # 16-bit sequence number (parity: the first media seq it covers)
    timestamp: int                # media timestamp of the first sample carried, in pipeline samples
    payload: bytes                # in the source's payload format (parity: XOR of its members' payloads)
    arrival_ms: float             # when it reached the agent
    wire_bytes: int               # on-the-wire size, headers included (throughput and overhead)
    kind: PacketKind = PacketKind.MEDIA
    intact: bool = True           # False when the payload failed its integrity check
    retransmission: bool = False  # an answer to a retransmission request (as an RFC 4588 RTX stream)
    group_size: int = 0           # parity only: media packets covered, seq .. seq + group_size - 1
    sent_ms: float | None = None  # when the sender sent it, on the same clock, where the source knows it


class ReferenceAudio(Protocol):
    """Signals a simulated source knows besides its packets, looked up by media sample index."""

    def clean(self, media: np.ndarray) -> np.ndarray:
        """The near-end talker alone at each index; 0 where the index is not (or no longer) held."""
        ...

    def far_end(self, media: np.ndarray) -> np.ndarray:
        """The far-end signal played into the room at each index; 0 where not held."""
        ...


@dataclass(frozen=True)
class SendFigures:
    """Counters of the sending side and the path: only a source that owns the sender has them."""
    media_sent: int
    parity_sent: int
    retransmits_sent: int
    pacer_drops: int         # packets the sender's pacer dropped because its queue was full
    pacer_queue_packets: int  # packets waiting in the pacer now
    pacer_queue_ms: float    # how long until the packets waiting in the pacer now have all left
    in_flight: int           # packets sent and not yet arrived
    far_side_cpu_s: float    # thread CPU time spent producing the packets (work a received stream costs nobody)


class PacketSource(Protocol):
    """Where one extension's packets come from; the receiver's only view of the far side."""
    payload_format: PayloadFormat
    capture_origin_ms: float
    references: ReferenceAudio | None

    def configure(self, knobs: Mapping[str, Any]) -> None:
        """Take a full knob set at a frame boundary (a source that owns a sender applies the send knobs)."""
        ...

    def arrivals(self, until_ms: float) -> list[Arrival]:
        """Every packet received since the last call and up to `until_ms`, in arrival order."""
        ...

    def request_retransmission(self, seq: int, now_ms: float) -> None:
        """Ask the sender again for media packet `seq` (16 bits), as an RTCP generic NACK would."""
        ...

    def send_figures(self) -> SendFigures | None:
        """The sending side's counters, or None for a source that only receives."""
        ...

    def conditions(self, now_ms: float) -> dict[str, Any]:
        """The path in force now as far as the source knows it (the optimizer's inputs)."""
        ...
