"""Pure-Python twin of ext._vad: the per-frame recursion of the measurement's voice activity detector.

agent/measure/vad.py computes the band powers of a window's frames (one FFT call); the
decisions then run frame by frame, because each carries state into the next: the Sohn
likelihood-ratio test against the tracked noise (decision-directed a-priori SNR), the
hangover, and the noise tracker held around the minimum-statistics floor. That recursion
is about twenty small numpy operations per frame, so it lives here with a Cython twin
(ext/_vad.pyx, the same arithmetic as scalar loops). See agent/measure/vad.py for the method.
"""
from __future__ import annotations

import numpy as np

SMOOTH = 0.7               # per-frame smoothing of the band power fed to the minimum tracker
SUB_FRAMES = 20            # minimum statistics: subwindows of 20 frames (400 ms) ...
SUBWINDOWS = 8             # ... eight of them: the minimum over the last ~3.2 s
NOISE_ALPHA = 0.9          # running mean of the noise power over non-speech frames (~200 ms)
DD_ALPHA = 0.9             # decision-directed a-priori SNR smoothing
XI_MIN = 10 ** (-25 / 10)  # a-priori SNR floor (keeps the test from firing on noise flukes)
THRESHOLD = 0.1            # mean log-likelihood ratio per bin above which a frame is speech
HANG_AFTER = 3             # a talkspurt of at least 3 frames (60 ms) ...
HANG_FRAMES = 1            # ... keeps the next frame as speech
TINY = 1e-14
CLAMP = 2.0                # the noise estimate stays within 3 dB of the bias-corrected floor


class VadTracker:
    """Decisions for consecutive audible frames of one stream, given their band powers (one row each).

    `weights` (summing to one) average the per-band log-likelihood ratios; `bias` turns the
    minimum of the smoothed power into a mean (minimum statistics).
    """

    def __init__(self, weights: np.ndarray, bias: np.ndarray) -> None:
        self.weights = np.array(weights, dtype=np.float64)
        self.bias = np.array(bias, dtype=np.float64)
        n = len(self.weights)
        self.started = False
        self.noise = np.zeros(n)                 # per-band noise power (per bin)
        self.smoothed = np.zeros(n)
        self.prev_clean = np.zeros(n)            # |estimated speech|^2 / noise of the last frame
        self.sub_min = np.full(n, np.inf)
        self.minima = np.full((SUBWINDOWS, n), np.inf)  # ring of the last subwindows' minima
        self.minima_min = np.full(n, np.inf)     # their elementwise minimum (changes once per subwindow)
        self.sub_count = self.slot = self.filled = self.run = self.hang = 0

    def classify(self, powers: np.ndarray) -> np.ndarray:
        """Speech (True) or not for each row of `powers` (frames x bands), in order."""
        powers = np.asarray(powers, dtype=np.float64)
        if len(powers) and powers.shape[1] != len(self.weights):
            raise ValueError(f"expected {len(self.weights)} band powers per frame, got {powers.shape[1]}")
        out = np.zeros(len(powers), dtype=bool)
        for i, power in enumerate(powers):
            if not self.started:  # first audible frame: the best guess there is, corrected by the floor
                self.noise, self.smoothed, self.started = power.copy(), power.copy(), True
            speech = self._decide(power)
            self._track(power, speech)
            # Hangover: the weak tail of a talkspurt (a fading vowel, a soft final consonant) stays speech.
            self.run = self.run + 1 if speech else 0
            if speech and self.run >= HANG_AFTER:
                self.hang = HANG_FRAMES
            elif not speech and self.hang > 0:
                self.hang -= 1
                speech = True
            out[i] = speech
        return out

    def _decide(self, power: np.ndarray) -> bool:
        noise = np.maximum(self.noise, TINY)
        gamma = np.minimum(power / noise, 1e6)
        xi = np.maximum(DD_ALPHA * self.prev_clean + (1 - DD_ALPHA) * np.maximum(gamma - 1.0, 0.0), XI_MIN)
        llr = gamma * xi / (1 + xi) - np.log1p(xi)
        gain = xi / (1 + xi)
        self.prev_clean = gain * gain * gamma
        return float(np.dot(self.weights, llr)) > THRESHOLD

    def _track(self, power: np.ndarray, speech: bool) -> None:
        self.smoothed = SMOOTH * self.smoothed + (1 - SMOOTH) * power
        self.sub_min = np.minimum(self.sub_min, self.smoothed)
        self.sub_count += 1
        if self.sub_count == SUB_FRAMES:
            self.minima[self.slot] = self.sub_min
            self.slot = (self.slot + 1) % SUBWINDOWS
            self.filled = min(self.filled + 1, SUBWINDOWS)
            self.minima_min = np.min(self.minima[:self.filled], axis=0)
            self.sub_min = np.full(len(self.weights), np.inf)
            self.sub_count = 0
        floor = np.minimum(self.minima_min, self.sub_min) * self.bias
        noise = self.noise
        if not speech:
            noise = NOISE_ALPHA * noise + (1 - NOISE_ALPHA) * power
        # The floor carries the estimate through long speech and level changes.
        self.noise = np.clip(noise, floor / CLAMP, floor * CLAMP)

    def get_state(self) -> dict[str, object]:
        return {"noise": np.array(self.noise), "smoothed": np.array(self.smoothed), "prev_clean": np.array(self.prev_clean),
                "sub_min": np.array(self.sub_min), "minima_min": np.array(self.minima_min), "run": self.run,
                "hang": self.hang, "sub_count": self.sub_count}
