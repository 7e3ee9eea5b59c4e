"""MOS estimate by the ITU-T G.107 E-model (simplified, burst-aware) from measured delay, loss and codec.

R = R0 - Idd(Ta) - Ie_eff(Ppl, BurstR), then MOS from R (G.107 Annex B).

- R0 = 93.2: G.107's default basic signal-to-noise ratio minus simultaneous impairments
  (Ro - Is) with every other parameter at its default value; A (advantage factor) = 0.
- Idd: G.107 section 7.4 delay impairment for absolute one-way delay Ta (ms):
  0 for Ta <= 100, else 25 * ((1 + X^6)^(1/6) - 3 (1 + (X/3)^6)^(1/6) + 2), X = log2(Ta / 100).
  Talker echo (Idte) is taken as 0: the path has an echo canceller and the default TELR.
- Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl) (G.107 eq. 7-29), Ppl in percent.
  G.711 with packet loss concealment: Ie = 0, Bpl = 25.1 (ITU-T G.113 Appendix I).
  The receiver conceals lost packets (fading repetition), so the PLC value applies.
- BurstR = 1 / (p + q) for a two-state loss model (G.107 Annex A / eq. 7-30), with
  p = P(played -> concealed) and q = P(concealed -> played) counted on the sequence of
  playout slots; 1 for random loss, > 1 for bursty loss.

The score is an estimate (the catalog flags mos_score so): G.107 is a planning model for
narrowband telephony, used here on measured inputs as operators commonly do.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

R0 = 93.2
IE_G711 = 0.0
BPL_G711_PLC = 25.1


def delay_impairment(ta_ms: float) -> float:
    if ta_ms <= 100.0:
        return 0.0
    x = math.log2(ta_ms / 100.0)
    return 25.0 * ((1 + x ** 6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)


def effective_equipment_impairment(ppl_percent: float, burst_r: float,
                                   ie: float = IE_G711, bpl: float = BPL_G711_PLC) -> float:
    if ppl_percent <= 0:
        return ie
    return ie + (95 - ie) * ppl_percent / (ppl_percent / burst_r + bpl)


def burst_ratio(slots: Iterable[bool]) -> float:
    """BurstR from a sequence of playout slots (True = played, False = concealed).

    BurstR = 1 / (p + q) with p = P(played -> concealed), q = P(concealed -> played), counted over
    consecutive pairs. The slots become one byte each so the counts are C-level `bytes.count`
    calls (a "10" or "01" pair cannot overlap the next one of its kind, so non-overlapping
    counting finds them all)."""
    seq = bytes(slots)
    if len(seq) < 2:
        return 1.0
    from_played = seq.count(1, 0, len(seq) - 1)
    from_lost = len(seq) - 1 - from_played
    played_to_lost, lost_to_played = seq.count(b"\x01\x00"), seq.count(b"\x00\x01")
    if from_played == 0 or from_lost == 0 or played_to_lost == 0:
        return 1.0
    p, q = played_to_lost / from_played, lost_to_played / from_lost
    return 1.0 / (p + q) if p + q > 0 else 1.0


def r_to_mos(r: float) -> float:
    """G.107 Annex B: 1 for R <= 0, 4.5 for R >= 100, the cubic in between."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return min(4.5, max(1.0, 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6))


def mos(delay_ms: float, ppl_percent: float, burst_r: float = 1.0) -> float:
    r = R0 - delay_impairment(delay_ms) - effective_equipment_impairment(ppl_percent, max(burst_r, 1e-6))
    return r_to_mos(r)
