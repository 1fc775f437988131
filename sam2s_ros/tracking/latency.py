"""Latency statistics over processed frames (the node's diagnostics, ``sam2s eval``)."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

LATENCY_PERCENTILES = (50, 90, 99)


def latency_stats_ms(latencies_s: Union[Sequence[float], np.ndarray]) -> Optional[dict[str, float]]:
    """Latency statistics.

    Args:
        latencies_s: [N] latencies in seconds.

    Returns:
        ``{"count", "mean", "p50", "p90", "p99", "max"}`` in milliseconds (count as a
        number), or None when N = 0. Percentiles interpolate linearly.
    """
    if len(latencies_s) == 0:
        return None
    ms = np.asarray(latencies_s, np.float64) * 1000.0
    stats = {"count": int(ms.size), "mean": float(ms.mean())}
    stats.update({f"p{q}": float(np.percentile(ms, q)) for q in LATENCY_PERCENTILES})
    stats["max"] = float(ms.max())
    return stats


def latency_percentiles_ms(latencies_s: Union[Sequence[float], np.ndarray]) -> dict[str, float]:
    """p50/p90/p99/max of latencies (s) in milliseconds; zeros when there are none."""
    stats = latency_stats_ms(latencies_s)
    keys = [f"p{q}" for q in LATENCY_PERCENTILES] + ["max"]
    return {k: (stats[k] if stats is not None else 0.0) for k in keys}
