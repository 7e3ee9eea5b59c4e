"""`python -m bench [name ...]`: run the benchmark modules and print every figure.

Each module `bench/bench_<name>.py` exposes `run() -> list[dict]`; a row names its figure and
gives the measured value, the baseline measured in the same run, their ratio and the goal.
The rows are also written to bench-results.json for the README's performance section.
"""
from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path

import bench


def _modules(selected: list[str]) -> list[str]:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    if selected:
        names = [n for n in names if n.removeprefix("bench_") in selected or n in selected]
    return names


def main(argv: list[str]) -> int:
    results: dict[str, object] = {}
    failed = False
    for name in _modules(argv):
        print(f"\n== {name} ==", flush=True)
        started = time.monotonic()
        try:
            rows = importlib.import_module(f"bench.{name}").run()
        except Exception:
            traceback.print_exc()
            failed = True
            continue
        for row in rows:
            print("  " + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)
        results[name] = rows
        print(f"  ({time.monotonic() - started:.0f} s)")
    Path("bench-results.json").write_text(json.dumps(results, indent=2, default=str))
    return 1 if failed else 0


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
