"""The record of a native run: seconds per step, what each step did, and the warnings, logged
as they happen. The preprocessing (:mod:`bratseg.native.to_brats`) and the inference stage
that segments and maps back (the inference stage's ``native_path``) write to one log, so a
run's steps read in order.

Example:
    >>> lines = []
    >>> log = StepLog(lines.append)
    >>> with log.step("read") as say:
    ...     say("t1ce 8x8x6 at 1x1x1 mm")
    >>> list(log.timings), log.steps == lines, lines[0].startswith("read: t1ce 8x8x6 at 1x1x1 mm (")
    (['read'], True, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StepLog:
    """Per-step timings (``cpu_seconds``: this process's CPU time in each step, all threads
    together: what a busy machine inflates least), what each step did, and warnings; each
    step's line goes to ``log`` as it ends."""

    def __init__(self, log: Callable[[str], None] | None = None):
        self.log = log
        self.timings: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.steps: list[str] = []
        self.warnings: list[str] = []

    def warn(self, name: str, warnings: list[str]) -> None:
        """Add ``warnings`` about the scan called ``name``."""
        self.warnings += [f"{name}: {w}" for w in warnings]

    @property
    def seconds(self) -> float:
        """All steps together."""
        return float(sum(self.timings.values()))

    @contextmanager
    def step(self, name: str) -> Iterator[Callable[[str], None]]:
        """Time the block as step ``name``; what it passes to the yielded function is the
        step's line."""
        notes: list[str] = []
        t0, cpu0 = time.perf_counter(), time.process_time()
        yield notes.append
        seconds = time.perf_counter() - t0
        self.timings[name] = seconds
        self.cpu_seconds[name] = time.process_time() - cpu0
        line = f"{name}: {'; '.join(notes)} ({seconds:.2f} s)" if notes else f"{name} ({seconds:.2f} s)"
        self.steps.append(line)
        if self.log is not None:
            self.log(line)
