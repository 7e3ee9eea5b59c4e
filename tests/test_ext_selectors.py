"""Every ext/ selector picks the Cython build, or its twin under TPMON_NO_EXTENSIONS=1 (fresh interpreters)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# selector -> (compiled module stem, a class it exports, the twin module that class must come from)
SELECTORS = {
    "jitter": ("_jitter", "JitterBuffer", "ext.jitter_py"),
    "sequence": ("_sequence", "SequenceTracker", "ext.sequence_py"),
    "latency": ("_latency", "LatencyStats", "ext.latency_py"),
    "dsp": ("_dsp", "Limiter", "ext.dsp_py"),
    "vad": ("_vad", "VadTracker", "ext.vad_py"),
}


def _ask(selector: str, cls: str, env: dict[str, str]) -> list[str]:
    code = f"import ext.{selector} as m; print(m.IMPLEMENTATION, m.{cls}.__module__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_every_compiled_module_has_a_selector_here():
    assert {p.stem for p in (ROOT / "ext").glob("*.pyx")} == {v[0] for v in SELECTORS.values()}


@pytest.mark.parametrize("selector", sorted(SELECTORS))
def test_selector_honours_tpmon_no_extensions(selector):
    compiled, cls, twin = SELECTORS[selector]
    env = dict(os.environ, TPMON_NO_EXTENSIONS="1")
    assert _ask(selector, cls, env) == ["python", twin]
    env.pop("TPMON_NO_EXTENSIONS")
    built = any((ROOT / "ext").glob(f"{compiled}*.so"))
    if os.environ.get("CI") == "true":
        assert built, f"Cython build ext.{compiled} missing under CI"
    implementation, module = _ask(selector, cls, env)
    assert implementation == ("cython" if built else "python")
    assert (module == twin) == (not built)
