"""Where the catalog says a knob acts is where the agent reads it: receiver, sender or DSP chain."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import SimpleNamespace
from typing import Any

from agent.codec import MU_LAW_16K
from agent.receiver import Receiver
from agent.sim.sender import Sender
from shared.knobs import KNOBS, Acts, defaults


class ReadLog(Mapping[str, Any]):
    """A full knob set that remembers which knobs were looked up."""

    def __init__(self, knobs: Mapping[str, Any]) -> None:
        self._knobs = dict(knobs)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        value = self._knobs[name]
        self.read.add(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._knobs)

    def __len__(self) -> int:
        return len(self._knobs)


def acting(where: Acts) -> set[str]:
    return {k.name for k in KNOBS if k.acts is where}


def test_receive_knobs_are_the_ones_the_receiver_reads():
    knobs = ReadLog(defaults())
    receiver = Receiver(SimpleNamespace(payload_format=MU_LAW_16K, capture_origin_ms=0.0), knobs)  # type: ignore[arg-type]
    receiver.configure(knobs)
    assert knobs.read == acting(Acts.RECEIVE)


def test_send_knobs_are_the_ones_only_the_sender_reads():
    """max_retransmits is read by both: the receiver's request count, mirrored by what the simulated sender answers."""
    rx, tx = ReadLog(defaults()), ReadLog(defaults())
    Receiver(SimpleNamespace(payload_format=MU_LAW_16K, capture_origin_ms=0.0), rx)  # type: ignore[arg-type]
    Sender(None, tx)  # type: ignore[arg-type]  # configuring touches no network
    assert tx.read - rx.read == acting(Acts.SEND)
    assert tx.read & rx.read == {"max_retransmits"}


def test_dsp_knobs_are_every_other_knob_the_pipeline_implements():
    """tests/test_dsp_chain.py checks that each of them changes the chain's audio."""
    implemented = {k.name for k in KNOBS if k.applied_by == "pipeline"}
    assert implemented - acting(Acts.RECEIVE) - acting(Acts.SEND) == acting(Acts.DSP)
