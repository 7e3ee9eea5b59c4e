"""`python -m bench [--smoke] [name ...]`: run the benchmark modules and print every figure.

Each module `bench/bench_<name>.py` exposes `run(smoke: bool = False) -> list[dict]`; a row names
its figure and gives the measured value, the baseline measured in the same run, their ratio and
the goal. A full run merges the rows into bench-results.json (a benchmark run again replaces
its own rows) for the README's performance section.

`--smoke` (or TPMON_BENCH_SMOKE=1) runs each benchmark at the smallest sizes that still go
through every code path (seconds instead of minutes) and prints the same report, so the suite
can run every benchmark and a broken one fails CI; its figures are not measurements, so a smoke
run writes no results file. The exit status is 1 if any benchmark raised.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import time
import traceback
from pathlib import Path

import bench

RESULTS = Path("bench-results.json")


def available() -> list[str]:
    """Benchmark names (`agent` for bench/bench_agent.py), sorted."""
    return sorted(m.name.removeprefix("bench_") for m in pkgutil.iter_modules(bench.__path__)
                  if m.name.startswith("bench_"))


def parse_args(argv: list[str]) -> argparse.Namespace:
    names = available()
    p = argparse.ArgumentParser(prog="python -m bench", description="Run benchmarks and print ratios against "
                                "baselines measured in the same run.", epilog=f"benchmarks: {', '.join(names)}")
    p.add_argument("names", nargs="*", metavar="name", help="benchmarks to run (default: all)")
    p.add_argument("--smoke", action="store_true", default=os.environ.get("TPMON_BENCH_SMOKE") == "1",
                   help="smallest sizes that exercise every path; figures are not measurements "
                        "(also TPMON_BENCH_SMOKE=1)")
    p.add_argument("--list", action="store_true", help="print the benchmark names and exit")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n.removeprefix("bench_") not in names]
    if unknown:
        p.error(f"unknown benchmark {', '.join(unknown)} (known: {', '.join(names)})")
    args.names = [n.removeprefix("bench_") for n in args.names] or names
    return args


def run_one(name: str, smoke: bool) -> list[dict] | None:
    """The rows of one benchmark, printed; None (after its traceback) if it raised."""
    print(f"\n== bench_{name}{' (smoke)' if smoke else ''} ==", flush=True)
    started = time.monotonic()
    try:
        rows = importlib.import_module(f"bench.bench_{name}").run(smoke=smoke)
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        print(f"  FAILED: bench_{name} ({time.monotonic() - started:.0f} s)", flush=True)
        return None
    for row in rows:
        print("  " + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)
    print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
    return rows


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.list:
        print("\n".join(args.names))
        return 0
    if args.smoke:
        print("smoke run: every benchmark at its smallest sizes; the figures are not measurements", flush=True)
    results: dict[str, list[dict]] = {}
    failed = []
    for name in args.names:
        rows = run_one(name, args.smoke)
        if rows is None:
            failed.append(name)
        else:
            results[f"bench_{name}"] = rows
    if not args.smoke:
        _save(results)
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _save(results: dict[str, list[dict]]) -> None:
    """Merge into bench-results.json: running one benchmark replaces its rows and keeps the others'."""
    try:
        saved = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        saved = {}
    RESULTS.write_text(json.dumps({**saved, **results}, indent=2, default=str))


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
