"""The performance group's process figures: psutil for the process, getrusage for faults, gc.callbacks for the collector."""
from __future__ import annotations

import gc
import resource
import time
from typing import Any

import psutil


class GcWatch:
    """Counts collections and the time spent in them, through gc.callbacks (removed by close())."""

    def __init__(self) -> None:
        self.collections = 0
        self.pause_s = 0.0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.collections += 1
            self.pause_s += time.perf_counter() - self._started

    def close(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


class HostMeter:
    """One reading per sample tick, shared by both extensions (they live in the same process).

    Window figures (CPU, context switches, faults, I/O, GC) are deltas since the previous
    reading; the first reading's window starts at construction.
    """

    def __init__(self, process: psutil.Process | None = None) -> None:
        self.proc = process or psutil.Process()
        self.gc = GcWatch()
        self._last = self._raw()

    def _raw(self) -> dict[str, float]:
        p = self.proc
        with p.oneshot():
            ctx = p.num_ctx_switches()
            try:
                io = p.io_counters()
                io_ops = io.read_count + io.write_count
            except (psutil.AccessDenied, AttributeError):  # no /proc/<pid>/io (some containers)
                io_ops = 0
            # CPU time from getrusage, not psutil: /proc/<pid>/stat counts 10 ms clock ticks,
            # which over a 150 ms window would read an agent at 4% as 0% or 6.7%.
            ru = resource.getrusage(resource.RUSAGE_SELF)
            return {"t": time.monotonic(), "cpu": ru.ru_utime + ru.ru_stime, "ctx": ctx.voluntary + ctx.involuntary,
                    "faults": ru.ru_minflt + ru.ru_majflt, "io": io_ops,
                    "gc_n": self.gc.collections, "gc_s": self.gc.pause_s,
                    "mem": p.memory_percent(), "threads": p.num_threads(), "fds": p.num_fds()}

    def read(self) -> dict[str, Any]:
        now, last = self._raw(), self._last
        self._last = now
        elapsed = max(now["t"] - last["t"], 1e-6)
        return {
            "cpu_usage": max(0.0, (now["cpu"] - last["cpu"]) / elapsed * 100.0),
            "memory_usage": min(100.0, max(0.0, float(now["mem"]))),
            "thread_count": int(now["threads"]),
            "handle_count": int(now["fds"]),
            "context_switches": int(max(0, now["ctx"] - last["ctx"])),
            "page_faults": int(max(0, now["faults"] - last["faults"])),
            "io_operations": int(max(0, now["io"] - last["io"])),
            "gc_collections": int(now["gc_n"] - last["gc_n"]),
            "gc_pause_ms": (now["gc_s"] - last["gc_s"]) * 1000.0,
        }

    def close(self) -> None:
        self.gc.close()
