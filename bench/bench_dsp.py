"""DSP benchmarks: Cython primitives against their pure-Python twins, and the chain's cost per 20 ms frame.

Primitive rows: ns per sample, Cython (value) against the twin (baseline), both measured here on
the same speech-like input in 20 ms blocks as the chain calls them; ratio = the speed-up,
goal >= 20x. Chain rows: microseconds per 20 ms frame; ratio = fraction of real time,
goal <= 0.05. Run: `python -m bench dsp` (`--smoke`: a tenth of a second of each, to check it runs).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from agent.dsp import DspChain
from agent.dsp.signals import frames, room_echo, speech_like, white_noise
from ext import dsp_py
from ext.dsp_py import design_biquad
from shared.knobs import defaults

FS = 16000
FRAME = 320
PRIMITIVE_GOAL = 20.0
CHAIN_GOAL = 0.05


@dataclass(frozen=True)
class Sizes:
    primitive_s: float  # of speech the primitives process, in 20 ms blocks
    c_repeats: int      # best of, for the Cython build (its times are short) ...
    py_repeats: int     # ... and for the twin
    chain_c_s: float    # of the scene through the chain, Cython
    chain_py_s: float   # and python twin


FULL = Sizes(primitive_s=1.0, c_repeats=5, py_repeats=3, chain_c_s=10.0, chain_py_s=2.0)
SMOKE = Sizes(primitive_s=0.1, c_repeats=1, py_repeats=1, chain_c_s=0.4, chain_py_s=0.4)

EQ = [design_biquad("peaking", FS, f, 1.41, 3.0) for f in (60, 170, 310, 600, 1000, 3000, 6000, 7200, 7200, 7200)]
PRIMITIVES: dict[str, Callable[[ModuleType], Any]] = {
    "Biquad": lambda m: m.Biquad(EQ[4]),
    "BiquadChain (10 EQ bands)": lambda m: m.BiquadChain(EQ),
    "EnvelopeFollower (rms)": lambda m: m.EnvelopeFollower(FS, 5.0, 80.0, "rms"),
    "Compressor (5 ms lookahead)": lambda m: m.Compressor(FS, -30.0, 4.0, 2.5, 10.0, 100.0, 0.0, 5.0),
    "Limiter (5 ms lookahead)": lambda m: m.Limiter(FS, -12.0, 50.0, 5.0),
    "AgcGain (rms window)": lambda m: m.AgcGain(FS),
    "NoiseGate": lambda m: m.NoiseGate(FS, -40.0),
    "FeedbackComb": lambda m: m.FeedbackComb(405, 0.84, 0.3),
    "Allpass": lambda m: m.Allpass(80, 0.6),
}

EVERYTHING: dict[str, Any] = {
    "agc_noise_gate_enabled": True, "eq_enabled": True, "compressor_enabled": True, "reverb_amount": 30.0,
    **{f"eq_band_{n}_gain": 3.0 for n in range(1, 11)},
    "voice_boost": 3.0, "clarity_enhancement": 40.0, "de_esser_strength": 60.0, "brilliance": 2.0, "warmth": 2.0,
    "presence": 2.0, "bass_boost": 2.0, "treble_boost": 1.0, "mid_scoop": 2.0, "breathiness_reduction": 50.0,
    "harshness_reduction": 50.0, "sibilance_control": 30.0,
}


def _best(fn: Callable[[], None], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _primitive_row(name: str, make: Callable[[ModuleType], Any], cy: ModuleType, blocks: list[np.ndarray],
                   sizes: Sizes) -> dict:
    def timed(mod: ModuleType) -> Callable[[], None]:
        def go() -> None:
            proc = make(mod)
            for block in blocks:
                proc.process(block)
        return go
    samples = sum(len(b) for b in blocks)
    c_s, py_s = _best(timed(cy), sizes.c_repeats), _best(timed(dsp_py), sizes.py_repeats)
    ratio = py_s / c_s
    return {"figure": name, "value": c_s / samples * 1e9, "baseline": py_s / samples * 1e9, "unit": "ns/sample",
            "ratio": ratio, "goal": f">= {PRIMITIVE_GOAL:.0f}x", "met": ratio >= PRIMITIVE_GOAL}


def _scene(seconds: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    far = speech_like(seconds, seed=2, level_db=-24.0)
    mic = speech_like(seconds, seed=1, level_db=-30.0) + room_echo(far) + white_noise(seconds, level_db=-55.0)
    return frames(mic), frames(far)


def _chain_row(figure: str, impl: ModuleType, knobs: dict[str, Any], seconds: float) -> dict:
    mic, far = _scene(seconds)
    chain = DspChain(impl=impl)
    chain.configure({**defaults(), **knobs})
    for a, b in zip(mic[:10], far[:10]):  # warm-up: first-frame allocations, design cache
        chain.process(a, b)
    t0 = time.perf_counter()
    for a, b in zip(mic, far):
        chain.process(a, b)
    per_frame = (time.perf_counter() - t0) / len(mic)
    fraction = per_frame / (FRAME / FS)
    return {"figure": figure, "value": per_frame * 1e6, "baseline": FRAME / FS * 1e6, "unit": "us/frame",
            "ratio": fraction, "goal": f"<= {CHAIN_GOAL}", "met": fraction <= CHAIN_GOAL}


def run(smoke: bool = False) -> list[dict]:
    from ext import _dsp as cy  # the Cython build: a missing build is a failure here
    sizes = SMOKE if smoke else FULL
    blocks = frames(speech_like(sizes.primitive_s, seed=3, level_db=-20.0))
    rows = [_primitive_row(name, make, cy, blocks, sizes) for name, make in PRIMITIVES.items()]
    rows.append(_chain_row("DspChain defaults (cython, with far end)", cy, {}, sizes.chain_c_s))
    rows.append(_chain_row("DspChain everything on (cython)", cy, EVERYTHING, sizes.chain_c_s))
    rows.append(_chain_row("DspChain defaults (python twin)", dsp_py, {}, sizes.chain_py_s))
    rows.append(_chain_row("DspChain everything on (python twin)", dsp_py, EVERYTHING, sizes.chain_py_s))
    return rows


if __name__ == "__main__":
    started = time.perf_counter()
    for r in run("--smoke" in sys.argv):
        if r["unit"] == "ns/sample":
            print(f"{r['figure']:<42} cython {r['value']:>8.1f} ns/sample  python {r['baseline']:>8.1f} ns/sample  "
                  f"x{r['ratio']:6.1f}  goal {r['goal']}  {'met' if r['met'] else 'NOT MET'}")
        else:
            print(f"{r['figure']:<42} {r['value']:>9.0f} us per 20 ms frame = {r['ratio']:.4f} of real time  "
                  f"goal {r['goal']}  {'met' if r['met'] else 'NOT MET'}")
    print(f"({time.perf_counter() - started:.1f} s)")
