"""Where an ingest run spends its time: wall and CPU seconds per phase (`ingest --profile`),
and the process's peak memory when the phase last ended.

CPU time is the whole process's (every DuckDB and Arrow thread), so on a busy machine it is the
steadier figure, and CPU/wall shows how well a phase uses the cores. The peak RSS is a running
maximum: the first phase where it jumps is the one that needed the memory.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa


@dataclass
class Phases:
    """Accumulated (wall, cpu) seconds per phase name, in first-seen order."""

    seconds: dict[str, tuple[float, float]] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    # CPU seconds of a worker thread, spent while the phases ran (their CPU holds it already):
    # shown after the total, not added to it
    within: dict[str, float] = field(default_factory=dict)
    # facts about the run that explain its times (which path parsed the lines), each once
    notes: dict[str, None] = field(default_factory=dict)

    def note(self, text: str) -> None:
        self.notes[text] = None

    def overlapped(self, name: str, cpu_seconds: float) -> None:
        self.within[name] = self.within.get(name, 0.0) + cpu_seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            w, c = self.seconds.get(name, (0.0, 0.0))
            self.seconds[name] = (w + time.perf_counter() - wall, c + time.process_time() - cpu)
            self.peak_rss_mb[name] = _peak_rss_mb()

    def table(self) -> pa.Table:
        names = list(self.seconds)
        wall = [round(self.seconds[n][0], 3) for n in names]
        cpu = [round(self.seconds[n][1], 3) for n in names]
        within = list(self.within)
        return pa.table(
            {
                "phase": [*names, "total", *(f"{n} (in the above)" for n in within)],
                "wall_s": [*wall, round(sum(wall), 3), *(None for _ in within)],
                "cpu_s": [*cpu, round(sum(cpu), 3), *(round(self.within[n], 3) for n in within)],
                "peak_rss_mb": [
                    *(round(self.peak_rss_mb[n]) for n in names),
                    round(_peak_rss_mb()),
                    *(None for _ in within),
                ],
            }
        )


class NoPhases(Phases):
    """The default: measuring nothing costs nothing."""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield

    def overlapped(self, name: str, cpu_seconds: float) -> None:
        pass

    def note(self, text: str) -> None:
        pass


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere
