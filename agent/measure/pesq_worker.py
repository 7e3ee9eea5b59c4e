"""Wideband PESQ (ITU-T P.862.2, PyPI `pesq`) of recent output against the clean reference, off the frame path."""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import numpy as np
from pesq import pesq as pesq_score

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000


def wideband_pesq(reference: np.ndarray, degraded: np.ndarray) -> float | None:
    """P.862.2 MOS-LQO, or None when the pesq library finds no utterance (silence) or fails."""
    try:
        return float(pesq_score(SAMPLE_RATE, reference.astype(np.float32, copy=False),
                                degraded.astype(np.float32, copy=False), "wb"))
    except Exception as exc:  # pesq raises its own NoUtterancesError and generic errors for silent input
        log.debug("pesq skipped: %s", exc)
        return None


class PesqWorker:
    """One daemon thread computing queued jobs; each job delivers its score through its callback.

    The queue holds at most `depth` jobs: when scores cannot keep up, new jobs are dropped
    (the held value simply stays older) rather than letting work pile up.
    """

    def __init__(self, depth: int = 4) -> None:
        self._jobs: queue.Queue[tuple[np.ndarray, np.ndarray, Callable[[float], None]] | None] = queue.Queue(depth)
        self._thread = threading.Thread(target=self._run, name="tpmon-pesq", daemon=True)
        self._thread.start()
        self.computed = self.skipped = 0

    def submit(self, reference: np.ndarray, degraded: np.ndarray, done: Callable[[float], None]) -> bool:
        try:
            # The job owns float32 copies (what the scorer takes anyway): half the bytes of float64 copies.
            self._jobs.put_nowait((reference.astype(np.float32), degraded.astype(np.float32), done))
            return True
        except queue.Full:
            self.skipped += 1
            return False

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            reference, degraded, done = job
            score = wideband_pesq(reference, degraded)
            if score is None:
                self.skipped += 1
            else:
                self.computed += 1
                done(score)

    def close(self, timeout: float = 0.5) -> None:
        try:
            self._jobs.put_nowait(None)
        except queue.Full:
            pass  # daemon thread: it dies with the process
        self._thread.join(timeout)
