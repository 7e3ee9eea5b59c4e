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

SAMPLE_RATE = 16000
FRAME = 320
_N_BANDS = 20
_LO_HZ, _HI_HZ = 100.0, 8000.0
_SMOOTH = 0.7               # per-frame smoothing of the band power fed to the minimum tracker
_SUB_FRAMES = 20            # minimum statistics: subwindows of 20 frames (400 ms) ...
_SUBWINDOWS = 8             # ... eight of them: the minimum over the last ~3.2 s
_NOISE_ALPHA = 0.9          # running mean of the noise power over non-speech frames (~200 ms)
_DD_ALPHA = 0.9             # decision-directed a-priori SNR smoothing
_XI_MIN = 10 ** (-25 / 10)  # a-priori SNR floor (keeps the test from firing on noise flukes)
_THRESHOLD = 0.1            # mean log-likelihood ratio per bin above which a frame is speech
_HANG_AFTER = 3             # a talkspurt of at least 3 frames (60 ms) ...
_HANG_FRAMES = 1            # ... keeps the next frame as speech
_DIGITAL_SILENCE = 1e-10    # mean sample power below -100 dBFS: nothing to classify
_TINY = 1e-14
_CLAMP = 2.0                # the noise estimate stays within 3 dB of the bias-corrected floor


def _band_bins() -> tuple[np.ndarray, np.ndarray]:
    """(first bin, bin count) of each band: mel-spaced edges between 100 Hz and 8 kHz on the 50 Hz FFT grid."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)
    edges_hz = 700 * (10 ** (np.linspace(mel(_LO_HZ), mel(_HI_HZ), _N_BANDS + 1) / 2595) - 1)
    edges = np.unique(np.round(edges_hz / (SAMPLE_RATE / FRAME)).astype(int))
    edges[-1] = FRAME // 2 + 1
    return edges[:-1], np.diff(edges)


class VoiceActivityDetector:
    """Stateful across calls: feed consecutive frames of one stream."""

    def __init__(self) -> None:
        self.starts, self.widths = _band_bins()
        self.weights = self.widths / self.widths.sum()
        dof = 2 * self.widths * (1 + _SMOOTH) / (1 - _SMOOTH)          # equivalent degrees of freedom of the smoothed power
        quantile = 1.0 - 2.0 * np.sqrt(2.0 / dof)                      # where the minimum of ~18 such values falls
        self.bias = 1.0 / np.maximum(quantile, 0.3)                    # minimum -> mean
        self.window = np.hanning(FRAME)
        self.window_power = float(np.sum(self.window ** 2))
        self.noise: np.ndarray | None = None                          # per-band noise power (per bin)
        self.smoothed = np.zeros(len(self.widths))
        self.sub_min = np.full(len(self.widths), np.inf)
        self.minima: list[np.ndarray] = []
        self._minima_min = np.full(len(self.widths), np.inf)          # their elementwise minimum
        self._sub_count = 0
        self._prev_clean = np.zeros(len(self.widths))                 # |estimated speech|^2 / noise of the last frame
        self._run = self._hang = 0

    def band_power(self, frame: np.ndarray) -> np.ndarray:
        """Mean power per bin in each band, scaled so white noise of variance s^2 reads s^2."""
        spec = np.abs(np.fft.rfft(frame * self.window)) ** 2 / self.window_power
        return np.add.reduceat(spec, self.starts) / self.widths

    def band_powers(self, frames: np.ndarray) -> np.ndarray:
        """band_power of each row of `frames`, with one FFT call for all of them."""
        spec = np.abs(np.fft.rfft(frames * self.window, axis=1)) ** 2 / self.window_power
        return np.add.reduceat(spec, self.starts, axis=1) / self.widths

    def classify(self, frames: np.ndarray) -> np.ndarray:
        """Speech (True) or not for each row of `frames` (n x 320)."""
        out = np.zeros(len(frames), dtype=bool)
        audible = np.flatnonzero(np.mean(frames * frames, axis=1) >= _DIGITAL_SILENCE) if len(frames) else []
        if not len(audible):
            return out
        # Spectra of every audible frame at once; the decisions below stay sequential (they carry state).
        powers = self.band_powers(frames[audible])
        for i, power in zip(audible, powers):
            if self.noise is None:  # first audible frame: the best guess there is, corrected by the floor
                self.noise = power.copy()
                self.smoothed = power.copy()
            speech = self._decide(power)
            self._track(power, speech)
            # Hangover: the weak tail of a talkspurt (a fading vowel, a soft final consonant) stays speech.
            self._run = self._run + 1 if speech else 0
            if speech and self._run >= _HANG_AFTER:
                self._hang = _HANG_FRAMES
            elif not speech and self._hang > 0:
                self._hang -= 1
                speech = True
            out[i] = speech
        return out

    def _decide(self, power: np.ndarray) -> bool:
        noise = np.maximum(self.noise, _TINY)  # type: ignore[arg-type]
        gamma = np.minimum(power / noise, 1e6)
        xi = np.maximum(_DD_ALPHA * self._prev_clean + (1 - _DD_ALPHA) * np.maximum(gamma - 1.0, 0.0), _XI_MIN)
        llr = gamma * xi / (1 + xi) - np.log1p(xi)
        gain = xi / (1 + xi)
        self._prev_clean = gain * gain * gamma
        return float(np.dot(self.weights, llr)) > _THRESHOLD

    def _track(self, power: np.ndarray, speech: bool) -> None:
        self.smoothed = _SMOOTH * self.smoothed + (1 - _SMOOTH) * power
        self.sub_min = np.minimum(self.sub_min, self.smoothed)
        self._sub_count += 1
        if self._sub_count == _SUB_FRAMES:
            self.minima = (self.minima + [self.sub_min])[-_SUBWINDOWS:]
            self._minima_min = np.minimum.reduce(self.minima)  # changes once per subwindow: kept, not redone
            self.sub_min = np.full(len(self.widths), np.inf)
            self._sub_count = 0
        floor = np.minimum(self._minima_min, self.sub_min) * self.bias
        noise = self.noise  # type: ignore[assignment]
        if not speech:
            noise = _NOISE_ALPHA * noise + (1 - _NOISE_ALPHA) * power
        # The floor carries the estimate through long speech and level changes.
        self.noise = np.clip(noise, floor / _CLAMP, floor * _CLAMP)
