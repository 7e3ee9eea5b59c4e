"""Memoised biquad designs shared by the chain's stages, with hit/miss counters for the agent's metric."""
from __future__ import annotations

from collections import OrderedDict

from ext.dsp import Coeffs, design_biquad


class DesignCache:
    """LRU cache of RBJ designs keyed by (kind, freq, q, gain) rounded to what is audible.

    Dynamic stages (de-esser, harshness control) ask for a design every frame with gains
    quantised to 0.25 dB, so most requests are hits; the hit ratio is reported as a metric.
    """

    def __init__(self, sample_rate: float, max_entries: int = 2048) -> None:
        self.sample_rate = float(sample_rate)
        self.max_entries = max_entries
        self._designs: OrderedDict[tuple[str, float, float, float], Coeffs] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def biquad(self, kind: str, freq: float, q: float = 0.7071, gain_db: float = 0.0) -> Coeffs:
        key = (kind, round(float(freq), 3), round(float(q), 4), round(float(gain_db), 3))
        coeffs = self._designs.get(key)
        if coeffs is not None:
            self.hits += 1
            self._designs.move_to_end(key)
            return coeffs
        self.misses += 1
        coeffs = design_biquad(kind, self.sample_rate, key[1], key[2], key[3])
        self._designs[key] = coeffs
        if len(self._designs) > self.max_entries:
            self._designs.popitem(last=False)
        return coeffs

    def stats(self) -> tuple[int, int]:
        return self.hits, self.misses

    def __len__(self) -> int:
        return len(self._designs)
