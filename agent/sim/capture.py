"""The simulated microphone of one extension: near-end talker + room noise + echo of the far-end reference."""
from __future__ import annotations

import numpy as np

from agent import codec
from agent.sim.conditions import SimConditions
from agent.sim.speech import SAMPLE_RATE, NoiseSource, SpeechSynth
from ext.dsp import BiquadChain

FRAME_SAMPLES = 320
_BLOCK_FRAMES = 50  # render one second at a time so a frame is a slice


class SimCapture:
    """Seeded source of 20 ms frames: `next_frame() -> (capture, clean, far_end)`.

    `clean` is the near-end talker alone (the intrusive reference for SINAD and PESQ);
    `far_end` is the reference the station plays into the room, which leaks into `capture`
    through an echo path (delay, gain, a loudspeaker/room low-pass) for the AEC to cancel.
    `next_payload()` gives the capture already mu-law encoded (a second at a time: one codec
    call per 50 frames instead of one per frame).
    """

    def __init__(self, cond: SimConditions, seed: int) -> None:
        near_rng, far_rng, noise_rng, talker_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
        f0 = cond.talker_f0_hz or float(talker_rng.choice([105.0, 120.0, 190.0, 215.0]) * talker_rng.uniform(0.92, 1.08))
        self.near = SpeechSynth(near_rng, f0, cond.speech_level_dbfs)
        self.far = SpeechSynth(far_rng, 330.0 - f0 if f0 < 160 else f0 * 0.55, cond.far_end_level_dbfs)
        self.noise = NoiseSource(noise_rng, cond.noise_dbfs)
        self.echo_gain = 10 ** (cond.echo_gain_db / 20)
        self.echo_delay = int(cond.echo_delay_ms * SAMPLE_RATE / 1000)
        self._echo_path = BiquadChain([(0.35, 0.0, 0.0, -0.65, 0.0)])  # loudspeaker/room: one-pole low-pass
        self._far_tail = np.zeros(self.echo_delay)
        self._frames: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._payload = b""
        self._index = _BLOCK_FRAMES

    def next_frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._index >= _BLOCK_FRAMES:
            self._render()
            self._index = 0
        i = self._index
        self._index += 1
        capture, clean, far = self._frames  # type: ignore[misc]
        return capture[i], clean[i], far[i]

    def next_payload(self) -> tuple[bytes, np.ndarray, np.ndarray]:
        """The next frame as (mu-law payload of the capture, clean, far_end)."""
        _, clean, far = self.next_frame()
        i = self._index - 1
        return self._payload[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES], clean, far

    def _render(self) -> None:
        n = FRAME_SAMPLES * _BLOCK_FRAMES
        clean = self.near.read(n)
        far = self.far.read(n)
        history = np.concatenate([self._far_tail, far])
        delayed = history[:n]
        self._far_tail = history[n:] if self.echo_delay else np.zeros(0)
        echo = self._echo_path.process(delayed * self.echo_gain)
        capture = clean + echo + self.noise.read(n)
        shape = (_BLOCK_FRAMES, FRAME_SAMPLES)
        self._frames = (capture.reshape(shape), clean.reshape(shape), far.reshape(shape))
        self._payload = codec.encode(capture)  # 1 byte per sample
