"""Percentiles, log-scale latency histograms, and summaries over repeats."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, Final

# Latency histograms: buckets from 1 us to 100 s, this many per decade.
HISTOGRAM_LOW_SECONDS: Final = 1e-6
HISTOGRAM_DECADES: Final = 8
HISTOGRAM_PER_DECADE: Final = 20


def histogram_edges() -> list[float]:
    """The edges of the latency histogram's buckets, in seconds (one more than buckets)."""
    count = HISTOGRAM_DECADES * HISTOGRAM_PER_DECADE
    return [
        HISTOGRAM_LOW_SECONDS * 10 ** (step / HISTOGRAM_PER_DECADE) for step in range(count + 1)
    ]


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile (0..1) of already sorted values, nearest rank; 0 if empty."""
    if not ordered:
        return 0.0
    rank = max(0, math.ceil(fraction * len(ordered)) - 1)
    return ordered[min(rank, len(ordered) - 1)]


def latency_summary(samples: Sequence[float]) -> dict[str, Any]:
    """p50, p99, max and count of latencies in seconds, and their histogram.

    The histogram's counts go with `histogram_edges()`; a latency below the
    first edge counts in the first bucket, one above the last in the last.
    """
    ordered = sorted(samples)
    edges = histogram_edges()
    counts = [0] * (len(edges) - 1)
    scale = HISTOGRAM_PER_DECADE
    for value in ordered:
        if value <= HISTOGRAM_LOW_SECONDS:
            bucket = 0
        else:
            bucket = int(math.log10(value / HISTOGRAM_LOW_SECONDS) * scale)
        counts[min(bucket, len(counts) - 1)] += 1
    return {
        "count": len(ordered),
        "p50": percentile(ordered, 0.50),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else 0.0,
        "histogram": counts,
    }


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, least and greatest of one figure over repeats."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
