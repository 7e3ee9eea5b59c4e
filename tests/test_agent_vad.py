"""The measurement VAD's recursion (ext.vad VadTracker): Cython against its Python twin, and what it decides."""
from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from agent.measure.vad import VoiceActivityDetector
from agent.sim.speech import NoiseSource, SpeechSynth
from ext import vad_py
from tests.twins import load_twin


@pytest.fixture(params=["py", "c"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return load_twin(request.param, vad_py, "_vad")


@pytest.fixture
def cy() -> ModuleType:
    return load_twin("c", vad_py, "_vad")


def _talker_frames(seconds: int = 16) -> np.ndarray:
    """A -26 dBFS talker in -40 dBFS room noise, a second of digital silence, then everything 10 dB louder."""
    n = 16000 * seconds
    x = SpeechSynth(np.random.default_rng(1), 120.0, -26.0).read(n) + NoiseSource(np.random.default_rng(2), -40.0).read(n)
    x[16000 * 4:16000 * 5] = 0.0
    x[16000 * 9:] *= 10 ** (10 / 20)
    return x.reshape(-1, 320)


def _run(module: ModuleType, frames: np.ndarray) -> tuple[np.ndarray, VoiceActivityDetector]:
    vad = VoiceActivityDetector()
    vad.tracker = module.VadTracker(vad.weights, vad.bias)
    # Windows of 7 and 8 frames, as the 150 ms samples cut them.
    cuts = np.cumsum([7 if i % 2 else 8 for i in range(len(frames))])
    parts = np.split(frames, cuts[cuts < len(frames)])
    return np.concatenate([vad.classify(p) for p in parts]), vad


def test_cython_and_twin_decide_the_same_and_track_the_same_noise(cy: ModuleType) -> None:
    frames = _talker_frames()
    py_speech, py_vad = _run(vad_py, frames)
    c_speech, c_vad = _run(cy, frames)
    np.testing.assert_array_equal(c_speech, py_speech)
    py_state, c_state = py_vad.tracker.get_state(), c_vad.tracker.get_state()
    for key in ("noise", "smoothed", "prev_clean", "sub_min", "minima_min"):
        np.testing.assert_allclose(c_state[key], py_state[key], rtol=1e-12, err_msg=key)
    assert (c_state["run"], c_state["hang"], c_state["sub_count"]) == (py_state["run"], py_state["hang"],
                                                                       py_state["sub_count"])


def test_speech_is_found_in_talkspurts_and_not_in_silence_or_pauses(impl: ModuleType) -> None:
    frames = _talker_frames()
    speech, _ = _run(impl, frames)
    silent = slice(4 * 50, 5 * 50)
    assert not speech[silent].any()  # digital silence is never speech
    loud = np.mean(frames ** 2, axis=1)
    settled = np.arange(len(frames)) >= 100
    active = loud > 10 * np.median(loud[settled])  # clearly above the room noise: talkspurt cores
    quiet = (loud > 0) & (loud < 1.5 * np.percentile(loud[loud > 0], 10))  # room noise alone
    assert speech[settled & active].mean() > 0.9
    assert speech[settled & quiet].mean() < 0.2


def test_a_row_of_the_wrong_width_is_refused(impl: ModuleType) -> None:
    tracker = impl.VadTracker(np.full(20, 0.05), np.ones(20))
    with pytest.raises(ValueError):
        tracker.classify(np.ones((2, 19)))
