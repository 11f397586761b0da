"""How busy the machine was while a benchmark ran, shared by the timing benchmarks.

A figure taken while other processes compete for the 2 cores is inflated; each benchmark
reports the load average before and after and the CPU time other processes used meanwhile
(the machine's busy time from /proc/stat minus this process and its waited-for children).
"""

from __future__ import annotations

import os
import platform
import resource
import time


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all processes, /proc/stat)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of every child it has waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


class MachineLoad:
    """Marks the start at construction; :meth:`stop` measures what happened since."""

    def __init__(self) -> None:
        self.load_before = os.getloadavg()
        self._busy, self._own = busy_cpu_seconds(), own_cpu_seconds()
        self._t0 = time.perf_counter()
        self.load_after: tuple[float, float, float] | None = None
        self.others_cpu_s = self.elapsed_s = 0.0

    def stop(self) -> MachineLoad:
        self.load_after = os.getloadavg()
        self.elapsed_s = time.perf_counter() - self._t0
        # Busy time of the machine minus this benchmark's own: about 0 on a quiet machine.
        self.others_cpu_s = max(0.0, (busy_cpu_seconds() - self._busy) - (own_cpu_seconds() - self._own))
        return self

    @property
    def quiet(self) -> bool:
        return self.others_cpu_s < 0.05 * self.elapsed_s

    def report(self) -> str:
        """Two Markdown lines: the machine and its load, and what other processes used."""
        after = self.load_after[0] if self.load_after else float("nan")
        return (
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; Python "
            f"{platform.python_version()}; load average before {self.load_before[0]:.2f}, after {after:.2f}  \n"
            f"Other processes used {self.others_cpu_s:.0f} CPU-s during the {self.elapsed_s:.0f} s run "
            f"({100 * self.others_cpu_s / max(self.elapsed_s, 1e-9):.0f}% of one core): "
            + ("quiet machine" if self.quiet else "NOT quiet, figures inflated")
        )
