"""A benchmark stops at once, with the child's own log, when a process it started has exited.

Without this a dead agent or controller shows up later as something else: a refused
connection to its exporter, a wait that times out, a figure of zero.
"""
from __future__ import annotations

from tpmon.processes import Child


class ChildExited(RuntimeError):
    """A process the benchmark started is gone; the message carries the tail of its log (stdout and stderr)."""


def check_running(*children: Child, lines: int = 40) -> None:
    """Raise ChildExited for the first of `children` that has exited."""
    for child in children:
        code = child.exited()
        if code is not None:
            raise ChildExited(f"{child.name} exited with status {code} during the benchmark; the end of its "
                              f"output (stdout and stderr):\n{child.tail(lines)}")
