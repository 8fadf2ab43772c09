"""Wall-time measurement of a repeated call, shared by the export report and the benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(call: Callable[[], object], runs: int) -> float:
    """Median wall time of `call()` over `runs` calls, after one untimed warm-up call."""
    call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
