"""Voice activity detection per 20 ms frame: a statistical-model (Sohn) test against a per-band tracked noise floor.

Why not a level threshold: on a noisy station the output's speech sits a few dB above its
noise (-26 dBFS speech in -32 dBFS noise), so a frame's total
energy barely separates them. Speech is not spread like the noise, though: vowels put
their energy in harmonics and formants, fricatives in the top octave where pinkish room
noise is weak. So each frame is split into bands, each band's power is compared with that
band's noise power, and the per-band likelihood ratios of "speech + noise" against "noise
alone" (Sohn, Kim & Sung 1999, complex-Gaussian model, decision-directed a-priori SNR) are
averaged over the spectrum. A one-frame hangover after a talkspurt of 60 ms or more keeps
the faint tail of a word (a decaying vowel, a soft final consonant) as speech.

Limit: the detector compares each frame with the noise the output has shown in its pauses.
An AGC that raises its gain in every pause (noise swelling towards the speech level within
~100 ms) makes the pause noise non-stationary at the output; the estimate then lags and
pauses read partly as speech.

The noise power of each band follows the frames judged non-speech (a running mean) and is
held inside a band around the minimum-statistics floor (Martin 2001): the minimum of the
smoothed band power over the last ~3.2 s, corrected for the minimum's bias. The floor lets
the estimate rise when the noise rises (every frame would otherwise look like speech and
never update it) and fall when the noise drops. Frames of digital silence (a closed gate,
concealment) are never speech and leave the noise estimate alone.
"""
from __future__ import annotations

import numpy as np

from agent.dsp import fft
from ext.vad import VadTracker
from ext.vad_py import SMOOTH

SAMPLE_RATE = 16000
FRAME = 320
_N_BANDS = 20
_LO_HZ, _HI_HZ = 100.0, 8000.0
_DIGITAL_SILENCE = 1e-10    # mean sample power below -100 dBFS: nothing to classify


def _band_bins() -> tuple[np.ndarray, np.ndarray]:
    """(first bin, bin count) of each band: mel-spaced edges between 100 Hz and 8 kHz on the 50 Hz FFT grid."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)
    edges_hz = 700 * (10 ** (np.linspace(mel(_LO_HZ), mel(_HI_HZ), _N_BANDS + 1) / 2595) - 1)
    edges = np.unique(np.round(edges_hz / (SAMPLE_RATE / FRAME)).astype(int))
    edges[-1] = FRAME // 2 + 1
    return edges[:-1], np.diff(edges)


class VoiceActivityDetector:
    """Stateful across calls: feed consecutive frames of one stream.

    The spectra of a window's frames come from one FFT call here; the per-frame recursion
    (likelihood-ratio test, hangover, noise tracking) is ext.vad VadTracker (Cython, with its
    Python twin ext/vad_py.py).
    """

    def __init__(self) -> None:
        self.starts, self.widths = _band_bins()
        self.weights = self.widths / self.widths.sum()
        dof = 2 * self.widths * (1 + SMOOTH) / (1 - SMOOTH)            # equivalent degrees of freedom of the smoothed power
        quantile = 1.0 - 2.0 * np.sqrt(2.0 / dof)                      # where the minimum of ~18 such values falls
        self.bias = 1.0 / np.maximum(quantile, 0.3)                    # minimum -> mean
        self.window = np.hanning(FRAME)
        self.window_power = float(np.sum(self.window ** 2))
        self.tracker = VadTracker(self.weights, self.bias)

    def band_power(self, frame: np.ndarray) -> np.ndarray:
        """Mean power per bin in each band, scaled so white noise of variance s^2 reads s^2."""
        spec = np.abs(np.fft.rfft(frame * self.window)) ** 2 / self.window_power
        return np.add.reduceat(spec, self.starts) / self.widths

    def band_powers(self, frames: np.ndarray) -> np.ndarray:
        """band_power of each row of `frames`, with one FFT call for all of them."""
        spec = fft.rfft(frames * self.window, FRAME, np.empty((len(frames), FRAME // 2 + 1), dtype=complex))
        spec = np.abs(spec) ** 2 / self.window_power
        return np.add.reduceat(spec, self.starts, axis=1) / self.widths

    def classify(self, frames: np.ndarray, energy: np.ndarray | None = None) -> np.ndarray:
        """Speech (True) or not for each row of `frames` (n x 320); digital silence is never speech.

        `energy`, when the caller has it, is np.mean(frames * frames, axis=1)."""
        out = np.zeros(len(frames), dtype=bool)
        if energy is None and len(frames):
            energy = np.add.reduce(frames * frames, axis=1) / frames.shape[1]
        audible = np.flatnonzero(energy >= _DIGITAL_SILENCE) if len(frames) else []
        if len(audible):
            out[audible] = self.tracker.classify(self.band_powers(frames[audible]))
        return out
